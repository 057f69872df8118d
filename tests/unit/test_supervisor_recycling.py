"""The supervisor's side of recycling (pool_env.recycle), driven by fake processes and a fake
clock: a successor beside the running process, its promotion, and a failure during the handover."""

from __future__ import annotations

from pool_env.errors import ErrorKind
from pool_env.supervisor import WorkerState
from tests.unit.test_supervisor import make


def test_a_successor_runs_beside_the_old_process_and_both_are_reachable() -> None:
    supervisor, _launcher, _ = make()
    handle = supervisor.workers[0]
    successor = supervisor.spawn_successor(handle, "test")
    assert successor.takes_over is handle and handle.successor is successor
    assert (successor.worker_id, successor.slots, successor.gen) == (0, handle.slots, handle.gen + 1)
    assert supervisor.handle_of(b"w0.1") is handle and supervisor.handle_of(b"w0.2") is successor
    assert successor.state is WorkerState.STARTING and handle.state is WorkerState.RUNNING
    assert len(supervisor.live_pids()) == 2


def test_promotion_closes_the_old_process_and_keeps_the_workers_record() -> None:
    supervisor, launcher, _ = make()
    handle = supervisor.workers[0]
    old = launcher.of(handle)
    successor = supervisor.spawn_successor(handle, "test")
    supervisor.ready(successor)
    asked = []
    supervisor.promote_successor(handle, ask=asked.append)
    assert asked == [handle] and old.killed == 0 and supervisor.has_retired(0)  # nobody waits for its exit
    assert handle.process is successor.process and handle.gen == 2 and handle.recycles == 1
    assert handle.successor is None and handle.restarts == 0
    assert supervisor.handle_of(b"w0.2") is handle and supervisor.handle_of(b"w0.1") is None
    assert supervisor.worker_stats()[0]["recycles"] == 1


def test_a_dead_successor_fails_its_worker_and_never_reuses_its_identity() -> None:
    supervisor, launcher, _ = make()
    handle = supervisor.workers[0]
    old = launcher.of(handle)
    successor = supervisor.spawn_successor(handle, "test")
    launcher.of(successor).code = -9

    assert supervisor.check() == [handle]

    assert "its new process" in (handle.last_error or "") and handle.last_kind is ErrorKind.WORKER_DIED
    assert old.killed >= 1 and handle.successor is None and handle.restarts == 1
    assert handle.gen == 3  # after the successor's 2: a late message of either is dropped
    assert supervisor.handle_of(b"w0.2") is None and supervisor.handle_of(b"w0.3") is handle


def test_a_recycled_process_is_reaped_when_it_exits_or_killed_after_kill_grace() -> None:
    supervisor, launcher, clock = make()
    for exits in (True, False):
        handle = supervisor.workers[0]
        old = launcher.of(handle)
        successor = supervisor.spawn_successor(handle, "test")
        supervisor.ready(successor)
        supervisor.promote_successor(handle, ask=lambda h: None)
        assert old.pid in supervisor.live_pids()
        if exits:
            old.code = 0
        else:
            clock.advance(2.5)  # past kill_grace=2.0: it did not exit when asked
        assert supervisor.check() == []
        assert old.killed == 1 and old.code is not None and not supervisor.has_retired(0)
        assert old.pid not in supervisor.live_pids()
