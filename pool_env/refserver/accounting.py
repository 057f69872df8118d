"""Read-only reports over :class:`~pool_env.refserver.state.ServerState`: the score endpoint and the
``/control/episodes`` step accounting.

``/control/episodes`` answers ``{"episodes": {episode_id: {...}}, "tokens": {token: {...}}}``; every id
ever minted has an entry with its own ``steps_applied``; a retired id's live successor is ``current_id``
and the live record lists the slot's older ids in ``aliases``.
"""

from __future__ import annotations

import time
from typing import Any

from pool_env.refserver.records import ApiError, short
from pool_env.refserver.state import ServerState

__all__ = ["episodes_snapshot", "score_metrics", "tokens_snapshot"]


def score_metrics(state: ServerState, token: str, limit: int) -> dict[str, Any]:
    """``GET /user/{token}/score``: metrics over the last ``limit`` finished episodes.

    Raises:
        ApiError: 404 when the token has no finished episode.
    """
    with state.lock:
        totals = state.tokens.get(token)
        done = totals.completed[-limit:] if totals and limit > 0 else []
        if not done:
            raise ApiError(404, f"no finished episodes for user {short(token)}")
        rewards = [d["total_reward"] for d in done]
        last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(done[-1]["ended_at"]))
        return {
            "metrics": {
                "total_episodes": len(done),
                "total_reward": sum(rewards),
                "avg_reward": sum(rewards) / len(done),
                "best_reward": max(rewards),
                "total_maintenance": sum(d["num_repairs"] for d in done),
                "avg_steps": sum(d["steps"] for d in done) / len(done),
                "failure_rate": sum(d["failure"] for d in done) / len(done),
                "last_episode_date": last,
            }
        }


def episodes_snapshot(state: ServerState) -> dict[str, Any]:
    """The JSON answer of ``GET /control/episodes``."""
    with state.lock:
        state.sweep()
        out: dict[str, Any] = {}
        for episode_id, ep in state.episodes.items():
            slot = ep.slot
            assert slot is not None
            aliases = [i for i in slot.ids if i != episode_id] if not ep.retired else []
            out[episode_id] = {
                "steps_applied": ep.steps_applied,
                "step": ep.env.step,
                "terminated": ep.env.terminated,
                "truncated": ep.env.truncated,
                "broken": ep.broken,
                "retired": ep.retired,
                "reason": ep.env.reason,
                "total_reward": ep.env.total_reward,
                "num_repairs": ep.env.num_repairs,
                "token": ep.token,
                "session_id": ep.session_id,
                "group_id": slot.group_id,
                "current_id": slot.current.episode_id,
                "aliases": aliases,
            }
        return {"episodes": out, "tokens": tokens_snapshot(state)}


def tokens_snapshot(state: ServerState) -> dict[str, Any]:
    """Per-token totals (``completed`` is given as a count)."""
    with state.lock:
        return {
            token: {
                "steps_used": t.steps_used,
                "steps_applied": t.steps_applied,
                "steps_on_ended": t.steps_on_ended,
                "episode_errors": t.episode_errors,
                "episodes_created": t.episodes_created,
                "resets": t.resets,
                "live_episodes": t.live_slots,
                "episodes_completed": len(t.completed),
            }
            for token, t in state.tokens.items()
        }
