"""Fault injection for the reference server: configuration, one-shot triggers and the decisions.

Faults apply only to episode endpoints (paths under ``/api/v1/episode`` and ``/api/v1/vectorized``),
never to version, session, score or ``/control``. Per request, in this order:

* ``500`` / ``503`` — the whole request answers that status with ``{"detail": ...}`` **before anything
  is applied** (after ``latency_ms``).
* otherwise the request is applied, then the server sleeps ``latency_ms + per_env_ms * entries``;
* ``hang`` — after applying, sleep ``hang_s`` more before answering (the step *was* applied);
* ``drop`` — after applying, the TCP connection is reset without an HTTP response (the step *was*
  applied);
* ``episode_error`` — per entry of a step request (single or vectorized): that entry is *not* applied,
  answers the live server's error payload and the episode is broken (ended) until it is reset.

One-shot triggers (:class:`FailNext`) are consumed first, in the order they were added; then the
probabilities are drawn from a ``random.Random(fault_seed)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "REQUEST_FAULT_KINDS",
    "FailNext",
    "FaultConfig",
    "FaultInjector",
    "fault_config_from_options",
]

REQUEST_FAULT_KINDS = ("500", "503", "hang", "drop")
FAULT_KINDS = (*REQUEST_FAULT_KINDS, "episode_error")
_PROBABILITIES = ("p_episode_error", "p_http_500", "p_http_503", "p_hang", "p_drop")
# Upper bounds of the non-probability switches (documented in FaultConfig and --help).
BOUNDS: dict[str, float] = {
    "latency_ms": 60_000.0,
    "per_env_ms": 10_000.0,
    "hang_s": 3_600.0,
    "fault_seed": 2**63 - 1,
    "max_steps_quota": 10**12,
    "max_num_envs": 1_000_000,
}
MAX_PENDING = 1000
MAX_TRIGGER_COUNT = 1_000_000


@dataclass(frozen=True)
class FaultConfig:
    """Server switches, settable by CLI flags (``--p-http-500`` …) and ``POST /control/faults``.

    Every value must be a finite number within its bounds (probabilities in [0, 1]; ``latency_ms``
    ≤ 60000, ``per_env_ms`` ≤ 10000, ``hang_s`` ≤ 3600, ``max_steps_quota`` ≤ 10**12; integers where
    the type says so); ``max_num_envs`` is further capped by the server's start-up
    ``ServerLimits.num_envs_limit``.

    Attributes:
        p_episode_error: Probability, per entry of a step request, of the live server's per-env error.
        p_http_500: Probability that a request answers 500 (nothing applied).
        p_http_503: Probability that a request answers 503 (nothing applied).
        latency_ms: Delay added to every faultable request.
        per_env_ms: Delay added per entry of a vectorized request (models server cost).
        p_hang: Probability that a request sleeps ``hang_s`` after being applied.
        hang_s: Length of a hang in seconds (longer than the client's timeout).
        p_drop: Probability that the connection is reset after the request was applied.
        fault_seed: Seed of the fault RNG; None means fresh entropy.
        max_steps_quota: Episode-steps allowed per user token before step endpoints answer 429.
        max_num_envs: Largest ``num_envs`` accepted by the vectorized create endpoint.
    """

    p_episode_error: float = 0.0
    p_http_500: float = 0.0
    p_http_503: float = 0.0
    latency_ms: float = 0.0
    per_env_ms: float = 0.0
    p_hang: float = 0.0
    hang_s: float = 40.0
    p_drop: float = 0.0
    fault_seed: int | None = None
    max_steps_quota: int = 100_000
    max_num_envs: int = 64

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            _check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("latency_ms", "per_env_ms", "hang_s"):
            _check_number(name, getattr(self, name), 0.0, BOUNDS[name])
        if self.fault_seed is not None:
            _check_number("fault_seed", self.fault_seed, 0, BOUNDS["fault_seed"], integer=True)
        _check_number("max_steps_quota", self.max_steps_quota, 0, BOUNDS["max_steps_quota"], integer=True)
        _check_number("max_num_envs", self.max_num_envs, 1, BOUNDS["max_num_envs"], integer=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by ``/control/faults``."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FaultConfig:
        """Return a copy with ``changes`` applied.

        Raises:
            ValueError: On an unknown field or an invalid value.
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def _check_number(name: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number (an int if ``integer``) in [low, high]."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"FaultConfig.{name} must be {'an integer' if integer else 'a number'}, got {value!r:.40}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"FaultConfig.{name} must be in [{low:g}, {high:g}], got {value!r:.40}")


def fault_config_from_options(**options: Any) -> FaultConfig:
    """Build a :class:`FaultConfig` from CLI options named like its fields; None values keep defaults.

    Other names (``host``, ``port``, the :class:`~pool_env.refserver.limits.ServerLimits` flags …) are
    ignored, so a whole argparse namespace can be passed. Raises ``ValueError`` on invalid values.
    """
    names = {f.name for f in dataclasses.fields(FaultConfig)}
    return FaultConfig().replace(**{k: v for k, v in options.items() if v is not None and k in names})


@dataclass
class FailNext:
    """A one-shot trigger: the next ``count`` matching requests (or step entries) get ``kind``.

    Attributes:
        kind: One of ``"500"``, ``"503"``, ``"hang"``, ``"drop"``, ``"episode_error"``.
        count: Requests left to hit (for ``episode_error``: step entries, taken in request order).
        path: Only requests whose path contains this substring match (None = any faultable path).
    """

    kind: str
    count: int = 1
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fail_next.kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r:.40}")
        count = self.count
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TRIGGER_COUNT:
            raise ValueError(f"fail_next.count must be an integer in [1, {MAX_TRIGGER_COUNT}], got {count!r:.40}")
        if self.path is not None and (not isinstance(self.path, str) or len(self.path) > 200):
            raise ValueError("fail_next.path must be a string of at most 200 characters, or null")

    def matches(self, kinds: tuple[str, ...], path: str) -> bool:
        """Whether this trigger applies to a request on ``path`` for one of ``kinds``."""
        return self.kind in kinds and (self.path is None or self.path in path)


