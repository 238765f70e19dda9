"""containerd_runtime_config against real containerd releases (issue 12).

One sandbox node per release (1.6.20, 1.7.24, 2.1.9 from Debian's archive,
tests/containerd_releases.py), each starting from that release's own
`containerd config default`. site.yml writes the configuration in each mode
(template, merge, drop_in, and version 2 configs on 2.1); then on each node:

- that release's `containerd config dump` of the written file says the
  NVIDIA runtime is the default, with its BinaryName and SystemdCgroup;
- that release's daemon, started with the written file (own root, state and
  socket under the node's /tmp), loads its CRI plugin (`ctr plugins ls`:
  ok) and logs the CRI configuration it started with: default runtime
  nvidia, BinaryName the stand-in nvidia-container-runtime.
"""
import re
import tomllib

import pytest


RELEASES = ["1.6", "1.7", "2.1"]
HOSTS = {"worker1": "1.6", "worker2": "1.7", "worker3": "2.1"}
CPU_HOST = "worker4"  # a CPU node on 2.1: runc stays the default
CONFIG = "/etc/containerd/config.toml"
RUNTIME = "/usr/bin/nvidia-container-runtime"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(["h200@1.6", "h200@1.7", "hgx-h100@2.1", "cpu@2.1"])


@pytest.fixture
def user(sb, ansible_factory):
    """A user of a freshly reset cluster (closed by ansible_factory)."""
    sb.reset()
    return ansible_factory(sb.inventory, "user")


def cri_section(dump: dict) -> dict:
    """The CRI runtime settings of a `config dump`, either config version."""
    plugins = dump["plugins"]
    if dump.get("version") == 3:
        return plugins["io.containerd.cri.v1.runtime"]["containerd"]
    return plugins["io.containerd.grpc.v1.cri"]["containerd"]


def config_dump(node, path=CONFIG) -> dict:
    out = node.sh(f"cd / && containerd --config {path} config dump")
    assert out.returncode == 0, f"{node.name}: containerd rejects {path}:\n{out.stderr}"
    return tomllib.loads(out.stdout)


DAEMON = r"""
d=$(mktemp -d /tmp/containerd-e2e.XXXXXX)
cd /
containerd --config {config} --root $d/root --state $d/state --address $d/c.sock >$d/log 2>&1 &
pid=$!
i=0
while [ ! -S $d/c.sock ] && [ $i -lt 200 ] && kill -0 $pid 2>/dev/null; do sleep 0.05; i=$((i+1)); done
ctr --address $d/c.sock plugins ls >$d/plugins 2>&1
kill $pid 2>/dev/null; wait $pid
echo "=== plugins"; cat $d/plugins; echo "=== log"; cat $d/log
rm -rf $d
"""


def start_daemon(node, config=CONFIG) -> tuple[str, str]:
    """Starts the node's containerd with `config` (its own root, state and
    socket), lists its plugins, stops it. Its plugin list and its log."""
    out = node.sh(DAEMON.format(config=config))
    plugins, _, log = out.stdout.partition("=== log\n")
    return plugins, log


def cri_plugin_loaded(plugins: str) -> bool:
    return bool(re.search(r"^io\.containerd\.grpc\.v1\s+cri\s+.*\bok\s*$", plugins, re.M))


def daemon_default_runtime(log: str) -> tuple[str | None, str | None]:
    """The default runtime and its BinaryName from the daemon's "starting cri
    plugin" log line: a Go struct dump in 1.x, JSON in 2.x."""
    m = re.search(r'DefaultRuntimeName:(\S+)', log) or re.search(r'\\"defaultRuntimeName\\":\\"([^\\]+)', log)
    name = m.group(1) if m else None
    binary = None
    if name:
        b = (re.search(rf'{re.escape(name)}:\{{Type:\S+ .*?BinaryName:(\S+?)[ \]]', log)
             or re.search(rf'\\"{re.escape(name)}\\":\{{\\"runtimeType.*?\\"BinaryName\\":\\"([^\\]*)', log))
        binary = b.group(1) if b else None
    return name, binary


def assert_nvidia_default(sb, host):
    node = sb.node(host)
    cri = cri_section(config_dump(node))
    assert cri["default_runtime_name"] == "nvidia", host
    assert cri["runtimes"]["nvidia"]["options"]["BinaryName"] == RUNTIME, host
    assert cri["runtimes"]["nvidia"]["options"]["SystemdCgroup"] is True, host
    plugins, log = start_daemon(node)
    assert cri_plugin_loaded(plugins), f"{host} ({HOSTS.get(host)}): CRI plugin not loaded:\n{plugins}\n{log[-3000:]}"
    assert daemon_default_runtime(log) == ("nvidia", RUNTIME), f"{host}: {log[-3000:]}"


