"""Slot failures reach the trainer as gymnasium vector infos: error, error_kind, step_fate, restarts."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

from pool_env.batch import assemble_infos
from pool_env.errors import ErrorKind, SlotFailure, StepFate

NUM_ENVS = 4


class _Infos(VectorEnv[Any, Any, Any]):
    """Only for gymnasium's own ``_add_info``: the reference vector-info layout."""

    def __init__(self) -> None:
        self.num_envs = NUM_ENVS


def test_failures_have_gymnasiums_vector_info_layout_value_for_value() -> None:
    failures = {
        1: SlotFailure(ErrorKind.WORKER_DIED, StepFate.UNKNOWN, "worker 0 exited with code -9"),
        3: SlotFailure(ErrorKind.LOST_RESPONSE, StepFate.APPLIED, "step applied but its response was lost"),
    }
    slot_infos = {0: {"step": 10}, 3: {"step": 20}}
    restarts = {1: 2, 3: 0}
    ours = assemble_infos(slot_infos, failures, NUM_ENVS, restarts.__getitem__)

    reference = _Infos()
    expected: dict[str, Any] = {}
    for slot, info in slot_infos.items():
        expected = reference._add_info(expected, info, slot)
    for slot, failure in failures.items():
        info = {"error": failure.message, "error_kind": failure.kind, "step_fate": failure.fate}
        expected = reference._add_info(expected, {**info, "restarts": restarts[slot]}, slot)

    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert ours[key].dtype == value.dtype, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    assert ours["error_kind"].tolist() == [None, ErrorKind.WORKER_DIED, None, ErrorKind.LOST_RESPONSE]
    assert ours["step_fate"].tolist() == [None, StepFate.UNKNOWN, None, StepFate.APPLIED]
    assert ours["_error_kind"].tolist() == ours["_step_fate"].tolist() == [False, True, False, True]


def test_no_failure_adds_no_failure_keys() -> None:
    infos = assemble_infos({2: {"step": 5}}, {}, NUM_ENVS, lambda slot: 0)
    assert sorted(infos) == ["_step", "step"]
