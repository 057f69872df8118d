"""pool_env on Ray: RLlib env runners that build pools, and one pool service per node of a cluster.

Needs the ``[ray]`` extra (``ray[rllib]`` and torch). Imported only explicitly
(``import pool_env.ray``); ``import pool_env`` never imports Ray.

* :func:`register_pool_env` / :class:`PoolEnvCreator` (:mod:`pool_env.ray.rllib`): each RLlib
  env runner builds a pool of its own (``gym_env_vectorize_mode="vector_entry_point"``);
* :class:`PoolEnvRunner` (:mod:`pool_env.ray.env_runner`): RLlib's episode statistics leave out
  episodes cut by pool failures;
* :func:`start_node_pools` (:mod:`pool_env.ray.node_pool`): one pool service per node, a Ray
  actor pinned to it and restarted by Ray; :func:`register_node_pool_env`
  (:mod:`pool_env.ray.node_env`): env runners lease slots from their own node's pool over ipc.
"""

from __future__ import annotations

from pool_env.ray.env_runner import PoolEnvRunner
from pool_env.ray.node_env import NodePoolEnvCreator, NodePoolVectorEnv, register_node_pool_env
from pool_env.ray.node_pool import NodePools, start_node_pools
from pool_env.ray.rllib import PoolEnvCreator, register_pool_env

__all__ = [
    "NodePoolEnvCreator",
    "NodePoolVectorEnv",
    "NodePools",
    "PoolEnvCreator",
    "PoolEnvRunner",
    "register_node_pool_env",
    "register_pool_env",
    "start_node_pools",
]
