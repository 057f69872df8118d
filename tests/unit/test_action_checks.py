"""The action checks of the hot path (``batch.PlainActions``) agree with the general walk
(``batch.validate_actions``): whatever the hot path accepts, the walk accepts with the same
values; whatever the walk refuses, the hot path refuses too (it then leaves the error to the walk)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from pool_env.batch import PlainActions, validate_actions
from pool_env.errors import InvalidActionError
from pool_env.spaces import leaves_of

SPACES: list[spaces.Space[Any]] = [
    spaces.Discrete(3),
    spaces.Discrete(5, start=-2),
    spaces.MultiDiscrete([2, 3, 4]),
    spaces.MultiBinary(3),
    spaces.Box(-1.0, 1.0, (2,), np.float32),
    spaces.Box(0, 10, (2,), np.int64),
]


def _candidates(space: spaces.Space[Any], n: int) -> list[Any]:
    """Batches for ``n`` slots: valid ones, and invalid ones at each edge of the space."""
    rng = np.random.default_rng(0)
    valid = np.stack([space.sample() for _ in range(n)])
    batches: list[Any] = [valid, valid.tolist(), valid.astype(np.int32) if valid.dtype.kind == "i" else valid]
    batches.append(valid[:-1])  # one slot short
    batches.append(valid.astype(np.float64) + 0.5)  # a float batch for every space
    if isinstance(space, spaces.Discrete):
        for value in (space.start - 1, space.start + space.n, space.start, space.start + space.n - 1):
            bad = valid.copy()
            bad[int(rng.integers(n))] = value
            batches.append(bad)
    elif isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        high = space.nvec if isinstance(space, spaces.MultiDiscrete) else np.full(3, 2)
        for row, col, value in ((0, 0, -1), (n - 1, 2, int(high[2]))):
            bad = valid.copy()
            bad[row, col] = value
            batches.append(bad)
    else:  # Box
        for value in (space.low[0] - 1, space.high[0] + 1):
            bad = valid.copy()
            bad[n // 2, 0] = value
            batches.append(bad)
        if valid.dtype.kind == "f":
            nan = valid.copy()
            nan[0, 1] = np.nan
            batches.append(nan)
    return batches


@pytest.mark.parametrize("check_bounds", [False, True])
@pytest.mark.parametrize("n", [4, 100])  # both sides of the list-based check of small integer batches
@pytest.mark.parametrize("space", SPACES, ids=str)
def test_the_hot_path_accepts_only_what_the_walk_accepts_with_the_same_values(
    space: spaces.Space[Any], n: int, check_bounds: bool
) -> None:
    leaves = leaves_of(space)
    plain = PlainActions(leaves, space, n)
    assert plain.usable
    accepted = 0
    for batch in _candidates(space, n):
        fast = plain.accept(batch, check_bounds)
        try:
            (walked,) = validate_actions(batch, leaves, space, n, check_bounds)
        except InvalidActionError:
            assert fast is None, f"the hot path accepted {batch!r}, which validate_actions refuses"
            continue
        if fast is not None:
            accepted += 1
            assert fast.dtype == walked.dtype and fast.shape == walked.shape
            np.testing.assert_array_equal(fast, walked)
    assert accepted >= 1  # the plain valid batch goes the hot way


def test_out_of_bounds_discrete_actions_are_refused_by_both_paths_at_any_batch_size() -> None:
    space = spaces.Discrete(2)
    for n in (1, 64, 65, 1000):
        plain = PlainActions(leaves_of(space), space, n)
        actions = np.ones(n, dtype=np.int64)
        assert plain.accept(actions, False) is actions
        actions[-1] = 2
        assert plain.accept(actions, False) is None
        with pytest.raises(InvalidActionError, match="outside the action space"):
            validate_actions(actions, leaves_of(space), space, n)


def test_nested_and_free_shape_spaces_take_the_general_walk() -> None:
    for space in (
        spaces.Dict({"a": spaces.Discrete(2)}),
        spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
        spaces.Text(5),
    ):
        plain = PlainActions(leaves_of(space), space, 4)
        assert not plain.usable
        assert plain.accept(np.zeros(4, dtype=np.int64), False) is None


def test_an_action_outside_the_space_is_named_by_its_slot_and_value() -> None:
    discrete = spaces.Discrete(3)
    actions = np.array([0, 1, 7, 2, 9], dtype=np.int64)
    with pytest.raises(InvalidActionError, match=r"Discrete\(3\): slot 2 has 7 \(and 1 more slot\)$"):
        validate_actions(actions, leaves_of(discrete), discrete, 5)

    box = spaces.Box(-2.0, 2.0, (3,), np.float32)
    rows = np.zeros((4, 3), dtype=np.float32)
    rows[1, 2] = np.nan  # NaN is outside too
    rows[3, 0] = 5.0
    with pytest.raises(InvalidActionError, match=r"slot 1 has \[ 0.  0. nan\] \(and 1 more slot\)$"):
        validate_actions(rows, leaves_of(box), box, 4, check_bounds=True)

    multi = spaces.MultiDiscrete([2, 5])
    pairs = np.array([[1, 4], [0, 5], [2, 0], [1, 1]], dtype=np.int64)
    with pytest.raises(InvalidActionError, match=r"slot 1 has \[0 5\] \(and 1 more slot\)$"):
        validate_actions(pairs, leaves_of(multi), multi, 4)
    pairs[2] = 0
    with pytest.raises(InvalidActionError, match=r"slot 1 has \[0 5\]$"):
        validate_actions(pairs, leaves_of(multi), multi, 4)
