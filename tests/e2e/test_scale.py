"""32 nodes (the size the benchmark uses) start, all answer, and all stop.
How fast they start is printed, not asserted: speed is measured in bench/,
and a loaded CI machine must not fail a test for being slow (each node still
has the sandbox's own start timeout)."""
import time

import sandbox

NODES = 32
PROFILES = ["cpu", "h200", "hgx-h100", "consumer"]
GPUS = {"cpu": 0, "h200": 1, "hgx-h100": 8, "consumer": 1}


def test_32_nodes_start_answer_and_stop(sandbox_factory, ansible_factory):
    started = time.monotonic()
    sb = sandbox_factory([PROFILES[i % len(PROFILES)] for i in range(NODES)])
    up_s = time.monotonic() - started
    print(f"{NODES} nodes up in {up_s:.2f}s")
    assert len({n.port for n in sb.nodes}) == NODES
    assert len({n.mnt_ns for n in sb.nodes}) == NODES

    started = time.monotonic()
    run = ansible_factory(sb.inventory).adhoc("all", "nvidia_gpu_facts").expect_ok()
    print(f"nvidia_gpu_facts on {NODES} nodes in {time.monotonic() - started:.2f}s")
    for node in sb.nodes:
        facts = run.result(node.name, "nvidia_gpu_facts")["result"]["ansible_facts"]
        assert facts["nvidia_gpu_count"] == GPUS[node.profile.name], node.name

    namespaces = [n.mnt_ns for n in sb.nodes]
    sb.down()
    assert not any(sandbox.processes_in_namespace(ns) for ns in namespaces)
