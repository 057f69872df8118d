"""Liveness with real processes and real signals: a frozen worker (SIGSTOP, or blocked in C
code holding the GIL) is cut after ``freeze_timeout`` whatever its ``step_timeout``; a busy one
(a slow server, a long C step that burns CPU) is not; ``close()`` with several frozen workers
takes one grace period; replacing or closing a worker stops every process its envs started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pool_env import GymEnvSpec, HttpEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.refserver.process import RefServer
from tests.conditions import wait_until
from tests.integration.refserver_helpers import NO_FAULTS
from tests.processes import is_running, reap

pytestmark = pytest.mark.timeout(60)

NUM_ENVS, NUM_WORKERS = 4, 2
VICTIM_SLOTS = [2, 3]  # worker 1's
LONG_STEP_TIMEOUT = 300.0  # far beyond every test's own timeout: only freeze detection can cut


def actions() -> np.ndarray:
    return np.zeros(NUM_ENVS, dtype=np.int64)


def victim_pid(env: PoolVectorEnv) -> int:
    pid: int = env.stats()["workers"][1]["pid"]
    return pid


def assert_victim_failed(infos: dict[str, Any], reason: str) -> None:
    assert np.flatnonzero(infos["_error"]).tolist() == VICTIM_SLOTS, infos
    for slot in VICTIM_SLOTS:
        assert reason in infos["error"][slot], infos["error"][slot]


def test_a_stopped_worker_is_cut_by_freeze_timeout_long_before_its_step_timeout() -> None:
    options = PoolOptions(step_timeout=LONG_STEP_TIMEOUT, freeze_timeout=1.0, kill_grace=0.5)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, NUM_WORKERS, options=options) as env:
        env.reset(seed=0)
        pid = victim_pid(env)
        os.kill(pid, signal.SIGSTOP)

        _, _, _, truncated, infos = env.step(actions())

        assert truncated[VICTIM_SLOTS].all() and not truncated[:2].any()
        assert_victim_failed(infos, "is frozen (no heartbeat and no CPU progress)")
        wait_until(lambda: not is_running(pid), 5, "the frozen worker is killed")
        _, _, _, truncated, infos = env.step(actions())
        assert "_error" not in infos and victim_pid(env) != pid


def test_a_worker_blocked_in_c_code_holding_the_gil_is_frozen(tmp_path: Path) -> None:
    flag = tmp_path / "freeze"
    spec = GymEnvSpec("tests.envs.liveness:make_gil_sleeping_env", flag_path=str(flag), target_worker=1)
    options = PoolOptions(step_timeout=LONG_STEP_TIMEOUT, freeze_timeout=1.0, kill_grace=0.5)
    with PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS, options=options) as env:
        env.reset(seed=0)
        flag.touch()
        _, _, _, _, infos = env.step(actions())
        assert_victim_failed(infos, "is frozen")


def test_a_long_c_step_that_burns_cpu_holding_the_gil_keeps_its_step_timeout(tmp_path: Path) -> None:
    flag = tmp_path / "burn"
    spec = GymEnvSpec("tests.envs.liveness:make_gil_burning_env", flag_path=str(flag), target_worker=1, seconds=3.0)
    options = PoolOptions(step_timeout=LONG_STEP_TIMEOUT, freeze_timeout=1.0)
    with PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS, options=options) as env:
        env.reset(seed=0)
        flag.touch()
        _, _, _, truncated, infos = env.step(actions())
        assert "_error" not in infos and not truncated.any(), infos.get("error")
        assert infos["_gil_held"].tolist() == [False, False, True, False]  # the flag is taken once
        assert infos["gil_held"][2], "the step really held the GIL throughout"
        assert env.stats()["workers"][1]["restarts"] == 0


def test_a_worker_waiting_on_a_slow_server_keeps_beating_and_is_not_cut() -> None:
    with RefServer() as server:
        server.set_faults(**{**NO_FAULTS, "hang_s": 3.0})
        server.fail_next("hang", count=1, path="/api/v1/episode/vectorized_step")
        token = f"live-{uuid.uuid4().hex[:8]}"
        spec = HttpEnvSpec(server.url, token, request_timeout=10.0, retry_backoff=0.01, max_retries=1)
        options = PoolOptions(freeze_timeout=1.0)
        with PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS, options=options) as env:
            env.reset(seed=0)
            _, _, _, truncated, infos = env.step(actions())
            assert "_error" not in infos and not truncated.any(), infos.get("error")
            assert [w["restarts"] for w in env.stats()["workers"]] == [0, 0]


def test_a_stopped_http_worker_is_cut_by_the_default_freeze_timeout_not_the_retry_budget() -> None:
    with RefServer() as server:
        token = f"live-{uuid.uuid4().hex[:8]}"
        spec = HttpEnvSpec(server.url, token)  # default retry budget: a step may take minutes
        assert PoolOptions().effective_step_timeout(spec) > 60
        with PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS) as env:
            env.reset(seed=0)
            env.step(actions())
            os.kill(victim_pid(env), signal.SIGSTOP)
            _, _, _, truncated, infos = env.step(actions())
            assert truncated[VICTIM_SLOTS].all()
            assert_victim_failed(infos, f"freeze_timeout={PoolOptions().freeze_timeout} s")


def test_close_with_several_frozen_workers_takes_about_one_grace_period() -> None:
    options = PoolOptions(kill_grace=3.0)
    env = PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs=4, num_workers=4, options=options)
    env.reset(seed=0)
    pids = env.worker_pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    started = time.monotonic()
    env.close()
    elapsed = time.monotonic() - started

    # One grace for all, not one each (which would be >= 4 x 3 s): not a speed test, a count.
    assert elapsed < len(pids) * options.kill_grace, f"close() took {elapsed:.1f} s"
    assert not any(is_running(pid) for pid in pids)


def children_of(pid_dir: Path) -> dict[int, list[int]]:
    """Worker pid -> the pids of the ``sleep`` children its env started."""
    found: dict[int, list[int]] = {}
    for name in os.listdir(pid_dir):
        worker, child = (int(part) for part in name.split("."))
        found.setdefault(worker, []).append(child)
    return found


def test_replacing_a_hung_worker_stops_the_processes_its_envs_started(tmp_path: Path) -> None:
    hang = tmp_path / "hang"
    spec = GymEnvSpec("tests.envs.liveness:make_child_starting_env", pid_dir=str(tmp_path), hang_flag=str(hang))
    with PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS, options=PoolOptions(step_timeout=1.5, kill_grace=0.5)) as env:
        env.reset(seed=0)
        old = victim_pid(env)
        old_children = children_of(tmp_path)[old]
        assert len(old_children) == 4 and all(is_running(c) for c in old_children)  # 2 slots x 2
        hang.touch()
        _, _, _, _, infos = env.step(actions())
        assert_victim_failed(infos, "did not answer")
        wait_until(lambda: not any(is_running(c) for c in old_children), 5, "the hung worker's children are gone")
        assert all(is_running(c) for c in children_of(tmp_path)[env.worker_pids[0]])


def test_close_stops_the_processes_the_envs_started_even_outside_the_process_group(tmp_path: Path) -> None:
    spec = GymEnvSpec("tests.envs.liveness:make_child_starting_env", pid_dir=str(tmp_path))
    env = PoolVectorEnv(spec, NUM_ENVS, NUM_WORKERS, options=PoolOptions(kill_grace=0.5))
    env.reset(seed=0)
    children = [c for pids in children_of(tmp_path).values() for c in pids]
    assert len(children) == 2 * NUM_ENVS and all(is_running(c) for c in children)
    env.close()
    wait_until(lambda: not any(is_running(c) for c in children), 5, "every child of every worker is gone")


STUCK_TRAINER = """
import json, sys, time
import numpy as np
import pool_env
spec = pool_env.GymEnvSpec("tests.envs.liveness:make_child_starting_env", pid_dir=sys.argv[1], hang_flag=sys.argv[2])
env = pool_env.PoolVectorEnv(spec, num_envs=4, num_workers=2, options=pool_env.PoolOptions(step_timeout=300))
env.reset(seed=0)
print(json.dumps({"workers": env.worker_pids, "run_dir": env._coordinator.socket_dir}), flush=True)
env.step_async(np.zeros(4, dtype=np.int64))
time.sleep(600)
"""


def test_a_trainer_killed_while_a_worker_hangs_in_a_step_leaves_no_process_of_the_pool(tmp_path: Path) -> None:
    pid_dir, hang = tmp_path / "pids", tmp_path / "hang"
    pid_dir.mkdir()
    hang.touch()  # worker 1 hangs in its first step: its main thread cannot notice the trainer die
    trainer = subprocess.Popen([sys.executable, "-c", STUCK_TRAINER, str(pid_dir), str(hang)], stdout=subprocess.PIPE)
    try:
        assert trainer.stdout is not None
        started = json.loads(trainer.stdout.readline())
        wait_until(lambda: not hang.exists(), 20, "worker 1 is stuck in its step")
        children = [c for pids in children_of(pid_dir).values() for c in pids]
        assert len(children) == 2 * NUM_ENVS and all(is_running(c) for c in children)
        trainer.kill()
        trainer.wait(10)
    finally:
        reap(trainer)
    processes = started["workers"] + children
    wait_until(lambda: not any(is_running(p) for p in processes), 15, "workers and their env's processes are gone")
    wait_until(lambda: not os.path.exists(started["run_dir"]), 5, "the dead trainer's run dir is removed")
