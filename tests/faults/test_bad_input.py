"""Bad input to each module binary, as an args file: malformed JSON, wrong
types, unknown options, huge and non-UTF-8 values, odd paths, internal flags
that are not booleans. Every case answers with one JSON object that says it
failed (or, where the input is merely odd, works), never a panic or a hang,
and writes nothing."""
import json

import pytest

from conftest import REPO, run_module

H200 = str(REPO / "tests/fixtures/h200-vm")
MODULES = {
    "nvidia_gpu_facts": {"root": H200},
    "nvidia_driver_install": {"version": "580.95.05", "root": H200, "_ansible_check_mode": True},
    "containerd_runtime_config": {"nvidia_runtime": True, "_ansible_check_mode": True},
}
# Not JSON objects at all.
RAW = [b"", b"{", b"null", b"[]", b'"text"', b"42", b"\xff\xfe{}", b"{\"a\": 1}{}", b"{" * 100_000,
       b'{"root": "\\ud800"}', b"\x00"]
# Valid JSON, invalid for every module.
INVALID = [
    {"no_such_option": 1},
    {"_ansible_check_mode": "maybe"},
    {"_ansible_check_mode": None},
    {"_ansible_check_mode": [True]},
    {"_ansible_diff": {"yes": True}},
    {"_ansible_no_log": "sometimes"},
    {"_ansible_verbosity": "loud"},
    {"x" * 100_000: 1},
]


@pytest.mark.parametrize("module", MODULES)
def test_input_that_is_not_a_json_object_fails_clearly(built, tmp_path, faults, module):
    for raw in RAW:
        r = run_module(module, raw, tmp=tmp_path, cwd=tmp_path).assert_answered()
        faults.tried("bad input")
        assert r.json["failed"], (raw[:40], r.json)
        assert "arguments file" in r.msg or "JSON" in r.msg, (raw[:40], r.msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", MODULES)
def test_invalid_options_and_internal_flags_fail_closed(built, tmp_path, faults, module):
    for extra in INVALID:
        r = run_module(module, {**MODULES[module], **extra}, tmp=tmp_path, cwd=tmp_path).assert_answered()
        faults.tried("bad input")
        assert r.json["failed"], (extra, r.json)
        key = next(iter(extra))
        assert key[:60] in r.msg or "Unsupported parameters" in r.msg, (key[:60], r.msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


WRONG_TYPES = {
    "nvidia_gpu_facts": [{"root": ["/"]}, {"root": {"a": 1}}, {"decide_gpu_mode": "perhaps"},
                         {"has_nvidia_gpu": [1]}, {"supported_os_families": {"a": 1}}],
    "nvidia_driver_install": [{"version": 580}, {"version": None}, {"dkms": "maybe"}, {"min_free_mb": "lots"},
                              {"lock_timeout": 1.5}, {"installer_timeout": -1}, {"extra_args": {"a": 1}},
                              {"kernel_module_type": "closed"}, {"version": "580.95.05; rm -rf /"},
                              {"checksum": "sha256:" + "z" * 64}, {"min_free_mb": 2 ** 70}],
    "containerd_runtime_config": [{"nvidia_runtime": "perhaps"}],
}


@pytest.mark.parametrize("module", MODULES)
def test_wrong_types_and_values_name_the_option(built, tmp_path, faults, module):
    for extra in WRONG_TYPES[module]:
        r = run_module(module, {**MODULES[module], **extra}, tmp=tmp_path, cwd=tmp_path).assert_answered()
        faults.tried("bad input")
        assert r.json["failed"], (extra, r.json)
        key = next(iter(extra))
        assert key in r.msg or "missing required" in r.msg or "version" in r.msg, (extra, r.msg)


ODD_PATHS = ["relative/root", "/nonexistent/root", "/" + "a" * 5000, "/tmp/new\nline", "/tmp/nul\x00byte",
             "/../../..", "/proc/self/fd/0", "/dev/zero", "\udcff-not-utf8"]


def test_odd_paths_and_huge_values_for_the_facts_module(built, tmp_path, faults):
    for path in ODD_PATHS:
        args = {"root": path}
        text = json.dumps(args).encode()
        if "\udcff" in path:
            text = json.dumps({"root": "X"}).replace('"X"', '"\\udcff"').encode()
        r = run_module("nvidia_gpu_facts", text, tmp=tmp_path, cwd=tmp_path, timeout=20).assert_answered()
        faults.tried("bad input")
        if path != "/../../..":  # that is "/": this machine, valid
            assert r.json["failed"], (path, r.json)
    # Facts files that must be refused; none is written on this machine.
    for path in ("gpu.fact", "relative/gpu.fact", "/" + "a" * 5000, "/tmp/nul\x00byte", str(tmp_path)):
        r = run_module("nvidia_gpu_facts", {"root": H200, "local_facts_path": path}, tmp=tmp_path, cwd=tmp_path,
                       timeout=20).assert_answered()
        faults.tried("bad input")
        assert r.json["failed"], (path, r.json)
    r = run_module("nvidia_gpu_facts", {"root": H200, "supported_os_families": ["x" * 10_000_000]},
                   tmp=tmp_path, cwd=tmp_path).assert_answered()
    faults.tried("bad input")
    assert r.json["failed"] and "supported OS families" in r.msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_odd_paths_for_the_driver_module(built, tmp_path, faults):
    for option in ("root", "lock_path", "log_file", "installer", "kernel_source_path"):
        for path in ODD_PATHS:
            if option == "root" and path == "/../../..":
                continue  # that is "/", the real node: valid
            args = {"version": "580.95.05", "root": H200, "installer": str(tmp_path / "none.run"), option: path}
            r = run_module("nvidia_driver_install", {**args, "_ansible_check_mode": True}, tmp=tmp_path,
                           cwd=tmp_path, timeout=20).assert_answered()
            faults.tried("bad input")
            assert r.json["failed"], (option, path, r.json)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
