"""Runs ansible-playbook and ansible from the project folder, as a user
would, against a sandbox inventory; isolated from the user's and from other
runs: its own fact cache, SSH control sockets and local temp folder. Every
task result is recorded as JSON by callback_plugins/record_results.py.

The controller is .venv's ansible-core (the newest tested release) unless
another is given: `controller_releases()` lists every tested release and the
venv `make venvs` made for it (tests/ansible-core-releases.txt)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv/bin"
RELEASES_FILE = REPO / "tests/ansible-core-releases.txt"
VENVS = REPO / ".venvs"
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"
PLAYBOOK_TIMEOUT = 600

# The task names the e2e tests look results up by, in one place: a task
# renamed in a role is renamed here, not in every test that reads it.
DETECT_TASK = "install_os_package : Detect the node's NVIDIA GPUs, decide whether it is a GPU node, check its OS"
CHECK_VARIABLES_TASK = ("install_os_package : Validating arguments against the argument specs of site.yml's roles, "
                        "for every node at once")
PLAN_TASK = "install_os_package : Group the nodes by the steps of site.yml they need"
DRIVER_TASK_INCLUDE = "install_os_package : Install the NVIDIA driver on a GPU node"
DISPLAY_TASK = "install_containerd : Display containerd configuration mode"
CONFIG_TASK = "install_containerd : Write containerd's configuration"
CDI_TASK = "install_containerd : Write the CDI spec of the node's GPUs"


@dataclasses.dataclass(frozen=True)
class Controller:
    """One tested ansible-core release and the venv `make venvs` made for it."""

    version: str  # "2.15.13"

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def bin_dir(self) -> Path:
        return VENVS / f"ansible-core-{self.series}" / "bin"

    def installed(self) -> bool:
        """Its venv exists and holds exactly this version (`make venvs` leaves a marker)."""
        return (self.bin_dir.parent / f".ansible-core-{self.version}").exists() and (self.bin_dir / "ansible").exists()


def tested_releases() -> list[Controller]:
    """Every tested ansible-core release, oldest first, as the file lists them."""
    return [Controller(line.strip()) for line in RELEASES_FILE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def newest_release() -> Controller:
    """The newest tested release: the one .venv has and the whole suite runs on."""
    return tested_releases()[-1]


def controller_releases() -> list[Controller]:
    """The tested ansible-core releases to run on, oldest first:
    every one, or with ANSIBLE_CORE_SERIES=2.15,2.17 only those series."""
    releases = tested_releases()
    wanted = os.environ.get("ANSIBLE_CORE_SERIES")
    if wanted:
        series = {s.strip() for s in wanted.split(",") if s.strip()}
        unknown = series - {r.series for r in releases}
        if unknown:
            raise ValueError(f"ANSIBLE_CORE_SERIES names untested series {sorted(unknown)}; "
                             f"tested: {[r.series for r in releases]} ({RELEASES_FILE})")
        releases = [r for r in releases if r.series in series]
    return releases


@dataclasses.dataclass
class Run:
    cmd: list[str]
    rc: int
    stdout: str
    stderr: str
    results: list[dict]
    stats: dict[str, dict]

    @property
    def output(self) -> str:
        return f"$ {' '.join(self.cmd)}\n--- rc={self.rc}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"

    def expect_ok(self) -> "Run":
        assert self.rc == 0, self.output
        return self

    def expect_failed(self) -> "Run":
        assert self.rc != 0, self.output
        return self

    def host_results(self, host: str) -> list[dict]:
        return [r for r in self.results if r["host"] == host]

    def result(self, host: str, task: str) -> dict:
        """The last result on `host` of the task named `task`, with or without
        its "role : " prefix; else of the one task whose name contains it."""
        results = self.host_results(host)
        found = [r for r in results if r["task"] == task or r["task"].endswith(f" : {task}")]
        if not found:
            found = [r for r in results if task in r["task"]]
            names = sorted({r["task"] for r in found})
            assert len(names) <= 1, f"{task!r} names several tasks on {host}: {names}"
        assert found, f"no result of a task named like {task!r} on {host}\n{self.output}"
        return found[-1]

    def ran(self, host: str, task: str) -> bool:
        """Whether the task named `task` (with or without its "role : "
        prefix) ran on `host`: skipped, or not reached at all (site.yml runs a
        step only on the nodes that need it), is False."""
        return any(r["status"] != "skipped" for r in self.host_results(host)
                   if r["task"] == task or r["task"].endswith(f" : {task}"))

    def changed_tasks(self, host: str) -> list[str]:
        return [r["task"] for r in self.host_results(host) if r["changed"]]


class Ansible:
    """One user's Ansible on the controller: runs keep their fact cache
    (like the project's ./.facts_cache) until close()."""

    def __init__(self, inventory: Path, workdir: Path, bin_dir: Path = VENV_BIN, project: Path = REPO):
        self.inventory = Path(inventory)
        # Where ansible and ansible-playbook are: .venv's, or a Controller's bin_dir.
        self.bin_dir = Path(bin_dir)
        # The folder commands run in, with its ansible.cfg: the project, or a
        # user's copy of its layout (tests/e2e/test_guide_layout.py).
        self.project = Path(project)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fact_cache = self.workdir / "facts"
        # ssh's control sockets: a short path (a socket path has at most 107 bytes).
        self.control_dir = Path(tempfile.mkdtemp(prefix="gs-cp-"))
        self.runs = 0

    def close(self):
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update({
            "PATH": f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(self.project / "ansible.cfg"),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.fact_cache),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
            "ANSIBLE_CALLBACKS_ENABLED": "record_results",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        })
        env.update(extra or {})
        return env

    def _run(self, cmd: list[str], env: dict | None) -> Run:
        self.runs += 1
        record = self.workdir / f"run{self.runs}.json"
        env = self.env(env)
        env["RECORD_RESULTS_PATH"] = str(record)
        p = subprocess.run(cmd, cwd=self.project, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT)
        data = json.loads(record.read_text()) if record.exists() else {"results": [], "stats": {}}
        (self.workdir / f"run{self.runs}.log").write_text(f"$ {' '.join(cmd)}\n{p.stdout}\n--- stderr\n{p.stderr}")
        return Run(cmd, p.returncode, p.stdout, p.stderr, data["results"], data["stats"])

    def shell(self, command: str, env: dict | None = None) -> Run:
        """A command line as a user types it, in the project folder (the
        venv's ansible-playbook and ansible first on PATH)."""
        return self._run(["/bin/sh", "-c", command], env)

    def playbook(self, playbook, *args: str, inventory: Path | None = None, env: dict | None = None) -> Run:
        cmd = [str(self.bin_dir / "ansible-playbook"), "-i", str(inventory or self.inventory), str(playbook), *args]
        return self._run(cmd, env)

    def adhoc(self, pattern: str, module: str, module_args: str | None = None, *args: str,
              inventory: Path | None = None, env: dict | None = None) -> Run:
        cmd = [str(self.bin_dir / "ansible"), "-i", str(inventory or self.inventory), pattern, "-m", module]
        if module_args is not None:
            cmd += ["-a", module_args]
        return self._run(cmd + list(args), env)

    def cached_facts(self, host: str) -> dict:
        """What the jsonfile fact cache holds for `host` (ansible-core 2.19
        writes s1_<host> holding {"__payload__": "<json>"}; older ones <host>)."""
        for path in sorted(self.fact_cache.glob(f"*{host}")):
            if re.fullmatch(rf"(s\d+_)?{re.escape(host)}", path.name):
                data = json.loads(path.read_text())
                return untag(json.loads(data["__payload__"]) if "__payload__" in data else data)
        raise AssertionError(f"no cached facts for {host} in {self.fact_cache}: {os.listdir(self.fact_cache)}")


def untag(value):
    """The plain value of ansible-core 2.19's serialized tagged values
    ({"__ansible_type": "_AnsibleTaggedStr", "tags": [...], "value": "..."})."""
    if isinstance(value, dict):
        if "__ansible_type" in value and "value" in value:
            return untag(value["value"])
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value
