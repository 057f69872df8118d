"""What every pool_env vector env shares, whatever is behind it (embedded workers or daemons).

:class:`BatchedVectorEnv` holds the gymnasium conventions and call-order rules once: ``step`` is
``step_async`` + ``step_wait``; a call on a closed env raises :class:`ClosedError`; a call while a
step is pending raises :class:`AlreadyPendingError`; seeds follow gymnasium's ``seed + i`` rule;
the env is a context manager and warns (``ResourceWarning``) when collected unclosed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from gymnasium.vector import VectorEnv

from pool_env.errors import AlreadyPendingError, ClosedError, UsageError

__all__ = ["BatchedVectorEnv", "seed_list"]


def seed_list(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-slot seeds, as gymnasium's vector envs derive them: ``None`` → all None, ``s`` → ``s + i``.

    Raises:
        UsageError: a list whose length is not ``num_envs``.
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(num_envs)]
    seeds = [None if s is None else int(s) for s in seed]
    if len(seeds) != num_envs:
        raise UsageError(f"a seed list must have num_envs={num_envs} entries, got {len(seeds)}")
    return seeds


class BatchedVectorEnv(VectorEnv):
    """Base of :class:`~pool_env.PoolVectorEnv` and :class:`~pool_env.RemoteVectorEnv`.

    Subclasses implement ``step_async``/``step_wait``, set ``self._pending`` while a step is in
    flight, and may report other in-flight work through :meth:`_busy_reason`.
    """

    num_envs: int
    _pending: Any = None
    _was_reset: bool = False

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot: ``step_async(actions)`` then ``step_wait()``."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:  # pragma: no cover - abstract
        """Start a step of every slot."""
        raise NotImplementedError

    def step_wait(
        self, timeout: float | None = None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:  # pragma: no cover - abstract
        """Wait for the step started by :meth:`step_async`."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            warnings.warn(f"unclosed {self!r}; call close()", ResourceWarning, stacklevel=2)
            with contextlib.suppress(Exception):  # may run at interpreter shutdown
                self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"this {type(self).__name__} is closed")

    def _check_idle(self, name: str) -> None:
        """Raise unless the env is open and nothing is in flight."""
        self._check_open()
        if self._pending is not None:
            raise AlreadyPendingError(f"{name}() while a step is pending; call step_wait() first", "step")
        busy = self._busy_reason()
        if busy is not None:
            raise AlreadyPendingError(f"{name}() while {busy}", "step")

    def _check_can_step(self) -> None:
        """Raise unless ``step_async`` may start: open, idle, and reset at least once."""
        self._check_idle("step_async")
        if not self._was_reset:
            raise UsageError("call reset() before step()")

    def _busy_reason(self) -> str | None:
        """Why the env is busy besides a pending step (``None``: it is not)."""
        return None

    def _reset_envs_arguments(
        self, indices: Sequence[int], seeds: Sequence[int | None] | None
    ) -> tuple[list[int], list[int | None]]:
        """Check ``reset_envs`` arguments (the env idle, distinct slots in range, one seed each).

        Raises:
            UsageError: bad indices or seeds; AlreadyPendingError, ClosedError: wrong call order.
        """
        self._check_idle("reset_envs")
        chosen = [int(i) for i in indices]
        if not chosen or any(not 0 <= i < self.num_envs for i in chosen) or len(set(chosen)) != len(chosen):
            raise UsageError(f"indices must be distinct slots in 0..{self.num_envs - 1}, got {list(indices)}")
        if seeds is not None and len(seeds) != len(chosen):
            raise UsageError(f"seeds must match indices in length ({len(seeds)} != {len(chosen)})")
        return chosen, list(seeds) if seeds is not None else [None] * len(chosen)

    def _seed_list(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        return seed_list(seed, self.num_envs)
