"""The start-up space check compares an env's declared spaces with the pool's, after the wire."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from pool_env.protocol import to_plain
from pool_env.space_check import describe_pool, mismatch

BOX = spaces.Box(-1, 1, (2,), np.float32)
NESTED = spaces.Dict({"pos": BOX, "pair": spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(2)))})
ACT = spaces.Discrete(2)


def check(pool_obs: spaces.Space[Any], env_obs: spaces.Space[Any], env_act: spaces.Space[Any] = ACT) -> str | None:
    pool = to_plain(describe_pool(pool_obs, ACT))  # what a worker receives
    return mismatch(pool, [(pool_obs, ACT), (env_obs, env_act)], [4, 5])


@pytest.mark.parametrize(
    "space",
    [
        BOX,
        NESTED,
        spaces.MultiDiscrete(np.array([[2, 3], [4, 5]])),
        spaces.Box(np.array([0, -np.inf], np.float32), np.array([1, np.inf], np.float32)),
    ],
)
def test_the_same_spaces_agree_after_crossing_the_wire(space: spaces.Space[Any]) -> None:
    assert check(space, space) is None


def test_bounds_compare_like_gymnasium_box_equality() -> None:
    nearly = spaces.Box(-1 + 1e-9, 1, (2,), np.float32)
    assert nearly == BOX and check(BOX, nearly) is None


@pytest.mark.parametrize(
    "other",
    [
        spaces.Box(-1, 1, (3,), np.float32),
        spaces.Box(-1, 1, (2,), np.float64),
        spaces.Box(-2, 1, (2,), np.float32),
        spaces.Discrete(2),
        spaces.Dict({"pos": BOX, "pair": spaces.Tuple((spaces.Discrete(4), spaces.MultiBinary(2)))}),
    ],
)
def test_any_difference_names_the_slot_the_space_and_both_values(other: spaces.Space[Any]) -> None:
    assert other != NESTED
    message = check(NESTED, other)
    assert message is not None
    assert message.startswith(f"slot 5: its env declares observation_space {other!r}, but the pool's is {NESTED!r}")


def test_a_different_action_space_is_refused_too() -> None:
    message = check(BOX, BOX, spaces.Discrete(3))
    assert message is not None and message.startswith("slot 5: its env declares action_space Discrete(3)")
