"""playbooks/verify.yml on a cluster that site.yml set up: a correct cluster
passes; a node broken the ways the guide's checks catch fails with the message
that says what to do; --check gives the same verdicts and changes no file.
Real ansible-playbook runs over real SSH, with the real containerd binary
reading each node's configuration (`containerd config dump`).

Stand-ins (the sandbox has no GPU, no containerd daemon and no images), each
a script that says STAND-IN in its first lines:
- /usr/bin/nvidia-smi on the GPU nodes: prints the GPUs of the node's
  hardware profile (the PCI addresses and names site.yml detected) for
  `--query-gpu=pci.bus_id --format=csv,noheader` and `-L`;
- /usr/bin/ctr, in the container test only: answers `images list`,
  `images pull` and `run` as ctr does, keeps "pulled" images in a file, logs
  every call; its `run` checks the runtime binary and NVIDIA_VISIBLE_DEVICES,
  then runs the command (the stand-in nvidia-smi), as the NVIDIA runtime
  would make it visible in the container;
- /usr/local/bin/nerdctl, in the nerdctl test only: answers `run`, needs
  `--gpus all` and an image the ctr stand-in "pulled", logs every call, and
  runs the command as the toolkit's hook would make it visible.
"""
from __future__ import annotations

import contextlib
import json
import os
import re

import pytest
import yaml

import sandbox
from ansible_run import REPO, Ansible

PROFILES = ["cpu", "h200", "hgx-h100"]
HOSTS = ["worker1", "worker2", "worker3"]
VERIFY = REPO / "playbooks/verify.yml"
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"
CONFIG = "/etc/containerd/config.toml"
DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
RUNTIME = "/usr/bin/nvidia-container-runtime"
IMAGE = "registry.example.com/nvidia/cuda:12-base"
SUMMARY_TASK = "Summarize the checks, one line per node"
DETAILS_TASK = "Show this node's results"

PASS_LINES = {
    "worker1": "worker1  PASS  gpu mode, facts file, containerd; skipped: nvidia-smi: no NVIDIA driver "
               "loaded (not a GPU node); container: no verify_container_image given",
    "worker2": "worker2  PASS  gpu mode, facts file, containerd, nvidia-smi; skipped: container: no "
               "verify_container_image given",
    "worker3": "worker3  PASS  gpu mode, facts file, containerd, nvidia-smi; skipped: container: no "
               "verify_container_image given",
}

NVIDIA_SMI_STAND_IN = """#!/bin/sh
# STAND-IN for nvidia-smi, written by tests/e2e/test_verify.py: sandbox nodes
# have no GPU and no NVIDIA driver. It lists the GPUs of this node's hardware
# profile, as the real one does for these two queries.
case "$*" in
  "--query-gpu=pci.bus_id --format=csv,noheader") printf '%s\\n' {bus_ids} ;;
  "-L") printf '%s\\n' {gpu_lines} ;;
  *) echo "nvidia-smi stand-in: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""

CTR_STAND_IN = r"""#!/bin/sh
# STAND-IN for containerd's ctr, written by tests/e2e/test_verify.py: sandbox
# nodes run no containerd daemon and have no images. It answers the commands
# verify.yml sends as ctr does, keeps the "pulled" images in
# /var/lib/ctr-stand-in/images and logs each call to /var/lib/ctr-stand-in/calls.
state=/var/lib/ctr-stand-in
mkdir -p "$state"
echo "$*" >> "$state/calls"
[ "$1" = --namespace ] && shift 2
case "$1 $2" in
  "images list")
    cat "$state/images" 2>/dev/null
    exit 0 ;;
  "images pull")
    for image; do :; done
    case "$image" in
      *missing*) echo "ctr: failed to resolve reference \"$image\": $image: not found" >&2; exit 1 ;;
    esac
    echo "$image" >> "$state/images"
    echo "$image: resolved"
    exit 0 ;;
esac
[ "$1" = run ] || { echo "ctr stand-in: unexpected arguments: $*" >&2; exit 2; }
shift
binary=runc env=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rm) shift ;;
    --runc-binary) binary=$2; shift 2 ;;
    --env) env="$env $2"; shift 2 ;;
    --*) shift 2 ;;
    *) break ;;
  esac
