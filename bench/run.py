#!/usr/bin/env python3
"""`make bench`: site.yml (our Rust modules) against the guide's way
of doing the same work (bench/baseline/site.yml: lspci in a shell task,
set_fact, Ansible's template module), on 1 to 128 sandbox nodes, plus the
module-level figures (time and peak memory of one module run, binary sizes)
and the bytes a run sends to a node. Writes bench/results.md (between its
generated-section markers) and bench/results.svg; raw data and every
Ansible log go to bench/out/.

    .venv/bin/python bench/run.py                       # 1 4 16 32 64 128 nodes, 3 repeats
    .venv/bin/python bench/run.py --nodes "1 4" --repeats 3   # quicker: bench/out/results.md
    .venv/bin/python bench/run.py --tree before=/tmp/old --sides ours,baseline,before   # another copy

Method, in short (bench/results.md says it in full):
- one sandbox cluster per node count (tests/sandbox.py), profiles mixed as a
  cluster is: a quarter cpu, the rest h200, hgx-h100, consumer;
- each repeat runs every side twice on the same nodes: a first run on fresh
  nodes (every node reset: empty overlay, nothing cached, no SSH master), then
  a second run where nothing is left to change (same fact cache);
- sides alternate their order from one repeat to the next; both use the
  project's ansible.cfg (pipelining, ControlPersist, forks) and the same
  extra vars: no package installs on either side;
- every run starts with no SSH connection open (ControlPersist masters of the
  previous run are closed), as a user's run does minutes later;
- before each run the bench waits for the machine to be quiet (other work on
  this machine is recorded, not hidden: see "other CPU" in the report).

Python standard library only; needs root (the sandbox) and ansible-core in
.venv. The sandbox is always stopped, whatever happens.
"""
from __future__ import annotations

import argparse
import configparser
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import containerd_releases  # noqa: E402
import sandbox  # noqa: E402
import report  # noqa: E402

VENV_BIN = REPO / ".venv/bin"
ANSIBLE_CFG = REPO / "ansible.cfg"
CALLBACKS = BENCH / "callback_plugins"
# A quarter cpu nodes, the rest GPU nodes of three kinds; one node is an h200.
PROFILE_CYCLE = ["h200", "cpu", "hgx-h100", "consumer"]
# Both sides run with these: the sandbox nodes reach no package repository,
# and the baseline installs nothing, so neither side installs packages.
EXTRA_VARS = {"install_os_packages": False, "containerd_install": False}
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
PLAYBOOK_TIMEOUT = 900
DEFAULT_NODES = "1 4 16 32 64 128"
DEFAULT_REPEATS = 3
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Side:
    """One way of setting the nodes up: a playbook run from a project tree."""

    name: str
    playbook: Path
    tree: Path = REPO
    # Settings that differ from ansible.cfg (ANSIBLE_FORKS, ANSIBLE_STRATEGY).
    env: tuple = ()

    @property
    def config(self) -> Path:
        return self.tree / "ansible.cfg"


