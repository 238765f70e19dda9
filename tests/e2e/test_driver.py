"""The NVIDIA driver through site.yml (install_os_package, tasks/driver.yml):
real ansible-playbook runs over SSH to sandbox nodes, the installer served by a
local HTTP repository (or copied from the controller), and run on the node by
nvidia_driver_install. The installer is the stand-in
tests/fixtures/fake-nvidia-installer.sh under NVIDIA's file name: it "loads"
the driver by writing the node's /sys/module/nvidia/version and logs each call
on the node. A reboot cannot happen in the sandbox (a node is an sshd, not a
machine): only the check-mode path to the reboot task is tested."""
import hashlib
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from ansible_run import REPO, Ansible
from sandbox import PROFILES

FAKE_INSTALLER = REPO / "tests/fixtures/fake-nvidia-installer.sh"
NEW = "580.105.08"  # the version the tests install
LOADED_H200 = "580.159.04"  # the real capture's driver, driver_version's default
LOADED_H100 = "570.124.06"
INSTALLER_DIR = "/var/cache/nvidia-driver"
CALLS = "/var/lib/fake-nvidia-installer/calls"
INITRAMFS_CALLS = "/var/lib/gpu-sandbox/update-initramfs.calls"
BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"
DRIVER_TASK = ("install_os_package : Install the NVIDIA driver with its .run installer"
               " (nothing runs when driver_version is loaded already)")
FETCH_TASK = "install_os_package : Get the driver installer onto the node, unless driver_version is loaded already"
DOWNLOAD_TASK = "install_os_package : Download the driver installer from the local repository"
STOP_TASK = "install_os_package : Stop on this node, which must reboot before the driver can be installed"


def installer_name(version, arch="x86_64"):
    return f"NVIDIA-Linux-{arch}-{version}.run"


# What the module's pre-flight needs on a node and the sandbox lacks: the
# headers of the running kernel (the node's /proc is this machine's, so is its
# release), and dkms (the role's default registers the module with it). The
# headers go to /usr/lib: on this machine /lib is a link to usr/lib, and a
# profile file under /lib would make it a folder of its own in the node.
DKMS = """#!/bin/sh
# dkms stand-in (tests/e2e/test_driver.py): the driver installer's DKMS step is the stand-in's too.
[ "$1" = --version ] && { echo "dkms-3.0.10"; exit 0; }
exit 0
"""
UPDATE_INITRAMFS = f"""#!/bin/sh
# update-initramfs stand-in (tests/e2e/test_driver.py): logs its arguments.
mkdir -p {os.path.dirname(INITRAMFS_CALLS)} && echo "$*" >>{INITRAMFS_CALLS}
echo "update-initramfs: Generating /boot/initrd.img-$(uname -r)"
"""
BUILD_TOOLS = (
    (f"/usr/lib/modules/{os.uname().release}/build/Makefile", "# headers of the running kernel (stand-in)\n"),
    ("/usr/sbin/dkms", DKMS, 0o755),
)
PROFILE_LIST = [
    PROFILES["cpu"],
    PROFILES["h200"].variant(files=BUILD_TOOLS),
    PROFILES["hgx-h100"].variant(files=BUILD_TOOLS),
    PROFILES["consumer"].variant(files=BUILD_TOOLS + (("/usr/sbin/update-initramfs", UPDATE_INITRAMFS, 0o755),)),
    PROFILES["gh200"].variant(files=BUILD_TOOLS),
]
CPU, H200, H100, CONSUMER, GH200 = "worker1", "worker2", "worker3", "worker4", "worker5"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILE_LIST)


class Repository:
    """The site's local repository: an HTTP server on 127.0.0.1 (the sandbox
    nodes share this machine's network) serving copies of the stand-in under
    NVIDIA's names, and remembering every request."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str]] = []
        repo = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def send_head(self):
                repo.requests.append((self.command, self.path))
                return super().send_head()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/nvidia"
        (root / "nvidia").mkdir(parents=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, version, arch="x86_64") -> str:
        """Puts the installer of `version` in the repository; its checksum."""
        path = self.root / "nvidia" / installer_name(version, arch)
        shutil.copyfile(FAKE_INSTALLER, path)
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

    def downloads(self):
        return [path for method, path in self.requests if method == "GET"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = Repository(tmp_path_factory.mktemp("repository"))
    yield r
    r.close()


@pytest.fixture
def requests(repo):
    """The repository's requests made during this test."""
    repo.requests.clear()
    return repo.requests