done
image=$1; shift 2
grep -qxF "$image" "$state/images" 2>/dev/null || { echo "ctr: image \"$image\": not found" >&2; exit 1; }
[ -x "$binary" ] || { echo "ctr: OCI runtime create failed: exec: \"$binary\": no such file or directory" >&2; exit 1; }
case "$env" in
  *NVIDIA_VISIBLE_DEVICES=all*) exec "$@" ;;
  *) echo "ctr: exec: \"$1\": executable file not found in \$PATH" >&2; exit 1 ;;
esac
"""

NERDCTL_STAND_IN = r"""#!/bin/sh
# STAND-IN for nerdctl, written by tests/e2e/test_verify.py: sandbox nodes run
# no containerd daemon. It answers `run` as nerdctl does, finds images where
# the ctr stand-in keeps them, and logs each call to /var/lib/nerdctl-stand-in/calls.
mkdir -p /var/lib/nerdctl-stand-in
echo "$*" >> /var/lib/nerdctl-stand-in/calls
[ "$1" = --namespace ] && shift 2
[ "$1" = run ] || { echo "nerdctl stand-in: unexpected arguments: $*" >&2; exit 2; }
shift
gpus=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rm) shift ;;
    --gpus) gpus=$2; shift 2 ;;
    --*) shift 2 ;;
    *) break ;;
  esac
done
image=$1; shift
grep -qxF "$image" /var/lib/ctr-stand-in/images 2>/dev/null || { echo "nerdctl: image \"$image\": not found" >&2; exit 1; }
[ "$gpus" = all ] || { echo "nerdctl: exec: \"$1\": executable file not found in \$PATH" >&2; exit 1; }
exec "$@"
"""


def write(node, path: str, text: str, mode: int = 0o644):
    """Writes a file on a running node, through its root filesystem."""
    target = node.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():  # the sandbox's containerd release links (tests/sandbox.py)
        target.unlink()
    target.write_text(text)
    os.chmod(target, mode)


def install_nvidia_smi(node, gpus: list[dict]):
    """The stand-in nvidia-smi, listing `gpus` (nvidia_gpus entries)."""
    bus_ids = " ".join(f"'0000{g['pci_address'].upper()}'" for g in gpus)
    lines = " ".join(f"'GPU {i}: {g['name']} (UUID: GPU-stand-in-{i})'" for i, g in enumerate(gpus))
    write(node, "/usr/bin/nvidia-smi", NVIDIA_SMI_STAND_IN.format(bus_ids=bus_ids, gpu_lines=lines), 0o755)


@contextlib.contextmanager
def kept(node, *paths: str):
    """Restores the files at `paths` (content and mode, or absence) afterwards."""
    saved = {}
    for path in paths:
        p = node.path(path)
        if p.is_symlink():
            saved[path] = ("link", os.readlink(p))
            continue
        saved[path] = (p.read_bytes(), os.stat(p).st_mode & 0o7777) if p.exists() else None
    try:
        yield
    finally:
        for path, was in saved.items():
            p = node.path(path)
            if was is not None and was[0] == "link":
                p.unlink(missing_ok=True)
                os.symlink(was[1], p)
            elif was is None:
                p.unlink(missing_ok=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(was[0])
                os.chmod(p, was[1])


def summary(run) -> dict[str, list[str]]:
    """The summary's lines, by host (a host may have a WARN line after its own)."""
    [result] = [r for r in run.results if r["task"].endswith(SUMMARY_TASK)]
    out = {}
    for line in result["result"]["msg"]:
        out.setdefault(line.split()[0], []).append(line)
    return out


def details(run) -> dict[str, list[str]]:
    """Each node's own list: "STATUS  check: message", one per check."""
    return {r["host"]: r["result"]["msg"] for r in run.results if r["task"].endswith(DETAILS_TASK)}


def node_failed(run, host) -> bool:
    return run.stats[host]["failures"] > 0 or run.stats[host]["unreachable"] > 0


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


@pytest.fixture(scope="module")
def user(sb, site, tmp_path_factory):
    """A cluster site.yml set up, with the stand-in nvidia-smi on the GPU nodes."""
    sb.reset()
    user = Ansible(sb.inventory, tmp_path_factory.mktemp("verify"))
    user.playbook(site).expect_ok()
    for host in ("worker2", "worker3"):
        node = sb.node(host)
        install_nvidia_smi(node, json.loads(node.path(FACTS_FILE).read_text())["nvidia_gpus"])
    yield user
    user.close()


