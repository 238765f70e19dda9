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
# cached yet is it sent (once per node and build): a second command installs
# it and runs it, arguments and binary on its stdin.
from __future__ import annotations

import hashlib
import json
import os
import shlex
import time

from ansible.plugins.action import ActionBase
from ansible.vars.clean import remove_internal_keys

# ansible-core 2.19 encodes module arguments and parses module results by a
# named profile ("legacy": what modules always got); 2.15 to 2.18 have one
# encoder, which 2.19 deprecates. Each release gets its own way, so that a
# task's arguments reach the module exactly as that release sends them to its
# own modules (vaulted values as their plain text).
try:
    from ansible.module_utils.common.json import Direction, get_module_encoder
except ImportError:  # ansible-core < 2.19
    from ansible.module_utils.common.json import AnsibleJSONEncoder

    def encode_module_args(module_args):
        return json.dumps(module_args, cls=AnsibleJSONEncoder, vault_to_text=True)

    def parse_module_result(action, res):
        return action._parse_returned_data(res)

else:

    def encode_module_args(module_args):
        return json.dumps(module_args, cls=get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE))

    def parse_module_result(action, res):
        return action._parse_returned_data(res, "legacy")

# dist/<arch>/<module>, relative to this file (plugins/action/): the same
# path in the repository (`make build` puts them there) and in the installed
# collection gpunode.k8s_gpu, whose tarball keeps that layout
# (collection/build.py). Not under library/ or plugins/modules/: Ansible
# searches subfolders of its module path and would run a binary it found there
# directly, for any architecture.
PLUGIN_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", ".."))
BIN_DIR = os.path.join(PLUGIN_ROOT, "dist")
# An installed collection has MANIFEST.json at its root (ansible-galaxy writes
# it); the repository has none. It only changes what a missing build's error says.
IN_COLLECTION = os.path.isfile(os.path.join(PLUGIN_ROOT, "MANIFEST.json"))
# Node architectures as `uname -m` prints them, and the names Arm servers also use.
ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
# Where binaries are cached on the node: private to the user the module runs
# as (root under become), named by content hash so a new build never runs stale code.
REMOTE_CACHE = '"${HOME:-/root}/.ansible/gpu-node-modules"'
MISSING = "__GPU_NODE_MODULE_MISSING__"
# The cached binary's sha256 is not the build's: it is sent again.
MISMATCH = "__GPU_NODE_MODULE_MISMATCH__"
# The node has no tool to hash the cached binary: it is sent again, to run once.
NO_HASH = "__GPU_NODE_MODULE_NO_HASH__"
# The cache folder (or ~/.ansible) is not private to the user: nothing runs.
UNSAFE = "__GPU_NODE_MODULE_UNSAFE_CACHE__"
UNSUPPORTED = "__GPU_NODE_MODULE_UNSUPPORTED_ARCH__"
ARCH_MARK = "__GPU_NODE_MODULE_ARCH__="
VERIFIED_MARK = "__GPU_NODE_MODULE_VERIFIED__="
INSTALL_FAILED = "__GPU_NODE_MODULE_INSTALL_FAILED__"

