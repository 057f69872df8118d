"""Episode statistics that leave out episodes cut by an infrastructure failure.

An episode that ended because its worker died or hung, its server episode failed or a response
was lost is not experience: its return and length say nothing about the policy. The pool marks
such a slot with ``infos["error_kind"]`` (``infos["final_info"]["error_kind"]`` under SAME_STEP);
:class:`RecordEpisodeStatistics` here is gymnasium's vector ``RecordEpisodeStatistics`` (whose
bookkeeping it follows, for every autoreset mode) that records only the other episodes.

A hand-written loop (CleanRL's) masks them the same way::

    from pool_env.integrations.infos import failed_slots

    obs, rewards, terminations, truncations, infos = envs.step(actions)
    done = terminations | truncations
    real = done & ~failed_slots(infos, envs.num_envs)     # episodes that really ended
    # log returns of `real` slots only; for PPO, treat a failed slot like a truncation
    # (bootstrap from the value of its last valid observation), never like a terminal state.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics as GymRecordEpisodeStatistics

from pool_env.integrations.infos import failed_slots

__all__ = ["RecordEpisodeStatistics"]


class RecordEpisodeStatistics(GymRecordEpisodeStatistics):
    """gymnasium's vector ``RecordEpisodeStatistics`` minus the episodes that a failure cut.

    ``infos["episode"]`` (``r``, ``l``, ``t`` with the ``_episode`` mask), ``return_queue``,
    ``length_queue``, ``time_queue`` and ``episode_count`` cover only episodes that ended on their
    own; a failed slot's episode is counted in :attr:`failed_episode_count` and its statistics
    restart with its next episode.

    Args:
        env: a vector env (a :class:`~pool_env.PoolVectorEnv`, or any gymnasium vector env).
        buffer_length: size of the queues.
        stats_key: the info key (``"episode"``).
    """

    failed_episode_count: int

    def __init__(self, env: VectorEnv[Any, Any, Any], buffer_length: int = 100, stats_key: str = "episode") -> None:
        super().__init__(env, buffer_length, stats_key)
        self.failed_episode_count = 0
        self._same_step = env.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step; add ``infos[stats_key]`` for the slots whose episode really ended."""
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if self._same_step:  # every step counts towards an episode (gymnasium >= 1.1's rule)
            self.episode_returns += rewards
            self.episode_lengths += 1
        else:  # NEXT_STEP / DISABLED: the step after an end is a reset, not part of an episode
            fresh = self.prev_dones
            self.episode_returns[fresh] = 0
            self.episode_returns[~fresh] += rewards[~fresh]
            self.episode_lengths[fresh] = 0
            self.episode_lengths[~fresh] += 1
            self.episode_start_times[fresh] = time.perf_counter()
        self.prev_dones = dones = np.logical_or(terminations, truncations)
        failed = dones & failed_slots(infos, self.num_envs)
        recorded = dones & ~failed
        self.failed_episode_count += int(failed.sum())
        if recorded.any():
            if self._stats_key in infos or f"_{self._stats_key}" in infos:
                raise ValueError(f"Attempted to add episode stats with key '{self._stats_key}' but it is in info")
            elapsed = np.round(time.perf_counter() - self.episode_start_times, 6)
            infos[self._stats_key] = {
                "r": np.where(recorded, self.episode_returns, 0.0),
                "l": np.where(recorded, self.episode_lengths, 0),
                "t": np.where(recorded, elapsed, 0.0),
            }
            infos[f"_{self._stats_key}"] = recorded
            self.episode_count += int(recorded.sum())
            self.time_queue.extend(elapsed[recorded])
            self.return_queue.extend(self.episode_returns[recorded])
            self.length_queue.extend(self.episode_lengths[recorded])
        if self._same_step:
            self.episode_returns[dones] = 0
            self.episode_lengths[dones] = 0
            self.episode_start_times[dones] = time.perf_counter()
        return observations, rewards, terminations, truncations, infos