SIDES = {
    "ours": Side("ours", REPO / "site.yml"),
    "baseline": Side("baseline", BENCH / "baseline/site.yml"),
    # The levers of ansible.cfg, measured on our side (bench/results.md).
    "ours-free": Side("ours-free", REPO / "site.yml", env=(("ANSIBLE_STRATEGY", "free"),)),
    "ours-forks8": Side("ours-forks8", REPO / "site.yml", env=(("ANSIBLE_FORKS", "8"),)),
    "ours-forks128": Side("ours-forks128", REPO / "site.yml", env=(("ANSIBLE_FORKS", "128"),)),
}
# A play with no task: what a run costs before any task (start-up, plugins,
# inventory, the play's set-up, the recap) at each node count.
EMPTY_PLAY = BENCH / "empty-play.yml"
# -- the machine ----------------------------------------------------------------


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Waits until the machine's CPUs were less than `threshold` busy for half
    a second (other people's work here would be timed with ours); gives up
    after `max_wait` seconds. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        b0, t0 = cpu_busy_ticks()
        time.sleep(0.5)
        b1, t1 = cpu_busy_ticks()
        if t1 == t0 or (b1 - b0) / (t1 - t0) < threshold or time.monotonic() - started > max_wait:
            return time.monotonic() - started


def proc_cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU seconds of a process (and of its children it has reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / TICKS


def ssh_masters(control_dir: Path) -> list[int]:
    """The ControlPersist ssh masters of one run (their title names the socket)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(control_dir).encode() in cmdline and b"[mux]" in cmdline:
                pids.append(int(entry))
    return pids


def close_ssh_masters(control_dir: Path, timeout: float = 10.0) -> float:
    """Closes every SSH master of a run (`ssh -O exit`); returns their CPU seconds."""
    masters = ssh_masters(control_dir)
    cpu = sum(proc_cpu_seconds(pid) for pid in masters)
    for sock in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in masters):
        time.sleep(0.02)
    return cpu


def main_process_cpu(p: subprocess.Popen, deadline: float) -> float:
    """Waits for ansible-playbook, sampling the CPU of its own process (not its
    workers'): the strategy, the results and the callbacks run there, one
    core at most whatever the machine. The last sample is at most 20 ms old."""
    stat = Path(f"/proc/{p.pid}/stat")
    cpu = 0.0
    while p.poll() is None:
        if time.monotonic() > deadline:
            p.kill()
            p.wait()
            raise BenchError(f"ansible-playbook ran past {PLAYBOOK_TIMEOUT}s")
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime of the process itself
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    return cpu


def nodes_cpu_seconds(sb: sandbox.Sandbox, settle: float = 5.0) -> float:
    """CPU seconds the nodes' sshd (with every session it reaped) used so far.
    Waits until each node runs its listener alone: a session's time counts
    once its process is reaped."""
    deadline = time.monotonic() + settle
    for node in sb.nodes:
        while time.monotonic() < deadline and len(sandbox.processes_in_namespace(node.mnt_ns)) > 1:
            time.sleep(0.02)
    return sum(proc_cpu_seconds(node.pid) for node in sb.nodes)


def machine() -> dict:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.machine())
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), "unknown")
    cfg = configparser.ConfigParser()
    cfg.read(ANSIBLE_CFG)

    def version(cmd, pattern=r"(.*)"):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except OSError:
            return None
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1).strip() if m else None

    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    return {
        "commit": git.stdout.strip() or None,
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible_core": version([str(VENV_BIN / "ansible-playbook"), "--version"], r"core ([0-9.]+)"),
        "openssh": version(["ssh", "-V"], r"(OpenSSH_[^\s,]+)"),
        "forks": cfg.get("defaults", "forks", fallback="5 (Ansible's default)"),
        "pipelining": cfg.get("ssh_connection", "pipelining", fallback="False"),
        "ssh_args": cfg.get("ssh_connection", "ssh_args", fallback=""),
        "fact_caching": cfg.get("defaults", "fact_caching", fallback="memory"),
    }


# -- one ansible-playbook run ----------------------------------------------------


@dataclasses.dataclass
class Run:
    n: int
    repeat: int
    side: str
    kind: str  # "first" (fresh nodes) or "second" (nothing to change)
    wall: float
    controller_cpu: float  # ansible-playbook and the processes it waited for
    controller_main_cpu: float  # ansible-playbook's own process alone: the part no core count spreads
    nodes_cpu: float  # every node's sshd and what it ran
    ssh_masters_cpu: float  # the ControlPersist masters
    machine_cpu: float  # all CPUs of the machine, busy seconds
    quiet_wait: float
    changed: dict
    tasks: list
    log: str

    configs: dict = dataclasses.field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "configs"}
        return data | {"other_cpu": round(self.other_cpu, 4), "noise": round(self.noise, 4)}

    @property
    def noise(self) -> float:
        """The share of the machine's CPUs other work took during the run."""
        return self.other_cpu / (self.wall * CORES) if self.wall else 0.0

    @property
    def other_cpu(self) -> float:
        """CPU the machine spent on something else meanwhile (other people's work)."""
        return max(0.0, self.machine_cpu - self.controller_cpu - self.nodes_cpu - self.ssh_masters_cpu)


class Runner:
    """Runs playbooks against one sandbox cluster, as a user would from the
    project folder; one fact cache per (side, repeat)."""

    def __init__(self, sb: sandbox.Sandbox, out: Path, args):
        self.sb = sb
        self.out = out
        self.args = args

    def env(self, side: Side, fact_cache: Path, control_dir: Path, timer: Path, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "GPU_NODE_MODULE_TRACE"}
        env.update({
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(side.config),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(fact_cache),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.out / "ansible-tmp"),
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
            "ANSIBLE_CALLBACKS_ENABLED": "bench_timer",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "BENCH_TIMER_PATH": str(timer),
        })
        env.update(dict(side.env))
        env.update(extra or {})
        return env

    def playbook(self, side: Side, kind: str, repeat: int, fact_cache: Path,
                 inventory: Path | None = None, env_extra: dict | None = None, quiet: bool = True,
                 every_host: bool = True) -> Run:
        n = len(self.sb.nodes)
        tag = f"n{n}-r{repeat}-{side.name}-{kind}"
        log = self.out / "logs" / f"{tag}.log"
        timer = self.out / "logs" / f"{tag}.tasks.json"
        log.parent.mkdir(parents=True, exist_ok=True)
        # A short path: a control socket's path has at most 107 bytes.
        control_dir = Path(tempfile.mkdtemp(prefix="bench-cp-"))
        try:
            waited = wait_for_quiet(self.args.quiet_threshold, self.args.quiet_wait) if quiet else 0.0
            cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory or self.sb.inventory), str(side.playbook),
                   "-e", json.dumps(EXTRA_VARS)]
            env = self.env(side, fact_cache, control_dir, timer, env_extra)
            nodes0 = nodes_cpu_seconds(self.sb)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy0, _ = cpu_busy_ticks()
            started = time.monotonic()
            with open(log, "w") as f:
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                p = subprocess.Popen(cmd, cwd=side.tree, env=env, stdout=f, stderr=subprocess.STDOUT)
                main_cpu = main_process_cpu(p, started + PLAYBOOK_TIMEOUT)
            wall = time.monotonic() - started
            busy1, _ = cpu_busy_ticks()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            masters = close_ssh_masters(control_dir)
            nodes1 = nodes_cpu_seconds(self.sb)
        finally:
            close_ssh_masters(control_dir)
            shutil.rmtree(control_dir, ignore_errors=True)
        if p.returncode != 0:
            raise BenchError(f"{tag}: ansible-playbook failed (rc={p.returncode}); see {log}")
        timing = json.loads(timer.read_text())
        changed = {h: s.get("changed", 0) for h, s in timing["hosts"].items()}
        if every_host and len(changed) != n:
            raise BenchError(f"{tag}: {len(changed)} hosts in the recap, {n} expected; see {log}")
        if kind == "second" and any(changed.values()):
            raise BenchError(f"{tag}: the second run changed something ({changed}); see {log}")
        return Run(
            n=n, repeat=repeat, side=side.name, kind=kind, wall=round(wall, 4),
            controller_cpu=round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 4),
            controller_main_cpu=round(main_cpu, 4),
            nodes_cpu=round(nodes1 - nodes0, 4), ssh_masters_cpu=round(masters, 4),
            machine_cpu=round((busy1 - busy0) / TICKS, 4), quiet_wait=round(waited, 2),
            changed=changed, tasks=timing["tasks"], log=str(log),
        )


