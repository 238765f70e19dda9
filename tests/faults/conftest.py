"""Fault injection: the module binaries (dist/x86_64/) and the action plugin,
fed bad input, killed, starved of disk, refused writes, raced, attacked by a
second user, shown odd sysfs trees and tampered caches.

Each test counts the faults it injects with `faults.tried(category, n)`; the
totals per category are printed at the end of the run (the figures in
README's "Reliability" section). A fault that did not hold fails its test.
"""
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from ansible_run import REPO  # noqa: E402

BIN = REPO / "dist" / "x86_64"
TRIED = collections.Counter()


class Faults:
    def tried(self, category: str, n: int = 1):
        TRIED[category] += n


@pytest.fixture
def faults():
    return Faults()


def pytest_terminal_summary(terminalreporter):
    if TRIED:
        failed = len(terminalreporter.stats.get("failed", []))
        terminalreporter.write_line(
            f"fault cases tried: {sum(TRIED.values())} ({'all held' if not failed else f'{failed} tests FAILED'})")
        for category, n in sorted(TRIED.items()):
            terminalreporter.write_line(f"  {category}: {n}")
        out = os.environ.get("FAULTS_FIGURES")
        if out:
            Path(out).write_text(json.dumps(dict(TRIED), indent=1, sort_keys=True) + "\n")


class Result:
    """One run of a module binary: its exit code, its one JSON object (None
    when stdout is not exactly one), stdout, stderr and seconds."""

    def __init__(self, p, seconds):
        self.rc, self.stdout, self.stderr, self.seconds = p.returncode, p.stdout, p.stderr, seconds
        lines = p.stdout.decode(errors="replace").strip().splitlines()
        try:
            self.json = json.loads(lines[0]) if len(lines) == 1 else None
        except ValueError:
            self.json = None

    @property
    def msg(self):
        return (self.json or {}).get("msg", "")

    def assert_answered(self):
        """Exit 0 or 1 with one JSON object that says whether it failed: the
        protocol held, whatever the input (never a bare panic or a hang)."""
        assert self.json is not None, f"not one JSON object: {self.stdout[:500]!r} {self.stderr[:500]!r}"
        assert self.rc == int(bool(self.json.get("failed"))), (self.rc, self.json)
        assert "panicked" not in self.msg, self.msg
        return self


def run_module(module, args, *, timeout=60, env=None, user=None, cwd=None, tmp=None):
    """Runs dist/x86_64/<module> with `args` (a dict, or bytes written as
    they are) in an args file, as Ansible does; `user` runs it as that user."""
    tmp = Path(tmp or os.environ.get("TMPDIR", "/tmp"))
    args_file = tmp / f"args-{os.getpid()}-{time.monotonic_ns()}.json"
    args_file.write_bytes(args if isinstance(args, bytes) else json.dumps(args).encode())
    os.chmod(args_file, 0o644)
    cmd = [str(BIN / module), str(args_file)]
    if user:
        cmd = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    started = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    finally:
        args_file.unlink(missing_ok=True)
    return Result(p, time.monotonic() - started)


@pytest.fixture(scope="session")
def built():
    missing = [m for m in ("nvidia_gpu_facts", "nvidia_driver_install", "containerd_runtime_config")
               if not (BIN / m).exists()]
    if missing:
        pytest.fail(f"{missing} missing from {BIN}: run `make build` first")
    return BIN


