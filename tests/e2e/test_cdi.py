"""The CDI spec (nvidia_cdi_spec, through site.yml's install_containerd role)
on sandbox nodes of each GPU layout: the real H200 capture with the real
node's /usr/local/nvidia layout, an HGX H100 (Ubuntu layout, NVSwitches,
MIG capability files, persistenced socket, firmware), an L40S pair (RHEL
layout, an older driver's libraries left beside), a GH200 (aarch64, under
qemu) and a consumer card under nouveau (no driver: no spec, a clear
answer). Each spec is compared whole with what the node holds, validated
against the CDI schema, and a second run changes nothing.

The libraries and tools are stand-in files and the /dev entries real
character devices (mknod, NVIDIA's numbers) with no driver behind them:
the generator needs only their presence and type (tests/sandbox.py)."""
import json
import socket
import sys
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml

from ansible_run import REPO

sys.path.insert(0, str(REPO / "tests/fixtures"))
from make_profiles import gpu_uuid  # noqa: E402

PROFILES = ["h200", "hgx-h100", "l40s", "gh200", "consumer"]
HOSTS = {p: f"worker{i}" for i, p in enumerate(PROFILES, start=1)}
SPEC = "/etc/cdi/nvidia.yaml"
TASK = "Write the CDI spec of the node's GPUs"
FILE_OPTIONS = ["ro", "nosuid", "nodev", "rbind", "rprivate"]
IPC_OPTIONS = ["nosuid", "nodev", "rbind", "rprivate", "noexec"]
LIBS = ["libcuda", "libnvidia-ml", "libnvidia-nvvm", "libnvidia-ptxjitcompiler"]
SCHEMA = REPO / "tests/fixtures/cdi-schema"


def mount(path, options=FILE_OPTIONS):
    return {"hostPath": path, "containerPath": path, "options": options}


def libraries(libdir, version):
    """Each library, its .so.1 link, and libcuda.so, in file-name order."""
    paths = [f"{libdir}/libcuda.so"]
    for lib in LIBS:
        paths += [f"{libdir}/{lib}.so.1", f"{libdir}/{lib}.so.{version}"]
    return [mount(p) for p in sorted(paths)]


def expected(profile, uuids, minors, libdir, version, control, tools, firmware=(), ipc=()):
    devices = []
    for index, (uuid, minor) in enumerate(zip(uuids, minors)):
        edits = {"deviceNodes": [{"path": f"/dev/nvidia{minor}"}]}
        devices += [{"name": str(index), "containerEdits": edits}, {"name": uuid, "containerEdits": edits}]
    devices.append({"name": "all", "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{m}"} for m in minors]}})
    mounts = libraries(libdir, version) + [mount(t) for t in tools]
    mounts += [mount(f"/lib/firmware/nvidia/{version}/{f}") for f in firmware]
    mounts += [mount(p, IPC_OPTIONS) for p in ipc]
    return {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": devices,
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": p} for p in control],
            "mounts": mounts,
        },
    }


VERSIONS = {"h200": "580.159.04", "hgx-h100": "570.124.06", "l40s": "550.163.01", "gh200": "580.159.04"}
HGX_GPUS = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
            "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]
BASIC_CONTROL = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
EXPECTED = {
    # The real capture's UUID (zeroed there) and the real node's layout.
    "h200": expected("h200", ["GPU-00000000-0000-0000-0000-000000000000"], [0],
                     "/usr/local/nvidia/lib64", "580.159.04", BASIC_CONTROL, ["/usr/local/nvidia/bin/nvidia-smi"]),
    "hgx-h100": expected(
        "hgx-h100", [gpu_uuid("hgx-h100", a) for a in HGX_GPUS], range(8), "/usr/lib/x86_64-linux-gnu", "570.124.06",
        BASIC_CONTROL + ["/dev/nvidia-modeset", "/dev/nvidia-caps/nvidia-cap1", "/dev/nvidia-caps/nvidia-cap2"],
        ["/usr/bin/nvidia-smi", "/usr/bin/nvidia-persistenced", "/usr/bin/nvidia-cuda-mps-control"],
        firmware=["gsp_ga10x.bin", "gsp_tu10x.bin"], ipc=["/run/nvidia-persistenced/socket"]),
    # The 535 libraries beside the running 550 ones are not listed.
    "l40s": expected("l40s", [gpu_uuid("l40s", "0000:4a:00.0"), gpu_uuid("l40s", "0000:ca:00.0")], [0, 1],
                     "/usr/lib64", "550.163.01", BASIC_CONTROL + ["/dev/nvidia-modeset"], ["/usr/bin/nvidia-smi"]),
    "gh200": expected("gh200", [gpu_uuid("gh200", "0009:01:00.0")], [0], "/usr/lib/aarch64-linux-gnu", "580.159.04",
                      BASIC_CONTROL, ["/usr/bin/nvidia-smi"], firmware=["gsp_ga10x.bin", "gsp_tu10x.bin"]),
}


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    sb = sandbox_factory(PROFILES)
    # nvidia-persistenced's socket on the HGX node: a real Unix socket, made
    # in the node's own /run (a tmpfs of its mount namespace).
    run_dir = sb.node(HOSTS["hgx-h100"]).path("/run/nvidia-persistenced")
    run_dir.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(run_dir / "socket"))
    s.close()
    return sb


