"""Env runners attach to their own node's pool: :class:`NodePoolVectorEnv`, :func:`register_node_pool_env`.

An RLlib env runner finds the pool actor of its node by name (``pool_env_node_pool:<group>:<its
node id>``, :mod:`pool_env.ray.node_pool`), asks it once for its ``ipc://`` socket and leases
``num_envs_per_env_runner`` slots from that daemon (:func:`pool_env.connect`). It never goes over
TCP: a node without a pool of the group, an address of another node or a non-ipc endpoint is an
error naming the fix, never a silent fallback.

Healing: when the node's pool dies (the actor was killed; Ray restarts it on the same node) the
runner's step fails after ``timeout`` seconds without a sign of life; :class:`NodePoolVectorEnv`
then asks the (restarted) actor for its new socket, leases slots there and resets them. The step
returns, as the pool reports any failed slot under NEXT_STEP autoreset: each slot in an episode
``truncated=True`` with reward 0, its last observation, ``infos["error"]``, ``infos["error_kind"]``
(``worker_died``: the daemon's workers died with it) and ``infos["step_fate"]`` (``unknown``), and
its new episode's first observation on the next step (whose action it ignores, as gymnasium does
for an autoreset); a slot whose episode had just ended (its autoreset step) gets its new episode's
first observation at once, with reward 0 and no error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from gymnasium.vector import AutoresetMode

from pool_env.client import RemoteVectorEnv, connect
from pool_env.errors import DaemonUnavailableError, ErrorKind, StepFate, TransportError, UsageError
from pool_env.ray.node_pool import actor_name
from pool_env.ray.rllib import SYNC_MODE_HINT

__all__ = ["NodePoolEnvCreator", "NodePoolVectorEnv", "register_node_pool_env"]

log = logging.getLogger(__name__)


class NodePoolVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` slots leased from this node's pool daemon, re-attached when the pool is restarted.

    Args:
        group: the pool group (:func:`~pool_env.ray.node_pool.start_node_pools`).
        num_envs: slots to lease.
        timeout: seconds without a sign of life from the daemon before a call counts it as lost.
        attach_timeout: seconds to wait for the node's pool actor to answer (it may be restarting).

    Attributes:
        node_id: this process's Ray node.
        attachment: the pool in use: ``{"endpoint": "ipc://...", "node_id": ..., "pid": ...}``.
        reattachments: how often the pool was lost and attached again.

    Raises:
        DaemonUnavailableError: no pool of ``group`` on this node, or its address is not this
            node's ``ipc://`` socket.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    node_id: str
    attachment: dict[str, Any]
    reattachments: int
    _env: RemoteVectorEnv | None
    _last_obs: Any
    _ended: np.ndarray
    _cut: np.ndarray | None
    _restart: tuple[Any, dict[str, Any]] | None

    def __init__(self, group: str, num_envs: int, *, timeout: float = 10.0, attach_timeout: float = 120.0) -> None:
        self.group = group
        self.timeout = timeout
        self.attach_timeout = attach_timeout
        self.node_id = ray.get_runtime_context().get_node_id()
        self.reattachments = 0
        self._env = None
        self._last_obs = None
        self._ended = np.zeros(num_envs, dtype=bool)
        self._cut = None
        self._restart = None
        self.num_envs = num_envs
        env = self._attach()
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def _attach(self) -> RemoteVectorEnv:
        """Find this node's pool, check it is this node's ipc socket, lease the slots."""
        name = actor_name(self.group, self.node_id)
        try:
            actor = ray.get_actor(name)
        except ValueError as exc:
            raise DaemonUnavailableError(
                f"no pool_env node pool of group {self.group!r} on node {self.node_id} (actor {name!r}): call "
                "pool_env.ray.start_node_pools(...) in the driver first; runners attach only to their own node's "
                "pool, over ipc"
            ) from exc
        address = ray.get(actor.address.remote(), timeout=self.attach_timeout)
        if address["node_id"] != self.node_id or not str(address["endpoint"]).startswith("ipc://"):
            raise DaemonUnavailableError(
                f"the pool actor {name!r} answered from node {address['node_id']} at {address['endpoint']}; a runner "
                f"on node {self.node_id} attaches only to its own node's ipc socket, never over TCP"
            )
        self._env = connect(
            address["endpoint"], self.num_envs, timeout=self.timeout, autoreset_mode=AutoresetMode.NEXT_STEP
        )
        self.attachment = address
        return self._env

    @property
    def env(self) -> RemoteVectorEnv:
        """The leased slots in use."""
        if self._env is None:
            raise UsageError("the node pool env is closed")
        return self._env

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every slot (as :class:`~pool_env.PoolVectorEnv`); re-attaches first if the pool was lost."""
        self._restart = self._cut = None
        try:
            obs, infos = self.env.reset(seed=seed, options=options)
        except TransportError as exc:
            self._reattach(exc)
            obs, infos = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        self._ended = np.zeros(self.num_envs, dtype=bool)
        return obs, infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot; when the pool was lost, see the module docstring."""
        try:
            result = self._autoreset_cut_slots(actions) if self._cut is not None else self.env.step(actions)
        except TransportError as exc:
            result = self._heal(exc)
        self._last_obs = result[0]
        self._ended = np.logical_or(result[2], result[3])
        return result

    def _autoreset_cut_slots(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The step after a heal: the cut slots return the first observation of their new episode."""
        assert self._cut is not None and self._restart is not None
        cut, (reset_obs, reset_infos) = self._cut, self._restart
        self._cut = self._restart = None
        no = np.zeros(self.num_envs, dtype=bool)
        if cut.all():  # nothing to step: every slot is at the start of the episode reset at the heal
            return reset_obs, np.zeros(self.num_envs), no, no.copy(), reset_infos
        # Step the slots that started their episodes at the heal; the cut ones moved too, so they are
        # reset again (the observation they return is their state's).
        _, rewards, terminated, truncated, infos = self.env.step(actions)
        obs, cut_infos = self.env.reset_envs(np.flatnonzero(cut).tolist())
        keep = ~cut
        merged = _merge_infos(_select_infos(infos, keep), _select_infos(cut_infos, cut))
        return obs, np.where(keep, rewards, 0.0), terminated & keep, truncated & keep, merged

    def _reattach(self, cause: BaseException) -> None:
        lost = self.attachment
        log.warning("node pool %s at %s lost (%s); attaching again", self.group, lost["endpoint"], cause)
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
            self._env = None
        self._attach()
        self.reattachments += 1

    def _heal(self, cause: BaseException) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Attach to the restarted pool and report the step (see the module docstring)."""
        lost = self.attachment
        self._reattach(cause)
        reset_obs, reset_infos = self.env.reset()
        due = self._ended.copy()  # slots at their autoreset step: their new episode starts now
        cut = ~due
        text = (
            f"the node's pool (pid {lost['pid']}, {lost['endpoint']}) was lost: {cause}; attached to its "
            f"replacement (pid {self.attachment['pid']}), new episode next step"
        )
        failure = {
            "error": np.array([text] * self.num_envs, dtype=object),
            "_error": cut.copy(),
            "error_kind": np.array([ErrorKind.WORKER_DIED] * self.num_envs, dtype=object),
            "_error_kind": cut.copy(),
            "step_fate": np.array([StepFate.UNKNOWN] * self.num_envs, dtype=object),
            "_step_fate": cut.copy(),
        }
        self._cut, self._restart = (cut, (reset_obs, reset_infos)) if cut.any() else (None, None)
        obs = _rows_where(due, reset_obs, self._last_obs)
        infos = _merge_infos(failure, _select_infos(reset_infos, due))
        return obs, np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=bool), cut, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Give the slots back to the daemon (bounded by ``timeout`` if it is gone)."""
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
            self._env = None


