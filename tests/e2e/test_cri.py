"""The guide's step 4 through containerd's CRI API, as the kubelet would
(issue 12): on a sandbox GPU node per containerd release (1.6.20, 1.7.24,
2.1.9, Debian's), site.yml writes the config, that release's containerd is
started with it, and tests/cri-client starts a pod sandbox and a container
over CRI v1: with the default runtime and with runtime handler `nvidia`
both go through the configured BinaryName (the sandbox's stand-in
nvidia-container-runtime records each call and runs runc); with handler
`runc` they do not. On 2.1 (CDI on by default) a container given CDI device
nvidia.com/gpu=0 of the spec site.yml wrote gets the GPU's device file and
the driver's files.

Real: containerd of each release, its CRI plugin and shim, runc 1.1.5
(Debian 12's: unstable's runc needs glibc 2.38), the CRI client (k8s-cri),
the image (built here from busybox, imported with ctr, no registry). Two
settings differ from what site.yml wrote, in a copy of the file, because of
where the sandbox runs, not of what it tests:
- restrict_oom_score_adj = true: this machine runs the tests inside a
  container without CAP_SYS_RESOURCE, so the kernel refuses the pod's
  oom_score_adj of -998 that containerd asks for (runc: "failed to update
  /proc/self/oom_score_adj: Permission denied"); with the option containerd
  keeps its own score instead;
- /var/lib/containerd is a tmpfs: the node's root is an overlayfs, and an
  overlayfs upper directory (the snapshotter's) cannot live on another one.
site.yml runs with containerd_systemd_cgroup=false (the role's setting for
nodes without systemd, as the real H200 node is): sandbox nodes have no init.
Each node starts from its release's own `containerd config default`.
The node's "GPU" has no driver behind its device file: nothing opens it.
"""
import json
import shlex
import shutil
import subprocess
import sys

import pytest

from ansible_run import REPO, Ansible

sys.path.insert(0, str(REPO / "tests"))
import containerd_releases  # noqa: E402

RELEASES = ["1.6", "1.7", "2.1"]
HOSTS = {r: f"worker{i}" for i, r in enumerate(RELEASES, start=1)}
CRI_CLIENT = REPO / "tests/cri-client/target/x86_64-unknown-linux-musl/release/cri-client"
IMAGE = "docker.io/library/cdi-test:1"
CALLS = "/run/nvidia-container-runtime.calls"
# The CRI plugin's table in each config version, where the sandbox setting goes.
CRI_TABLE = {2: '[plugins."io.containerd.grpc.v1.cri"]', 3: '[plugins."io.containerd.cri.v1.runtime"]'}

