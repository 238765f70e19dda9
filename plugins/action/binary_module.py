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
import re
import shlex
import time

from ansible.errors import AnsibleAction, AnsibleActionFail
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
# as (root under become), named by content hash so a new build never runs stale
# code. Shell code, not a value: the node's shell expands HOME.
REMOTE_CACHE = '"${HOME:-/root}/.ansible/gpu-node-modules"'

# What the node scripts print as the first line of stdout instead of running
# the module (a module's own stdout starts with "{"), each followed by the
# node's `uname -m` or a reason.
MISSING = "__GPU_NODE_MODULE_MISSING__"
# The cached binary's sha256 is not the build's: it is sent again.
MISMATCH = "__GPU_NODE_MODULE_MISMATCH__"
# The node has no tool to hash the cached binary: it is sent again, to run once.
NO_HASH = "__GPU_NODE_MODULE_NO_HASH__"
# The cache folder (or ~/.ansible) is not private to the user: nothing runs.
UNSAFE = "__GPU_NODE_MODULE_UNSAFE_CACHE__"
UNSUPPORTED = "__GPU_NODE_MODULE_UNSUPPORTED_ARCH__"
INSTALL_FAILED = "__GPU_NODE_MODULE_INSTALL_FAILED__"
MARKERS = (MISSING, MISMATCH, NO_HASH, UNSAFE, UNSUPPORTED, INSTALL_FAILED)
# On stderr, before the module runs: the architecture it runs as, and how the
# binary was verified (sha256, or size on a node with no hash tool).
ARCH_MARK = "__GPU_NODE_MODULE_ARCH__="
VERIFIED_MARK = "__GPU_NODE_MODULE_VERIFIED__="

# The node scripts. `@NAME@` is a placeholder that `fill` replaces with the
# shell-quoted value, in one place, so no value is ever pasted into shell code
# unquoted; everything else is POSIX sh as the node runs it.
#
# Functions the scripts share. `sum F` prints the sha256 of F with the first
# tool the node has that gives one (coreutils, busybox, perl's shasum, openssl,
# python); it fails when none does. `private D` is true when D is a real folder
# of this user with mode 0700 (a folder of this user with another mode is made
# 0700: the hash check covers what it holds), and its parent one of this user
# that no one else can write. `unsafe D` prints why D is refused and exits.
# Both cost one program each (ls, sha256sum).
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
    'unsafe() { echo @UNSAFE@" $(ls -ldn "${1%/*}" "$1" 2>&1 | tr "\\n" " ")/ uid $(id -u)"; exit 0; }; '
)

# One arm of RUN_CACHED's `case "$a"`: the `uname -m` names of one build.
ARCH_CASE = '@ALIASES@) b="$d"/@NAME@; h=@SHA256@ ;;'

# Runs the cached binary for the node's architecture with the arguments on
# stdin, after checking its sha256 in this same command, in a folder only this
# user can write: what runs is the build. Prints a marker instead when the
# binary is not cached, not the build, cannot be hashed, or the node's
# architecture has no build.
RUN_CACHED = (
    "@FUNCTIONS@"
    "d=" + REMOTE_CACHE + '; a=$(uname -m); case "$a" in @CASES@ '
    '*) echo @UNSUPPORTED@" $a"; exit 0 ;; esac; '
    'if [ -e "$d" ] || [ -L "$d" ]; then private "$d" || unsafe "$d"; '
    'if [ -f "$b" ] && [ ! -L "$b" ] && [ -x "$b" ]; then '
    's=$(sum "$b") || { echo @NO_HASH@" $a"; exit 0; }; '
    'if [ "$s" = "$h" ]; then echo @ARCH_MARK@"$a" >&2; exec "$b" /dev/stdin; fi; '
    'echo @MISMATCH@" $a"; exit 0; fi; fi; echo @MISSING@" $a"'
)

