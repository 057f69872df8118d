"""Checking and converting the challenge server's JSON answers (PROTOCOL.md §§3-5).

Two levels of badness, handled differently by the backend:

* the ``parse_*`` functions check a whole answer (keys, list lengths). They raise ``ValueError``
  or ``TypeError`` when it is malformed; the client then treats the request as failed and retries
  it (a step only after checking the server's step counters);
* :func:`parse_rows` and :func:`step_entry` check one entry of a vectorized answer and return
  what is wrong with it (a string; a :class:`~pool_env.errors.SlotFailure` from :func:`step_entry`)
  instead of raising: that slot alone fails.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pool_env.envs.degradation import OBS_FIELDS
from pool_env.errors import ErrorKind, SlotFailure, StepFate

__all__ = [
    "StepEntry",
    "parse_create",
    "parse_reset",
    "parse_rows",
    "parse_session",
    "parse_state",
    "parse_step",
    "step_entry",
]


StepEntry = tuple[np.ndarray, float, bool, bool, dict[str, Any]]
"""``(rows (k, 9) float32, reward, terminated, truncated, info)`` of one stepped episode."""


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _list(payload: dict[str, Any], key: str, length: int) -> list[Any]:
    value = payload.get(key)
    if not isinstance(value, list) or len(value) != length:
        found = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{key!r}: expected a list of {length}, got {found}")
    return value


def _infos(payload: dict[str, Any], length: int) -> list[dict[str, Any]]:
    """The ``infos`` list (missing → empty dicts); entries that are not objects become ``{}``."""
    if payload.get("infos") is None:
        return [{} for _ in range(length)]
    return [info if isinstance(info, dict) else {} for info in _list(payload, "infos", length)]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_session(payload: Any) -> str:
    """The ``session_id`` of a ``/session/create`` answer."""
    session_id = _object(payload).get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"'session_id': expected a non-empty string, got {session_id!r}")
    return session_id


def parse_create(payload: Any, num_envs: int) -> list[str]:
    """The ``episode_ids`` of a ``/vectorized/episodes/create`` answer (exactly ``num_envs``)."""
    ids = _list(_object(payload), "episode_ids", num_envs)
    if not all(isinstance(episode_id, str) and episode_id for episode_id in ids):
        raise ValueError("'episode_ids': expected non-empty strings")
    return ids


def parse_reset(payload: Any, num_envs: int) -> dict[str, list[Any]]:
    """A ``/episode/vectorized_reset`` answer as ``observations``, ``infos``, ``new_episode_ids``.

    ``new_episode_ids`` may be missing or empty (older servers): it becomes a list of None.
    """
    payload = _object(payload)
    new_ids = payload.get("new_episode_ids")
    return {
        "observations": _list(payload, "observations", num_envs),
        "infos": _infos(payload, num_envs),
        "new_episode_ids": _list(payload, "new_episode_ids", num_envs) if new_ids else [None] * num_envs,
    }


def parse_step(payload: Any, num_envs: int) -> dict[str, list[Any]]:
    """A ``/episode/vectorized_step`` answer: its five parallel lists, ``num_envs`` long each."""
    payload = _object(payload)
    reply = {key: _list(payload, key, num_envs) for key in ("observations", "rewards", "terminateds", "truncateds")}
    reply["infos"] = _infos(payload, num_envs)
    return reply


def parse_state(payload: Any) -> tuple[int | None, bool]:
    """The ``step`` counter of a ``/state/latest`` answer and whether the episode has ended
    (``terminated`` or ``truncated`` is true; the server reports a broken episode as terminated)."""
    state = _object(payload)
    return _int_or_none(state.get("step")), state.get("terminated") is True or state.get("truncated") is True


def parse_rows(raw: Any, max_rows: int) -> np.ndarray | str:
    """Observation rows ``(k, 9)`` float32 with ``1 <= k <= max_rows``, or what is wrong with them.

    Accepts a list of 9-value rows, one flat row, or a flat list of ``9 * k`` values.
    """
    if not isinstance(raw, list) or not raw:
        return f"empty observation ({raw!r})"
    try:
        values = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        return "malformed observation (ragged or not numeric)"
    if values.ndim == 1 and values.size % OBS_FIELDS == 0:
        values = values.reshape(-1, OBS_FIELDS)
    if values.ndim != 2 or values.shape[1] != OBS_FIELDS:
        return f"observation of shape {values.shape}, expected rows of {OBS_FIELDS} values"
    if len(values) > max_rows:
        return f"observation has {len(values)} rows, more than step_size {max_rows}"
    rows = values.astype(np.float32)
    if not np.isfinite(rows).all():
        return "observation contains NaN or infinite values"
    return rows


def step_entry(reply: dict[str, list[Any]], j: int, step_size: int) -> StepEntry | SlotFailure:
    """Entry ``j`` of a parsed step answer, or the failure of its slot.

    An error payload is the server's episode error (the server did not apply the step); a bad
    observation or reward in an entry without one is a bad response to a step the server applied.
    The info keeps only ``step`` (flights since reset, when the server sent it) and, when the
    episode ended, ``reason``.
    """
    raw_info = reply["infos"][j]
    if raw_info.get("error"):
        error = f"server error: {raw_info['error']}"
        return SlotFailure(ErrorKind.SERVER_EPISODE_ERROR, StepFate.NOT_APPLIED, error)
    rows = parse_rows(reply["observations"][j], step_size)
    if isinstance(rows, str):
        return SlotFailure(ErrorKind.BAD_RESPONSE, StepFate.APPLIED, f"bad step observation: {rows}")
    reward = reply["rewards"][j]
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        return SlotFailure(ErrorKind.BAD_RESPONSE, StepFate.APPLIED, f"bad reward {reward!r}")
    terminated = bool(reply["terminateds"][j])
    truncated = bool(reply["truncateds"][j])
    info: dict[str, Any] = {}
    step = _int_or_none(raw_info.get("step"))
    if step is not None:
        info["step"] = step
    if terminated or truncated:
        nested = raw_info.get("info")
        reason = raw_info.get("reason") or (nested.get("reason") if isinstance(nested, dict) else None)
        if reason is not None:
            info["reason"] = str(reason)
    return rows, float(reward), terminated, truncated, info
