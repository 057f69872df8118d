"""The supervisor driven by fake processes and a fake clock: crash, backoff, give-up, frozen
vs busy, start-up timeout, parallel stop, and the one ``change_state()``. No process, no sleep."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from pool_env import PoolOptions
from pool_env.errors import ErrorKind, PoolEnvError
from pool_env.supervisor import Supervisor, WorkerHandle, WorkerState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """A worker process whose exit, heartbeat and CPU time the test sets; waiting costs fake time."""

    def __init__(self, pid: int, clock: FakeClock) -> None:
        self.pid = pid
        self.clock = clock
        self.code: int | None = None
        self.beats = 0
        self.cpu = 0.0
        self.killed = 0
        self.exits_when_asked = True

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float) -> int | None:
        if self.code is None:
            self.clock.advance(max(0.0, timeout))  # a process that does not exit makes us wait
        return self.code

    def terminate(self) -> None:
        pass

    def remember_tree(self) -> None:
        pass

    def kill_tree(self) -> None:
        self.killed += 1
        if self.code is None:
            self.code = -9

    def heartbeat(self) -> int:
        return self.beats

    def cpu_time(self) -> float | None:
        return self.cpu

    def resources(self) -> dict[str, Any]:
        return {"cpu_percent": 0.0, "rss": 1}

    def stderr_tail(self, limit: int = 2000) -> str:
        return "Traceback: boom"


class FakeLauncher:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.launched: list[tuple[int, int, FakeProcess]] = []

    def launch(self, worker_id: int, gen: int) -> FakeProcess:
        process = FakeProcess(100 + len(self.launched), self.clock)
        self.launched.append((worker_id, gen, process))
        return process

    def of(self, handle: WorkerHandle) -> FakeProcess:
        assert isinstance(handle.process, FakeProcess)
        return handle.process


def make(num_workers: int = 1, **options: Any) -> tuple[Supervisor, FakeLauncher, FakeClock]:
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    options = {"freeze_timeout": 3.0, "kill_grace": 2.0, "flap_limit": 4, "restart_backoff": 0.5, **options}
    groups = [[2 * w, 2 * w + 1] for w in range(num_workers)]
    supervisor = Supervisor(groups, PoolOptions(**options), launcher, clock=clock, rng=random.Random(0))
    supervisor.start_all()
    for handle in supervisor.workers:
        supervisor.ready(handle)
    return supervisor, launcher, clock


def test_a_crashed_worker_is_restarted_at_once_as_a_new_generation() -> None:
    supervisor, launcher, _ = make()
    handle = supervisor.workers[0]
    first = launcher.of(handle)
    first.code = -9

    assert supervisor.check() == [handle]

    assert handle.state is WorkerState.STARTING and handle.gen == 2 and handle.restarts == 1
    assert "exited with code -9" in (handle.last_error or "") and handle.last_kind is ErrorKind.WORKER_DIED
    assert launcher.of(handle) is not first and first.killed == 1
    assert supervisor.handle_of(b"w0.1") is None and supervisor.handle_of(b"w0.2") is handle


def test_a_worker_that_exits_on_an_error_reports_the_end_of_its_stderr() -> None:
    supervisor, launcher, _ = make()
    launcher.of(supervisor.workers[0]).code = 1
    supervisor.check()
    assert "exited with code 1; stderr: Traceback: boom" in (supervisor.workers[0].last_error or "")


def test_a_second_crash_within_the_window_waits_for_its_backoff() -> None:
    supervisor, launcher, clock = make()
    handle = supervisor.workers[0]
    launcher.of(handle).code = -9
    supervisor.check()
    supervisor.ready(handle)
    clock.advance(1.0)
    launcher.of(handle).code = -9
    supervisor.check()

    assert handle.state is WorkerState.BACKOFF
    delay = handle.retry_at - clock.now
    assert 0.0 < delay <= 0.5
    clock.advance(delay / 2)
    supervisor.check()
    assert handle.state is WorkerState.BACKOFF and len(launcher.launched) == 2

    clock.advance(delay)
    supervisor.check()
    assert handle.state is WorkerState.STARTING and handle.gen == 3 and len(launcher.launched) == 3


def test_flap_limit_failures_within_the_window_give_up_for_good() -> None:
    supervisor, launcher, clock = make(flap_limit=3)
    handle = supervisor.workers[0]
    for _ in range(3):
        launcher.of(handle).code = -9
        supervisor.check()
        clock.advance(max(0.0, handle.retry_at - clock.now) + 0.01)
        supervisor.check()

    assert handle.state is WorkerState.FATAL
    assert (handle.last_error or "").startswith("gave up on worker 0 after 3 failures")
    assert handle.last_kind is ErrorKind.GAVE_UP
    launches = len(launcher.launched)
    clock.advance(3600)
    assert supervisor.check() == [] and handle.state is WorkerState.FATAL and len(launcher.launched) == launches


def test_a_worker_without_heartbeat_and_without_cpu_progress_is_frozen_after_freeze_timeout() -> None:
    supervisor, launcher, clock = make(freeze_timeout=3.0)
    handle = supervisor.workers[0]
    process = launcher.of(handle)
    supervisor.check()  # sees the heartbeat once
    for _ in range(28):  # 2.8 s of checks every 0.1 s: late, but not frozen yet
        clock.advance(0.1)
        assert supervisor.check() == []
    clock.advance(0.3)

    assert supervisor.check() == [handle]
    reason = handle.last_error or ""
    assert "is frozen (no heartbeat and no CPU progress): did not answer within freeze_timeout=3.0 s" in reason
    assert process.killed == 1 and handle.gen == 2 and handle.last_kind is ErrorKind.WORKER_HUNG


def test_a_worker_whose_cpu_time_advances_is_busy_not_frozen() -> None:
    supervisor, launcher, clock = make(freeze_timeout=3.0)
    process = launcher.of(supervisor.workers[0])
    for _ in range(300):  # 30 s in a long C step that holds the GIL: no heartbeat, CPU runs
        clock.advance(0.1)
        process.cpu += 0.09
        assert supervisor.check() == []
    assert supervisor.workers[0].state is WorkerState.RUNNING


def test_a_worker_that_keeps_beating_without_cpu_is_busy_not_frozen() -> None:
    supervisor, launcher, clock = make(freeze_timeout=3.0)
    process = launcher.of(supervisor.workers[0])
    for _ in range(300):  # 30 s waiting on a slow server: the heartbeat thread runs
        clock.advance(0.1)
        process.beats += 1
        assert supervisor.check() == []


def test_a_coordinator_that_did_not_look_for_a_long_time_does_not_cut_a_beating_worker() -> None:
    supervisor, launcher, clock = make(freeze_timeout=3.0)
    supervisor.check()
    clock.advance(60.0)  # the trainer was busy elsewhere; the worker beat meanwhile
    launcher.of(supervisor.workers[0]).beats += 300
    assert supervisor.check() == []


def test_a_starting_worker_is_judged_by_start_timeout_not_freeze_timeout() -> None:
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    options = PoolOptions(start_timeout=30.0, freeze_timeout=3.0)
    supervisor = Supervisor([[0]], options, launcher, clock=clock)
    supervisor.start_all()  # loading a big library that holds the GIL: no beat, no CPU (I/O)
    for _ in range(29):
        clock.advance(1.0)
        assert supervisor.check() == []
    assert supervisor.workers[0].state is WorkerState.STARTING


def test_freeze_timeout_none_turns_the_check_off() -> None:
    supervisor, _, clock = make(freeze_timeout=None)
    for _ in range(10):
        clock.advance(10.0)
        assert supervisor.check() == []


def test_a_worker_not_ready_within_start_timeout_is_failed() -> None:
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    supervisor = Supervisor([[0]], PoolOptions(start_timeout=5.0, freeze_timeout=None), launcher, clock=clock)
    supervisor.start_all()
    clock.advance(4.9)
    assert supervisor.check() == []
    clock.advance(0.2)
    assert supervisor.check() == supervisor.workers
    assert "not ready within start_timeout=5.0 s" in (supervisor.workers[0].last_error or "")


def test_a_worker_that_cannot_create_its_envs_is_given_up_without_restart() -> None:
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    supervisor = Supervisor([[0]], PoolOptions(), launcher, clock=clock)
    supervisor.start_all()
    handle = supervisor.workers[0]
    launcher.of(handle).code = 1  # it reported the error and exited
    supervisor.give_up(handle, "EnvCreationError: no such env")
    assert handle.state is WorkerState.FATAL and handle.last_error == "EnvCreationError: no such env"
    assert supervisor.check() == [] and len(launcher.launched) == 1


def test_change_state_refuses_a_move_that_skips_a_state() -> None:
    supervisor, _, _ = make()
    handle = supervisor.workers[0]
    with pytest.raises(PoolEnvError, match="illegal state change running -> starting"):
        supervisor.change_state(handle, WorkerState.STARTING, "test")
    supervisor.change_state(handle, WorkerState.FATAL, "test")
    with pytest.raises(PoolEnvError, match="illegal state change fatal -> running"):
        supervisor.ready(handle)
    assert handle.state is WorkerState.FATAL


def test_a_failure_is_logged_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    supervisor, launcher, _ = make()
    caplog.set_level(logging.DEBUG, logger="pool_env.supervisor")
    launcher.of(supervisor.workers[0]).code = -9
    supervisor.check()
    supervisor.check()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # running -> backoff (why), backoff -> starting (the restart)
    assert "running -> backoff: worker 0 (pid 100) exited with code -9; restart 1 in 0.00 s" in lines[0]
    assert "backoff -> starting: restart 1, gen 2" in lines[1]


def test_failing_a_worker_that_already_failed_changes_nothing() -> None:
    supervisor, _, _ = make(flap_limit=1)
    handle = supervisor.workers[0]
    assert supervisor.fail(handle, "hung", ErrorKind.WORKER_HUNG) is True and handle.state is WorkerState.FATAL
    assert supervisor.fail(handle, "hung again", ErrorKind.WORKER_HUNG) is False and handle.restarts == 1


def test_stop_all_with_frozen_workers_takes_one_grace_period_not_one_per_worker() -> None:
    supervisor, launcher, clock = make(num_workers=3, kill_grace=2.0)
    asked = []
    started = clock.now

    supervisor.stop_all(ask=lambda handle: asked.append(handle.worker_id))  # frozen: nobody exits

    assert clock.now - started == pytest.approx(2.0)
    assert asked == [0, 1, 2]
    assert all(p.code == -9 and p.killed >= 1 for _, _, p in launcher.launched)
    assert all(h.state is WorkerState.STOPPED for h in supervisor.workers)


def test_stop_all_lets_healthy_workers_exit_and_still_kills_what_their_envs_left() -> None:
    supervisor, launcher, clock = make(num_workers=2, kill_grace=2.0)

    def close(handle: WorkerHandle) -> None:
        launcher.of(handle).code = 0

    started = clock.now
    supervisor.stop_all(ask=close)
    assert clock.now == started  # nobody made us wait
    assert [p.code for _, _, p in launcher.launched] == [0, 0]  # exited by themselves
    assert all(p.killed == 1 for _, _, p in launcher.launched)  # their process groups were killed
