"""The scenario of tests/test_faults.py::test_a_trial_on_a_node_that_dies_is_retried_on_another,
run by that test in a process of its own: a Ray cluster that went wrong (a node marked dead, a
shutdown that stopped half-way) once left the pytest process unable to start Ray's GCS for every
Ray test after it; in a child process nothing of it outlives the scenario.

    python tests/ray_node_death.py RUN_DIR ARCH_YAML [effnas overrides...]

A `ray.cluster_utils.Cluster` on this machine: a head with no CPUs and two 1-CPU worker nodes.
`effnas grid` (one candidate) joins it; once a Tune trial trains under one worker node's raylet,
that node is removed without grace (its raylet and workers SIGKILLed). Prints one JSON line,
{"code": the grid's exit code, "killed": whether a node was removed}, and exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def training_on(node: Any) -> bool:
    """Whether a Tune trial is training in a worker process of `node` (under its raylet; Ray
    titles a busy function trainable `ray::ImplicitFunc.train`). Linux /proc."""
    from ray._private import ray_constants

    raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET)
    if not raylets:  # the node is gone already
        return False
    raylet = raylets[0].process.pid
    parents, titles = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            titles[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid, title in titles.items():
        if "ImplicitFunc.train" not in title:
            continue
        while pid > 1:
            pid = parents.get(pid, 1)
            if pid == raylet:
                return True
    return False


def main(run: str, arch: str, overrides: list[str]) -> int:
    # A test cluster without token auth (private temp dir, no one else joins it); effnas would
    # otherwise switch its driver to token mode when ~/.ray/auth_token exists. Before Ray is
    # imported: it reads the mode once, and a pytest process whose earlier Ray runs left
    # RAY_AUTH_MODE=token in the environment (Ray sets it there) passed it on to this one, whose
    # driver then could not start a trial's actor on the unauthenticated nodes.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from ray.cluster_utils import Cluster

    from effnas.cli import main as effnas

    temp_dir = tempfile.mkdtemp(prefix="effnas-cl-", dir="/tmp")  # short: Unix socket paths
    store = 80 * 1024**2
    cluster = Cluster()
    killed = threading.Event()
    stop = threading.Event()
    try:
        cluster.add_node(num_cpus=0, temp_dir=temp_dir, object_store_memory=store)  # the head
        workers = [cluster.add_node(num_cpus=1, object_store_memory=store) for _ in range(2)]

        def kill_the_trials_node() -> None:
            while not stop.is_set():
                busy = [node for node in workers if training_on(node)]
                if busy:
                    cluster.remove_node(busy[0], allow_graceful=False)  # the node dies mid-trial
                    killed.set()
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_the_trials_node, daemon=True)
        killer.start()
        argv = ["grid", "--phi", "1", "--arch", arch, "max_candidates=1", "include_baseline=false"]
        argv += [*overrides, "ray.max_concurrent=1", f"ray.address={cluster.address}", f"run.dir={run}"]
        try:
            code = effnas(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        stop.set()
        killer.join(timeout=30)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps({"code": code, "killed": killed.is_set()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
