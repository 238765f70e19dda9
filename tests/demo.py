#!/usr/bin/env python3
"""`make demo`: a 3-node sandbox cluster (cpu, h200, hgx-h100), site.yml run
on it over SSH, then one line per node: what was detected and what was
decided, and why. The nodes are stopped at the end, whatever happens."""
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "e2e")]

from ansible_run import REPO, VENV_BIN, Ansible  # noqa: E402
from sandbox import Sandbox, SandboxError  # noqa: E402

PROFILES = ["cpu", "h200", "hgx-h100"]
SITE = REPO / "site.yml"


def describe(name, profile, facts):
    """One line: the node, its GPUs and driver, the decision and its reason."""
    count = facts.get("nvidia_gpu_count", 0)
    if count:
        names = [g.get("name") or "unnamed" for g in facts["nvidia_gpus"]]
        kinds = sorted(set(names), key=names.index)
        gpus = f"{count} GPU{'s' if count > 1 else ''} ({', '.join(f'{names.count(k)}x {k}' for k in kinds)})"
        if facts.get("nvidia_nvswitch_count"):
            gpus += f", {facts['nvidia_nvswitch_count']} NVSwitches"
        if facts.get("nvidia_driver_version"):
            driver = f"driver {facts['nvidia_driver_version']} ({facts.get('nvidia_kernel_module_type') or 'unknown type'})"
        else:
            driver = "nouveau, no NVIDIA driver" if facts.get("nouveau_loaded") else "no NVIDIA driver"
    else:
        gpus, driver = "no NVIDIA GPU", "-"
    mode = "GPU node" if facts.get("gpu_node_enabled") else "CPU node"
    if facts.get("gpu_node_mode_source") == "user":
        why = "has_nvidia_gpu set by the user"
    else:
        why = f"detected: nvidia_gpu_present={str(facts.get('nvidia_gpu_present')).lower()}"
    runtime = facts.get("nvidia_container_runtime_path") or "none"
    return f"{name:8} {profile:9} | {gpus:48} | {driver:26} | {mode} ({why}); nvidia runtime: {runtime}"


def main():
    # `make` stopped with a signal: leave through finally, which stops the nodes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    playbook = SITE
    sb = Sandbox(PROFILES)
    try:
        started = time.monotonic()
        sb.up()
        print(f"== sandbox: {len(sb.nodes)} nodes up in {time.monotonic() - started:.2f}s, inventory {sb.inventory}")
        print(sb.inventory.read_text())
        user = Ansible(sb.inventory, sb.dir / "ansible")
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(sb.inventory), str(playbook)]
        print(f"== {' '.join(cmd)}", flush=True)
        env = user.env()
        env.pop("ANSIBLE_CALLBACKS_ENABLED")
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        print("== what each node is, and what it was set up as (from the fact cache)")
        for node in sb.nodes:
            try:
                print(describe(node.name, node.profile.name, user.cached_facts(node.name)))
            except AssertionError:
                print(f"{node.name:8} {node.profile.name:9} | no facts: the play failed before detection")
        user.close()
        return rc
    except SandboxError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        sb.down()
        print("== sandbox stopped")


if __name__ == "__main__":
    sys.exit(main())