def test_a_correct_cluster_passes(user):
    run = user.playbook(VERIFY).expect_ok()
    assert summary(run) == {host: [PASS_LINES[host]] for host in HOSTS}, run.output
    for host in HOSTS:
        assert run.stats[host]["changed"] == 0, host
        assert run.stats[host]["failures"] == 0, host
    assert details(run)["worker3"] == [
        "PASS  gpu mode: GPU node: 8 NVIDIA GPUs detected",
        f"PASS  facts file: {FACTS_FILE} matches the detection",
        f"PASS  containerd: default runtime nvidia ({RUNTIME}), SystemdCgroup true; read with containerd "
        f"config dump from {CONFIG}",
        "PASS  nvidia-smi: nvidia-smi sees the 8 GPU(s) detection found (driver 570.124.06)",
        "SKIP  container: no verify_container_image given",
    ]
    assert details(run)["worker1"][2] == (
        f"PASS  containerd: default runtime runc, SystemdCgroup true; read with containerd config dump from {CONFIG}")


def test_check_mode_gives_the_same_verdicts_and_changes_no_file(sb, user):
    """Verdicts of both kinds: worker2's config is edited by hand to runc."""
    worker2 = sb.node("worker2")
    with kept(worker2, CONFIG):
        config = worker2.path(CONFIG)
        config.write_text(config.read_text().replace('default_runtime_name = "nvidia"', 'default_runtime_name = "runc"'))
        before = {n.name: n.upper_hash() for n in sb.nodes}
        real = user.playbook(VERIFY)
        checked = user.playbook(VERIFY, "--check")
        after = {n.name: n.upper_hash() for n in sb.nodes}
    assert real.rc == checked.rc == 2, real.output
    assert details(checked) == details(real)
    assert summary(checked) == summary(real)
    assert summary(real)["worker2"] == [
        "worker2  FAIL  containerd: containerd's default runtime is runc, expected nvidia: run site.yml "
        f"-l worker2 --tags container, or fix {CONFIG}"
    ]
    for name in HOSTS:
        changed = sorted(k for k in set(before[name]) | set(after[name]) if before[name].get(k) != after[name].get(k))
        assert not changed, f"{name}: verify.yml changed {changed}"


def test_a_config_edited_to_runc_fails_that_node_only(sb, user):
    """The edit made with an ansible command, as an operator would."""
    worker3 = sb.node("worker3")
    with kept(worker3, CONFIG):
        user.adhoc("worker3", "ansible.builtin.replace",
                   f"path={CONFIG} regexp='default_runtime_name = \"nvidia\"' replace='default_runtime_name = \"runc\"'").expect_ok()
        run = user.playbook(VERIFY).expect_failed()
    assert summary(run) == {
        "worker1": [PASS_LINES["worker1"]],
        "worker2": [PASS_LINES["worker2"]],
        "worker3": ["worker3  FAIL  containerd: containerd's default runtime is runc, expected nvidia: run "
                    f"site.yml -l worker3 --tags container, or fix {CONFIG}"],
    }, run.output
    assert [h for h in HOSTS if node_failed(run, h)] == ["worker3"]
    assert run.result("worker3", "Fail the nodes that failed a check")["status"] == "failed"


def test_a_removed_runtime_binary_fails(sb, user):
    worker2 = sb.node("worker2")
    with kept(worker2, RUNTIME):
        worker2.path(RUNTIME).unlink()
        run = user.playbook(VERIFY, "-l", "worker2").expect_failed()
    [line] = summary(run)["worker2"]
    assert line.startswith("worker2  FAIL  "), line
    assert (
        f"containerd: the nvidia runtime's binary {RUNTIME} does not exist or is not executable, so no pod "
        "can start with it: install the NVIDIA Container Toolkit (nvidia-container-toolkit; site.yml installs "
        "it unless nvidia_container_toolkit_install=false), or set containerd_nvidia_runtime_path to where it "
        "is and run site.yml -l worker2 --tags container"
    ) in line
    # Detection no longer finds the runtime either: the facts file is stale.
    assert (f'facts file: {FACTS_FILE} does not match the detection now (nvidia_container_runtime_path: '
            f'"{RUNTIME}" in the file, null now)') in line
    assert worker2.path(RUNTIME).read_text() == sandbox.RUNTIME_STAND_IN


