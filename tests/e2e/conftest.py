"""Fixtures of the end-to-end tests: a user's Ansible (ansible_run.Ansible)
and the playbook that sets a node up."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ansible_run import REPO, Ansible  # noqa: E402

SITE = REPO / "site.yml"


def setup_playbook() -> Path:
    """site.yml, or the playbook E2E_PLAYBOOK names (to run the suite against another)."""
    if os.environ.get("E2E_PLAYBOOK"):
        return Path(os.environ["E2E_PLAYBOOK"]).resolve()
    return SITE


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
