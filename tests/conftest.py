"""Fixtures shared by the test suites: the sandbox cluster (tests/sandbox.py).

A test module asks for nodes once and shares them between its tests:

    @pytest.fixture(scope="module")
    def sb(sandbox_factory):
        return sandbox_factory(["cpu", "h200"])

Every sandbox started here is stopped when the module ends (a fixture
finalizer), at interpreter exit (atexit) if that did not run, and by the
kernel if pytest is killed outright (the nodes' sshd die with their parent).
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sandbox  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from ansible_run import Ansible  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def module_binaries():
    """The x86_64 and aarch64 builds the action plugin sends to the nodes."""
    missing = [f"dist/{arch}/nvidia_gpu_facts" for arch in ("x86_64", "aarch64")
               if not (REPO / "dist" / arch / "nvidia_gpu_facts").exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make build` first")


@pytest.fixture(scope="module")
def sandbox_factory(request, module_binaries):
    """Starts sandbox clusters for one test module; stops them at its end."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (mount namespaces, overlayfs)")
    started = []

    def make(profiles):
        sb = sandbox.Sandbox(profiles)
        started.append(sb)
        return sb.up()

    yield make
    for sb in started:
        sb.down()


@pytest.fixture
def ansible_factory(tmp_path):
    """Ansible users, each with their own fact cache, for one test."""
    made = []

    def make(inventory, name="ansible"):
        a = Ansible(inventory, tmp_path / name)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()
