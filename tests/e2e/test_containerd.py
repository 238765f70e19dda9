"""containerd on real sandbox nodes: site.yml gives GPU nodes the NVIDIA
runtime as default and CPU nodes runc; the files it writes are accepted by the
real containerd; check mode writes nothing; the role works alone; merge mode
keeps what an operator wrote by hand."""
import tomllib

import pytest


PROFILES = ["cpu", "h200", "hgx-h100"]
CONFIG = "/etc/containerd/config.toml"
CRI = 'plugins."io.containerd.grpc.v1.cri"'
GPU_HOSTS, CPU_HOSTS = ["worker2", "worker3"], ["worker1"]


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(PROFILES)


@pytest.fixture
def user(sb, ansible_factory):
    """A user of a freshly reset cluster (closed by ansible_factory)."""
    sb.reset()
    return ansible_factory(sb.inventory, "user")


def effective_config(sb, host):
    """The configuration as the node's own containerd reads it (the sandbox's
    release, 1.6 unless GPU_SANDBOX_CONTAINERD says otherwise: version 2 paths),
    `config dump` in the node, parsed."""
    out = sb.node(host).sh(f"cd / && containerd --config {CONFIG} config dump")
    assert out.returncode == 0, f"containerd rejects {host}'s config:\n{out.stderr}"
    return tomllib.loads(out.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]


