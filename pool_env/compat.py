"""Drop-in names for users of the challenge's own vectorized client.

A notebook written against ``student_client.create_student_gym_env_vectorized`` switches by
changing one import::

    # from student_client import create_student_gym_env_vectorized
    from pool_env.compat import create_student_gym_env_vectorized

    env = create_student_gym_env_vectorized(num_envs=4, step_size=10, user_token="...", server_url=URL)
    obs, infos = env.reset(seed=0)                       # obs: (num_envs, 9) float32
    obs, rewards, terminateds, truncateds, infos = env.step(actions)
    # obs: a list of num_envs float32 arrays (k_i, 9), as with return_all_states=True
    env.reset_specific_envs(env.get_terminated_env_indices())

What is the same: the factory and method names, the shapes (reset ``(n, 9)``, step a list of
``(k_i, 9)`` chunks), float32 rewards, bool flags, a list of per-env info dicts with ``step``,
``episode_id`` (when known), ``terminated`` and ``truncated``.

What is better, on purpose: ``num_envs`` is not clamped to 4; a network error or a crashed
worker no longer marks every env terminated forever — only the affected envs come back
truncated with ``info["error"]`` and are started afresh; and finished envs are reset by the
pool on the following step (gymnasium NEXT_STEP autoreset), so a loop that forgets
``reset_specific_envs`` still trains. ``reset_specific_envs`` works as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from pool_env.config import PoolOptions
from pool_env.envs import HttpEnvSpec
from pool_env.envs.degradation import NUM_ACTIONS, OBS_FIELDS
from pool_env.vector_env import PoolVectorEnv

__all__ = ["StudentGymEnvVectorized", "create_student_gym_env_vectorized"]

DEFAULT_SERVER_URL = "http://localhost:8001"


class StudentGymEnvVectorized:
    """The challenge client's vectorized env interface, backed by a :class:`PoolVectorEnv`."""

    def __init__(self, pool: PoolVectorEnv, step_size: int) -> None:
        self._pool = pool
        self.num_envs = pool.num_envs
        self.step_size = step_size
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (OBS_FIELDS,), np.float32)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = self.single_observation_space
        self.action_space = self.single_action_space
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._episode_ids: list[str | None] = [None] * self.num_envs

    @property
    def pool(self) -> PoolVectorEnv:
        """The underlying gymnasium vector env."""
        return self._pool

    @property
    def episode_ids(self) -> list[str | None]:
        """The server episode id of each env, as last reported (``None`` before it is known)."""
        return list(self._episode_ids)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset every env; ``seed=s`` gives env ``i`` the seed ``s + i``. Returns ``(n, 9)`` obs."""
        self._episode_ids = [None] * self.num_envs
        chunks, infos = self._pool.reset(seed=seed)
        self._ended[:] = False
        return self._last_rows(chunks, infos), self._info_list(infos, np.zeros(self.num_envs, bool), self._ended)

    def reset_specific_envs(
        self, env_indices: Sequence[int], seeds: Sequence[int | None] | None = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset only ``env_indices``; returns their ``(len(env_indices), 9)`` observations and infos."""
        indices = [int(i) for i in env_indices]
        if not indices:
            return np.zeros((0, OBS_FIELDS), np.float32), []
        chunks, infos = self._pool.reset_envs(indices, seeds=seeds)
        self._ended[indices] = False
        rows = self._last_rows(chunks, infos)[indices]
        all_infos = self._info_list(infos, np.zeros(self.num_envs, bool), self._ended)
        return rows, [all_infos[i] for i in indices]

    def step(
        self, actions: Sequence[int] | np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env with its action (0 fly, 1 repair, 2 sell)."""
        chunks, rewards, terminated, truncated, infos = self._pool.step(np.asarray(actions, dtype=np.int64))
        rows = infos.get("rows", np.ones(self.num_envs, dtype=np.int64))
        has_rows = infos.get("_rows", np.zeros(self.num_envs, bool))
        obs = [chunks[i, : int(rows[i]) if has_rows[i] else 1] for i in range(self.num_envs)]
        self._ended = terminated | truncated
        info_list = self._info_list(infos, terminated, truncated)
        return obs, rewards.astype(np.float32), terminated, truncated, info_list

    def get_terminated_env_indices(self) -> list[int]:
        """Envs whose episode ended on the last step and that were not reset since."""
        return np.flatnonzero(self._ended).tolist()

    def get_active_count(self) -> int:
        """Envs whose episode is running."""
        return int(self.num_envs - self._ended.sum())

    def close(self) -> None:
        """Stop the pool's workers (the server's episodes are left to its TTL, as before)."""
        self._pool.close()

    def __enter__(self) -> StudentGymEnvVectorized:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _last_rows(self, chunks: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
        rows = infos.get("rows", np.ones(self.num_envs, dtype=np.int64))
        has_rows = infos.get("_rows", np.zeros(self.num_envs, bool))
        last = [int(rows[i]) - 1 if has_rows[i] and rows[i] > 0 else 0 for i in range(self.num_envs)]
        return chunks[np.arange(self.num_envs), last].astype(np.float32)

    def _info_list(self, infos: dict[str, Any], terminated: np.ndarray, truncated: np.ndarray) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {"terminated": bool(terminated[i]), "truncated": bool(truncated[i])}
            for key in ("step", "episode_id", "reason", "error"):
                if infos.get(f"_{key}", np.zeros(self.num_envs, bool))[i]:
                    info[key] = infos[key][i].item() if hasattr(infos[key][i], "item") else infos[key][i]
            if "episode_id" in info:
                self._episode_ids[i] = str(info["episode_id"])
            result.append(info)
        return result


def create_student_gym_env_vectorized(
    num_envs: int = 4,
    step_size: int = 10,
    user_token: str | None = None,
    server_url: str = DEFAULT_SERVER_URL,
    *,
    num_workers: int | None = None,
    timeout: float = 30.0,
    max_steps_per_episode: int = 1000,
    **_ignored: Any,
) -> StudentGymEnvVectorized:
    """The challenge client's factory, returning an env stepped by a self-healing pool.

    Extra keyword arguments the original accepted (``auto_reset``, ``prod``, ...) are accepted
    and ignored.
    """
    if not user_token:
        raise ValueError("user_token is required")
    spec = HttpEnvSpec(
        server_url,
        user_token,
        step_size=step_size,
        max_steps_per_episode=max_steps_per_episode,
        request_timeout=timeout,
        observation="chunk",
    )
    pool = PoolVectorEnv(spec, num_envs, num_workers, options=PoolOptions())
    return StudentGymEnvVectorized(pool, step_size)
