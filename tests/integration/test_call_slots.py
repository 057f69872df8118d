"""call_slots / set_slots_attr: the call API on chosen slots only (what SB3's ``indices=`` needs)."""

from __future__ import annotations

import pytest

from pool_env import GymEnvSpec, PoolVectorEnv

pytestmark = pytest.mark.timeout(60)


def test_calls_reach_the_chosen_slots_only_in_the_order_given() -> None:
    with PoolVectorEnv(GymEnvSpec("tests.envs.dropin:FrameEnv"), 4, 2) as env:
        env.set_slots_attr([3, 0], "gain", [2.0, 5.0])
        assert env.get_attr("gain") == (5.0, 1.0, 1.0, 2.0)
        assert env.call_slots([3, 1], "scaled", 2.0, offset=1.0) == ((5.0, 0), (3.0, 0))
        with pytest.raises(ValueError, match=r"slot 4 out of range 0\.\.3"):
            env.call_slots([4], "scaled", 1.0)
        with pytest.raises(ValueError, match="2 values for 1 slots"):
            env.set_slots_attr([1], "gain", [1.0, 2.0])
        assert env.get_attr("gain") == (5.0, 1.0, 1.0, 2.0)  # the pool stays usable