@pytest.mark.parametrize("mode", ["template", "merge", "drop_in"])
def test_each_release_runs_with_the_nvidia_runtime_as_default(sb, site, user, mode):
    # Each node starts from its release's own `config default`.
    for host, release in HOSTS.items():
        text = sb.node(host).path(CONFIG).read_text()
        assert text.startswith("version = 3") == (release == "2.1"), host
    first = user.playbook(site, "--tags", "container", "-e", f"containerd_config_mode={mode}").expect_ok()
    for host, release in HOSTS.items():
        write = first.result(host, "Write containerd's configuration")["result"]
        assert write["changed"] and write["validated"], write
        assert write["config_version"] == (3 if release == "2.1" else 2), host
        assert write["containerd_version"].startswith(release + "."), write["containerd_version"]
        assert_nvidia_default(sb, host)
    cpu = cri_section(config_dump(sb.node(CPU_HOST)))
    assert cpu["default_runtime_name"] == "runc" and "nvidia" not in cpu["runtimes"]
    plugins, log = start_daemon(sb.node(CPU_HOST))
    assert cri_plugin_loaded(plugins) and daemon_default_runtime(log)[0] == "runc"
    again = user.playbook(site, "--tags", "container", "-e", f"containerd_config_mode={mode}").expect_ok()
    for host in list(HOSTS) + [CPU_HOST]:
        assert again.stats[host]["changed"] == 0, host


@pytest.mark.parametrize("mode", ["template", "merge", "drop_in"])
def test_version_2_configs_on_containerd_2(sb, site, user, mode):
    """containerd 2.x still reads version 2 files (it migrates them when it
    loads them): an operator who keeps a 1.x file through the upgrade."""
    node = sb.node("worker3")
    v2 = sb.node("worker2").path(CONFIG).read_text()  # 1.7's config default
    node.path(CONFIG).write_text(v2)
    run = user.playbook(site, "--tags", "container", "-l", "worker3", "-e", f"containerd_config_mode={mode}",
                        "-e", "containerd_config_version=2").expect_ok()
    write = run.result("worker3", "Write containerd's configuration")["result"]
    assert write["config_version"] == 2 and write["validated"], write
    assert tomllib.loads(node.path(CONFIG).read_text())["version"] == 2
    assert_nvidia_default(sb, "worker3")


VERIFY = "playbooks/verify.yml"
DAEMON_FOREVER = r"""
mkdir -p /tmp/cd-running
cd /
setsid containerd --config {config} --root /tmp/cd-running/root --state /tmp/cd-running/state \
  --address /tmp/cd-running/c.sock >/tmp/cd-running/log 2>&1 </dev/null &
echo $! >/tmp/cd-running/pid
i=0
while [ ! -S /tmp/cd-running/c.sock ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
ctr --address /tmp/cd-running/c.sock version >/dev/null && echo started
"""


def containerd_verdict(run, host) -> str:
    [line] = [r for r in run.results if r["host"] == host and r["task"].endswith("Show this node's results")]
    return next(m for m in line["result"]["msg"] if "containerd:" in m)


def test_verify_catches_a_containerd_running_an_older_configuration(sb, site, user):
    """The daemon reads its configuration only when it starts: one started
    before the last change runs the older one ("I configured it but pods
    still use runc"). verify.yml compares each running containerd's start
    with the newest change of the file and its imports."""
    hosts = ["worker1", "worker3"]  # 1.6 and 2.1
    user.playbook(site, "--tags", "container", "-l", ",".join(hosts)).expect_ok()
    for host in hosts:
        assert sb.node(host).sh(DAEMON_FOREVER.format(config=CONFIG)).stdout.strip() == "started"
    fine = user.playbook(VERIFY, "-l", ",".join(hosts))
    for host in hosts:
        assert containerd_verdict(fine, host).startswith("PASS  containerd: default runtime nvidia"), host
    # The configuration changes (drop_in mode now); nobody restarts containerd.
    user.playbook(site, "--tags", "container", "-l", ",".join(hosts), "-e", "containerd_config_mode=drop_in").expect_ok()
    stale = user.playbook(VERIFY, "-l", ",".join(hosts))
    for host in hosts:
        verdict = containerd_verdict(stale, host)
        assert verdict.startswith("FAIL  containerd: containerd (pid "), verdict
        assert "last changed, so it runs an older configuration than the file: restart containerd" in verdict
    assert stale.rc != 0
    # Restarted, it passes again.
    for host in hosts:
        node = sb.node(host)
        # Only the daemon this test started (the pid namespace is the host's).
        node.sh("kill $(cat /tmp/cd-running/pid); while kill -0 $(cat /tmp/cd-running/pid) 2>/dev/null; do sleep 0.05; done; rm -rf /tmp/cd-running")
        assert node.sh(DAEMON_FOREVER.format(config=CONFIG)).stdout.strip() == "started"
    again = user.playbook(VERIFY, "-l", ",".join(hosts))
    for host in hosts:
        assert containerd_verdict(again, host).startswith("PASS  containerd"), host
