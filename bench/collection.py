#!/usr/bin/env python3
"""`make bench-collection`: what the collection tarball costs a user: its size
(what of it is module binaries) and the time to install it with
`ansible-galaxy collection install <tarball>`, wall clock and the controller's
CPU (user + system of ansible-galaxy and its children), each ansible-core
release of the supported range in its clean venv (`make venvs`), into a fresh
HOME every time. Prints a Markdown table for README.

    .venv/bin/python bench/collection.py dist/gpunode-k8s_gpu-0.1.0.tar.gz [--repeats 5]

Python standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/e2e"))

from ansible_run import tested_releases  # noqa: E402


def sizes(tarball: Path) -> dict:
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        files = {m.name for m in members}
        assert "FILES.json" in files, f"{tarball} is not a collection tarball"
    binaries = sum(m.size for m in members if m.name.startswith("dist/"))
    return {"compressed": tarball.stat().st_size, "unpacked": sum(m.size for m in members),
            "binaries": binaries, "files": len(members)}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def install_once(bin_dir: Path, tarball: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one install into a fresh HOME."""
    home = Path(tempfile.mkdtemp(prefix="gc-bench-"))
    try:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        cpu, wall = children_cpu(), time.monotonic()
        subprocess.run([str(bin_dir / "ansible-galaxy"), "collection", "install", str(tarball)],
                       cwd=home, env=env, check=True, capture_output=True)
        return time.monotonic() - wall, children_cpu() - cpu
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    args.tarball = args.tarball.resolve()
    s = sizes(args.tarball)
    print(f"{args.tarball.name}: {s['compressed']:,} bytes ({s['compressed'] / 2**20:.2f} MiB), "
          f"{s['unpacked']:,} bytes unpacked in {s['files']} files, of which module binaries "
          f"{s['binaries']:,} bytes ({100 * s['binaries'] / s['unpacked']:.0f}%)")
    print(f"\ninstall, median of {args.repeats} (machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):\n")
    print("| ansible-core | wall | controller CPU |")
    print("|---|---:|---:|")
    rows = []
    for release in tested_releases():
        if not release.installed():
            print(f"| {release.version} | not measured: `make venvs` | |")
            continue
        install_once(release.bin_dir, args.tarball)  # warm the page cache: every release starts alike
        runs = [install_once(release.bin_dir, args.tarball) for _ in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rows.append({"release": release.version, "wall_s": wall, "cpu_s": cpu})
        print(f"| {release.version} | {wall:.2f} s | {cpu:.2f} s |")
    out = REPO / "bench/out"
    out.mkdir(exist_ok=True)
    (out / "collection.json").write_text(json.dumps({"sizes": s, "install": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