def _rows_where(rows: np.ndarray, a: Any, b: Any) -> Any:
    """``a``'s rows where ``rows`` is true, ``b``'s elsewhere, through dict/tuple observations."""
    if isinstance(a, dict):
        return {key: _rows_where(rows, a[key], b[key]) for key in a}
    if isinstance(a, tuple):
        return tuple(_rows_where(rows, x, y) for x, y in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return np.where(rows.reshape(-1, *([1] * (a.ndim - 1))), a, b)


def _select_infos(infos: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """Vector infos (gymnasium's ``key``/``_key`` layout) with only the rows in ``keep`` present."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        mask = infos.get(f"_{key}")
        if key.startswith("_") or mask is None:
            continue
        out[key], out[f"_{key}"] = value, np.asarray(mask, dtype=bool) & keep
    return out


def _merge_infos(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two vector infos whose rows do not overlap, as one."""
    out = dict(a)
    for key, value in b.items():
        if key.startswith("_"):
            continue
        mask = b[f"_{key}"]
        if key in out and isinstance(value, np.ndarray) and isinstance(out[key], np.ndarray):
            if value.dtype != out[key].dtype:
                value, out[key] = value.astype(object), out[key].astype(object)
            out[key] = _rows_where(mask, value, out[key])
            out[f"_{key}"] = out[f"_{key}"] | mask
        elif mask.any() or key not in out:
            out[key], out[f"_{key}"] = value, mask
    return out


class NodePoolEnvCreator:
    """An RLlib env creator: each env runner leases ``num_envs`` slots from its own node's pool.

    Args:
        group: the pool group started with :func:`~pool_env.ray.node_pool.start_node_pools`.
        timeout: seconds without a sign of life before a runner counts its pool as lost.
        attach_timeout: seconds a runner waits for its node's pool actor (it may be restarting).
    """

    group: str
    timeout: float
    attach_timeout: float

    def __init__(self, group: str = "default", *, timeout: float = 10.0, attach_timeout: float = 120.0) -> None:
        self.group = group
        self.timeout = timeout
        self.attach_timeout = attach_timeout

    def __call__(self, config: Mapping[str, Any]) -> NodePoolVectorEnv:
        """The env runner's slots (RLlib's ``vector_entry_point`` passes ``num_envs``).

        Raises:
            UsageError: no ``num_envs`` (RLlib's default ``"sync"`` mode) or ``env_config`` keys.
            DaemonUnavailableError: no pool of the group on this node.
        """
        if "num_envs" not in config:
            raise UsageError(f"NodePoolEnvCreator was called without num_envs; {SYNC_MODE_HINT}")
        extra = sorted(str(key) for key in config if key != "num_envs")
        if extra:
            raise UsageError(f"NodePoolEnvCreator: env_config keys {extra} would be ignored; the pools' spec is set "
                             "by start_node_pools")  # fmt: skip
        return NodePoolVectorEnv(
            self.group, int(config["num_envs"]), timeout=self.timeout, attach_timeout=self.attach_timeout
        )


def register_node_pool_env(name: str, group: str = "default", *, timeout: float = 10.0) -> str:
    """Register a :class:`NodePoolEnvCreator` with Ray under ``name`` (for ``.environment(name)``)."""
    from ray.tune.registry import register_env

    register_env(name, NodePoolEnvCreator(group, timeout=timeout))
    return name