class BenchError(RuntimeError):
    pass


# -- the suite --------------------------------------------------------------------


def profiles_for(n: int) -> list[str]:
    return [PROFILE_CYCLE[i % len(PROFILE_CYCLE)] for i in range(n)]


def read_configs(sb: sandbox.Sandbox) -> dict[str, bytes | None]:
    configs = {}
    for node in sb.nodes:
        try:
            configs[node.name] = node.path(CONTAINERD_CONFIG).read_bytes()
        except FileNotFoundError:
            configs[node.name] = None
    return configs


def compare_configs(a: dict, b: dict, sb: sandbox.Sandbox) -> list[dict]:
    """Node by node: byte-identical, equivalent TOML, or different."""
    rows = []
    for node in sb.nodes:
        x, y = a.get(node.name), b.get(node.name)
        if x is not None and x == y:
            verdict = "identical"
        elif x is None or y is None:
            verdict = "missing"
        else:
            try:
                same = tomllib.loads(x.decode()) == tomllib.loads(y.decode())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError):
                same = False
            verdict = "equivalent" if same else "DIFFERENT"
        rows.append({"node": node.name, "profile": node.profile.name, "verdict": verdict,
                     "sha256": hashlib.sha256(x or b"").hexdigest()[:12],
                     "default_runtime": default_runtime(x)})
    return rows


