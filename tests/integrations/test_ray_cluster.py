"""Many machines through Ray: one pool per node (a simulated 3-node ``ray.cluster_utils.Cluster``),
each env runner attached to its own node's pool over ipc, and a pool actor killed mid-training
restarted by Ray on its node while the runner there heals its slots."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.rllib.algorithms.ppo import PPOConfig

from pool_env import DaemonUnavailableError, GymEnvSpec
from pool_env.ray import NodePools, NodePoolVectorEnv, PoolEnvRunner, register_node_pool_env, start_node_pools
from pool_env.ray.env_runner import FAILED_EPISODES_LIFETIME
from tests.conftest import LeakSnapshot
from tests.integrations.conftest import fail_on_leaks

NUM_NODES = 3
CPUS_PER_NODE = 2  # one for the node's pool (its one worker), one for the node's env runner
ENVS_PER_RUNNER = 2

pytestmark = pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0:UserWarning")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three Ray nodes on this machine (a head and two workers), 2 CPUs each; nothing left afterwards."""
    snapshot = LeakSnapshot()
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": CPUS_PER_NODE, "object_store_memory": 80 * 2**20, "include_dashboard": False},
    )
    try:
        for _ in range(NUM_NODES - 1):
            nodes.add_node(num_cpus=CPUS_PER_NODE, object_store_memory=80 * 2**20)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        fail_on_leaks(snapshot, "the cluster tests")


@pytest.fixture
def pools(cluster: Cluster) -> Iterator[NodePools]:
    spec = GymEnvSpec("CartPole-v1")
    with start_node_pools(spec, envs_per_node=4, workers_per_node=1, group="cartpole") as node_pools:
        yield node_pools


def runner_attachments(algo: Any) -> list[dict[str, Any]]:
    """Per remote env runner: its node, pid, the pool it is attached to, and how often it re-attached."""

    def describe(runner: Any) -> dict[str, Any]:
        env = runner.env.unwrapped
        assert isinstance(env, NodePoolVectorEnv)
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "runner_pid": os.getpid(),
            "pool": dict(env.attachment),
            "reattachments": env.reattachments,
        }

    return list(algo.env_runner_group.foreach_env_runner(describe, local_env_runner=False))


def test_each_runner_uses_its_own_nodes_pool_and_heals_when_that_pool_is_killed(pools: NodePools) -> None:
    addresses = pools.addresses()
    assert len(addresses) == NUM_NODES
    assert all(a["node_id"] == node and a["endpoint"].startswith("ipc://") for node, a in addresses.items())

    config = (
        PPOConfig()
        .environment(register_node_pool_env("pool-nodes", group="cartpole", timeout=3.0))
        .env_runners(
            num_env_runners=NUM_NODES,
            num_envs_per_env_runner=ENVS_PER_RUNNER,
            num_cpus_per_env_runner=1,
            gym_env_vectorize_mode="vector_entry_point",
            env_runner_cls=PoolEnvRunner,
        )
        .training(train_batch_size_per_learner=120, minibatch_size=60, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        algo.train()
        before = runner_attachments(algo)
        # one runner per node (each node has one CPU left for a runner), each on its own node's pool
        assert sorted(r["node_id"] for r in before) == sorted(addresses)
        for runner in before:
            assert runner["pool"] == addresses[runner["node_id"]]
            assert runner["reattachments"] == 0

        victim_node = next(node for node in addresses if node != ray.get_runtime_context().get_node_id())
        os.kill(addresses[victim_node]["pid"], signal.SIGKILL)  # the pool actor's process, with its daemon
        algo.train()
        result = algo.train()
        after = runner_attachments(algo)
    finally:
        algo.stop()

    restarted = pools.addresses()
    assert restarted[victim_node]["node_id"] == victim_node  # Ray restarted it on the same node
    assert restarted[victim_node]["pid"] != addresses[victim_node]["pid"]
    by_node = {r["node_id"]: r for r in after}
    assert sorted(by_node) == sorted(addresses)
    for node, runner in by_node.items():
        assert runner["runner_pid"] == next(b["runner_pid"] for b in before if b["node_id"] == node)  # same runner
        assert runner["pool"] == restarted[node]  # still its own node's pool, now the restarted one there
        assert runner["reattachments"] == (1 if node == victim_node else 0)
    # the victim runner's slots in an episode were cut by the loss: failures, out of the episode stats
    assert result["env_runners"][FAILED_EPISODES_LIFETIME] >= 1


def test_a_runner_on_a_node_without_a_pool_fails_naming_start_node_pools(cluster: Cluster) -> None:
    @ray.remote(num_cpus=0)
    def attach() -> str:
        try:
            NodePoolVectorEnv("no-such-group", 2, attach_timeout=10.0)
        except DaemonUnavailableError as exc:
            return str(exc)
        return "attached"

    message = ray.get(attach.remote(), timeout=60)
    assert message.startswith("no pool_env node pool of group 'no-such-group' on node ")
    assert "pool_env.ray.start_node_pools(...)" in message
