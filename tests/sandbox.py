#!/usr/bin/env python3
"""A cluster of sandbox nodes on this machine, reached by Ansible over real SSH.

Each node is an sshd listening on 127.0.0.1:<its port>, in its own mount
namespace, chrooted into its own root filesystem: an overlay of this machine's
`/` (read-only lower layer) and the node's upper directory on a tmpfs, so
everything a playbook writes on a node stays in that node's upper directory.
The node's hardware is a copy of a profile (a captured or synthetic
/sys/bus/pci, /sys/module and /proc/driver) bind-mounted over the real ones.
See tests/README.md for what is real and what is a stand-in.

As a command (the nodes outlive it; `down` stops them from any process):

    python3 tests/sandbox.py up --profiles cpu,h200,hgx-h100 --dir DIR
    python3 tests/sandbox.py down --dir DIR

From Python (pytest: see tests/conftest.py):

    with Sandbox(["cpu", "h200"]) as sb:
        sb.inventory        # path of the inventory file
        sb.nodes[0].path("/etc/ansible/facts.d/gpu.fact")

Needs root (mount namespaces, overlayfs), `unshare`, `sshd`, `ssh-keygen`.
Python 3 standard library only.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import containerd_releases  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SSHD = "/usr/sbin/sshd"
STATE_FILE = "sandbox.json"
# Node state (upper and work directories) must be on a filesystem that is not
# the lower layer `/` itself: overlayfs refuses an upper directory inside its
# lower layer. /dev/shm is a tmpfs on every Linux machine we run on.
TMPFS_DIR = Path(os.environ.get("GPU_SANDBOX_TMPFS", "/dev/shm"))
# Paths of this machine that a fresh node must not see, hidden by an overlayfs
# whiteout in the node's upper directory: Ansible's local facts of this
# machine, and the nouveau blacklist nvidia_driver_install writes (a machine
# with an NVIDIA driver often has one; a fresh node has none). root's home is hidden as a whole (an opaque folder): a node's root
# starts with Debian's stock dotfiles, not this machine's (whose .bashrc, run
# by every SSH command, would slow each one down and write to the node).
HIDDEN = ("etc/ansible", "etc/modprobe.d/blacklist-nouveau.conf")
# The PCI ID database, where distributions keep it (the places
# crates/node-probe/src/gpu.rs reads). A node has its profile's own copy
# (a file at the same path under the profile's hardware folder) or none: never
# this machine's, which may or may not be installed (pciutils, hwdata), so a
# GPU name taken from it would depend on the machine that runs the tests.
PCI_IDS = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids", "usr/share/pci.ids")
ROOT_DOTFILES = {".bashrc": "/usr/share/base-files/dot.bashrc", ".profile": "/usr/share/base-files/dot.profile"}
START_TIMEOUT = 30.0
# The containerd release of a node whose profile names none; GPU_SANDBOX_CONTAINERD
# runs a whole suite on another one ("none": this machine's own, if any).
DEFAULT_CONTAINERD = os.environ.get("GPU_SANDBOX_CONTAINERD", "1.6")
if DEFAULT_CONTAINERD == "none":
    DEFAULT_CONTAINERD = None
# What a release puts on a node: its bin folder, bind-mounted read-only here,
# and these links to it in /usr/bin (links, so a test can replace one).
CONTAINERD_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")
RELEASE_MOUNT = "/usr/libexec/gpu-sandbox/containerd"
RUNC_MOUNT = "/usr/libexec/gpu-sandbox/runc"


@dataclasses.dataclass(frozen=True)
class Profile:
    """What kind of node a sandbox node is."""

    name: str
    # A root filesystem holding the node's /sys/bus/pci, /sys/module,
    # /sys/firmware (empty unless given: no EFI) and /proc/driver
    # (tests/fixtures/...): copied per node, then bind-mounted; and its
    # pci.ids, if it has one (see PCI_IDS).
    hardware: Path
    description: str
    # `uname -m` of the node. Not x86_64: a /usr/bin/uname wrapper says so,
    # and binfmt_misc runs the aarch64 module binaries under qemu.
    arch: str = "x86_64"
    # Provide /usr/bin/nvidia-container-runtime (a stand-in script): the
    # sandbox installs no NVIDIA package, GPU nodes get the binary this way.
    container_runtime: bool = False
    # More files of the node: (node path, text) pairs, e.g. another
    # /etc/os-release, or (node path, text, mode) for a stand-in program.
    # Written to its upper directory before it starts (mode 0644 unless given).
    files: tuple = ()
    # The real containerd release the node runs ("1.6", "1.7", "2.1", see
    # tests/containerd_releases.py): its bin folder is bind-mounted read-only
    # at /usr/libexec/gpu-sandbox/containerd and linked from the node's
    # /usr/bin (runc 1.1.5 from /usr/sbin/runc), and its own
    # `containerd config default` is the node's /etc/containerd/config.toml,
    # as after installing a package. None: the node has whatever this
    # machine has. Chosen per node with `PROFILE@RELEASE` (`h200@2.1`).
    containerd: str | None = DEFAULT_CONTAINERD
    # The files a loaded driver leaves (driver_files()): like `files`, kept
    # apart so that a variant with other `files` keeps them.
    driver_files: tuple = ()
    # Symbolic links of the node: (node path, target) pairs (the driver's
    # libcuda.so.1 -> libcuda.so.<version>).
    links: tuple = ()
    # Character devices of the node: (node path under /dev, major, minor).
    # Made with mknod in a folder of the node's own that is laid over this
    # machine's /dev in its mount namespace (read-only), so that the node
    # sees /dev/nvidia0 and this machine's /dev is never written. They are
    # real device files with the NVIDIA driver's numbers; no driver answers
    # behind them (nothing here opens them).
    devices: tuple = ()

    def variant(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)


# The driver's tools on GPU profiles: nvidia-smi answers the driver version
# (what nvidia_driver_install asks after an install) from the node's
# /sys/module/nvidia/version; anything else fails, saying why.
TOOL_STAND_IN = """#!/bin/sh
# Stand-in for a tool of the NVIDIA driver, written by tests/sandbox.py: no GPU here.
case "$*" in
  *--query-gpu=driver_version*) cat /sys/module/nvidia/version; exit 0 ;;
