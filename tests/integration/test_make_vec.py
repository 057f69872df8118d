"""gymnasium.make_vec gives a pool in one line (ids with a vector_entry_point), with the values
of gymnasium's own make_vec(..., vectorization_mode="sync") for the same seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import pool_env.integrations.make_vec as pool_ids
from pool_env import HttpEnvSpec, PoolVectorEnv, SpecError
from pool_env.refserver.process import RefServer
from tests.integration.reference import assert_same

pytestmark = pytest.mark.timeout(60)

gym.register_envs(pool_ids)


def test_make_vec_pool_id_gives_a_pool_with_sync_values() -> None:
    envs = gym.make_vec("pool_env/Pool-v0", num_envs=3, env_id="CartPole-v1", num_workers=2, max_episode_steps=8)
    sync = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync", max_episode_steps=8)
    try:
        assert isinstance(envs, PoolVectorEnv) and envs.num_workers == 2
        assert envs.spec is not None and envs.spec.id == "pool_env/Pool-v0"
        assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
        for got, want in zip(envs.reset(seed=4), sync.reset(seed=4), strict=True):
            assert_same(got, want, "reset")
        rng = np.random.default_rng(1)
        for t in range(20):  # past the 8-step limit: autoresets happen
            actions = rng.integers(0, 2, 3)
            for got, want in zip(envs.step(actions), sync.step(actions), strict=True):
                assert_same(got, want, f"t={t}")
    finally:
        envs.close()
        sync.close()


def test_register_makes_a_pool_id_and_pool_arguments_reach_the_pool() -> None:
    assert pool_ids.register("CartPole-v1") == "pool_env/CartPole-v1"
    with gym.make_vec("pool_env/CartPole-v1", 2, autoreset_mode=AutoresetMode.SAME_STEP) as envs:
        assert isinstance(envs, PoolVectorEnv) and envs.autoreset_mode is AutoresetMode.SAME_STEP
        assert envs.single_observation_space.shape == (4,)


def test_missing_arguments_are_named() -> None:
    with pytest.raises(SpecError, match="needs env_id="):
        gym.make_vec("pool_env/Pool-v0", num_envs=2)
    with pytest.raises(SpecError, match="needs user_token="):
        gym.make_vec("pool_env/DegradationEnv-v0", num_envs=2, server_url="http://127.0.0.1:9")
    with pytest.raises(SpecError, match="unknown argument 'tokn'"):
        gym.make_vec("pool_env/DegradationEnv-v0", num_envs=2, server_url="http://127.0.0.1:9", tokn="x")


def test_degradation_env_id_gives_the_pool_of_an_http_spec() -> None:
    with RefServer() as server:  # no faults by default
        fields = {"server_url": server.url, "user_token": "make-vec", "step_size": 5}
        with (
            gym.make_vec("pool_env/DegradationEnv-v0", num_envs=2, num_workers=1, **fields) as envs,
            PoolVectorEnv(HttpEnvSpec(**fields), 2, 1) as direct,
        ):
            assert isinstance(envs, PoolVectorEnv) and envs.spec_ == direct.spec_
            for got, want in zip(envs.reset(seed=3), direct.reset(seed=3), strict=True):
                assert_same(got, want, "reset")
            actions = np.zeros(2, np.int64)  # keep running
            for got, want in zip(envs.step(actions)[:4], direct.step(actions)[:4], strict=True):
                assert_same(got, want, "step")
