"""Fixtures of the end-to-end tests: a user's Ansible (ansible_run.Ansible),
the playbook that sets a node up, and the tested ansible-core releases.

A test that takes `ansible_release` runs once per tested release (each in the
venv `make venvs` made); `older_ansible_release`: once per release but the
newest, which the whole suite runs on (.venv). ANSIBLE_CORE_SERIES=2.15,2.16
narrows both. Each is module-scoped: a module's tests run release by release,
and a module-scoped fixture that takes one (a sandbox) is made once per release."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ansible_run import REPO, controller_releases, newest_release  # noqa: E402

SITE = REPO / "site.yml"


def setup_playbook() -> Path:
    """site.yml, or the playbook E2E_PLAYBOOK names (to run the suite against another)."""
    if os.environ.get("E2E_PLAYBOOK"):
        return Path(os.environ["E2E_PLAYBOOK"]).resolve()
    return SITE


@pytest.fixture(scope="session")
def site():
    return setup_playbook()



def pytest_generate_tests(metafunc):
    releases = controller_releases()
    older = [r for r in releases if r != newest_release()]
    for name, params in (("ansible_release", releases), ("older_ansible_release", older)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, params, ids=[r.series for r in params], indirect=True, scope="module")


def _release(request):
    release = request.param
    if not release.installed():
        pytest.fail(f"no venv of ansible-core {release.version} in {release.bin_dir.parent}: run `make venvs`")
    return release


@pytest.fixture(scope="module")
def ansible_release(request):
    """A tested ansible-core release (ansible_run.Controller) whose venv exists."""
    return _release(request)


@pytest.fixture(scope="module")
def older_ansible_release(request):
    """A tested ansible-core release older than .venv's, whose venv exists."""
    return _release(request)