esac
echo "${0##*/}: sandbox stand-in, no GPU behind this node's driver files" >&2
exit 9
"""
DRIVER_LIBRARIES = ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm")


def driver_files(version, libdir, bindir, gpus, modeset=False, caps=False, firmware=False,
                 tools=("nvidia-smi",), stale=None):
    """What an installed, loaded NVIDIA driver leaves on a node, as stand-ins
    (the libraries are text files): its libraries and the links to them in
    `libdir`, its tools in `bindir`, GSP firmware, and its device files.
    `stale`: libraries of an older driver left beside them."""
    files, links = [], []
    for lib in DRIVER_LIBRARIES:
        files.append((f"{libdir}/{lib}.so.{version}", f"stand-in for {lib} {version}\n"))
        links.append((f"{libdir}/{lib}.so.1", f"{lib}.so.{version}"))
        if stale:
            files.append((f"{libdir}/{lib}.so.{stale}", f"stand-in for {lib} {stale}\n"))
    links.append((f"{libdir}/libcuda.so", "libcuda.so.1"))
    for tool in tools:
        files.append((f"{bindir}/{tool}", TOOL_STAND_IN, 0o755))
    if firmware:
        # /lib is a link to usr/lib on this machine: a file under /lib would hide it.
        for name in ("gsp_ga10x.bin", "gsp_tu10x.bin"):
            files.append((f"/usr/lib/firmware/nvidia/{version}/{name}", "stand-in firmware\n"))
    devices = [(f"/dev/nvidia{i}", 195, i) for i in range(gpus)]
    devices += [("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 509, 0), ("/dev/nvidia-uvm-tools", 509, 1)]
    if modeset:
        devices.append(("/dev/nvidia-modeset", 195, 254))
    if caps:
        devices += [("/dev/nvidia-caps/nvidia-cap1", 234, 1), ("/dev/nvidia-caps/nvidia-cap2", 234, 2)]
    return {"driver_files": tuple(files), "links": tuple(links), "devices": tuple(devices)}


PROFILES = {
    p.name: p
    for p in [
        Profile("cpu", FIXTURES / "profiles/cpu", "no NVIDIA device"),
        Profile("h200", FIXTURES / "h200-vm", "real capture: 1 H200, open driver 580.159.04", container_runtime=True,
                **driver_files("580.159.04", "/usr/local/nvidia/lib64", "/usr/local/nvidia/bin", gpus=1)),
        Profile("hgx-h100", FIXTURES / "profiles/hgx-h100", "8 H100 + 4 NVSwitches, open driver 570", container_runtime=True,
                **driver_files("570.124.06", "/usr/lib/x86_64-linux-gnu", "/usr/bin", gpus=8, modeset=True, caps=True,
                               firmware=True, tools=("nvidia-smi", "nvidia-persistenced", "nvidia-cuda-mps-control"))),
        Profile("l40s", FIXTURES / "profiles/l40s", "2 L40S, proprietary driver 550, RHEL library layout", container_runtime=True,
                **driver_files("550.163.01", "/usr/lib64", "/usr/bin", gpus=2, modeset=True, stale="535.247.01")),
        Profile("consumer", FIXTURES / "profiles/consumer", "RTX 2080 Ti with audio/USB/serial functions, nouveau", container_runtime=True),
        Profile("vfio", FIXTURES / "profiles/vfio", "A100 bound to vfio-pci, no driver", container_runtime=True),
        Profile("amd", FIXTURES / "profiles/amd", "AMD Instinct MI210, no NVIDIA device"),
        Profile("gh200", FIXTURES / "profiles/gh200", "GH200 superchip, aarch64", arch="aarch64", container_runtime=True,
                **driver_files("580.159.04", "/usr/lib/aarch64-linux-gnu", "/usr/bin", gpus=1, firmware=True)),
        Profile("riscv64", FIXTURES / "profiles/cpu", "a CPU node of an architecture no module is built for", arch="riscv64"),
    ]
}

RUNTIME_STAND_IN = """#!/bin/sh
# Stand-in for nvidia-container-runtime, written by tests/sandbox.py: sandbox
# nodes install no NVIDIA package. Like the real one it is a runc shim; it
# records each call in /run (a tmpfs of the node: its files never change).
case "$1" in
  --version|-v) echo "NVIDIA Container Runtime version 1.17.8 (sandbox stand-in)"; exit 0 ;;
