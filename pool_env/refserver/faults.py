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


@dataclass(frozen=True)
class FaultConfig:
    """Server switches, settable by CLI flags (``--p-http-500`` …) and ``POST /control/faults``.

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
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be in [0, 1], got {value!r}")
        for name in ("latency_ms", "per_env_ms", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaultConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_steps_quota < 0:
            raise ValueError(f"FaultConfig.max_steps_quota must be >= 0, got {self.max_steps_quota!r}")
        if self.max_num_envs < 1:
            raise ValueError(f"FaultConfig.max_num_envs must be >= 1, got {self.max_num_envs!r}")

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


def fault_config_from_options(**options: Any) -> FaultConfig:
    """Build a :class:`FaultConfig` from CLI options named like its fields; None values keep defaults.

    ``host``, ``port`` and ``exit_with_parent`` are ignored, so a click/argparse namespace can be passed
    whole. Raises ``ValueError`` on unknown names or invalid values.
    """
    ignored = {"host", "port", "exit_with_parent"}
    return FaultConfig().replace(**{k: v for k, v in options.items() if v is not None and k not in ignored})


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
            raise ValueError(f"fail_next.kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if self.count < 1:
            raise ValueError(f"fail_next.count must be >= 1, got {self.count!r}")

    def matches(self, kinds: tuple[str, ...], path: str) -> bool:
        """Whether this trigger applies to a request on ``path`` for one of ``kinds``."""
        return self.kind in kinds and (self.path is None or self.path in path)


class FaultInjector:
    """Holds the current :class:`FaultConfig`, pending triggers and counters; makes the decisions.

    Not thread-safe by itself: the server calls it from its event loop only.
    """

    config: FaultConfig
    pending: list[FailNext]
    injected: Counter[str]

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self.pending = []
        self.injected = Counter()
        self._rng = random.Random(self.config.fault_seed)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a ``POST /control/faults`` body: field changes, ``fail_next`` and ``clear_pending``.

        Raises:
            ValueError: On unknown fields or invalid values; nothing is changed then.
        """
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
        if "fault_seed" in changes:
            self._rng = random.Random(config.fault_seed)
        self.config = config
        if clear:
            self.pending.clear()
        self.pending.extend(triggers)

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