# POSIX sh functions the node commands share. `sum F` prints the sha256 of F
# with the first tool the node has that gives one (coreutils, busybox, perl's
# shasum, openssl, python); it fails when none does. `private D` is true when
# D is a real folder of this user with mode 0700 (a folder of this user with
# another mode is made 0700: the hash check below covers what it holds), and
# its parent one of this user that no one else can write. `unsafe D` prints
# why D is refused and exits. Both cost one program each (ls, sha256sum).
SH_FUNCTIONS = (
    "sum() { for t in sha256sum 'busybox sha256sum' 'shasum -a 256' 'openssl dgst -sha256' python3 python; do "
    'command -v "${t%% *}" >/dev/null 2>&1 || continue; '
    "case $t in python*) o=$($t -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())' <\"$1\" 2>/dev/null) ;; "
    '*) o=$($t <"$1" 2>/dev/null) ;; esac; '
    "for w in $o; do case $w in *[!0-9a-f]*) ;; " + "?" * 64 + ') echo "$w"; return 0 ;; esac; done; done; return 1; }; '
    # One `ls` for both folders (the parent sorts first); `?` matches the newline between.
    'private() { f=$1; p=${f%/*}; [ -d "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] || return 1; '
    '[ -d "$p" ] && [ ! -L "$p" ] && [ -O "$p" ] || return 1; m=$(ls -ldn "$p" "$f"); '
    'case $m in d????-??-*) ;; *) return 1 ;; esac; '
    'case $m in *"$p"?drwx------*) ;; *) chmod 700 "$f" || return 1 ;; esac; }; '
    f'unsafe() {{ echo "{UNSAFE} $(ls -ldn "${{1%/*}}" "$1" 2>&1 | tr "\\n" " ")/ uid $(id -u)"; exit 0; }}; '
)
# A file path: every command this plugin sends appends one JSON line there
# (host, module, step, bytes each way, seconds). For bench/run.py, which
# counts what a run sends to the nodes; off (and free) when unset.
TRACE_PATH = os.environ.get("GPU_NODE_MODULE_TRACE")


