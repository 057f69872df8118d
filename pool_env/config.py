"""Env specs and pool options: frozen dataclasses, validated in one place, msgpack-friendly.

A *spec* says what one env slot is (a remote ``DegradationEnv`` episode or a local gymnasium
env); :class:`PoolOptions` says how the pool runs it (timeouts, restart policy).  Specs cross
the coordinator → worker wire as plain dicts (:meth:`to_wire` / :func:`spec_from_wire`); never
as pickles.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pool_env.errors import SpecError

__all__ = [
    "RETRY_DELAY_CAP",
    "STEP_TIMEOUT_MARGIN",
    "EnvSpec",
    "GymEnvSpec",
    "HttpEnvSpec",
    "PoolOptions",
    "spec_from_wire",
]

ObservationMode = Literal["last", "chunk"]
OnEnvError = Literal["truncate", "raise"]

RETRY_DELAY_CAP = 5.0
"""The longest back-off delay between two attempts of one HTTP request, in seconds."""

STEP_TIMEOUT_MARGIN = 5.0
"""Seconds added to a spec's worst case for the default ``step_timeout``: the worker's own work
(shared memory, messages), scheduling delays, and DNS lookups, which request timeouts do not cover."""


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise SpecError(f"{field_name}: {message}")


@dataclass(frozen=True)
class HttpEnvSpec:
    """A remote DegradationEnv episode on a challenge-compatible HTTP server.

    Attributes:
        server_url: base URL, e.g. ``"http://127.0.0.1:8001"`` (a trailing ``/`` is stripped).
        user_token: sent as the ``User-Token`` header.
        step_size: flights per decision step (1..50).
        env_type: the server's env type.
        max_steps_per_episode: flights after which the server truncates an episode.
        request_timeout: seconds for each HTTP request (connect, and each read of the answer);
            shorter when the call's ``call_timeout`` has less time left.
        observation: ``"last"`` gives the last row of each chunk, shape ``(9,)``;
            ``"chunk"`` gives the whole chunk padded with zeros, shape ``(step_size, 9)``, with
            the real row count in ``infos["rows"]``.
        max_retries: transport retries of one request before the slots of that request are
            reported truncated with ``infos["error"]``.
        retry_backoff: first retry delay in seconds (doubles, with jitter, capped at 5 s).
        call_timeout: seconds one worker-side reset or step call (all its requests, retries and
            back-offs, for all of the worker's slots) may take. Past it no request or back-off
            starts and the slots still unresolved report an error (a step whose fate is unknown
            says it "may have been applied"); a request already running ends within one more
            ``request_timeout``. ``None`` (default) allows one request all its retries:
            ``(max_retries + 1) * request_timeout + max_retries * 5`` (55 s with the defaults),
            see :meth:`effective_call_timeout`.
    """

    server_url: str
    user_token: str
    step_size: int = 10
    env_type: str = "DegradationEnv"
    max_steps_per_episode: int = 1000
    request_timeout: float = 10.0
    observation: ObservationMode = "last"
    max_retries: int = 3
    retry_backoff: float = 0.2
    call_timeout: float | None = None

    kind = "http"

    def __post_init__(self) -> None:
        _require(
            isinstance(self.server_url, str) and self.server_url.startswith(("http://", "https://")),
            "server_url",
            f"must start with http:// or https://, got {self.server_url!r}",
        )
        object.__setattr__(self, "server_url", self.server_url.rstrip("/"))
        _require(isinstance(self.user_token, str) and bool(self.user_token), "user_token", "must be non-empty")
        _require(isinstance(self.step_size, int) and 1 <= self.step_size <= 50, "step_size", "must be 1..50")
        _require(self.max_steps_per_episode >= 1, "max_steps_per_episode", "must be >= 1")
        _require(self.request_timeout > 0, "request_timeout", "must be > 0")
        _require(self.observation in ("last", "chunk"), "observation", "must be 'last' or 'chunk'")
        _require(self.max_retries >= 0, "max_retries", "must be >= 0")
        _require(self.retry_backoff >= 0, "retry_backoff", "must be >= 0")
        _require(
            self.call_timeout is None
            or (isinstance(self.call_timeout, int | float) and 0 < self.call_timeout < math.inf),
            "call_timeout",
            f"must be > 0 and finite (or None), got {self.call_timeout!r}",
        )

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict that :func:`spec_from_wire` turns back into this spec."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def effective_call_timeout(self) -> float:
        """``call_timeout``, or by default the time one request may take with all its retries."""
        if self.call_timeout is not None:
            return float(self.call_timeout)
        return (self.max_retries + 1) * self.request_timeout + self.max_retries * RETRY_DELAY_CAP

    def worst_case_step_seconds(self) -> float:
        """An upper bound on one worker command: ``2 * (call_timeout + request_timeout)``.

        A step command may make two backend calls (a reset of the slots that ended, then a step
        of the others); each ends within its call timeout plus one ``request_timeout``: a
        request gives its connect and its read each ``min(request_timeout, time left)``, so the
        one running when the deadline passes overruns it by at most that much.
        Not covered: a server that trickles its answer (``requests`` times each socket read,
        not the whole answer), slow DNS, a host with several addresses tried in turn; the
        coordinator's ``step_timeout`` kill is the backstop.
        """
        return 2 * (self.effective_call_timeout() + self.request_timeout)


@dataclass(frozen=True)
class GymEnvSpec:
    """A local gymnasium env, made in the worker with ``gymnasium.make``.

    Attributes:
        env_id: a registered id (``"CartPole-v1"``) or an import string ``"package.module:make_env"``
            naming a callable that returns an env (called with ``kwargs``).
        kwargs: keyword arguments for ``gymnasium.make`` or the callable (msgpack-able values).
        imports: modules imported in the worker first (to register custom ids).
    """

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    imports: tuple[str, ...] = ()

    kind = "gym"

    def __init__(self, env_id: str, imports: tuple[str, ...] | list[str] = (), **kwargs: Any) -> None:
        object.__setattr__(self, "env_id", env_id)
        object.__setattr__(self, "kwargs", dict(kwargs))
        object.__setattr__(self, "imports", tuple(imports))
        _require(isinstance(env_id, str) and bool(env_id), "env_id", "must be a non-empty string")

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict that :func:`spec_from_wire` turns back into this spec."""
        return {"kind": self.kind, "env_id": self.env_id, "kwargs": self.kwargs, "imports": list(self.imports)}

    def worst_case_step_seconds(self) -> float:
        """Local envs have no natural bound; the pool default applies."""
        return math.inf


EnvSpec = HttpEnvSpec | GymEnvSpec


def spec_from_wire(data: dict[str, Any]) -> EnvSpec:
    """Rebuild a spec from :meth:`to_wire` output.

    Raises:
        SpecError: unknown ``kind`` or bad fields.
    """
    kind = data.get("kind")
    fields = {k: v for k, v in data.items() if k != "kind"}
    if kind == "http":
        return HttpEnvSpec(**fields)
    if kind == "gym":
        return GymEnvSpec(fields["env_id"], imports=tuple(fields.get("imports", ())), **fields.get("kwargs", {}))
    raise SpecError(f"kind: unknown env spec kind {kind!r}")


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
        kill_grace: seconds between SIGTERM and SIGKILL when stopping a worker.
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
    """

    step_timeout: float | None = None
    start_timeout: float = 60.0
    restart_backoff: float = 0.5
    restart_backoff_cap: float = 30.0
    flap_limit: int = 5
    flap_window: float = 60.0
    kill_grace: float = 1.0
    on_env_error: OnEnvError = "truncate"
    env_failure_limit: int = 5

    def __post_init__(self) -> None:
        _require(self.step_timeout is None or self.step_timeout > 0, "step_timeout", "must be > 0")
        _require(self.start_timeout > 0, "start_timeout", "must be > 0")
        _require(self.restart_backoff >= 0, "restart_backoff", "must be >= 0")
        _require(self.restart_backoff_cap >= self.restart_backoff, "restart_backoff_cap", "must be >= backoff")
        _require(self.flap_limit >= 1, "flap_limit", "must be >= 1")
        _require(self.flap_window > 0, "flap_window", "must be > 0")
        _require(self.kill_grace >= 0, "kill_grace", "must be >= 0")
        _require(
            self.on_env_error in ("truncate", "raise"),
            "on_env_error",
            f"must be 'truncate' or 'raise', got {self.on_env_error!r}",
        )
        _require(
            isinstance(self.env_failure_limit, int) and self.env_failure_limit >= 1,
            "env_failure_limit",
            f"must be an int >= 1, got {self.env_failure_limit!r}",
        )

    def effective_step_timeout(self, spec: EnvSpec) -> float:
        """The step timeout to use for ``spec``."""
        if self.step_timeout is not None:
            return self.step_timeout
        bound = spec.worst_case_step_seconds()
        return 60.0 if math.isinf(bound) else bound + STEP_TIMEOUT_MARGIN
