"""nvidia_driver_install under faults: killed in a loop mid-install, raced,
starved of disk, and attacked through its lock file by a second user. The
installer is the stand-in (tests/fixtures/fake-nvidia-installer.sh), run for
real from the module's private copy; the node is a copy of the vfio profile
with the kernel headers and build tools the pre-flight checks look for."""
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_module

FIXTURES = REPO / "tests/fixtures"
VERSION = "580.95.05"
RELEASE = "5.14.0-427.13.1.el9_4.x86_64"
INSTALLER_NAME = f"NVIDIA-Linux-x86_64-{VERSION}.run"


class DriverNode:
    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        shutil.copytree(FIXTURES / "profiles/vfio", self.root, symlinks=True)
        self.write("/proc/sys/kernel/osrelease", f"{RELEASE}\n")
        self.write("/etc/os-release", 'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n')
        self.write(f"/lib/modules/{RELEASE}/build/Makefile", "")
        self.write("/proc/stat", f"cpu 1 2 3 4\nbtime {int(time.time()) - 3600}\n")
        self.bin = base / "bin"
        self.bin.mkdir()
        for tool in ("sh", "mkdir", "date", "sleep", "uname"):
            (self.bin / tool).symlink_to(shutil.which(tool))
        for tool in ("cc", "make", "dkms"):
            (self.bin / tool).write_text("#!/bin/sh\nexit 0\n")
            os.chmod(self.bin / tool, 0o755)
        self.tmp = base / "tmp"
        self.tmp.mkdir()
        self.installer = base / "installers" / INSTALLER_NAME
        self.installer.parent.mkdir()
        shutil.copyfile(FIXTURES / "fake-nvidia-installer.sh", self.installer)

    def write(self, node_path, text):
        path = self.root / node_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def args(self, **extra):
        digest = hashlib.sha256(self.installer.read_bytes()).hexdigest()
        return {"root": str(self.root), "min_free_mb": 1, "version": VERSION, "installer": str(self.installer),
                "checksum": f"sha256:{digest}", **extra}

    def env(self, **extra):
        return {"PATH": str(self.bin), "FAKE_NVIDIA_ROOT": str(self.root), "TMPDIR": str(self.tmp), **extra}

    def run(self, timeout=60, env=None, **args):
        return run_module("nvidia_driver_install", self.args(**args), env=self.env(**(env or {})), timeout=timeout,
                          tmp=self.base)

    def spawn(self, env=None, **args):
        path = self.base / f"args-{time.monotonic_ns()}.json"
        import json
        path.write_text(json.dumps(self.args(**args)))
        return subprocess.Popen([str(BIN / "nvidia_driver_install"), str(path)], env=self.env(**(env or {})),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def calls(self):
        path = self.root / "var/lib/fake-nvidia-installer/calls"
        return path.read_text().splitlines() if path.exists() else []

    def staged(self):
        return sorted(p.name for p in self.tmp.iterdir() if p.name.startswith("nvidia-driver-install."))


def assert_never_two_installers(calls):
    """The stand-in logs `start PID` and `end PID STATUS`: never two starts
    without an end between them."""
    running = 0
    for line in calls:
        running += 1 if line.startswith("start ") else -1
        assert running in (0, 1), f"two installers at once: {calls}"


@pytest.fixture
def node(tmp_path):
    return DriverNode(tmp_path)


@pytest.fixture
def public_node():
    """A node in a folder that the user nobody can enter (pytest's are root's only)."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="faults-driver-"))
    os.chmod(base, 0o755)
    yield DriverNode(base)
    shutil.rmtree(base, ignore_errors=True)


def test_killed_runs_in_a_loop_never_start_two_installers(node, faults):
    rng = random.Random(14)
    kills = 12
    for _ in range(kills):
        victim = node.spawn(env={"FAKE_NVIDIA_INSTALLER_SLEEP": "1"}, force=True)
        time.sleep(rng.uniform(0.0, 1.2))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        # The next run, as a retry would start it at once.
        r = node.run(force=True, lock_timeout=30, env={"FAKE_NVIDIA_INSTALLER_SLEEP": "0"}).assert_answered()
        assert not r.json["failed"], r.json
        faults.tried("killed runs")
    time.sleep(1.5)
    calls = node.calls()
    assert_never_two_installers(calls)
    assert sum(line.startswith("start ") for line in calls) >= kills
    # Copies left by killed runs are gone once a run held the lock.
    node.run(force=True, lock_timeout=30).assert_answered()
    assert node.staged() == []


def test_concurrent_runs_start_one_installer(node, faults):
    runs = [node.spawn(env={"FAKE_NVIDIA_INSTALLER_SLEEP": "1"}) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in runs]
    faults.tried("concurrent runs", len(runs))
    assert all(p.returncode == 0 for p in runs), outs
    calls = node.calls()
    assert len(calls) == 2, calls
    assert_never_two_installers(calls)
    assert node.staged() == []


def tmpfs(path: Path, size: str, options=""):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)], check=True)


def umount(path: Path):
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_for_the_private_copy_runs_nothing_and_leaves_nothing(node, faults):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    # An installer larger than the tmpfs that holds TMPDIR.
    with node.installer.open("a") as f:
        f.write(("#" * 1023 + "\n") * 2048)
    tmpfs(node.tmp, "1m")
    try:
        r = node.run().assert_answered()
        faults.tried("full disk")
        assert r.json["failed"], r.json
        check = next(c for c in r.json["preflight"] if c["name"] == "installer" and not c["ok"])
        assert "cannot copy" in check["message"] and "No space left on device" in check["message"], check
        assert node.calls() == []
        assert node.staged() == []
    finally:
        umount(node.tmp)


HOSTILE = ["symlink to a root file", "fifo", "file of nobody saying pid 1", "folder"]


@pytest.mark.parametrize("attack", HOSTILE)
def test_a_second_user_cannot_block_or_misdirect_the_lock(public_node, faults, attack):
    node = public_node
    if os.geteuid() != 0:
        pytest.skip("needs root and the user nobody")
    lock_dir = node.root / "run/lock"
    lock_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lock_dir, 0o1777)  # world-writable and sticky, as /run/lock is
    victim = node.root / "etc/victim"
    victim.write_text("precious\n")
    lock = lock_dir / "nvidia-driver-install.lock"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if attack == "symlink to a root file":
        subprocess.run([*as_nobody, "ln", "-s", str(victim), str(lock)], check=True)
    elif attack == "fifo":
        subprocess.run([*as_nobody, "mkfifo", str(lock)], check=True)
    elif attack == "folder":
        subprocess.run([*as_nobody, "mkdir", str(lock)], check=True)
    else:
        subprocess.run([*as_nobody, "sh", "-c", f"echo 1 > {lock}"], check=True)
    r = node.run(timeout=30, lock_timeout=1).assert_answered()
    faults.tried("hostile second user")
    assert r.json["failed"], r.json
    assert "pid 1" not in r.msg, r.msg
    assert r.msg.startswith(f"refusing the lock file {lock}") or "cannot open the lock file" in r.msg, r.msg
    assert victim.read_text() == "precious\n"
    assert node.calls() == []
    # Check mode reports no holder from the other user's file either.
    c = node.run(timeout=30, _ansible_check_mode=True).assert_answered()
    assert "pid 1" not in str(c.json), c.json


def test_modules_run_as_nobody_fail_cleanly(public_node, faults):
    node = public_node
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    r = run_module("nvidia_driver_install", node.args(lock_path="/run/lock/x.lock"), env=node.env(), user="65534",
                   tmp=node.base).assert_answered()
    faults.tried("hostile second user")
    assert r.json["failed"], r.json
    assert node.calls() == []
    f = run_module("nvidia_gpu_facts", {"root": str(node.root), "local_facts_path": "/etc/ansible/facts.d/gpu.fact"},
                   user="65534", tmp=node.base).assert_answered()
    faults.tried("hostile second user")
    assert f.json["failed"] and "cannot write the local facts file" in f.msg, f.json
    assert stat.S_ISDIR(node.root.stat().st_mode)
