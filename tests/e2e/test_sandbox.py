"""The sandbox itself: nodes are isolated from each other and from this
machine, SSH checks their host keys, and `up`/`down` work from separate
processes (the way `make demo` and people use them)."""
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sandbox


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(["cpu", "h200", "cpu"])


def test_a_file_written_on_one_node_is_on_no_other_node_nor_the_host(sb, ansible_factory):
    probe = f"/etc/gpu-sandbox-probe-{os.getpid()}"
    ansible_factory(sb.inventory).adhoc("worker2", "copy", f"dest={probe} content=worker2").expect_ok()
    assert sb.node("worker2").path(probe).read_text() == "worker2"
    assert (sb.node("worker2").upper / probe.lstrip("/")).read_text() == "worker2"
    for other in ("worker1", "worker3"):
        assert not sb.node(other).path(probe).exists(), other
        assert not (sb.node(other).upper / probe.lstrip("/")).exists(), other
    assert not Path(probe).exists(), "the host's own /etc is untouched"


def test_each_node_sees_its_own_hardware_and_a_fresh_root_home(sb):
    assert sorted(os.listdir(sb.node("worker2").path("/sys/module"))) == ["nvidia", "nvidia_uvm"]
    assert os.listdir(sb.node("worker1").path("/proc/driver")) == []
    assert sb.node("worker2").path("/usr/bin/nvidia-container-runtime").exists()
    assert not sb.node("worker1").path("/usr/bin/nvidia-container-runtime").exists()
    assert not sb.node("worker1").path("/root/.cargo").exists(), "this machine's root home stays hidden"
    assert sb.node("worker1").path("/root/.ssh/authorized_keys").exists()


def test_a_node_has_its_profiles_pci_ids_and_firmware_never_this_machines(sb, sandbox_factory):
    """The GPU name detection reads from pci.ids, and the driver's Secure Boot
    check from /sys/firmware, must not depend on the machine running the tests."""
    for rel in sandbox.PCI_IDS:
        assert not sb.node("worker1").path(rel).exists(), f"{rel} of this machine is visible on a node"
        st = os.lstat(sb.node("worker1").upper / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, f"{rel} is not hidden by a whiteout"
    assert os.listdir(sb.node("worker1").path("/sys/firmware")) == [], "no EFI, no ACPI: the profile has none"
    [consumer] = sandbox_factory(["consumer"]).nodes
    shipped = (sandbox.FIXTURES / "profiles/consumer/usr/share/misc/pci.ids").read_bytes()
    assert consumer.path("/usr/share/misc/pci.ids").read_bytes() == shipped
    assert not consumer.path("/usr/share/hwdata/pci.ids").exists()


def test_ssh_checks_the_node_host_keys(sb, ansible_factory, tmp_path):
    """The inventory keeps host key checking on: with a known_hosts that
    does not list the node, Ansible refuses to connect."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(sb.inventory.read_text().replace(str(sb.known_hosts), str(empty)))
    run = ansible_factory(inventory).adhoc("worker1", "ping")
    assert run.rc != 0
    assert run.result("worker1", "ping")["status"] == "unreachable"
    assert "Host key verification failed" in run.stdout + run.stderr, run.output


def test_up_and_down_from_separate_processes(tmp_path):
    directory = tmp_path / "cluster"
    cli = [sys.executable, str(Path(sandbox.__file__))]
    started = time.monotonic()
    up = subprocess.run(cli + ["up", "--profiles", "cpu,gh200", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout == (directory / "inventory.ini").read_text()
        assert "worker2 ansible_host=127.0.0.1" in up.stdout and "sandbox_profile=gh200" in up.stdout
        print(f"2 nodes up in {time.monotonic() - started:.2f}s (CLI, including Python start)")
        loaded = sandbox.Sandbox.load(directory)
        nodes = [(n.port, n.mnt_ns, n.state) for n in loaded.nodes]
        assert all(sandbox.ssh_banner(port) for port, _, _ in nodes)
        assert all(sandbox.processes_in_namespace(ns) for _, ns, _ in nodes)
    finally:
        down = subprocess.run(cli + ["down", "--dir", str(directory)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    for port, ns, state in nodes:
        assert not sandbox.processes_in_namespace(ns), "every process of the node is gone"
        assert not sandbox.ssh_banner(port)
        assert not state.exists(), "the node state is removed"
    assert not (directory / "sandbox.json").exists()
    again = subprocess.run(cli + ["down", "--dir", str(directory)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no sandbox in" in again.stderr


def test_a_port_taken_before_sshd_binds_it_is_replaced(monkeypatch):
    """free_ports() frees the ports it found before the nodes bind them; a
    port another process takes in that moment is replaced by a new one."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    real, calls = sandbox.free_ports, []

    def first_one_busy(count):
        calls.append(count)
        return [busy.getsockname()[1]] if len(calls) == 1 else real(count)

    monkeypatch.setattr(sandbox, "free_ports", first_one_busy)
    with busy, sandbox.Sandbox(["cpu"]) as sb:
        port = sb.nodes[0].port
        assert port != busy.getsockname()[1] and sandbox.ssh_banner(port)
        assert f"ansible_port={port} " in sb.inventory.read_text()
        assert sb.known_hosts.read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    assert calls == [1, 1]
