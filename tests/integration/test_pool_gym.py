"""The embedded pool over local gymnasium envs behaves exactly like ``SyncVectorEnv``."""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from pool_env import GymEnvSpec, PoolVectorEnv
from tests.integration.reference import assert_same, make_reference, take

pytestmark = pytest.mark.timeout(60)

SPECS = {
    "CartPole-v1": GymEnvSpec("CartPole-v1"),
    "Pendulum-v1": GymEnvSpec("Pendulum-v1"),  # continuous actions, truncated at 200 steps
    "dict-tuple": GymEnvSpec("tests.envs.faulty:make_dict_tuple_env", max_steps=25),  # nested obs, Dict actions
    # Plain and loose return types (numpy rewards/flags, castable obs) mixed within one step.
    "loose-returns": GymEnvSpec("tests.envs.loose_returns:make_loose_returns_env"),
    "84x84x4": GymEnvSpec("pool_env.bench.envs:make_big_obs_env", episode_length=20),  # a multi-dimensional Box
}
FIELDS = ("obs", "reward", "terminated", "truncated", "infos")


# Uneven splits, one worker, one slot per worker; each space kind (Discrete, Box actions, Dict/Tuple).
LAYOUTS = [
    ("CartPole-v1", 17, 6),
    ("CartPole-v1", 4, 1),
    ("CartPole-v1", 8, 8),
    ("Pendulum-v1", 5, 2),
    ("dict-tuple", 7, 3),
    ("loose-returns", 6, 2),
    ("84x84x4", 3, 1),
]


@pytest.mark.parametrize(("env_name", "num_envs", "num_workers"), LAYOUTS)
def test_same_seeds_give_bit_identical_batches_to_sync_vector_env(
    env_name: str, num_envs: int, num_workers: int
) -> None:
    spec = SPECS[env_name]
    reference = make_reference(spec, num_envs)
    with contextlib.closing(reference), PoolVectorEnv(spec, num_envs, num_workers) as env:
        obs, infos = env.reset(seed=42)
        ref_obs, ref_infos = reference.reset(seed=42)
        assert_same(obs, ref_obs, "reset obs")
        assert_same(infos, ref_infos, "reset infos")
        reference.action_space.seed(7)
        stepped_after_end = 0
        ended = np.zeros(num_envs, dtype=bool)
        for t in range(300):
            actions = reference.action_space.sample()
            got, want = env.step(actions), reference.step(actions)
            for name, actual, expected in zip(FIELDS, got, want, strict=True):
                assert_same(actual, expected, f"step {t} {name}")
            stepped_after_end += int(ended.sum())
            ended = want[2] | want[3]
        assert stepped_after_end > 0, "the run must include autoresets"


@pytest.mark.parametrize("env_name", list(SPECS))
def test_spaces_and_autoreset_mode_match_gymnasium(env_name: str) -> None:
    spec = SPECS[env_name]
    reference = make_reference(spec, 3)
    with contextlib.closing(reference), PoolVectorEnv(spec, num_envs=3, num_workers=1) as env:
        assert isinstance(env, gym.vector.VectorEnv)
        assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
        assert env.metadata["autoreset_mode"] == reference.metadata["autoreset_mode"]
        assert env.num_envs == 3
        assert env.single_observation_space == reference.single_observation_space
        assert env.single_action_space == reference.single_action_space
        assert env.observation_space == reference.observation_space
        assert env.action_space == reference.action_space


def test_reset_envs_changes_only_the_chosen_slot() -> None:
    spec = SPECS["CartPole-v1"]
    num_envs, chosen, seed = 4, 2, 123
    others = [s for s in range(num_envs) if s != chosen]
    reference = make_reference(spec, num_envs)  # never reset: the other slots must keep following it
    lone = make_reference(spec, 1)  # what the chosen slot must follow after its reset
    rng = np.random.default_rng(0)
    with contextlib.closing(reference), contextlib.closing(lone), PoolVectorEnv(spec, num_envs, 2) as env:
        env.reset(seed=0)
        reference.reset(seed=0)
        for _ in range(15):
            actions = rng.integers(0, 2, num_envs)
            obs_before, *_ = env.step(actions)
            reference.step(actions)

        obs, _ = env.reset_envs([chosen], seeds=[seed])
        lone_obs, _ = lone.reset(seed=seed)

        assert_same(obs[others], obs_before[others], "untouched rows of reset_envs' observations")
        assert_same(obs[[chosen]], lone_obs, "reset row")
        for t in range(100):
            actions = rng.integers(0, 2, num_envs)
            got, want, want_lone = env.step(actions), reference.step(actions), lone.step(actions[[chosen]])
            for i, name in enumerate(("obs", "reward", "terminated", "truncated")):
                assert_same(take(got[i], others), take(want[i], others), f"step {t} {name} of other slots")
                assert_same(take(got[i], [chosen]), want_lone[i], f"step {t} {name} of the reset slot")


def test_reset_envs_gives_nested_observations_of_a_freshly_seeded_env() -> None:
    spec = SPECS["dict-tuple"]
    with PoolVectorEnv(spec, num_envs=3, num_workers=2) as env:
        env.reset(seed=0)
        obs, _ = env.reset_envs([0, 2], seeds=[11, 12])
    for slot, seed in ((0, 11), (2, 12)):
        lone = make_reference(spec, 1)
        with contextlib.closing(lone):
            expected, _ = lone.reset(seed=seed)
        assert_same(take(obs, [slot]), expected, f"slot {slot}")


def test_returned_arrays_stay_valid_after_the_next_step() -> None:
    with PoolVectorEnv(SPECS["CartPole-v1"], num_envs=2, num_workers=1) as env:
        obs, _ = env.reset(seed=0)
        kept_obs = obs.copy()
        step = env.step(np.array([0, 1]))
        kept_step = [np.copy(x) for x in step[:4]]
        env.step(np.array([1, 0]))
        assert_same(obs, kept_obs, "reset observations after two steps")
        for name, actual, expected in zip(FIELDS, step[:4], kept_step, strict=False):
            assert_same(actual, expected, f"first step {name} after the second step")
