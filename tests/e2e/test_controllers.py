"""Every tested ansible-core release as the controller (tests/ansible-core-releases.txt).

The whole e2e suite runs on the newest (.venv); here each release's own venv
(`make venvs`) is checked to hold that release."""
import re
import subprocess

from ansible_run import REPO, VENV_BIN, newest_release


def ansible_version(bin_dir) -> tuple[str, str]:
    """(ansible-core version, controller Python version) that `ansible --version` reports."""
    out = subprocess.run([str(bin_dir / "ansible"), "--version"], capture_output=True, text=True, check=True).stdout
    core = re.search(r"\[core ([0-9.]+)\]", out).group(1)
    python = re.search(r"python version = ([0-9.]+)", out).group(1)
    return core, python


def test_venv_runs_the_newest_tested_release():
    pin = re.search(r"^ansible-core==(\S+)$", (REPO / "tests/requirements.txt").read_text(), re.M).group(1)
    assert pin == newest_release().version, "tests/requirements.txt and tests/ansible-core-releases.txt disagree"
    assert ansible_version(VENV_BIN)[0] == pin


def test_each_release_venv_runs_that_release(ansible_release):
    core, python = ansible_version(ansible_release.bin_dir)
    assert core == ansible_release.version
    assert python.startswith("3.11."), f"ansible-core {core} runs on Python {python}; the tested controller Python is 3.11"

