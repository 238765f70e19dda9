"""Fixtures of the end-to-end tests: a user's Ansible (ansible_run.Ansible)
and the playbook that sets a node up."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ansible_run import REPO, Ansible  # noqa: E402

# site.yml runs install_os_package then install_containerd. Until that role
# exists the suite runs install_os_package alone (E2E_PLAYBOOK overrides).
SITE = REPO / "playbooks/site.yml"
OS_PACKAGE_ONLY = Path(__file__).resolve().parent / "playbooks/install_os_package.yml"


def setup_playbook() -> Path:
    if os.environ.get("E2E_PLAYBOOK"):
        return Path(os.environ["E2E_PLAYBOOK"]).resolve()
    if (REPO / "roles/install_containerd/tasks/main.yml").exists():
        return SITE
    return OS_PACKAGE_ONLY


@pytest.fixture(scope="session")
def site():
    return setup_playbook()


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