class FaultInjector:
    """Holds the current :class:`FaultConfig`, pending triggers and counters; makes the decisions.

    Not thread-safe by itself: the server calls it from its event loop only.
    """

    config: FaultConfig
    num_envs_limit: int | None
    pending: list[FailNext]
    injected: Counter[str]

    def __init__(self, config: FaultConfig | None = None, num_envs_limit: int | None = None) -> None:
        self.num_envs_limit = num_envs_limit
        self.config = config or FaultConfig()
        self._check_limit(self.config)
        self.pending = []
        self.injected = Counter()
        self._rng = random.Random(self.config.fault_seed)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a ``POST /control/faults`` body: field changes, ``fail_next`` and ``clear_pending``.

        Raises:
            ValueError: On unknown fields or invalid values (see :class:`FaultConfig`), a ``max_num_envs``
                above the start-up ``num_envs_limit`` or more than ``MAX_PENDING`` pending triggers;
                nothing is changed then.
        """
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object of fault settings")
        changes = dict(changes)
        fail_next = changes.pop("fail_next", None)
        clear = bool(changes.pop("clear_pending", False))
        if fail_next is None:
            triggers: list[FailNext] = []
        else:
            items = fail_next if isinstance(fail_next, list) else [fail_next]
            if not all(isinstance(item, dict) for item in items):
                raise ValueError("fail_next must be an object or a list of objects")
            try:
                triggers = [FailNext(**item) for item in items]
            except TypeError as exc:
                raise ValueError(f"bad fail_next: {exc}") from exc
        config = self.config.replace(**changes)
        self._check_limit(config)
        if len(self.pending) * (not clear) + len(triggers) > MAX_PENDING:
            raise ValueError(f"at most {MAX_PENDING} fail_next triggers may be pending")
        if "fault_seed" in changes:
            self._rng = random.Random(config.fault_seed)
        self.config = config
        if clear:
            self.pending.clear()
        self.pending.extend(triggers)

    def _check_limit(self, config: FaultConfig) -> None:
        limit = self.num_envs_limit
        if limit is not None and config.max_num_envs > limit:
            raise ValueError(
                f"max_num_envs {config.max_num_envs} is above this server's limit {limit} "
                "(start-up flag --num-envs-limit)"
            )

    def snapshot(self) -> dict[str, Any]:
        """The JSON answer of ``/control/faults``."""
        return {
            "faults": self.config.to_dict(),
            "pending": [dataclasses.asdict(t) for t in self.pending],
            "injected": dict(self.injected),
        }

    def _take(self, kinds: tuple[str, ...], path: str) -> str | None:
        for trigger in self.pending:
            if trigger.matches(kinds, path):
                trigger.count -= 1
                if trigger.count == 0:
                    self.pending.remove(trigger)
                return trigger.kind
        return None

    def _draw(self, p: float) -> bool:
        return p > 0.0 and self._rng.random() < p

    def request_fault(self, path: str) -> str | None:
        """Decide the whole-request fault for a faultable request: a kind of REQUEST_FAULT_KINDS or None."""
        kind = self._take(REQUEST_FAULT_KINDS, path)
        if kind is None:
            c = self.config
            for name, p in (
                ("500", c.p_http_500),
                ("503", c.p_http_503),
                ("hang", c.p_hang),
                ("drop", c.p_drop),
            ):
                if self._draw(p):
                    kind = name
                    break
        if kind is not None:
            self.injected[kind] += 1
        return kind

    def episode_error(self, path: str) -> bool:
        """Decide whether one entry of a step request answers the per-env error payload."""
        hit = self._take(("episode_error",), path) is not None or self._draw(self.config.p_episode_error)
        if hit:
            self.injected["episode_error"] += 1
        return hit

    def delay_s(self, entries: int) -> float:
        """Seconds of latency for a request with ``entries`` envs."""
        return (self.config.latency_ms + self.config.per_env_ms * entries) / 1000.0
