"""Gymnasium spaces -> shared-memory leaves; unsupported spaces are refused with their name."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from pool_env.envs import HttpEnvSpec
from pool_env.shm import BatchLayout
from pool_env.spaces import leaves_of


def test_nested_spaces_flatten_into_named_leaves() -> None:
    space = spaces.Dict(
        {
            "pos": spaces.Box(-1, 1, (2,), np.float32),
            "parts": spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(4))),
            "keys": spaces.MultiDiscrete([2, 3]),
        }
    )
    leaves = leaves_of(space)
    # gymnasium sorts the keys of a Dict space built from a plain dict
    assert [leaf.path for leaf in leaves] == [("keys",), ("parts", 0), ("parts", 1), ("pos",)]
    assert [leaf.shape for leaf in leaves] == [(2,), (), (4,), (2,)]
    assert leaves[3].dtype == np.dtype(np.float32).str


def test_a_space_without_a_fixed_shape_is_a_message_leaf_with_no_room_in_shared_memory() -> None:
    leaves = leaves_of(spaces.Dict({"note": spaces.Text(5), "pos": spaces.Box(0, 1, (2,))}))
    assert [(leaf.path, leaf.by_message) for leaf in leaves] == [(("note",), True), (("pos",), False)]
    layout = BatchLayout(3, tuple(leaves), (), None, None)
    assert [(name, dtype.itemsize, shape) for name, dtype, shape in layout.arrays()][:2] == [
        ("obs/0", 1, (3,)),  # one placeholder byte per slot: the values travel in messages
        ("obs/1", 4, (3, 2)),
    ]


def test_http_spaces_offer_last_row_or_padded_chunk() -> None:
    last, action, _, _ = HttpEnvSpec("http://x", "t").probe()
    assert last.shape == (9,) and last.dtype == np.float32 and action.n == 3
    chunk, *_ = HttpEnvSpec("http://x", "t", step_size=7, observation="chunk").probe()
    assert chunk.shape == (7, 9)
