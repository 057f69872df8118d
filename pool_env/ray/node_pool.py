"""One pool service per Ray node, placed and restarted by Ray: :func:`start_node_pools`.

Each node gets a Ray actor, :class:`NodePoolActor`, pinned to it (``NodeAffinitySchedulingStrategy``,
hard) and reserving the CPUs its pool's workers use (``num_cpus=workers_per_node``). The actor runs
the pool daemon of ``pool-env serve`` (:class:`~pool_env.daemon.server.PoolDaemon`) in a thread, on
a private ``ipc://`` socket of that node. Ray restarts a killed actor (``max_restarts=-1``) on the
same node; the new daemon gets a fresh socket in a run directory of its own (owner-locked, as a
pool's, :mod:`pool_env.supervisor.rundir`), the old one's workers exit by themselves when their
owner dies, and its leftovers (segment, run directory) are swept by the next start-up.

Env runners attach with :mod:`pool_env.ray.node_env`: by node id, over ``ipc``, never over TCP; a
Ray call is made only to find the socket (≈ 1 ms), every step goes over ZeroMQ and shared memory
(≈ 0.1 ms). The actor is named ``pool_env_node_pool:<group>:<node id>`` (see :func:`actor_name`).

Idea borrowed from Ray's own per-node services (the raylet; ``ray.util.placement_group`` docs):
one resident service per node that local workers reach without the network.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pool_env.config import PoolOptions
from pool_env.daemon.config import DaemonConfig
from pool_env.daemon.server import PoolDaemon
from pool_env.envs import EnvSpec
from pool_env.errors import SpecError
from pool_env.supervisor.rundir import RunDir

__all__ = ["ACTOR_PREFIX", "NodePoolActor", "NodePools", "actor_name", "start_node_pools"]

ACTOR_PREFIX = "pool_env_node_pool"
STOP_TIMEOUT = 15.0
"""Seconds :meth:`NodePools.close` waits for each daemon's graceful stop before killing its actor."""


def actor_name(group: str, node_id: str) -> str:
    """The Ray actor name of ``group``'s pool on the node ``node_id`` (hex)."""
    return f"{ACTOR_PREFIX}:{group}:{node_id}"


class NodePoolActor:
    """A pool daemon on this node (run as a Ray actor by :func:`start_node_pools`).

    Args:
        spec: what each slot runs (a spec a daemon accepts: ``GymEnvSpec``, ``HttpEnvSpec``).
        num_envs: slots of this node's pool (the env runners of this node lease them).
        num_workers: its worker processes (the actor reserves as many CPUs).
        lease_timeout: seconds without a heartbeat before a runner's lease ends.
        options: the pool's worker options.

    Attributes:
        node_id: the Ray node this actor (and its daemon, its workers) runs on.
        daemon: the pool daemon, served by a thread of this actor.

    Raises:
        SpecError, EnvCreationError, WorkerStartError: the pool cannot start (Ray reports it on
            the actor's first call).
    """

    node_id: str
    daemon: PoolDaemon
    _run_dir: RunDir
    _thread: threading.Thread

    def __init__(
        self, spec: EnvSpec, num_envs: int, num_workers: int, lease_timeout: float, options: PoolOptions
    ) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()
        self._run_dir = RunDir()  # sweeps the run directories of dead predecessors (a killed actor)
        bind = f"ipc://{os.path.join(self._run_dir.path, 'pool.sock')}"
        config = DaemonConfig(
            spec=spec, num_envs=num_envs, num_workers=num_workers, bind=bind, lease_timeout=lease_timeout,
            options=options,
        )  # fmt: skip
        self.daemon = PoolDaemon(config)
        try:
            self.daemon.start()
        except BaseException:
            self._run_dir.close()
            raise
        self._thread = threading.Thread(target=self.daemon.serve_forever, name="pool_env-daemon", daemon=True)
        self._thread.start()

    def address(self) -> dict[str, Any]:
        """Where runners attach: ``{"endpoint": "ipc://...", "node_id": ..., "pid": ...}``."""
        return {"endpoint": self.daemon.endpoint, "node_id": self.node_id, "pid": os.getpid()}

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the daemon gracefully (its workers, shared memory, socket); whether it stopped in time."""
        self.daemon.request_stop()
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped:
            self._run_dir.close()
        return stopped


@dataclass
class NodePools:
    """The pool actors of one group, by node id; :meth:`close` stops them (a context manager).

    Attributes:
        group: the group name (several groups may serve different specs on one cluster).
        actors: node id -> the Ray actor handle of that node's pool.
    """

    group: str
    actors: dict[str, Any] = field(default_factory=dict)

    def addresses(self, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Each node's pool address (waits for restarting actors, up to ``timeout`` seconds)."""
        refs = {node: actor.address.remote() for node, actor in self.actors.items()}
        return {node: ray.get(ref, timeout=timeout) for node, ref in refs.items()}

    def close(self) -> None:
        """Stop every daemon gracefully, then end the actors for good (no restart)."""
        stops = [actor.stop.remote() for actor in self.actors.values()]
        with contextlib.suppress(Exception):
            ray.get(stops, timeout=STOP_TIMEOUT + 5)
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors.clear()

    def __enter__(self) -> NodePools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_node_pools(
    spec: EnvSpec,
    *,
    envs_per_node: int,
    workers_per_node: int = 1,
    group: str = "default",
    node_ids: list[str] | None = None,
    lease_timeout: float = 10.0,
    options: PoolOptions | None = None,
    ready_timeout: float = 120.0,
) -> NodePools:
    """Start one pool actor on each node (``node_ids``, default: every alive node with the CPUs).

    Call after ``ray.init`` (in the driver). Each actor reserves ``workers_per_node`` CPUs, is
    pinned to its node and restarted there by Ray whenever it dies.

    Raises:
        SpecError: bad counts, or no node with ``workers_per_node`` CPUs.
        ray.exceptions.RayActorError, GetTimeoutError: a pool did not start within ``ready_timeout``.
    """
    if envs_per_node < 1 or workers_per_node < 1 or workers_per_node > envs_per_node:
        raise SpecError(
            f"envs_per_node/workers_per_node: need 1 <= workers_per_node <= envs_per_node, got "
            f"{workers_per_node} and {envs_per_node}"
        )
    if node_ids is None:
        node_ids = [
            node["NodeID"]
            for node in ray.nodes()
            if node["Alive"] and node["Resources"].get("CPU", 0) >= workers_per_node
        ]
    if not node_ids:
        raise SpecError(f"workers_per_node: no alive Ray node has {workers_per_node} CPUs for a pool")
    remote_cls = ray.remote(NodePoolActor)
    pools = NodePools(group)
    try:
        for node_id in node_ids:
            pools.actors[node_id] = remote_cls.options(
                name=actor_name(group, node_id),
                num_cpus=workers_per_node,
                max_restarts=-1,
                max_task_retries=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            ).remote(spec, envs_per_node, workers_per_node, lease_timeout, options or PoolOptions())
        pools.addresses(timeout=ready_timeout)
    except BaseException:
        pools.close()
        raise
    return pools