def test_a_drop_in_configuration_passes_and_its_edits_count(sb, site, user):
    """site.yml with containerd_config_mode=drop_in over a main file whose
    default is runc: the NVIDIA runtime is the default only through the
    drop-in, which containerd's own merge makes effective."""
    worker1, worker2 = sb.node("worker1"), sb.node("worker2")
    with kept(worker2, CONFIG, DROP_IN):
        worker2.path(CONFIG).write_bytes(worker1.path(CONFIG).read_bytes())  # the CPU node's: runc
        user.playbook(site, "-l", "worker2", "-e", "containerd_config_mode=drop_in").expect_ok()
        assert 'default_runtime_name = "runc"' in worker2.path(CONFIG).read_text()
        assert f'imports = ["{DROP_IN}"]' in worker2.path(CONFIG).read_text()

        run = user.playbook(VERIFY, "-l", "worker2").expect_ok()
        assert summary(run) == {"worker2": [PASS_LINES["worker2"]]}
        assert details(run)["worker2"][2] == (
            f"PASS  containerd: default runtime nvidia ({RUNTIME}), SystemdCgroup true; read with containerd "
            f"config dump from {CONFIG} and {DROP_IN}")

        drop_in = worker2.path(DROP_IN)
        drop_in.write_text(drop_in.read_text().replace('default_runtime_name = "nvidia"', 'default_runtime_name = "runc"'))
        run = user.playbook(VERIFY, "-l", "worker2").expect_failed()
        assert summary(run) == {"worker2": [
            "worker2  FAIL  containerd: containerd's default runtime is runc, expected nvidia: run site.yml -l "
            f"worker2 --tags container, or fix {CONFIG} and {DROP_IN}"]}

        drop_in.unlink()
        run = user.playbook(VERIFY, "-l", "worker2").expect_failed()
        [line] = summary(run)["worker2"]
        assert line.startswith("worker2  FAIL  containerd: containerd cannot read its configuration "
                               f"(`/usr/bin/containerd --config {CONFIG} config dump` failed"), line
        assert f"failed to load TOML: {DROP_IN}: open {DROP_IN}: no such file or directory" in line
        assert line.endswith(f"fix {CONFIG}, or run site.yml -l worker2 --tags container to rewrite it"), line


def test_a_stale_or_broken_facts_file_fails(sb, user):
    worker3 = sb.node("worker3")
    facts = worker3.path(FACTS_FILE)
    with kept(worker3, FACTS_FILE):
        data = json.loads(facts.read_text())
        data["nvidia_gpu_count"] = 4
        data["nvidia_gpus"] = data["nvidia_gpus"][:4]
        facts.write_text(json.dumps(data, indent=2) + "\n")
        stale = user.playbook(VERIFY, "-l", "worker3").expect_failed()
        facts.write_text("{ not json\n")
        broken = user.playbook(VERIFY, "-l", "worker3").expect_failed()
        facts.unlink()
        missing = user.playbook(VERIFY, "-l", "worker3").expect_failed()
    assert summary(stale) == {"worker3": [
        f"worker3  FAIL  facts file: {FACTS_FILE} does not match the detection now (nvidia_gpu_count: 4 in "
        "the file, 8 now; nvidia_gpus differs): run site.yml -l worker3 --tags gpu to rewrite it"]}
    assert summary(broken) == {"worker3": [
        f"worker3  FAIL  facts file: {FACTS_FILE} is not JSON (error loading facts as JSON or ini - please "
        f"check content: {FACTS_FILE}): run site.yml -l worker3 --tags gpu to rewrite it"]}
    assert summary(missing) == {"worker3": [
        f"worker3  FAIL  facts file: {FACTS_FILE} does not exist: run site.yml -l worker3 --tags gpu to write it"]}


def test_gpu_mode_forced_without_a_gpu_fails_and_turned_off_on_a_gpu_node_warns(sb, site, user):
    forced = user.playbook(VERIFY, "-l", "worker1", "-e", "has_nvidia_gpu=true").expect_failed()
    [line] = summary(forced)["worker1"]
    assert line.startswith(
        "worker1  FAIL  gpu mode: has_nvidia_gpu=true, but no NVIDIA GPU is detected on this node (site.yml "
        "makes the NVIDIA runtime containerd's default there, for no GPU): remove has_nvidia_gpu for worker1 "
        "(inventory, host_vars, group_vars or -e) and run site.yml -l worker1, or find out why the GPU is not "
        "seen (lspci -d 10de:) | containerd: containerd has no runtime named nvidia"), line
    assert "nvidia-smi" not in line, "no driver check on a node without a GPU"

    worker3 = sb.node("worker3")
    with kept(worker3, CONFIG):
        user.playbook(site, "-l", "worker3", "-e", "has_nvidia_gpu=false").expect_ok()
        off = user.playbook(VERIFY, "-l", "worker3", "-e", "has_nvidia_gpu=false").expect_ok()
    assert summary(off) == {"worker3": [
        "worker3  PASS  facts file, containerd, nvidia-smi; skipped: container: no verify_container_image given",
        "worker3  WARN  gpu mode: has_nvidia_gpu=false although detection finds 8 NVIDIA GPUs: the node is "
        "set up as a CPU node and its pods get no GPU. Fine if deliberate; otherwise remove has_nvidia_gpu for "
        "worker3 (inventory, host_vars, group_vars or -e) and run site.yml -l worker3",
    ]}, off.output
    assert off.stats["worker3"]["failures"] == 0


