"""Records of the reference server's state: episodes, slots, token totals, step outcomes and errors.

No web imports: the app turns :class:`ApiError` into ``{"detail": ...}`` answers. The limits on kept
ids and records are explained in :mod:`pool_env.refserver.state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pool_env.refserver.sim import DegradationEnv

__all__ = [
    "ALIASES_KEPT",
    "COMPLETED_KEPT",
    "EVICTED_REMEMBERED",
    "MAX_ID_CHARS",
    "MAX_STEP_SIZE",
    "NONE_TYPE_ERROR",
    "RETIRED_KEPT",
    "ApiError",
    "Episode",
    "EpisodeSettings",
    "Slot",
    "StepOutcome",
    "TokenTotals",
    "ended_outcome",
    "error_outcome",
    "short",
]

MAX_STEP_SIZE = 50
MAX_ID_CHARS = 100  # longer ids are never minted here; details quote at most this much of one
ALIASES_KEPT = 64
RETIRED_KEPT = 16
COMPLETED_KEPT = 1000
EVICTED_REMEMBERED = 65_536
NONE_TYPE_ERROR = "'NoneType' object has no attribute 'astype'"


def short(value: object, limit: int = MAX_ID_CHARS) -> str:
    """``value`` as text for an error detail: at most ``limit`` characters, always valid UTF-8."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ApiError(Exception):
    """An error answer: HTTP ``status_code`` with body ``{"detail": detail}``.

    Build details with :func:`short` for anything taken from the request, so that no answer echoes
    megabytes of input or a lone surrogate (which cannot be encoded as UTF-8).
    """

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True)
class EpisodeSettings:
    """The ``env_config`` of a create call (unknown fields such as ``auto_reset`` are ignored)."""

    step_size: int = 10
    max_steps_per_episode: int = 1000


@dataclass
class Slot:
    """A stable place for successive episodes; all ``ids`` resolve to ``current``."""

    slot_id: str
    group_id: str | None
    ids: list[str]
    current: Episode
    token: str = ""
    last_used: float = 0.0


@dataclass
class Episode:
    """One episode record (live or retired) and its step accounting."""

    episode_id: str
    session_id: str
    token: str
    settings: EpisodeSettings
    env: DegradationEnv
    created_at: float
    slot: Slot | None = None
    steps_applied: int = 0
    broken: bool = False
    error: str | None = None
    retired: bool = False
    scored: bool = False

    @property
    def ended(self) -> bool:
        """True when stepping answers the ended-episode payload (finished or broken)."""
        return self.broken or self.env.done


@dataclass(frozen=True)
class StepOutcome:
    """What one step entry answers; the app formats it for the single or vectorized endpoint."""

    observation: list[Any]
    reward: float
    terminated: bool
    truncated: bool
    step: int
    info: dict[str, Any]
    reason: str | None = None
    error: str | None = None


@dataclass
class TokenTotals:
    """Per-token counters shown by ``/control/episodes`` and ``/control/stats``."""

    steps_used: int = 0  # quota: every step entry, applied or not
    steps_applied: int = 0
    steps_on_ended: int = 0
    episode_errors: int = 0
    episodes_created: int = 0
    resets: int = 0
    live_slots: int = 0
    completed: list[dict[str, Any]] = field(default_factory=list)


def ended_outcome(episode: Episode) -> StepOutcome:
    """Stepping a finished or broken episode: reward 0, terminated, ``[]`` observation, no auto-reset."""
    env = episode.env
    info: dict[str, Any] = {
        "episode_id": episode.episode_id,
        "step": env.step,
        "terminated": True,
        "truncated": env.truncated,
        "total_reward": env.total_reward,
        "message": "episode has ended; reset it",
    }
    if episode.error:
        info["error"] = episode.error
    reason = "error" if episode.broken else env.reason
    return StepOutcome([], 0.0, True, env.truncated, env.step, info, reason, episode.error)


def error_outcome(episode: Episode) -> StepOutcome:
    """The live server's per-env error payload (its info carries no true ``terminated``)."""
    step = episode.env.step
    info = {
        "episode_id": episode.episode_id,
        "step": step,
        "terminated": False,
        "truncated": False,
        "error": NONE_TYPE_ERROR,
    }
    return StepOutcome([], 0.0, True, False, step, info, "error", NONE_TYPE_ERROR)
