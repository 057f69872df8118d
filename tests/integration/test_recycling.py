"""Worker recycling (``max_episodes_per_worker``, ``max_worker_rss_mb``): a new process takes each
slot over at its own episode boundary with its env's RNG state, so the trainer sees exactly what
``SyncVectorEnv`` gives — observations, rewards, flags and infos — while the pids change."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import pool_env
from pool_env import HttpEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.refserver.process import RefServer
from tests.envs.recycling import MemoryGrowingEnv, RandomLengthEnv
from tests.integration.daemon_process import DaemonProcess
from tests.integration.reference import FIELDS, assert_values_same
from tests.integration.refserver_helpers import NO_FAULTS
from tests.integration.test_daemon_lifecycle import status_of

pytestmark = pytest.mark.timeout(120)


def step_both(
    pool: PoolVectorEnv, reference: SyncVectorEnv, mode: AutoresetMode, until: Callable[[], bool], max_steps: int
) -> int:
    """Reset both with one seed, then step both with the same actions (under DISABLED, reset the
    ended slots with a mask) and compare every return value, until ``until()``; the steps taken."""
    assert_values_same(pool.reset(seed=11), reference.reset(seed=11), "reset")
    actions = np.random.default_rng(5)
    for step in range(1, max_steps + 1):
        action = actions.integers(0, 3, pool.num_envs)
        batch = pool.step(action)
        expected = reference.step(action)
        for name, got, want in zip(FIELDS, batch, expected, strict=True):
            assert_values_same(got, want, f"step {step} {name}")
        done = expected[2] | expected[3]
        if mode is AutoresetMode.DISABLED and done.any():
            mask = {"reset_mask": done}
            assert_values_same(pool.reset(options=mask), reference.reset(options=mask), f"step {step} reset")
        if until():
            return step
    raise AssertionError(f"not done after {max_steps} steps: {pool.stats()['workers']}")


def recycles(pool: PoolVectorEnv) -> int:
    return int(pool.stats()["counters"].get("worker_recycles", 0))


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_recycled_workers_give_the_same_values_as_sync_vector_env(mode: AutoresetMode, no_leaks: Any) -> None:
    # 4 slots per worker whose episodes end at different steps (lengths drawn from each env's RNG).
    make = partial(RandomLengthEnv, max_length=7)
    options = PoolOptions(max_episodes_per_worker=6)
    with PoolVectorEnv([make] * 8, num_workers=2, autoreset_mode=mode, options=options) as pool:
        first_pids = set(pool.worker_pids)
        reference = SyncVectorEnv([make] * 8, autoreset_mode=mode)
        seen_pids = set(first_pids)

        def recycled_enough() -> bool:
            seen_pids.update(pool.worker_pids)
            return recycles(pool) >= 4

        step_both(pool, reference, mode, recycled_enough, max_steps=20_000)
        stats = pool.stats()
        assert sum(row["recycles"] for row in stats["workers"]) == stats["counters"]["worker_recycles"] >= 4
        assert stats["counters"].get("slot_failures", 0) == 0  # no episode was cut
        assert all(row["restarts"] == 0 for row in stats["workers"])
        assert not first_pids & set(pool.worker_pids) or any(row["recycles"] == 0 for row in stats["workers"])
        assert len(seen_pids) >= len(first_pids) + 4  # each recycle is a new process
        # The RNGs went along: the envs' generators are SyncVectorEnv's, state for state.
        for got, want in zip(pool.get_attr("np_random"), reference.get_attr("np_random"), strict=True):
            assert got.bit_generator.state == want.bit_generator.state
        assert pool.get_attr("np_random_seed") == reference.get_attr("np_random_seed")
        reference.close()
    assert not no_leaks.wait_for_no_leaks()


def test_rss_cap_recycles_a_worker_whose_env_grows_memory(no_leaks: Any) -> None:
    # Each env leaks 4 MiB a step, up to 96 MiB: the worker passes the 150 MiB cap within ~25 steps.
    make = partial(MemoryGrowingEnv, max_length=5, mib_per_step=4.0, limit_mib=96.0)
    options = PoolOptions(max_worker_rss_mb=150)
    with PoolVectorEnv([make] * 2, num_workers=1, options=options) as pool:
        reference = SyncVectorEnv([make] * 2)
        before = pool.worker_pids
        deadline = time.monotonic() + 60

        def recycled() -> bool:
            if time.monotonic() > deadline:
                raise AssertionError(f"no recycle within 60 s: {pool.stats()['workers']}")
            return recycles(pool) >= 1

        step_both(pool, reference, AutoresetMode.NEXT_STEP, recycled, max_steps=5_000)
        row = pool.stats()["workers"][0]
        assert row["recycles"] >= 1 and row["restarts"] == 0
        assert pool.worker_pids != before
        reference.close()
    assert not no_leaks.wait_for_no_leaks()


def test_a_successor_killed_during_the_handover_fails_its_worker_as_usual(no_leaks: Any) -> None:
    # Recycling is no new way to lose a slot: kill -9 the new process mid-handover and the worker
    # fails as any worker does (its slots truncated, worker_died or, if the death was seen between
    # two steps, episode_lost; a restart), then goes on.
    make = partial(RandomLengthEnv, max_length=7)
    options = PoolOptions(max_episodes_per_worker=2, restart_backoff=0.0)
    with PoolVectorEnv([make] * 4, num_workers=1, options=options) as pool:
        pool.reset(seed=0)
        actions = np.random.default_rng(1)
        deadline = time.monotonic() + 60
        successor = None
        while successor is None:
            assert time.monotonic() < deadline, "no successor started"
            pool.step(actions.integers(0, 3, 4))
            successor = pool.stats()["workers"][0]["successor_pid"]
        os.kill(successor, signal.SIGKILL)
        kinds: set[str] = set()
        while not kinds & {"worker_died", "episode_lost"}:
            assert time.monotonic() < deadline, f"the kill was not reported: {pool.stats()}"
            _, rewards, _, truncated, infos = pool.step(actions.integers(0, 3, 4))
            if "_error_kind" in infos:
                failed = infos["_error_kind"]
                assert truncated[failed].all() and (rewards[failed] == 0).all()
                kinds |= {str(kind) for kind in infos["error_kind"][failed]}
        row = pool.stats()["workers"][0]
        assert row["restarts"] == 1 and "while recycling worker 0, its new process" in row["last_error"]
        assert kinds <= {"worker_died", "episode_lost"}
        assert successor not in pool.worker_pids
        for _ in range(20):  # and it goes on
            pool.step(actions.integers(0, 3, 4))
    assert not no_leaks.wait_for_no_leaks()


def test_daemon_served_workers_recycle_with_the_same_values(no_leaks: Any) -> None:
    # The handover crosses as plain data (codec), never pickle: a daemon's workers recycle too.
    spec = "gym:tests.envs.recycling:RandomLengthEnv"
    extra = ("--max-episodes-per-worker", "4")
    with (
        DaemonProcess(spec, envs=4, workers=1, lease_timeout=10.0, extra=extra) as daemon,
        pool_env.connect(daemon.endpoint, num_envs=4) as env,
    ):
        reference = SyncVectorEnv([RandomLengthEnv] * 4)
        assert_values_same(env.reset(seed=2), reference.reset(seed=2), "reset")
        actions = np.random.default_rng(3)
        deadline = time.monotonic() + 60
        step = 0
        while status_of(daemon.endpoint)["workers"][0].get("recycles", 0) < 2:
            assert time.monotonic() < deadline, status_of(daemon.endpoint)["workers"]
            step += 1
            action = actions.integers(0, 3, 4)
            for name, got, want in zip(FIELDS, env.step(action), reference.step(action), strict=True):
                assert_values_same(got, want, f"step {step} {name}")
        reference.close()
    assert not no_leaks.wait_for_no_leaks()


def test_http_workers_recycle_with_the_same_trajectories_as_without(no_leaks: Any) -> None:
    # HTTP slots hand over their seed streams: a seeded run against the reference server gives the
    # same observations, rewards and flags with recycling as without.
    def run(server: RefServer, options: PoolOptions) -> tuple[list[Any], int]:
        spec = HttpEnvSpec(server.url, f"recycle-{options.max_episodes_per_worker}", step_size=5)
        with PoolVectorEnv(spec, 6, 2, options=options) as pool:
            trace: list[Any] = [pool.reset(seed=4)[0]]
            actions = np.random.default_rng(0)
            for _ in range(150):
                obs, rewards, terminated, truncated, infos = pool.step(actions.choice([0, 0, 2], 6))
                assert "_error" not in infos, infos["error"]
                trace += [obs, rewards, terminated, truncated]
            return trace, int(pool.stats()["counters"].get("worker_recycles", 0))

    with RefServer() as server:
        server.set_faults(**NO_FAULTS)
        plain, none = run(server, PoolOptions())
        recycled, count = run(server, PoolOptions(max_episodes_per_worker=5))
    assert none == 0 and count >= 2
    for i, (a, b) in enumerate(zip(recycled, plain, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"entry {i}")
    assert not no_leaks.wait_for_no_leaks()
