# Runs this project's Rust modules on a node: the binary built for the node's
# architecture, cached on the node by content hash, in one SSH round trip.
#
# Each module's action plugin (nvidia_gpu_facts.py, ...) is a symlink to this
# file: Ansible picks an action plugin by the task's module name, so
# `nvidia_gpu_facts:` in a task and `ansible -m nvidia_gpu_facts` come here
# with no change to how users write them.
#
# Why not Ansible's own binary-module path: it cannot choose a file per
# architecture (an x86_64 binary on a Grace node fails with "Exec format
# error"), and it cannot pipeline, so every task costs a temporary directory,
# two file transfers, a chmod, the run and a cleanup: six SSH operations. Here
# one command asks the node for `uname -m`, runs the cached binary of that
# architecture with the arguments on stdin, and only when the binary is not
# cached yet is it sent (once per node and build) and the command repeated.
from __future__ import annotations

import hashlib
import json
import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.plugins.action import ActionBase
from ansible.vars.clean import remove_internal_keys

# dist/<arch>/<module>, relative to this file (plugins/action/). Not under
# library/: Ansible searches two levels of subfolders of its module path and
# would run a binary it found there directly, for any architecture.
BIN_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "dist"))
# Node architectures as `uname -m` prints them, and the names Arm servers also use.
ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
# Where binaries are cached on the node: private to the user the module runs
# as (root under become), named by content hash so a new build never runs stale code.
REMOTE_CACHE = '"${HOME:-/root}/.ansible/gpu-node-modules"'
MISSING = "__GPU_NODE_MODULE_MISSING__"
UNSUPPORTED = "__GPU_NODE_MODULE_UNSUPPORTED_ARCH__"
ARCH_MARK = "__GPU_NODE_MODULE_ARCH__="


class LocalBinary:
    """One built module binary on the controller."""

    def __init__(self, module, arch):
        self.path = os.path.join(BIN_DIR, arch, module)
        with open(self.path, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.arch = arch
        self.remote_name = f"{module}-{self.sha256[:16]}"


def node_arch(stderr):
    """The architecture the run command reported on stderr."""
    for line in stderr.splitlines():
        if line.startswith(ARCH_MARK):
            return ARCH_ALIASES.get(line[len(ARCH_MARK):].strip())
    return None


def local_binaries(module):
    """The builds of `module` that exist, by architecture."""
    found = {}
    for arch in sorted(set(ARCH_ALIASES.values())):
        if os.path.isfile(os.path.join(BIN_DIR, arch, module)):
            found[arch] = LocalBinary(module, arch)
    return found


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        module = self._task.action.rpartition(".")[2]
        binaries = local_binaries(module)
        if not binaries:
            raise AnsibleActionFail(f"no build of the {module} module in {BIN_DIR}: run `make build` first")
        if not self._connection.has_pipelining:
            raise AnsibleActionFail(
                f"the {self._connection.transport} connection cannot send data on stdin, which {module} needs; use ssh or local"
            )

        module_args = dict(self._task.args)
        self._update_module_args(module, module_args, task_vars or {})
        encoder = get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE)
        args_json = json.dumps(module_args, cls=encoder).encode()

        res = self._run_cached(binaries, args_json)
        first_line = res["stdout"].lstrip().split("\n", 1)[0]
        transferred = False
        if first_line.startswith(UNSUPPORTED):
            arch = first_line[len(UNSUPPORTED):].strip()
            raise AnsibleActionFail(
                f"{module} cannot run on this node: its architecture is {arch!r}; "
                f"supported architectures: {', '.join(sorted(binaries))}"
            )
        if first_line.startswith(MISSING):
            arch = ARCH_ALIASES[first_line[len(MISSING):].strip()]
            self._install(binaries[arch])
            transferred = True
            res = self._run_cached(binaries, args_json)

        data = self._parse_returned_data(res, "legacy")
        remove_internal_keys(data)
        arch = node_arch(res.get("stderr", ""))
        data["module_binary"] = {
            "architecture": arch,
            "sha256": binaries[arch].sha256 if arch in binaries else None,
            "transferred": transferred,
        }
        result.update(data)
        return result

    def _run_cached(self, binaries, args_json):
        """Runs the cached binary for the node's architecture with the args on
        stdin; prints a marker instead when it is not cached or not supported."""
        cases = []
        for arch, binary in binaries.items():
            names = "|".join(u for u, a in ARCH_ALIASES.items() if a == arch)
            cases.append(f"{names}) b={REMOTE_CACHE}/{binary.remote_name} ;;")
        script = (
            'a=$(uname -m); case "$a" in '
            + " ".join(cases)
            + f' *) echo "{UNSUPPORTED} $a"; exit 0 ;; esac; '
            + f'if [ -x "$b" ]; then echo "{ARCH_MARK}$a" >&2; exec "$b" /dev/stdin; fi; echo "{MISSING} $a"'
        )
        cmd = self._wrap(script)
        return self._low_level_execute_command(cmd, sudoable=True, in_data=args_json)

    def _install(self, binary):
        """Sends one binary to the node's cache, verified and atomically renamed,
        and removes older builds of the same module."""
        module = binary.remote_name.rsplit("-", 1)[0]
        script = (
            f"umask 077; d={REMOTE_CACHE}; mkdir -p \"$d\" || exit 1; t=\"$d/.{binary.remote_name}.$$\"; "
            f'cat > "$t" || {{ rm -f "$t"; exit 1; }}; '
            f'if command -v sha256sum >/dev/null 2>&1; then '
            f'echo "{binary.sha256}  $t" | sha256sum -c --status || {{ rm -f "$t"; echo "checksum mismatch after transfer" >&2; exit 1; }}; fi; '
            f'chmod 700 "$t" && mv -f "$t" "$d/{binary.remote_name}" || exit 1; '
            f'for f in "$d"/{module}-*; do [ "$f" = "$d/{binary.remote_name}" ] || rm -f "$f"; done'
        )
        res = self._low_level_execute_command(self._wrap(script), sudoable=True, in_data=binary.data)
        if res["rc"] != 0:
            raise AnsibleActionFail(
                f"could not copy {binary.path} to the node: {res.get('stderr', '').strip() or res.get('stdout', '').strip()}",
                result={"rc": res["rc"], "stderr": res.get("stderr", ""), "stdout": res.get("stdout", "")},
            )

    def _wrap(self, script):
        """A POSIX sh command line, with the task's environment applied."""
        env = self._compute_environment_string()
        return f"{env} /bin/sh -c {shlex.quote(script)}".strip()

