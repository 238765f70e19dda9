"""playbooks/k8s_gpu.yml over SSH against sandbox nodes. No Kubernetes
cluster runs here: the control-plane node's kubectl is a stand-in that records
each call (tests/fixtures/kubectl-stand-in.py). The tests check the calls the
playbook makes, and validate every manifest it sent against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict) of an old and a current release."""
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ansible_run import REPO

K8S = REPO / "playbooks/k8s_gpu.yml"
STAND_IN = REPO / "tests/fixtures/kubectl-stand-in.py"
PROFILES = ["cpu", "h200", "hgx-h100", "cpu"]  # worker4: the control plane
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
LABEL = "nvidia.com/gpu.present"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


@pytest.fixture
def cluster(sb, tmp_path, ansible_factory):
    """Fresh nodes, worker4 a control plane with the kubectl stand-in, and an
    inventory that names it."""
    sb.reset()
    kubectl = sb.node("worker4").path("/usr/local/bin/kubectl")
    kubectl.write_bytes(STAND_IN.read_bytes())
    kubectl.chmod(0o755)
    groups = tmp_path / "groups.ini"
    groups.write_text("[k8s_control_plane]\nworker4\n")
    return ansible_factory(sb.inventory), groups


def calls(sb):
    log = sb.node("worker4").path("/var/log/kubectl-stand-in")
    return [json.loads(p.read_text()) for p in sorted(log.glob("*.json"))] if log.exists() else []


def stand_in_state(sb):
    path = sb.node("worker4").path("/var/lib/kubectl-stand-in/state.json")
    return json.loads(path.read_text()) if path.exists() else None


def applied_manifests(recorded):
    docs = []
    for call in recorded:
        if "apply" in call["argv"]:
            docs += [d for d in yaml.safe_load_all(call["stdin"]) if d]
    return docs


def label_calls(recorded):
    return {tuple(c["argv"][4:6]) for c in recorded if c["argv"][2] == "label"}


def test_applies_runtime_class_and_device_plugin_and_labels_gpu_nodes(sb, cluster):
    user, groups = cluster
    run = user.playbook(K8S, "-i", str(groups)).expect_ok()
    recorded = calls(sb)
    assert all("--kubeconfig" in c["argv"] and "/etc/kubernetes/admin.conf" in c["argv"] for c in recorded)
    assert not [c for c in recorded if "--dry-run=server" in c["argv"]]

    kinds = {(d["kind"], d["metadata"]["name"]) for d in applied_manifests(recorded)}
    assert kinds == {("RuntimeClass", "nvidia"), ("DaemonSet", "nvidia-device-plugin-daemonset")}
    assert label_calls(recorded) == {
        ("worker2", f"{LABEL}=true"), ("worker3", f"{LABEL}=true"), ("worker1", f"{LABEL}-"),
    }, "GPU nodes labelled, the CPU node's label removed, the control plane left alone"
    state = stand_in_state(sb)
    assert state["labels"] == {"worker1": {}, "worker2": {LABEL: "true"}, "worker3": {LABEL: "true"}}
    assert run.result("worker4", "Apply the nvidia RuntimeClass and the NVIDIA device plugin")["changed"]
    assert run.result("worker4", "Label the GPU nodes")["changed"]
    assert not run.result("worker4", "Remove the label from nodes without GPU mode")["changed"], "it had none"

    again = user.playbook(K8S, "-i", str(groups)).expect_ok()
    assert again.stats["worker4"]["changed"] == 0, again.output


