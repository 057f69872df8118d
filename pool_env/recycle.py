"""Worker recycling: replace a worker process without cutting an episode.

Long runs grow some envs' memory (leaks in simulators, caches); PufferLib and RLlib users restart
workers for it, SB3/gymnasium users restart the whole run. ``PoolOptions.max_episodes_per_worker``
and ``max_worker_rss_mb`` make the pool do it by itself, invisibly to the trainer:

1. A worker process is *due* once it finished that many episodes, or its RSS passed the cap
   (checked about once a second).
2. A *successor* process is started beside it for the same worker id and slots; it creates its
   envs but owns no slot yet (``init`` with ``successor``).
3. Once the successor is ready, every command to the old process carries ``release``: the old
   process answers as usual and hands over each slot whose episode has ended (or failed), with its
   env's RNG state, seed schedule and counters (:mod:`workers.handover`). From then on that slot's
   commands go to the successor, whose next command carries the state (``adopt``) before the
   slot's reset — the reset the old process would have done, drawing the same random numbers.
4. When the successor holds every slot and nothing is in flight, the old process is told to
   close (its process tree is stopped after one ``kill_grace``) and the successor becomes the
   worker's process: its generation, its fast-path record, its heartbeat.

A failure of either process during a handover is a failure of the worker, as always: both are
stopped and the worker restarts (its slots come back truncated, README failure table).
Autoreset modes: NEXT_STEP and DISABLED hand a slot over once its episode ended (its reset is in a
later command). Under SAME_STEP the reset belongs to the step that ended the episode: the old
process hands the slot over with the episode's last observation and info instead of resetting it,
and the coordinator adds the successor's reset to the same command, which completes only then
(``infos["final_obs"]``/``["final_info"]`` laid out as gymnasium does).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pool_env.commands import WorkerCall
from pool_env.config import PoolOptions
from pool_env.errors import ErrorKind
from pool_env.protocol import Op
from pool_env.shm import BatchBuffers
from pool_env.supervisor import Supervisor, WorkerHandle, WorkerState

__all__ = ["Handover", "Handovers", "Recycler"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the workers' RSS.
RSS_CHECK_INTERVAL = 1.0


@dataclass(eq=False)
class Handover:
    """One worker's change of process in progress.

    Attributes:
        old: the worker's record (its current, retiring process).
        new: the successor's record.
        reason: why the worker is recycled (for logs).
        to_adopt: slot -> handed-over state not yet sent to the successor.
        moved: slots the successor owns.
    """

    old: WorkerHandle
    new: WorkerHandle
    reason: str
    to_adopt: dict[int, dict[str, Any]] = field(default_factory=dict)
    moved: set[int] = field(default_factory=set)

    @property
    def releasing(self) -> bool:
        """Whether the old process should hand slots over (the successor is ready for them)."""
        return self.new.state is WorkerState.RUNNING

    @property
    def complete(self) -> bool:
        """Whether the successor owns every slot."""
        return len(self.moved) == len(self.old.slots)


class Recycler:
    """When to recycle which worker, and the handovers under way.

    Args:
        options: ``max_episodes_per_worker`` and ``max_worker_rss_mb``.
        clock: monotonic seconds.
    """

    max_episodes: int | None
    max_rss_bytes: float | None
    handovers: dict[int, Handover]
    _clock: Callable[[], float]
    _rss_checked_at: float

    def __init__(self, options: PoolOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_episodes = options.max_episodes_per_worker
        self.max_rss_bytes = None if options.max_worker_rss_mb is None else options.max_worker_rss_mb * 2**20
        self.handovers = {}
        self._clock = clock
        self._rss_checked_at = clock()

    @classmethod
    def from_options(cls, options: PoolOptions) -> Recycler | None:
        """A recycler if ``options`` ask for recycling, else ``None`` (nothing on the hot path)."""
        if options.max_episodes_per_worker is None and options.max_worker_rss_mb is None:
            return None
        return cls(options)

    def count_episodes(self, handle: WorkerHandle, slots: list[int], terminated: Any, truncated: Any) -> None:
        """Count the episodes that ended in ``slots`` (a step's flags, failed slots included)."""
        handle.episodes += int(np.count_nonzero(terminated[slots] | truncated[slots]))

    def due(self, workers: list[WorkerHandle]) -> list[tuple[WorkerHandle, str]]:
        """Running workers to recycle now, with the reason (none already being recycled)."""
        found = []
        candidates = [h for h in workers if h.state is WorkerState.RUNNING and h.successor is None and h.slots]
        if self.max_episodes is not None:
            for handle in candidates:
                if handle.episodes >= self.max_episodes:
                    found.append((handle, f"{handle.episodes} episodes >= max_episodes_per_worker={self.max_episodes}"))
        now = self._clock()
        if self.max_rss_bytes is not None and now - self._rss_checked_at >= RSS_CHECK_INTERVAL:
            self._rss_checked_at = now
            chosen = {id(h) for h, _ in found}
            for handle in candidates:
                rss = _rss(handle)
                if id(handle) not in chosen and rss is not None and rss > self.max_rss_bytes:
                    mib = self.max_rss_bytes / 2**20
                    found.append((handle, f"RSS {rss / 2**20:.0f} MiB > max_worker_rss_mb={mib:g}"))
        return found


class Handovers:
    """The coordinator's side of recycling: the commands and slots of the handovers under way.

    The coordinator owns one when recycling is asked for (:meth:`Recycler.from_options`) and calls
    it where a command meets a worker being recycled: what to add to a command (``release`` /
    ``adopt``), what a reply hands over, when to start and finish handovers, and what a failure
    during one ends.

    Args:
        recycler: when to recycle which worker.
        supervisor: starts and promotes successors.
        buffers: the pool's batch segment (a step's ended flags count episodes).
        slot_worker: the coordinator's slot -> worker record routing table (updated as slots move).
        counters: the coordinator's counters (``worker_recycles``).
        send_head: sends a worker's oldest unsent call if it is idle.
        fail_call: reports every slot of a call failed (kind, reason).
        ask_to_close: asks a worker process to exit.

    Attributes:
        recycler: as given.
        successor_queues: a successor's calls in order, during its handover.
    """

    recycler: Recycler
    successor_queues: dict[WorkerHandle, deque[WorkerCall]]
    _supervisor: Supervisor
    _buffers: BatchBuffers
    _slot_worker: dict[int, WorkerHandle]
    _counters: Counter[str]
    _send_head: Callable[[WorkerHandle], None]
    _fail_call: Callable[[WorkerCall, ErrorKind, str], None]
    _ask_to_close: Callable[[WorkerHandle], None]

    def __init__(
        self,
        recycler: Recycler,
        supervisor: Supervisor,
        buffers: BatchBuffers,
        slot_worker: dict[int, WorkerHandle],
        counters: Counter[str],
        send_head: Callable[[WorkerHandle], None],
        fail_call: Callable[[WorkerCall, ErrorKind, str], None],
        ask_to_close: Callable[[WorkerHandle], None],
    ) -> None:
        self.recycler = recycler
        self.successor_queues = {}
        self._supervisor = supervisor
        self._buffers = buffers
        self._slot_worker = slot_worker
        self._counters = counters
        self._send_head = send_head
        self._fail_call = fail_call
        self._ask_to_close = ask_to_close

    @property
    def active(self) -> bool:
        """Whether some handover is under way."""
        return bool(self.recycler.handovers)

    def successors(self) -> list[WorkerHandle]:
        """The records of the successors of the handovers under way."""
        return [h.new for h in self.recycler.handovers.values()]

    def queue_of(self, successor: WorkerHandle) -> deque[WorkerCall]:
        """The calls of ``successor`` in order (it has its own queue during its handover)."""
        return self.successor_queues.setdefault(successor, deque())

    def of(self, handle: WorkerHandle) -> Handover | None:
        """The handover ``handle`` (the old process or its successor) takes part in, if any."""
        handover = self.recycler.handovers.get(handle.worker_id)
        return handover if handover is not None and handle in (handover.old, handover.new) else None

    def mark(self, handover: Handover, handle: WorkerHandle, message: dict[str, Any]) -> None:
        """The old process hands over ended slots; the successor gets the states not yet sent."""
        if handle is handover.old:
            if handover.releasing:
                message["release"] = True
        elif handover.to_adopt:
            message["adopt"], handover.to_adopt = handover.to_adopt, {}

    def count_episodes(self, call: WorkerCall) -> None:
        """Count the episodes a finished step call ended."""
        self.recycler.count_episodes(call.handle, call.slots, self._buffers.terminated, self._buffers.truncated)

    def on_reply(self, handle: WorkerHandle, call: WorkerCall, message: dict[str, Any]) -> None:
        """Count the episodes a step ended; move the slots the old process handed over."""
        if call.pending.op is Op.STEP:
            self.recycler.count_episodes(handle, call.slots, self._buffers.terminated, self._buffers.truncated)
        released = message.get("released")
        handover = self.recycler.handovers.get(handle.worker_id)
        if not released or handover is None or handle is not handover.old:
            return
        log.debug("worker %d hands slots %s over (seq %s)", handle.worker_id, sorted(released), message.get("seq"))
        finals: dict[int, Any] = {}
        for slot, state in released.items():
            slot = int(slot)
            self._slot_worker[slot] = handover.new
            if "final" in state:
                finals[slot] = state.pop("final")
            handover.to_adopt[slot] = state
            handover.moved.add(slot)
        if finals:
            self._finish_same_step(handover, call, finals)

    def _finish_same_step(self, handover: Handover, call: WorkerCall, finals: dict[int, Any]) -> None:
        """SAME_STEP: slots the old process ended in this step (and handed over without resetting
        them) are reset by the successor as part of the same command, which completes only then."""
        rows = sorted(finals)
        message = {
            "op": Op.RESET.value,
            "seq": call.pending.seq,
            "slots": rows,
            "seeds": [None] * len(rows),
            "options": None,
            "autoreset": "SameStep",
            "finish": finals,
        }
        message["adopt"], handover.to_adopt = handover.to_adopt, {}
        follow = WorkerCall(call.pending, handover.new, handover.new.gen, message, rows)
        call.slots = [slot for slot in call.slots if slot not in finals]  # partial batches hand them out later
        call.pending.calls.append(follow)
        self.queue_of(handover.new).append(follow)
        self._send_head(handover.new)

    def tick(self, workers: list[WorkerHandle], queue: Callable[[WorkerHandle], deque[WorkerCall]]) -> None:
        """Start the recycles that are due; finish the handovers that are complete and idle
        (``queue``: a record's calls in order)."""
        recycler = self.recycler
        for handle, reason in recycler.due(workers):
            log.info("recycling worker %d (pid %s): %s", handle.worker_id, handle.pid, reason)
            successor = self._supervisor.spawn_successor(handle, reason)
            recycler.handovers[handle.worker_id] = Handover(handle, successor, reason)
        for handover in list(recycler.handovers.values()):
            idle = not queue(handover.old) and not queue(handover.new)
            if handover.complete and not handover.to_adopt and idle:  # every state reached the successor
                self._promote(handover)

    def _promote(self, handover: Handover) -> None:
        """The successor owns every slot: it becomes the worker's process; the old one closes."""
        old = handover.old
        del self.recycler.handovers[old.worker_id]
        self.successor_queues.pop(handover.new, None)
        self._supervisor.promote_successor(old, ask=self._ask_to_close)
        for slot in old.slots:
            self._slot_worker[slot] = old
        self._counters["worker_recycles"] += 1

    def end(self, handle: WorkerHandle, reason: str) -> None:
        """``handle`` failed during a handover: its successor was stopped with it (supervisor);
        fail the successor's calls, and the slots it held come back to the worker's record."""
        handover = self.recycler.handovers.pop(handle.worker_id, None)
        if handover is None:
            return
        queue = self.successor_queues.pop(handover.new, deque())
        while queue:
            self._fail_call(queue.popleft(), handle.last_kind or ErrorKind.WORKER_DIED, reason)
        for slot in handle.slots:
            self._slot_worker[slot] = handle


def _rss(handle: WorkerHandle) -> int | None:
    """The resident memory of ``handle``'s process in bytes, ``None`` if unknown."""
    process = handle.process
    rss = getattr(process, "rss", None)
    return None if rss is None else rss()
