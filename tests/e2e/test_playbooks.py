"""The playbook and the example inventory as users get them: they parse, and
they mean what their comments say. No nodes needed."""
import json
import subprocess

import pytest

from ansible_run import REPO, VENV_BIN


def run(*cmd, ansible):
    p = subprocess.run([str(VENV_BIN / cmd[0]), *cmd[1:]], cwd=REPO, env=ansible.env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_site_yml_passes_the_syntax_check(ansible_factory):
    user = ansible_factory(REPO / "inventory.example.ini")
    out = run("ansible-playbook", "-i", "inventory.example.ini", "site.yml", "--syntax-check", ansible=user)
    assert "playbook: site.yml" in out


def test_example_inventory_has_the_documented_groups_and_no_override(ansible_factory):
    user = ansible_factory(REPO / "inventory.example.ini")
    inventory = json.loads(run("ansible-inventory", "-i", "inventory.example.ini", "--playbook-dir", ".",
                               "--list", ansible=user))
    assert inventory["gpu_nodes"]["hosts"] == ["gpu1", "gpu2"]
    assert inventory["cpu_nodes"]["hosts"] == ["cpu1", "cpu2"]
    hostvars = inventory["_meta"]["hostvars"]
    assert not [h for h, v in hostvars.items() if "has_nvidia_gpu" in v], "detection decides unless the user says"
    for host in ("gpu1", "cpu1"):
        # The role defaults decide (tests/e2e/test_guide_layout.py: any user file beats them).
        assert "driver_version" not in hostvars[host] and "install_gpu_driver" not in hostvars[host]


def test_no_playbook_group_vars_outrank_the_users_inventory():
    """Project defaults are role defaults: group_vars or host_vars shipped beside
    a playbook would outrank the user's inventory group_vars/all.yml."""
    shipped = [p.relative_to(REPO) for d in ("group_vars", "host_vars", "playbooks/group_vars", "playbooks/host_vars")
               for p in (REPO / d).rglob("*") if p.is_file()]
    assert shipped == []


@pytest.mark.parametrize("role_name", ["install_os_package", "install_containerd", "gpu_node_mode"])
def test_role_defaults_and_argument_specs_agree(role_name):
    """Every default of a role is declared in its argument spec (so its type
    is checked) with the same default, and nothing more but has_nvidia_gpu."""
    import yaml

    role = REPO / "roles" / role_name
    defaults_file = role / "defaults/main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted([*defaults, "has_nvidia_gpu"])
    assert "has_nvidia_gpu" not in defaults, "a default would make the override always set"
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value:
            assert "default" not in options[name], name
        elif value is None:
            assert "default" not in options[name] and not options[name].get("required"), name
        else:
            assert options[name].get("default") == value, name
