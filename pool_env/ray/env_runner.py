"""Failures are not experience, for RLlib's metrics: :class:`PoolEnvRunner`.

A slot the pool failed (its worker died or hung, its server episode failed, a response was lost)
ends its episode ``truncated=True`` with ``infos["error_kind"]`` set. RLlib's
``SingleAgentEnvRunner`` would count that cut episode in ``episode_return_mean`` / ``_min`` /
``_max`` and ``episode_len_*`` like a real one, so a run with infrastructure trouble would look
like a worse policy. :class:`PoolEnvRunner` leaves such episodes out of those statistics and
counts them instead under :data:`FAILED_EPISODES` (``result["env_runners"]["pool_env_failed_episodes"]``,
per iteration, and ``..._lifetime``). The transitions themselves still reach the learner, as a
truncation (RLlib bootstraps the value of the last observation), which is what the cut was.

Use it with ``.env_runners(env_runner_cls=PoolEnvRunner)``. It reads the episodes RLlib keeps for
its metrics (``_done_episodes_for_metrics``, RLlib 2.50 to 2.60); the integration tests pin that.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

__all__ = ["FAILED_EPISODES", "FAILED_EPISODES_LIFETIME", "PoolEnvRunner", "ended_by_failure"]

FAILED_EPISODES = "pool_env_failed_episodes"
"""Metric: episodes cut by a pool failure in this iteration, left out of the episode statistics."""
FAILED_EPISODES_LIFETIME = "pool_env_failed_episodes_lifetime"
"""Metric: the same, summed over the run."""


def ended_by_failure(episode: Any) -> bool:
    """Whether an RLlib ``SingleAgentEpisode`` that is done ended because the pool failed its slot
    (its last step's infos carry ``error_kind``), not because the env ended it."""
    if not episode.is_done or len(episode) == 0:
        return False
    last_infos = episode.get_infos(-1)
    return isinstance(last_infos, dict) and "error_kind" in last_infos


class PoolEnvRunner(SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` whose episode statistics leave out episodes cut by pool failures."""

    def get_metrics(self) -> Any:
        """RLlib's metrics, computed over the episodes the envs ended, plus :data:`FAILED_EPISODES`."""
        kept = []
        failed = 0
        for episode in self._done_episodes_for_metrics:
            if ended_by_failure(episode):
                failed += 1
                self._ongoing_episodes_for_metrics.pop(episode.id_, None)  # its earlier chunks go too
            else:
                kept.append(episode)
        self._done_episodes_for_metrics[:] = kept
        self.metrics.log_value(FAILED_EPISODES, failed, reduce="sum")
        self.metrics.log_value(FAILED_EPISODES_LIFETIME, failed, reduce="lifetime_sum")
        return super().get_metrics()
