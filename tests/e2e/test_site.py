"""site.yml on a small mixed cluster: a CPU node, the real H200 capture, an
HGX H100 board and a consumer card on nouveau. Real ansible-playbook runs over
real SSH; the nodes' filesystems are read from the host."""
import json
from pathlib import Path

import pytest

from ansible_run import CDI_TASK, CHECK_VARIABLES_TASK, CONFIG_TASK, DETECT_TASK, DISPLAY_TASK, PLAN_TASK, Ansible

PROFILES = ["cpu", "h200", "hgx-h100", "consumer"]
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"

# What detection must find on each node (worker<N> runs PROFILES[N-1]).
EXPECTED = {
    "worker1": dict(present=False, count=0, nvswitches=0, driver=None, module_type=None, nouveau=False, names=[]),
    "worker2": dict(present=True, count=1, nvswitches=0, driver="580.159.04", module_type="open", nouveau=False,
                    names=["NVIDIA H200"]),
    "worker3": dict(present=True, count=8, nvswitches=4, driver="570.124.06", module_type="open", nouveau=False,
                    names=["NVIDIA H100 80GB HBM3"] * 8),
    "worker4": dict(present=True, count=1, nvswitches=0, driver=None, module_type=None, nouveau=True,
                    names=["TU102 [GeForce RTX 2080 Ti Rev. A]"]),
}
HOSTS = sorted(EXPECTED)
DETECT = DETECT_TASK


def role_changes(run, host, role="install_os_package"):
    """The tasks of `role` that reported a change on `host`."""
    return [t for t in run.changed_tasks(host) if t.startswith(f"{role} : ")]


def assert_detection(host, facts):
    want = EXPECTED[host]
    got = dict(
        present=facts["nvidia_gpu_present"], count=facts["nvidia_gpu_count"],
        nvswitches=facts["nvidia_nvswitch_count"], driver=facts["nvidia_driver_version"],
        module_type=facts["nvidia_kernel_module_type"], nouveau=facts["nouveau_loaded"],
        names=[g["name"] for g in facts["nvidia_gpus"]],
    )
    assert got == want, f"{host}: detected {got}, expected {want}"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


# Files the playbook writes on nodes; this machine's own must not change.
HOST_FILES = [Path(FACTS_FILE), Path("/etc/containerd/config.toml")]


def host_state():
    return {p: p.read_bytes() if p.exists() else None for p in HOST_FILES}


@pytest.fixture(scope="module")
def converged(sb, site, tmp_path_factory):
    """One user runs the setup playbook twice on fresh nodes."""
    sb.reset()
    host_before = host_state()
    user = Ansible(sb.inventory, tmp_path_factory.mktemp("converged"))
    first = user.playbook(site)
    second = user.playbook(site)
    assert host_state() == host_before, "the nodes' files are theirs: this machine's stay as they were"
    yield user, first, second
    user.close()


def test_first_run_detects_each_node_and_decides_its_gpu_mode(sb, converged):
    user, first, _ = converged
    first.expect_ok()
    for host in HOSTS:
        cached = user.cached_facts(host)
        assert_detection(host, cached)
        assert cached["gpu_node_enabled"] is EXPECTED[host]["present"], host
        assert cached["gpu_node_mode_source"] == "detected", host
        assert "has_nvidia_gpu" not in cached, f"{host}: a fact named has_nvidia_gpu would defeat the user's override"
        on_node = json.loads(sb.node(host).path(FACTS_FILE).read_text())
        assert_detection(host, on_node)
        assert not [k for k in on_node if k.startswith("node_")], "the facts file holds the detection only"
    assert user.cached_facts("worker3")["nvidia_nvswitch_count"] == 4
    for host in HOSTS:  # the packages are installed already, the toolkit is the sandbox's
        assert role_changes(first, host) == [DETECT], host


def test_second_run_changes_nothing(converged):
    _, _, second = converged
    second.expect_ok()
    assert sorted(second.stats) == HOSTS
    for host in HOSTS:
        assert second.stats[host]["changed"] == 0, f"{host} changed: {second.changed_tasks(host)}\n{second.output}"
        assert second.stats[host]["failures"] == 0


def test_a_node_pays_only_for_the_steps_it_needs(converged, site):
    """Nothing to install (the bench's variables): after the play's one
    variable check and plan (on the first node), a CPU node and a GPU node
    without a driver get detection, the guide's message and the config; a
    GPU node with a driver gets its CDI spec too. No skipped task: each costs
    the controller as much as a run one (bench/results.md)."""
    user, _, _ = converged
    run = user.playbook(site, "-e", '{"install_os_packages": false, "containerd_install": false}').expect_ok()
    # dict.fromkeys: the plan's loop records a result per node besides its own.
    tasks = {h: list(dict.fromkeys(r["task"] for r in run.host_results(h))) for h in HOSTS}
    assert tasks == {
        "worker1": [CHECK_VARIABLES_TASK, DETECT, PLAN_TASK, DISPLAY_TASK, CONFIG_TASK],
        "worker2": [DETECT, CDI_TASK, DISPLAY_TASK, CONFIG_TASK],
        "worker3": [DETECT, CDI_TASK, DISPLAY_TASK, CONFIG_TASK],
        "worker4": [DETECT, DISPLAY_TASK, CONFIG_TASK],  # nouveau: no driver loaded, no CDI spec
    }, run.output
    assert run.result("worker4", DISPLAY_TASK)["result"]["msg"] == \
        "Configuring containerd with NVIDIA GPU runtime (detected: 1 NVIDIA GPU(s))"
    assert sum(s["changed"] for s in run.stats.values()) == 0


