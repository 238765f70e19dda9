"""Builds the Ansible collection tarball from this repository (`make collection`).

The repository keeps the layout its users know (library/, plugins/action/,
roles/, playbooks/, dist/<arch>/); this script puts the same files where a
collection has them, in a staging folder, and lets `ansible-galaxy collection
build` make the tarball (its FILES.json holds the sha256 of every file, the
module binaries included):

    galaxy.yml, meta/runtime.yml, README.md   metadata (version: Cargo.toml's)
    plugins/modules/<module>, <module>.yml    library/'s stub and documentation
    plugins/action/                           the action plugins (symlinks kept)
    roles/, playbooks/                        copied as they are
    playbooks/site.yml                        the root site.yml (gpunode.k8s_gpu.site)
    dist/<arch>/<module>                      the static binaries, where the
                                              action plugin looks (../../dist)

Usage: build.py --modules "a b" --arches "x86_64 aarch64" --output-dir dist
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# gpunode.k8s_gpu: the namespace names this project (GPU nodes), not NVIDIA,
# whose namespace (nvidia.nvidia_driver) is theirs to publish in; the name says
# what the collection sets up. Modules are gpunode.k8s_gpu.nvidia_gpu_facts...
NAMESPACE = "gpunode"
NAME = "k8s_gpu"
# The oldest ansible-core the roles and the action plugin are tested with
# (the roles' meta/main.yml say min_ansible_version 2.15 too).
REQUIRES_ANSIBLE = ">=2.15.0"
GALAXY = {
    "namespace": NAMESPACE,
    "name": NAME,
    "readme": "README.md",
    "authors": ["GPU nodes team"],
    "description": (
        "Sets up the GPU nodes of a Kubernetes cluster: NVIDIA GPU detection, containerd with the "
        "NVIDIA runtime, the NVIDIA driver; modules are static Rust binaries for x86_64 and aarch64."
    ),
    "license": ["Apache-2.0"],
    "tags": ["nvidia", "gpu", "kubernetes", "containerd", "infrastructure"],
    "dependencies": {},
}


class BuildError(Exception):
    pass


def workspace_version() -> str:
    """The one version of the project: Cargo.toml's [workspace.package]."""
    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def copy_modules(stage: Path, modules: list[str]) -> None:
    """Each module's stub and sidecar documentation into plugins/modules/
    (ansible-doc reads <module>.yml next to the module), and its action plugin
    (a symlink to binary_module.py, kept as a symlink by ansible-galaxy)."""
    (stage / "plugins/modules").mkdir(parents=True)
    (stage / "plugins/action").mkdir(parents=True)
    shutil.copy2(REPO / "plugins/action/binary_module.py", stage / "plugins/action/binary_module.py")
    for module in modules:
        for src in (REPO / "library" / module, REPO / "library" / f"{module}.yml", REPO / "plugins/action" / f"{module}.py"):
            if not src.exists():
                raise BuildError(f"{src.relative_to(REPO)} is missing: every module in the Makefile's MODULES needs it")
        shutil.copy(REPO / "library" / module, stage / "plugins/modules" / module)
        shutil.copy(REPO / "library" / f"{module}.yml", stage / "plugins/modules" / f"{module}.yml")
        shutil.copy2(REPO / "plugins/action" / f"{module}.py", stage / "plugins/action" / f"{module}.py",
                     follow_symlinks=False)


def copy_binaries(stage: Path, modules: list[str], arches: list[str]) -> None:
    missing = [f"dist/{a}/{m}" for a in arches for m in modules if not (REPO / "dist" / a / m).is_file()]
    if missing:
        raise BuildError(f"{', '.join(missing)} missing: `make build` builds them (a collection "
                         "without a node's architecture would fail on that node)")
    for arch in arches:
        (stage / "dist" / arch).mkdir(parents=True)
        for module in modules:
            shutil.copy2(REPO / "dist" / arch / module, stage / "dist" / arch / module)


def stage_collection(stage: Path, modules: list[str], arches: list[str]) -> str:
    """Fills `stage` with the collection's files; returns its version."""
    version = workspace_version()
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "meta").mkdir(parents=True)
    # JSON is YAML: galaxy.yml only feeds `ansible-galaxy collection build`
    # (the tarball has MANIFEST.json instead), so no YAML writer is needed.
    (stage / "galaxy.yml").write_text(json.dumps({**GALAXY, "version": version}, indent=2) + "\n")
    (stage / "meta/runtime.yml").write_text(f'---\nrequires_ansible: "{REQUIRES_ANSIBLE}"\n')
    shutil.copy2(REPO / "README.md", stage / "README.md")
    copy_modules(stage, modules)
    copy_binaries(stage, modules, arches)
    # Roles and playbooks as they are in the repository, whatever they hold.
    for folder in ("roles", "playbooks"):
        shutil.copytree(REPO / folder, stage / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.retry"))
    # The playbook users run sits at the repository's root, as the guide has
    # it; a collection's playbooks live in playbooks/ (gpunode.k8s_gpu.site).
    shutil.copy2(REPO / "site.yml", stage / "playbooks" / "site.yml")
    return version


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", required=True, help="the Makefile's MODULES, space-separated")
    parser.add_argument("--arches", required=True, help="the Makefile's ARCHES, space-separated")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the tarball goes")
    parser.add_argument("--stage-dir", type=Path, default=REPO / "target/collection",
                        help="scratch folder the collection is assembled in")
    parser.add_argument("--ansible-galaxy", default=str(Path(sys.executable).parent / "ansible-galaxy"))
    args = parser.parse_args(argv)
    stage = args.stage_dir / "ansible_collections" / NAMESPACE / NAME
    try:
        version = stage_collection(stage, args.modules.split(), args.arches.split())
    except BuildError as e:
        print(f"collection: {e}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([args.ansible_galaxy, "collection", "build", "--force", "--output-path",
                    str(args.output_dir), str(stage)], check=True, stdout=subprocess.DEVNULL)
    tarball = args.output_dir / f"{NAMESPACE}-{NAME}-{version}.tar.gz"
    print(f"{tarball} ({tarball.stat().st_size:,} bytes): {NAMESPACE}.{NAME} {version}, "
          f"modules {', '.join(args.modules.split())} for {', '.join(args.arches.split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
