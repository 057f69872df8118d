"""The DegradationEnv simulator of the reference server (PROTOCOL.md §8)."""

from __future__ import annotations

import numpy as np
import pytest

from pool_env.envs.degradation import FLY, REPAIR, SELL
from pool_env.refserver.sim import DegradationEnv, EpisodeEndedError


def run_never_repair(seed: int, step_size: int = 10) -> tuple[DegradationEnv, list[float], list[int]]:
    env = DegradationEnv(seed=seed)
    rewards, rows = [], []
    while not env.done:
        result = env.step_chunk(FLY, step_size)
        rewards.append(result.reward)
        rows.append(result.flights)
    return env, rewards, rows


def test_same_seed_gives_the_same_episode() -> None:
    actions = [FLY, FLY, REPAIR, FLY, FLY, FLY, SELL]
    runs = []
    for _ in range(2):
        env = DegradationEnv(seed=123)
        obs = [np.array(env.last_observation)]
        rewards = []
        for action in actions:
            if env.done:
                break
            result = env.step_chunk(action, 10)
            obs.append(result.observations)
            rewards.append(result.reward)
        runs.append((np.concatenate([o.reshape(-1, 9) for o in obs]), rewards))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_reset_with_a_seed_reproduces_and_other_seeds_differ() -> None:
    env = DegradationEnv(seed=1)
    first = env.reset(7)
    env.step_chunk(FLY, 10)
    assert env.reset(7) == first
    assert env.reset(8) != first


def test_null_seed_draws_fresh_entropy() -> None:
    assert DegradationEnv(seed=None).last_observation != DegradationEnv(seed=None).last_observation


def test_reset_observation_is_nine_floats_in_the_observed_ranges() -> None:
    obs = np.array([DegradationEnv(seed=s).last_observation for s in range(200)])
    assert obs.shape == (200, 9)
    assert np.all(obs[:, 7] == 0.0)
    assert np.all((obs[:, 8] >= 9.1) & (obs[:, 8] <= 10.8))
    mean = obs.mean(axis=0)
    assert 793 < mean[0] < 798  # HPC_Tout
    assert 19300 < mean[1] < 19420  # HP_Nmech
    assert 1.355e6 < mean[5] < 1.375e6  # HPC_Pout_st
    assert 3950 < mean[6] < 3962  # LP_Nmech


def test_fly_chunk_has_step_size_rows_and_dtamb_starts_at_exactly_9_1() -> None:
    env = DegradationEnv(seed=3)
    for expected_step in (10, 20, 30):
        result = env.step_chunk(FLY, 10)
        assert result.observations.shape == (10, 9)
        assert result.observations[0, 8] == 9.1
        assert np.all(result.observations[:, 8] >= 9.1)
        assert np.all(result.observations[:, 8] <= 10.9)
        assert np.all(result.observations[:, 7] == 0.0)
        assert env.step == expected_step
        assert not result.terminated and not result.truncated and result.reason is None


def test_fly_reward_is_about_45_per_flight_and_falls_with_wear() -> None:
    chunks = np.array([run_never_repair(seed)[1][:5] for seed in range(200)])
    assert 430 < chunks[:, 0].mean() < 480
    assert chunks[:, 4].mean() < chunks[:, 2].mean() < chunks[:, 0].mean()


def test_sell_pays_150_in_one_row_and_terminates() -> None:
    env = DegradationEnv(seed=5)
    env.step_chunk(FLY, 10)
    result = env.step_chunk(SELL, 10)
    assert result.reward == 150.0
    assert result.observations.shape == (1, 9)
    assert result.terminated and not result.truncated and result.reason == "sold"
    assert env.step == 11


def test_repair_chunk_costs_about_530_and_restores_health() -> None:
    rewards = []
    for seed in range(100):
        env = DegradationEnv(seed=seed)
        for _ in range(4):
            env.step_chunk(FLY, 10)
        before = env.degradation
        result = env.step_chunk(REPAIR, 10)
        rewards.append(result.reward)
        assert env.num_repairs == 1
        assert env.degradation < before
    assert -600 < float(np.median(rewards)) < -460


def test_never_repair_fails_after_58_to_138_flights_with_minus_1000() -> None:
    for seed in range(300):
        env, rewards, rows = run_never_repair(seed)
        assert 58 <= env.step <= 138, seed
        assert env.terminated and env.reason == "failure"
        assert rewards[-1] == -1000.0
        assert 2 <= rows[-1] <= 10  # never on the first sub-step of a chunk
        assert sum(rows) == env.step


def test_failure_with_step_size_one_can_happen_on_the_first_sub_step() -> None:
    env, rewards, rows = run_never_repair(11, step_size=1)
    assert rows[-1] == 1 and rewards[-1] == -1000.0 and env.reason == "failure"


def test_max_steps_truncates_with_a_short_last_chunk() -> None:
    env = DegradationEnv(max_steps=25, seed=2)
    assert [env.step_chunk(FLY, 10).flights for _ in range(3)] == [10, 10, 5]
    assert env.truncated and not env.terminated and env.reason == "max_steps" and env.step == 25


def test_stepping_an_ended_episode_raises() -> None:
    env = DegradationEnv(seed=1)
    env.step_chunk(SELL, 10)
    with pytest.raises(EpisodeEndedError):
        env.step_chunk(FLY, 10)


@pytest.mark.parametrize(("action", "step_size"), [(3, 10), (-1, 10), (FLY, 0)])
def test_invalid_action_or_step_size_is_rejected(action: int, step_size: int) -> None:
    with pytest.raises(ValueError):
        DegradationEnv(seed=1).step_chunk(action, step_size)


def test_rewards_add_up_to_total_reward() -> None:
    env, rewards, _ = run_never_repair(4)
    assert env.total_reward == pytest.approx(sum(rewards))
