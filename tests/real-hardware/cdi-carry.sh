#!/usr/bin/env bash
# Packs what tests/real-hardware/cdi-run.sh needs on the real GPU node, which
# has no network, into one folder (default .devcarry/ of the checkout the
# device tool sends; add `/.devcarry/` to its .git/info/exclude and pass
# carry: [".devcarry"]). Run here, from the repository root, after
# `make build cri-client`:
#   - repo.tar.gz: this commit (git archive) plus dist/x86_64 and the CRI client;
#   - containerd.tar.gz: Debian's containerd 2.1.9 (containerd, shim, ctr) and
#     runc 1.3.6 (unstable; runc needs glibc 2.38, which the node has);
#   - image.tar: a busybox image with Debian 12's glibc (for the driver's
#     nvidia-smi), built by tests/cri-client/make-image.py;
#   - whl/: ansible-core 2.19.14 and resolvelib (the node's Python 3.12 has
#     jinja2, PyYAML and packaging).
set -euo pipefail
OUT=${1:-.devcarry}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$WORK"/{lists/partial,cache/archives/partial,debs}
cat > "$WORK/sources.list" <<'EOF'
deb http://deb.debian.org/debian unstable main
deb http://deb.debian.org/debian bookworm main
EOF
apt_opts=(-o Dir::Etc::sourcelist="$WORK/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$WORK/lists"
          -o Dir::Cache="$WORK/cache" -o APT::Architecture=amd64)
apt-get "${apt_opts[@]}" update -qq
(cd "$WORK/debs" && apt-get "${apt_opts[@]}" download -q containerd=2.1.9+ds1-5 runc=1.3.6+ds1-1 \
    busybox-static=1:1.35.0-4+deb12u1+b1 libc6=2.36-9+deb12u14 2>&1 | grep -v unsandboxed || true)
for deb in "$WORK"/debs/*.deb; do
    name=$(basename "$deb"); dpkg-deb -x "$deb" "$WORK/x-${name%%_*}"
done
mkdir -p "$WORK/bin"
cp "$WORK"/x-containerd/usr/bin/{containerd,containerd-shim-runc-v2,ctr} "$WORK/x-runc/usr/sbin/runc" "$WORK/bin/"
tar -C "$WORK/bin" -czf "$OUT/containerd.tar.gz" .
libc="$WORK/x-libc6/lib/x86_64-linux-gnu"
adds=(--add "$libc/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2")
for lib in ld-linux-x86-64.so.2 libc.so.6 libdl.so.2 libm.so.6 libpthread.so.0 librt.so.1 libresolv.so.2; do
    adds+=(--add "$libc/$lib:/lib/x86_64-linux-gnu/$lib")
done
python3 tests/cri-client/make-image.py --busybox "$WORK/x-busybox-static/bin/busybox" "${adds[@]}" \
    --name docker.io/library/cdi-test:1 "$OUT/image.tar"
rm -rf "$OUT/whl"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform any -d "$OUT/whl" ansible-core==2.19.14 resolvelib==1.0.1
git archive --format=tar --prefix=repo/ HEAD > "$WORK/repo.tar"
mkdir -p "$WORK/extra/repo/dist/x86_64" "$WORK/extra/repo/bin"
cp dist/x86_64/* "$WORK/extra/repo/dist/x86_64/"
cp tests/cri-client/target/x86_64-unknown-linux-musl/release/cri-client "$WORK/extra/repo/bin/"
tar -C "$WORK/extra" -rf "$WORK/repo.tar" repo
gzip -9c "$WORK/repo.tar" > "$OUT/repo.tar.gz"
du -sh "$OUT"/* | sed 's/^/  /'
du -sh "$OUT"
