"""``pool_env.sb3``: the Stable-Baselines3 integration (extra ``[sb3]``), see :mod:`pool_env.integrations.sb3`."""

from __future__ import annotations

from pool_env.integrations.sb3 import PoolVecEnv, PoolVecMonitor

__all__ = ["PoolVecEnv", "PoolVecMonitor"]
