"""TorchRL's GymWrapper over a pool, unchanged: check_env_specs passes and a rollout (with partial
resets of the envs that ended) equals the same rollout over gymnasium's SyncVectorEnv."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

pytest.importorskip("torchrl", reason="the [torchrl] extra is not installed")

import torch
from torchrl.envs import GymWrapper
from torchrl.envs.utils import check_env_specs

from pool_env import GymEnvSpec, PoolVectorEnv

pytestmark = [pytest.mark.integrations, pytest.mark.timeout(120)]


def rollout(vector_env: Any, steps: int) -> Any:
    with closing(GymWrapper(vector_env)) as env:
        check_env_specs(env)
        env.set_seed(0)
        torch.manual_seed(0)  # the random policy's actions
        return env.rollout(steps, break_when_any_done=False)


@pytest.mark.parametrize("mode", [AutoresetMode.DISABLED, AutoresetMode.SAME_STEP], ids=lambda m: m.name)
def test_gym_wrapper_rollout_equals_sync_vector_envs(mode: AutoresetMode) -> None:
    pool = PoolVectorEnv(GymEnvSpec("CartPole-v1", max_episode_steps=15), 4, 2, autoreset_mode=mode)
    got = rollout(pool, 40)
    want = rollout(SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=15)] * 4, autoreset_mode=mode), 40)
    assert got.batch_size == want.batch_size == torch.Size([4, 40])
    assert got["next", "done"].sum() >= 8  # every env ended at least twice: resets happened mid-rollout
    assert (got == want).all(), "the pool's rollout differs from SyncVectorEnv's"