def default_runtime(config: bytes | None) -> str | None:
    if not config:
        return None
    m = re.search(rb'default_runtime_name\s*=\s*"([^"]*)"', config)
    return m.group(1).decode() if m else None


def run_pair(sb: sandbox.Sandbox, runner: "Runner", side: Side, r: int, out: Path) -> list["Run"]:
    """A first run on fresh nodes, then a second one with nothing to change."""
    sb.reset()
    fact_cache = out / "facts" / f"n{len(sb.nodes)}-r{r}-{side.name}"
    shutil.rmtree(fact_cache, ignore_errors=True)
    first = runner.playbook(side, "first", r, fact_cache)
    first.configs = read_configs(sb)
    second = runner.playbook(side, "second", r, fact_cache)
    return [first, second]


def bench_node_count(n: int, sides: list[Side], args, out: Path, data: dict):
    """Every repeat of every side on one cluster of n nodes."""
    sb = sandbox.Sandbox(profiles_for(n), out / f"sandbox-{n}")
    data["machine"]["containerd_nodes"] = sorted(
        set(data["machine"].get("containerd_nodes", []))
        | {containerd_releases.release_version(x.containerd) for x in sb.profiles if x.containerd})
    try:
        started = time.monotonic()
        sb.up()
        print(f"== {n} node(s) up in {time.monotonic() - started:.1f}s: {', '.join(profiles_for(n))}", flush=True)
        runner = Runner(sb, out, args)
        configs = {}
        for r in range(args.repeats if n < 64 else min(args.repeats, args.large_repeats)):
            order = sides if r % 2 == 0 else list(reversed(sides))
            for side in order:
                for attempt in range(args.noise_retries + 1):
                    pair = run_pair(sb, runner, side, r, out)
                    noisy = [x for x in pair if x.noise > args.max_noise]
                    for x in pair:
                        print(f"   n={n:<2} repeat {r + 1}/{args.repeats} {side.name:9} {x.kind:6} {x.wall:6.2f}s"
                              f"  (controller {x.controller_cpu:5.2f} cpu-s, nodes {x.nodes_cpu:5.2f}, "
                              f"other {x.other_cpu:5.2f} = {x.noise:.0%} of the CPUs; waited {x.quiet_wait:.1f}s "
                              f"for quiet){' NOISY' if x.noise > args.max_noise else ''}", flush=True)
                    if not noisy or attempt == args.noise_retries:
                        break
                    data["discarded"].append([x.to_json() for x in pair])
                for x in pair:
                    data["runs"].append(x.to_json() | {"attempts": attempt + 1})
                if r == 0:
                    configs[side.name] = pair[0].configs
            # The fixed cost: a play with no task, with ours' fact cache of this repeat.
            empty = runner.playbook(Side("empty", EMPTY_PLAY), "second", r, out / "facts" / f"n{n}-r{r}-ours",
                                    every_host=False)
            print(f"   n={n:<2} repeat {r + 1}/{args.repeats} empty play {empty.wall:6.2f}s "
                  f"(controller {empty.controller_cpu:5.2f} cpu-s)", flush=True)
            data["runs"].append(empty.to_json() | {"attempts": 1})
        if "ours" in configs:
            for name, cfgs in configs.items():
                if name != "ours":
                    data["configs"].append({"n": n, "sides": ["ours", name],
                                            "nodes": compare_configs(configs["ours"], cfgs, sb)})
        if n == args.bytes_nodes:
            bench_bytes(sb, sides, out, data)
    finally:
        sb.down()


