"""Scenarios run inside a private mount namespace whose ``/dev/shm`` is a small tmpfs of its own.

``python -m tests.integration.shm_scenarios SCENARIO [ARGS]``, started by
``tests/integration/test_shm_machines.py`` under ``unshare -m`` (as root). Each scenario prints
one JSON line with what it saw; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import psutil

from pool_env import GymEnvSpec, PoolVectorEnv
from pool_env.errors import SharedMemoryError
from pool_env.shm import list_segments, sweep_orphans

CARTPOLE = GymEnvSpec("CartPole-v1")


def pool_b() -> None:
    """Pool B: report its segment, wait for a line on stdin, step, report, wait to be killed."""
    with PoolVectorEnv(CARTPOLE, num_envs=2, num_workers=1) as env:
        env.reset(seed=0)
        (segment,) = list_segments()
        print(json.dumps({"segment": segment, "pid": os.getpid()}), flush=True)
        sys.stdin.readline()
        for _ in range(5):
            *_, truncated, infos = env.step(np.zeros(2, np.int64))
            assert not truncated.any() and "error" not in infos, infos
        print(json.dumps({"stepped": True, "segment_there": segment in list_segments()}), flush=True)
        sys.stdin.readline()  # killed here, with its whole PID namespace


def advance_pids_then(target_pid: int, argv: list[str]) -> None:
    """PID 1 of a fresh PID namespace: spend pids until the next is ``target_pid``, run ``argv``
    as that pid and wait for it (its death, or ours, ends the namespace)."""
    while True:
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        if child.pid >= target_pid - 1:
            break
    process = subprocess.Popen(argv)
    sys.exit(process.wait())


def two_pid_namespaces() -> dict[str, Any]:
    """Pool B lives in another PID namespace; pool A (here) starts, sweeps, and must keep B's segment."""
    target = next(p for p in range(300, 30000) if not psutil.pid_exists(p))  # a pid nobody has here
    b_tmp = tempfile.mkdtemp(prefix="b_tmp_")
    b_argv = [sys.executable, "-m", "tests.integration.shm_scenarios", "pool_b"]
    namespace = subprocess.Popen(
        ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-m", "tests.integration.shm_scenarios",
         "advance_pids_then", str(target), *b_argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": b_tmp},
    )  # fmt: skip
    assert namespace.stdin is not None and namespace.stdout is not None
    try:
        b = json.loads(namespace.stdout.readline())
        segment = b["segment"]
        seen: dict[str, Any] = {"b_pid_in_its_namespace": b["pid"], "target": target}
        seen["b_pid_alive_here"] = psutil.pid_exists(int(segment.split("_")[2]))
        seen["swept"] = sweep_orphans()
        with PoolVectorEnv(CARTPOLE, num_envs=2, num_workers=1) as env:  # its coordinator sweeps too
            env.reset(seed=0)
            env.step(np.zeros(2, np.int64))
            seen["kept_while_a_runs"] = segment in list_segments()
        namespace.stdin.write("step\n")
        namespace.stdin.flush()
        seen["b"] = json.loads(namespace.stdout.readline())
        # Negative control: once B's namespace is gone (SIGKILL to all of it), the sweep removes it.
        namespace_init = psutil.Process(namespace.pid).children()[0]
        namespace_init.send_signal(signal.SIGKILL)
        namespace.wait(10)
        seen["kept_before_kill"] = segment in list_segments()
        psutil.wait_procs([namespace_init], timeout=10)
        seen["swept_after_kill"] = sweep_orphans()
        return seen
    finally:
        if namespace.poll() is None:
            namespace.kill()
            namespace.wait(10)
        shutil.rmtree(b_tmp, ignore_errors=True)


def too_small() -> dict[str, Any]:
    """/dev/shm here is 64 KiB: 4,096 CartPole slots need about 140 KiB."""
    try:
        PoolVectorEnv(CARTPOLE, num_envs=4096, num_workers=1).close()
    except SharedMemoryError as exc:
        return {"class": type(exc).__name__, "message": str(exc), "needed": exc.needed, "free": exc.free,
                "segments": list_segments()}  # fmt: skip
    return {"class": None, "segments": list_segments()}


def main() -> None:
    scenario, args = sys.argv[1], sys.argv[2:]
    if scenario == "pool_b":
        pool_b()
    elif scenario == "advance_pids_then":
        advance_pids_then(int(args[0]), args[1:])
    else:
        print(json.dumps({"two_pid_namespaces": two_pid_namespaces, "too_small": too_small}[scenario]()), flush=True)


if __name__ == "__main__":
    main()
