"""Every hardware profile through the module ad hoc and through the setup
playbook: the right facts, the right GPU mode, and for a node of an
architecture no module is built for, a clear error."""
import pytest

from ansible_run import REPO

PROFILES = ["cpu", "h200", "hgx-h100", "consumer", "vfio", "amd", "gh200", "riscv64"]
HOSTS = {f"worker{i}": p for i, p in enumerate(PROFILES, start=1)}
RUNTIME = "/usr/bin/nvidia-container-runtime"

# profile: (gpu count, nvswitches, driver version, driver loaded, GPU driver binding, architecture)
EXPECTED = {
    "cpu": (0, 0, None, False, None, "x86_64"),
    "h200": (1, 0, "580.159.04", True, "nvidia", "x86_64"),
    "hgx-h100": (8, 4, "570.124.06", True, "nvidia", "x86_64"),
    "consumer": (1, 0, None, False, "nouveau", "x86_64"),
    "vfio": (1, 0, None, False, "vfio-pci", "x86_64"),
    "amd": (0, 0, None, False, None, "x86_64"),
    "gh200": (1, 0, "580.159.04", True, "nvidia", "aarch64"),
}


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


def test_adhoc_module_reports_each_profile(sb, ansible_factory):
    run = ansible_factory(sb.inventory).adhoc("all", "nvidia_gpu_facts")
    assert run.rc != 0, "the riscv64 node fails"
    for host, profile in HOSTS.items():
        result = run.result(host, "nvidia_gpu_facts")
        if profile == "riscv64":
            assert result["status"] == "failed"
            assert result["result"]["msg"] == (
                "nvidia_gpu_facts cannot run on this node: its architecture is 'riscv64'; "
                "supported architectures: aarch64, x86_64")
            continue
        assert result["status"] == "ok", result
        facts = result["result"]["ansible_facts"]
        count, nvswitches, driver, loaded, binding, arch = EXPECTED[profile]
        got = (facts["nvidia_gpu_count"], facts["nvidia_nvswitch_count"], facts["nvidia_driver_version"],
               facts["nvidia_driver_loaded"], facts["nvidia_gpus"][0]["driver"] if facts["nvidia_gpus"] else None,
               facts["node_architecture"])
        assert got == EXPECTED[profile], f"{host} ({profile}): {facts}"
        assert facts["nvidia_gpu_present"] is (count > 0)
        assert facts["nvidia_container_runtime_path"] == (RUNTIME if sb.node(host).profile.container_runtime else None)
        # The binary of the node's architecture was sent (the node's cache was empty).
        assert result["result"]["module_binary"]["architecture"] == arch
        assert result["result"]["module_binary"]["transferred"] is True
        assert "has_nvidia_gpu" not in facts
    gh200 = run.result("worker7", "nvidia_gpu_facts")["result"]["ansible_facts"]
    assert gh200["nvidia_gpus"][0]["name"] == "NVIDIA GH200 480GB"
    assert gh200["nvidia_gpus"][0]["pci_address"] == "0009:01:00.0"


def test_setup_playbook_decides_each_profile(sb, site, ansible_factory):
    user = ansible_factory(sb.inventory)
    run = user.playbook(site, "-l", "all:!worker8")
    run.expect_ok()
    for host, profile in HOSTS.items():
        if profile == "riscv64":
            continue
        facts = user.cached_facts(host)
        assert facts["gpu_node_enabled"] is (EXPECTED[profile][0] > 0), f"{host} ({profile})"
        assert facts["gpu_node_mode_source"] == "detected"
    second = user.playbook(site, "-l", "all:!worker8").expect_ok()
    assert all(s["changed"] == 0 for s in second.stats.values()), second.output


def test_setup_playbook_stops_on_an_unsupported_architecture(sb, site, ansible_factory):
    run = ansible_factory(sb.inventory).playbook(site, "-l", "worker8").expect_failed()
    result = run.result("worker8", "install_os_package : Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS")
    assert "its architecture is 'riscv64'" in result["result"]["msg"]
    assert run.stats["worker8"]["failures"] == 1


ELF_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7}  # e_machine, at byte 18 of an ELF header


def test_each_node_gets_the_build_of_its_architecture(sb, ansible_factory):
    """Which file was sent, proven three ways: the task result's sha256 is the
    local build's of the node's architecture, the node's module cache holds
    exactly that file, and that file is an ELF for that architecture."""
    import hashlib

    sb.reset(["worker1", "worker7"])
    run = ansible_factory(sb.inventory).adhoc("worker1,worker7", "nvidia_gpu_facts").expect_ok()
    for host, arch in (("worker1", "x86_64"), ("worker7", "aarch64")):
        build = (REPO / "dist" / arch / "nvidia_gpu_facts").read_bytes()
        sha = hashlib.sha256(build).hexdigest()
        sent = run.result(host, "nvidia_gpu_facts")["result"]["module_binary"]
        assert sent == {"architecture": arch, "sha256": sha, "transferred": True, "verified": "sha256"}, host
        cache = sb.node(host).path("/root/.ansible/gpu-node-modules")
        cached = sorted(cache.iterdir())
        assert [p.name for p in cached] == [f"nvidia_gpu_facts-{sha[:16]}"], host
        on_node = cached[0].read_bytes()
        assert hashlib.sha256(on_node).hexdigest() == sha, host
        assert on_node[:4] == b"\x7fELF" and on_node[18] == ELF_MACHINE[arch], host
