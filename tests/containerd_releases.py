#!/usr/bin/env python3
"""Real containerd releases (and runc) for the tests, from Debian's archive.

    python3 tests/containerd_releases.py fetch          # all releases + runc
    python3 tests/containerd_releases.py bin 2.1        # prints the bin dir of 2.1
    python3 tests/containerd_releases.py runc           # prints the runc binary

    from containerd_releases import release_bin, runc_bin
    release_bin("1.7") / "containerd"                   # Path of containerd 1.7.24

Each release is fetched once with `apt-get download` through a private
sources list, state and cache (under .cache/containerd/ in the project, which
is gitignored): the system's apt configuration is never read for sources nor
written. The .deb is unpacked with `dpkg-deb -x`; the binaries run from any
folder (they are static or need only the host's glibc). The version of every
.deb is checked against the pin below after download, so an archive that
moved on fails loudly instead of silently testing another release.

Python standard library only; nothing else from the project is imported, so
other branches can take this file as it is.
"""
import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("CONTAINERD_RELEASES_CACHE",
                            Path(__file__).resolve().parent.parent / ".cache" / "containerd"))
ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# short name -> (Debian suite, package, exact version served by the archive).
# Pinned to what the archive served on 2026-12-01; bump deliberately. A suite
# that moves on (unstable does) may drop the exact Debian revision: then the
# suite's current package is taken only if its upstream version is the same
# (2.1.9 stays 2.1.9; a 2.1.10 fails), see _fetch.
RELEASES = {
    "1.6": ("bookworm", "containerd", "1.6.20~ds1-1+deb12u3"),
    "1.7": ("trixie", "containerd", "1.7.24~ds1-6+deb13u1"),
    "2.1": ("sid", "containerd", "2.1.9+ds1-5"),
}
# runc from bookworm: unstable's needs glibc 2.38, which Debian 12 lacks.
RUNC = ("bookworm", "runc", "1.1.5+ds1-1+deb12u1")


def upstream(version: str) -> str:
    """1.7.24~ds1-6+deb13u1 -> 1.7.24: the upstream release in a Debian version."""
    return re.split(r"[~+-]", version.split(":", 1)[-1], 1)[0]


class ReleaseError(RuntimeError):
    pass


def _apt_options(suite: str) -> list:
    """apt-get options that confine apt to a private tree for one suite."""
    root = CACHE / "apt" / suite
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d",
              "etc/preferences.d", "etc/apt.conf.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    sources = root / "etc" / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {ARCHIVE} {suite} main\n")
    status = root / "status"
    status.touch()
    return [
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", f"Dir::Etc::sourceparts={root / 'etc' / 'sources.list.d'}",
        "-o", f"Dir::Etc::preferences={root / 'etc' / 'preferences'}",
        "-o", f"Dir::Etc::preferencesparts={root / 'etc' / 'preferences.d'}",
        "-o", f"Dir::State={root}",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
        "-qq",
    ]


def _run(cmd: list, cwd=None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if proc.returncode != 0:
        raise ReleaseError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}")
    return proc.stdout


def _fetch(suite: str, package: str, version: str) -> Path:
    """The unpacked tree of package=version from suite (fetched once, then cached)."""
    dest = CACHE / f"{package}-{upstream(version)}"
    if (dest / ".complete").exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # parallel test runs fetch once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        opts = _apt_options(suite)
        _run(["apt-get", *opts, "update"])
        debs = CACHE / "debs"
        debs.mkdir(exist_ok=True)
        for old in debs.glob(f"{package}_*.deb"):
            old.unlink()
        try:
            _run(["apt-get", *opts, "download", f"{package}={version}"], cwd=debs)
        except ReleaseError:  # exact revision gone from a moving suite
            _run(["apt-get", *opts, "download", package], cwd=debs)
        deb = next(iter(debs.glob(f"{package}_*.deb")), None)
        if deb is None:
            raise ReleaseError(f"apt-get download {package}={version} gave no .deb")
        got = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        name = _run(["dpkg-deb", "-f", str(deb), "Package"]).strip()
        if name != package or upstream(got) != upstream(version):
            raise ReleaseError(f"{deb.name} is {name} {got}, expected {package} {version}")
        if got != version:
            print(f"containerd_releases: note: {suite} serves {package} {got}, pinned {version}"
                  " (same upstream release)", file=sys.stderr)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        (dest / ".complete").write_text(got + "\n")
        # The package lists (sid's are ~100 MB) are only needed to download.
        shutil.rmtree(CACHE / "apt" / suite / "lists", ignore_errors=True)
        return dest


def release_bin(version: str) -> Path:
    """The folder holding containerd, ctr, containerd-shim-runc-v2 of release
    "1.6", "1.7" or "2.1" (fetched on first use)."""
    if version not in RELEASES:
        raise ReleaseError(f"unknown containerd release {version!r}; known: {', '.join(RELEASES)}")
    bindir = _fetch(*RELEASES[version]) / "usr" / "bin"
    if not (bindir / "containerd").is_file():
        raise ReleaseError(f"{bindir}/containerd is missing")
    return bindir


def release_version(version: str) -> str:
    """The upstream containerd version of a release: "1.7" -> "1.7.24"."""
    return upstream(RELEASES[version][2])


def runc_bin() -> Path:
    """The runc binary (bookworm's 1.1.5)."""
    tree = _fetch(*RUNC)
    for cand in (tree / "usr" / "sbin" / "runc", tree / "usr" / "bin" / "runc"):
        if cand.is_file():
            return cand
    raise ReleaseError(f"no runc binary in {tree}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="fetch every release and runc")
    b = sub.add_parser("bin", help="print the bin dir of a release")
    b.add_argument("version", choices=sorted(RELEASES))
    sub.add_parser("runc", help="print the runc binary")
    sub.add_parser("list", help="print the pinned releases")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fetch":
            for v in RELEASES:
                print(f"{v}\t{RELEASES[v][2]}\t{release_bin(v)}")
            print(f"runc\t{RUNC[2]}\t{runc_bin()}")
        elif args.cmd == "bin":
            print(release_bin(args.version))
        elif args.cmd == "runc":
            print(runc_bin())
        else:
            for v, (suite, pkg, ver) in RELEASES.items():
                print(f"{v}\t{suite}\t{pkg}\t{ver}")
            print(f"runc\t{RUNC[0]}\t{RUNC[1]}\t{RUNC[2]}")
    except ReleaseError as e:
        print(f"containerd_releases: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
