"""Observation banks: a failed slot gets the observation handed out last, with two banks (no
private copy) exactly as with one (the trainer's private copy)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pool_env import shm
from pool_env.banks import BankWriter, ObservationBanks
from pool_env.errors import ErrorKind
from workers.backends.base import Outcome
from workers.results import ResultWriter

N = 4


def _layout(banks: int) -> shm.BatchLayout:
    return shm.BatchLayout(N, (shm.Leaf((), "<f4", (3,)),), (shm.Leaf((), "<i8", ()),), obs_banks=banks)


@pytest.fixture(params=[2, 1], ids=["two banks", "one bank"])
def buffers(request: pytest.FixtureRequest) -> Iterator[shm.BatchBuffers]:
    with shm.create(_layout(request.param)) as buffers:
        assert buffers.layout.obs_banks == request.param
        yield buffers


def _write(writer: BankWriter, rows: list[int], values: list[float], commit: list[int] | None = None) -> None:
    """One command of a worker owning ``rows``: write ``values``, commit ``commit`` (default all)."""
    writer.begin()
    for local, (row, value) in enumerate(zip(rows, values, strict=True)):
        writer.leaves_of(local)[0][row] = value
    chosen = list(range(len(rows))) if commit is None else commit
    writer.commit(chosen, [rows[i] for i in chosen])


def _values(leaves: list[np.ndarray]) -> list[float]:
    return leaves[0][:, 0].tolist()


def test_the_trainer_takes_what_the_workers_committed(buffers: shm.BatchBuffers) -> None:
    banks = ObservationBanks(buffers)
    first, second = BankWriter(buffers, [0, 1]), BankWriter(buffers, [2, 3])
    for step in range(3):  # the banks alternate; every take sees the newest values
        _write(first, [0, 1], [10.0 * step, 10.0 * step + 1])
        _write(second, [2, 3], [10.0 * step + 2, 10.0 * step + 3])
        assert _values(banks.take()) == [10.0 * step + i for i in range(N)]


def test_a_failed_slot_gets_what_was_taken_last_even_if_its_dying_worker_committed_a_new_row(
    buffers: shm.BatchBuffers,
) -> None:
    banks = ObservationBanks(buffers)
    writer = BankWriter(buffers, list(range(N)))
    _write(writer, list(range(N)), [1.0, 2.0, 3.0, 4.0])
    handed_out = banks.take()
    handed_out[0][:] = -1.0  # the trainer changes the returned arrays in place (normalising, say)
    # The worker wrote and committed slots 0 and 1, then died: the whole worker's slots failed.
    _write(writer, list(range(N)), [5.0, 6.0, 7.0, 8.0], commit=[0, 1])
    assert _values(banks.take(failed=[0, 1, 2, 3])) == [1.0, 2.0, 3.0, 4.0]
    assert [banks.previous(slot)[0][0] for slot in range(N)] == [1.0, 2.0, 3.0, 4.0]
    # Its successor's command writes past the kept observations, never over them.
    _write(writer, list(range(N)), [9.0, 10.0, 11.0, 12.0], commit=[2, 3])
    assert _values(banks.take(failed=[0, 1])) == [1.0, 2.0, 11.0, 12.0]


def test_after_clean_full_batches_from_either_bank_a_failed_slot_gets_what_was_taken_last(
    buffers: shm.BatchBuffers,
) -> None:
    banks = ObservationBanks(buffers)
    writer = BankWriter(buffers, list(range(N)))
    for step in range(3):  # clean full batches: every slot in one bank, the banks alternating
        _write(writer, list(range(N)), [10.0 * step + slot for slot in range(N)])
        assert _values(banks.take()) == [10.0 * step + slot for slot in range(N)]
    _write(writer, list(range(N)), [-1.0] * N, commit=[1, 3])  # the worker committed two rows, then died
    assert _values(banks.take(failed=list(range(N)))) == [20.0, 21.0, 22.0, 23.0]
    assert [banks.previous(slot)[0][0] for slot in range(N)] == [20.0, 21.0, 22.0, 23.0]
    _write(writer, list(range(N)), [30.0, 31.0, 32.0, 33.0])  # its successor's first command
    assert _values(banks.take()) == [30.0, 31.0, 32.0, 33.0]


def test_early_rows_join_the_take_only_if_every_slot_ends_in_their_bank() -> None:
    with shm.create(_layout(2)) as buffers:
        banks = ObservationBanks(buffers)
        first, second = BankWriter(buffers, [0, 1]), BankWriter(buffers, [2, 3])
        _write(first, [0, 1], [1.0, 2.0])
        early = banks.early_rows()
        assert early is not None
        early([0, 1])  # the first worker finished; the second still steps
        _write(second, [2, 3], [3.0, 4.0])
        taken = banks.take(early=early)
        assert taken[0] is early.leaves[0] and _values(taken) == [1.0, 2.0, 3.0, 4.0]
        _write(first, [0, 1], [5.0, 6.0])
        early = banks.early_rows()
        assert early is not None
        early([0, 1])
        _write(second, [2, 3], [7.0, 8.0], commit=[0])  # slot 3's row stays in the other bank
        taken = banks.take(early=early)
        assert taken[0] is not early.leaves[0] and _values(taken) == [5.0, 6.0, 7.0, 4.0]
    with shm.create(_layout(1)) as buffers:
        assert ObservationBanks(buffers).early_rows() is None  # one bank: the take copies (and keeps) all


def test_partial_takes_keep_each_slots_own_history(buffers: shm.BatchBuffers) -> None:
    banks = ObservationBanks(buffers)
    writer = BankWriter(buffers, [0, 1])
    other = BankWriter(buffers, [2, 3])
    _write(writer, [0, 1], [1.0, 2.0])
    assert _values(banks.take(np.array([1, 0]))) == [2.0, 1.0]
    _write(other, [2, 3], [3.0, 4.0])
    _write(writer, [0, 1], [5.0, 6.0])
    assert _values(banks.take(np.array([3, 0]), failed=[0])) == [4.0, 1.0]
    assert _values(banks.take(np.array([1]))) == [6.0]


def test_after_a_failure_a_full_take_brings_the_slot_back_in_step_with_the_others() -> None:
    with shm.create(_layout(2)) as buffers:
        banks = ObservationBanks(buffers)
        writer = BankWriter(buffers, list(range(N)))
        _write(writer, list(range(N)), [1.0, 2.0, 3.0, 4.0])
        banks.take()
        _write(writer, list(range(N)), [5.0, 6.0, 7.0, 8.0], commit=[0, 2, 3])  # slot 1's env failed
        assert _values(banks.take(failed=[1])) == [5.0, 2.0, 7.0, 8.0]
        writer.begin()
        assert writer.leaves is not None  # every row writes the same bank again: one copy per batch
        _write(writer, list(range(N)), [9.0, 10.0, 11.0, 12.0])
        assert _values(banks.take()) == [9.0, 10.0, 11.0, 12.0]
        assert _values(banks.take(failed=[1])) == [9.0, 10.0, 11.0, 12.0]


def test_the_result_writer_s_rows_come_back_new_or_for_failed_slots_as_taken_last(buffers: shm.BatchBuffers) -> None:
    banks = ObservationBanks(buffers)
    n = N
    writer = ResultWriter(buffers, list(range(n)), [True] * n, [0] * n, [1] * n, [5] * n, worker_id=7)

    def step(values: list[float], raising: int | None = None) -> dict[int, list[str]]:
        writer.begin()
        returns: list[tuple[object, ...] | Outcome] = [
            (np.full(3, v, dtype=np.float32), 1.0, False, False, {}) for v in values
        ]
        if raising is not None:
            returns[raising] = Outcome(obs=np.full(3, -5.0, dtype=np.float32), error="boom", kind=ErrorKind.ENV_RAISED)
        failures: dict[int, list[str]] = {}
        writer.write_steps(writer.every, returns, {}, failures)
        return failures

    step([1.0, 2.0, 3.0, 4.0])
    assert _values(banks.take()) == [1.0, 2.0, 3.0, 4.0]
    failures = step([5.0, 6.0, 7.0, 8.0], raising=2)
    assert list(failures) == [2]
    assert _values(banks.take(failed=list(failures))) == [5.0, 6.0, 3.0, 8.0]


def test_a_segment_too_big_for_two_banks_falls_back_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    two = _layout(2).offsets()[1]
    monkeypatch.setattr(shm, "_has_room", lambda size: size < two)  # room for one bank, not two
    with shm.create(_layout(2)) as buffers:
        assert buffers.layout.obs_banks == 1 and buffers.obs_bank is None
        banks = ObservationBanks(buffers)
        _write(BankWriter(buffers, list(range(N))), list(range(N)), [1.0, 2.0, 3.0, 4.0])
        assert not banks.double and _values(banks.take()) == [1.0, 2.0, 3.0, 4.0]


def test_a_reset_without_an_observation_keeps_the_slots_observation(buffers: shm.BatchBuffers) -> None:
    banks = ObservationBanks(buffers)
    writer = ResultWriter(buffers, list(range(N)), [True] * N, [0] * N, [1] * N, [5] * N, worker_id=7)
    for values in ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]):
        writer.begin()
        outcomes = [Outcome(obs=np.full(3, v, dtype=np.float32)) for v in values]
        writer.write("reset", writer.every, outcomes, {}, {})
        assert _values(banks.take()) == values
    writer.begin()
    outcomes = [Outcome(obs=np.full(3, 9.0, dtype=np.float32)) for _ in range(N)]
    outcomes[1] = Outcome(obs=None)  # a successful outcome without an observation: the slot keeps its own
    writer.write("reset", writer.every, outcomes, {}, {})
    assert _values(banks.take()) == [9.0, 6.0, 9.0, 9.0]
