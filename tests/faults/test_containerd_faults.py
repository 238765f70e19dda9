"""Fault injection for containerd_runtime_config (issue 14): the shipped
binary (dist/x86_64), run as Ansible runs a module (`MODULE ARGS_FILE`), with
the real containerd 1.7.24 validating (tests/containerd_releases.py), against
killed runs, a full disk, read-only and immutable files, concurrent runs,
symlinks and hostile option values.

Each test counts the cases it tried and prints `FAULTS <category>: tried N,
held N` (run with -s to see them; README's Reliability section quotes them).
Every case checks the same guarantees: the config containerd reads is always
a whole file containerd accepts (old or new, never half), a failed run
writes nothing (no file, folder, temporary or backup) and says so, and no
temporary or backup is ever where an `imports` glob would load it.
"""
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests"))
import containerd_releases  # noqa: E402

MODULE = REPO / "dist" / "x86_64" / "containerd_runtime_config"


def report(category: str, tried: int, held: int):
    print(f"\nFAULTS {category}: tried {tried}, held {held}")


@pytest.fixture(scope="module")
def containerd():
    if not MODULE.exists():
        pytest.fail(f"{MODULE} missing: run `make build` first")
    return str(containerd_releases.release_bin("1.7") / "containerd")


class Node:
    """A scratch /etc/containerd with a conf.d/* import (the glob that
    loads any file put there) and a stand-in nvidia-container-runtime."""

    def __init__(self, root: Path, containerd: str):
        self.root = root
        self.containerd = containerd
        self.etc = root / "etc" / "containerd"
        self.etc.mkdir(parents=True)
        self.config = self.etc / "config.toml"
        self.conf_d = self.etc / "conf.d"
        self.runtime = root / "nvidia-container-runtime"
        self.runtime.write_text("#!/bin/sh\nexec runc \"$@\"\n")
        self.runtime.chmod(0o755)
        default = subprocess.run([containerd, "config", "default"], capture_output=True, text=True, cwd="/").stdout
        self.config.write_text(default.replace("imports = []", f'imports = ["{self.conf_d}/*"]'))

    def args(self, **extra) -> dict:
        args = {"path": str(self.config), "drop_in_path": str(self.conf_d / "99-nvidia.toml"),
                "runtime_path": str(self.runtime), "nvidia_runtime": True, "containerd_path": self.containerd}
        args.update(extra)
        return args

    def start(self, args: dict, wrap: list[str] = ()) -> subprocess.Popen:
        f = self.root / f"args-{random.getrandbits(32):08x}.json"
        f.write_text(json.dumps(args))
        return subprocess.Popen([*wrap, str(MODULE), str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, wrap: list[str] = (), **extra) -> dict:
        p = self.start(self.args(**extra), wrap)
        out, err = p.communicate(timeout=120)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(f"no JSON from the module (rc {p.returncode}): {out!r} {err!r}") from None

    def tree(self) -> dict:
        """Every entry under etc/: type, mode and content."""
        out = {}
        for dirpath, dirs, files in os.walk(self.etc):
            for name in dirs + files:
                p = Path(dirpath) / name
                st = os.lstat(p)
                out[str(p.relative_to(self.etc))] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777,
                                                     p.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
        return out

    def strays(self) -> list[str]:
        """Temporaries anywhere, and anything in conf.d but the drop-in."""
        found = [p.name for p in self.etc.iterdir() if p.name.endswith(".tmp")]
        if self.conf_d.exists():
            found += [f"conf.d/{p.name}" for p in self.conf_d.iterdir() if p.name != "99-nvidia.toml"]
        return found

    def containerd_reads(self) -> str:
        """The default runtime that containerd reads from the files now."""
        out = subprocess.run([self.containerd, "--config", str(self.config), "config", "dump"],
                             capture_output=True, text=True, cwd="/")
        assert out.returncode == 0, out.stderr
        import tomllib
        return tomllib.loads(out.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"]


@pytest.fixture
def node(tmp_path, containerd):
    return Node(tmp_path / "node", containerd)


KILLS = 60


@pytest.mark.parametrize("mode", ["merge", "drop_in"])
def test_killed_runs_leave_nothing_stray_and_never_half_a_file(node, mode):
    """SIGKILL at a random moment of each run (what a dropped SSH session or
    an Ansible timeout does), alternating two settings so that every run
    writes. After each kill containerd reads a whole file; after the loop
    one run removes every temporary the killed ones left."""
    held = 0
    for i in range(KILLS):
        p = node.start(node.args(mode=mode, systemd_cgroup=bool(i % 2)))
        time.sleep(random.uniform(0, 0.08))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
        assert node.containerd_reads() in ("runc", "nvidia")
        assert not [s for s in node.strays() if s.startswith("conf.d/")], node.strays()
        held += 1
    final = node.run(mode=mode)
    assert final["failed"] is False, final
    assert node.strays() == [], node.strays()
    assert node.containerd_reads() == "nvidia"
    report(f"killed runs ({mode})", KILLS, held)


def test_concurrent_runs_end_in_a_whole_config(node):
    """Eight runs at once on the same files, with different settings."""
    procs = [node.start(node.args(mode="drop_in", systemd_cgroup=bool(i % 2))) for i in range(8)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        results.append(json.loads(out))
    assert all("failed" in r for r in results)
    assert node.containerd_reads() == "nvidia"
    assert node.strays() == []
    report("concurrent runs", len(procs), len(procs))


def in_namespace(script: str) -> list[str]:
    """A wrapper running the module in a private mount namespace after
    `script` (mounts there vanish with it)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script + '\nexec "$@"', "sh"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_full_disk_fails_cleanly(node):
    """The config folder on a tiny tmpfs, filled to within N bytes: the run
    fails naming the problem, and the folder is exactly as before."""
    free_sizes = [0, 512, 4096, 8192, 16384]
    held = failed = 0
    for free in free_sizes:
        for mode in ("merge", "drop_in", "template"):
            # Copy the folder onto a 64 KiB tmpfs mounted over it, fill it.
            script = (f'set -e; cp -a {node.etc} /tmp/cr-save-$$; mount -t tmpfs -o size=64k tmpfs {node.etc}; '
                      f'cp -a /tmp/cr-save-$$/. {node.etc}/; rm -rf /tmp/cr-save-$$; '
                      f'avail=$(df -B1 --output=avail {node.etc} | tail -1); '
                      f'fill=$((avail - {free})); [ $fill -gt 0 ] && head -c $fill /dev/zero > {node.etc}/filler 2>/dev/null || true; '
                      f'sync')
            wrap = in_namespace(script + f'; set +e; "$@" > {node.root}/out.json; ls -A {node.etc} {node.etc}/conf.d 2>/dev/null > {node.root}/ls.txt; '
                                f'cat {node.etc}/config.toml > {node.root}/config.after; exit 0\n: ')
            before = node.config.read_text()
            node.start(node.args(mode=mode), wrap).communicate(timeout=120)
            out = json.loads((node.root / "out.json").read_text())
            listing = (node.root / "ls.txt").read_text().split()
            after = (node.root / "config.after").read_text()
            if out["failed"]:
                failed += 1
                # The drop-in may be in (conf.d/* loads it) before the main file fails.
                assert "nothing written" in out["msg"] or "already written" in out["msg"], out["msg"]
                assert after == before
                assert not [n for n in listing if n.endswith(".tmp") or n.endswith("~")], listing
            else:
                assert out["changed"] is True  # room enough: it wrote
                assert mode == "drop_in" or after != before
            held += 1
    report(f"full disk ({failed} runs out of space, the rest with room)", len(free_sizes) * 3, held)


@pytest.mark.skipif(os.geteuid() != 0, reason="read-only mounts and chattr need root")
def test_read_only_and_immutable_files_fail_cleanly(node):
    held = tried = 0
    # The folder mounted read-only.
    for mode in ("merge", "drop_in", "template"):
        before = node.tree()
        out = node.run(wrap=in_namespace(f"mount --bind -o ro {node.etc} {node.etc}"), mode=mode)
        tried += 1
        assert out["failed"] is True and "nothing written" in out["msg"], out
        assert node.tree() == before
        held += 1
    # An immutable config.toml (chattr +i) in a writable folder: the backup
    # made before the failed rename is removed again.
    if subprocess.run(["chattr", "+i", str(node.config)], capture_output=True).returncode == 0:
        try:
            for mode in ("merge", "template"):
                before = node.tree()
                out = node.run(mode=mode)
                tried += 1
                assert out["failed"] is True and "nothing written" in out["msg"], out
                assert node.tree() == before, "an unreported backup or temporary was left"
                held += 1
        finally:
            subprocess.run(["chattr", "-i", str(node.config)])
    report("read-only and immutable files", tried, held)


def test_refused_runs_write_nothing(node, tmp_path):
    """Runs reported as failing write nothing: no conf.d, no backup, no
    temporary, no folder."""
    cases = []
    node.config.write_text(node.config.read_text().replace(f'imports = ["{node.conf_d}/*"]', "imports = [1]"))
    cases.append(("drop_in over imports = [1]", dict(mode="drop_in")))
    cases.append(("drop_in_path = path via ..", dict(mode="drop_in", drop_in_path=str(node.etc / "x" / ".." / "config.toml"))))
    cases.append(("NUL in runtime_path", dict(mode="merge", runtime_path="/usr/bin/nvidia\u0000x", require_runtime_binary=False)))
    cases.append(("NUL in path", dict(mode="merge", path=str(node.config) + "\u0000x")))
    cases.append(("newline in drop_in_path", dict(mode="drop_in", drop_in_path=str(node.conf_d / "a\nb.toml"))))
    cases.append(("1 MB runtime_name", dict(mode="merge", runtime_name="a" * 1_000_000)))
    cases.append(("upper-case runtime_name", dict(mode="merge", runtime_name="NVIDIA")))
    cases.append(("runtime_name with a dot", dict(mode="merge", runtime_name="nvidia.gpu")))
    cases.append(("runtime_name of 64 chars", dict(mode="merge", runtime_name="a" * 64)))
    cases.append(("runtime_name runc", dict(mode="merge", runtime_name="runc")))
    cases.append(("enable_cdi on 1.6", dict(mode="merge", enable_cdi=True,
                                             containerd_path=str(containerd_releases.release_bin("1.6") / "containerd"))))
    held = 0
    for name, args in cases:
        before = node.tree()
        out = node.run(**args)
        assert out["failed"] is True, (name, out)
        assert len(out["msg"]) < 2000, (name, "the message repeats a huge value")
        assert node.tree() == before, name
        assert not node.conf_d.exists(), name
        held += 1
    report("refused input writes nothing", len(cases), held)


def test_a_symlinked_path_is_followed(node):
    """The link stays a link; the file it names gets the new content, and the
    backup is of that file's old content (not a link to the link)."""
    real = node.root / "managed" / "containerd.toml"
    real.parent.mkdir()
    real.write_text(node.config.read_text())
    node.config.unlink()
    node.config.symlink_to(real)
    before = real.read_text()
    out = node.run(mode="merge")
    assert out["failed"] is False, out
    assert node.config.is_symlink() and os.readlink(node.config) == str(real)
    assert "nvidia-container-runtime" in real.read_text()
    assert Path(out["backup_file"]).read_text() == before
    assert not Path(out["backup_file"]).is_symlink()
    assert node.containerd_reads() == "nvidia"
    again = node.run(mode="merge")
    assert again["changed"] is False
    report("symlinked path", 2, 2)
