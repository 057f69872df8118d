"""The worker's side of the fast path: wait for a command in its record, publish a clean result.

The coordinator posts a plain step or reset of all this worker's slots in the worker's record of
the segment (:mod:`pool_env.fastpath`) and rings its bell; the worker spins briefly on the record,
then blocks on the bell *and* its socket (zmq still carries everything else). A command whose
result has nothing to report is published through the record's sequence word; one with news
(errors, infos, counters) is answered over zmq, as always (:meth:`workers.loop.WorkerLoop.serve`).
"""

from __future__ import annotations

from typing import Any

import zmq

from pool_env.fastpath import FAST_RESET, FastCommand, Waiter, Wake, WorkerPort
from pool_env.fastpath.route import AUTORESET_MODES
from pool_env.protocol import Op
from pool_env.shm import BatchBuffers

__all__ = ["FastPath"]


class FastPath:
    """This worker's fast-path record and its wait (spin on the record, then the bell and the socket).

    Args:
        config: the ``fast`` part of the ``init`` message (the record's place, the bell, ``spin``).
        gen: this worker's generation.
        buffers: the pool's batch segment, attached.
        socket: the worker's DEALER socket (a message on it ends a wait too).
    """

    port: WorkerPort
    _waiter: Waiter
    _taken: FastCommand | None

    def __init__(self, config: dict[str, Any], gen: int, buffers: BatchBuffers, socket: zmq.Socket[bytes]) -> None:
        self.port = WorkerPort(config, gen, buffers)
        # While it spins, the coordinator skips its bell (pool_env.fastpath.bell: the handshake).
        self._waiter = Waiter(socket, self.port.bell, float(config.get("spin", 0.0)), self.port.spin_flag)
        self._taken = None

    def _take(self) -> bool:
        self._taken = self.port.poll()
        return self._taken is not None

    def has_message(self) -> bool:
        """Whether a zmq message waits on the worker's socket (:meth:`Waiter.has_message`)."""
        return self._waiter.has_message()

    def wait(self, timeout: float) -> FastCommand | None:
        """The next fast-path command: spin briefly, then block on the bell *and* the socket.

        ``None`` when a zmq message arrived or the wait timed out (``timeout`` seconds; to check
        the parent).
        """
        wake = self._waiter.wait(self._take, timeout)
        if wake is Wake.READY:
            return self._taken
        if wake is Wake.MESSAGE:
            return None
        return self.port.poll()

    @staticmethod
    def message(command: FastCommand, slots: list[int]) -> dict[str, Any]:
        """The command message a fast-path ``command`` stands for, over ``slots`` (all the worker's)."""
        message: dict[str, Any] = {"op": Op.STEP.value, "seq": command.seq, "slots": slots}
        message["autoreset"] = AUTORESET_MODES[command.mode]
        if command.op == FAST_RESET:
            message["op"] = Op.RESET.value
            message["seeds"] = [None if command.seed is None else command.seed + s for s in slots]
            message["options"] = None
        return message

    def take(self, seq: int) -> None:
        """Mark ``seq`` taken (a command that came over zmq), so the wait never returns it."""
        self.port.take(seq)

    def publish(self, seq: int) -> None:
        """Command ``seq`` is done and clean (its rows are written): tell the coordinator.

        The ring is skipped while the trainer spins on the words (:class:`~pool_env.fastpath.block.SpinFlag`).
        It is the costly part when the trainer blocks (measured in a CartPole N=64 worker,
        load ≈ 5: 9-12 µs of the worker's own CPU per ``eventfd_write``, against 0.4 µs with nobody
        waiting; 0.2-0.36 involuntary context switches per ring): the kernel's cross-CPU wake-up
        of the trainer, not preemption. Nothing of the command's work is left after it; it goes
        only when the trainer spins instead (its spin policy), see :mod:`pool_env.fastpath.bell`.
        """
        self.port.publish(seq)

    def close(self) -> None:
        """Close the bells and let go of the words (before the segment closes). Idempotent."""
        self.port.close()
