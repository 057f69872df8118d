"""call_slots / set_slots_attr: the call API on chosen slots only (what SB3's ``indices=`` needs),
embedded and through daemons (``pool_env.connect`` over two ``pool-env serve``), with the same results."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import pool_env
from pool_env import GymEnvSpec, PoolVectorEnv
from tests.integration.daemon_process import DaemonProcess

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def frame_envs(where: str) -> Iterator[Any]:
    """Four ``FrameEnv`` slots: an embedded pool, or two daemons of two slots each (so the chosen
    slots are split between them)."""
    if where == "embedded":
        with PoolVectorEnv(GymEnvSpec("tests.envs.dropin:FrameEnv"), 4, 2) as env:
            yield env
        return
    with (
        DaemonProcess("gym:tests.envs.dropin:FrameEnv", envs=2, workers=1) as first,
        DaemonProcess("gym:tests.envs.dropin:FrameEnv", envs=2, workers=1) as second,
        pool_env.connect([first.endpoint, second.endpoint], 4) as env,
    ):
        yield env


@pytest.mark.parametrize("where", ["embedded", "daemons"])
def test_calls_reach_the_chosen_slots_only_in_the_order_given(where: str) -> None:
    with frame_envs(where) as env:
        env.set_slots_attr([3, 0], "gain", [2.0, 5.0])
        assert env.get_attr("gain") == (5.0, 1.0, 1.0, 2.0)
        assert env.call_slots([3, 1], "scaled", 2.0, offset=1.0) == ((5.0, 0), (3.0, 0))
        env.reset(seed=0)
        env.step([0, 1, 0, 1])
        assert env.call_slots([2, 0, 3], "scaled", 1.0) == ((1.0, 1), (5.0, 1), (2.0, 1))
        with pytest.raises(ValueError, match=r"slot 4 out of range 0\.\.3"):
            env.call_slots([4], "scaled", 1.0)
        with pytest.raises(ValueError, match="2 values for 1 slots"):
            env.set_slots_attr([1], "gain", [1.0, 2.0])
        with pytest.raises(AttributeError):
            env.call_slots([1], "no_such_method")
        assert env.get_attr("gain") == (5.0, 1.0, 1.0, 2.0)  # the pool stays usable