def test_every_manifest_is_valid_for_kubernetes(sb, cluster):
    user, groups = cluster
    user.playbook(K8S, "-i", str(groups), "-e", "k8s_gpu_test_pod=true").expect_ok()
    docs = applied_manifests(calls(sb))
    assert {d["kind"] for d in docs} == {"RuntimeClass", "DaemonSet", "Pod"}
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod_spec = daemonset["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {LABEL: "true"}
    assert pod_spec["runtimeClassName"] == "nvidia"
    assert pod_spec["containers"][0]["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_check_mode_is_a_server_side_dry_run(sb, cluster):
    user, groups = cluster
    run = user.playbook(K8S, "-i", str(groups), "--check").expect_ok()
    recorded = calls(sb)
    changing = [c for c in recorded if c["argv"][2] in ("apply", "label", "delete")]
    assert changing and all("--dry-run=server" in c["argv"] for c in changing), changing
    assert stand_in_state(sb) is None, "a dry run changes nothing in the cluster"
    assert run.result("worker4", "Apply the nvidia RuntimeClass and the NVIDIA device plugin")["changed"], \
        "check mode reports what would change"


def test_air_gapped_registry_and_user_override(sb, cluster):
    """The images come from variables; has_nvidia_gpu wins over detection."""
    user, groups = cluster
    user.playbook(
        K8S, "-i", str(groups),
        "-e", "k8s_device_plugin_image=registry.example.internal/nvidia/k8s-device-plugin",
        "-e", "k8s_device_plugin_tag=v0.17.1-mirror",
        "-e", '{"has_nvidia_gpu": false}', "-l", "worker1,worker2,worker4",
    ).expect_ok()
    recorded = calls(sb)
    daemonset = next(d for d in applied_manifests(recorded) if d["kind"] == "DaemonSet")
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.internal/nvidia/k8s-device-plugin:v0.17.1-mirror"
    # -e has_nvidia_gpu=false: the H200 node is not a GPU node; worker3 was not in -l.
    assert label_calls(recorded) == {("worker1", f"{LABEL}-"), ("worker2", f"{LABEL}-")}


def test_gpu_test_pod_is_run_and_its_log_shown(sb, cluster):
    user, groups = cluster
    run = user.playbook(K8S, "-i", str(groups), "-e", "k8s_gpu_test_pod=true").expect_ok()
    recorded = calls(sb)
    verbs = [c["argv"][2] for c in recorded]
    assert verbs[-3:] == ["apply", "wait", "logs"], verbs
    wait = recorded[-2]["argv"]
    assert "--for=jsonpath={.status.phase}=Succeeded" in wait and "--timeout=300s" in wait
    shown = run.result("worker4", "Show what the test pod saw")["result"]["msg"]
    assert shown == ["GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"]


@pytest.mark.parametrize("strategy", ["cdi-annotations", "cdi-cri"])
def test_device_plugin_with_a_cdi_device_list_strategy(sb, cluster, strategy):
    """DEVICE_LIST_STRATEGY=cdi-*: the plugin gets the driver root and the CDI
    spec folder; the manifest stays valid. (No cluster runs here: what the
    plugin then does is NVIDIA's, not checked.)"""
    user, groups = cluster
    user.playbook(K8S, "-i", str(groups), "-e", f"k8s_device_list_strategy={strategy}").expect_ok()
    daemonset = next(d for d in applied_manifests(calls(sb)) if d["kind"] == "DaemonSet")
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(daemonset, version, strict=True)
    pod_spec = daemonset["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"FAIL_ON_INIT_ERROR": "false", "DEVICE_LIST_STRATEGY": strategy,
                   "DEVICE_ID_STRATEGY": "uuid", "NVIDIA_DRIVER_ROOT": "/"}
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    assert mounts == {"device-plugin": ("/var/lib/kubelet/device-plugins", False),
                      "cdi-root": ("/var/run/cdi", False), "driver-root": ("/driver-root", True)}
    volumes = {v["name"]: v["hostPath"] for v in pod_spec["volumes"]}
    assert volumes["driver-root"] == {"path": "/", "type": "Directory"}
    assert volumes["cdi-root"] == {"path": "/var/run/cdi", "type": "DirectoryOrCreate"}


def test_an_unknown_device_list_strategy_is_refused(sb, cluster):
    user, groups = cluster
    run = user.playbook(K8S, "-i", str(groups), "-e", "k8s_device_list_strategy=cdi")
    assert run.rc != 0
    assert "k8s_device_list_strategy" in run.output
