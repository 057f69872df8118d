"""The fast path's pieces: sequence words, staleness by generation, bells, spin-then-block."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from pool_env import shm
from pool_env.fastpath import (
    FAST_RESET,
    FAST_STEP,
    AdaptiveSpin,
    Bell,
    FastLane,
    Waiter,
    Wake,
    WorkerPort,
    control_words,
    pack,
    spin_budget,
    spin_until,
)
from pool_env.fastpath.probe import MODES, measure
from pool_env.fastpath.steady import pool_plan
from pool_env.protocol import Op


def _layout(num_workers: int) -> shm.BatchLayout:
    return shm.BatchLayout(
        2, (shm.Leaf((), "<f4", (4,)),), (shm.Leaf((), "<i8", ()),), control_words=control_words(num_workers)
    )


@pytest.fixture
def buffers() -> Iterator[shm.BatchBuffers]:
    with shm.create(_layout(3)) as buffers:
        yield buffers


lane_buffers: dict[FastLane, shm.BatchBuffers] = {}


@pytest.fixture
def lane(buffers: shm.BatchBuffers) -> Iterator[FastLane]:
    lane = FastLane(buffers, 3)
    lane_buffers[lane] = buffers
    try:
        yield lane
    finally:
        del lane_buffers[lane]
        lane.close()


def _port(lane: FastLane, index: int, gen: int) -> WorkerPort:
    """A worker's side in this process: its own copies of the descriptors, as pass_fds gives them."""
    config = lane.worker_config(index)
    inherited = {**config, "bell": os.dup(config["bell"]), "doorbell": os.dup(config["doorbell"])}
    return WorkerPort(inherited, gen, lane_buffers[lane])


def test_pack_keeps_generation_and_sequence_apart() -> None:
    assert pack(3, 7) != pack(4, 7)
    assert pack(3, 7) >> 40 == 3 and pack(3, 7) & ((1 << 40) - 1) == 7


