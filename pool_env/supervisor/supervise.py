"""The supervisor: spawn, watch, restart (backoff, flapping, give-up), stop, and stats.

It owns the worker processes and their :class:`~pool_env.supervisor.states.WorkerState`;
the coordinator owns the routing (which command went to which worker, deadlines, results) and
calls :meth:`Supervisor.fail` when a worker did not answer in time. Every state change goes
through :meth:`Supervisor.change_state`, which checks it is a legal move and logs it once with
its reason (supervisor's ``Subprocess.change_state``, circus's ``Watcher``). Time comes from
an injected clock and processes from an injected :class:`~pool_env.supervisor.process.Launcher`,
so unit tests drive crashes, hangs, backoff and give-up in milliseconds.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pool_env.commands import merge_counters
from pool_env.config import PoolOptions
from pool_env.errors import EnvCreationError, ErrorKind, PoolEnvError, WorkerStartError
from pool_env.supervisor.liveness import HEARTBEAT_INTERVAL, HeartbeatBoard
from pool_env.supervisor.process import Launcher, SubprocessLauncher, WorkerProcess
from pool_env.supervisor.states import ALIVE, TRANSITIONS, RestartPolicy, WorkerHandle, WorkerState

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_LEVELS = {WorkerState.FATAL: logging.ERROR, WorkerState.BACKOFF: logging.WARNING}
#: Seconds to wait for a SIGKILLed process to be reaped.
REAP_TIMEOUT = 5.0


class Supervisor:
    """Worker processes of one pool: one :class:`WorkerHandle` per worker id.

    Args:
        slot_groups: the slots of each worker id (worker ``i`` owns ``slot_groups[i]``).
        options: timeouts, restart policy, ``freeze_timeout``.
        launcher: starts worker processes (the seam for fake processes).
        clock: monotonic seconds (the seam for a fake clock).
        rng: the jitter of restart delays.
    """

    workers: list[WorkerHandle]
    options: PoolOptions
    policy: RestartPolicy
    board: HeartbeatBoard | None
    _launcher: Launcher
    _clock: Callable[[], float]
    _rng: random.Random
    _by_identity: dict[bytes, WorkerHandle]
    retired: list[tuple[int, WorkerProcess, float]]

    def __init__(
        self,
        slot_groups: Sequence[Sequence[int]],
        options: PoolOptions,
        launcher: Launcher,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.workers = [WorkerHandle(i, list(slots)) for i, slots in enumerate(slot_groups)]
        self.options = options
        self.policy = RestartPolicy.from_options(options)
        self.board = None
        self._launcher = launcher
        self._clock = clock
        self._rng = rng or random.Random()
        self._by_identity = {}
        self.retired = []  # recycled processes told to close: (worker id, process, kill deadline)

    @classmethod
    def of_subprocesses(
        cls,
        slot_groups: Sequence[Sequence[int]],
        options: PoolOptions,
        endpoint: str,
        run_dir: str,
        log_level: str = "WARNING",
        accept_pickle: bool = False,
        worker_fds: Callable[[int], tuple[int, ...]] | None = None,
    ) -> Supervisor:
        """A supervisor of real ``python -P -m workers`` processes with a heartbeat board in
        ``run_dir``; ``accept_pickle``: they may unpickle env factories (never a daemon's);
        ``worker_fds``: descriptors each worker inherits (the fast path's eventfds)."""
        path = os.path.join(run_dir, "heartbeat")
        board = HeartbeatBoard(path, len(slot_groups))
        launcher = SubprocessLauncher(
            endpoint,
            run_dir,
            path,
            board,
            log_level,
            accept_pickle,
            echo_output=options.worker_output,
            worker_fds=worker_fds,
        )
        supervisor = cls(slot_groups, options, launcher)
        supervisor.board = board
        return supervisor

    # -- states -----------------------------------------------------------------------------

    def change_state(self, handle: WorkerHandle, state: WorkerState, reason: str) -> None:
        """Move ``handle`` to ``state`` (the only place a worker's state is assigned); log it once.

        Raises:
            PoolEnvError: the move is not in :data:`~pool_env.supervisor.states.TRANSITIONS` (a bug).
        """
        old = handle.state
        if state not in TRANSITIONS[old]:
            raise PoolEnvError(f"worker {handle.worker_id}: illegal state change {old} -> {state} ({reason})")
        handle.state = state
        restart = state is WorkerState.STARTING and handle.restarts > 0
        level = _LEVELS.get(state, logging.WARNING if restart else logging.DEBUG)
        log.log(level, "worker %d (pid %s) %s -> %s: %s", handle.worker_id, handle.pid, old, state, reason)

    def handle_of(self, identity: bytes) -> WorkerHandle | None:
        """The worker whose *current* generation has zmq ``identity``."""
        return self._by_identity.get(identity)

    # -- spawn and restart ------------------------------------------------------------------

    def start_all(self) -> None:
        """Start every worker (in parallel: nobody waits for anybody)."""
        for handle in self.workers:
            self._spawn(handle, "pool starting")

    def _spawn(self, handle: WorkerHandle, reason: str) -> None:
        merge_counters(handle.carried_counters, handle.backend_counters)
        handle.backend_counters = {}
        self._by_identity.pop(handle.identity, None)
        handle.gen += 1
        handle.episodes = 0
        handle.process = self._launcher.launch(handle.worker_id, handle.gen)
        now = self._clock()
        handle.started_at = handle.progress_at = now
        handle.last_beat, handle.last_cpu = -1, None
        self._by_identity[handle.identity] = handle
        self.change_state(handle, WorkerState.STARTING, f"{reason}, gen {handle.gen}, slots {handle.slots}")

    def ready(self, handle: WorkerHandle) -> None:
        """The worker created its envs and waits for commands."""
        self.change_state(handle, WorkerState.RUNNING, "ready")

    def wait_ready(self, pump: Callable[[float], object], poll: float) -> None:
        """Wait for every starting worker to get ready; ``pump(seconds)`` handles their messages.

        Raises:
            EnvCreationError: a worker could not create its envs.
            WorkerStartError: a worker exited or did not get ready within ``start_timeout``.
        """
        deadline = self._clock() + self.options.start_timeout
        while any(h.state is WorkerState.STARTING for h in self.workers):
            remaining = deadline - self._clock()
            if remaining <= 0:
                late = [h.worker_id for h in self.workers if h.state is WorkerState.STARTING]
                raise WorkerStartError(f"workers {late} not ready within {self.options.start_timeout} s")
            pump(min(remaining, poll))
            for handle in self.workers:
                code = handle.exit_code()
                if handle.state is WorkerState.STARTING and code is not None:
                    tail = handle.process.stderr_tail() if handle.process is not None else ""
                    raise WorkerStartError(
                        f"worker {handle.worker_id} exited with code {code} during start-up:\n{tail}"
                    )
                if handle.state is WorkerState.FATAL:
                    raise EnvCreationError(handle.last_error or "worker failed to start")

    def restart_if_due(self, handle: WorkerHandle) -> None:
        """Start a new process for ``handle`` if its backoff ended."""
        if handle.state is WorkerState.BACKOFF and self._clock() >= handle.retry_at:
            self._spawn(handle, f"restart {handle.restarts}")

    # -- failures ---------------------------------------------------------------------------

    def fail(self, handle: WorkerHandle, reason: str, kind: ErrorKind) -> bool:
        """Kill ``handle``'s process tree and decide when (if ever) it restarts.

        ``kind`` (why it failed) is kept in ``handle.last_kind``; ``GAVE_UP`` once given up on.
        Returns whether the worker was alive (``False``: it had already failed or stopped, and
        nothing changed).
        """
        if handle.state not in ALIVE:
            return False
        self.drop_successor(handle)
        self._kill(handle)
        handle.last_kind = kind
        handle.restarts += 1
        now = self._clock()
        delay = self.policy.next_delay(handle.failures, now, self._rng)
        if delay is None:
            handle.last_error = (
                f"gave up on worker {handle.worker_id} after {len(handle.failures)} failures within "
                f"{self.policy.flap_window} s; its slots stay truncated. Last error: {reason}"
            )
            handle.last_kind = ErrorKind.GAVE_UP
            self.change_state(handle, WorkerState.FATAL, handle.last_error)
        else:
            handle.last_error = reason
            handle.retry_at = now + delay
            self.change_state(handle, WorkerState.BACKOFF, f"{reason}; restart {handle.restarts} in {delay:.2f} s")
        self.restart_if_due(handle)
        return True

    def give_up(self, handle: WorkerHandle, reason: str) -> None:
        """The worker cannot create its envs (it says so and exits): no restart."""
        handle.last_error = reason
        self.change_state(handle, WorkerState.FATAL, reason)
        if handle.process is not None and handle.process.wait(self.options.kill_grace) is None:
            self._kill(handle)
        self._kill_leftovers(handle)

    def check(self) -> list[WorkerHandle]:
        """Restart workers whose backoff ended; fail the dead, the late and the frozen.

        Returns the workers failed by this check (their ``last_error`` says why).
        """
        now = self._clock()
        failed = []
        if self.retired:
            self._reap_retired(now)
        for handle in self.workers:
            self.restart_if_due(handle)
            if handle.state not in ALIVE:
                continue
            problem = self._problem(handle, now)
            successor = handle.successor
            if problem is None and successor is not None:
                problem = self._problem(successor, now)
                if problem is not None:
                    problem = (f"while recycling worker {handle.worker_id}, its new process: {problem[0]}", problem[1])
            if problem is not None and self.fail(handle, *problem):
                failed.append(handle)
        return failed

    def _problem(self, handle: WorkerHandle, now: float) -> tuple[str, ErrorKind] | None:
        code = handle.exit_code()
        if code is not None:
            return self.exit_reason(handle, code), ErrorKind.WORKER_DIED
        if handle.state is WorkerState.STARTING and now - handle.started_at > self.options.start_timeout:
            late = f"worker {handle.worker_id} not ready within start_timeout={self.options.start_timeout} s"
            return late, ErrorKind.WORKER_HUNG
        if self._frozen(handle, now):
            return (
                f"worker {handle.worker_id} (pid {handle.pid}) is frozen (no heartbeat and no CPU progress): "
                f"did not answer within freeze_timeout={self.options.freeze_timeout} s; killed",
                ErrorKind.WORKER_HUNG,
            )
        return None

    def _frozen(self, handle: WorkerHandle, now: float) -> bool:
        """No heartbeat and no CPU progress for ``freeze_timeout`` (see :mod:`.liveness`)."""
        limit = self.options.freeze_timeout
        if limit is None or handle.process is None or handle.state is not WorkerState.RUNNING:
            return False  # a starting worker may load big libraries (holding the GIL): start_timeout
        beat = handle.process.heartbeat()
        if beat != handle.last_beat:
            handle.last_beat, handle.last_cpu, handle.progress_at = beat, None, now
            return False
        if now - handle.progress_at <= 2 * HEARTBEAT_INTERVAL:
            return False  # not even late: no need to read the CPU time
        cpu = handle.process.cpu_time()
        if cpu is None or handle.last_cpu is None or cpu != handle.last_cpu:
            if handle.last_cpu is not None or cpu is None:
                handle.progress_at = now  # the CPU time moved (or is unknown): busy, not frozen
            handle.last_cpu = cpu
            return False
        return now - handle.progress_at > limit

    def exit_reason(self, handle: WorkerHandle, code: int) -> str:
        """Why a worker exited, with the end of its stderr when it exited on an error."""
        # A worker killed by a signal wrote nothing about it; one that exited on an error did.
        tail = ""
        if code > 0 and handle.process is not None:
            tail = " | ".join(handle.process.stderr_tail().splitlines()[-3:])
        return f"worker {handle.worker_id} (pid {handle.pid}) exited with code {code}" + (
            f"; stderr: {tail}" if tail else ""
        )

    def exit_code(self, handle: WorkerHandle, wait: float = 0.0) -> int | None:
        """The exit code of ``handle``'s process after waiting up to ``wait`` s for it, or ``None``."""
        if handle.process is None:
            return None
        return handle.process.wait(wait) if wait > 0 else handle.process.poll()

    def _kill(self, handle: WorkerHandle) -> None:
        if handle.process is not None:
            handle.process.kill_tree()
            if handle.process.wait(REAP_TIMEOUT) is None:  # pragma: no cover - uninterruptible sleep
                log.error("worker %d (pid %d) did not exit after SIGKILL", handle.worker_id, handle.pid)

    def _kill_leftovers(self, handle: WorkerHandle) -> None:
        """Kill what the (exited) worker's envs left running."""
        if handle.process is not None:
            handle.process.kill_tree()

    # -- recycling (pool_env.recycle) --------------------------------------------------------

    def spawn_successor(self, handle: WorkerHandle, reason: str) -> WorkerHandle:
        """Start a new process for ``handle``'s slots beside the running one; its record."""
        successor = WorkerHandle(handle.worker_id, list(handle.slots), gen=handle.gen, takes_over=handle)
        handle.successor = successor
        self._spawn(successor, f"recycling: {reason}")
        self._by_identity[handle.identity] = handle  # _spawn forgot the identity of gen - 1: the old one's
        return successor

    def promote_successor(self, handle: WorkerHandle, ask: Callable[[WorkerHandle], None]) -> None:
        """The successor has every slot: make it ``handle``'s process and ``ask`` the old one to exit.

        Nobody waits for that exit: :meth:`check` reaps the old process (and kills what its envs
        left), or kills its tree after one ``kill_grace``.
        """
        successor = handle.successor
        assert successor is not None and handle.process is not None
        ask(handle)
        handle.process.remember_tree()
        self.retired.append((handle.worker_id, handle.process, self._clock() + self.options.kill_grace))
        self._by_identity.pop(handle.identity, None)
        self._by_identity.pop(successor.identity, None)
        merge_counters(handle.carried_counters, handle.backend_counters)
        handle.backend_counters = successor.backend_counters
        handle.process, handle.gen, handle.started_at = successor.process, successor.gen, successor.started_at
        handle.progress_at, handle.last_beat, handle.last_cpu = successor.progress_at, -1, None
        handle.steps += successor.steps
        handle.episodes = successor.episodes
        handle.recycles += 1
        handle.successor = None
        self._by_identity[handle.identity] = handle
        log.info("worker %d recycled: pid %s now serves slots %s", handle.worker_id, handle.pid, handle.slots)

    def drop_successor(self, handle: WorkerHandle) -> None:
        """Kill ``handle``'s successor, if any (the worker failed during a handover)."""
        successor, handle.successor = handle.successor, None
        if successor is None:
            return
        self._kill(successor)
        self._by_identity.pop(successor.identity, None)
        self._by_identity.pop(handle.identity, None)
        handle.gen = max(handle.gen, successor.gen)  # never reuse the successor's identity
        self._by_identity[handle.identity] = handle
        self.change_state(successor, WorkerState.STOPPED, "its worker failed during the handover")

    def has_retired(self, worker_id: int) -> bool:
        """Whether a recycled process of ``worker_id`` may still run (it shares the worker's fast-path
        bell: the fast path waits until it is gone)."""
        return any(w == worker_id for w, _, _ in self.retired)

    def _reap_retired(self, now: float) -> None:
        """Forget recycled processes that exited (killing what their envs left); kill late ones."""
        keep = []
        for worker_id, process, deadline in self.retired:
            if process.poll() is None and now < deadline:
                keep.append((worker_id, process, deadline))
                continue
            process.kill_tree()  # a clean exit leaves its group's leftovers; a late one is killed
            if process.wait(REAP_TIMEOUT) is None:  # pragma: no cover - uninterruptible sleep
                log.error("recycled worker %d (pid %d) did not exit after SIGKILL", worker_id, process.pid)
        self.retired = keep

    def _with_successors(self) -> list[WorkerHandle]:
        return self.workers + [h.successor for h in self.workers if h.successor is not None]

    # -- stop -------------------------------------------------------------------------------

    def stop_all(self, ask: Callable[[WorkerHandle], None] | None = None) -> None:
        """Stop every worker in parallel: ask all, wait one ``kill_grace`` for all, kill the rest.

        ``ask`` asks one running worker to exit (the coordinator sends ``close``). Processes the
        envs started are killed too, also after a clean exit. Bounded by about one
        ``kill_grace`` whatever the number of frozen workers.
        """
        everyone = self._with_successors()
        live = [h for h in everyone if h.process is not None and h.process.poll() is None]
        self._reap_retired(self._clock() + self.options.kill_grace)  # told to close long ago: no waiting
        for handle in live:
            assert handle.process is not None
            handle.process.remember_tree()
            if ask is not None and handle.state in ALIVE:
                ask(handle)
        deadline = self._clock() + self.options.kill_grace
        for handle in live:
            assert handle.process is not None
            handle.process.wait(deadline - self._clock())
        for handle in everyone:  # also after a clean exit: what its envs left in its group
            if handle.process is not None:
                handle.process.kill_tree()
        for handle in live:
            assert handle.process is not None
            if handle.process.wait(REAP_TIMEOUT) is None:  # pragma: no cover - uninterruptible sleep
                log.error("worker %d (pid %d) did not exit after SIGKILL", handle.worker_id, handle.pid)
        for handle in everyone:
            if handle.state is not WorkerState.STOPPED:
                self.change_state(handle, WorkerState.STOPPED, "pool closed")
        if self.board is not None:
            self.board.close()
            self.board = None

    # -- observability ----------------------------------------------------------------------

    def worker_stats(self) -> list[dict[str, Any]]:
        """Per worker: id, pid, slots, state, restarts, steps, uptime, last error, backend counters, cpu %, rss."""
        now = self._clock()
        rows = []
        for handle in self.workers:
            alive = handle.process is not None and handle.exit_code() is None
            rows.append(
                {
                    "worker": handle.worker_id,
                    "pid": handle.pid if alive else None,
                    "slots": list(handle.slots),
                    "state": handle.state.value,
                    "restarts": handle.restarts,
                    "recycles": handle.recycles,
                    "successor_pid": handle.successor.pid if handle.successor is not None else None,
                    "steps": handle.steps,
                    "uptime": now - handle.started_at if handle.state is WorkerState.RUNNING else 0.0,
                    "last_error": handle.last_error,
                    "backend": dict(merge_counters(Counter(handle.carried_counters), handle.backend_counters)),
                    **(
                        handle.process.resources()
                        if alive and handle.process is not None
                        else {"cpu_percent": None, "rss": None}
                    ),
                }
            )
        return rows

    def live_pids(self) -> list[int]:
        """Pids of worker processes that are still running."""
        pids = [h.pid for h in self._with_successors() if h.pid is not None and h.exit_code() is None]
        return pids + [process.pid for _, process, _ in self.retired if process.poll() is None]