esac
echo "$*" >> /run/nvidia-container-runtime.calls
exec runc "$@"
"""

# apt's binary caches (pkgcache.bin, srcpkgcache.bin): built once per sandbox
# and hard-linked into every node, as a stock Debian/Ubuntu node keeps them.
# Container images of Debian (such as the one CI may run on) turn them off, and
# then every apt task of every node parses the whole package index again
# (about a second of CPU each).
APT_CACHE_CONF = """// Written by tests/sandbox.py: keep apt's binary caches, as a stock node does.
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
"""
APT_CACHES = ("pkgcache.bin", "srcpkgcache.bin")

UNAME_WRAPPER = """#!/bin/sh
# Written by tests/sandbox.py: this sandbox node reports the machine {arch}.
# The real uname is kept at {real}.
out=$({real} "$@") || exit $?
printf '%s\\n' "$out" | sed 's/x86_64/{arch}/g'
"""
UNAME_REAL = "/usr/libexec/gpu-sandbox/uname"

SSHD_CONFIG = """# Written by tests/sandbox.py: sandbox node {name} (profile {profile}).
Port {port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 256
MaxSessions 64
Subsystem sftp internal-sftp
"""

# The mount namespace of one node, set up by the shell `unshare` runs; the
# last line becomes the node's sshd (same pid as `unshare`).
NODE_SCRIPT = r"""
set -eu
mount -t overlay overlay -o lowerdir=/,upperdir="$S/upper",workdir="$S/work" "$S/root"
for d in proc sys dev; do mount --rbind "/$d" "$S/root/$d"; done
if [ -d "$S/hw/dev" ]; then
  mount -t overlay overlay -o lowerdir="$S/hw/dev":/dev "$S/root/dev"
  mount --rbind /dev/pts "$S/root/dev/pts"
fi
mount -t tmpfs -o mode=0755 tmpfs "$S/root/run"
mount -t tmpfs -o mode=1777 tmpfs "$S/root/tmp"
mount -t tmpfs -o mode=1777 tmpfs "$S/root/dev/shm"
mount --bind "$S/hw/sys/bus/pci" "$S/root/sys/bus/pci"
mount --bind "$S/hw/sys/module" "$S/root/sys/module"
mount --bind "$S/hw/proc/driver" "$S/root/proc/driver"
mount --bind "$S/hw/sys/firmware" "$S/root/sys/firmware"
# The node's containerd release (read-only: a playbook cannot change the cache).
printf '%s\n' "$BINDS" | while IFS='|' read -r src dst; do
  if [ -n "$src" ]; then mount --bind -o ro "$src" "$S/root$dst"; fi
done
mkdir -m 0755 "$S/root/run/sshd"
exec chroot "$S/root" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
"""


class SandboxError(RuntimeError):
    pass


@dataclasses.dataclass
class Node:
    """One sandbox node, as the host sees it."""

    name: str
    profile: Profile
    state: Path  # on a tmpfs: upper/, work/, root/ (the mount point), hw/, ssh/
    port: int = 0
    pid: int = 0
    mnt_ns: str = ""  # readlink /proc/<pid>/ns/mnt, to find every process of the node
    proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def upper(self) -> Path:
        """Everything written on the node since it started, as overlayfs keeps it."""
        return self.state / "upper"

    @property
    def hardware(self) -> Path:
        """This node's copy of its profile: write here to change its hardware."""
        return self.state / "hw"

    def path(self, node_path: str) -> Path:
        """A path of the node's filesystem as the host can read it (while it runs)."""
        return Path(f"/proc/{self.pid}/root") / node_path.lstrip("/")

    def upper_hash(self, exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """A digest of every entry of the upper directory (type, mode, owner,
        content or link target), by node path; `exclude`: node path prefixes."""
        return tree_digest(self.upper, exclude)

    def sh(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs `sh -c script` on the node (its mount namespace and root, as
        root), without SSH: for tests that look at the node as its admin would."""
        return subprocess.run(["nsenter", "--target", str(self.pid), "--mount", "--root", "--wd=/",
                               "/bin/sh", "-c", script], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "profile": dataclasses.asdict(self.profile) | {"hardware": str(self.profile.hardware)},
            "state": str(self.state),
            "port": self.port,
            "pid": self.pid,
            "mnt_ns": self.mnt_ns,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Node":
        p = data["profile"]
        profile = Profile(**(p | {"hardware": Path(p["hardware"]), "files": tuple(tuple(f) for f in p.get("files", ()))}))
        return cls(data["name"], profile, Path(data["state"]), data["port"], data["pid"], data["mnt_ns"])


class Sandbox:
    """Nodes `worker1`..`workerN`, one per profile given, in that order."""

    def __init__(self, profiles, directory: str | os.PathLike | None = None, stop_at_exit: bool = True):
        self.profiles = [profile_of(p) if isinstance(p, str) else p for p in profiles]
        self._own_dir = directory is None
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="gpu-sandbox-"))
        self.dir = self.dir.resolve()
        self.stop_at_exit = stop_at_exit
        self.nodes: list[Node] = []
        self.state_root: Path | None = None
        self._own_state_root = False

    # -- files of the sandbox (on the host) ---------------------------------

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.ini"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def private_key(self) -> Path:
        return self.dir / "id_ed25519"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def up(self) -> "Sandbox":
        """Starts every node (in parallel) and writes the inventory."""
        require_root_and_tools()
        if (self.dir / STATE_FILE).exists():
            raise SandboxError(f"a sandbox already runs in {self.dir}: `python3 {__file__} down --dir {self.dir}` first")
        if any(p.arch == "aarch64" for p in self.profiles):
            ensure_qemu_aarch64()
        for release in {p.containerd for p in self.profiles if p.containerd}:
            containerd_release_files(release)  # fetched once, before any node starts
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        if self.stop_at_exit:
            atexit.register(self.down)
        self.state_root = self._make_state_root()
        self.nodes = [
            Node(f"worker{i}", profile, self.state_root / f"worker{i}")
            for i, profile in enumerate(self.profiles, start=1)
        ]
        self._write_state()  # a pidfile as early as possible: `down` works even if `up` dies
        apt_cache = build_apt_caches(self.state_root / "apt-cache")
        keygen = [ssh_keygen(self.private_key, wait=False)]
        for node in self.nodes:
            (node.state / "ssh").mkdir(parents=True)
            keygen.append(ssh_keygen(node.state / "ssh/ssh_host_ed25519_key", wait=False))
        for p in keygen:
            if p.wait() != 0:
                raise SandboxError(f"ssh-keygen failed: {p.args}")
        if apt_cache is not None and apt_cache.wait() != 0:
            shutil.rmtree(self.state_root / "apt-cache", ignore_errors=True)  # nodes parse the index themselves
        for node in self.nodes:
            copy_hardware(node.profile.hardware, node.hardware)
        self._start(self.nodes)
        return self

    def down(self):
        """Stops every process of every node and removes the node state."""
        for node in self.nodes:
            stop_node(node)
        if self.state_root and self._own_state_root:
            shutil.rmtree(self.state_root, ignore_errors=True)
        link = self.dir / "nodes"
        if link.is_symlink():
            link.unlink()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for name in (STATE_FILE, "inventory.ini", "known_hosts", "id_ed25519", "id_ed25519.pub"):
                try:
                    (self.dir / name).unlink()
                except FileNotFoundError:
                    pass
            shutil.rmtree(self.dir / "logs", ignore_errors=True)
            shutil.rmtree(self.dir / "nodes", ignore_errors=True)
        self.nodes = []
        if self.stop_at_exit:
            atexit.unregister(self.down)

    def reset(self, names=None):
        """Makes nodes fresh again: stops them, empties their upper directory,
        copies their hardware profile again and starts them on the same port
        with the same host key."""
        nodes = [n for n in self.nodes if names is None or n.name in names]
        for node in nodes:
            stop_node(node)
        for node in nodes:
            for sub in ("upper", "work", "root", "hw"):
                shutil.rmtree(node.state / sub, ignore_errors=True)
            copy_hardware(node.profile.hardware, node.hardware)
        self._start(nodes, keep_ports=True)

    @classmethod
    def load(cls, directory) -> "Sandbox":
        """The sandbox that `up` started in `directory`, from its state file."""
        directory = Path(directory).resolve()
        try:
            data = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            raise SandboxError(f"no sandbox in {directory} (no {STATE_FILE})") from None
        sb = cls([], directory, stop_at_exit=False)
        sb._own_dir = data.get("own_dir", False)
        sb.state_root = Path(data["state_root"])
        sb._own_state_root = data["own_state_root"]
        sb.nodes = [Node.from_json(n) for n in data["nodes"]]
        sb.profiles = [n.profile for n in sb.nodes]
        return sb

    # -- internals -------------------------------------------------------------

    def _make_state_root(self) -> Path:
        if filesystem_type(self.dir) == "tmpfs":
            root = self.dir / "nodes"
            root.mkdir()
            return root
        if filesystem_type(TMPFS_DIR) != "tmpfs":
            raise SandboxError(f"{TMPFS_DIR} is not a tmpfs: set GPU_SANDBOX_TMPFS to a tmpfs directory for the node state")
        root = Path(tempfile.mkdtemp(prefix="gpu-sandbox-", dir=TMPFS_DIR))
        self._own_state_root = True
        (self.dir / "nodes").symlink_to(root)
        return root

    def _write_state(self):
        data = {
            "dir": str(self.dir),
            "own_dir": self._own_dir,
            "state_root": str(self.state_root),
            "own_state_root": self._own_state_root,
            "nodes": [n.to_json() for n in self.nodes],
        }
        tmp = self.dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.rename(self.dir / STATE_FILE)

    def _start(self, nodes, keep_ports=False):
        """Starts `nodes` at once, then waits for each to answer an SSH banner.
        A node whose port was taken in the meantime gets another one (then
        the inventory and known_hosts change: they are written here)."""
        if not keep_ports:
            for node, port in zip(nodes, free_ports(len(nodes))):
                node.port = port
        pending = list(nodes)
        for _ in range(5):
            for node in pending:
                self._seed(node)
                node.proc = self._spawn(node)
                node.pid = node.proc.pid
            self._write_state()
            failed = wait_for_banners(pending, START_TIMEOUT)
            retry = [n for n in failed if "Address already in use" in self._log(n)]
            broken = [n for n in failed if n not in retry]
            if broken:
                details = "\n".join(f"--- {n.name} ({self.dir}/logs/{n.name}.log):\n{self._log(n)[-2000:]}" for n in broken)
                raise SandboxError(f"{len(broken)} node(s) did not start:\n{details}")
            if not retry:
                break
            for node, port in zip(retry, free_ports(len(retry))):
                stop_node(node)
                for sub in ("upper", "work"):
                    shutil.rmtree(node.state / sub, ignore_errors=True)
                (self.dir / "logs" / f"{node.name}.log").unlink()
                node.port = port
            pending = retry
        else:
            raise SandboxError("could not find free ports for the sandbox nodes")
        for node in nodes:
            node.mnt_ns = os.readlink(f"/proc/{node.pid}/ns/mnt")
        self._write_state()
        self._write_known_hosts()
        self.inventory.write_text(self.inventory_text())

    def _log(self, node) -> str:
        try:
            return (self.dir / "logs" / f"{node.name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _seed(self, node: Node):
        """Files the node has before it starts, put in its upper directory: its
        sshd config and host key, root's authorized key, the whiteouts of
        HIDDEN, and the stand-ins of its profile."""
        upper = node.upper
        upper.mkdir(parents=True, exist_ok=True)
        (node.state / "work").mkdir(exist_ok=True)
        (node.state / "root").mkdir(exist_ok=True)
        for rel in HIDDEN:
            hide(upper, rel)
        for rel in PCI_IDS:
            own = node.hardware / rel
            if own.is_file():
                mkparents(upper, rel)
                shutil.copyfile(own, upper / rel)
                os.chmod(upper / rel, 0o644)
            else:  # hidden whether or not this machine has one: the same node on any machine
                hide(upper, rel)
        home = upper / "root"
        if not home.exists():
            home.mkdir(mode=0o700)
            os.setxattr(home, "trusted.overlay.opaque", b"y")
            for name, source in ROOT_DOTFILES.items():
                if os.path.exists(source):
                    shutil.copyfile(source, home / name)
        put(upper, "etc/ssh/sshd_config", SSHD_CONFIG.format(name=node.name, profile=node.profile.name, port=node.port), 0o644)
        key = node.state / "ssh/ssh_host_ed25519_key"
        put(upper, "etc/ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
        put(upper, "etc/ssh/ssh_host_ed25519_key.pub", key.with_suffix(".pub").read_text(), 0o644)
        pub = Path(f"{self.private_key}.pub").read_text()
        put(upper, "root/.ssh/authorized_keys", pub, 0o600, dir_mode=0o700)
        if node.profile.container_runtime:
            put(upper, "usr/bin/nvidia-container-runtime", RUNTIME_STAND_IN, 0o755)
        if node.profile.arch != "x86_64":
            mkparents(upper, UNAME_REAL.lstrip("/"))
            shutil.copy2(shutil.which("uname") or "/usr/bin/uname", upper / UNAME_REAL.lstrip("/"))
            put(upper, "usr/bin/uname", UNAME_WRAPPER.format(arch=node.profile.arch, real=UNAME_REAL), 0o755)
        apt_cache = self.state_root / "apt-cache"
        if all((apt_cache / name).exists() for name in APT_CACHES):
            for name in APT_CACHES:
                mkparents(upper, f"var/cache/apt/{name}")
                if not (upper / "var/cache/apt" / name).exists():
                    os.link(apt_cache / name, upper / "var/cache/apt" / name)
            put(upper, "etc/apt/apt.conf.d/zzzz-gpu-sandbox-pkgcache", APT_CACHE_CONF, 0o644)
        if node.profile.containerd:
            files = containerd_release_files(node.profile.containerd)
            for _src, dst in files["binds"]:
                (upper / dst.lstrip("/")).mkdir(parents=True, exist_ok=True)  # the mount point
            links = [(f"usr/bin/{b}", f"{RELEASE_MOUNT}/{b}") for b in CONTAINERD_BINARIES]
            links.append(("usr/sbin/runc", f"{RUNC_MOUNT}/runc"))
            for rel, target in links:
                mkparents(upper, rel)
                if not os.path.lexists(upper / rel):
                    os.symlink(target, upper / rel)
            if not (upper / "etc/containerd/config.toml").exists():
                put(upper, "etc/containerd/config.toml", files["config"], 0o644)
        for node_path, text, *mode in node.profile.driver_files + node.profile.files:
            put(upper, node_path.lstrip("/"), text, mode[0] if mode else 0o644)
        for node_path, target in node.profile.links:
            mkparents(upper, node_path.lstrip("/"))
            if not os.path.lexists(upper / node_path.lstrip("/")):
                os.symlink(target, upper / node_path.lstrip("/"))
        for node_path, major, minor in node.profile.devices:
            dev = node.hardware / node_path.lstrip("/")
            dev.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(dev):
                os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(major, minor))

    def _spawn(self, node: Node) -> subprocess.Popen:
        log = open(self.dir / "logs" / f"{node.name}.log", "ab")
        try:
            return subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", NODE_SCRIPT],
                env={"S": str(node.state), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                     "BINDS": "\n".join(f"{src}|{dst}" for src, dst in node_binds(node))},
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                # Own session: a Ctrl-C in the terminal is for the test run;
                # the nodes are stopped by down(), by pid.
                start_new_session=True,
                # Pytest runs: if this process is killed outright, the kernel
                # kills the node's sshd too. The `up` command leaves nodes running.
                preexec_fn=die_with_parent if self.stop_at_exit else None,
            )
        finally:
            log.close()

    def _write_known_hosts(self):
        lines = []
        for node in self.nodes:
            key_type, key = (node.state / "ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
            lines.append(f"[127.0.0.1]:{node.port} {key_type} {key}\n")
        self.known_hosts.write_text("".join(lines))

    def inventory_text(self) -> str:
        lines = [
            f"# Written by tests/sandbox.py: {len(self.nodes)} sandbox node(s); `down --dir {self.dir}` stops them.",
            "# sandbox_profile is for people reading this file: detection decides GPU mode.",
            "[workers]",
        ]
        for node in self.nodes:
            release = f" sandbox_containerd={node.profile.containerd}" if node.profile.containerd else ""
            lines.append(f"{node.name} ansible_host=127.0.0.1 ansible_port={node.port} "
                         f"sandbox_profile={node.profile.name}{release}")
        lines += [
            "",
            "[workers:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={self.private_key}",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes'",
            "ansible_python_interpreter=/usr/bin/python3",
            "# Sandbox nodes have no package repositories to reach: packages the",
            "# roles need are installed already (the host's), NVIDIA's are stand-ins.",
            "os_packages_update_cache=false",
            "nvidia_container_toolkit_install=false",
            "# containerd is a real release bind-mounted into the node (sandbox_containerd),",
            "# not a package: the role only configures it.",
            *(["containerd_install=false"] if all(n.profile.containerd for n in self.nodes) else []),
            "",
        ]
        return "\n".join(lines)


# -- helpers -------------------------------------------------------------------


def profile_of(spec: str) -> Profile:
    """`h200` or `h200@2.1` (that profile with containerd 2.1; `@none`: no
    release, this machine's containerd)."""
    name, _, release = spec.partition("@")
    if name not in PROFILES:
        raise SandboxError(f"unknown profile {name}; known: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if release:
        if release != "none" and release not in containerd_releases.RELEASES:
            raise SandboxError(f"unknown containerd release {release} in {spec}; "
                               f"known: {', '.join(containerd_releases.RELEASES)}, none")
        profile = profile.variant(containerd=None if release == "none" else release)
    return profile


_RELEASE_FILES: dict = {}


def containerd_release_files(release: str) -> dict:
    """A release's bind mounts (host file, node path) and `config default`."""
    if release not in _RELEASE_FILES:
        try:
            bindir = containerd_releases.release_bin(release)
            runc = containerd_releases.runc_bin()
        except containerd_releases.ReleaseError as e:
            raise SandboxError(f"containerd {release}: {e}") from None
        binds = [(str(bindir), RELEASE_MOUNT), (str(runc.parent), RUNC_MOUNT)]
        out = subprocess.run([str(bindir / "containerd"), "config", "default"], cwd="/",
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise SandboxError(f"containerd {release} config default failed: {out.stderr}")
        _RELEASE_FILES[release] = {"binds": binds, "config": out.stdout}
    return _RELEASE_FILES[release]


def node_binds(node: Node) -> list:
    if not node.profile.containerd:
        return []
    return containerd_release_files(node.profile.containerd)["binds"]


def require_root_and_tools():
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root (mount namespaces, overlayfs)")
    missing = [t for t in ("unshare", "ssh-keygen", "chroot") if not shutil.which(t)]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        raise SandboxError(f"missing {', '.join(missing)}: run `make deps-system`")


def ensure_qemu_aarch64():
    """Lets this machine run aarch64 binaries (the modules of aarch64 nodes)
    through binfmt_misc and qemu-aarch64-static."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True)
    if (binfmt / "qemu-aarch64").exists():
        return
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists():
        raise SandboxError(f"{conf} is missing: install qemu-user-static (`make deps-system`) for aarch64 nodes")
    rule = next(line.strip() for line in conf.read_text().splitlines() if line.strip() and not line.startswith("#"))
    try:
        (binfmt / "register").write_text(rule)
    except OSError as e:
        if e.errno != errno.EEXIST:  # registered by someone else meanwhile
            raise


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on, from /proc/self/mountinfo."""
    path = str(Path(path).resolve())
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].replace("\\040", " ")
        fs = fields[fields.index("-") + 1]
        if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best):
            best, fstype = mount_point, fs
    return fstype


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel says are free now (bound at once, then freed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_banners(nodes, timeout: float) -> list[Node]:
    """Waits until every node's port answers with an SSH banner; returns the
    nodes whose process exited instead."""
    deadline = time.monotonic() + timeout
    waiting, failed = list(nodes), []
    while waiting:
        for node in list(waiting):
            if node.proc is not None and node.proc.poll() is not None:
                waiting.remove(node)
                failed.append(node)
            elif ssh_banner(node.port):
                waiting.remove(node)
        if waiting:
            if time.monotonic() > deadline:
                raise SandboxError(f"no SSH banner after {timeout:.0f}s from {', '.join(n.name for n in waiting)}")
            time.sleep(0.02)
    return failed


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def ssh_keygen(path: Path, wait=True):
    p = subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if wait and p.wait() != 0:
        raise SandboxError(f"ssh-keygen failed for {path}")
    return p


def build_apt_caches(dest: Path):
    """Starts building apt's binary caches of this machine's package index
    into `dest`; None where there is no apt."""
    if not shutil.which("apt-cache"):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["apt-cache", "-q", f"-oDir::Cache::pkgcache={dest}/pkgcache.bin",
         f"-oDir::Cache::srcpkgcache={dest}/srcpkgcache.bin", "gencaches"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def copy_hardware(profile: Path, dest: Path):
    """A private copy of a profile's hardware files; empty folders the profile
    lacks are created (the node must not see this machine's real ones)."""
    if not profile.is_dir():
        raise SandboxError(f"hardware profile {profile} is missing")
    shutil.copytree(profile, dest, symlinks=True, ignore=shutil.ignore_patterns(".keep"))
    for sub in ("sys/bus/pci", "sys/module", "sys/firmware", "proc/driver"):
        (dest / sub).mkdir(parents=True, exist_ok=True)


def mkparents(upper: Path, rel: str, dir_mode: int | None = None):
    """Creates the folders above `rel` in an upper directory with the mode and
    owner the same folder has on this machine (an upper folder's attributes
    win over the lower one's)."""
    parts = Path(rel).parts[:-1]
    for i in range(1, len(parts) + 1):
        d = upper.joinpath(*parts[:i])
        if d.is_dir():
            continue
        lower = Path("/").joinpath(*parts[:i])
        d.mkdir()
        if lower.is_dir():
            st = lower.stat()
            os.chmod(d, stat.S_IMODE(st.st_mode))
            os.chown(d, st.st_uid, st.st_gid)
        elif dir_mode is not None:
            os.chmod(d, dir_mode)


def hide(upper: Path, rel: str):
    """Hides a path of this machine from a node: an overlayfs whiteout."""
    mkparents(upper, rel)
    if not os.path.lexists(upper / rel):
        os.mknod(upper / rel, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def put(upper: Path, rel: str, text: str, mode: int, dir_mode: int | None = None):
    mkparents(upper, rel, dir_mode)
    path = upper / rel
    path.write_text(text)
    os.chmod(path, mode)


def die_with_parent():
    """In the child, before exec: SIGKILL when the process that started it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def processes_in_namespace(mnt_ns: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") == mnt_ns:
                pids.append(int(entry))
        except OSError:
            continue  # exited meanwhile, or a zombie
    return pids


def stop_node(node: Node, timeout: float = 5.0):
    """Ends every process of the node (its sshd, the sessions it forked), by
    pid: the mount namespace, and with it the node's mounts, goes with the
    last one. Nothing is unmounted on the host: nothing was mounted there."""
    own_ns = os.readlink("/proc/self/ns/mnt")
    ns = node.mnt_ns
    if not ns and node.pid:
        try:  # stopped while starting: the ns is the sshd's, if it got that far
            ns = os.readlink(f"/proc/{node.pid}/ns/mnt")
        except OSError:
            ns = ""
    in_ns = set(processes_in_namespace(ns)) if ns and ns != own_ns else set()
    listener = {node.pid} if node.pid and (node.pid in in_ns or (node.proc and node.proc.poll() is None)) else set()
    # Sessions first, so that the listener reaps them; then the listener,
    # which its parent reaps (this process, unless `up` ran in another one).
    for targets, strict in ((in_ns - listener, True), (listener, False)):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (1.0 if strict else timeout)
            while targets and time.monotonic() < deadline:
                if node.proc is not None:
                    node.proc.poll()  # reap our own child
                targets = {p for p in targets if alive(p, zombie=strict)}
                if targets:
                    time.sleep(0.02)
            if not targets:
                break
    if node.proc is not None:
        try:
            node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        node.proc = None
    node.pid, node.mnt_ns = 0, ""


def alive(pid: int, zombie: bool = False) -> bool:
    """Running; with zombie=True also a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return zombie or f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def tree_digest(top: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Node path -> digest of every entry under `top`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            node_path = "/" + str(full.relative_to(top))
            if any(node_path == e or node_path.startswith(e.rstrip("/") + "/") for e in exclude):
                continue
            st = os.lstat(full)
            h = hashlib.sha256(f"{stat.S_IFMT(st.st_mode)}:{stat.S_IMODE(st.st_mode):o}:{st.st_uid}:{st.st_gid}".encode())
            if stat.S_ISREG(st.st_mode):
                h.update(full.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(full).encode())
            elif stat.S_ISCHR(st.st_mode):
                h.update(str(st.st_rdev).encode())
            out[node_path] = h.hexdigest()
    return out


# -- command line ---------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start nodes, write DIR/inventory.ini and print it")
    up.add_argument("--profiles", default="cpu,h200,hgx-h100",
                    help=f"comma-separated, one node each, in order (known: {', '.join(PROFILES)}); "
                         f"PROFILE@RELEASE picks the node's containerd ({', '.join(containerd_releases.RELEASES)}, "
                         f"none; default {DEFAULT_CONTAINERD})")
    up.add_argument("--dir", required=True, help="where the inventory, keys, logs and state file go")
    down = sub.add_parser("down", help="stop the nodes that `up` started in DIR")
    down.add_argument("--dir", required=True)
    sub.add_parser("profiles", help="list the profiles")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
            started = time.monotonic()
            sb = Sandbox(profiles, args.dir, stop_at_exit=False)
            try:
                sb.up()
            except BaseException:
                sb.down()
                raise
            print(sb.inventory.read_text(), end="")
            print(f"# {len(sb.nodes)} node(s) up in {time.monotonic() - started:.2f}s; inventory: {sb.inventory}",
                  file=sys.stderr)
        elif args.command == "down":
            sb = Sandbox.load(args.dir)
            count = len(sb.nodes)
            sb.down()
            print(f"stopped {count} node(s) of {args.dir}", file=sys.stderr)
        else:
            for p in PROFILES.values():
                print(f"{p.name:10} {p.arch:8} {p.description}")
    except SandboxError as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
