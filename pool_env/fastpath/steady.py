"""The fast path's steady state: a plain call of every slot, without the generic per-worker machinery.

Most calls of a training loop are the same: step every slot, every worker healthy and idle.
:class:`SteadyCalls` carries exactly those with the least Python that keeps the generic records
(the coordinator's queues and :class:`~pool_env.fastpath.route.FastCalls`) true at every moment,
so that any surprise — a message, a worker that does not publish, a deadline — is handled by the
generic path as if it had posted the call itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pool_env.commands import CommandResult, PendingCommand, WorkerCall
from pool_env.fastpath.block import DONE, FAST_RESET, FAST_STEP, WORDS
from pool_env.fastpath.route import FastCalls
from pool_env.protocol import AUTORESET_MODES, Op
from pool_env.supervisor.states import WorkerHandle, WorkerState

__all__ = ["SteadyCalls", "pool_plan"]


_STEP_PLANS = {autoreset: (FAST_STEP, None, mode) for mode, autoreset in enumerate(AUTORESET_MODES)}


def pool_plan(op: Op, seeds: list[int | None] | None, autoreset: str) -> tuple[int, int | None, int] | None:
    """``(fast op, seed base, mode)`` of a plain call of *every* slot of the pool (a step, or a reset
    without options whose seeds are all ``None`` or ``base + slot``); else ``None``."""
    if op is Op.STEP:  # the hot path: one look-up
        return _STEP_PLANS.get(autoreset)
    if autoreset not in AUTORESET_MODES:
        return None
    mode = AUTORESET_MODES.index(autoreset)
    if op is not Op.RESET or seeds is None:
        return None
    first = seeds[0]
    if first is None:
        return (FAST_RESET, None, mode) if all(seed is None for seed in seeds) else None
    return (FAST_RESET, first, mode) if seeds == list(range(first, first + len(seeds))) else None


class SteadyCalls:
    """The fast path's steady state: one plain call of every slot, posted to every worker at once.

    When every worker is RUNNING and idle (its queue empty, nothing of it on the fast path),
    nothing is lost and nothing handed over, a plain full step or reset needs none of
    ``submit()``'s per-worker decisions (restarts due, lost episodes, handovers, planning) nor
    ``collect()``'s reaping loop: :meth:`post` puts one call per worker in its queue and in
    :attr:`FastCalls.calls` (the very records the generic path keeps, so every healing path finds
    what it expects), posts them all and rings; the coordinator waits until :meth:`published`
    and :meth:`finish` retires them. Anything else — a message, a quiet ``LIVENESS_POLL_MS``, a
    deadline — leaves the rest to the generic loop, which reaps what was published meanwhile
    exactly once.

    Args:
        fast_calls: the pool's fast-path calls.
        queues: every worker's call queue, by worker id.
        workers: the pool's worker handles (the same objects for the pool's life).
    """

    fast_calls: FastCalls
    inflight: list[tuple[WorkerCall, deque[WorkerCall], int, int]]  # call, its queue, DONE word index, word
    spare: PendingCommand | None
    """The records of the last call :meth:`finish` retired, when its caller gave them back (:meth:`renew`)."""
    tail_spun: bool
    """Whether the call in flight was spun on already (:class:`pool_env.quick_step.QuickStep`): the
    coordinator's wait then blocks at once instead of spinning a second time."""
    _workers: list[tuple[WorkerHandle, deque[WorkerCall], int]]
    _indices: list[int]
    _words: memoryview
    _give_back: bool

    def __init__(
        self, fast_calls: FastCalls, queues: dict[int, deque[WorkerCall]], workers: list[WorkerHandle]
    ) -> None:
        self.fast_calls = fast_calls
        self._words = fast_calls.lane.words
        self._workers = [(h, queues[h.worker_id], h.worker_id * WORDS + DONE) for h in workers]
        self._indices = [h.worker_id for h in workers]
        self.inflight = []
        self.spare = None
        self.tail_spun = False
        self._give_back = False

    def idle(self) -> bool:
        """Whether every worker is RUNNING with nothing queued or on the fast path."""
        if self.fast_calls.calls:
            return False
        running = WorkerState.RUNNING
        for handle, queue, _ in self._workers:  # noqa: SIM110 - a loop, not all(genexpr): every step asks
            if handle.state is not running or queue:
                return False
        return True

    def renew(self, op: Op, autoreset: str, seq: int) -> PendingCommand | None:
        """The spare records renewed as command ``seq``, if they are of a call like this one (same op
        and autoreset mode); taken either way. A result that carried news is replaced, never reused."""
        spare, self.spare = self.spare, None
        if spare is None or spare.op is not op or spare.calls[0].message.get("autoreset", "NextStep") != autoreset:
            return None
        spare.seq = seq
        result = spare.result
        if result.infos or result.errors or result.values or result.fatal is not None:
            spare.result = CommandResult()
        return spare

    def post(
        self,
        pending: PendingCommand,
        plan: tuple[int, int | None, int],
        message: Callable[[list[int]], dict[str, Any]],
        give_back: bool = False,
    ) -> None:
        """Queue, post and ring one call per worker (``message(slots)``: its command message).

        ``pending`` from :meth:`renew` keeps its calls: each is posted again with the new
        ``seq``, as a new one would be. ``give_back``: the caller keeps nothing of ``pending``
        once it collected it, so :meth:`finish` may keep the records as :attr:`spare`.
        """
        lane, calls, seq = self.fast_calls.lane, self.fast_calls.calls, pending.seq
        fast_op, seed, mode = plan
        now = time.monotonic()
        inflight = self.inflight = []
        self.tail_spun = False
        posted = pending.calls
        again = iter(posted) if posted else None
        self._give_back = give_back
        for handle, queue, done_index in self._workers:
            slots, gen, worker_id = handle.slots, handle.gen, handle.worker_id
            # The command word first: the worker may start while the records below are written
            # (nobody reads them before this call returns; a worker that is not spinning waits for its bell).
            word = lane.post(worker_id, gen, seq, fast_op, seed, mode, ring=False)
            if again is None:
                call = WorkerCall(pending, handle, gen, message(slots), slots, sent_at=now, fast=plan)
                posted.append(call)
            else:  # the spare records, in the same order of workers
                call = next(again)
                call.gen, call.sent_at, call.done, call.fast = gen, now, False, plan
                call.message["seq"] = seq
            queue.append(call)
            calls[worker_id] = (call, word)
            inflight.append((call, queue, done_index, word))
        lane.ring_many(self._indices)  # every command posted before any bell: see Coordinator.submit

    def published(self) -> bool:
        """Whether every worker of the call in flight published it."""
        words = self._words
        for _, _, index, word in self.inflight:  # noqa: SIM110 - a loop, not all(genexpr): called while spinning
            if words[index] != word:
                return False
        return True

    def published_slots(self) -> list[list[int]]:
        """The slots of each call in flight that its worker published already."""
        words = self._words
        return [call.slots for call, _, index, word in self.inflight if words[index] == word]

    def busy(self) -> int:
        """How many workers of the call in flight have not published it yet."""
        words = self._words
        return sum(words[index] != word for _, _, index, word in self.inflight)

    def untouched(self) -> bool:
        """Whether no call in flight was finished or failed by the generic path (it may have reaped
        or failed some: :meth:`finish` is then not for them)."""
        for call, _, _, _ in self.inflight:  # noqa: SIM110 - a loop, not all(genexpr): every step asks
            if call.done:
                return False
        return True

    def finish(self) -> list[WorkerHandle]:
        """Retire the published calls in flight (queue, fast-path records, step counts); the workers
        with more calls queued (another command submitted meanwhile: their head must be sent)."""
        calls, more = self.fast_calls.calls, []
        inflight = self.inflight
        for call, queue, _, _ in inflight:
            handle = call.handle
            queue.popleft()
            del calls[handle.worker_id]
            call.done = True
            handle.steps += len(call.slots)
            if queue:
                more.append(handle)
        if self._give_back and inflight:
            self.spare = inflight[0][0].pending
        self.inflight = []
        return more
