"""The user's has_nvidia_gpu wins over detection wherever it is set, also
when the fact cache holds an earlier run's detection and decision; without
it, detection decides again."""
import pytest

from ansible_run import CHECK_VARIABLES_TASK, DETECT_TASK
from sandbox import PROFILES as ALL_PROFILES

# worker1: no GPU visible, but the NVIDIA container toolkit installed (a node
# whose GPU is being passed through, say: the case has_nvidia_gpu=true is
# for; install_containerd refuses the NVIDIA runtime without its binary).
# worker2: one H200.
PROFILES = [ALL_PROFILES["cpu"].variant(name="cpu+toolkit", container_runtime=True), "h200"]
DETECTED = {"worker1": False, "worker2": True}


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


def decisions(user, hosts=("worker1", "worker2")):
    facts = {h: user.cached_facts(h) for h in hosts}
    return {h: (f["gpu_node_enabled"], f["gpu_node_mode_source"]) for h, f in facts.items()}


def run_decisions(run):
    """The decision each host's play made, from the detection's result."""
    out = {}
    for host in ("worker1", "worker2"):
        facts = run.result(host, DETECT_TASK)["result"]["ansible_facts"]
        out[host] = (facts["gpu_node_enabled"], facts["gpu_node_mode_source"])
    return out


def inventory_with(sb, tmp_path, ini_extra="", files=None, host_line_vars=None):
    """The sandbox inventory, copied into its own folder with more groups and
    inventory-adjacent host_vars/ and group_vars/ files."""
    inv_dir = tmp_path / "inventory"
    inv_dir.mkdir()
    text = sb.inventory.read_text()
    for host, extra in (host_line_vars or {}).items():
        text = "\n".join(f"{line} {extra}" if line.startswith(f"{host} ") else line for line in text.splitlines()) + "\n"
    (inv_dir / "hosts.ini").write_text(text + ini_extra)
    for rel, content in (files or {}).items():
        (inv_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (inv_dir / rel).write_text(content)
    return inv_dir / "hosts.ini"


# Each way of setting has_nvidia_gpu: true for the CPU node (worker1) and
# false for the GPU node (worker2), as users write it.
GROUPS = "\n[gpu_nodes]\nworker1\n\n[cpu_nodes]\nworker2\n"
OVERRIDES = {
    "host line in the inventory": dict(host_line_vars={"worker1": "has_nvidia_gpu=true", "worker2": "has_nvidia_gpu=false"}),
    "[group:vars] in the inventory": dict(
        ini_extra=GROUPS + "\n[gpu_nodes:vars]\nhas_nvidia_gpu=true\n\n[cpu_nodes:vars]\nhas_nvidia_gpu=false\n"),
    "host_vars/<node>.yml": dict(files={
        "host_vars/worker1.yml": "has_nvidia_gpu: true\n", "host_vars/worker2.yml": "has_nvidia_gpu: false\n"}),
    "group_vars/<group>.yml": dict(ini_extra=GROUPS, files={
        "group_vars/gpu_nodes.yml": "has_nvidia_gpu: true\n", "group_vars/cpu_nodes.yml": "has_nvidia_gpu: false\n"}),
}


@pytest.mark.parametrize("where", list(OVERRIDES))
def test_inventory_override_wins_over_cached_detection(sb, site, ansible_factory, tmp_path, where):
    user = ansible_factory(sb.inventory)
    user.playbook(site, "-e", "install_os_packages=false").expect_ok()
    assert decisions(user) == {h: (d, "detected") for h, d in DETECTED.items()}

    overridden = inventory_with(sb, tmp_path, **OVERRIDES[where])
    run = user.playbook(site, "-e", "install_os_packages=false", inventory=overridden).expect_ok()
    expected = {"worker1": (True, "user"), "worker2": (False, "user")}
    assert run_decisions(run) == expected
    assert decisions(user) == expected, "the fact cache keeps the user's decision"
    # Detection itself is unchanged: the override is a decision, not a fact.
    assert user.cached_facts("worker1")["nvidia_gpu_present"] is False
    assert user.cached_facts("worker2")["nvidia_gpu_present"] is True


def test_extra_vars_win_both_ways_and_detection_decides_again_without_them(sb, site, ansible_factory):
    user = ansible_factory(sb.inventory)
    steps = [
        ([], {h: (d, "detected") for h, d in DETECTED.items()}),
        (["-e", "has_nvidia_gpu=true"], {"worker1": (True, "user"), "worker2": (True, "user")}),
        (["-e", "has_nvidia_gpu=false"], {"worker1": (False, "user"), "worker2": (False, "user")}),
        ([], {h: (d, "detected") for h, d in DETECTED.items()}),
    ]
    for args, expected in steps:
        run = user.playbook(site, "-e", "install_os_packages=false", *args).expect_ok()
        assert run_decisions(run) == expected, args
        assert decisions(user) == expected, args


def test_tagged_run_detects_again_and_an_override_given_now_wins(sb, site, ansible_factory):
    """`--tags packages`: detection and the decision run whatever the tags
    (one call), so an override given now wins over the cached decision, and
    without it detection decides again."""
    user = ansible_factory(sb.inventory)
    user.playbook(site, "-e", "install_os_packages=false").expect_ok()
    run = user.playbook(site, "--tags", "packages", "-e", "has_nvidia_gpu=true").expect_ok()
    ran = [r["host"] for r in run.results if r["action"] == "nvidia_gpu_facts" and r["status"] != "skipped"]
    assert sorted(ran) == sorted(DETECTED), "one detection per node, with the decision"
    assert run_decisions(run) == {"worker1": (True, "user"), "worker2": (True, "user")}
    run = user.playbook(site, "--tags", "packages").expect_ok()
    assert run_decisions(run) == {h: (d, "detected") for h, d in DETECTED.items()}


def test_tagged_run_without_any_detection_detects_the_node_itself(sb, site, ansible_factory):
    """--tags packages with an empty fact cache: each node is detected (its OS
    decides the packages) and the decision is the detection."""
    user = ansible_factory(sb.inventory)  # an empty fact cache
    run = user.playbook(site, "--tags", "packages").expect_ok()
    ran = [r["host"] for r in run.results if r["action"] == "nvidia_gpu_facts" and r["status"] != "skipped"]
    assert sorted(ran) == sorted(DETECTED), "each node detected once"
    assert run_decisions(run) == {h: (d, "detected") for h, d in DETECTED.items()}


def test_each_nodes_variables_are_checked_and_a_bad_one_stops_every_node_first(sb, site, ansible_factory, tmp_path):
    """site.yml checks the variables of every node in one task: a good value
    of its own on worker1 passes, a bad one in worker2's host_vars stops the
    play before anything is written on any node, naming the node and the
    variable."""
    inventory = inventory_with(sb, tmp_path, host_line_vars={"worker1": "has_nvidia_gpu=true"}, files={
        "host_vars/worker2.yml": "containerd_config_mode: everything\ninstall_gpu_driver: perhaps\n"})
    sb.reset()
    before = {n.name: n.upper_hash() for n in sb.nodes}
    run = ansible_factory(inventory).playbook(site).expect_failed()
    assert [(r["task"], r["status"]) for r in run.results] == [(CHECK_VARIABLES_TASK, "failed")], run.output
    msg = run.results[0]["result"]["msg"]
    assert "containerd_config_mode must be one of: template, merge, drop_in, got: everything found in worker2" in msg, msg
    assert "'install_gpu_driver' is of type str found in 'worker2'" in msg, msg
    assert "worker1" not in msg, msg
    assert {n.name: n.upper_hash() for n in sb.nodes} == before, "nothing was written on any node"