# Receives one binary and verifies it, before INSTALL_INTO_CACHE or
# INSTALL_RUN_ONCE runs it. Its stdin is the arguments on one line (JSON has no
# raw newline, and sh's `read` takes exactly that line) followed by the binary.
# Verified by sha256; a node with no tool for it checks the size, says so
# (`v=size`), and caches nothing: the next run could not verify it.
INSTALL = (
    "@FUNCTIONS@"
    "umask 077; d=" + REMOTE_CACHE + '; t="$d/".@NAME@".$$"; made=""; '
    'failed() { rm -f "$t"; echo @INSTALL_FAILED@" $1"; exit 1; }; '
    # The folders that do not exist yet, innermost first.
    'p="$d"; while [ ! -d "$p" ]; do made="$made $p"; p=$(dirname "$p"); done; '
    'mkdir -p "$d" || failed "cannot create $d"; '
    'private "$d" || unsafe "$d"; '
    'IFS= read -r args || failed "no arguments before the binary"; '
    'rm -f "$t"; cat > "$t" || failed "cannot write $t"; '
    'if s=$(sum "$t"); then [ "$s" = @SHA256@ ] || failed "checksum mismatch after transfer"; v=sha256; '
    'else [ "$(wc -c <"$t" | tr -d " ")" = @SIZE@ ] || failed "size mismatch after transfer (truncated?)"; v=size; fi; '
    'chmod 700 "$t" || failed "cannot make $t executable"; '
    'echo @ARCH_MARK@@ARCH@ >&2; echo @VERIFIED_MARK@"$v" >&2; '
)
# Renames the verified binary into the cache, removes older builds of the
# module, and runs it (a binary checked by size only runs once, uncached).
INSTALL_INTO_CACHE = (
    '[ "$v" = sha256 ] || { printf "%s\\n" "$args" | "$t" /dev/stdin; rc=$?; rm -f "$t"; exit $rc; }; '
    'mv -f "$t" "$d"/@NAME@ || failed "cannot rename $t"; '
    'for f in "$d"/@MODULE@-*; do [ "$f" = "$d"/@NAME@ ] || rm -f "$f"; done; '
    'printf "%s\\n" "$args" | "$d"/@NAME@ /dev/stdin'
)
# Check mode, or a node that cannot hash: the binary runs from its temporary
# file, removed afterwards with every folder made for it.
INSTALL_RUN_ONCE = (
    'printf "%s\\n" "$args" | "$t" /dev/stdin; rc=$?; rm -f "$t"; '
    "for p in $made; do rmdir \"$p\"; done; exit $rc"
)

# A file path: every command this plugin sends appends one JSON line there
# (host, module, step, bytes each way, seconds). For bench/run.py, which
# counts what a run sends to the nodes; off (and free) when unset.
TRACE_PATH = os.environ.get("GPU_NODE_MODULE_TRACE")

PLACEHOLDER = re.compile(r"@([A-Z0-9_]+)@")


class Shell(str):
    """Shell code this file wrote (a fragment filled by `fill`, or a script
    constant), which `fill` inserts as it is rather than as a quoted word."""


def fill(template, **values):
    """`template` with each `@NAME@` replaced by `shlex.quote(values[NAME])`,
    or by the value itself when it is `Shell` code. A placeholder without a
    value is a bug of this file: KeyError."""

    def value(match):
        v = values[match.group(1)]
        return v if isinstance(v, Shell) else shlex.quote(str(v))

    return Shell(PLACEHOLDER.sub(value, template))


def markers(**values):
    """The marker constants as `fill` values, so every script names them alike."""
    return dict(
        FUNCTIONS=fill(SH_FUNCTIONS, UNSAFE=UNSAFE),
        UNSAFE=UNSAFE,
        UNSUPPORTED=UNSUPPORTED,
        MISSING=MISSING,
        MISMATCH=MISMATCH,
        NO_HASH=NO_HASH,
        INSTALL_FAILED=INSTALL_FAILED,
        ARCH_MARK=ARCH_MARK,
        VERIFIED_MARK=VERIFIED_MARK,
        **values,
    )


def node_answer(stdout):
    """(marker, the rest of its line) when a script answered with a marker
    instead of running the module, else (None, None)."""
    first_line = stdout.lstrip().split("\n", 1)[0]
    for marker in MARKERS:
        if first_line.startswith(marker):
            return marker, first_line[len(marker):].strip()
    return None, None


def stderr_mark(stderr, mark):
    """The value a script printed on stderr after `mark`, or None."""
    for line in stderr.splitlines():
        if line.startswith(mark):
            return line[len(mark):].strip()
    return None