def bench_bytes(sb: sandbox.Sandbox, sides: list[Side], out: Path, data: dict):
    """Bytes each side sends to each node, first and second run: every ssh
    master logs `Transferred: sent N, received M bytes` when it closes
    (LogLevel VERBOSE, -E per node); the action plugin's trace
    (GPU_NODE_MODULE_TRACE) says what our modules' commands carried."""
    print(f"== bytes sent, {len(sb.nodes)} nodes", flush=True)
    runner = Runner(sb, out, argparse.Namespace(quiet_threshold=1.0, quiet_wait=0))
    handshake = ssh_handshake_bytes(sb, out / "bytes")
    for side in sides:
        sb.reset()
        fact_cache = out / "facts" / f"bytes-{side.name}"
        shutil.rmtree(fact_cache, ignore_errors=True)
        for kind in ("first", "second"):
            logs = out / "bytes" / f"{side.name}-{kind}"
            shutil.rmtree(logs, ignore_errors=True)
            logs.mkdir(parents=True)
            inventory = logs / "inventory.ini"
            inventory.write_text(ssh_logging_inventory(sb, logs))
            trace = logs / "module-trace.jsonl"
            run = runner.playbook(side, kind, 0, fact_cache, inventory=inventory,
                                  env_extra={"GPU_NODE_MODULE_TRACE": str(trace)}, quiet=False)
            for node in sb.nodes:
                sent, received, connections = ssh_transferred(logs / f"{node.name}.ssh.log")
                steps = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
                mine = [s for s in steps if s["host"] == node.name and s["step"] != "action"]
                data["bytes"].append({
                    "side": side.name, "kind": kind, "node": node.name, "profile": node.profile.name,
                    "ssh_sent": sent, "ssh_received": received, "ssh_connections": connections,
                    "handshake_sent": handshake["sent"], "handshake_received": handshake["received"],
                    "module_commands": len(mine),
                    "module_stdin_bytes": sum(s["stdin_bytes"] for s in mine),
                    "module_command_bytes": sum(s["command_bytes"] for s in mine),
                    "module_install_bytes": sum(s.get("binary_bytes", 0) for s in mine),
                    "wall": run.wall,
                })
            print(f"   {side.name:9} {kind:6} sent per node: "
                  + ", ".join(f"{b['profile']} {b['ssh_sent']}" for b in data["bytes"]
                              if b["side"] == side.name and b["kind"] == kind), flush=True)


def ssh_logging_inventory(sb: sandbox.Sandbox, logs: Path) -> str:
    """The sandbox inventory, each host's ssh logging to its own file."""
    lines = []
    for line in sb.inventory.read_text().splitlines():
        m = re.match(r"^(worker\d+) ", line)
        if m:
            line += f" ansible_ssh_extra_args='-o LogLevel=VERBOSE -E {logs}/{m.group(1)}.ssh.log'"
        lines.append(line)
    return "\n".join(lines) + "\n"


TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")


