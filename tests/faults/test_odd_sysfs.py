"""nvidia_gpu_facts on odd sysfs and procfs trees (through its `root`
option): FIFOs, truncated, oversize and out-of-range values, folders where
files belong, 10,000 PCI functions. Every run answers within its time limit
with one JSON object, and counts only what is really an NVIDIA GPU."""
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_module

H200 = REPO / "tests/fixtures/h200-vm"
GPU = "sys/bus/pci/devices/0000:00:06.0"


@pytest.fixture
def root(tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(H200, dst, symlinks=True)
    return dst


def detect(root, timeout=20):
    r = run_module("nvidia_gpu_facts", {"root": str(root)}, timeout=timeout).assert_answered()
    assert not r.json["failed"], r.json
    return r.json


def replace(path: Path, kind: str, value: str = ""):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to("/nonexistent/attribute")
    else:
        path.write_text(value)


ATTRIBUTES = [f"{GPU}/{a}" for a in ("vendor", "device", "class", "subsystem_device", "subsystem_vendor",
                                      "numa_node")] + [
    "sys/module/nvidia/version", "proc/driver/nvidia/version", "etc/os-release",
    "proc/driver/nvidia/gpus/0000:00:06.0/information", "proc/sys/kernel/osrelease"]
ODD = [("fifo", ""), ("folder", ""), ("dangling symlink", ""), ("empty", ""), ("truncated", "0x"),
       ("oversize", "0x10de" + " " * (1 << 20)), ("not UTF-8", "")]


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_an_odd_attribute_never_hangs_or_crashes_detection(root, faults, attribute):
    for kind, value in ODD:
        if kind == "not UTF-8":
            replace(root / attribute, "file")
            (root / attribute).write_bytes(b"\xff\xfe0x10de\n")
        else:
            replace(root / attribute, kind, value)
        facts = detect(root)["ansible_facts"]
        faults.tried("odd sysfs")
        if attribute.endswith(("/vendor", "/class")) and kind not in ("oversize",):
            assert facts["nvidia_gpu_count"] in (0, 1), (attribute, kind)
        if attribute.endswith("/vendor"):
            assert facts["nvidia_gpu_count"] == 0, (attribute, kind, facts)


@pytest.mark.parametrize("attribute,value,gpus", [
    ("vendor", "0x110de", 0), ("vendor", "+10de", 0), ("vendor", "0x10de0", 0), ("vendor", "-0x10de", 0),
    ("vendor", "0x10DE", 1), ("class", "0x1030200", 0), ("class", "0x030200 0x1", 0), ("class", "0x0302000", 0),
    ("device", "0x12335", 1), ("vendor", "0x10de\n0x1002", 0),
])
def test_hex_values_are_read_whole(root, faults, attribute, value, gpus):
    (root / GPU / attribute).write_text(value + "\n")
    if attribute == "class":
        # Without a readable class a known GPU device ID still counts: use an unknown one.
        (root / GPU / "device").write_text("0x1234\n")
    facts = detect(root)["ansible_facts"]
    faults.tried("odd sysfs")
    assert facts["nvidia_gpu_count"] == gpus, (attribute, value, facts)
    if attribute == "device":
        # An out-of-range device ID is no H200 (nor any name read through it).
        assert facts["nvidia_gpus"][0]["device_id"] is None, facts


def test_ten_thousand_pci_functions(root, faults):
    devices = root / "sys/bus/pci/devices"
    for i in range(10_000):
        d = devices / f"{1 + (i >> 13):04x}:{i >> 5 & 0xff:02x}:{i >> 3 & 0x3:02x}.{i & 7}"
        d.mkdir(exist_ok=True)
        nvidia = i % 1000 == 0
        (d / "vendor").write_text("0x10de\n" if nvidia else "0x8086\n")
        (d / "device").write_text("0x2330\n")
        (d / "class").write_text("0x030200\n" if nvidia else "0x060400\n")
    facts = detect(root, timeout=120)["ansible_facts"]
    faults.tried("odd sysfs")
    assert facts["nvidia_gpu_count"] == 1 + 10, facts["nvidia_gpu_count"]


def test_loaded_driver_with_unreadable_version_is_not_called_absent(root, faults):
    for path in ("sys/module/nvidia/version", "proc/driver/nvidia/version"):
        replace(root / path, "fifo")
    r = detect(root)
    faults.tried("odd sysfs")
    assert r["ansible_facts"]["nvidia_driver_loaded"] is True
    assert "no NVIDIA driver" not in r["msg"], r["msg"]