def driver_vars(repo, version=NEW, **more) -> list[str]:
    """-e options: the driver on, version, repository, checksum."""
    checksum = repo.add(version)
    extra = {"install_gpu_driver": True, "driver_version": version,
             "gpu_driver_repo_url": repo.url, "gpu_driver_checksum": checksum, **more}
    return ["-e", json.dumps(extra)]


def read(node, path):
    p = node.path(path)
    return p.read_text() if p.exists() else None


def calls(node):
    """The stand-in installer's calls on the node: [("start", version), ("end", status)]."""
    text = read(node, CALLS) or ""
    return [(line.split()[0], line.split()[2]) for line in text.splitlines()]


def driver_changes(run, host):
    return [t for t in run.changed_tasks(host) if "driver" in t.lower()]


def test_limited_gpu_nodes_get_the_new_driver_once(sb, repo, requests, site, ansible_factory):
    """-l worker2,worker3: both GPU nodes download and install NEW once; the
    second run downloads nothing, runs nothing and changes nothing; the CPU
    node and the GPU node outside -l are not touched."""
    sb.reset()
    outside = {name: sb.node(name).upper_hash() for name in (CPU, CONSUMER, GH200)}
    user = ansible_factory(sb.inventory)
    args = ["-l", f"{H200},{H100}", *driver_vars(repo)]

    first = user.playbook(site, *args).expect_ok()
    assert sorted(first.stats) == [H200, H100]
    for host in (H200, H100):
        node = sb.node(host)
        result = first.result(host, DRIVER_TASK)
        assert result["changed"], result
        assert result["result"]["installed_version_before"] in (LOADED_H200, LOADED_H100)
        checks = {c["name"]: c["ok"] for c in result["result"]["preflight"]}
        assert checks["checksum"] and all(checks.values()), checks
        # What ran is the module's private copy (under /var/tmp), hashed as it was made.
        ran = result["result"]["command"][1]
        assert re.fullmatch(rf"/var/tmp/nvidia-driver-install\.[0-9a-f.]+/{re.escape(installer_name(NEW))}", ran), ran
        assert result["result"]["installer_sha256"] == hashlib.sha256(FAKE_INSTALLER.read_bytes()).hexdigest()
        assert result["result"]["command"] == [
            "sh", ran, "--silent", "--no-questions", "--ui=none",
            "--log-file-name=/var/log/nvidia-installer.log", "--kernel-module-type=open", "--dkms"]
        assert read(node, "/sys/module/nvidia/version") == f"{NEW}\n"
        assert calls(node) == [("start", NEW), ("end", "0")]
        assert json.loads(read(node, FACTS_FILE))["nvidia_driver_version"] == NEW, "detected again"
        assert user.cached_facts(host)["nvidia_driver_version"] == NEW
        assert first.result(host, DOWNLOAD_TASK)["changed"]
    assert sorted(requests) == [("GET", f"/nvidia/{installer_name(NEW)}")] * 2

    requests.clear()
    second = user.playbook(site, *args).expect_ok()
    for host in (H200, H100):
        assert second.stats[host]["changed"] == 0, f"{host}: {second.changed_tasks(host)}"
        assert second.result(host, FETCH_TASK)["status"] == "skipped"
        assert "is installed already" in second.result(host, DRIVER_TASK)["result"]["msg"]
        assert calls(sb.node(host)) == [("start", NEW), ("end", "0")], "the installer did not run again"
    assert requests == [], "nothing was downloaded again"

    for name, before in outside.items():
        assert sb.node(name).upper_hash() == before, f"{name} is outside -l: not touched"
        assert read(sb.node(name), CALLS) is None


def test_loaded_version_fetches_and_runs_nothing(sb, repo, requests, site, ansible_factory):
    """The H200 runs 580.159.04, the driver_version of group_vars/all.yml."""
    sb.reset([H200])
    run = ansible_factory(sb.inventory).playbook(
        site, "-l", H200, *driver_vars(repo, version=LOADED_H200)).expect_ok()
    assert run.result(H200, FETCH_TASK)["status"] == "skipped"
    driver = run.result(H200, DRIVER_TASK)
    assert driver["status"] == "ok" and not driver["changed"], driver
    assert driver["result"]["msg"].startswith(f"NVIDIA driver {LOADED_H200} is installed already")
    assert driver_changes(run, H200) == []
    assert requests == []
    node = sb.node(H200)
    assert not node.path(INSTALLER_DIR).exists() and read(node, CALLS) is None
    assert read(node, "/sys/module/nvidia/version") == f"{LOADED_H200}\n"


