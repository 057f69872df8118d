"""The env contract a worker checks per slot: field, expected and got, and the accepted values."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from pool_env.shm import Leaf
from workers.contract import ContractViolation, check_outcome

BOX = [Leaf((), "<f4", (2,))]
NESTED = [Leaf(("pos",), "<f4", (2,)), Leaf(("n",), "<i8", ())]


def check(obs: Any = None, reward: Any = 0.0, terminated: Any = False, truncated: Any = False, info: Any = None):
    return check_outcome(obs, reward, terminated, truncated, {} if info is None else info, BOX, True)


@pytest.mark.parametrize(
    "reward", [1, 1.5, True, np.float32(0.5), np.int64(3), np.array(2.0), np.array(7, np.int8), Fraction(1, 2)]
)
def test_real_scalars_are_rewards_as_sync_vector_env_stores_them(reward: Any) -> None:
    got, *_ = check(reward=reward)
    assert type(got) is float and got == float(np.float64(reward))


@pytest.mark.parametrize(
    ("reward", "got"),
    [
        (np.array([1.0]), "ndarray of shape (1,) and dtype float64"),
        ([1.0], "list [1.0]"),
        (None, "NoneType None"),
        ("1.0", "str '1.0'"),
        (1 + 2j, "complex (1+2j)"),
    ],
)
def test_anything_else_as_a_reward_names_field_expected_and_got(reward: Any, got: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        check(reward=reward)
    assert caught.value.field == "reward" and caught.value.got == got
    assert str(caught.value).startswith("invalid reward: expected a real scalar")


@pytest.mark.parametrize("flag", [True, False, np.bool_(True), np.array(False), 0, 1, np.int32(1)])
def test_bools_and_zero_or_one_are_flags(flag: Any) -> None:
    assert check(terminated=flag)[1] is bool(flag)
    assert check(truncated=flag)[2] is bool(flag)


@pytest.mark.parametrize("flag", [None, 0.5, 2, "yes", np.array([False]), np.array(0.0)])
def test_other_flags_are_refused(flag: Any) -> None:
    with pytest.raises(ContractViolation, match=r"^invalid terminated: expected a bool, got "):
        check(terminated=flag)


def test_observations_must_have_the_declared_shape_and_a_castable_dtype() -> None:
    check(obs=np.zeros(2, np.float64))  # float64 -> float32 casts 'same_kind', as np.stack(out=) does
    check(obs=[1, 2])
    with pytest.raises(ContractViolation) as caught:
        check(obs=np.zeros((3, 2), np.float32))
    assert caught.value.field == "observation"
    assert caught.value.expected.startswith("shape (2,) and dtype float32")
    assert caught.value.got == "ndarray of shape (3, 2) and dtype float32"
    with pytest.raises(ContractViolation, match="dtype float32 or one that casts to it"):
        check(obs=np.zeros(2, np.complex64))
    with pytest.raises(ContractViolation, match="an array of shape"):
        check(obs=[[1, 2], [3]])


def test_nested_observations_are_checked_leaf_by_leaf() -> None:
    good = {"pos": np.zeros(2, np.float32), "n": 3}
    check_outcome(good, 0.0, False, False, {}, NESTED, False)
    with pytest.raises(ContractViolation, match=r"^invalid observation\['n'\]: expected a part"):
        check_outcome({"pos": good["pos"]}, 0.0, False, False, {}, NESTED, False)
    with pytest.raises(ContractViolation, match=r"^invalid observation\['n'\]: expected dtype int64"):
        check_outcome({**good, "n": 1.5}, 0.0, False, False, {}, NESTED, False)


def test_info_must_be_a_dict() -> None:
    with pytest.raises(ContractViolation, match=r"^invalid info: expected a dict, got list"):
        check(info=[1])
