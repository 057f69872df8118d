"""The worker's result writer: outcomes into its rows of the batch segment, each slot under its own guard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pool_env import shm
from pool_env.errors import ErrorKind, SlotFailure, StepFate
from workers.backends.base import Outcome
from workers.results import ResultWriter

OBS = np.float32


@pytest.fixture
def buffers() -> Iterator[shm.BatchBuffers]:
    layout = shm.BatchLayout(4, (shm.Leaf((), "<f4", (3,)),), (shm.Leaf((), "<i8", ()),))
    with shm.create(layout) as buffers:
        yield buffers


def _writer(buffers: shm.BatchBuffers, slots: list[int]) -> ResultWriter:
    n = len(slots)
    return ResultWriter(buffers, slots, [True] * n, [0] * n, [1] * n, [5] * n, worker_id=7)


def _obs(value: float) -> np.ndarray:
    return np.full(3, value, dtype=OBS)


def test_plain_step_returns_fill_our_rows_only(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [2, 3])
    infos: dict[int, object] = {}
    failures: dict[int, list[str]] = {}
    writer.write_steps(
        writer.every, [(_obs(1.0), 0.5, False, False, {}), (_obs(2.0), 1.5, True, False, {"k": 1})], infos, failures
    )
    assert buffers.obs[0][2:].tolist() == [[1.0] * 3, [2.0] * 3]
    assert buffers.obs[0][:2].tolist() == [[0.0] * 3] * 2  # not ours
    assert buffers.reward[2:].tolist() == [0.5, 1.5]
    assert buffers.terminated[2:].tolist() == [False, True]
    assert buffers.truncated[2:].tolist() == [False, False]
    assert infos == {3: {"k": 1}} and failures == {}
    assert writer._needs_reset == [False, True]


def test_loose_returns_are_converted_like_plain_ones(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [0, 1])
    infos: dict[int, object] = {}
    failures: dict[int, list[str]] = {}
    loose = (np.zeros(3, dtype=np.float64) + 4.0, np.float32(2.0), np.bool_(False), 1, {})
    writer.write_steps(writer.every, [(_obs(3.0), 1.0, False, False, {}), loose], infos, failures)
    assert failures == {}
    assert buffers.obs[0][:2].tolist() == [[3.0] * 3, [4.0] * 3]
    assert buffers.reward[:2].tolist() == [1.0, 2.0]
    assert buffers.truncated[:2].tolist() == [False, True]
    assert writer._needs_reset == [False, True]


def test_a_failed_slot_alone_is_truncated_keeps_its_observation_and_counts_raises(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [0, 1])
    buffers.obs[0][1] = _obs(9.0)
    writer.begin()
    infos: dict[int, object] = {}
    failures: dict[int, list[str]] = {}
    raised = Outcome.failed(ErrorKind.ENV_RAISED, StepFate.UNKNOWN, "boom")
    writer.write_steps(writer.every, [(_obs(1.0), 1.0, False, False, {}), raised], infos, failures)
    assert buffers.obs[0][:2].tolist() == [[1.0] * 3, [9.0] * 3]
    assert buffers.reward[:2].tolist() == [1.0, 0.0]
    assert buffers.truncated[:2].tolist() == [False, True]
    failure = SlotFailure.from_wire(failures[1])
    assert (failure.kind, failure.fate) == (ErrorKind.ENV_RAISED, StepFate.UNKNOWN)
    assert "slot 1 (worker 7" in failure.message and "episode 1, step 5" in failure.message
    assert writer.in_a_row == {1: 1} and writer._needs_reset == [False, True]
    writer.begin()
    assert writer.in_a_row == {}


def test_a_return_breaking_the_contract_fails_its_slot_as_invalid(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [0, 1])
    failures: dict[int, list[str]] = {}
    writer.write("reset", [1], [Outcome(obs=np.zeros(5, dtype=OBS))], {}, failures)
    failure = SlotFailure.from_wire(failures[1])
    assert failure.kind is ErrorKind.INVALID_ENV_RETURN and failure.fate is StepFate.NOT_APPLIED
    assert "reset() returned an invalid observation" in failure.message
    assert writer._needs_reset == [True, True]


def test_slots_out_of_row_order_write_their_own_rows(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [3, 1])  # not contiguous: written row by row
    assert writer.rows is None
    writer.write_steps(writer.every, [(_obs(3.0), 3.0, False, False, {}), (_obs(1.0), 1.0, False, True, {})], {}, {})
    assert buffers.obs[0][[3, 1]].tolist() == [[3.0] * 3, [1.0] * 3]
    assert buffers.reward.tolist() == [0.0, 1.0, 0.0, 3.0]
    assert buffers.truncated.tolist() == [False, True, False, False]


def test_a_one_slot_worker_writes_its_row_and_a_failure_keeps_its_observation(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [3])
    writer.begin()
    failures: dict[int, list[str]] = {}
    writer.write_steps(writer.every, [(_obs(4.0), 2.5, True, False, {})], {}, failures)
    assert buffers.obs[0][3].tolist() == [4.0] * 3 and buffers.obs[0][2].tolist() == [0.0] * 3
    assert (buffers.reward[3], buffers.terminated[3], buffers.truncated[3]) == (2.5, True, False)
    assert failures == {} and writer._needs_reset == [True]
    writer.begin()
    raised = Outcome.failed(ErrorKind.ENV_RAISED, StepFate.UNKNOWN, "boom")
    writer.write_steps(writer.every, [raised], {}, failures)
    assert buffers.obs[0][3].tolist() == [4.0] * 3  # kept
    assert (buffers.reward[3], buffers.terminated[3], buffers.truncated[3]) == (0.0, False, True)
    assert list(failures) == [3]


def test_resets_among_step_returns_are_written_as_resets_in_one_write(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [0, 1, 2])
    writer._raised[1] = 2  # a good reset does not clear an env's raise count (only a good step does)
    buffers.obs[0][2] = _obs(9.0)
    writer.begin()
    infos: dict[int, object] = {}
    failures: dict[int, list[str]] = {}
    returns: list[tuple[object, ...] | Outcome] = [
        (_obs(1.0), 1.0, False, True, {}),
        (_obs(5.0), 0.0, False, False, {"seed": 3}),
        (np.zeros(5, dtype=OBS), 0.0, False, False, {}),  # a reset breaking the contract
    ]
    writer.write_steps(writer.every, returns, infos, failures, resets={1, 2})
    assert buffers.obs[0][:3].tolist() == [[1.0] * 3, [5.0] * 3, [9.0] * 3]
    assert buffers.reward[:3].tolist() == [1.0, 0.0, 0.0]
    assert buffers.terminated[:3].tolist() == [False, False, False]
    assert buffers.truncated[:3].tolist() == [True, False, True]
    assert infos == {1: {"seed": 3}} and list(failures) == [2]
    failure = SlotFailure.from_wire(failures[2])
    assert failure.kind is ErrorKind.INVALID_ENV_RETURN and failure.fate is StepFate.NOT_APPLIED
    assert "reset() returned an invalid observation" in failure.message
    assert writer._needs_reset == [True, False, True]
    assert writer._raised == [0, 2, 0]


def test_a_reset_among_step_returns_writes_what_a_reset_alone_writes(buffers: shm.BatchBuffers) -> None:
    def run(merged: bool) -> tuple[list[object], ...]:
        buffers.obs[0][:] = 0.0
        buffers.reward[:] = 7.0
        writer = _writer(buffers, [0, 1, 2, 3])
        writer._raised[:] = [1, 1, 1, 1]
        infos: dict[int, object] = {}
        step = [(_obs(1.0), 0.5, False, False, {"k": 1}), (_obs(3.0), 1.5, True, False, {})]
        reset = [Outcome(obs=_obs(2.0), info={"r": 1}), Outcome(obs=_obs(4.0))]
        writer.begin()
        if merged:
            as_returns = [(o.obs, o.reward, o.terminated, o.truncated, o.info) for o in reset]
            returns = [step[0], as_returns[0], step[1], as_returns[1]]
            writer.write_steps(writer.every, returns, infos, {}, resets={1, 3})
        else:
            writer.write("reset", [1, 3], reset, infos, {})
            writer.write_steps([0, 2], step, infos, {})
        state = [buffers.obs[0].tolist(), buffers.reward.tolist(), buffers.terminated.tolist()]
        return state, [buffers.truncated.tolist(), infos, writer._needs_reset, writer._raised]

    assert run(merged=True) == run(merged=False)


def test_good_steps_clear_the_raise_counts_of_their_slots(buffers: shm.BatchBuffers) -> None:
    writer = _writer(buffers, [0, 1, 2])
    writer._raised[:] = [0, 3, 1]
    plain = [(_obs(float(i)), 1.0, False, False, {}) for i in range(3)]
    writer.write_steps(writer.every, plain, {}, {})
    assert writer._raised == [0, 0, 0] and writer._needs_reset == [False, False, False]
    assert buffers.obs[0][:3].tolist() == [[0.0] * 3, [1.0] * 3, [2.0] * 3]


@pytest.mark.parametrize("raised_before", [0, 2])
@pytest.mark.parametrize("resets", [set(), {0}], ids=["step", "reset"])
def test_a_one_slot_write_takes_its_own_path_and_equals_the_batch_code(
    monkeypatch: pytest.MonkeyPatch, raised_before: int, resets: set[int]
) -> None:
    """ResultWriter._write_one (a worker of one slot) against the batch code of write_steps, with two banks."""
    layout = shm.BatchLayout(4, (shm.Leaf((), "<f4", (3,)),), (shm.Leaf((), "<i8", ()),), obs_banks=2)
    returns = [
        (_obs(1.0), 0.5, False, False, {"k": 1}),
        (_obs(2.0), 1.0, True, False, {}),
        (_obs(3.0), 0.0, False, True, {}),
    ]
    states = []
    for alone in (True, False):
        with shm.create(layout) as buffers:
            writer = _writer(buffers, [2])
            writer._raised[0] = raised_before
            original = writer._write_one
            taken: list[bool] = []

            def spy(*args: object, original: object = original, taken: list[bool] = taken, alone: bool = alone) -> bool:
                taken.append(alone and original(*args))  # type: ignore[operator]
                return taken[-1]

            monkeypatch.setattr(writer, "_write_one", spy)
            infos: dict[int, object] = {}
            for returned in returns:
                writer.begin()
                writer.write_steps(writer.every, [returned], infos, {}, resets=resets)
            assert taken == [alone] * len(returns)
            states.append(
                (
                    [bank[0].tolist() for bank in buffers.obs_banks], buffers.obs_bank.tolist(),  # type: ignore[union-attr]
                    buffers.reward.tolist(), buffers.terminated.tolist(), buffers.truncated.tolist(),
                    list(writer._needs_reset), list(writer._raised), infos,
                )
            )  # fmt: skip
    assert states[0] == states[1]