@pytest.mark.parametrize("source", ["url", "controller"])
def test_checksum_mismatch_stops_the_node_before_anything_runs(sb, repo, requests, site, ansible_factory,
                                                                tmp_path, source):
    sb.reset([H100])
    wrong = "sha256:" + "0" * 64
    extra = {"gpu_driver_checksum": wrong}
    if source == "controller":
        src = tmp_path / installer_name(NEW)
        shutil.copyfile(FAKE_INSTALLER, src)
        extra.update(gpu_driver_repo_url="", gpu_driver_installer_src=str(src))
    run = ansible_factory(sb.inventory).playbook(
        site, "-l", H100, *driver_vars(repo), "-e", json.dumps(extra)).expect_failed()
    failed = [r for r in run.host_results(H100) if r["status"] == "failed"]
    assert len(failed) == 1, run.output
    msg = failed[0]["result"]["msg"]
    assert "checksum" in msg and "0" * 64 in msg, msg
    if source == "url":
        assert failed[0]["task"] == DOWNLOAD_TASK
        assert "did not match" in msg
    else:
        assert failed[0]["task"].endswith("Check the controller's copy of the driver installer against its checksum")
        assert "sha256:" + hashlib.sha256(FAKE_INSTALLER.read_bytes()).hexdigest() in msg
        assert requests == []
    node = sb.node(H100)
    assert not node.path(f"{INSTALLER_DIR}/{installer_name(NEW)}").exists(), "the file was not kept"
    assert read(node, CALLS) is None, "nothing ran"
    assert read(node, "/sys/module/nvidia/version") == f"{LOADED_H100}\n"
    assert not [r for r in run.host_results(H100) if r["task"] == DRIVER_TASK]


def test_installer_failure_stops_the_node_with_its_exit_status_and_log(sb, repo, site, ansible_factory, tmp_path):
    """The installer copied from the controller fails to build the module:
    its `.fail` marker (next to the copy on the node) makes the stand-in fail
    with the compiler error it holds."""
    sb.reset([H100])
    node = sb.node(H100)
    src = tmp_path / installer_name(NEW)
    shutil.copyfile(FAKE_INSTALLER, src)
    checksum = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    error = "error: 'struct vm_area_struct' has no member named 'vm_flags' (sandbox)"
    # The module runs a private copy: the stand-in finds its marker by name under /var/lib.
    node.path("/var/lib/fake-nvidia-installer").mkdir(parents=True, mode=0o755, exist_ok=True)
    node.path(f"/var/lib/fake-nvidia-installer/{installer_name(NEW)}.fail").write_text(error + "\n")

    run = ansible_factory(sb.inventory).playbook(
        site, "-l", H100, "-e", json.dumps({
            "install_gpu_driver": True, "driver_version": NEW,
            "gpu_driver_installer_src": str(src), "gpu_driver_checksum": checksum})).expect_failed()
    assert run.result(H100, "install_os_package : Copy the driver installer from the controller")["changed"]
    driver = run.result(H100, DRIVER_TASK)
    assert driver["status"] == "failed", driver
    result = driver["result"]
    assert result["rc"] == 1
    assert result["msg"].startswith("the NVIDIA installer failed (exit status 1): ERROR: ")
    assert any(error in line for line in result["installer_log_tail"]), result["installer_log_tail"]
    assert "exit status 1" in run.stdout and error in run.stdout, "the user sees both"
    assert run.stats[H100]["failures"] == 1
    assert calls(node) == [("start", NEW), ("end", "1")]
    assert read(node, "/sys/module/nvidia/version") == f"{LOADED_H100}\n", "the old driver stays"


@pytest.fixture(scope="module")
def nouveau_runs(sb, repo, site, tmp_path_factory):
    """Every node, twice, with the driver on: the consumer card on nouveau
    cannot get it before a reboot (not allowed: gpu_driver_reboot is false)."""
    sb.reset()
    repo.requests.clear()
    checksums = {installer_name(NEW): repo.add(NEW), installer_name(NEW, "aarch64"): repo.add(NEW, "aarch64")}
    user = Ansible(sb.inventory, tmp_path_factory.mktemp("nouveau"))
    args = ["-e", json.dumps({"install_gpu_driver": True, "driver_version": NEW,
                              "gpu_driver_repo_url": repo.url, "gpu_driver_checksums": checksums})]
    node = sb.node(CONSUMER)
    first = user.playbook(site, *args).expect_failed()
    after_first = {p: read(node, p) for p in (BLACKLIST, INITRAMFS_CALLS)}
    blacklist_mtime = node.path(BLACKLIST).stat().st_mtime_ns
    second = user.playbook(site, *args).expect_failed()
    yield first, second, after_first, blacklist_mtime
    user.close()


