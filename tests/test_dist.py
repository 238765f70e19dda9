"""The shipped module binaries (dist/<arch>/, from `make build`): static, within
their size budget, and the aarch64 build answering exactly like the x86_64 one
when run under qemu-aarch64-static on the same real inputs."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
H200 = REPO / "tests/fixtures/h200-vm"
HGX = REPO / "tests/fixtures/profiles/hgx-h100"
KIB = 1024
# Stripped static binaries; Ansible sends a binary to every node once per build.
BUDGET = {
    "nvidia_gpu_facts": 768 * KIB,
    "nvidia_driver_install": 768 * KIB,
    "containerd_runtime_config": 1536 * KIB,
    "nvidia_cdi_spec": 768 * KIB,
}
MODULES = sorted(BUDGET)
ARCHES = ["x86_64", "aarch64"]
QEMU = shutil.which("qemu-aarch64-static")


def binary(arch, module):
    path = DIST / arch / module
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` (it builds every module for {', '.join(ARCHES)})")
    return path


def run(cmd, args_file):
    out = subprocess.run([*cmd, str(args_file)], capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON object on stdout, got: {out.stdout!r} {out.stderr!r}"
    return out.returncode, json.loads(lines[0])


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("module", MODULES)
def test_binary_is_static_stripped_and_within_budget(arch, module):
    path = binary(arch, module)
    description = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout
    assert "statically linked" in description or "static-pie linked" in description, description
    assert "stripped" in description and "not stripped" not in description, description
    assert {"x86_64": "x86-64", "aarch64": "ARM aarch64"}[arch] in description, description
    size = path.stat().st_size
    assert size <= BUDGET[module], f"{path}: {size} bytes, budget {BUDGET[module]}"


def args_cases(tmp_path):
    """Real inputs: the H200 capture and the HGX profile as root, and bad input."""
    cases = {
        "nvidia_gpu_facts": [
            {"root": str(H200)},
            {"root": str(HGX), "_ansible_check_mode": True},
            {"root": str(H200), "no_such_option": 1},
            {"root": ["not", "a", "path"]},
        ],
        "containerd_runtime_config": [
            {"nvidia_runtime": "maybe"},
            {"nvidia_runtime": True, "mode": "nonsense"},
            {},
        ],
        "nvidia_cdi_spec": [
            # The capture has no /dev: the answer names the missing device files.
            {"root": str(H200), "path": str(tmp_path / "nvidia.yaml")},
            {"root": str(HGX), "state": "bogus"},
            {"root": str(REPO / "tests/fixtures/profiles/consumer")},
        ],
        "nvidia_driver_install": [
            {"version": "580.159.04", "root": str(H200)},
            {"version": "580.159.04", "kernel_module_type": "closed"},
            {},
        ],
    }
    files = {}
    for module, argsets in cases.items():
        files[module] = []
        for i, args in enumerate(argsets):
            f = tmp_path / f"{module}-{i}.json"
            f.write_text(json.dumps(args))
            files[module].append(f)
    files["not_json"] = tmp_path / "not.json"
    files["not_json"].write_text("{oops")
    return files


@pytest.mark.parametrize("module", MODULES)
def test_aarch64_build_answers_like_the_x86_64_build(module, tmp_path):
    assert QEMU, "qemu-aarch64-static not found: run `make deps` (Debian's qemu-user-static)"
    x86, arm = binary("x86_64", module), binary("aarch64", module)
    cases = args_cases(tmp_path)
    for args_file in cases[module] + [cases["not_json"], tmp_path / "missing.json"]:
        rc_x86, out_x86 = run([str(x86)], args_file)
        rc_arm, out_arm = run([QEMU, str(arm)], args_file)
        # The one honest difference: the architecture the binary reports.
        facts_x86 = out_x86.get("ansible_facts", {})
        facts_arm = out_arm.get("ansible_facts", {})
        if "node_architecture" in facts_x86:
            assert facts_x86.pop("node_architecture") == "x86_64"
            assert facts_arm.pop("node_architecture") == "aarch64"
        assert (rc_arm, out_arm) == (rc_x86, out_x86), args_file.read_text() if args_file.exists() else args_file
