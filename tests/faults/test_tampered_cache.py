"""The action plugin's module cache on a node, tampered with: over real SSH to
a sandbox node, with real ansible-core. What runs is always the build on the
controller, checked by sha256 in the same command that runs it; a cache
folder another user could write is refused; a node without any sha256 tool
gets the binary again for each run, checked by size, and says so."""
import hashlib
import os
import stat

import pytest

from ansible_run import REPO

HOST = "worker1"
MODULE = "nvidia_gpu_facts"
BUILD = (REPO / "dist/x86_64" / MODULE).read_bytes()
SHA = hashlib.sha256(BUILD).hexdigest()
CACHE = "/root/.ansible/gpu-node-modules"
CACHED = f"{CACHE}/{MODULE}-{SHA[:16]}"
# What a tampered cache would run: it leaves a mark and answers like a module.
PLANTED = "#!/bin/sh\ntouch /tmp/PLANTED-RAN\necho '{\"changed\": false, \"planted\": true}'\n"


@pytest.fixture(scope="module")
def sb(sandbox_factory):
    return sandbox_factory(["cpu"])


@pytest.fixture
def node(sb, ansible_factory):
    sb.reset()
    user = ansible_factory(sb.inventory)
    first = user.adhoc(HOST, MODULE).result(HOST, MODULE)
    assert first["status"] == "ok" and first["result"]["module_binary"]["transferred"], first
    n = sb.node(HOST)
    n.ansible = user
    return n


def run(node):
    return node.ansible.adhoc(HOST, MODULE).result(HOST, MODULE)


def assert_planted_never_ran(node):
    assert not node.path("/tmp/PLANTED-RAN").exists(), "a binary that is not the build ran"


def test_a_replaced_cached_binary_is_never_run_and_is_replaced(node, faults):
    for tamper in ("script", "truncated", "other build", "empty", "symlink"):
        cached = node.path(CACHED)
        cached.unlink()
        if tamper == "script":
            cached.write_text(PLANTED)
        elif tamper == "truncated":
            cached.write_bytes(BUILD[: len(BUILD) // 2])
        elif tamper == "other build":
            cached.write_bytes(BUILD + b"\0")
        elif tamper == "empty":
            cached.write_bytes(b"")
        else:
            node.path("/tmp/planted.sh").write_text(PLANTED)
            os.chmod(node.path("/tmp/planted.sh"), 0o755)
            cached.symlink_to("/tmp/planted.sh")
        if not cached.is_symlink():
            os.chmod(cached, 0o755)
        r = run(node)
        faults.tried("tampered cache")
        assert r["status"] == "ok", (tamper, r)
        assert "planted" not in r["result"], tamper
        assert r["result"]["module_binary"] == {"architecture": "x86_64", "sha256": SHA, "transferred": True,
                                                "verified": "sha256"}, tamper
        assert_planted_never_ran(node)
        assert not cached.is_symlink() and hashlib.sha256(cached.read_bytes()).hexdigest() == SHA, tamper
        if tamper != "symlink":
            assert any("did not have the sha256 of the build" in w for w in r["result"].get("warnings", [])), r


def test_a_cache_folder_others_can_write_is_made_private_and_its_content_verified(node, faults):
    os.chmod(node.path(CACHE), 0o777)
    node.path(CACHED).write_text(PLANTED)
    r = run(node)
    faults.tried("tampered cache")
    assert r["status"] == "ok", r
    assert stat.S_IMODE(node.path(CACHE).stat().st_mode) == 0o700
    assert_planted_never_ran(node)


@pytest.mark.parametrize("attack", ["cache owned by nobody", "cache is a symlink", ".ansible writable by all",
                                    ".ansible owned by nobody"])
def test_a_cache_another_user_controls_is_refused_and_nothing_runs(node, faults, attack):
    cache, home = node.path(CACHE), node.path("/root/.ansible")
    node.path(CACHED).write_text(PLANTED)
    os.chmod(node.path(CACHED), 0o755)
    if attack == "cache owned by nobody":
        os.chown(cache, 65534, 65534)
        os.chown(node.path(CACHED), 65534, 65534)
    elif attack == "cache is a symlink":
        cache.rename(node.path("/root/elsewhere"))
        os.chown(node.path("/root/elsewhere"), 65534, 65534)
        cache.symlink_to("/root/elsewhere")
    elif attack == ".ansible writable by all":
        os.chmod(home, 0o777)
    else:
        os.chown(home, 65534, 65534)
    r = run(node)
    faults.tried("tampered cache")
    assert r["status"] == "failed", r
    assert r["result"]["msg"].startswith(f"refusing to run {MODULE}: the module cache folder on the node"), r
    assert_planted_never_ran(node)


def test_a_node_without_a_sha256_tool_gets_a_fresh_copy_checked_by_size(node, tmp_path, faults):
    # A PATH with only what a minimal node has: no sha256sum, busybox, shasum, openssl or python.
    tools = ["sh", "uname", "ls", "id", "dirname", "chmod", "cat", "wc", "tr", "mv", "rm", "mkdir", "rmdir"]
    bin_dir = node.path("/opt/minimal-bin")
    bin_dir.mkdir(parents=True)
    for t in tools:
        (bin_dir / t).symlink_to(next(p for p in (f"/usr/bin/{t}", f"/bin/{t}") if os.path.exists(p)))
    node.path(CACHED).write_text(PLANTED)
    os.chmod(node.path(CACHED), 0o755)
    play = tmp_path / "play.yml"
    play.write_text(f"- hosts: {HOST}\n  gather_facts: false\n  environment:\n    PATH: /opt/minimal-bin\n"
                    f"  tasks:\n    - name: detect\n      {MODULE}:\n")
    r = node.ansible.playbook(play).expect_ok().result(HOST, "detect")
    faults.tried("tampered cache")
    assert r["result"]["module_binary"] == {"architecture": "x86_64", "sha256": SHA, "transferred": False,
                                            "verified": "size"}, r
    assert any("checked by its size only" in w for w in r["result"]["warnings"]), r
    assert_planted_never_ran(node)
    # Nothing new is cached (nothing could verify it on the next run); no temp file is left.
    assert node.path(CACHED).read_text() == PLANTED
    assert sorted(p.name for p in node.path(CACHE).iterdir()) == [CACHED.rsplit("/", 1)[1]]