def test_nouveau_node_stops_with_what_to_do_and_the_others_finish(sb, nouveau_runs):
    first, second, after_first, blacklist_mtime = nouveau_runs
    stop = first.result(CONSUMER, STOP_TASK)
    assert stop["status"] == "failed"
    msg = stop["result"]["msg"]
    assert "nouveau is loaded" in msg and "Reboot the node" in msg, msg
    assert f"run this again to install the driver. {CONSUMER} stops here (gpu_driver_reboot is false); the other nodes go on" in msg
    assert f"-l {CONSUMER} -e install_gpu_driver=true" in msg and "gpu_driver_reboot=true" in msg
    driver = first.result(CONSUMER, DRIVER_TASK)["result"]
    assert driver["reboot_required"] and driver["commands"] == [["update-initramfs", "-u"]]
    assert "blacklist nouveau" in after_first[BLACKLIST].splitlines()
    assert after_first[INITRAMFS_CALLS] == "-u\n", "the initramfs was rebuilt once"
    consumer = sb.node(CONSUMER)
    assert read(consumer, CALLS) is None, "the installer waits for the reboot"
    assert first.stats[CONSUMER]["failures"] == 1
    assert not [r for r in first.host_results(CONSUMER) if r["task"].startswith("install_containerd")]

    for host in (H200, H100, GH200):
        assert first.stats[host]["failures"] == 0
        assert first.result(host, DRIVER_TASK)["changed"]
        assert read(sb.node(host), "/sys/module/nvidia/version") == f"{NEW}\n"
        assert first.result(host, "install_containerd : Write containerd's configuration")["status"] == "ok"
    cpu = first.result(CPU, "install_os_package : Install the NVIDIA driver on a GPU node")
    assert cpu["status"] == "skipped"
    assert not sb.node(CPU).path(INSTALLER_DIR).exists() and read(sb.node(CPU), CALLS) is None

    # Run again before the reboot: the same stop, nothing rebuilt or rewritten.
    assert second.result(CONSUMER, STOP_TASK)["status"] == "failed"
    assert "Reboot the node" in second.result(CONSUMER, STOP_TASK)["result"]["msg"]
    assert read(consumer, INITRAMFS_CALLS) == "-u\n"
    assert consumer.path(BLACKLIST).stat().st_mtime_ns == blacklist_mtime
    assert second.stats[CONSUMER]["changed"] == 0
    for host in (H200, H100, GH200):
        assert second.stats[host]["changed"] == 0 and second.stats[host]["failures"] == 0


def test_reboot_allowed_reaches_the_reboot_task_in_check_mode(sb, repo, site, ansible_factory, nouveau_runs):
    """The sandbox cannot reboot a node: with gpu_driver_reboot=true, check
    mode shows that the role would reboot the nouveau node instead of stopping."""
    consumer = sb.node(CONSUMER)
    assert consumer.path(BLACKLIST).exists(), "runs on the state nouveau_runs left"
    before = consumer.upper_hash()
    run = ansible_factory(sb.inventory).playbook(
        site, "--check", "-l", CONSUMER, *driver_vars(repo, gpu_driver_reboot=True)).expect_ok()
    reboot = run.result(CONSUMER, "install_os_package : Reboot the node, as the driver asks (gpu_driver_reboot is true)")
    assert reboot["status"] == "ok" and reboot["changed"] and reboot["result"]["rebooted"], reboot
    assert run.result(CONSUMER, "install_os_package : Install the NVIDIA driver after the reboot")["status"] == "skipped"
    assert run.result(CONSUMER, STOP_TASK)["status"] == "skipped"
    assert consumer.upper_hash() == before


