"""RLlib's env runners train through pools: PPO on CartPole and on DegradationEnv (reference server),
the setups that cannot work fail saying what to do, and failed episodes stay out of the statistics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.env.env_context import EnvContext

import pool_env
from pool_env import GymEnvSpec, HttpEnvSpec, PoolVectorEnv, SpecError, UsageError
from pool_env.ray import PoolEnvCreator, PoolEnvRunner, register_pool_env
from pool_env.ray.env_runner import FAILED_EPISODES, ended_by_failure
from pool_env.refserver.process import RefServer

pytestmark = [
    pytest.mark.usefixtures("local_ray"),
    # RLlib registers each env runner's env as "rllib-single-agent-env-v0" in gymnasium's registry, again
    # for each env runner built in this process (the local ones of the tests below)
    pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0:UserWarning"),
]

DRIVER_ONLY_ID = "PoolEnvDriverOnlyCartPole-v0"


def ppo_config(env: Any, *, num_env_runners: int = 1, num_envs: int = 4, batch: int = 128) -> PPOConfig:
    """A small PPO: one remote env runner with a pool of ``num_envs`` slots, ``batch`` steps an iteration."""
    return (
        PPOConfig()
        .environment(env)
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs,
            gym_env_vectorize_mode="vector_entry_point",
            env_runner_cls=PoolEnvRunner,
        )
        .training(train_batch_size_per_learner=batch, minibatch_size=64, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )


def train_two_iterations(config: PPOConfig) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
    """Two ``algo.train()`` results and, per remote env runner, its env's class and slot count."""
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
        envs = algo.env_runner_group.foreach_env_runner(
            lambda runner: (type(runner.env.unwrapped).__name__, runner.env.unwrapped.num_envs),
            local_env_runner=False,
        )
    finally:
        algo.stop()
    return results, envs


def test_ppo_trains_two_iterations_on_cartpole_pools() -> None:
    config = ppo_config(register_pool_env("pool-cartpole", GymEnvSpec("CartPole-v1"), num_workers=1))
    results, envs = train_two_iterations(config)
    assert envs == [("PoolVectorEnv", 4)]
    runners = results[-1]["env_runners"]
    assert runners["num_env_steps_sampled_lifetime"] >= 2 * 128
    assert runners["num_episodes_lifetime"] > 0
    assert 8 <= runners["episode_return_mean"] <= 500  # CartPole returns: 8+ steps of reward 1
    assert runners[FAILED_EPISODES] == 0


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    with RefServer() as ref:
        yield ref


def test_ppo_trains_two_iterations_on_degradation_env_over_http(server: RefServer) -> None:
    token = f"rllib-{uuid.uuid4().hex[:8]}"
    spec = HttpEnvSpec(server.url, user_token=token, step_size=10)
    results, envs = train_two_iterations(ppo_config(register_pool_env("pool-degradation", spec, num_workers=1)))
    assert envs == [("PoolVectorEnv", 4)]
    assert results[-1]["env_runners"]["num_env_steps_sampled_lifetime"] >= 2 * 128
    applied = server.stats()["tokens"][token]["steps_applied"]
    assert applied >= 2 * 128  # the server applied the steps RLlib sampled (and the start of the next batch)


def test_episodes_cut_by_server_failures_stay_out_of_episode_statistics(server: RefServer) -> None:
    server.set_faults(p_episode_error=0.05, fault_seed=3)
    try:
        spec = HttpEnvSpec(server.url, user_token=f"rllib-{uuid.uuid4().hex[:8]}", step_size=10)
        config = ppo_config(register_pool_env("pool-degradation-faults", spec, num_workers=1), num_env_runners=0)
        config.reporting(metrics_num_episodes_for_smoothing=10_000)  # every episode, not a window of the last 100
        runner = PoolEnvRunner(config=config)
        try:
            episodes = runner.sample(num_timesteps=300, random_actions=True)
            metrics = runner.get_metrics()
        finally:
            runner.stop()
    finally:
        server.set_faults(p_episode_error=0.0)
    done = [e for e in episodes if e.is_done]
    failed = [e for e in done if ended_by_failure(e)]
    clean_returns = [e.get_return() for e in done if not ended_by_failure(e)]
    assert failed, "the server's episode errors cut no episode in 300 steps"
    assert clean_returns, "no episode ended by the env in 300 steps"
    assert all(e.get_infos(-1)["error_kind"] == pool_env.ErrorKind.SERVER_EPISODE_ERROR for e in failed)
    assert float(metrics[FAILED_EPISODES]) == len(failed)  # the runner's metrics are RLlib Stats objects
    assert float(metrics["episode_return_mean"]) == pytest.approx(np.mean(clean_returns))
    assert float(metrics["episode_return_min"]) == min(clean_returns)
    assert float(metrics["episode_return_max"]) == max(clean_returns)


def test_environment_pool_vector_env_class_fails_naming_the_creator() -> None:
    with pytest.raises(SpecError, match=r"register_pool_env.*vector_entry_point"):
        ppo_config(PoolVectorEnv, num_env_runners=0).build_algo()


def test_default_sync_vectorize_mode_fails_naming_vector_entry_point() -> None:
    config = ppo_config(register_pool_env("pool-cartpole-sync", GymEnvSpec("CartPole-v1")), num_env_runners=0)
    with pytest.raises(UsageError, match=r"gym_env_vectorize_mode='vector_entry_point'"):
        config.env_runners(gym_env_vectorize_mode="sync").build_algo()


def test_an_id_registered_only_in_the_driver_reaches_the_remote_env_runners() -> None:
    gym.register(DRIVER_ONLY_ID, entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv")
    try:
        name = register_pool_env("pool-driver-only", GymEnvSpec(DRIVER_ONLY_ID), num_workers=1)
        algo = ppo_config(name, num_envs=2).build_algo()
        try:
            registered = algo.env_runner_group.foreach_env_runner(
                lambda runner: (DRIVER_ONLY_ID in gym.registry, runner.env.unwrapped.spec_.env_id),
                local_env_runner=False,
            )
            sampled = algo.env_runner_group.foreach_env_runner(
                lambda runner: sum(len(e) for e in runner.sample(num_timesteps=20)), local_env_runner=False
            )
        finally:
            algo.stop()
    finally:
        gym.registry.pop(DRIVER_ONLY_ID, None)
    assert registered == [(True, DRIVER_ONLY_ID)]
    assert sampled[0] >= 20


def test_an_id_registered_nowhere_fails_naming_where_to_register_it() -> None:
    creator = PoolEnvCreator(GymEnvSpec("PoolEnvNeverRegistered-v0"))
    with pytest.raises(SpecError, match=r"gym\.register\(\.\.\.\) in the driver"):
        creator(EnvContext({}, worker_index=1) | {"num_envs": 2})


@pytest.mark.parametrize("mode", ["SameStep", "Disabled"])
def test_autoreset_modes_rllib_cannot_read_are_refused_at_construction(mode: str) -> None:
    with pytest.raises(SpecError, match="RLlib's env runners need NEXT_STEP"):
        PoolEnvCreator(GymEnvSpec("CartPole-v1"), autoreset_mode=mode)


def test_env_config_keys_are_refused_naming_the_spec() -> None:
    creator = PoolEnvCreator(GymEnvSpec("CartPole-v1"))
    with pytest.raises(UsageError, match=r"\['max_steps'\] would be ignored"):
        creator({"num_envs": 2, "max_steps": 5})