def ssh_transferred(log: Path) -> tuple[int, int, int]:
    """Bytes sent and received over all the connections logged in `log`."""
    try:
        found = TRANSFERRED.findall(log.read_text(errors="replace"))
    except FileNotFoundError:
        return 0, 0, 0
    return sum(int(s) for s, _ in found), sum(int(r) for _, r in found), len(found)


def ssh_handshake_bytes(sb: sandbox.Sandbox, out: Path) -> dict:
    """What one connection costs with nothing in it: `ssh node true`."""
    out.mkdir(parents=True, exist_ok=True)
    node = sb.nodes[0]
    log = out / "handshake.ssh.log"
    log.unlink(missing_ok=True)
    subprocess.run(["ssh", "-i", str(sb.private_key), "-o", f"UserKnownHostsFile={sb.known_hosts}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=VERBOSE", "-E", str(log),
                    "-p", str(node.port), "root@127.0.0.1", "true"], check=True, timeout=30)
    sent, received, _ = ssh_transferred(log)
    return {"sent": sent, "received": received}


# -- one module run on this machine ---------------------------------------------------


def ensure_tools():
    """GNU time (peak memory) and hyperfine (timing): Debian packages."""
    missing = [pkg for tool, pkg in (("/usr/bin/time", "time"), ("hyperfine", "hyperfine"))
               if not (os.access(tool, os.X_OK) if tool.startswith("/") else shutil.which(tool))]
    if missing:
        print(f"== apt-get install {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


# Runs a command in a mount namespace of its own where containerd is not
# installed (/dev/null over its binary): the module then finds none, runs no
# `containerd --version` and validates nothing: its own work alone.
WITHOUT_CONTAINERD = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                      'mount --bind /dev/null "$0" && exec "$@"']


