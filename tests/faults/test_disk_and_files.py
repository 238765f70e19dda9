"""The local facts file (nvidia_gpu_facts `local_facts_path`) under faults:
a full disk (a tiny tmpfs), a read-only filesystem, an immutable file
(chattr +i, on an ext4 image: tmpfs has no such attribute), and runs killed
in a loop while they write. The old file is never lost or half written."""
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_module

H200 = str(REPO / "tests/fixtures/h200-vm")
CPU = str(REPO / "tests/fixtures/profiles/cpu")
# Ours (the marker), with a count the H200 capture changes: a write is due.
OLD = '{"written_by": "nvidia_gpu_facts", "nvidia_gpu_count": 0}\n'


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def write_facts(path, root=H200):
    return run_module("nvidia_gpu_facts", {"root": root, "local_facts_path": str(path)}, tmp=path.parent.parent,
                      timeout=30).assert_answered()


def assert_kept(dir_: Path, name="gpu.fact"):
    assert (dir_ / name).read_text() == OLD
    assert sorted(p.name for p in dir_.iterdir() if p.name != "filler") == [name], "a temporary file was left"


def test_a_full_disk_keeps_the_old_facts_file(mnt, faults):
    needs_root()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    (mnt / "gpu.fact").write_text(OLD)
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    r = write_facts(mnt / "gpu.fact")
    faults.tried("full disk")
    assert r.json["failed"] and "cannot write the local facts file" in r.msg, r.json
    assert "No space left on device" in r.msg, r.msg
    assert_kept(mnt)


def test_a_read_only_filesystem_keeps_the_old_facts_file(mnt, faults):
    needs_root()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    (mnt / "gpu.fact").write_text(OLD)
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    r = write_facts(mnt / "gpu.fact")
    faults.tried("read-only and immutable files")
    assert r.json["failed"] and "Read-only file system" in r.msg, r.json
    assert_kept(mnt)


def test_an_immutable_facts_file_is_kept_and_named(tmp_path, mnt, faults):
    needs_root()
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                                                     capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("no ext4 loop mount here (mkfs.ext4 or loop devices unavailable): chattr +i not tried")
    (mnt / "gpu.fact").write_text(OLD)
    subprocess.run(["chattr", "+i", str(mnt / "gpu.fact")], check=True)
    try:
        r = write_facts(mnt / "gpu.fact")
        faults.tried("read-only and immutable files")
        assert r.json["failed"] and "gpu.fact" in r.msg, r.json
        assert_kept(mnt, "gpu.fact") if "lost+found" not in os.listdir(mnt) else None
        assert (mnt / "gpu.fact").read_text() == OLD
        assert sorted(p.name for p in mnt.iterdir()) == ["gpu.fact", "lost+found"], "a temporary file was left"
    finally:
        subprocess.run(["chattr", "-i", str(mnt / "gpu.fact")], check=False)


def test_runs_killed_while_writing_never_leave_a_half_written_file(tmp_path, faults):
    facts = tmp_path / "facts.d" / "gpu.fact"
    complete = set()
    for root in (H200, CPU):
        write_facts(facts, root)
        complete.add(facts.read_text())
    rng = random.Random(14)
    args = []
    for i, root in enumerate((H200, CPU)):
        path = tmp_path / f"args{i}.json"
        path.write_text(json.dumps({"root": root, "local_facts_path": str(facts)}))
        args.append(path)
    kills = 60
    for i in range(kills):
        p = subprocess.Popen([str(BIN / "nvidia_gpu_facts"), str(args[i % 2])], stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 0.004))
        p.send_signal(signal.SIGKILL)
        p.wait()
        faults.tried("killed runs")
        assert facts.read_text() in complete, "the facts file was lost or half written"
    # A run after the kills still works.
    assert not write_facts(facts).json["failed"]
