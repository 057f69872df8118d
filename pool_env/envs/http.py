"""The HTTP env kind: DegradationEnv episodes on a challenge-compatible server.

Everything the pool knows about this kind is here: the spec and its validation, the spaces, the
default worker count, the start-up check of the server, and which worker backend runs it
(:class:`workers.backends.http.HttpBackend`). The DegradationEnv's own facts (9 fields, actions)
are in :mod:`pool_env.envs.degradation`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pool_env.envs.base import Probe, require
from pool_env.envs.degradation import NUM_ACTIONS, OBS_FIELDS
from pool_env.errors import HttpStatusError, SpecError, TransportError

if TYPE_CHECKING:
    from workers.backends.base import Backend

__all__ = ["RETRY_DELAY_CAP", "HttpEnvSpec", "ObservationMode"]

ObservationMode = Literal["last", "chunk"]

RETRY_DELAY_CAP = 5.0
"""The longest back-off delay between two attempts of one HTTP request, in seconds."""


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
        max_server_steps: optional budget of server step calls (episode-steps, what the live
            server counts against its 100,000 per token) for this pool: a step that would pass it
            raises :class:`~pool_env.errors.QuotaExceededError` in the trainer and sends nothing,
            so the pool stops cleanly before the server refuses (reset and close still work).
            ``None``: no budget (the server's 429 still raises that error).

    Raises:
        SpecError: a field is out of range (the message names it).
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
    max_server_steps: int | None = None

    kind: ClassVar[str] = "http"
    carries_code: ClassVar[bool] = False

    def __post_init__(self) -> None:
        require(
            isinstance(self.server_url, str) and self.server_url.startswith(("http://", "https://")),
            "server_url",
            f"must start with http:// or https://, got {self.server_url!r}",
        )
        object.__setattr__(self, "server_url", self.server_url.rstrip("/"))
        require(isinstance(self.user_token, str) and bool(self.user_token), "user_token", "must be non-empty")
        require(isinstance(self.step_size, int) and 1 <= self.step_size <= 50, "step_size", "must be 1..50")
        require(self.max_steps_per_episode >= 1, "max_steps_per_episode", "must be >= 1")
        require(self.request_timeout > 0, "request_timeout", "must be > 0")
        require(self.observation in ("last", "chunk"), "observation", "must be 'last' or 'chunk'")
        require(self.max_retries >= 0, "max_retries", "must be >= 0")
        require(self.retry_backoff >= 0, "retry_backoff", "must be >= 0")
        require(
            self.call_timeout is None
            or (isinstance(self.call_timeout, int | float) and 0 < self.call_timeout < math.inf),
            "call_timeout",
            f"must be > 0 and finite (or None), got {self.call_timeout!r}",
        )
        budget = self.max_server_steps
        require(
            budget is None or (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 0),
            "max_server_steps",
            f"must be an int >= 0 (or None), got {budget!r}",
        )

    # -- wire -------------------------------------------------------------------------------

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> HttpEnvSpec:
        """Rebuild the spec from :meth:`to_wire` output.

        Raises:
            SpecError: unknown or bad fields.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise SpecError(f"http spec: unknown fields {unknown}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise SpecError(f"http spec: {exc}") from exc

    def to_wire(self, slots: Sequence[int] | None = None) -> dict[str, Any]:
        """A msgpack-able dict that :func:`pool_env.envs.spec_from_wire` turns back into this spec."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def label(self) -> str:
        """The server URL (the token stays out of logs and status documents)."""
        return self.server_url

    # -- time bounds ------------------------------------------------------------------------

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

    # -- the pool's questions ---------------------------------------------------------------

    def default_num_workers(self, num_envs: int, trainer_slots: int = 0) -> int:
        """Workers mostly wait on the network: up to 4 per core, with at least 4 slots each
        (``trainer_slots`` changes nothing: a trainer waiting on the network leaves its core free)."""
        cores = os.cpu_count() or 1
        return max(1, min(num_envs, 4 * cores, -(-num_envs // 4)))

    def check(self) -> None:
        """Fail fast, before any worker starts, when the env server cannot be reached.

        Raises:
            TransportError: the server does not answer.
            HttpStatusError: it answers 4xx (e.g. the token is refused).
        """
        import requests  # here, not at the top: only the trainer checks the server

        url = f"{self.server_url}/api/v1/version"
        try:
            response = requests.get(url, headers={"User-Token": self.user_token}, timeout=self.request_timeout)
        except requests.RequestException as exc:
            raise TransportError(f"cannot reach the env server at {self.server_url}: {exc}") from exc
        if 400 <= response.status_code < 500:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise HttpStatusError(response.status_code, detail, url)

    def probe(self) -> Probe:
        """The spaces of one slot, known without asking the server.

        ``observation="last"``: ``Box(-inf, inf, (9,), float32)``, the last flight of each step.
        ``observation="chunk"``: ``Box(-inf, inf, (step_size, 9), float32)``, padded with zeros.
        The action space is ``Discrete(3)`` (:class:`pool_env.envs.degradation.Action`).
        """
        import numpy as np
        from gymnasium import spaces

        shape = (OBS_FIELDS,) if self.observation == "last" else (self.step_size, OBS_FIELDS)
        return Probe(spaces.Box(-np.inf, np.inf, shape, np.float32), spaces.Discrete(NUM_ACTIONS), {}, None)

    def make_backend(self, slots: Sequence[int]) -> Backend:
        """One HTTP session for the worker's slots (no gymnasium in the worker)."""
        from workers.backends.http import HttpBackend

        return HttpBackend(self, len(slots))
