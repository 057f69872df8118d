"""A node's pool lost and restarted by Ray, seen step by step from the env it serves: NEXT_STEP
autoreset holds across the loss (a slot mid-episode is cut and restarts the step after; a slot at
its autoreset step starts its new episode at once)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from pool_env import ErrorKind, GymEnvSpec, StepFate
from pool_env.ray import NodePools, NodePoolVectorEnv, start_node_pools

pytestmark = pytest.mark.usefixtures("local_ray")

NUM_ENVS = 4
CARTPOLE_RESET_BOUND = 0.05  # CartPole's reset draws every state variable uniformly in [-0.05, 0.05]


@pytest.fixture
def pools() -> Iterator[NodePools]:
    spec = GymEnvSpec("CartPole-v1")
    with start_node_pools(spec, envs_per_node=NUM_ENVS, workers_per_node=1, group="steps") as node_pools:
        yield node_pools


def is_reset_state(obs: np.ndarray) -> bool:
    return bool(np.all(np.abs(obs) <= CARTPOLE_RESET_BOUND))


def test_a_lost_pool_cuts_running_episodes_and_starts_due_ones_at_once(pools: NodePools) -> None:
    env = NodePoolVectorEnv("steps", NUM_ENVS, timeout=3.0)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        ended = np.zeros(NUM_ENVS, dtype=bool)
        for _ in range(500):  # until some slot just ended and another did not
            _, _, terminated, truncated, _ = env.step(rng.integers(0, 2, NUM_ENVS))
            ended = terminated | truncated
            if ended.any() and not ended.all():
                break
        assert ended.any() and not ended.all(), "no step ended some slots but not all in 500 steps"
        first = env.attachment
        os.kill(first["pid"], signal.SIGKILL)

        obs, rewards, terminated, truncated, infos = env.step(rng.integers(0, 2, NUM_ENVS))
        assert env.reattachments == 1 and env.attachment["pid"] != first["pid"]
        assert env.attachment["node_id"] == first["node_id"]
        np.testing.assert_array_equal(truncated, ~ended)  # running episodes cut, due slots not
        assert not terminated.any() and not rewards.any()
        np.testing.assert_array_equal(infos["_error_kind"], ~ended)
        assert all(infos["error_kind"][i] == ErrorKind.WORKER_DIED for i in np.flatnonzero(~ended))
        assert all(infos["step_fate"][i] == StepFate.UNKNOWN for i in np.flatnonzero(~ended))
        assert all(is_reset_state(obs[i]) for i in np.flatnonzero(ended))  # new episodes start now

        obs_next, rewards, terminated, truncated, infos = env.step(rng.integers(0, 2, NUM_ENVS))
        cut = np.flatnonzero(~ended)
        assert all(is_reset_state(obs_next[i]) for i in cut)  # the cut slots' new episodes
        assert not rewards[cut].any() and not terminated[cut].any() and not truncated[cut].any()
        assert all(rewards[i] == 1.0 for i in np.flatnonzero(ended))  # the others stepped (CartPole pays 1)
        assert "_error" not in infos or not infos["_error"].any()
    finally:
        env.close()
