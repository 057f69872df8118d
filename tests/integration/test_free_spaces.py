"""Spaces without a fixed shape (Text, Sequence, Graph, a custom ``Space``, and such a part inside a
Dict with int keys and an empty Dict) travel through the workers' messages, as with
``AsyncVectorEnv(shared_memory=False)``, value for value ``SyncVectorEnv``; what gymnasium refuses
fails with gymnasium's own ``TypeError``; ``env.spec`` is what gymnasium's vector envs expose."""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from pool_env import GymEnvSpec, PoolVectorEnv
from pool_env.errors import InvalidActionError, SpecError
from tests.envs.free_spaces import EchoTextEnv, FreeShapeEnv, NotASpaceEnv
from tests.integration.reference import FIELDS, assert_values_same

pytestmark = pytest.mark.timeout(90)


def trace(env: Any, steps: int, mode: AutoresetMode) -> list[Any]:
    """Reset, then ``steps`` steps with seeded actions (under DISABLED, masked resets of ended slots)."""
    out: list[Any] = [env.reset(seed=3)]
    actions = np.random.default_rng(0)
    for _ in range(steps):
        batch = env.step(actions.integers(0, 2, env.num_envs))
        out.append(batch)
        done = batch[2] | batch[3]
        if mode is AutoresetMode.DISABLED and done.any():
            out.append(env.reset(options={"reset_mask": done}))
    return out


@pytest.mark.parametrize("kind", ["text", "sequence", "graph", "mixed", "custom"])
def test_observations_without_a_fixed_shape_equal_sync_vector_env(kind: str, no_leaks: Any) -> None:
    make = partial(FreeShapeEnv, kind)
    expected = trace(SyncVectorEnv([make] * 3), 12, AutoresetMode.NEXT_STEP)
    with PoolVectorEnv([make] * 3, num_workers=2) as pool:
        assert pool.observation_space == SyncVectorEnv([make] * 3).observation_space
        got = trace(pool, 12, AutoresetMode.NEXT_STEP)
        assert pool.observation_space.contains(got[-1][0])
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        for name, x, y in zip(FIELDS, a, e, strict=False):
            assert_values_same(x, y, f"{kind} call {i} {name}")
    assert not no_leaks.wait_for_no_leaks()


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED], ids=lambda m: m.name)
def test_text_observations_under_every_autoreset_mode_equal_sync(mode: AutoresetMode) -> None:
    make = partial(FreeShapeEnv, "mixed")
    expected = trace(SyncVectorEnv([make] * 3, autoreset_mode=mode), 10, mode)
    with PoolVectorEnv([make] * 3, num_workers=1, autoreset_mode=mode) as pool:
        got = trace(pool, 10, mode)
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        for name, x, y in zip(FIELDS, a, e, strict=False):
            assert_values_same(x, y, f"call {i} {name}")


def test_a_space_gymnasium_refuses_fails_with_gymnasiums_own_type_error() -> None:
    with pytest.raises(TypeError) as sync_error:
        AsyncVectorEnv([NotASpaceEnv] * 2, shared_memory=False)
    with pytest.raises(TypeError) as pool_error:
        PoolVectorEnv([NotASpaceEnv] * 2)
    assert str(pool_error.value) == str(sync_error.value)
    assert "is not a gymnasium Space instance" in str(pool_error.value)


def test_partial_batches_of_a_free_shape_space_are_refused_naming_the_fix() -> None:
    with pytest.raises(SpecError, match="use batch_size=num_envs"):
        PoolVectorEnv([partial(FreeShapeEnv, "text")] * 4, num_workers=2, batch_size=2)


def test_env_spec_is_what_gymnasium_vector_envs_expose() -> None:
    with PoolVectorEnv(GymEnvSpec("CartPole-v1", max_episode_steps=40), num_envs=2, num_workers=1) as pool:
        reference = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async", max_episode_steps=40)
        assert pool.spec == reference.spec and pool.spec is not None
        assert pool.spec.kwargs["max_episode_steps"] == 40
        reference.close()
    with PoolVectorEnv([lambda: gym.make("CartPole-v1")] * 2, num_workers=1) as pool:
        assert pool.spec is None  # as AsyncVectorEnv(env_fns): nothing says how to make it again
    with PoolVectorEnv(GymEnvSpec("tests.envs.free_spaces:FreeShapeEnv"), num_envs=1) as pool:
        assert pool.spec is None  # an import string is no registered id


@pytest.mark.parametrize("nested", [False, True], ids=["text", "dict_with_text"])
def test_actions_without_a_fixed_shape_reach_the_envs_like_sync(nested: bool) -> None:
    make = partial(EchoTextEnv, nested)
    reference = SyncVectorEnv([make] * 3)
    with PoolVectorEnv([make] * 3, num_workers=2) as pool:
        assert pool.action_space == reference.action_space
        assert_values_same(pool.reset(seed=1), reference.reset(seed=1), "reset")
        pool.action_space.seed(4)
        for step in range(7):
            actions = pool.action_space.sample()
            for name, got, want in zip(FIELDS, pool.step(actions), reference.step(actions), strict=True):
                assert_values_same(got, want, f"step {step} {name}")
        with pytest.raises(InvalidActionError, match="tuple of 3 values"):
            pool.step({"say": ("a", "b"), "volume": np.zeros((3, 1), np.float32)} if nested else ("a", "b"))
