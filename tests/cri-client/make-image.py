#!/usr/bin/env python3
"""Builds a tiny container image as an OCI image layout tarball, for
`ctr -n k8s.io images import`: no registry, nothing downloaded.

    make-image.py --busybox PATH [--add HOST_PATH:IMAGE_PATH]... --name REF OUT.tar

The image holds a static busybox (/bin/busybox and links for its applets)
and whatever `--add` gives (e.g. glibc's loader and libraries, so that the
driver's dynamically linked nvidia-smi runs in it). Its environment is a
CUDA image's: LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64
and /usr/local/nvidia/bin on PATH, which is where CDI mounts the driver's
files on a node that keeps them there. Its default command idles until
SIGTERM, so the same image serves as the pod sandbox ("pause") image.
Standard library only; the output is the same bytes for the same inputs.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

APPLETS = ["sh", "ls", "cat", "echo", "sleep", "true", "false", "env", "test", "id", "stat", "head", "wc", "grep"]
ENV = [
    "PATH=/usr/local/nvidia/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
]
IDLE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"]
MTIME = 0


def tar_info(name, kind=tarfile.REGTYPE, mode=0o755, size=0, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, MTIME
    info.uid = info.gid = 0
    return info


def layer(busybox: str, adds: list[tuple[str, str]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()

        def parents(path):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    tar.addfile(tar_info(d, tarfile.DIRTYPE))

        for d in ("proc", "sys", "dev", "tmp", "etc", "run"):
            parents(f"{d}/x")
        data = open(busybox, "rb").read()
        parents("bin/busybox")
        tar.addfile(tar_info("bin/busybox", size=len(data)), io.BytesIO(data))
        for applet in APPLETS:
            tar.addfile(tar_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        for host, image in adds:
            image = image.strip("/")
            parents(image)
            if os.path.islink(host) and not os.path.exists(host):
                raise SystemExit(f"make-image: {host} is a broken link")
            data = open(host, "rb").read()  # follows links: the image gets the file
            tar.addfile(tar_info(image, mode=os.stat(host).st_mode & 0o777, size=len(data)), io.BytesIO(data))
    return raw.getvalue()


def blob(tar, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    tar.addfile(tar_info(f"blobs/sha256/{digest}", mode=0o644, size=len(data)), io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busybox", required=True, help="a static busybox binary")
    ap.add_argument("--add", action="append", default=[], help="HOST_PATH:IMAGE_PATH")
    ap.add_argument("--name", required=True, help="the image reference, e.g. docker.io/library/cdi-test:1")
    ap.add_argument("out")
    args = ap.parse_args()
    adds = [tuple(a.split(":", 1)) for a in args.add]
    uncompressed = layer(args.busybox, adds)
    compressed = gzip.compress(uncompressed, mtime=0)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ENV, "Cmd": IDLE, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(uncompressed).hexdigest()}"]},
    }, sort_keys=True).encode()
    with tarfile.open(args.out, "w", format=tarfile.PAX_FORMAT) as tar:
        layer_digest, layer_size = blob(tar, compressed)
        config_digest, config_size = blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        }, sort_keys=True).encode()
        manifest_digest, manifest_size = blob(tar, manifest)
        index = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
                "annotations": {"io.containerd.image.name": args.name,
                                "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1]},
            }],
        }, sort_keys=True).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index)):
            tar.addfile(tar_info(name, mode=0o644, size=len(data)), io.BytesIO(data))
    print(f"{args.out}: {args.name}, layer {layer_size} bytes")


if __name__ == "__main__":
    main()