def test_nvidia_smi_and_the_container_run(sb, user):
    """worker2 has the stand-in ctr; worker3 the real one, with no containerd
    daemon to answer it; worker3's stand-in nvidia-smi loses a GPU."""
    worker2, worker3 = sb.node("worker2"), sb.node("worker3")
    gpus = json.loads(worker3.path(FACTS_FILE).read_text())["nvidia_gpus"]
    image = ("-e", f"verify_container_image={IMAGE}")
    with kept(worker2, "/usr/bin/ctr", "/var/lib/ctr-stand-in/images", "/var/lib/ctr-stand-in/calls"), \
            kept(worker3, "/usr/bin/nvidia-smi"):
        write(worker2, "/usr/bin/ctr", CTR_STAND_IN, 0o755)
        install_nvidia_smi(worker3, gpus[:7])
        checked = user.playbook(VERIFY, "-l", "worker2,worker3", "--check", *image).expect_failed()
        real = user.playbook(VERIFY, "-l", "worker2", *image).expect_ok()
        checked_again = user.playbook(VERIFY, "-l", "worker2", "--check", *image).expect_ok()
        unpullable = user.playbook(VERIFY, "-l", "worker2", "-e",
                                   "verify_container_image=registry.example.com/missing/cuda:1").expect_failed()
        calls = worker2.path("/var/lib/ctr-stand-in/calls").read_text().splitlines()

    assert summary(checked)["worker2"] == [
        f"worker2  PASS  gpu mode, facts file, containerd, nvidia-smi; skipped: container: {IMAGE} is not on "
        f"the node yet and check mode pulls nothing: run without --check, or pull it first (ctr -n k8s.io images "
        f"pull {IMAGE})"]
    assert summary(real)["worker2"] == ["worker2  PASS  gpu mode, facts file, containerd, nvidia-smi, container"]
    assert details(real)["worker2"][4] == (
        f"PASS  container: ctr run with the NVIDIA runtime ({RUNTIME}): a container of {IMAGE} sees the 1 GPU(s)")
    assert real.stats["worker2"]["changed"] == 1, "the pull is the one change verify.yml makes"
    assert summary(checked_again)["worker2"] == summary(real)["worker2"], "the image is there now"

    run_call = next(c for c in calls if " run " in f" {c} ")
    assert re.fullmatch(
        rf"--namespace k8s\.io run --rm --runtime io\.containerd\.runc\.v2 --runc-binary {RUNTIME} "
        rf"--env NVIDIA_VISIBLE_DEVICES=all {re.escape(IMAGE)} gpu-node-verify-\d+ nvidia-smi -L", run_call), calls
    assert f"--namespace k8s.io images pull --hosts-dir /etc/containerd/certs.d {IMAGE}" in calls
    assert not worker2.path("/var/lib/nerdctl-stand-in/calls").exists(), "no nerdctl on worker2: ctr ran"
    assert sum(" images pull " in f" {c} " for c in calls) == 2, "one pull of IMAGE, one of the missing image"

    [line] = summary(unpullable)["worker2"]
    assert line == (
        "worker2  FAIL  container: cannot pull registry.example.com/missing/cuda:1 (exit 1: ctr: failed to "
        "resolve reference \"registry.example.com/missing/cuda:1\": registry.example.com/missing/cuda:1: not "
        "found): check its name and the registry (air-gapped: your registry's copy, with hosts.toml in "
        "/etc/containerd/certs.d), or pull it by hand"), line

    # worker3, in check mode: its nvidia-smi lost a GPU, and the real ctr
    # finds no containerd daemon (after its 10 s dial timeout).
    [line] = summary(checked)["worker3"]
    assert line.startswith(
        f"worker3  FAIL  nvidia-smi: nvidia-smi sees 7 GPU(s), detection 8 (nvidia-smi does not see "
        f"{gpus[7]['pci_address']}): a GPU is bound to another driver, has fallen off the bus (dmesg: Xid) or is "
        "hidden by CUDA_VISIBLE_DEVICES; see nvidia-smi -q | container: ctr cannot reach containerd (exit 1: "
        'ctr: failed to dial "/run/containerd/containerd.sock"'), line
    assert line.endswith(
        "): start containerd (systemctl start containerd) and look at its log (journalctl -u containerd)"), line


