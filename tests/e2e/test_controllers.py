"""Every tested ansible-core release as the controller (tests/ansible-core-releases.txt).

The whole e2e suite runs on the newest (.venv). Each older release runs, from
its own venv (`make venvs`), what a user does first, against two fresh sandbox
nodes (a CPU node and the real H200 capture): the ad hoc module, site.yml with
--check --diff, site.yml twice, and verify.yml (a correct cluster passes, a
node edited back to runc fails). That covers the action plugin (arguments,
results, check mode, diff), the roles' argument specs and handlers, the fact
cache, and the test's own callback plugin on each release."""
import json
import re
import subprocess

import pytest

from ansible_run import REPO, VENV_BIN, Ansible, newest_release
from test_verify import CONFIG, PASS_LINES, VERIFY, install_nvidia_smi, kept, summary

SMOKE_PROFILES = ["cpu", "h200"]
HOSTS = ["worker1", "worker2"]
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"
DETECT = "install_os_package : Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS"


def ansible_version(bin_dir) -> tuple[str, str]:
    """(ansible-core version, controller Python version) that `ansible --version` reports."""
    out = subprocess.run([str(bin_dir / "ansible"), "--version"], capture_output=True, text=True, check=True).stdout
    core = re.search(r"\[core ([0-9.]+)\]", out).group(1)
    python = re.search(r"python version = ([0-9.]+)", out).group(1)
    return core, python


def test_venv_runs_the_newest_tested_release():
    pin = re.search(r"^ansible-core==(\S+)$", (REPO / "tests/requirements.txt").read_text(), re.M).group(1)
    assert pin == newest_release().version, "tests/requirements.txt and tests/ansible-core-releases.txt disagree"
    assert ansible_version(VENV_BIN)[0] == pin


def test_each_release_venv_runs_that_release(ansible_release):
    core, python = ansible_version(ansible_release.bin_dir)
    assert core == ansible_release.version
    assert python.startswith("3.11."), f"ansible-core {core} runs on Python {python}; the tested controller Python is 3.11"


@pytest.fixture(scope="module")
def cluster(older_ansible_release, sandbox_factory, tmp_path_factory):
    """Fresh nodes and a user of this release; the nodes stop with the release's last test."""
    sb = sandbox_factory(SMOKE_PROFILES)
    user = Ansible(sb.inventory, tmp_path_factory.mktemp(f"ansible-core-{older_ansible_release.series}"),
                   older_ansible_release.bin_dir)
    yield sb, user
    user.close()
    sb.down()


def test_adhoc_module_detects_each_node(cluster):
    _, user = cluster
    run = user.adhoc("all", "nvidia_gpu_facts").expect_ok()
    facts = {h: run.result(h, "nvidia_gpu_facts")["result"]["ansible_facts"] for h in HOSTS}
    assert [g["name"] for g in facts["worker2"]["nvidia_gpus"]] == ["NVIDIA H200"]
    assert facts["worker2"]["nvidia_driver_version"] == "580.159.04"
    assert facts["worker1"]["nvidia_gpu_count"] == 0
    for h in HOSTS:
        assert run.result(h, "nvidia_gpu_facts")["result"]["module_binary"]["transferred"] is True, h


def test_check_diff_writes_nothing_and_shows_the_facts_file(cluster, site):
    sb, user = cluster
    before = {n.name: n.upper_hash() for n in sb.nodes}
    run = user.playbook(site, "--check", "--diff").expect_ok()
    for node in sb.nodes:
        assert node.upper_hash() == before[node.name], f"{node.name} changed in check mode"
    for host in HOSTS:
        detect = run.result(host, DETECT)
        assert detect["changed"], host
        diff = detect["result"]["diff"]
        diff = diff[0] if isinstance(diff, list) else diff
        assert diff["after_header"] == FACTS_FILE, host
    assert f"+++ after: {FACTS_FILE}" in run.stdout
    assert '+  "nvidia_gpu_count": 1,' in run.stdout


def test_site_sets_up_each_node_and_a_second_run_changes_nothing(cluster, site):
    sb, user = cluster
    user.playbook(site).expect_ok()
    second = user.playbook(site).expect_ok()
    for host in HOSTS:
        assert second.stats[host]["changed"] == 0, f"{host} changed: {second.changed_tasks(host)}\n{second.output}"
    assert user.cached_facts("worker2")["gpu_node_enabled"] is True
    assert user.cached_facts("worker1")["gpu_node_enabled"] is False
    assert json.loads(sb.node("worker2").path(FACTS_FILE).read_text())["nvidia_gpu_count"] == 1
    assert 'default_runtime_name = "nvidia"' in sb.node("worker2").path(CONFIG).read_text()
    assert 'default_runtime_name = "runc"' in sb.node("worker1").path(CONFIG).read_text()


def test_verify_passes_the_cluster_and_fails_a_node_edited_to_runc(cluster):
    sb, user = cluster
    worker2 = sb.node("worker2")
    install_nvidia_smi(worker2, json.loads(worker2.path(FACTS_FILE).read_text())["nvidia_gpus"])
    run = user.playbook(VERIFY).expect_ok()
    assert summary(run) == {h: [PASS_LINES[h]] for h in HOSTS}, run.output
    with kept(worker2, CONFIG):
        config = worker2.path(CONFIG)
        config.write_text(config.read_text().replace('default_runtime_name = "nvidia"', 'default_runtime_name = "runc"'))
        broken = user.playbook(VERIFY)
    assert broken.rc == 2, broken.output
    assert summary(broken)["worker2"][0].startswith("worker2  FAIL  containerd: containerd's default runtime is runc")
    assert summary(broken)["worker1"] == [PASS_LINES["worker1"]]


def test_ansible_doc_reads_each_module(older_ansible_release):
    """`ansible-doc <module>` (README) reads library/<module>.yml on each release as on the newest."""
    def options(bin_dir, module):
        out = subprocess.run([str(bin_dir / "ansible-doc"), "--json", "-t", "module", module],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        return json.loads(out)[module]["doc"]["options"]

    for module in ("nvidia_gpu_facts", "containerd_runtime_config", "nvidia_driver_install"):
        assert options(older_ansible_release.bin_dir, module) == options(VENV_BIN, module), module
