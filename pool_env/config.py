"""Pool options: how a pool runs its workers (timeouts, restart policy), one frozen dataclass.

What one slot *is* — its env spec — lives with its env kind in :mod:`pool_env.envs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pool_env.envs.base import require

if TYPE_CHECKING:
    from pool_env.envs.base import EnvSpec

__all__ = ["STEP_TIMEOUT_MARGIN", "OnEnvError", "PoolOptions"]

OnEnvError = Literal["truncate", "raise"]

STEP_TIMEOUT_MARGIN = 5.0
"""Seconds added to a spec's worst case for the default ``step_timeout``: the worker's own work
(shared memory, messages), scheduling delays, and DNS lookups, which request timeouts do not cover."""


@dataclass(frozen=True)
class PoolOptions:
    """How the pool runs its workers.

    Attributes:
        step_timeout: seconds a worker may take for one command before it is declared hung,
            killed and replaced (its slots come back truncated). ``None`` picks a default from
            the spec (60 s for local envs; for HTTP, :meth:`HttpEnvSpec.worst_case_step_seconds`
            plus :data:`STEP_TIMEOUT_MARGIN`).
        start_timeout: seconds for all workers to start and create their envs.
        restart_backoff: first delay before re-spawning a worker that failed again soon
            after a restart (doubles, with jitter, capped at ``restart_backoff_cap``).
        restart_backoff_cap: the longest delay between restarts.
        flap_limit: give up on a worker (its slots stay truncated) after this many restarts
            within ``flap_window`` seconds.
        flap_window: see ``flap_limit``.
        kill_grace: seconds a worker gets to exit after being told to (``close()``), before it
            and its process tree are killed; all workers share one grace period.
        freeze_timeout: seconds without a heartbeat *and* without CPU progress after which a
            worker is frozen (SIGSTOP, a deadlock) and is killed and replaced, independent of
            ``step_timeout``; a busy worker (waiting on a slow server, or in a long step that
            burns CPU) is not frozen. ``None`` turns the check off.
        worker_output: what the envs print (``print``, ``warnings``, ``logging``) reaches the
            trainer's terminal, each line prefixed ``[worker N pid P]``, as with
            ``AsyncVectorEnv``; ``False`` silences it (stderr still goes to the worker's log file).
        on_env_error: what an exception raised inside a local env's ``reset``/``step`` does.
            ``"truncate"`` (default): that slot comes back truncated with the remote traceback in
            ``infos["error"]``, the worker and the other slots are unaffected. ``"raise"``
            (``AsyncVectorEnv``'s behaviour): ``step()``/``reset()`` raise
            :class:`~pool_env.errors.EnvRaisedError` with the remote traceback, slot, pid, episode
            and step. A return that breaks the env's declared contract always raises
            :class:`~pool_env.errors.InvalidEnvReturnError`.
        env_failure_limit: a slot whose env raised this many times in a row without one
            successful step makes ``step()``/``reset()`` raise
            :class:`~pool_env.errors.EnvFailingError` (a deterministic bug, never truncated
            batches forever).
        fast_path: carry clean steps and resets through shared-memory sequence words instead of a
            zmq round trip (Linux x86-64; :mod:`pool_env.fastpath`). ``False`` keeps every command
            on zmq.
        max_episodes_per_worker: recycle a worker process after it finished this many episodes
            (``None``: never). A new process takes the worker's slots over one by one, each at its
            own episode boundary, with each env's RNG state handed over (:mod:`pool_env.recycle`):
            no episode is cut and seeded runs give the same trajectories.
        max_worker_rss_mb: recycle a worker process whose resident memory passed this many MiB
            (checked about once a second; ``None``: never), the same way.
    """

    step_timeout: float | None = None
    start_timeout: float = 60.0
    restart_backoff: float = 0.5
    restart_backoff_cap: float = 30.0
    flap_limit: int = 5
    flap_window: float = 60.0
    kill_grace: float = 1.0
    on_env_error: OnEnvError = "truncate"
    worker_output: bool = True
    env_failure_limit: int = 5
    freeze_timeout: float | None = 5.0
    fast_path: bool = True
    max_episodes_per_worker: int | None = None
    max_worker_rss_mb: float | None = None

    def __post_init__(self) -> None:
        require(self.step_timeout is None or self.step_timeout > 0, "step_timeout", "must be > 0")
        require(self.start_timeout > 0, "start_timeout", "must be > 0")
        require(self.restart_backoff >= 0, "restart_backoff", "must be >= 0")
        require(self.restart_backoff_cap >= self.restart_backoff, "restart_backoff_cap", "must be >= backoff")
        require(self.flap_limit >= 1, "flap_limit", "must be >= 1")
        require(self.flap_window > 0, "flap_window", "must be > 0")
        require(self.kill_grace >= 0, "kill_grace", "must be >= 0")
        require(
            self.on_env_error in ("truncate", "raise"),
            "on_env_error",
            f"must be 'truncate' or 'raise', got {self.on_env_error!r}",
        )
        require(
            isinstance(self.env_failure_limit, int) and self.env_failure_limit >= 1,
            "env_failure_limit",
            f"must be an int >= 1, got {self.env_failure_limit!r}",
        )
        require(self.freeze_timeout is None or self.freeze_timeout >= 1, "freeze_timeout", "must be >= 1 s or None")
        require(
            self.max_episodes_per_worker is None
            or (isinstance(self.max_episodes_per_worker, int) and self.max_episodes_per_worker >= 1),
            "max_episodes_per_worker",
            f"must be an int >= 1 or None, got {self.max_episodes_per_worker!r}",
        )
        require(
            self.max_worker_rss_mb is None or self.max_worker_rss_mb > 0,
            "max_worker_rss_mb",
            f"must be > 0 MiB or None, got {self.max_worker_rss_mb!r}",
        )

    def effective_step_timeout(self, spec: EnvSpec) -> float:
        """The step timeout to use for ``spec``."""
        if self.step_timeout is not None:
            return self.step_timeout
        bound = spec.worst_case_step_seconds()
        return 60.0 if math.isinf(bound) else bound + STEP_TIMEOUT_MARGIN