class LocalBinary:
    """One built module binary on the controller."""

    def __init__(self, module, arch):
        self.module = module
        self.path = os.path.join(BIN_DIR, arch, module)
        with open(self.path, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.arch = arch
        self.remote_name = f"{module}-{self.sha256[:16]}"


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


def unsafe_cache_fail(module, ls_output, installing):
    """The cache folder (or the one above it) could be written by another user."""
    if installing:
        return AnsibleActionFail(
            f"the module cache folder on the node, or the folder above it, is not private to the "
            f"user the module runs as (ls -ldn: {ls_output}): remove it "
            "(it is made again) or give it to that user with mode 0700"
        )
    return AnsibleActionFail(
        f"refusing to run {module}: the module cache folder on the node, or the folder "
        f"above it, is not private to the user the module runs as (ls -ldn: "
        f"{ls_output}); another user could replace the binary it "
        "runs. Remove it (it is made again) or give it to that user with mode 0700; "
        "under become, check that HOME is the become user's"
    )


# Why a binary is sent again, by the marker the cached run answered with, and
# the warning that says so (None: a first send, nothing to warn about).
RESEND_WARNINGS = {
    MISSING: None,
    MISMATCH: "the cached {module} binary on this node did not have the sha256 of the build "
    "(changed or damaged): it was replaced with a verified copy",
    NO_HASH: None,
}
SIZE_ONLY_WARNING = (
    "this node has no tool that computes sha256 (sha256sum, busybox, shasum, openssl, "
    "python): {module} was sent again for this run, checked by its size only, and is not cached"
)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        started = time.monotonic()
        self._host_name = (task_vars or {}).get("inventory_hostname")
        result = super().run(tmp, task_vars)
        del tmp
        module = self._task.action.rpartition(".")[2]
        transferred = False
        # Every failure of this plugin is raised as AnsibleActionFail and ends
        # here, as in ansible-core's own action plugins.
        try:
            data, transferred = self._run_module(module, task_vars or {})
            result.update(data)
        except AnsibleAction as e:
            result.update(e.result)
            # ansible-core < 2.19 adds the (empty) traceback of the raise: a
            # plugin's own refusal is no exception, and the callback would
            # print "An exception occurred" above its message.
            result.pop("exception", None)
            result.setdefault("changed", False)
        if TRACE_PATH:
            self._trace("action", started, transferred=transferred)
        return result

    def _run_module(self, module, task_vars):
        """The module's result, with `module_binary`, and whether a binary was
        sent and cached; raises AnsibleActionFail."""
        binaries = local_binaries(module)
        if not binaries:
            raise AnsibleActionFail(f"no build of the {module} module in {BIN_DIR}: {missing_build_fix()}")
        if not self._connection.has_pipelining:
            raise AnsibleActionFail(
                f"the {self._connection.transport} connection cannot send data on stdin, which {module} needs; use ssh or local"
            )
        module_args = dict(self._task.args)
        self._update_module_args(module, module_args, task_vars)
        args_json = encode_module_args(module_args).encode()

        res = self._run_cached(binaries, args_json)
        marker, detail = node_answer(res["stdout"])
        if marker == UNSUPPORTED:
            raise AnsibleActionFail(
                f"{module} cannot run on this node: its architecture is {detail!r}; "
                f"supported architectures: {', '.join(sorted(binaries))}"
            )
        if marker == UNSAFE:
            raise unsafe_cache_fail(module, detail, installing=False)
        transferred = False
        if marker in RESEND_WARNINGS:
            res, transferred = self._send(binaries, marker, detail, args_json)
        data = parse_module_result(self, res)
        remove_internal_keys(data)
        arch = ARCH_ALIASES.get(stderr_mark(res.get("stderr", ""), ARCH_MARK) or "")
        verified = res.get("verified", "sha256")
        data["module_binary"] = {
            "architecture": arch,
            "sha256": binaries[arch].sha256 if arch in binaries else None,
            "transferred": transferred,
            "verified": verified,
        }
        warnings = [RESEND_WARNINGS.get(marker), SIZE_ONLY_WARNING if verified == "size" else None]
        for warning in filter(None, warnings):
            data.setdefault("warnings", []).append(warning.format(module=module))
        return data, transferred

    def _send(self, binaries, marker, reported_arch, args_json):
        """Sends the build for `reported_arch` and runs it: the result, and
        whether the binary is now cached."""
        arch = ARCH_ALIASES.get(reported_arch)
        if arch not in binaries:
            raise AnsibleActionFail(f"the node answered with an unknown architecture {reported_arch!r}")
        # Check mode leaves no file behind, the module cache included: the
        # binary runs from a temporary file, removed with any folder made for
        # it. A node that cannot hash the cache gets no cache either.
        cache = not self._task.check_mode and marker != NO_HASH
        res = self._install_and_run(binaries[arch], reported_arch, args_json, cache)
        return res, cache and res.get("verified") == "sha256"

    def _run_cached(self, binaries, args_json):
        """One command: the cached binary runs, or the node says why not."""
        cases = " ".join(
            fill(
                ARCH_CASE,
                ALIASES=Shell("|".join(shlex.quote(u) for u, a in ARCH_ALIASES.items() if a == arch)),
                NAME=binary.remote_name,
                SHA256=binary.sha256,
            )
            for arch, binary in binaries.items()
        )
        script = fill(RUN_CACHED, **markers(CASES=Shell(cases)))
        return self._execute("run", self._wrap(script), args_json)

    def _install_and_run(self, binary, reported_arch, args_json, cache):
        """One command that receives, verifies and runs `binary`; with `cache`,
        it stays in the node's cache. Raises AnsibleActionFail when it could
        not be installed."""
        values = markers(
            NAME=binary.remote_name,
            MODULE=binary.module,
            SHA256=binary.sha256,
            SIZE=len(binary.data),
            ARCH=reported_arch,
        )
        script = fill(INSTALL + (INSTALL_INTO_CACHE if cache else INSTALL_RUN_ONCE), **values)
        res = self._execute("install+run", self._wrap(script), args_json + b"\n" + binary.data, len(binary.data))
        verified = stderr_mark(res.get("stderr", ""), VERIFIED_MARK)
        if verified:
            res["verified"] = verified
        marker, detail = node_answer(res["stdout"])
        if marker == UNSAFE:
            raise unsafe_cache_fail(binary.module, detail, installing=True)
        if marker == INSTALL_FAILED:
            stderr = res.get("stderr", "").strip()
            raise AnsibleActionFail(
                f"could not copy {binary.path} to the node: {detail}" + (f" ({stderr})" if stderr else ""),
                result={"rc": res["rc"], "stderr": res.get("stderr", "")},
            )
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