def cdi_validator():
    resources = [(f.name, referencing.Resource.from_contents(json.loads(f.read_text()),
                                                             default_specification=referencing.jsonschema.DRAFT7))
                 for f in SCHEMA.glob("*.json")]
    schema = json.loads((SCHEMA / "schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=referencing.Registry().with_resources(resources))


@pytest.fixture(scope="module")
def first_run(sb, site, ansible_factory_module):
    return ansible_factory_module(sb.inventory).playbook(site, "-e", "containerd_install=false")


@pytest.fixture(scope="module")
def ansible_factory_module(tmp_path_factory):
    from ansible_run import Ansible
    made = []

    def make(inventory):
        a = Ansible(inventory, tmp_path_factory.mktemp("cdi"))
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_each_gpu_node_gets_exactly_its_spec(sb, first_run, profile):
    first_run.expect_ok()
    host = HOSTS[profile]
    result = first_run.result(host, TASK)
    assert result["changed"] is True, result
    text = sb.node(host).path(SPEC).read_text()
    version = VERSIONS[profile]
    gpus = sum(1 for d in EXPECTED[profile]["devices"] if d["name"].isdigit())
    assert text.startswith(f"# Written by the nvidia_cdi_spec Ansible module for NVIDIA driver {version}, {gpus} GPU(s).\n")
    spec = yaml.safe_load(text)
    assert spec == EXPECTED[profile]
    assert result["result"]["spec"] == spec, "the module returns what it wrote"
    cdi_validator().validate(spec)
    assert sb.node(host).path(SPEC).stat().st_mode & 0o777 == 0o644


def test_a_node_without_the_nvidia_driver_gets_no_spec(sb, first_run, ansible_factory_module):
    host = HOSTS["consumer"]
    assert not first_run.ran(host, TASK)
    assert not sb.node(host).path(SPEC).exists()
    run = ansible_factory_module(sb.inventory).adhoc(host, "nvidia_cdi_spec")
    result = run.result(host, "nvidia_cdi_spec")
    assert result["status"] == "failed"
    assert result["result"]["msg"] == (
        "no NVIDIA driver is loaded on this node (nouveau is loaded instead): a CDI spec lists the running "
        "driver's device files and libraries, so there is nothing to write. Load the driver first "
        "(site.yml -e install_gpu_driver=true), or leave this node out")
    assert not sb.node(host).path(SPEC).exists()


def test_second_run_changes_nothing(sb, site, first_run, ansible_factory_module):
    first_run.expect_ok()
    before = {h: sb.node(h).upper_hash() for h in HOSTS.values()}
    again = ansible_factory_module(sb.inventory).playbook(site, "-e", "containerd_install=false").expect_ok()
    for profile, host in HOSTS.items():
        assert again.changed_tasks(host) == [], f"{host} ({profile})"
        assert sb.node(host).upper_hash() == before[host], host


def test_check_mode_and_off_switch_write_nothing(sb, site, first_run, ansible_factory_module):
    first_run.expect_ok()
    host = HOSTS["l40s"]
    spec = sb.node(host).path(SPEC)
    spec.write_text("hand-edited\n")
    user = ansible_factory_module(sb.inventory)
    check = user.playbook(site, "-l", host, "--check", "--diff", "-e", "containerd_install=false").expect_ok()
    assert check.result(host, TASK)["changed"] is True
    assert spec.read_text() == "hand-edited\n", "check mode wrote nothing"
    off = user.playbook(site, "-l", host, "-e", "containerd_install=false", "-e", "containerd_cdi_spec=false")
    assert not off.expect_ok().ran(host, TASK)
    assert spec.read_text() == "hand-edited\n"
