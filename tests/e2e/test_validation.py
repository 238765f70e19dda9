"""Wrong input fails early, with a message that names what is wrong, before
anything is done on a node."""
import pytest

from sandbox import PROFILES

UNKNOWN_OS = PROFILES["cpu"].variant(
    name="cpu-nixos", files=(("/etc/os-release", 'NAME="NixOS"\nID=nixos\nVERSION_ID="24.11"\n'),))


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(["cpu", UNKNOWN_OS])


@pytest.mark.parametrize("extra_vars, variable, complaint", [
    ("install_os_packages=maybe", "install_os_packages", "bool"),
    ("has_nvidia_gpu=perhaps", "has_nvidia_gpu", "bool"),
    ("os_packages_cache_valid_time=soon", "os_packages_cache_valid_time", "int"),
    ('{"os_packages": {"curl": 1}}', "os_packages", "list"),
])
def test_bad_role_variable_fails_before_any_task(sb, site, ansible_factory, extra_vars, variable, complaint):
    before = sb.node("worker1").upper_hash()
    run = ansible_factory(sb.inventory).playbook(site, "-l", "worker1", "-e", extra_vars).expect_failed()
    results = run.host_results("worker1")
    assert [r["action"] for r in results] == ["ansible.builtin.validate_argument_spec"], run.output
    msg = results[0]["result"]["msg"]
    assert variable in msg and complaint in msg, msg
    assert "install_os_package" in results[0]["task"]
    assert sb.node("worker1").upper_hash() == before, "nothing was done on the node"


def test_unknown_os_fails_with_the_os_named(sb, site, ansible_factory):
    run = ansible_factory(sb.inventory).playbook(site, "-l", "worker2").expect_failed()
    msg = run.result("worker2", "Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS")["result"]["msg"]
    assert "nixos 24.11" in msg and "supported OS families: Debian, RedHat" in msg, msg
    assert not [r for r in run.host_results("worker2") if r["action"].endswith("apt")], "no package task ran"
