"""The collection, installed as Ansible users install one (issue 17).

`make collection`'s tarball is installed with `ansible-galaxy collection
install` into a fresh HOME, by a clean virtualenv that holds ansible-core and
nothing else, with no Rust toolchain on PATH, from a folder outside the clone
with no ansible.cfg anywhere. A playbook written only with FQCNs (the
collection's roles and modules) then sets up sandbox nodes: detection,
containerd, --check --diff, ad hoc `ansible -m gpunode.k8s_gpu.nvidia_gpu_facts`.
The binaries that run on the nodes are the ones the tarball's FILES.json lists.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import tomllib
from pathlib import Path

import pytest

from ansible_run import REPO, Controller, newest_release
from ansible_run import tested_releases as releases_in_range  # a name pytest does not collect

FQCN = "gpunode.k8s_gpu"
PROFILES = ["cpu", "h200", "gh200"]
# Sandbox node -> (GPU node?, `uname -m` of the node)
NODES = {"worker1": (False, "x86_64"), "worker2": (True, "x86_64"), "worker3": (True, "aarch64")}
CONFIG = "/etc/containerd/config.toml"
FACTS_FILE = "/etc/ansible/facts.d/gpu.fact"
TIMEOUT = 600
# What Ansible itself leaves on a node with its default settings (no
# pipelining, the ssh plugin's pty): its remote temp folder, empty once a task
# ends, and sshd's login records of those pty sessions. Nothing of ours.
ANSIBLES_OWN = {"/root/.ansible", "/root/.ansible/tmp", "/var/log", "/var/log/lastlog", "/var/log/wtmp"}

# What a user writes: the collection's roles and modules, by FQCN only.
USER_PLAYBOOK = f"""\
---
- name: Set up the GPU nodes
  hosts: all
  gather_facts: false
  roles:
    - role: {FQCN}.install_os_package
    - role: {FQCN}.install_containerd

- name: Report what each node is
  hosts: all
  gather_facts: false
  tasks:
    - name: Detect the node's NVIDIA GPUs again
      {FQCN}.nvidia_gpu_facts:
      register: gpu_node_detection

    - name: Show the node's GPUs and the build of the module that ran
      ansible.builtin.debug:
        msg: >-
          {{{{ gpu_node_detection.ansible_facts.nvidia_gpu_count }}}} GPU(s),
          module build {{{{ gpu_node_detection.module_binary.architecture }}}}
"""


def makefile_list(name: str) -> list[str]:
    """A space-separated list the Makefile defines (MODULES, ARCHES)."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "print"],
                         input=f"print:\n\t@echo $({name})\n", cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def cargo_version() -> str:
    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


@pytest.fixture(scope="session")
def tarball(tmp_path_factory) -> Path:
    """`make collection`, into a folder of this test run."""
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(["make", "-s", "--no-print-directory", "collection", f"COLLECTION_OUT={out}"],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=TIMEOUT)
    [path] = out.glob("*.tar.gz")
    return path


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


