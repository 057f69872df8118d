"""The challenge client's own pattern: one process, one vectorized HTTP request per step for all envs
(one after another per 64 episodes beyond 64: the server's ``max_num_envs``).

This is what a trainer does without pool_env: a ``requests.Session`` (keep-alive), the episodes
created in groups of at most 64, then per step one ``/episode/vectorized_step`` carrying every
env's action; the episodes that ended are reset right away with one ``/episode/vectorized_reset``
(so a step on which some episode ended costs two round trips, exactly as in a pool worker).
No retries, no error handling: the benchmark's server injects no faults.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import requests

from pool_env.envs.degradation import OBS_FIELDS

__all__ = ["ChallengeClient"]

MAX_GROUP = 64


class ChallengeClient:
    """``num_envs`` DegradationEnv episodes stepped by one vectorized request per step.

    Args:
        server_url: base URL of the (reference) server.
        user_token: sent as ``User-Token``.
        num_envs: episodes.
        step_size: flights per decision step.
        timeout: seconds per request.
    """

    num_envs: int

    def __init__(self, server_url: str, user_token: str, num_envs: int, step_size: int = 10, timeout: float = 60.0):
        self._url = server_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update({"User-Token": user_token, "Content-Type": "application/json"})
        self._timeout = timeout
        self.num_envs = num_envs
        self._step_size = step_size
        self._episode_ids: list[str] = []
        self._obs = np.zeros((num_envs, OBS_FIELDS), dtype=np.float32)

    def _post(self, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        response = self._session.post(self._url + path, json=body, headers=headers, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Create the episodes (first call) and reset them all; the ``(num_envs, 9)`` observations."""
        if not self._episode_ids:
            session_id = self._post("/api/v1/session/create")["session_id"]
            config = {"env_type": "DegradationEnv", "step_size": self._step_size, "max_steps_per_episode": 1000}
            while len(self._episode_ids) < self.num_envs:
                count = min(MAX_GROUP, self.num_envs - len(self._episode_ids))
                reply = self._post(
                    "/api/v1/vectorized/episodes/create",
                    {"env_config": config, "num_envs": count},
                    headers={"Session-ID": session_id},
                )
                self._episode_ids.extend(reply["episode_ids"])
        seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
        self._reset(list(range(self.num_envs)), seeds)
        return self._obs.copy()

    def _reset(self, indices: list[int], seeds: list[int] | None) -> None:
        for start in range(0, len(indices), MAX_GROUP):  # the server takes at most 64 episodes a request
            chunk = indices[start : start + MAX_GROUP]
            reply = self._post(
                "/api/v1/episode/vectorized_reset",
                {
                    "episode_ids": [self._episode_ids[i] for i in chunk],
                    "seeds": None if seeds is None else seeds[start : start + MAX_GROUP],
                },
            )
            for j, i in enumerate(chunk):
                new_id = reply["new_episode_ids"][j]
                if new_id:
                    self._episode_ids[i] = new_id
                self._obs[i] = _last_row(reply["observations"][j])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One vectorized step of every env (plus one reset request if some episode ended).

        Returns ``(obs, rewards, terminated, truncated)``; ended envs already hold their new first
        observation (gymnasium's SAME_STEP convention).
        """
        entries = [
            {"episode_id": eid, "action": int(a), "step_size": self._step_size, "return_all_states": True}
            for eid, a in zip(self._episode_ids, actions, strict=True)
        ]
        reply: dict[str, list[Any]] = {"rewards": [], "terminateds": [], "truncateds": [], "observations": []}
        for start in range(0, len(entries), MAX_GROUP):  # one request, or one per 64 episodes beyond that
            body = {"episode_actions": entries[start : start + MAX_GROUP]}
            part = self._post("/api/v1/episode/vectorized_step", body)
            for key, values in reply.items():
                values.extend(part[key])
        rewards = np.asarray(reply["rewards"], dtype=np.float64)
        terminated = np.asarray(reply["terminateds"], dtype=bool)
        truncated = np.asarray(reply["truncateds"], dtype=bool)
        for i, raw in enumerate(reply["observations"]):
            if raw:
                self._obs[i] = _last_row(raw)
        ended = np.flatnonzero(terminated | truncated).tolist()
        if ended:
            self._reset(ended, None)
        return self._obs.copy(), rewards, terminated, truncated

    def close(self) -> None:
        """Close the HTTP session (the server forgets the episodes on its own)."""
        self._session.close()


def _last_row(raw: Any) -> np.ndarray:
    values = np.asarray(raw, dtype=np.float32).reshape(-1, OBS_FIELDS)
    return values[-1]
