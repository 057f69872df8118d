"""In-memory server state: sessions, episodes, vectorized groups, id aliases, quota and step accounting.

No web imports: the app turns :class:`ApiError` into ``{"detail": ...}`` answers.

Id rules (PROTOCOL.md §7): a *slot* is the stable place an episode lives in (one per single create,
``num_envs`` per group). A reset of an episode that has at least one step retires it (kept for the
score and the accounting) and starts a new record with a new id in the same slot; every id the slot
ever had stays an alias of the slot's live episode. A finished episode is added to its token's score
once, when it ends.

Memory bounds (issue 15, a server that runs for days): a slot unused for ``idle_timeout_s`` is evicted
with all its ids and records (its id then answers 404 saying it was evicted, for the last
``EVICTED_REMEMBERED`` evicted ids); a session unused that long is forgotten; one token holds at most
``max_live_episodes`` live slots; a slot keeps its first id (what a v0.3 client uses), its last
``ALIASES_KEPT`` ids and its last ``RETIRED_KEPT`` retired records; a token keeps its last
``COMPLETED_KEPT`` finished episodes for the score. Evictions run on the monotonic clock inside the calls
that take the lock, popping only expired entries from the front of use-ordered dicts (O(evicted)).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pool_env.refserver.records import (
    ALIASES_KEPT,
    COMPLETED_KEPT,
    EVICTED_REMEMBERED,
    MAX_STEP_SIZE,
    NONE_TYPE_ERROR,
    RETIRED_KEPT,
    ApiError,
    Episode,
    EpisodeSettings,
    Slot,
    StepOutcome,
    TokenTotals,
    ended_outcome,
    error_outcome,
    short,
)
from pool_env.refserver.sim import DegradationEnv

__all__ = ["STEPS_LIMIT_HEADER", "STEPS_USED_HEADER", "ServerState"]

STEPS_USED_HEADER = "X-Steps-Used"
STEPS_LIMIT_HEADER = "X-Steps-Limit"


class ServerState:
    """All mutable server state behind one lock (safe from the event loop and from threads)."""

    quota: int
    clock: Callable[[], float]
    idle_clock: Callable[[], float]
    idle_timeout_s: float
    max_live_episodes: int
    lock: threading.RLock
    sessions: OrderedDict[str, tuple[str, float]]
    episodes: dict[str, Episode]
    slots: dict[str, Slot]
    live: OrderedDict[str, Slot]
    evicted: OrderedDict[str, None]
    tokens: dict[str, TokenTotals]
    evictions: int

    def __init__(
        self,
        quota: int = 100_000,
        clock: Callable[[], float] = time.time,
        *,
        idle_timeout_s: float = 3600.0,
        max_live_episodes: int = 4096,
        idle_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quota = quota
        self.clock = clock
        self.idle_clock = idle_clock
        self.idle_timeout_s = idle_timeout_s
        self.max_live_episodes = max_live_episodes
        self.lock = threading.RLock()
        self.sessions = OrderedDict()  # id -> (token, last use)
        self.episodes = {}  # every kept id -> its own record
        self.slots = {}  # every kept id -> its slot
        self.live = OrderedDict()  # slot_id -> slot, least recently used first
        self.evicted = OrderedDict()  # the last EVICTED_REMEMBERED evicted ids
        self.tokens = {}
        self.evictions = 0

    # --- sessions and creation -------------------------------------------------------------------

    def totals(self, token: str) -> TokenTotals:
        """The counters of ``token`` (created on first use)."""
        return self.tokens.setdefault(token, TokenTotals())

    def create_session(self, token: str) -> str:
        """Open a session for ``token`` and return its id."""
        with self.lock:
            now = self.sweep()
            session_id = str(uuid.uuid4())
            self.sessions[session_id] = (token, now)
            return session_id

    def check_session(self, session_id: str | None) -> str:
        """Return ``session_id`` if known (and mark it used). Raises ApiError 400 (missing) or 404 (unknown)."""
        if not session_id:
            raise ApiError(400, "Session-ID header is required")
        with self.lock:
            now = self.sweep()
            known = self.sessions.get(session_id)
            if known is None:
                raise ApiError(
                    404,
                    f"Session {short(session_id)} not found (sessions unused for {self.idle_timeout_s:g} s are "
                    "evicted; create a new one)",
                )
            self.sessions[session_id] = (known[0], now)
            self.sessions.move_to_end(session_id)
            return session_id

    def check_capacity(self, token: str, num_envs: int) -> None:
        """Raise ApiError 409 if ``token`` cannot hold ``num_envs`` more live slots."""
        with self.lock:
            self.sweep()
            totals = self.tokens.get(token)
            live = totals.live_slots if totals else 0
            if live + num_envs > self.max_live_episodes:
                raise ApiError(
                    409,
                    f"token holds {live} live episodes; {num_envs} more would pass this server's limit of "
                    f"{self.max_live_episodes} (reuse episodes with reset; unused ones are evicted after "
                    f"{self.idle_timeout_s:g} s)",
                )

    def create_episodes(
        self, token: str, session_id: str | None, settings: EpisodeSettings, num_envs: int, group: bool
    ) -> tuple[str | None, list[Episode]]:
        """Create ``num_envs`` slots with fresh episodes; return the group id (if ``group``) and them.

        Raises:
            ApiError: 400/404 for a missing or unknown session, 409 past ``max_live_episodes`` (nothing
                created then).
        """
        with self.lock:
            session_id = self.check_session(session_id)
            self.check_capacity(token, num_envs)
            now = self.idle_clock()
            group_id = str(uuid.uuid4()) if group else None
            created = []
            for _ in range(num_envs):
                episode = self._new_episode(token, session_id, settings)
                slot = Slot(str(uuid.uuid4()), group_id, [episode.episode_id], episode, token, now)
                episode.slot = slot
                self.slots[episode.episode_id] = slot
                self.live[slot.slot_id] = slot
                created.append(episode)
            totals = self.totals(token)
            totals.episodes_created += num_envs
            totals.live_slots += num_envs
            return group_id, created

    def _new_episode(self, token: str, session_id: str, settings: EpisodeSettings) -> Episode:
        env = DegradationEnv(max_steps=settings.max_steps_per_episode)
        episode = Episode(str(uuid.uuid4()), session_id, token, settings, env, self.clock())
        self.episodes[episode.episode_id] = episode
        return episode

    # --- lookup, reset, step -----------------------------------------------------------------------

    def resolve(self, episode_id: str) -> Episode:
        """The live episode for ``episode_id`` or any of its aliases (marks its slot used).

        Raises:
            ApiError: 404, saying whether the id was evicted for being unused or is unknown.
        """
        with self.lock:
            now = self.sweep()
            slot = self.slots.get(episode_id)
            if slot is None:
                if episode_id in self.evicted:
                    raise ApiError(
                        404,
                        f"Episode {short(episode_id)} was evicted: unused for more than {self.idle_timeout_s:g} s "
                        "(or an old alias of a slot reset many times); create a new episode",
                    )
                raise ApiError(404, f"Episode {short(episode_id)} not found")
            slot.last_used = now
            self.live.move_to_end(slot.slot_id)
            return slot.current

    # --- eviction --------------------------------------------------------------------------------------

    def sweep(self) -> float:
        """Evict slots and sessions unused for ``idle_timeout_s``; return the idle clock's now."""
        with self.lock:
            now = self.idle_clock()
            horizon = now - self.idle_timeout_s
            while self.live:
                slot = next(iter(self.live.values()))
                if slot.last_used > horizon:
                    break
                self._evict_slot(slot)
            while self.sessions:
                session_id, (_, used) = next(iter(self.sessions.items()))
                if used > horizon:
                    break
                del self.sessions[session_id]
            return now

    def _evict_slot(self, slot: Slot) -> None:
        del self.live[slot.slot_id]
        self.evictions += 1
        for episode_id in slot.ids:
            self._forget(episode_id)
        totals = self.tokens.get(slot.token)
        if totals is not None:
            totals.live_slots -= 1
            if totals.live_slots == 0 and totals.steps_used == 0 and not totals.completed:
                del self.tokens[slot.token]  # nothing left worth keeping (a used quota is kept)

    def _forget(self, episode_id: str) -> None:
        self.slots.pop(episode_id, None)
        self.episodes.pop(episode_id, None)
        self.evicted[episode_id] = None
        if len(self.evicted) > EVICTED_REMEMBERED:
            self.evicted.popitem(last=False)

    def _prune_slot(self, slot: Slot) -> None:
        """Keep a slot's first id, its last ALIASES_KEPT ids and its last RETIRED_KEPT retired records."""
        if len(slot.ids) > ALIASES_KEPT + 1:
            for episode_id in slot.ids[1:-ALIASES_KEPT]:
                self._forget(episode_id)
            slot.ids[1:-ALIASES_KEPT] = []
        retired = [i for i in slot.ids[:-1] if i in self.episodes]
        for episode_id in retired[:-RETIRED_KEPT]:
            self.episodes.pop(episode_id, None)

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
                self._prune_slot(slot)
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
                raise ApiError(429, f"step limit of {self.quota} reached", self.quota_headers(token))
            totals.steps_used += entries

    def quota_headers(self, token: str) -> dict[str, str]:
        """``X-Steps-Used`` / ``X-Steps-Limit``: the token's quota, sent with step answers and 429s.

        The live server documents no such headers (PROTOCOL.md §8.5); clients read them where given.
        """
        with self.lock:
            totals = self.tokens.get(token)
            return {STEPS_USED_HEADER: str(totals.steps_used if totals else 0), STEPS_LIMIT_HEADER: str(self.quota)}

    def check_quota_left(self, token: str, entries: int) -> None:
        """Like :meth:`check_quota` but counts nothing (run before a request's entries are parsed)."""
        with self.lock:
            totals = self.tokens.get(token)
            if (totals.steps_used if totals else 0) + entries > self.quota:
                raise ApiError(429, f"step limit of {self.quota} reached", self.quota_headers(token))

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
                return ended_outcome(episode)
            if inject_error:
                totals.episode_errors += 1
                episode.broken = True
                episode.error = NONE_TYPE_ERROR
                return error_outcome(episode)
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
        completed = self.totals(episode.token).completed
        if len(completed) >= COMPLETED_KEPT:
            del completed[: len(completed) - COMPLETED_KEPT + 1]
        completed.append(
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