class User:
    """An Ansible user who installed the collection: a clean venv's commands,
    their own HOME, a working folder outside the clone and no ansible.cfg."""

    def __init__(self, venv_bin: Path, inventory: Path):
        # A short path: ssh's control sockets live under HOME (at most 107 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="gc-"))
        self.home = self.root / "home"
        self.work = self.root / "work"
        self.home.mkdir()
        self.work.mkdir()
        self.venv_bin = venv_bin
        self.inventory = inventory
        self.log = []

    def env(self) -> dict:
        # Nothing of the caller's: no ANSIBLE_* setting at all, no ~/.cargo/bin, no .venv.
        return {"PATH": f"{self.venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(list(cmd), cwd=self.work, env=self.env(), capture_output=True, text=True, timeout=TIMEOUT)
        self.log.append(f"$ {' '.join(cmd)}\n--- rc={p.returncode}\n{p.stdout}\n--- stderr\n{p.stderr}")
        if check:
            assert p.returncode == 0, self.log[-1]
        return p

    def playbook(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("ansible-playbook", "-i", str(self.inventory), "site.yml", *args, check=check)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def install(release: Controller, tarball: Path, inventory: Path) -> User:
    """A new user of `release` who installs the tarball, as README says, into ~/.ansible."""
    user = User(release.bin_dir, inventory)
    local = shutil.copy(tarball, user.work)
    user.run("ansible-galaxy", "collection", "install", Path(local).name)
    (user.work / "site.yml").write_text(USER_PLAYBOOK)
    return user


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP's counters per host."""
    found = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
    return found


def adhoc_results(stdout: str) -> dict[str, dict]:
    """`host | SUCCESS => {json}` blocks of an ad hoc run, by host."""
    decoder = json.JSONDecoder()
    found = {}
    for m in re.finditer(r"^(\S+) \| (SUCCESS|CHANGED|FAILED!) => ", stdout, re.M):
        found[m.group(1)], _ = decoder.raw_decode(stdout, m.end())
    return found


def containerd_default_runtime(sb, host) -> str:
    """The default runtime, as the node's own containerd (the sandbox's real
    1.6 release; this machine has none) reads the node's config."""
    out = sb.node(host).sh(f"cd / && containerd --config {CONFIG} config dump", timeout=60)
    assert out.returncode == 0, f"containerd rejects {host}'s config:\n{out.stderr}"
    return tomllib.loads(out.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"]


def files_json(tarball: Path) -> dict[str, str]:
    """The sha256 FILES.json lists for each file of the tarball."""
    with tarfile.open(tarball) as tar:
        data = json.load(tar.extractfile("FILES.json"))
    return {f["name"]: f["chksum_sha256"] for f in data["files"] if f["ftype"] == "file"}


# ---------------------------------------------------------------------------
# The newest release: everything.

@pytest.fixture(scope="module")
def user(sb, tarball):
    """A user of the newest tested ansible-core, in its clean venv (`make venvs`)."""
    release = newest_release()
    if not release.installed():
        pytest.fail(f"no venv of ansible-core {release.version} in {release.bin_dir.parent}: run `make venvs`")
    u = install(release, tarball, sb.inventory)
    yield u
    u.close()


def test_the_controller_has_no_rust_no_clone_and_no_ansible_cfg(user):
    assert shutil.which("cargo", path=user.env()["PATH"]) is None
    assert shutil.which("rustc", path=user.env()["PATH"]) is None
    version = user.run("ansible", "--version").stdout
    assert re.search(r"config file = None", version), version
    # Every setting is Ansible's default: nothing points it at the clone.
    changed = user.run("ansible-config", "dump", "--only-changed").stdout
    assert str(REPO) not in changed and "ANSIBLE_" not in changed, changed
    listing = user.run("ansible-galaxy", "collection", "list", FQCN).stdout
    assert f"{FQCN} {cargo_version()}" in re.sub(r"\s+", " ", listing), listing
    assert str(user.home / ".ansible/collections/ansible_collections") in listing
    assert not str(REPO) in listing


def test_tarball_holds_every_module_for_every_arch_and_one_version(tarball):
    modules, arches = makefile_list("MODULES"), makefile_list("ARCHES")
    assert tarball.name == f"gpunode-k8s_gpu-{cargo_version()}.tar.gz"
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        runtime = tar.extractfile("meta/runtime.yml").read().decode()
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("gpunode", "k8s_gpu", cargo_version())
    # requires_ansible starts where the tested range starts.
    oldest = releases_in_range()[0]
    assert f'requires_ansible: ">={oldest.series}.0"' in runtime, runtime
    sums = files_json(tarball)
    for module in modules:
        for arch in arches:
            built = hashlib.sha256((REPO / "dist" / arch / module).read_bytes()).hexdigest()
            assert sums[f"dist/{arch}/{module}"] == built, f"dist/{arch}/{module}"
        assert f"plugins/modules/{module}.yml" in sums
        assert links[f"plugins/action/{module}.py"] == "binary_module.py"
    for role in ("install_os_package", "install_containerd", "gpu_node_mode", "verify_gpu_node", "kubernetes_gpu"):
        assert f"roles/{role}/tasks/main.yml" in sums
    assert "playbooks/site.yml" in sums


def test_requirements_file_installs_from_an_artifact_store(sb, tarball):
    """README's requirements.yml: the tarball by URL from a site's own HTTP
    artifact store (a thread of this test), and as a file on the controller."""
    store = Path(tempfile.mkdtemp(prefix="gc-store-"))
    shutil.copy(tarball, store)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(store))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{tarball.name}"
    try:
        for source in (f"name: {url}\n    type: url", f"name: {store / tarball.name}\n    type: file"):
            u = User(newest_release().bin_dir, sb.inventory)
            try:
                (u.work / "requirements.yml").write_text(f"---\ncollections:\n  - {source}\n")
                u.run("ansible-galaxy", "collection", "install", "-r", "requirements.yml")
                listing = re.sub(r"\s+", " ", u.run("ansible-galaxy", "collection", "list", FQCN).stdout)
                assert f"{FQCN} {cargo_version()}" in listing, u.log[-1]
            finally:
                u.close()
    finally:
        server.shutdown()
        shutil.rmtree(store, ignore_errors=True)


def test_installed_files_verify_against_the_manifest(user):
    out = user.run("ansible-galaxy", "collection", "verify", "--offline", FQCN)
    assert "Successfully verified" in out.stdout + out.stderr, user.log[-1]


@pytest.mark.parametrize("module", makefile_list("MODULES"))
def test_ansible_doc_shows_each_module(user, module):
    doc = json.loads(user.run("ansible-doc", "--json", "-t", "module", f"{FQCN}.{module}").stdout)
    options = doc[f"{FQCN}.{module}"]["doc"]["options"]
    text = (REPO / "library" / f"{module}.yml").read_text()
    for name in options:
        assert re.search(rf"^    {re.escape(name)}:$", text, re.M), f"{module}: {name} is not in library/{module}.yml"
    assert options and doc[f"{FQCN}.{module}"]["examples"].strip()


def test_fqcn_playbook_sets_up_the_nodes(sb, user):
    sb.reset()
    first = user.playbook()
    for host, (gpu, arch) in NODES.items():
        assert containerd_default_runtime(sb, host) == ("nvidia" if gpu else "runc"), host
        facts = json.loads(sb.node(host).path(FACTS_FILE).read_text())
        assert facts["nvidia_gpu_present"] is gpu, host
        # The FQCN module task of the playbook: the build for the node's architecture ran.
        shown = re.search(rf'ok: \[{host}\] => {{\s*"msg": "(\d+) GPU\(s\), module build {arch}"', first.stdout)
        assert shown and (int(shown.group(1)) > 0) is gpu, f"{host}\n{first.stdout}"
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in recap(first.stdout).values())
    again = user.playbook()
    assert {h: c["changed"] for h, c in recap(again.stdout).items()} == {h: 0 for h in NODES}, again.stdout
    # The collection's own playbook (playbooks/site.yml: the root site.yml)
    # runs by name and agrees: nothing left to change.
    own = user.run("ansible-playbook", "-i", str(user.inventory), f"{FQCN}.site")
    assert {h: c["changed"] for h, c in recap(own.stdout).items()} == {h: 0 for h in NODES}, own.stdout


def test_check_diff_shows_the_changes_and_writes_nothing(sb, user):
    sb.reset()
    before = {n.name: n.upper_hash() for n in sb.nodes}
    run = user.playbook("--check", "--diff")
    for node in sb.nodes:
        after = node.upper_hash()
        changed = {p for p in set(after) | set(before[node.name]) if after.get(p) != before[node.name].get(p)}
        assert changed <= ANSIBLES_OWN, f"{node.name} changed in check mode: {sorted(changed - ANSIBLES_OWN)}"
        assert not any(node.path("/root/.ansible/tmp").iterdir()) if node.path("/root/.ansible/tmp").exists() else True
    assert f"+++ after: {FACTS_FILE}" in run.stdout
    assert f"+++ after: {CONFIG}" in run.stdout
    assert 'default_runtime_name = "nvidia"' in run.stdout


def test_adhoc_fqcn_module_runs_the_tarballs_binaries(sb, user, tarball):
    out = user.run("ansible", "-i", str(user.inventory), "all", "-m", f"{FQCN}.nvidia_gpu_facts")
    results = adhoc_results(out.stdout)
    assert sorted(results) == sorted(NODES), out.stdout
    sums = files_json(tarball)
    for host, (gpu, arch) in NODES.items():
        result = results[host]
        assert result["ansible_facts"]["nvidia_gpu_present"] is gpu, host
        binary = result["module_binary"]
        assert binary["architecture"] == arch, host
        # The action plugin's sha256 of what it sent is the tarball's, and so
        # is the file cached on the node that ran.
        assert binary["sha256"] == sums[f"dist/{arch}/nvidia_gpu_facts"], host
        cached = sb.node(host).path(f"/root/.ansible/gpu-node-modules/nvidia_gpu_facts-{binary['sha256'][:16]}")
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == binary["sha256"], host


def test_ansible_lint_production_passes_on_a_playbook_using_the_collection(user):
    # The user's playbooks are a git repository, as ansible-lint expects of a
    # project: it lints what is in it, and the installed collection is not.
    subprocess.run(["git", "init", "-q", str(user.work)], check=True)
    lint = REPO / ".venv/bin/ansible-lint"
    env = user.env() | {"PATH": f"{lint.parent}:/usr/bin:/bin",
                        "ANSIBLE_COLLECTIONS_PATH": str(user.home / ".ansible/collections")}
    p = subprocess.run([str(lint), "--offline", "--profile", "production", "--nocolor", "site.yml"],
                       cwd=user.work, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"


# ---------------------------------------------------------------------------
# The older releases of the supported range: install, the playbook, ad hoc.

def test_older_release_installs_the_collection_and_sets_up_the_nodes(sb, tarball, older_ansible_release):
    u = install(older_ansible_release, tarball, sb.inventory)
    try:
        assert f"[core {older_ansible_release.version}]" in u.run("ansible", "--version").stdout
        sb.reset()
        run = u.playbook()
        for host, (gpu, _) in NODES.items():
            assert containerd_default_runtime(sb, host) == ("nvidia" if gpu else "runc"), f"{host}\n{run.stdout}"
        adhoc = adhoc_results(u.run("ansible", "-i", str(u.inventory), "all", "-m", f"{FQCN}.nvidia_gpu_facts").stdout)
        sums = files_json(tarball)
        for host, (gpu, arch) in NODES.items():
            assert adhoc[host]["ansible_facts"]["nvidia_gpu_present"] is gpu, host
            assert adhoc[host]["module_binary"]["sha256"] == sums[f"dist/{arch}/nvidia_gpu_facts"], host
    finally:
        u.close()


def test_a_damaged_install_says_what_to_do(sb, tarball):
    """A binary missing from an installed collection: the task fails naming
    the fix, and `collection verify` names the file."""
    u = install(newest_release(), tarball, sb.inventory)
    try:
        installed = u.home / ".ansible/collections/ansible_collections/gpunode/k8s_gpu"
        for arch in ("x86_64", "aarch64"):
            (installed / "dist" / arch / "nvidia_gpu_facts").unlink()
        run = u.run("ansible", "-i", str(u.inventory), "worker1", "-m", f"{FQCN}.nvidia_gpu_facts", check=False)
        result = adhoc_results(run.stdout)["worker1"]
        assert result["msg"] == (f"no build of the nvidia_gpu_facts module in {installed / 'dist'}: this installed "
                                 "collection is incomplete; install its tarball again (ansible-galaxy collection install --force)")
        verify = u.run("ansible-galaxy", "collection", "verify", "--offline", FQCN, check=False)
        assert verify.returncode != 0 and "dist/x86_64/nvidia_gpu_facts" in verify.stdout + verify.stderr, u.log[-1]
    finally:
        u.close()