START = r"""
set -eu
mkdir -p /var/lib/containerd /run/cri-test
mountpoint -q /var/lib/containerd || mount -t tmpfs tmpfs /var/lib/containerd
python3 - "$1" <<'PY'
import sys
text = open("/etc/containerd/config.toml").read()
table = sys.argv[1]
assert table in text, table
open("/run/cri-test/config.toml", "w").write(text.replace(table, table + "\n  restrict_oom_score_adj = true", 1))
PY
setsid containerd --config /run/cri-test/config.toml >/run/cri-test/containerd.log 2>&1 </dev/null &
echo $! > /run/cri-test/pid
for i in $(seq 100); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.1; done
ctr -n k8s.io images import /run/cri-test/image.tar >/dev/null
sandbox=$(containerd --config /run/cri-test/config.toml config dump | sed -n "s/^ *\(sandbox_image\|sandbox\) = [\"']\(.*\)[\"']/\2/p" | head -1)
ctr -n k8s.io images tag "$2" "$sandbox" >/dev/null
echo "$sandbox"
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The pod and container image: Debian 12's static busybox (fetched and
    cached as the containerd releases are), as an OCI layout tarball."""
    busybox = containerd_releases._fetch("bookworm", "busybox-static", "1:1.35.0-4+deb12u1+b1") / "bin/busybox"
    out = tmp_path_factory.mktemp("image") / "image.tar"
    subprocess.run([sys.executable, REPO / "tests/cri-client/make-image.py", "--busybox", busybox,
                    "--name", IMAGE, out], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def sb(sandbox_factory, image):
    if not CRI_CLIENT.exists():
        pytest.fail(f"{CRI_CLIENT} is missing: run `make cri-client`")
    # Each node runs its release (tests/sandbox.py: PROFILE@RELEASE links the
    # release's containerd, shim, ctr and runc 1.1.5 into the node and starts
    # it from that release's own `containerd config default`).
    sb = sandbox_factory([f"h200@{release}" for release in RELEASES])
    for host in HOSTS.values():
        shutil.copy2(CRI_CLIENT, sb.node(host).path("/usr/local/bin/cri-client"))
    return sb


def ssh(sb, host, script, *args, check=True):
    node = sb.node(host)
    cmd = ["ssh", "-i", str(sb.private_key), "-o", f"UserKnownHostsFile={sb.known_hosts}", "-o", "BatchMode=yes",
           "-p", str(node.port), "root@127.0.0.1", "sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if check:
        assert out.returncode == 0, f"{host}: {out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def started(sb, image, tmp_path_factory):
    user = Ansible(sb.inventory, tmp_path_factory.mktemp("cri"))
    # No systemd in a sandbox node: cgroupfs, as on the real H200 node.
    run = user.playbook(REPO / "site.yml", "-e", "containerd_install=false",
                        "-e", "containerd_systemd_cgroup=false").expect_ok()
    user.close()
    for release, host in HOSTS.items():
        run_dir = sb.node(host).path("/run/cri-test")
        run_dir.mkdir(exist_ok=True)
        shutil.copy2(image, run_dir / "image.tar")
        written = sb.node(host).path("/etc/containerd/config.toml").read_text()
        version = 3 if release.startswith("2.") else 2
        assert f"\nversion = {version}\n" in written, run.result(host, "Write containerd's configuration")
        ssh(sb, host, START, CRI_TABLE[version], IMAGE)
    yield sb
    for host in HOSTS.values():
        ssh(sb, host, "kill $(cat /run/cri-test/pid)", check=False)


def cri(sb, host, *args):
    out = ssh(sb, host, 'img=$1; shift; cri-client run --image "$img" --timeout 60 "$@" 2>&1; true', IMAGE, *args)
    assert out.strip(), f"{host}: cri-client printed nothing"
    return json.loads(out.strip().splitlines()[-1])


def calls(sb, host):
    path = sb.node(host).path(CALLS)
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("release", RELEASES)
def test_default_runtime_and_nvidia_handler_go_through_the_binary_name(started, release):
    sb, host = started, HOSTS[release]
    for handler in ("", "nvidia"):
        before = len(calls(sb, host))
        args = ["--runtime-handler", handler] if handler else []
        result = cri(sb, host, *args, "--", "sh", "-c", "echo hello from $(cat /proc/1/comm)")
        assert result.get("error") is None, result
        assert result["runtime_version"].startswith(containerd_releases.release_version(release)), result
        assert (result["exit_code"], result["output"]) == (0, "hello from sh\n"), result
        new = calls(sb, host)[before:]
        creates = [c for c in new if " create " in c]
        # Two containers: the pod sandbox, then the container, both created
        # by the stand-in that the config names as BinaryName.
        assert [c.rsplit(" ", 1)[1] for c in creates] == [result["pod_sandbox_id"], result["container_id"]], new
    before = len(calls(sb, host))
    plain = cri(sb, host, "--runtime-handler", "runc", "--", "true")
    assert plain["exit_code"] == 0, plain
    assert calls(sb, host)[before:] == [], "handler runc is plain runc"


def test_cdi_device_reaches_the_container_on_2_1(started):
    sb, host = started, HOSTS["2.1"]
    assert sb.node(host).path("/etc/cdi/nvidia.yaml").exists()
    result = cri(sb, host, "--runtime-handler", "runc", "--cdi-device", "nvidia.com/gpu=0", "--",
                 "sh", "-c", "ls /dev/nvidia0 /dev/nvidiactl; cat /usr/local/nvidia/lib64/libcuda.so.1; "
                 "echo $NVIDIA_VISIBLE_DEVICES")
    assert result.get("error") is None, result
    assert result["exit_code"] == 0, result
    assert result["output"] == ("/dev/nvidia0\n/dev/nvidiactl\nstand-in for libcuda 580.159.04\nvoid\n")
    unknown = cri(sb, host, "--runtime-handler", "runc", "--cdi-device", "nvidia.com/gpu=7", "--", "true")
    assert "nvidia.com/gpu=7" in unknown["error"], unknown