class LocalBinary:
    """One built module binary on the controller."""

    def __init__(self, module, arch):
        self.path = os.path.join(BIN_DIR, arch, module)
        with open(self.path, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.arch = arch
        self.remote_name = f"{module}-{self.sha256[:16]}"


def failed(result, msg, **values):
    """A failed task result, as a module's would be (raising would make
    Ansible add a line about an exception to a plain error)."""
    result.update(values, failed=True, changed=False, msg=msg)
    return result


def node_arch(stderr):
    """The architecture the run command reported on stderr."""
    for line in stderr.splitlines():
        if line.startswith(ARCH_MARK):
            return ARCH_ALIASES.get(line[len(ARCH_MARK):].strip())
    return None


def missing_build_fix():
    """What to do when a module has no build at all, where this plugin is."""
    if IN_COLLECTION:
        return "this installed collection is incomplete; install its tarball again (ansible-galaxy collection install --force)"
    return "run `make build` first"


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
        started = time.monotonic()
        self._host_name = (task_vars or {}).get("inventory_hostname")
        result = super().run(tmp, task_vars)
        del tmp
        module = self._task.action.rpartition(".")[2]
        binaries = local_binaries(module)
        if not binaries:
            return failed(result, f"no build of the {module} module in {BIN_DIR}: {missing_build_fix()}")
        if not self._connection.has_pipelining:
            return failed(
                result,
                f"the {self._connection.transport} connection cannot send data on stdin, which {module} needs; use ssh or local",
            )

        module_args = dict(self._task.args)
        self._update_module_args(module, module_args, task_vars or {})
        args_json = encode_module_args(module_args).encode()

        res = self._run_cached(binaries, args_json)
        first_line = res["stdout"].lstrip().split("\n", 1)[0]
        transferred = False
        resent_why = None
        if first_line.startswith(UNSUPPORTED):
            arch = first_line[len(UNSUPPORTED):].strip()
            return failed(
                result,
                f"{module} cannot run on this node: its architecture is {arch!r}; "
                f"supported architectures: {', '.join(sorted(binaries))}",
            )
        if first_line.startswith(UNSAFE):
            return failed(
                result,
                f"refusing to run {module}: the module cache folder on the node, or the folder "
                f"above it, is not private to the user the module runs as (ls -ldn: "
                f"{first_line[len(UNSAFE):].strip()}); another user could replace the binary it "
                "runs. Remove it (it is made again) or give it to that user with mode 0700; "
                "under become, check that HOME is the become user's",
            )
        for marker, why in ((MISSING, None), (MISMATCH, "mismatch"), (NO_HASH, "no_hash")):
            if first_line.startswith(marker):
                reported = first_line[len(marker):].strip()
                break
        else:
            reported = None
        if reported is not None:
            binary = binaries[ARCH_ALIASES[reported]]
            resent_why = why
            # Check mode leaves no file behind, the module cache included: the
            # binary runs from a temporary file, removed with any folder made
            # for it. A node that cannot hash the cache gets no cache either.
            cache = not self._task.check_mode and why != "no_hash"
            res = self._install_and_run(binary, reported, args_json, cache)
            if res.get("install_failed"):
                return failed(result, res["install_failed"], rc=res["rc"], stderr=res.get("stderr", ""))
            transferred = cache and res.get("verified") == "sha256"

        data = parse_module_result(self, res)
        remove_internal_keys(data)
        arch = node_arch(res.get("stderr", ""))
        data["module_binary"] = {
            "architecture": arch,
            "sha256": binaries[arch].sha256 if arch in binaries else None,
            "transferred": transferred,
            "verified": res.get("verified", "sha256"),
        }
        warnings = data.setdefault("warnings", []) if resent_why or res.get("verified") == "size" else None
        if resent_why == "mismatch":
            warnings.append(
                f"the cached {module} binary on this node did not have the sha256 of the build "
                "(changed or damaged): it was replaced with a verified copy"
            )
        if res.get("verified") == "size":
            warnings.append(
                "this node has no tool that computes sha256 (sha256sum, busybox, shasum, openssl, "
                f"python): {module} was sent again for this run, checked by its size only, and is not cached"
            )
        result.update(data)
        if TRACE_PATH:
            self._trace("action", started, transferred=transferred)
        return result

    def _run_cached(self, binaries, args_json):
        """Runs the cached binary for the node's architecture with the args on
        stdin; prints a marker instead when it is not cached or not supported."""
        cases = []
        for arch, binary in binaries.items():
            names = "|".join(u for u, a in ARCH_ALIASES.items() if a == arch)
            cases.append(f'{names}) b="$d/{binary.remote_name}"; h={binary.sha256} ;;')
        # The cached binary runs only after its sha256 is checked in this same
        # command, in a folder only this user can write: what runs is the build.
        script = (
            SH_FUNCTIONS
            + f'd={REMOTE_CACHE}; a=$(uname -m); case "$a" in '
            + " ".join(cases)
            + f' *) echo "{UNSUPPORTED} $a"; exit 0 ;; esac; '
            + 'if [ -e "$d" ] || [ -L "$d" ]; then private "$d" || unsafe "$d"; '
            + 'if [ -f "$b" ] && [ ! -L "$b" ] && [ -x "$b" ]; then '
            + f's=$(sum "$b") || {{ echo "{NO_HASH} $a"; exit 0; }}; '
            + f'if [ "$s" = "$h" ]; then echo "{ARCH_MARK}$a" >&2; exec "$b" /dev/stdin; fi; '
            + f'echo "{MISMATCH} $a"; exit 0; fi; fi; echo "{MISSING} $a"'
        )
        return self._execute("run", self._wrap(script), args_json)

    def _install_and_run(self, binary, reported_arch, args_json, cache):
        """Sends one binary to the node and runs it: one command, whose stdin is
        the arguments on one line (JSON has no raw newline, and sh's `read`
        takes exactly that line) followed by the binary. With `cache`, the
        binary is verified and atomically renamed into the node's cache, and
        older builds of the module are removed; without, it runs from a
        temporary file that is removed afterwards, with every folder made for it."""
        module = binary.remote_name.rsplit("-", 1)[0]
        script = (
            SH_FUNCTIONS
            + f'umask 077; d={REMOTE_CACHE}; t="$d/.{binary.remote_name}.$$"; made=""; '
            + f'failed() {{ rm -f "$t"; echo "{INSTALL_FAILED} $1"; exit 1; }}; '
            # The folders that do not exist yet, innermost first.
            + 'p="$d"; while [ ! -d "$p" ]; do made="$made $p"; p=$(dirname "$p"); done; '
            + 'mkdir -p "$d" || failed "cannot create $d"; '
            + 'private "$d" || unsafe "$d"; '
            + 'IFS= read -r args || failed "no arguments before the binary"; '
            + 'rm -f "$t"; cat > "$t" || failed "cannot write $t"; '
            # Verified by sha256; a node with no tool for it checks the size,
            # says so, and caches nothing (the next run could not verify it).
            + f'if s=$(sum "$t"); then [ "$s" = {binary.sha256} ] || failed "checksum mismatch after transfer"; v=sha256; '
            + f'else [ "$(wc -c <"$t" | tr -d " ")" = {len(binary.data)} ] || failed "size mismatch after transfer (truncated?)"; v=size; fi; '
            + 'chmod 700 "$t" || failed "cannot make $t executable"; '
            + f'echo "{ARCH_MARK}{reported_arch}" >&2; echo "{VERIFIED_MARK}$v" >&2; '
        )
        if cache:
            script += (
                '[ "$v" = sha256 ] || { printf "%s\\n" "$args" | "$t" /dev/stdin; rc=$?; rm -f "$t"; exit $rc; }; '
                f'mv -f "$t" "$d/{binary.remote_name}" || failed "cannot rename $t"; '
                f'for f in "$d"/{module}-*; do [ "$f" = "$d/{binary.remote_name}" ] || rm -f "$f"; done; '
                f'printf "%s\\n" "$args" | "$d/{binary.remote_name}" /dev/stdin'
            )
        else:
            script += (
                'printf "%s\\n" "$args" | "$t" /dev/stdin; rc=$?; rm -f "$t"; '
                'for p in $made; do rmdir "$p"; done; exit $rc'
            )
        res = self._execute("install+run", self._wrap(script), args_json + b"\n" + binary.data, len(binary.data))
        first_line = res["stdout"].lstrip().split("\n", 1)[0]
        for line in res.get("stderr", "").splitlines():
            if line.startswith(VERIFIED_MARK):
                res["verified"] = line[len(VERIFIED_MARK):].strip()
        if first_line.startswith(UNSAFE):
            res["install_failed"] = (
                f"the module cache folder on the node, or the folder above it, is not private to the "
                f"user the module runs as (ls -ldn: {first_line[len(UNSAFE):].strip()}): remove it "
                "(it is made again) or give it to that user with mode 0700"
            )
        if first_line.startswith(INSTALL_FAILED):
            why = first_line[len(INSTALL_FAILED):].strip()
            stderr = res.get("stderr", "").strip()
            res["install_failed"] = f"could not copy {binary.path} to the node: {why}" + (f" ({stderr})" if stderr else "")
        return res

    def _execute(self, step, cmd, in_data, binary_bytes=0):
        """One SSH command: `cmd` with `in_data` on its stdin."""
        started = time.monotonic()
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=in_data)
        if TRACE_PATH:
            self._trace(
                step,
                started,
                stdin_bytes=len(in_data),
                binary_bytes=binary_bytes,
                command_bytes=len(cmd.encode()),
                stdout_bytes=len(res.get("stdout", "").encode()),
            )
        return res

    def _trace(self, step, started, **fields):
        line = {
            "host": self._host_name,
            "module": self._task.action.rpartition(".")[2],
            "step": step,
            "seconds": round(time.monotonic() - started, 6),
            **fields,
        }
        # One short write in append mode: lines of parallel workers do not mix.
        with open(TRACE_PATH, "a") as f:
            f.write(json.dumps(line) + "\n")

    def _wrap(self, script):
        """A POSIX sh command line, with the task's environment applied."""
        env = self._compute_environment_string()
        return f"{env} /bin/sh -c {shlex.quote(script)}".strip()