def test_check_mode_fetches_nothing_runs_nothing_and_shows_the_command(sb, repo, requests, site, ansible_factory):
    sb.reset()
    before = {n.name: n.upper_hash() for n in sb.nodes}
    repo.add(NEW)
    run = ansible_factory(sb.inventory).playbook(
        site, "--check", "-e", json.dumps({"install_gpu_driver": True, "driver_version": NEW,
                                          "gpu_driver_repo_url": repo.url,
                                          "gpu_driver_checksum_required": False})).expect_ok()
    for node in sb.nodes:
        assert node.upper_hash() == before[node.name], f"{node.name} changed in check mode"
        assert read(node, CALLS) is None
    assert requests == [], "no request at all: the folder it would go to does not exist yet"
    plan = "install_os_package : Show what installing the driver would do (check mode)"
    for host in (H200, H100):
        assert run.result(host, DRIVER_TASK)["changed"], "a real run would install"
        assert run.result(host, plan)["result"]["msg"] == [
            f"would fetch {repo.url}/{installer_name(NEW)} to {INSTALLER_DIR}/{installer_name(NEW)}",
            f"would run: sh {INSTALLER_DIR}/{installer_name(NEW)} --silent --no-questions --ui=none "
            "--log-file-name=/var/log/nvidia-installer.log --kernel-module-type=open --dkms"]
        say = run.result(host, "install_os_package : Say whether the driver needs installing")["result"]["msg"]
        assert "WARNING: no checksum is set" in say, say
    grace = run.result(GH200, plan)["result"]["msg"]
    assert grace[0] == f"would fetch {repo.url}/{installer_name(NEW, 'aarch64')} to {INSTALLER_DIR}/{installer_name(NEW, 'aarch64')}"
    nouveau = run.result(CONSUMER, plan)["result"]["msg"]
    assert nouveau[1].startswith(f"nouveau is loaded: it will be blacklisted in {BLACKLIST}"), nouveau
    assert run.result(CPU, "install_os_package : Install the NVIDIA driver on a GPU node")["status"] == "skipped"
    assert "would run: sh /var/cache/nvidia-driver/" in run.stdout


def test_tags_driver_runs_detection_and_the_driver_tasks_only(sb, repo, site, ansible_factory):
    """--tags driver: a fresh detection (the loaded driver of now), the GPU
    decision, then the driver; no package or containerd task."""
    sb.reset([H100])
    run = ansible_factory(sb.inventory).playbook(site, "--tags", "driver", "-l", H100, *driver_vars(repo)).expect_ok()
    ran = [r["task"] for r in run.host_results(H100) if r["status"] != "skipped" and "Validating arguments" not in r["task"]]
    assert ran[0] == "install_os_package : Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS"
    assert not [t for t in ran if "packages" in t or t.startswith("install_containerd : ")], ran
    assert run.result(H100, DRIVER_TASK)["changed"]
    assert read(sb.node(H100), "/sys/module/nvidia/version") == f"{NEW}\n"
    assert calls(sb.node(H100)) == [("start", NEW), ("end", "0")]


def test_grace_node_gets_the_aarch64_installer_and_its_checksum(sb, repo, requests, site, ansible_factory):
    """The architecture comes from detection (node_architecture): the GH200
    node downloads NVIDIA-Linux-aarch64-<version>.run, checked against its
    own entry of gpu_driver_checksums."""
    sb.reset([GH200])
    checksums = {installer_name(NEW): "sha256:" + "1" * 64, installer_name(NEW, "aarch64"): repo.add(NEW, "aarch64")}
    run = ansible_factory(sb.inventory).playbook(site, "-l", GH200, "-e", json.dumps({
        "install_gpu_driver": True, "driver_version": NEW,
        "gpu_driver_repo_url": repo.url, "gpu_driver_checksums": checksums})).expect_ok()
    assert requests == [("GET", f"/nvidia/{installer_name(NEW, 'aarch64')}")]
    result = run.result(GH200, DRIVER_TASK)["result"]
    # The private copy of the downloaded installer ran (under /var/tmp), by the installer's name.
    assert result["command"][0] == "sh"
    assert re.fullmatch(rf"/var/tmp/nvidia-driver-install\.[0-9a-f.]+/{re.escape(installer_name(NEW, 'aarch64'))}",
                        result["command"][1]), result["command"]
    assert "--kernel-module-type=open" in result["command"], "Grace Hopper runs the open modules only"
    assert result["module_binary"]["architecture"] == "aarch64"
    assert read(sb.node(GH200), "/sys/module/nvidia/version") == f"{NEW}\n"
    assert calls(sb.node(GH200)) == [("start", NEW), ("end", "0")]