@pytest.mark.parametrize(("gen", "seq"), [(-1, 1), (1, 0), (1, 1 << 40), (1 << 23, 1)])
def test_pack_rejects_values_that_would_not_fit_one_word(gen: int, seq: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        pack(gen, seq)


def test_worker_sees_a_posted_command_once(lane: FastLane) -> None:
    port = _port(lane, 1, gen=2)
    try:
        assert port.poll() is None
        lane.post(1, 2, 5, FAST_STEP)
        command = port.poll()
        assert command is not None and (command.seq, command.op, command.seed) == (5, FAST_STEP, None)
        assert port.poll() is None
    finally:
        port.close()


def test_reset_carries_its_seed_and_a_later_step_does_not(lane: FastLane) -> None:
    port = _port(lane, 0, gen=1)
    try:
        lane.post(0, 1, 1, FAST_RESET, seed=42)
        first = port.poll()
        lane.post(0, 1, 2, FAST_STEP)
        second = port.poll()
        assert first is not None and (first.op, first.seed) == (FAST_RESET, 42)
        assert second is not None and (second.op, second.seed) == (FAST_STEP, None)
    finally:
        port.close()


def test_a_new_generation_never_runs_its_predecessors_command(lane: FastLane) -> None:
    lane.post(2, 1, 9, FAST_STEP)  # posted for generation 1, which then died
    successor = _port(lane, 2, gen=2)
    try:
        assert successor.poll() is None
        lane.post(2, 2, 10, FAST_STEP)
        command = successor.poll()
        assert command is not None and command.seq == 10
    finally:
        successor.close()


def test_the_coordinator_accepts_only_the_exact_generation_and_sequence(lane: FastLane) -> None:
    old, new = _port(lane, 0, gen=1), _port(lane, 0, gen=2)
    try:
        old.publish(11)  # a late write of a replaced process
        assert not lane.finished(0, pack(2, 11))
        new.publish(10)  # an older command of the right generation
        assert not lane.finished(0, pack(2, 11))
        new.publish(11)
        assert lane.finished(0, pack(2, 11))
    finally:
        old.close()
        new.close()


def test_records_of_different_workers_are_independent(lane: FastLane) -> None:
    ports = [_port(lane, i, gen=1) for i in range(3)]
    try:
        lane.post(1, 1, 4, FAST_STEP)
        assert [p.poll() is not None for p in ports] == [False, True, False]
        ports[1].publish(4)
        assert [lane.finished(i, pack(1, 4)) for i in range(3)] == [False, True, False]
    finally:
        for port in ports:
            port.close()


def test_a_command_taken_over_zmq_is_not_run_again_from_the_record(lane: FastLane) -> None:
    port = _port(lane, 0, gen=1)
    try:
        lane.post(0, 1, 3, FAST_STEP)
        port.take(3)
        assert port.poll() is None
    finally:
        port.close()


def test_post_rings_the_workers_bell_and_publish_rings_the_doorbell(lane: FastLane) -> None:
    port = _port(lane, 0, gen=1)
    try:
        assert not port.bell.wait(0.0)
        lane.post(0, 1, 1, FAST_STEP)
        assert port.bell.wait(1.0)
        assert not port.bell.wait(0.0)  # drained by the first wait
        port.publish(1)
        assert lane.doorbell.wait(1.0)
    finally:
        port.close()


def test_a_post_without_ring_is_visible_but_silent_until_rung(lane: FastLane) -> None:
    port = _port(lane, 0, gen=1)
    try:
        lane.post(0, 1, 1, FAST_STEP, ring=False)
        assert not port.bell.wait(0.0)  # nobody woken yet: the coordinator posts to every worker first
        lane.ring(0)
        assert port.bell.wait(1.0)
        command = port.poll()
        assert command is not None and command.seq == 1
    finally:
        port.close()


def test_no_ring_while_the_worker_announces_its_spin_on_the_record(lane: FastLane) -> None:
    port = _port(lane, 0, gen=1)
    try:
        port.spin_flag.raise_()
        lane.post(0, 1, 1, FAST_STEP)
        assert not port.bell.wait(0.0)  # it spins: it finds the command by itself
        port.spin_flag.lower()
        command = port.poll()
        assert command is not None and command.seq == 1
        lane.post(0, 1, 2, FAST_STEP)
        assert port.bell.wait(1.0)  # no longer announced: rung
    finally:
        port.close()


def test_ringing_many_wakes_each_posted_worker_but_one_that_announces_its_spin(lane: FastLane) -> None:
    ports = [_port(lane, index, gen=1) for index in range(3)]
    try:
        ports[1].spin_flag.raise_()
        for index in range(3):
            lane.post(index, 1, 1, FAST_STEP, ring=False)
        lane.ring_many([0, 1, 2])
        assert [port.bell.wait(0.0) for port in ports] == [True, False, True]
        assert ports[1].poll() is not None  # it spins: it finds the command by itself
    finally:
        for port in ports:
            port.close()


def test_the_announcement_of_a_replaced_process_never_silences_its_successor(lane: FastLane) -> None:
    old = _port(lane, 0, gen=1)
    old.spin_flag.raise_()
    old.close()  # killed while it spun: its announcement stays in the record
    new = _port(lane, 0, gen=2)
    try:
        lane.post(0, 2, 1, FAST_STEP)
        assert new.bell.wait(1.0)
    finally:
        new.close()


def test_no_doorbell_while_the_coordinator_announces_its_spin(lane: FastLane) -> None:
    port = _port(lane, 1, gen=1)
    try:
        lane.post(1, 1, 1, FAST_STEP)
        lane.spin_flag.raise_()
        port.publish(1)
        assert not lane.doorbell.wait(0.0)
        assert lane.finished(1, pack(1, 1))
        lane.spin_flag.lower()
        lane.post(1, 1, 2, FAST_STEP)
        port.publish(2)
        assert lane.doorbell.wait(1.0)
    finally:
        port.close()


class _Flag:
    """An announcer that records what happened, in order, with the answers of ``ready``."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def raise_(self) -> None:
        self.events.append("raise")

    def lower(self) -> None:
        self.events.append("lower")


def test_a_spin_announces_itself_and_checks_once_more_after_it_stops_announcing() -> None:
    flag = _Flag()
    spinner = AdaptiveSpin(budget=1e-4, flag=flag)

    def ready() -> bool:
        flag.events.append("check")
        return flag.events.count("lower") == 1  # true only once the spin is over: the last check

    assert spinner.spin(ready)
    assert flag.events[0] == "raise" and flag.events[-2:] == ["lower", "check"]
    assert flag.events.count("raise") == flag.events.count("lower") == 1


def test_a_spin_that_does_not_pay_lately_announces_nothing() -> None:
    flag = _Flag()
    spinner = AdaptiveSpin(budget=1e-4, probe_every=1000, flag=flag)
    spinner.score = 0.0
    assert not spinner.spin(lambda: False)
    assert flag.events == []


def test_a_blocked_waiter_wakes_when_rung_from_another_thread() -> None:
    with Bell() as bell:
        ringer = threading.Timer(0.05, bell.ring)
        ringer.start()
        try:
            assert bell.wait(10.0)
        finally:
            ringer.join()


def test_rings_add_up_until_drained() -> None:
    with Bell() as bell:
        for _ in range(5):
            bell.ring()
        assert bell.drain() == 5
        assert bell.drain() == 0


def test_blocking_wait_burns_no_cpu() -> None:
    with Bell() as bell:
        before = resource.getrusage(resource.RUSAGE_THREAD)
        assert not bell.wait(0.5)
        after = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.02  # 4 % of the wait: blocked, not polling


def test_a_worker_side_bell_shares_the_counter_of_the_descriptor_it_was_given() -> None:
    with Bell() as owner:
        inherited = Bell(os.dup(owner.fileno()))  # what a worker gets through pass_fds
        inherited.ring()
        inherited.close()
        inherited.close()
        assert owner.drain() == 1


def test_closing_the_lane_closes_its_descriptors_and_lets_the_segment_close(buffers: shm.BatchBuffers) -> None:
    lane = FastLane(buffers, 2)
    fds = [*lane.worker_fds(0), *lane.worker_fds(1)]
    lane.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    name = buffers.name
    buffers.close()
    assert name not in shm.list_segments()


def test_a_segment_without_control_words_is_refused() -> None:
    layout = shm.BatchLayout(1, (shm.Leaf((), "<f4", ()),), (shm.Leaf((), "<i8", ()),))
    with shm.create(layout) as plain, pytest.raises(ValueError, match="no room"):
        FastLane(plain, 1)


def test_spin_until_returns_as_soon_as_ready_and_gives_up_after_its_budget() -> None:
    calls = []
    assert spin_until(lambda: calls.append(1) or len(calls) >= 3, 10.0)
    assert len(calls) == 3
    start = time.perf_counter()
    assert not spin_until(lambda: False, 0.01)
    assert time.perf_counter() - start >= 0.01
    assert not spin_until(lambda: False, 0.0)


def test_spin_budget_is_zero_when_every_core_is_busy() -> None:
    assert spin_budget(busy_processes=2, cores=2) == 0.0
    assert spin_budget(busy_processes=1, budget=50e-6, cores=2) == 50e-6


@pytest.mark.parametrize("mode", MODES)
def test_the_floor_probe_completes_every_round_trip_and_leaves_nothing(mode: str, no_leaks: object) -> None:
    result = measure(mode, rounds=20)

    assert 0 < result["median_us"] <= result["p99_us"]


def test_adaptive_spin_stops_spinning_after_misses_and_probes_again() -> None:
    spinner = AdaptiveSpin(budget=1e-4, probe_every=4)
    checks = []

    def never() -> bool:
        checks.append(1)
        return False

    for _ in range(20):  # misses bring the score below one half
        assert not spinner.spin(never)
    assert spinner.score < 0.5
    spun = []
    for _ in range(8):
        checks.clear()
        spinner.spin(never)
        spun.append(len(checks) > 1)
    assert spun.count(True) == 2  # one trial spin every probe_every waits, a single check otherwise


def test_adaptive_spin_keeps_spinning_while_answers_come_within_the_budget() -> None:
    spinner = AdaptiveSpin(budget=0.05)
    for _ in range(20):
        calls = []
        assert spinner.spin(lambda: calls.append(1) or len(calls) >= 3)  # noqa: B023
    assert spinner.score > 0.9


def test_a_zero_budget_never_spins() -> None:
    calls = []
    assert not AdaptiveSpin(0.0).spin(lambda: calls.append(1) or False)
    assert calls == [1]


@pytest.fixture
def socket_pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    receiver.bind("inproc://waiter")
    sender.connect("inproc://waiter")
    try:
        yield sender, receiver
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()


def test_the_waiter_says_why_it_returned(socket_pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    sender, receiver = socket_pair
    with Bell() as bell:
        waiter = Waiter(receiver, bell, budget=0.0)

        assert waiter.wait(lambda: True, 0.01) is Wake.READY
        assert waiter.wait(lambda: False, 0.01) is Wake.TIMEOUT
        bell.ring()
        assert waiter.wait(lambda: False, 1.0) is Wake.BELL
        assert bell.drain() == 0  # the waiter drained the ring
        sender.send(b"x")
        assert waiter.wait(None, 1.0) is Wake.MESSAGE
        assert waiter.wait(None, 0.01) is Wake.MESSAGE  # still queued: returns at once, without polling
        assert receiver.recv() == b"x"
        assert waiter.wait(None, 0.01) is Wake.TIMEOUT


def test_a_waiter_blocked_on_its_bell_wakes_when_rung_from_another_thread(
    socket_pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    _, receiver = socket_pair
    with Bell() as bell:
        waiter = Waiter(receiver, bell, budget=0.0)
        ringer = threading.Timer(0.05, bell.ring)
        ringer.start()
        start = time.monotonic()
        woke = waiter.wait(lambda: False, 10.0)
        ringer.join()

    assert woke is Wake.BELL
    assert time.monotonic() - start < 5.0  # woken by the ring, not by the 10 s timeout


def test_the_steady_state_carries_only_plain_calls_of_every_slot() -> None:
    assert pool_plan(Op.STEP, None, "NextStep") == (FAST_STEP, None, 0)
    assert pool_plan(Op.STEP, None, "SameStep") == (FAST_STEP, None, 1)
    assert pool_plan(Op.RESET, [None] * 4, "Disabled") == (FAST_RESET, None, 2)
    assert pool_plan(Op.RESET, [7, 8, 9, 10], "NextStep") == (FAST_RESET, 7, 0)  # reset(seed=7): 7 + slot
    assert pool_plan(Op.RESET, [7, 8, 3, 10], "NextStep") is None  # seeds of their own: the generic path
    assert pool_plan(Op.RESET, [7, None, 9, 10], "NextStep") is None
    assert pool_plan(Op.RESET, [None, 8], "NextStep") is None
    assert pool_plan(Op.CALL, None, "NextStep") is None
    assert pool_plan(Op.STEP, None, "Sometimes") is None


def test_a_fence_cut_short_by_a_signal_handler_does_not_hang_the_next_ones() -> None:
    from pool_env.fastpath import bell

    # What Ctrl-C's KeyboardInterrupt leaves when it lands between the fence's acquire and release.
    held = bell._FENCE
    held.acquire()
    done = threading.Event()

    def fences() -> None:
        for _ in range(3):
            bell.fence()
        done.set()

    try:
        threading.Thread(target=fences, daemon=True).start()
        assert done.wait(5), "fence() blocked on the lock an interrupted fence left held"
        assert not bell._FENCE.locked()
    finally:
        held.release()  # (a failure here must not hang the tests after it)
