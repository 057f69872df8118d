"""The quick step: a plain full step of an embedded pool in its steady state, posted and waited for in two calls.

Most calls of a training loop are ``env.step(actions)`` with every worker healthy and idle, a
plain batch of actions and nothing to report back. For those, :meth:`PoolVectorEnv.step
<pool_env.vector_env.PoolVectorEnv.step>` skips the generic layers (``step_async``'s call-order
checks made a second time, ``submit``'s decisions, ``collect``'s and ``step_wait``'s bookkeeping)
and asks :class:`QuickStep` to post the step with the steady path's own records
(:mod:`pool_env.fastpath.steady`) and to wait for it the way the steady path waits first: a spin
on the workers' ``done`` words while a core is free for it. Anything else — a worker not idle, a
health check due, a spin that did not end in every worker's publish — leaves the rest to the
generic path, which finds the very records it would have made itself, so every healing path,
timeout and error stays the generic one.

The idea of a specialised step for the common case is EnvPool's (its C++ ``send``/``recv`` serve
the plain batch; everything else is the Python wrapper's); here it is only the Python around it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pool_env.commands import PendingCommand
from pool_env.fastpath.steady import SteadyCalls
from pool_env.protocol import Op

if TYPE_CHECKING:  # the coordinator makes a QuickStep (Coordinator.quick_step)
    from pool_env.coordinator import Coordinator

__all__ = ["QuickStep"]


def _no_message(slots: list[int]) -> dict[str, Any]:
    """The renewed records keep their messages: :meth:`SteadyCalls.post` makes none."""
    raise AssertionError("renewed records need no new message")


class QuickStep:
    """Post and wait for a plain step of every slot on the steady path, with the least Python.

    Made by :meth:`Coordinator.quick_step <pool_env.coordinator.Coordinator.quick_step>` only for a
    pool whose steps can take the steady path at all (the fast path, no recycling, no trainer
    slots, no server-step quota, an autoreset mode the fast path carries).

    Args:
        coordinator: the pool's coordinator.
        steady: its steady calls.
        plan: the steady plan of a step in ``autoreset`` (``pool_plan(Op.STEP, None, autoreset)``).
        autoreset: the pool's autoreset mode (a ``gymnasium.vector.AutoresetMode`` value).
        liveness: seconds between the coordinator's health checks of the workers.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        steady: SteadyCalls,
        plan: tuple[int, int | None, int],
        autoreset: str,
        liveness: float,
    ) -> None:
        self._coordinator = coordinator
        self._steady = steady
        self._plan = plan
        self._autoreset = autoreset
        self._liveness = liveness

    def ready(self) -> bool:
        """Whether a step posted now takes the steady path (every worker RUNNING and idle, no
        episode lost with a worker waiting to be reported): what ``submit`` asks first."""
        return not self._coordinator._lost and self._steady.idle()

    def post(self) -> PendingCommand:
        """Post a step of every slot (the actions are in the segment already), as ``submit`` posts
        it on the steady path, the last step's records renewed (``give_back``). Call only when
        :meth:`ready`."""
        steady, coordinator = self._steady, self._coordinator
        pending = steady.renew(Op.STEP, self._autoreset, coordinator._seq + 1)
        if pending is None:  # no records of a step like this to renew: _submit_steady makes new ones
            return coordinator._submit_steady(steady, Op.STEP, self._plan, None, self._autoreset, True)
        coordinator._seq += 1  # the seq renew gave the records (as _submit_steady, without seeds and messages)
        steady.post(pending, self._plan, _no_message, True)
        return pending

    def wait(self) -> bool:
        """Spin until every worker published the step :meth:`post` posted and retire it (``True``), as the steady
        path's first wait does; ``False`` (nothing retired, the records intact) when the generic
        wait must take over: a health check is due, no core is free to spin on, or the spin ended
        without every publish (the generic wait then blocks at once: the spin is spent)."""
        coordinator, steady = self._coordinator, self._steady
        if time.monotonic() - coordinator._last_check >= self._liveness:
            return False
        published = steady.published
        if not published():
            if steady.busy() >= coordinator._cores:
                return False
            if not coordinator._tail_spin.spin(published):
                steady.tail_spun = True
                return False
        coordinator._retire_steady(steady)
        return True
