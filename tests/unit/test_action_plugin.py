"""The action plugin (plugins/action/binary_module.py) with a fake connection:
no SSH, no node, no root, in well under a second.

The connection is a stand-in (FakeConnection): it records each command the
plugin sends, with its stdin, and answers with what a node's shell would
print for that case (rc, stdout, stderr), the input the plugin decides on.
Everything else is ansible-core's own: ActionBase, the `sh` shell plugin, the
argument encoder and the result parser. The scripts themselves run on real
nodes over real SSH in tests/e2e (test_site.py, test_profiles.py) and
tests/faults/test_tampered_cache.py.
"""
import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import shell_loader

REPO = Path(__file__).resolve().parents[2]
MODULE = "nvidia_gpu_facts"
ARGS = {"root": "/"}
BUILDS = {"x86_64": b"\x7fELF x86_64 build", "aarch64": b"\x7fELF aarch64 build"}
MODULE_OUTPUT = json.dumps({"changed": False, "ansible_facts": {"nvidia_gpu_count": 8}})


def load_plugin():
    spec = importlib.util.spec_from_file_location("binary_module_under_test", REPO / "plugins/action/binary_module.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


plugin = load_plugin()


def sha(arch):
    return hashlib.sha256(BUILDS[arch]).hexdigest()


def ran(arch, verified=None):
    """stderr of a script that ran the module: the marks it prints first."""
    marks = f"{plugin.ARCH_MARK}{arch}\n"
    return marks + (f"{plugin.VERIFIED_MARK}{verified}\n" if verified else "")


class FakeConnection:
    """Stand-in for the SSH connection: records (command, stdin) and answers
    each command with the next canned (rc, stdout, stderr)."""

    transport = "fake"
    has_pipelining = True
    become = None
    allow_executable = False
    socket_path = None

    def __init__(self, answers):
        self._shell = shell_loader.get("sh")
        self.answers = list(answers)
        self.sent = []

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self.sent.append((cmd, in_data))
        assert self.answers, f"the plugin sent a command the test did not expect: {cmd[:200]}"
        rc, out, err = self.answers.pop(0)
        return rc, out.encode(), err.encode()


@pytest.fixture
def dist(tmp_path, monkeypatch):
    """dist/<arch>/<module> with a small build per architecture."""
    for arch, data in BUILDS.items():
        (tmp_path / arch).mkdir()
        (tmp_path / arch / MODULE).write_bytes(data)
    monkeypatch.setattr(plugin, "BIN_DIR", str(tmp_path))
    return tmp_path


def run_task(answers, check_mode=False):
    """Runs the plugin once; returns its result and what it sent."""
    task = SimpleNamespace(action=MODULE, args=dict(ARGS), check_mode=check_mode, diff=False, no_log=False,
                           async_val=0, environment=None)
    connection = FakeConnection(answers)
    action = plugin.ActionModule(task, connection, PlayContext(), None, None, None)
    result = action.run(task_vars={"inventory_hostname": "worker1"})
    assert not connection.answers, "the plugin sent fewer commands than the node had answers for"
    return result, connection.sent


def module_args(stdin):
    """The module arguments the plugin sent on a command's stdin."""
    return json.loads(stdin.split(b"\n", 1)[0])


def test_a_cached_binary_runs_in_one_command(dist):
    result, sent = run_task([(0, MODULE_OUTPUT, ran("x86_64"))])
    assert len(sent) == 1
    command, stdin = sent[0]
    # One arm per build: the node picks its own by `uname -m` and checks the hash.
    assert f"h={sha('x86_64')}" in command and f"h={sha('aarch64')}" in command
    assert module_args(stdin)["root"] == "/" and module_args(stdin)["_ansible_check_mode"] is False
    assert result["ansible_facts"] == {"nvidia_gpu_count": 8}
    assert result["module_binary"] == {"architecture": "x86_64", "sha256": sha("x86_64"), "transferred": False,
                                       "verified": "sha256"}
    assert "warnings" not in result


def test_a_cache_miss_sends_the_binary_then_runs_it(dist):
    result, sent = run_task([
        (0, f"{plugin.MISSING} x86_64\n", ""),
        (0, MODULE_OUTPUT, ran("x86_64", "sha256")),
    ])
    assert len(sent) == 2
    command, stdin = sent[1]
    assert stdin == json.dumps(module_args(stdin)).encode() + b"\n" + BUILDS["x86_64"]
    assert f"[ \"$s\" = {sha('x86_64')} ]" in command and "mv -f" in command, "verified, then cached"
    assert result["module_binary"]["transferred"] is True
    assert not result.get("failed") and "warnings" not in result


def test_a_cached_binary_with_another_sha256_is_replaced_with_a_warning(dist):
    result, sent = run_task([
        (0, f"{plugin.MISMATCH} x86_64\n", ""),
        (0, MODULE_OUTPUT, ran("x86_64", "sha256")),
    ])
    assert sent[1][1].endswith(BUILDS["x86_64"])
    assert result["module_binary"]["transferred"] is True
    assert result["warnings"] == [
        f"the cached {MODULE} binary on this node did not have the sha256 of the build (changed or damaged): "
        "it was replaced with a verified copy"]


def test_a_node_without_a_hash_tool_gets_the_binary_each_run_checked_by_size(dist):
    result, sent = run_task([
        (0, f"{plugin.NO_HASH} x86_64\n", ""),
        (0, MODULE_OUTPUT, ran("x86_64", "size")),
    ])
    command = sent[1][0]
    assert f"= {len(BUILDS['x86_64'])} ]" in command, "the size is checked"
    assert "mv -f" not in command and 'rm -f "$t"' in command, "runs from a temporary file, not cached"
    assert result["module_binary"]["verified"] == "size"
    assert result["module_binary"]["transferred"] is False
    assert len(result["warnings"]) == 1 and "checked by its size only, and is not cached" in result["warnings"][0]


def test_check_mode_reaches_the_module_and_caches_nothing(dist):
    result, sent = run_task([
        (0, f"{plugin.MISSING} x86_64\n", ""),
        (0, MODULE_OUTPUT, ran("x86_64", "sha256")),
    ], check_mode=True)
    assert all(module_args(stdin)["_ansible_check_mode"] is True for _, stdin in sent)
    assert "mv -f" not in sent[1][0] and 'rmdir "$p"' in sent[1][0], "no cache left behind"
    assert result["module_binary"]["transferred"] is False


def test_module_output_that_is_not_json_fails_the_task(dist):
    result, _ = run_task([(139, "Segmentation fault\n", ran("x86_64"))])
    # ansible-core's own parser answers (its words differ by release); what
    # the module printed and its status reach the operator.
    assert result["failed"] is True, result
    assert result["module_stdout"] == "Segmentation fault\n" and result["rc"] == 139, result
    assert result["module_binary"]["architecture"] == "x86_64"


@pytest.mark.parametrize("uname", ["aarch64", "arm64"])
def test_the_nodes_architecture_picks_the_build_that_is_sent(dist, uname):
    result, sent = run_task([
        (0, f"{plugin.MISSING} {uname}\n", ""),
        (0, MODULE_OUTPUT, ran(uname, "sha256")),
    ])
    assert sent[1][1].endswith(BUILDS["aarch64"])
    assert f"= {sha('aarch64')} ]" in sent[1][0]
    assert result["module_binary"]["architecture"] == "aarch64"
    assert result["module_binary"]["sha256"] == sha("aarch64")


def test_a_node_whose_architecture_has_no_build_is_told_which_exist(dist):
    (dist / "aarch64" / MODULE).unlink()
    result, sent = run_task([(0, f"{plugin.UNSUPPORTED} aarch64\n", "")])
    assert "h=" + sha("aarch64") not in sent[0][0], "no case for a build that does not exist"
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"] == (f"{MODULE} cannot run on this node: its architecture is 'aarch64'; "
                             "supported architectures: x86_64")
    assert "exception" not in result, "a refusal is no exception: no traceback line"