def test_adhoc_setup_shows_the_local_facts_file(converged):
    user, _, _ = converged
    run = user.adhoc("all", "setup", "filter=ansible_local").expect_ok()
    for host in HOSTS:
        local = run.result(host, "setup")["result"]["ansible_facts"]["ansible_local"]
        assert_detection(host, local["gpu"])


def test_adhoc_debug_shows_the_cached_detection_and_decision(converged):
    """`ansible all -m debug -a var=...` reads the fact cache: no connection."""
    user, _, _ = converged
    for var, expected in [
        ("nvidia_gpu_count", {h: EXPECTED[h]["count"] for h in HOSTS}),
        ("gpu_node_enabled", {h: EXPECTED[h]["present"] for h in HOSTS}),
        ("gpu_node_mode_source", {h: "detected" for h in HOSTS}),
    ]:
        run = user.adhoc("all", "debug", f"var={var}").expect_ok()
        got = {h: run.result(h, "debug")["result"][var] for h in HOSTS}
        assert got == expected, f"{var}\n{run.output}"


def test_limit_touches_only_that_node(sb, site, ansible_factory):
    sb.reset()
    before = {n.name: n.upper_hash() for n in sb.nodes}
    run = ansible_factory(sb.inventory).playbook(site, "-l", "worker3").expect_ok()
    assert sorted(run.stats) == ["worker3"]
    for node in sb.nodes:
        after = node.upper_hash()
        if node.name == "worker3":
            assert FACTS_FILE in set(after) - set(before[node.name])
        else:
            assert after == before[node.name], f"{node.name} was touched: {sorted(set(after) ^ set(before[node.name]))}"


def test_check_mode_changes_no_file_and_shows_the_facts_file_diff(sb, site, ansible_factory):
    sb.reset()
    before = {n.name: n.upper_hash() for n in sb.nodes}
    run = ansible_factory(sb.inventory).playbook(site, "--check", "--diff").expect_ok()
    for node in sb.nodes:
        # Nothing at all: not even the action plugin's module cache.
        after = node.upper_hash()
        assert after == before[node.name], f"{node.name} changed in check mode: {sorted(set(after) ^ set(before[node.name]))}"
        assert not node.path(FACTS_FILE).exists()
    for host in HOSTS:
        detect = run.result(host, DETECT)
        assert detect["changed"], f"{host}: the facts file would be written"
        diff = detect["result"]["diff"]
        diff = diff[0] if isinstance(diff, list) else diff
        assert diff["after_header"] == FACTS_FILE
        assert_detection(host, json.loads(diff["after"]))
    assert f"+++ after: {FACTS_FILE}" in run.stdout
    assert '+  "nvidia_gpu_count": 8,' in run.stdout  # the HGX node's


def test_changed_hardware_is_seen_on_the_next_run_of_that_node_only(sb, site, ansible_factory):
    """Each node has its own copy of its hardware: a driver update on one
    node changes that node's facts file and nothing on the others."""
    sb.reset()
    user = ansible_factory(sb.inventory)
    user.playbook(site).expect_ok()
    h200 = sb.node("worker2")
    (h200.hardware / "sys/module/nvidia/version").write_text("580.200.01\n")
    # A driver update brings its libraries; the CDI spec then lists them.
    for lib in ("libcuda", "libnvidia-ml"):
        h200.path(f"/usr/local/nvidia/lib64/{lib}.so.580.200.01").write_text("stand-in\n")
    assert h200.path("/sys/module/nvidia/version").read_text() == "580.200.01\n"
    assert sb.node("worker3").path("/sys/module/nvidia/version").read_text() == "570.124.06\n"
    run = user.playbook(site).expect_ok()
    assert role_changes(run, "worker2") == [DETECT]
    assert run.result("worker2", CDI_TASK)["changed"]
    for host in ("worker1", "worker3", "worker4"):
        assert run.stats[host]["changed"] == 0, host
    assert user.cached_facts("worker2")["nvidia_driver_version"] == "580.200.01"
    assert json.loads(h200.path(FACTS_FILE).read_text())["nvidia_driver_version"] == "580.200.01"


def test_toolkit_is_installed_on_gpu_nodes_only_and_check_mode_stays_honest(sb, site, ansible_factory):
    """With the toolkit's install on (the sandbox turns it off: its nodes reach
    no NVIDIA repository), --check runs the toolkit tasks on the GPU node only;
    apt cannot know a package of a repository that check mode did not add, and
    that error is ignored in check mode only."""
    sb.reset(["worker1", "worker2"])
    before = {n: sb.node(n).upper_hash() for n in ("worker1", "worker2")}
    run = ansible_factory(sb.inventory).playbook(
        site, "-l", "worker1,worker2", "--check",
        "-e", "nvidia_container_toolkit_install=true", "-e", "nvidia_container_toolkit_repo_manage=false").expect_ok()
    toolkit = "install_os_package : Install the NVIDIA container toolkit with apt"
    assert run.result("worker1", toolkit)["status"] == "skipped"
    apt = run.result("worker2", toolkit)
    assert apt["status"] == "ignored" and "nvidia-container-toolkit" in apt["result"]["msg"], apt
    for name in ("worker1", "worker2"):
        assert sb.node(name).upper_hash() == before[name], name
