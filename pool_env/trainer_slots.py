"""Slots stepped in the trainer's own process (``trainer_slots=k``), EnvPool/PufferLib style.

On a machine with few cores a pool whose trainer only waits leaves a core idle during every
step. With ``trainer_slots=k`` the last ``k`` slots live in the trainer's process: the coordinator
posts the workers' share of a step first, steps its own ``k`` slots while they work, then waits
for them. (EnvPool and PufferLib let the main thread do env work in the same way; a sketch here
with the trainer stepping 32 of 64 CartPole slots gave 1.4-1.7x SyncVectorEnv.)

The trainer's slots run the very same command code as a worker (:class:`workers.loop.WorkerLoop`,
its autoreset, seeds, error texts and env contract checks), writing into the same shared batch,
so values are the same bit for bit. What isolation they lose is stated in the README: an env that
crashes the interpreter there crashes the trainer, and an env that hangs there cannot be cut by
``step_timeout``; an exception raised by the env is handled like in a worker (the slot truncated
with the traceback, or raised with ``on_env_error="raise"``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import zmq

from pool_env import shm
from pool_env.envs import EnvSpec

if TYPE_CHECKING:  # imported when used: a trainer's own ``workers`` module must not shadow it at import
    from workers.loop import WorkerLoop

__all__ = ["TrainerSlots"]


class TrainerSlots:
    """The trainer's own share of the slots: a worker's command loop, without the process.

    Args:
        spec: the env spec of the pool.
        slots: the global slot ids stepped here.
        buffers: the pool's batch segment (attached once more, as a worker would).

    Raises:
        PoolEnvError: an env could not be created.
    """

    slots: list[int]
    _loop: WorkerLoop

    def __init__(self, spec: EnvSpec, slots: list[int], buffers: shm.BatchBuffers) -> None:
        from workers.loop import WorkerLoop

        self.slots = list(slots)
        # No socket: this loop is driven by calls, never by messages, and never sends.
        # Pickled env factories (env_fns) may be rebuilt here: they come from this very process.
        self._loop = WorkerLoop(cast("zmq.Socket[bytes]", None), os.getpid(), 0, -1, accept_pickle=True)
        try:
            self._loop.init(
                {
                    "spec": spec.to_wire(self.slots),
                    "slots": self.slots,
                    "shm_name": buffers.name,
                    "layout": buffers.layout.to_wire(),
                }
            )
        except BaseException:
            self._loop.close()
            raise

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        """Execute one ``reset``/``step`` message for (some of) these slots; the ``done`` reply.

        Raises:
            PoolEnvError: what a worker would answer with ``fatal`` (e.g. an env that cannot be made).
        """
        return self._loop.execute(message)

    def close(self) -> None:
        """Close the envs and detach from the segment. Idempotent."""
        self._loop.close()
