"""Chaos on the fast path with local envs: CartPole workers SIGKILLed and frozen (SIGSTOP) at random.

Steps and resets travel through shared-memory sequence words (:mod:`pool_env.fastpath`), not
zmq. Meanwhile a seeded RNG signals random workers, between steps or while a step is in flight.
Every slot whose worker was never signalled (worker 0's never is) must stay bit-for-bit equal to gymnasium's
``SyncVectorEnv`` stepped with the same actions; every signalled worker's slots must come back
failed (truncated, reward 0, an error) within two steps and start new episodes on the next one;
every signal costs exactly one restart; nothing hangs and nothing is left behind.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv
from tests.chaos.conftest import forced_signals

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

NUM_ENVS = 12
NUM_WORKERS = 4
STEPS = 500
WARM_UP = 10
P_SIGNAL = 0.025
OPTIONS = PoolOptions(step_timeout=1.0, restart_backoff=0.0, flap_limit=1000, kill_grace=0.2)


def _failed(infos: dict[str, Any], slot: int) -> bool:
    return bool("_error" in infos and infos["_error"][slot])


def test_undisturbed_slots_match_sync_vector_env_while_workers_are_killed_and_frozen(chaos_seed: int) -> None:
    rng = random.Random(chaos_seed)
    forced = forced_signals(rng, range(WARM_UP, STEPS - 5))
    reference = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * NUM_ENVS)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), NUM_ENVS, NUM_WORKERS, options=OPTIONS) as env:
        obs, _ = env.reset(seed=chaos_seed % 10_000)
        expected, _ = reference.reset(seed=chaos_seed % 10_000)
        assert np.array_equal(obs, expected)
        disturbed: set[int] = set()
        awaiting: dict[int, int] = {}  # slot -> last step by which it must have failed
        resetting: set[int] = set()  # slots whose failure was just reported: a new episode next
        quiet_until = [0] * NUM_WORKERS  # no signal to a worker until its slots recovered
        signals = 0
        for t in range(STEPS):
            actions = np.array([rng.randrange(2) for _ in range(NUM_ENVS)])
            sig = forced.get(t) or (rng.choice((signal.SIGKILL, signal.SIGSTOP)) if rng.random() < P_SIGNAL else None)
            victim = None
            if sig is not None and WARM_UP <= t < STEPS - 3:
                rows = env.stats()["workers"]
                # Worker 0 is never signalled: its slots are compared for the whole run.
                ready = [w for w, row in list(enumerate(rows))[1:] if row["state"] == "running" and quiet_until[w] <= t]
                if ready:
                    victim = rng.choice(ready)
                    slots = rows[victim]["slots"]
                    disturbed.update(slots)
                    awaiting.update({slot: t + 1 for slot in slots})
                    quiet_until[victim] = t + 4
                    signals += 1
            in_flight = victim is not None and rng.random() < 0.5
            if victim is not None and not in_flight:
                os.kill(env.stats()["workers"][victim]["pid"], sig)
            env.step_async(actions)
            if victim is not None and in_flight:
                os.kill(env.stats()["workers"][victim]["pid"], sig)
            obs, reward, terminated, truncated, infos = env.step_wait()
            expected, expected_reward, expected_terminated, expected_truncated, _ = reference.step(actions)

            for slot in range(NUM_ENVS):
                if slot not in disturbed:
                    assert not _failed(infos, slot), (t, slot, infos)
                    assert np.array_equal(obs[slot], expected[slot]), (t, slot)
                    assert reward[slot] == expected_reward[slot], (t, slot)
                    assert terminated[slot] == expected_terminated[slot], (t, slot)
                    assert truncated[slot] == expected_truncated[slot], (t, slot)
                elif slot in resetting:
                    resetting.discard(slot)
                    assert not _failed(infos, slot), (t, slot, infos)
                    assert reward[slot] == 0 and not terminated[slot] and not truncated[slot], (t, slot)
                elif slot in awaiting and _failed(infos, slot):
                    del awaiting[slot]
                    resetting.add(slot)
                    assert truncated[slot] and not terminated[slot] and reward[slot] == 0, (t, slot)
                elif slot in awaiting:
                    # Signalled while its step was in flight: the step may have finished first.
                    assert t < awaiting[slot], f"slot {slot} signalled by step {awaiting[slot] - 1} never failed"
                    assert not _failed(infos, slot)
        stats = env.stats()
    assert signals >= 2
    assert sum(row["restarts"] for row in stats["workers"]) == signals
    assert stats["counters"]["fast_path_calls"] > STEPS * NUM_WORKERS // 2, stats["counters"]
    assert not awaiting, f"signalled slots that never failed: {awaiting}"
