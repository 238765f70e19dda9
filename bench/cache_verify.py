#!/usr/bin/env python3
"""What checking the cached module binary on every run costs (issue 14).

One sandbox node (cpu profile), one playbook of TASKS nvidia_gpu_facts tasks
(one ansible-playbook process, one SSH master), run with this tree's action
plugin and with the plugin of another revision (default: the last commit
before the check, c1b8f77); the plugin's trace (GPU_NODE_MODULE_TRACE) gives
each task's SSH command time ("run" step: uname, the cache checks, the hash,
the module) and the plugin's whole time per task ("action"). The first task
of each side sends the binary and is left out. Sides alternate, REPEATS times.

    .venv/bin/python bench/cache_verify.py [--before REV] [--tasks 30] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests/e2e"))

import sandbox  # noqa: E402
from ansible_run import Ansible  # noqa: E402


def plugin_tree(rev: str, into: Path) -> Path:
    """plugins/action of `rev`, with dist/ linked, so that it finds the builds."""
    action = into / "plugins/action"
    action.mkdir(parents=True)
    text = subprocess.run(["git", "show", f"{rev}:plugins/action/binary_module.py"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    (action / "binary_module.py").write_text(text)
    for module in ("nvidia_gpu_facts", "nvidia_driver_install", "containerd_runtime_config"):
        (action / f"{module}.py").symlink_to("binary_module.py")
    (into / "dist").symlink_to(REPO / "dist")
    return action


def run_side(user: Ansible, play: Path, action_dir: Path, trace: Path) -> dict[str, list[float]]:
    trace.unlink(missing_ok=True)
    run = user.playbook(play, env={"ANSIBLE_ACTION_PLUGINS": str(action_dir), "GPU_NODE_MODULE_TRACE": str(trace)})
    run.expect_ok()
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    steps: dict[str, list[float]] = {}
    for line in lines:
        steps.setdefault(line["step"], []).append(line["seconds"])
    # The first task sends the binary: only cached runs are compared.
    steps["run"] = steps["run"][1:]
    steps["action"] = steps["action"][1:]
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="c1b8f77")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cache-verify-"))
    sides = {"before": plugin_tree(opts.before, work / "before"), "now": REPO / "plugins/action"}
    play = work / "play.yml"
    tasks = "".join(f"    - name: detect {i}\n      nvidia_gpu_facts:\n" for i in range(opts.tasks))
    play.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}")
    results = {side: {"run": [], "action": []} for side in sides}
    with sandbox.Sandbox(["cpu"]) as sb:
        for repeat in range(opts.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for side in order:
                sb.reset()  # an empty cache: each side sends its binary once
                user = Ansible(sb.inventory, work / f"{side}-{repeat}")
                try:
                    steps = run_side(user, play, sides[side], work / "trace.jsonl")
                finally:
                    user.close()
                for step in ("run", "action"):
                    results[side][step] += steps[step]
    print(f"{opts.tasks - 1} cached tasks x {opts.repeats} repeats per side, one sandbox node (cpu)")
    for step in ("run", "action"):
        b, n = (statistics.median(results[s][step]) * 1000 for s in ("before", "now"))
        print(f"  {step:6} median ms: before {b:.1f}, now {n:.1f}, added {n - b:+.1f}")
    cost = subprocess.run(["sh", "-c", f"time -p sha256sum {REPO}/dist/x86_64/nvidia_gpu_facts"],
                          capture_output=True, text=True)
    print("  sha256sum of the binary on this machine:", cost.stderr.strip().replace("\n", ", "))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root (the sandbox)")
    main()
