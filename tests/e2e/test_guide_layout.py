"""The Korean guide's layout and commands, as written: a project folder with
inventory.ini, site.yml, group_vars/all.yml, group_vars/gpu_nodes.yml and
host_vars/<node>.yml beside each other, and `ansible-playbook -i inventory.ini
site.yml` typed in it. Real ansible-playbook over SSH to sandbox nodes.

- Every place a user sets driver_version and install_gpu_driver beats the
  project's defaults (role defaults): the inventory file, the inventory's
  group_vars/all.yml, group_vars/all.yml beside site.yml, group_vars/<group>.yml,
  host_vars/<node>.yml, -e. The effective values are read from the driver
  tasks' own report in check mode (`--tags driver --check`).
- The guide's troubleshooting fix 3, an executable facts.d/gpu.fact printing
  {"has_nvidia_gpu": true}, is kept, decides the node's mode, and `ansible -m
  setup` works on every node after every run.

The user's project is a folder of its own (site.yml and ansible.cfg copied,
roles/, library/, plugins/, playbooks/ linked), so that the test's inventory and
group_vars never touch this checkout."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat

import pytest

from ansible_run import REPO, Ansible
from sandbox import PROFILES
from test_driver import BUILD_TOOLS

# w1-w4: H200 nodes the driver pre-flight passes on (headers, dkms stand-ins);
# their loaded driver is 580.159.04, the default driver_version. w5: a node
# with no GPU visible but the NVIDIA container toolkit installed (the guide's
# case for forcing GPU mode: a GPU not seen yet).
NODES = [PROFILES["h200"].variant(files=BUILD_TOOLS)] * 4 + [
    PROFILES["cpu"].variant(name="cpu+toolkit", container_runtime=True)]
W1, W2, W3, W4, W5 = (f"worker{i}" for i in range(1, 6))
DEFAULT_DRIVER = "580.159.04"
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"
# The guide's troubleshooting fix 3, as it installs it.
GUIDE_GPU_FACT = "#!/bin/bash\necho '{\"has_nvidia_gpu\": true}'\n"
SAY_TASK = "install_os_package : Say whether the driver needs installing, and where its installer comes from"
DETECT_TASK = "install_os_package : Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS"
# Where the driver tasks would fetch from (check mode fetches nothing), and no
# checksum: these runs only read the effective driver settings.
DRIVER_SOURCE = "gpu_driver_repo_url=http://127.0.0.1:9/nvidia\ngpu_driver_checksum_required=false\n"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(NODES)


def make_project(path, sb, inventory_extra="", files=None):
    """A user's project folder in the guide's layout: the sandbox's nodes in
    inventory.ini (in [gpu_nodes] W3 only), site.yml and ansible.cfg, and
    `files` (relative path -> text) beside them."""
    path.mkdir(parents=True)
    for name in ("site.yml", "ansible.cfg"):
        (path / name).write_text((REPO / name).read_text())
    for name in ("roles", "library", "plugins", "playbooks"):
        (path / name).symlink_to(REPO / name)
    (path / "inventory.ini").write_text(
        sb.inventory.read_text() + DRIVER_SOURCE + f"\n[gpu_nodes]\n{W3}\n" + inventory_extra)
    for rel, text in (files or {}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def driver_settings(run, hosts=(W1, W2, W3, W4)):
    """Each host's effective (install_gpu_driver, driver_version), as the
    driver tasks report them: no report means the driver tasks were skipped."""
    out = {}
    for host in hosts:
        said = [r for r in run.host_results(host) if r["task"] == SAY_TASK]
        if not said:
            out[host] = (False, None)
            continue
        msg = said[-1]["result"]["msg"]
        m = re.search(r"NVIDIA driver (\S+) is loaded already|; installing (\S+) with", msg)
        assert m, msg
        out[host] = (True, m.group(1) or m.group(2))
    return out


def vars_file(version):
    return f"install_gpu_driver: true\ndriver_version: \"{version}\"\n"


def test_every_user_file_beats_the_project_defaults(sb, tmp_path):
    """Each place the guide names, with its own driver_version: each node gets
    the most specific one that applies to it, never the default."""
    sb.reset()
    project = make_project(tmp_path / "project", sb, files={
        "group_vars/all.yml": vars_file("580.4.4"),             # beside site.yml and the inventory
        "group_vars/gpu_nodes.yml": vars_file("580.3.3"),       # W3's group
        f"host_vars/{W2}.yml": vars_file("580.2.2"),
    })
    inventory = project / "inventory.ini"
    inventory.write_text(inventory.read_text().replace(
        f"{W1} ansible_host", f"{W1} install_gpu_driver=true driver_version=580.1.1 ansible_host"))
    user = Ansible(inventory, tmp_path / "user", project=project)
    try:
        before = driver_settings(user.shell("ansible-playbook -i inventory.ini site.yml --tags driver --check "
                                            f"-l {W1},{W2},{W3},{W4}").expect_ok())
        assert before == {W1: (True, "580.1.1"), W2: (True, "580.2.2"), W3: (True, "580.3.3"),
                          W4: (True, "580.4.4")}
        # -e beats them all.
        extra = driver_settings(user.shell(
            "ansible-playbook -i inventory.ini site.yml --tags driver --check -l worker1,worker2,worker3,worker4 "
            "-e '{\"install_gpu_driver\": true, \"driver_version\": \"580.6.6\"}'").expect_ok())
        assert extra == {h: (True, "580.6.6") for h in (W1, W2, W3, W4)}
        # -e turns the driver off, whatever the files say.
        off = driver_settings(user.shell(
            "ansible-playbook -i inventory.ini site.yml --tags driver --check -l worker1,worker2,worker3,worker4 "
            "-e install_gpu_driver=false").expect_ok())
        assert off == {h: (False, None) for h in (W1, W2, W3, W4)}

        # An inventory in a folder of its own (inventories/lab/), with its
        # group_vars/all.yml; host_vars/ beside site.yml still count.
        (project / "group_vars/all.yml").unlink()
        lab = project / "inventories/lab"
        lab.mkdir(parents=True)
        (lab / "group_vars").mkdir()
        (lab / "group_vars/all.yml").write_text(vars_file("580.5.5"))
        (lab / "hosts.ini").write_text(inventory.read_text().replace(f"{W1} install_gpu_driver=true driver_version=580.1.1 ",
                                                                     f"{W1} "))
        (project / "group_vars/gpu_nodes.yml").unlink()
        lab_run = driver_settings(user.shell(
            "ansible-playbook -i inventories/lab/hosts.ini site.yml --tags driver --check "
            "-l worker1,worker2,worker3,worker4").expect_ok())
        assert lab_run == {W1: (True, "580.5.5"), W2: (True, "580.2.2"), W3: (True, "580.5.5"),
                           W4: (True, "580.5.5")}

        # Nothing set anywhere: the defaults, no driver; -e install_gpu_driver=true: 580.159.04.
        # [gpu_nodes:vars] in the inventory file (W2's group here) beats them too.
        (lab / "group_vars/all.yml").unlink()
        (project / f"host_vars/{W2}.yml").unlink()
        plain = project / "plain.ini"
        plain.write_text(sb.inventory.read_text() + DRIVER_SOURCE
                         + f"\n[gpu_nodes]\n{W2}\n\n[gpu_nodes:vars]\ninstall_gpu_driver=true\ndriver_version=580.7.7\n")
        defaults = driver_settings(user.shell(
            "ansible-playbook -i plain.ini site.yml --tags driver --check -l worker1,worker2").expect_ok(),
            hosts=(W1, W2))
        assert defaults == {W1: (False, None), W2: (True, "580.7.7")}
        on = driver_settings(user.shell(
            "ansible-playbook -i plain.ini site.yml --tags driver --check -l worker1 -e install_gpu_driver=true"
        ).expect_ok(), hosts=(W1,))
        assert on == {W1: (True, DEFAULT_DRIVER)}
    finally:
        user.close()


def test_a_missing_checksum_fails_naming_the_variable(sb, tmp_path):
    """A node that must install the driver stops before anything is fetched
    when no checksum is set, unless gpu_driver_checksum_required is false."""
    sb.reset([W1])
    project = make_project(tmp_path / "project", sb, files={"group_vars/all.yml": vars_file("580.1.1")})
    inventory = project / "inventory.ini"
    inventory.write_text(inventory.read_text().replace("gpu_driver_checksum_required=false\n", ""))
    user = Ansible(inventory, tmp_path / "user", project=project)
    try:
        run = user.shell("ansible-playbook -i inventory.ini site.yml --tags driver -l worker1").expect_failed()
        failed = [r for r in run.host_results(W1) if r["status"] == "failed"]
        assert [r["task"] for r in failed] == ["install_os_package : Check the driver installer settings"]
        assert failed[0]["result"]["msg"] == (
            'No checksum is set for NVIDIA-Linux-x86_64-580.1.1.run, which would run as root: set '
            'gpu_driver_checksum: "sha256:<its sha256sum>" (or gpu_driver_checksums: '
            '{NVIDIA-Linux-x86_64-580.1.1.run: "sha256:..."}), or set gpu_driver_checksum_required: false '
            'to install it unverified.')
        assert not sb.node(W1).path("/var/cache/nvidia-driver").exists(), "nothing fetched"
        # The detection wrote the facts file on this fresh node, under the
        # action plugin's umask 077: its folders are 0755 all the same.
        assert [mode_of(sb.node(W1), d) for d in ("/etc/ansible", "/etc/ansible/facts.d")] == [0o755, 0o755]
        # The node runs driver_version already: nothing would run, no checksum needed.
        user.shell("ansible-playbook -i inventory.ini site.yml --tags driver --check -l worker1 "
                   f"-e driver_version={DEFAULT_DRIVER}").expect_ok()
    finally:
        user.close()


def put(node, path, text, mode):
    target = node.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chmod(target, mode)


def mode_of(node, path):
    return stat.S_IMODE(os.stat(node.path(path)).st_mode)


def test_the_guides_gpu_fact_is_kept_decides_and_setup_works(sb, tmp_path):
    """W5 (no GPU visible) has the guide's executable gpu.fact: site.yml keeps
    it, sets W5 up as a GPU node because of it and says so; W4 has a gpu.fact
    an earlier release left executable (JSON, 0755: setup failed on it), which
    becomes ours again, 0644. `ansible -m setup` works on every node after
    each run. The has_nvidia_gpu variable wins over the file."""
    sb.reset([W4, W5])
    w4, w5 = sb.node(W4), sb.node(W5)
    put(w5, FACTS_FILE, GUIDE_GPU_FACT, 0o755)
    put(w4, FACTS_FILE, json.dumps({"nvidia_gpu_present": True, "nvidia_gpu_count": 1}) + "\n", 0o755)
    # This machine's /etc/containerd shows through the node's overlay: gone,
    # the module creates it.
    shutil.rmtree(w4.path("/etc/containerd"), ignore_errors=True)
    project = make_project(tmp_path / "project", sb)
    user = Ansible(project / "inventory.ini", tmp_path / "user", project=project)
    try:
        run = user.shell("ansible-playbook -i inventory.ini site.yml -l worker4,worker5").expect_ok()
        w5_detect = run.result(W5, DETECT_TASK)["result"]
        assert w5_detect["ansible_facts"]["nvidia_gpu_present"] is False
        assert (w5_detect["ansible_facts"]["gpu_node_enabled"], w5_detect["ansible_facts"]["gpu_node_mode_source"]) \
            == (True, "local_facts")
        assert w5_detect["local_facts_owner"] == "user"
        assert f"{FACTS_FILE} is not written by nvidia_gpu_facts" in run.stdout + run.stderr
        assert "has_nvidia_gpu: true sets this node's GPU mode (gpu_node_mode_source: local_facts)" in \
            " ".join((run.stdout + run.stderr).split())
        assert w5.path(FACTS_FILE).read_text() == GUIDE_GPU_FACT and mode_of(w5, FACTS_FILE) == 0o755
        assert "nvidia" in w5.path("/etc/containerd/config.toml").read_text(), "set up as a GPU node"
        # The guide's message names the file that decided, not a detection of 0 GPUs.
        assert run.result(W5, "Display containerd configuration mode")["result"]["msg"] == \
            "Configuring containerd with NVIDIA GPU runtime (set by the node's gpu.fact: has_nvidia_gpu=true)"

        ours = json.loads(w4.path(FACTS_FILE).read_text())
        assert ours["written_by"] == "nvidia_gpu_facts" and ours["nvidia_gpu_count"] == 1
        assert mode_of(w4, FACTS_FILE) == 0o644
        # Created by the module under the action plugin's umask 077, as packages make it.
        assert mode_of(w4, "/etc/containerd") == 0o755

        setup = user.shell("ansible worker4,worker5 -i inventory.ini -m setup -a filter=ansible_local").expect_ok()
        assert "Exec format error" not in setup.stdout + setup.stderr
        local = {r["host"]: r["result"]["ansible_facts"]["ansible_local"]["gpu"] for r in setup.results}
        assert local[W5] == {"has_nvidia_gpu": True}
        assert local[W4]["written_by"] == "nvidia_gpu_facts"

        # The variable wins over the file, and the run says so; the file stays.
        forced = user.shell("ansible-playbook -i inventory.ini site.yml -l worker5 --tags gpu "
                            "-e has_nvidia_gpu=false").expect_ok()
        facts = forced.result(W5, DETECT_TASK)["result"]["ansible_facts"]
        assert (facts["gpu_node_enabled"], facts["gpu_node_mode_source"]) == (False, "user")
        assert "its has_nvidia_gpu: true is overridden by the has_nvidia_gpu: false set in Ansible" in \
            " ".join((forced.stdout + forced.stderr).split())
        assert w5.path(FACTS_FILE).read_text() == GUIDE_GPU_FACT and mode_of(w5, FACTS_FILE) == 0o755
        user.shell("ansible worker4,worker5 -i inventory.ini -m setup").expect_ok()

        # verify.yml reports the user's file as theirs, and passes it.
        # (Its gpu mode check fails: the file forces GPU mode where no GPU is detected.)
        verify = user.shell("ansible-playbook -i inventory.ini playbooks/verify.yml -l worker5")
        [line] = [line for r in verify.results if r["task"].endswith("Show this node's results")
                  for line in r["result"]["msg"] if "facts file" in line]
        assert line == (f"PASS  facts file: {FACTS_FILE} is yours (not written by nvidia_gpu_facts), left as it is, "
                        "and Ansible reads it; its has_nvidia_gpu: true sets the GPU mode"), line
    finally:
        user.close()


def readme_commands(section: str) -> list[str]:
    """The Ansible command lines of README's first sh block under `section`,
    without their trailing comments."""
    text = (REPO / "README.md").read_text()
    block = text.split(section + "\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith(("ansible", "ansible-playbook"))]


README_NODES = [PROFILES["cpu"], PROFILES["h200"].variant(files=BUILD_TOOLS),
                PROFILES["hgx-h100"].variant(files=BUILD_TOOLS)]


@pytest.fixture(scope="module")
def readme_sb(sandbox_factory):
    return sandbox_factory(README_NODES)


def test_the_readme_commands_run_as_written(readme_sb, tmp_path):
    """README's usage, driver and ad hoc commands, typed as written in a
    project in the guide's layout (inventory.ini with gpu_nodes, the driver
    quick start's group_vars/all.yml): each exits 0, but the ad hoc driver
    pre-flight, which answers on every node."""
    from test_driver import NEW, Repository
    from test_verify import install_nvidia_smi

    sb = readme_sb
    repo = Repository(tmp_path / "repository")
    try:
        checksum = repo.add(NEW)
        project = make_project(tmp_path / "project", sb, files={"group_vars/all.yml": (
            f'driver_version: "{NEW}"\ngpu_driver_repo_url: "{repo.url}"\n'
            f'gpu_driver_checksums:\n  NVIDIA-Linux-x86_64-{NEW}.run: "{checksum}"\n')})
        inventory = project / "inventory.ini"
        inventory.write_text(inventory.read_text().replace(f"[gpu_nodes]\n{W3}\n", "[gpu_nodes]\nworker2\nworker3\n")
                             .replace("gpu_driver_repo_url=http://127.0.0.1:9/nvidia\ngpu_driver_checksum_required=false\n", ""))
        usage = readme_commands("## Usage")
        driver = readme_commands("### The NVIDIA driver")
        adhoc = readme_commands("### Ad hoc")
        assert "ansible-playbook -i inventory.ini site.yml" in usage and driver and adhoc, (usage, driver, adhoc)
        user = Ansible(inventory, tmp_path / "user", project=project)
        try:
            for command in usage + driver + adhoc:
                if "playbooks/verify.yml" in command:
                    # The driver "loaded" by the stand-in installer needs an nvidia-smi.
                    for host in ("worker2", "worker3"):
                        node = sb.node(host)
                        install_nvidia_smi(node, json.loads(node.path(FACTS_FILE).read_text())["nvidia_gpus"])
                run = user.shell(command)
                if "-m nvidia_driver_install" in command:
                    # Its pre-flight checks are the answer: nodes without the
                    # installer (or a GPU) fail them, each saying why.
                    assert {r["host"] for r in run.results if r["result"].get("preflight")} == \
                        {"worker1", "worker2", "worker3"}, run.output
                    continue
                assert run.rc == 0, run.output
        finally:
            user.close()
        assert [p for m, p in repo.requests if m == "GET"] == [f"/nvidia/NVIDIA-Linux-x86_64-{NEW}.run"] * 2
    finally:
        repo.close()