def test_no_build_at_all_says_how_to_make_one(dist):
    for arch in BUILDS:
        (dist / arch / MODULE).unlink()
    result, sent = run_task([])
    assert sent == []
    assert result["msg"] == f"no build of the {MODULE} module in {dist}: run `make build` first"


def test_an_unsafe_cache_folder_is_refused_and_nothing_is_sent(dist):
    ls = "drwxrwxrwx 2 0 0 4096 Jan 1 00:00 /root/.ansible drwx------ 2 0 0 4096 Jan 1 00:00 " \
         "/root/.ansible/gpu-node-modules / uid 0"
    result, sent = run_task([(0, f"{plugin.UNSAFE} {ls}\n", "")])
    assert len(sent) == 1
    assert result["failed"] is True
    assert result["msg"].startswith(f"refusing to run {MODULE}: the module cache folder on the node")
    assert ls in result["msg"]


def test_a_failed_install_reports_the_nodes_reason_and_status(dist):
    result, _ = run_task([
        (0, f"{plugin.MISSING} x86_64\n", ""),
        (1, f"{plugin.INSTALL_FAILED} checksum mismatch after transfer\n", "disk full"),
    ])
    assert result["failed"] is True and result["rc"] == 1
    assert result["msg"] == (f"could not copy {dist / 'x86_64' / MODULE} to the node: "
                             "checksum mismatch after transfer (disk full)")


def test_fill_quotes_every_value_and_refuses_a_placeholder_without_one():
    script = plugin.fill('echo @WORD@; @CODE@', WORD="x'; rm -rf / #", CODE=plugin.Shell("true"))
    assert script == "echo 'x'\"'\"'; rm -rf / #'; true"
    with pytest.raises(KeyError):
        plugin.fill("echo @MISSING_VALUE@")
