"""In-memory server state: sessions, episodes, vectorized groups, id aliases, quota and step accounting.

No web imports: the app turns :class:`ApiError` into ``{"detail": ...}`` answers.

Id rules (PROTOCOL.md §7): a *slot* is the stable place an episode lives in (one per single create,
``num_envs`` per group). A reset of an episode that has at least one step retires it (kept for the
score and the accounting) and starts a new record with a new id in the same slot; every id the slot
ever had stays an alias of the slot's live episode. A finished episode is added to its token's score
once, when it ends.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pool_env.refserver.sim import DegradationEnv

__all__ = [
    "MAX_STEP_SIZE",
    "NONE_TYPE_ERROR",
    "ApiError",
    "Episode",
    "EpisodeSettings",
    "ServerState",
    "Slot",
    "StepOutcome",
    "TokenTotals",
]

MAX_STEP_SIZE = 50
NONE_TYPE_ERROR = "'NoneType' object has no attribute 'astype'"


class ApiError(Exception):
    """An error answer: HTTP ``status_code`` with body ``{"detail": detail}``."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


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
    completed: list[dict[str, Any]] = field(default_factory=list)


class ServerState:
    """All mutable server state behind one lock (safe from the event loop and from threads)."""

    def __init__(self, quota: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.quota = quota
        self.clock = clock
        self.lock = threading.RLock()
        self.sessions: dict[str, str] = {}  # session_id -> token
        self.episodes: dict[str, Episode] = {}  # every id ever minted -> its own record
        self.slots: dict[str, Slot] = {}  # every id ever minted -> its slot
        self.tokens: dict[str, TokenTotals] = {}

    # --- sessions and creation -------------------------------------------------------------------

    def totals(self, token: str) -> TokenTotals:
        """The counters of ``token`` (created on first use)."""
        return self.tokens.setdefault(token, TokenTotals())

    def create_session(self, token: str) -> str:
        """Open a session for ``token`` and return its id."""
        with self.lock:
            session_id = str(uuid.uuid4())
            self.sessions[session_id] = token
            self.totals(token)
            return session_id

    def check_session(self, session_id: str | None) -> str:
        """Return ``session_id`` if known. Raises ApiError 400 (missing) or 404 (unknown)."""
        if not session_id:
            raise ApiError(400, "Session-ID header is required")
        if session_id not in self.sessions:
            raise ApiError(404, f"Session {session_id} not found")
        return session_id

    def create_episodes(
        self, token: str, session_id: str | None, settings: EpisodeSettings, num_envs: int, group: bool
    ) -> tuple[str | None, list[Episode]]:
        """Create ``num_envs`` slots with fresh episodes; return the group id (if ``group``) and them."""
        with self.lock:
            session_id = self.check_session(session_id)
            group_id = str(uuid.uuid4()) if group else None
            created = []
            for _ in range(num_envs):
                episode = self._new_episode(token, session_id, settings)
                slot = Slot(str(uuid.uuid4()), group_id, [episode.episode_id], episode)
                episode.slot = slot
                self.slots[episode.episode_id] = slot
                created.append(episode)
            self.totals(token).episodes_created += num_envs
            return group_id, created

    def _new_episode(self, token: str, session_id: str, settings: EpisodeSettings) -> Episode:
        env = DegradationEnv(max_steps=settings.max_steps_per_episode)
        episode = Episode(str(uuid.uuid4()), session_id, token, settings, env, self.clock())
        self.episodes[episode.episode_id] = episode
        return episode

    # --- lookup, reset, step -----------------------------------------------------------------------

    def resolve(self, episode_id: str) -> Episode:
        """The live episode for ``episode_id`` or any of its aliases. Raises ApiError 404."""
        slot = self.slots.get(episode_id)
        if slot is None:
            raise ApiError(404, f"Episode {episode_id} not found")
        return slot.current

    def reset(self, token: str, episode_id: str, seed: int | None) -> tuple[Episode, bool]:
        """Reset the slot of ``episode_id``; return the live episode and whether its id is new.

        An episode with at least one step is retired and replaced by a new record (new id); an
        episode without steps is reset in place. Raises ApiError 404 for unknown ids.
        """
        with self.lock:
            episode = self.resolve(episode_id)
            self.totals(token).resets += 1
            slot = episode.slot
            assert slot is not None
            if episode.env.step > 0 or episode.steps_applied > 0:
                episode.retired = True
                fresh = self._new_episode(episode.token, episode.session_id, episode.settings)
                fresh.slot = slot
                slot.current = fresh
                slot.ids.append(fresh.episode_id)
                self.slots[fresh.episode_id] = slot
                fresh.env.reset(seed)
                return fresh, True
            episode.broken = False
            episode.error = None
            episode.env.reset(seed)
            return episode, False

    def check_quota(self, token: str, entries: int) -> None:
        """Count ``entries`` episode-steps against the quota. Raises ApiError 429 (nothing counted)."""
        with self.lock:
            totals = self.totals(token)
            if totals.steps_used + entries > self.quota:
                raise ApiError(429, f"step limit of {self.quota} reached")
            totals.steps_used += entries

    def step(
        self,
        token: str,
        episode_id: str,
        action: int,
        step_size: int,
        return_all_states: bool,
        inject_error: bool = False,
    ) -> StepOutcome:
        """Apply one step entry (quota already counted). Raises ApiError 404 for unknown ids."""
        with self.lock:
            episode = self.resolve(episode_id)
            totals = self.totals(token)
            if episode.ended:
                totals.steps_on_ended += 1
                return _ended_outcome(episode)
            if inject_error:
                totals.episode_errors += 1
                episode.broken = True
                episode.error = NONE_TYPE_ERROR
                return _error_outcome(episode)
            env = episode.env
            result = env.step_chunk(action, min(step_size, MAX_STEP_SIZE))
            episode.steps_applied += 1
            totals.steps_applied += 1
            if env.done:
                self._score(episode)
            obs = result.observations.tolist() if return_all_states else result.observations[-1].tolist()
            info = {
                "episode_id": episode.episode_id,
                "step": env.step,
                "terminated": result.terminated,
                "truncated": result.truncated,
                "total_reward": env.total_reward,
                "degradation": env.degradation,
                "max_degradation": 1.0,
            }
            if result.reason:
                info["reason"] = result.reason
            return StepOutcome(obs, result.reward, result.terminated, result.truncated, env.step, info, result.reason)

    def _score(self, episode: Episode) -> None:
        if episode.scored:
            return
        episode.scored = True
        env = episode.env
        self.totals(episode.token).completed.append(
            {
                "episode_id": episode.episode_id,
                "total_reward": env.total_reward,
                "steps": env.step,
                "num_repairs": env.num_repairs,
                "failure": env.reason == "failure",
                "ended_at": self.clock(),
            }
        )

    # --- read-only views -----------------------------------------------------------------------------

    def episode_info(self, episode_id: str) -> dict[str, Any]:
        """``GET /episode/{id}``: the reference schema of PROTOCOL.md §4.4."""
        with self.lock:
            ep = self.resolve(episode_id)
            env = ep.env
            status = (
                "error" if ep.broken else "terminated" if env.terminated else "truncated" if env.truncated else "active"
            )
            return {
                "episode_id": ep.episode_id,
                "session_id": ep.session_id,
                "status": status,
                "step": env.step,
                "total_reward": env.total_reward,
                "terminated": env.terminated or ep.broken,
                "truncated": env.truncated,
                "num_repairs": env.num_repairs,
                "step_size": ep.settings.step_size,
                "created_at": ep.created_at,
                "steps_applied": ep.steps_applied,
            }

    def latest_state(self, episode_id: str) -> dict[str, Any]:
        """``GET /episode/{id}/state/latest`` plus the canonical id and the applied-step count."""
        with self.lock:
            ep = self.resolve(episode_id)
            return {
                "observation": list(ep.env.last_observation),
                "step": ep.env.step,
                "terminated": ep.env.terminated or ep.broken,
                "truncated": ep.env.truncated,
                "episode_id": ep.episode_id,
                "steps_applied": ep.steps_applied,
            }


def _ended_outcome(episode: Episode) -> StepOutcome:
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


def _error_outcome(episode: Episode) -> StepOutcome:
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
