"""The coordinator's side of the fast path: which calls it can carry, posting them, reaping them.

A :class:`~pool_env.commands.WorkerCall` goes on the fast path when :func:`fast_plan` finds it
plain enough (all the worker's slots; a step, or a reset without options whose seeds are all
``None`` or ``base + slot``); it is then posted in the worker's record of the
:class:`~pool_env.fastpath.block.FastLane` instead of sent over zmq, and finished when the worker
publishes its sequence word. A call with news (errors, infos) is answered over zmq as always.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pool_env.commands import WorkerCall
from pool_env.fastpath.block import FAST_RESET, FAST_STEP, FastLane
from pool_env.protocol import AUTORESET_MODES, Op

__all__ = ["AUTORESET_MODES", "FastCalls", "fast_plan"]

# AUTORESET_MODES (pool_env.protocol): a fast-path record's ``mode`` word is an index into it.


def fast_plan(
    op: Op,
    slots: list[int],
    owned: int,
    seeds: list[int | None] | None,
    options: dict[str, Any] | None,
    autoreset: str,
) -> tuple[int, int | None, int] | None:
    """``(fast op, seed base, mode)`` when the fast path can carry this call (all the worker's slots,
    a step, or a reset without options whose seeds are all ``None`` or ``base + slot``); else ``None``."""
    if len(slots) != owned or autoreset not in AUTORESET_MODES:
        return None
    mode = AUTORESET_MODES.index(autoreset)
    if op is Op.STEP:
        return (FAST_STEP, None, mode)
    if op is not Op.RESET or options is not None or seeds is None:
        return None
    if all(seed is None for seed in seeds):
        return (FAST_RESET, None, mode)
    if any(seed is None for seed in seeds):
        return None
    base = int(seeds[0]) - slots[0]  # type: ignore[arg-type]
    if all(seed == base + slot for seed, slot in zip(seeds, slots, strict=True)):
        return (FAST_RESET, base, mode)
    return None


class FastCalls:
    """The calls in flight on the fast path, one per worker at most.

    Args:
        lane: the pool's fast-path records and bells.

    Attributes:
        lane: as given.
        calls: worker id -> its call on the fast path and the sequence word that finishes it.
        rings: while ``submit()`` posts a command, the workers whose bells to ring once all are
            posted (a woken worker may take the core before the next post); else ``None``.
    """

    lane: FastLane
    calls: dict[int, tuple[WorkerCall, int]]
    rings: list[int] | None

    def __init__(self, lane: FastLane) -> None:
        self.lane = lane
        self.calls = {}
        self.rings = None

    def post(self, call: WorkerCall) -> None:
        """Post ``call`` (its ``fast`` plan set) in its worker's record; ring now or with :meth:`ring_all`."""
        assert call.fast is not None
        handle, seq = call.handle, call.pending.seq
        rings = self.rings
        word = self.lane.post(handle.worker_id, handle.gen, seq, *call.fast, ring=rings is None)
        if rings is not None:
            rings.append(handle.worker_id)
        self.calls[handle.worker_id] = (call, word)
        call.sent_at = time.monotonic()

    def ring_all(self) -> None:
        """Ring the bells of the workers posted since :attr:`rings` was set, and stop collecting."""
        rings, self.rings = self.rings, None
        if rings:
            self.lane.ring_many(rings)

    def reap(self, queues: dict[int, deque[WorkerCall]], finished: Callable[[WorkerCall], None]) -> None:
        """Finish the calls whose worker published them: pop each from its worker's queue, mark it
        done, count its steps, and hand it to ``finished``."""
        for worker_id, (call, word) in list(self.calls.items()):
            if call.done:  # answered over zmq (it had news), or failed with its worker
                del self.calls[worker_id]
            elif self.lane.finished(worker_id, word):
                del self.calls[worker_id]
                queue = queues[worker_id]
                if queue and queue[0] is call:
                    queue.popleft()
                call.done = True
                call.handle.steps += len(call.slots)
                finished(call)

    def any_done(self) -> bool:
        """Whether some call in flight is finished (published, or answered otherwise)."""
        lane = self.lane
        return any(call.done or lane.finished(w, word) for w, (call, word) in self.calls.items())