def test_the_container_runs_with_nerdctl_where_it_is_as_the_guide_runs_it(sb, user):
    """worker2 has nerdctl (the stand-in): the container test runs the guide's
    `nerdctl run --rm --gpus all <image> nvidia-smi`, and says so;
    verify_container_client=ctr picks ctr all the same."""
    worker2 = sb.node("worker2")
    image = ("-e", f"verify_container_image={IMAGE}")
    state = ("/var/lib/ctr-stand-in/images", "/var/lib/ctr-stand-in/calls", "/var/lib/nerdctl-stand-in/calls")
    with kept(worker2, "/usr/bin/ctr", "/usr/local/bin/nerdctl", *state):
        write(worker2, "/usr/bin/ctr", CTR_STAND_IN, 0o755)
        write(worker2, "/usr/local/bin/nerdctl", NERDCTL_STAND_IN, 0o755)
        with_nerdctl = user.playbook(VERIFY, "-l", "worker2", *image).expect_ok()
        nerdctl_calls = worker2.path("/var/lib/nerdctl-stand-in/calls").read_text().splitlines()
        with_ctr = user.playbook(VERIFY, "-l", "worker2", *image, "-e", "verify_container_client=ctr").expect_ok()
        ctr_runs = [c for c in worker2.path("/var/lib/ctr-stand-in/calls").read_text().splitlines() if " run " in f" {c} "]
        worker2.path("/usr/local/bin/nerdctl").unlink()
        asked = user.playbook(VERIFY, "-l", "worker2", *image, "-e", "verify_container_client=nerdctl").expect_failed()

    assert details(with_nerdctl)["worker2"][4] == (
        f"PASS  container: nerdctl run --rm --gpus all (the guide's command): a container of {IMAGE} sees the 1 GPU(s)")
    assert nerdctl_calls == [f"--namespace k8s.io run --rm --network none --gpus all {IMAGE} nvidia-smi -L"]
    assert details(with_ctr)["worker2"][4] == (
        f"PASS  container: ctr run with the NVIDIA runtime ({RUNTIME}): a container of {IMAGE} sees the 1 GPU(s)")
    assert len(ctr_runs) == 1, ctr_runs
    assert summary(asked)["worker2"] == [
        "worker2  FAIL  container: verify_container_client is nerdctl, but nerdctl is not on the node's PATH: "
        "install it, or set verify_container_client to auto or ctr"]


def test_a_node_that_cannot_be_reached_is_reported_not_verified(sb, user, tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(re.sub(r"(worker1 ansible_host=127\.0\.0\.1 ansible_port=)\d+", r"\g<1>1",
                                sb.inventory.read_text()))
    run = user.playbook(VERIFY, inventory=inventory).expect_failed()
    assert summary(run) == {
        "worker1": ["worker1  FAIL  not verified: the node was unreachable, or a task failed before its checks "
                    "(see above)"],
        "worker2": [PASS_LINES["worker2"]],
        "worker3": [PASS_LINES["worker3"]],
    }
    assert run.stats["worker1"]["unreachable"] == 1


def test_the_settings_it_checks_default_as_site_yml_has_them():
    """verify_gpu_node's copies of the install roles' variables have their
    defaults, so that verify.yml checks what site.yml did."""
    def defaults(role):
        return yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())
    mine = defaults("verify_gpu_node")
    theirs = defaults("install_os_package") | defaults("install_containerd")
    shared = {k: v for k, v in mine.items() if not k.startswith("verify_")}
    assert shared and shared == {k: theirs[k] for k in shared}
    spec = yaml.safe_load((REPO / "roles/verify_gpu_node/meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert {k: v["default"] for k, v in options.items() if "default" in v} == mine