def assert_runtime(sb, host, nvidia):
    cri = effective_config(sb, host)
    runtimes = cri["runtimes"]
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True, host
    if nvidia:
        assert cri["default_runtime_name"] == "nvidia", host
        assert runtimes["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime", host
        assert runtimes["nvidia"]["options"]["SystemdCgroup"] is True, host
    else:
        assert cri["default_runtime_name"] == "runc", host
        assert "nvidia" not in runtimes, host


def mode_message(run, host):
    return run.result(host, "Display containerd configuration mode")["result"]["msg"]


def container_changes(run, host):
    return [t for t in run.changed_tasks(host) if t.startswith("install_containerd : ")]


def test_site_gives_gpu_nodes_the_nvidia_runtime_and_cpu_nodes_runc(sb, site, user):
    first = user.playbook(site).expect_ok()
    for host in GPU_HOSTS:
        assert_runtime(sb, host, nvidia=True)
        assert mode_message(first, host).startswith("Configuring containerd with NVIDIA GPU runtime (detected: ")
    for host in CPU_HOSTS:
        assert_runtime(sb, host, nvidia=False)
        assert mode_message(first, host) == "Configuring containerd with standard runtime (detected: 0 NVIDIA GPU(s))"
    assert "(detected: 8 NVIDIA GPU(s))" in mode_message(first, "worker3")
    # The config changed, the node has no systemd: the handler says so.
    note = first.result("worker2", "Say that containerd must be restarted by hand")
    assert "restart containerd" in note["result"]["msg"]
    # Only the handler that acts is notified: no systemd restart is even tried.
    assert not [r for r in first.results if r["task"].endswith("Restart containerd")]
    # The Debian package's config.toml was kept as a backup.
    write = first.result("worker2", "Write containerd's configuration")["result"]
    assert write["backup_file"] and sb.node("worker2").path(write["backup_file"]).exists()
    assert write["restart_required"] is True and write["default_runtime"] == "nvidia"

    second = user.playbook(site).expect_ok()
    for host in GPU_HOSTS + CPU_HOSTS:
        assert container_changes(second, host) == [], host
        assert second.stats[host]["changed"] == 0, host
    assert not [r for r in second.results if "restarted by hand" in r["task"] and r["status"] != "skipped"]


def test_check_diff_shows_the_new_config_and_writes_nothing(sb, site, user):
    before = {h: sb.node(h).upper_hash() for h in GPU_HOSTS + CPU_HOSTS}
    run = user.playbook(site, "--check", "--diff").expect_ok()
    write = run.result("worker3", "Write containerd's configuration")
    assert write["changed"] is True
    after_text = write["result"]["diff"][0]["after"]
    assert 'default_runtime_name = "nvidia"' in after_text
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in after_text
    # The diff starts from what the containerd package installed.
    assert '[plugins."io.containerd.internal.v1.opt"]' in write["result"]["diff"][0]["before"]
    after = {h: sb.node(h).upper_hash() for h in GPU_HOSTS + CPU_HOSTS}
    assert after == before, "check mode wrote on a node"


def test_container_tag_alone_on_fresh_nodes(sb, site, user):
    """--tags container with an empty fact cache: the role detects the nodes
    itself and configures them; a has_nvidia_gpu given now wins."""
    run = user.playbook(site, "--tags", "container", "-e", '{"has_nvidia_gpu": null}').expect_ok()
    ran = [r["task"] for r in run.host_results("worker1") if r["status"] != "skipped"]
    assert not [t for t in ran if t.startswith("install_os_package : Install")], ran
    for host in GPU_HOSTS:
        assert_runtime(sb, host, nvidia=True)
    assert_runtime(sb, "worker1", nvidia=False)

    run = user.playbook(site, "--tags", "container", "-l", "worker2", "-e", "has_nvidia_gpu=false").expect_ok()
    assert mode_message(run, "worker2") == "Configuring containerd with standard runtime (set by the user: has_nvidia_gpu=false)"
    assert_runtime(sb, "worker2", nvidia=False)


HAND_WRITTEN = """\
# containerd config written by hand by the site's operators.
# Keep the mirror: our registry is air-gapped.
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  # the pause image from our own registry
  sandbox_image = "registry.example.internal/pause:3.9"

  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example.internal"]  # our mirror

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


def test_merge_mode_keeps_a_hand_written_config(sb, site, user):
    for host in ("worker1", "worker2"):
        path = sb.node(host).path(CONFIG)
        path.write_text(HAND_WRITTEN)
    run = user.playbook(site, "-e", "containerd_config_mode=merge").expect_ok()

    text = sb.node("worker2").path(CONFIG).read_text()
    for line in HAND_WRITTEN.splitlines():
        if line.startswith("#") or "mirror" in line or "sandbox_image" in line or "# the pause image" in line:
            assert line in text, f"lost: {line!r}\n{text}"
    assert_runtime(sb, "worker2", nvidia=True)
    cri = tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.example.internal/pause:3.9"
    assert cri["registry"]["mirrors"]["docker.io"]["endpoint"] == ["https://mirror.example.internal"]
    backup = run.result("worker2", "Write containerd's configuration")["result"]["backup_file"]
    assert sb.node("worker2").path(backup).read_text() == HAND_WRITTEN

    # The CPU node keeps runc, now with SystemdCgroup, and every comment.
    cpu_text = sb.node("worker1").path(CONFIG).read_text()
    assert "# Keep the mirror: our registry is air-gapped." in cpu_text
    assert_runtime(sb, "worker1", nvidia=False)

    again = user.playbook(site, "-e", "containerd_config_mode=merge").expect_ok()
    assert container_changes(again, "worker2") == []
    assert sb.node("worker2").path(CONFIG).read_text() == text


def test_missing_runtime_binary_fails_the_node_and_keeps_its_config(sb, site, user):
    user.playbook(site).expect_ok()
    node = sb.node("worker3")
    before = node.path(CONFIG).read_bytes()
    node.path("/usr/bin/nvidia-container-runtime").unlink()
    run = user.playbook(site)
    run.expect_failed()
    result = run.result("worker3", "Write containerd's configuration")
    assert result["status"] == "failed"
    assert "/usr/bin/nvidia-container-runtime" in result["result"]["msg"]
    assert node.path(CONFIG).read_bytes() == before, "a failed task leaves the working config alone"
    assert run.stats["worker1"]["failures"] == 0 and run.stats["worker2"]["failures"] == 0