def hyperfine(name: str, cmd: list[str], out: Path, runs: int, prepare: list[str] | None = None,
              wrap: list[str] | None = None) -> dict:
    export = out / f"{name}.hyperfine.json"
    argv = ["hyperfine", "-N", "--style", "none", "--warmup", "20", "--runs", str(runs),
            "--export-json", str(export)]
    if prepare:
        argv += ["--prepare", shlex.join(prepare)]
    subprocess.run((wrap or []) + argv + [shlex.join(cmd)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    result = json.loads(export.read_text())["results"][0]
    return {"median_ms": result["median"] * 1e3, "mean_ms": result["mean"] * 1e3, "min_ms": result["min"] * 1e3,
            "max_ms": result["max"] * 1e3, "user_ms": result["user"] * 1e3, "system_ms": result["system"] * 1e3,
            "runs": len(result["times"])}


def peak_rss_kib(cmd: list[str], times: int = 15, prepare: list[str] | None = None,
                 wrap: list[str] | None = None) -> int:
    """GNU time's %M (maximum resident set size, KiB: of the process or of the
    largest child it waited for), the median of `times` runs."""
    values = []
    for _ in range(times):
        if prepare:
            subprocess.run(prepare, check=True)
        p = subprocess.run((wrap or []) + ["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True,
                           check=True)
        values.append(int(p.stderr.strip().splitlines()[-1]))
    return int(statistics.median(values))


def bench_modules(out: Path, runs: int, data: dict):
    """One run of each module on this machine, as root: nvidia_gpu_facts on the
    real H200 capture; containerd_runtime_config with the role's arguments,
    rendering the GPU template into a temporary file, written (first run) and
    with nothing to change (second run), with containerd installed (what the
    role gets: `containerd --version` every run, `containerd config dump` on
    a change) and without (the module's own work)."""
    print("== module runs on this machine", flush=True)
    work = out / "modules"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dist = REPO / "dist/x86_64"
    facts_args = work / "nvidia_gpu_facts.args.json"
    facts_args.write_text(json.dumps({"root": str(REPO / "tests/fixtures/h200-vm")}))
    runtime = work / "nvidia-container-runtime"
    runtime.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    runtime.chmod(0o755)
    template = (REPO / "roles/install_containerd/templates/containerd_nvidia.j2").read_text()
    config = work / "config.toml"
    # What the role sends (roles/install_containerd/tasks/main.yml, its defaults).
    crc_options = {
        "path": str(config), "mode": "template", "config_version": "auto", "nvidia_runtime": True,
        "set_as_default": True, "runtime_name": "nvidia", "runtime_path": str(runtime), "systemd_cgroup": True,
        "require_runtime_binary": True, "backup": True, "drop_in_path": "/etc/containerd/conf.d/99-nvidia.toml",
        "template": template,
        "template_vars": {"sandbox_image": "registry.k8s.io/pause:3.10", "registry_config_path": "/etc/containerd/certs.d"},
    }
    crc_args = work / "containerd_runtime_config.args.json"
    crc_args.write_text(json.dumps(crc_options))
    # With no containerd to ask, the version must be given (containerd_config_version: 2).
    crc_v2_args = work / "containerd_runtime_config.v2.args.json"
    crc_v2_args.write_text(json.dumps(crc_options | {"config_version": "2"}))
    facts_cmd = [str(dist / "nvidia_gpu_facts"), str(facts_args)]
    crc_cmd = [str(dist / "containerd_runtime_config"), str(crc_args)]
    crc_v2_cmd = [str(dist / "containerd_runtime_config"), str(crc_v2_args)]
    fresh = ["/bin/sh", "-c", f"rm -f {config} {config}.*"]
    containerd = shutil.which("containerd")
    hide = WITHOUT_CONTAINERD + [os.path.realpath(containerd)] if containerd else None
    cases = [
        ("nvidia_gpu_facts", "nvidia_gpu_facts, h200-vm capture", facts_cmd, None, None),
        ("crc-written-no-containerd", "containerd_runtime_config, GPU template, file written, no containerd on the node",
         crc_v2_cmd, fresh, hide),
        ("crc-unchanged-no-containerd", "containerd_runtime_config, GPU template, nothing to change, no containerd",
         crc_v2_cmd, None, hide),
    ]
    if containerd:
        cases += [
            ("crc-written", "containerd_runtime_config, GPU template, file written + `containerd config dump` (first run)",
             crc_cmd, fresh, None),
            ("crc-unchanged", "containerd_runtime_config, GPU template, nothing to change (second run)",
             crc_cmd, None, None),
            ("containerd--version", "`containerd --version` alone (the module runs it only to write)",
             [containerd, "--version"], None, None),
        ]
    results = []
    for name, label, cmd, prepare, wrap in cases:
        subprocess.run(fresh, check=True)
        if prepare is None and cmd[0].endswith("containerd_runtime_config"):  # "nothing to change": file there
            subprocess.run((wrap or []) + cmd, check=True, stdout=subprocess.DEVNULL)
        outcome = json.loads(subprocess.run((wrap or []) + cmd, capture_output=True, text=True).stdout or "{}") \
            if cmd[0].endswith("containerd_runtime_config") else {}
        if outcome.get("failed"):
            raise BenchError(f"{label}: {outcome.get('msg')}")
        timing = hyperfine(name, cmd, work, runs if prepare is None else max(50, runs // 5), prepare, wrap)
        rss = peak_rss_kib(cmd, prepare=prepare, wrap=wrap)
        results.append({"name": name, "label": label, **timing, "peak_rss_kib": rss})
        print(f"   {label}: median {timing['median_ms']:.2f} ms, peak RSS {rss} KiB", flush=True)
    data["modules"] = results
    data["binaries"] = [{"path": str(p.relative_to(REPO)), "bytes": p.stat().st_size}
                        for p in sorted((REPO / "dist").glob("*/*")) if p.is_file()]


# -- entry point ----------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default=DEFAULT_NODES, help="node counts, space or comma separated")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs of each side per node count")
    parser.add_argument("--sides", default="ours,baseline",
                        help=f"known: {', '.join(SIDES)}, and the names given with --tree")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="one more side: site.yml (playbooks/site.yml before it moved) of another copy of the project (another commit, "
                             "a change being tried), named NAME in --sides; repeatable")
    parser.add_argument("--env", action="append", default=[], metavar="SIDE:NAME=VALUE",
                        help="an environment variable for one side's runs (ANSIBLE_STRATEGY=free, a PYTHONPATH); "
                             "repeatable")
    parser.add_argument("--large-repeats", type=int, default=2,
                        help="runs of each side at 64 nodes and more (a run at 128 nodes takes a minute)")
    parser.add_argument("--out", default=str(BENCH / "out"), help="raw data and Ansible logs")
    parser.add_argument("--results", default=None,
                        help="the report whose generated section is rewritten (default: bench/results.md for a "
                             "full run, bench/out/results.md for a quicker one)")
    parser.add_argument("--svg", default=None, help="the plot (default: results.svg next to --results)")
    parser.add_argument("--module-runs", type=int, default=500, help="runs of each module for its median")
    parser.add_argument("--bytes-nodes", type=int, default=4,
                        help="node count whose cluster also measures bytes sent (0: none)")
    parser.add_argument("--quiet-threshold", type=float, default=0.15,
                        help="CPU busy fraction under which the machine counts as quiet")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="seconds to wait at most for a quiet machine before each run")
    parser.add_argument("--max-noise", type=float, default=0.10,
                        help="a run during which other work took more than this share of the CPUs is noisy")
    parser.add_argument("--noise-retries", type=int, default=3,
                        help="times a noisy pair of runs is run again (then it is kept, and the report says so)")
    parser.add_argument("--skip-modules", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(x) for x in re.split(r"[\s,]+", args.nodes.strip()) if x]
    side_names = args.sides.split(",")
    trees = {}
    for spec in args.tree:
        name, _, tree = spec.partition("=")
        root = Path(tree).resolve()
        playbook = root / "site.yml" if (root / "site.yml").exists() else root / "playbooks/site.yml"
        trees[name] = Side(name, playbook, root)
    unknown = [s for s in side_names if s not in SIDES and s not in trees]
    if unknown:
        print(f"bench: unknown side(s) {', '.join(unknown)}; known: {', '.join([*SIDES, *trees])}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("bench: the sandbox needs root", file=sys.stderr)
        return 1
    missing = [m for m in ("nvidia_gpu_facts", "containerd_runtime_config") if not (REPO / "dist/x86_64" / m).exists()]
    if missing:
        print(f"bench: dist/x86_64/{missing[0]} missing: run `make build`", file=sys.stderr)
        return 1
    # `make` or a terminal stopped us: leave through the finally clauses.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    full = counts == [int(x) for x in DEFAULT_NODES.split()] and args.repeats >= DEFAULT_REPEATS
    results = Path(args.results or (BENCH / "results.md" if full else out / "results.md")).resolve()
    svg = Path(args.svg).resolve() if args.svg else results.with_suffix(".svg")
    data = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "knobs": {"nodes": counts, "repeats": args.repeats, "sides": side_names,
                  "profiles": PROFILE_CYCLE, "extra_vars": EXTRA_VARS},
        "runs": [], "discarded": [], "configs": [], "bytes": [], "modules": [], "binaries": [],
    }
    try:
        sides = [trees.get(s) or SIDES[s] for s in side_names]
        for spec in args.env:
            name, _, pair = spec.partition(":")
            key, _, value = pair.partition("=")
            sides = [dataclasses.replace(x, env=x.env + ((key, value),)) if x.name == name else x for x in sides]
        ensure_tools()
        if not args.skip_modules:
            bench_modules(out, args.module_runs, data)
        for n in counts:
            bench_node_count(n, sides, args, out, data)
    except (BenchError, sandbox.SandboxError, subprocess.CalledProcessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        data["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    report.write(data, results, svg)
    print(f"== {results.relative_to(REPO) if results.is_relative_to(REPO) else results}, "
          f"{svg.name}; raw data: {out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
