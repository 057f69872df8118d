"""Trainers on a real daemon process: same results as SyncVectorEnv, leases, status, versions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

import pool_env
from pool_env import GymEnvSpec, protocol
from pool_env.daemon import session as session_module
from pool_env.daemon import wire
from tests.integration.daemon_process import DaemonProcess, cli, raw_socket
from tests.integration.reference import assert_same, make_reference

pytestmark = pytest.mark.timeout(60)

CARTPOLE = GymEnvSpec("CartPole-v1")
FIELDS = ("obs", "reward", "terminated", "truncated", "infos")


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with DaemonProcess(envs=6, workers=2, lease_timeout=1.0) as process:
        yield process


def test_two_trainers_at_once_get_their_own_slots_and_sync_vector_env_results(daemon: DaemonProcess) -> None:
    # One trainer reads and writes the daemon's shared memory, the other gets arrays as frames.
    with (
        pool_env.connect(daemon.endpoint, num_envs=2, shared_memory=True) as a,
        pool_env.connect(daemon.endpoint, num_envs=3, shared_memory=False) as b,
        contextlib.closing(make_reference(CARTPOLE, 2)) as ref_a,
        contextlib.closing(make_reference(CARTPOLE, 3)) as ref_b,
    ):
        assert isinstance(a, pool_env.RemoteVectorEnv) and a.num_envs == 2 and b.num_envs == 3
        assert a.single_observation_space == ref_a.single_observation_space
        assert b.action_space == ref_b.action_space
        assert a.metadata["autoreset_mode"] == ref_a.metadata["autoreset_mode"]
        for env, ref, seed in ((a, ref_a, 11), (b, ref_b, 42)):
            got, want = env.reset(seed=seed), ref.reset(seed=seed)
            assert_same(got[0], want[0], "reset obs")
            assert_same(got[1], want[1], "reset infos")
        rng = np.random.default_rng(3)
        ended = 0
        for t in range(250):
            actions_a, actions_b = rng.integers(0, 2, 2), rng.integers(0, 2, 3)
            a.step_async(actions_a)
            b.step_async(actions_b)  # both commands in flight in the daemon at once
            for env, ref, actions in ((b, ref_b, actions_b), (a, ref_a, actions_a)):
                got, want = env.step_wait(timeout=10), ref.step(actions)
                for name, actual, expected in zip(FIELDS, got, want, strict=True):
                    assert_same(actual, expected, f"step {t} {name}")
                ended += int(np.sum(want[2] | want[3]))
        assert ended > 0, "the run must include autoresets"
        assert not (set(a._sessions[0].slots) & set(b._sessions[0].slots))


def test_reset_envs_changes_only_the_chosen_slot(daemon: DaemonProcess) -> None:
    with pool_env.connect(daemon.endpoint, num_envs=3) as env, contextlib.closing(make_reference(CARTPOLE, 1)) as lone:
        before, _ = env.reset(seed=0)
        after, _ = env.reset_envs([1], seeds=[99])
        lone_obs, _ = lone.reset(seed=99)
        assert_same(after[[0, 2]], before[[0, 2]], "untouched slots")
        assert_same(after[1], lone_obs[0], "reset slot")


def test_wrong_call_order_and_wrong_actions_are_clear_errors(daemon: DaemonProcess) -> None:
    with pool_env.connect(daemon.endpoint, num_envs=2) as env:
        with pytest.raises(pool_env.UsageError, match="reset"):
            env.step(np.zeros(2, dtype=np.int64))
        env.reset(seed=1)
        with pytest.raises(pool_env.InvalidActionError, match=r"shape \(3,\), expected \(2,\)"):
            env.step(np.zeros(3, dtype=np.int64))
        with pytest.raises(pool_env.InvalidActionError, match="outside the action space"):
            env.step(np.array([0, 5]))
        with pytest.raises(pool_env.NoPendingCallError):
            env.step_wait()
        env.step_async(np.zeros(2, dtype=np.int64))
        with pytest.raises(pool_env.AlreadyPendingError):
            env.step_async(np.zeros(2, dtype=np.int64))
        env.step_wait(timeout=10)
    with pytest.raises(pool_env.ClosedError):
        env.reset()


def test_asking_for_more_slots_than_are_free_names_what_is_free(daemon: DaemonProcess) -> None:
    with (
        pool_env.connect(daemon.endpoint, num_envs=4),  # all of worker 0 (slots 0-2), then slot 3
        pytest.raises(pool_env.LeaseError, match=r"asked for 3 slots but only 2 of 6 are free \[4-5\]"),
    ):
        pool_env.connect(daemon.endpoint, num_envs=3)


def test_a_client_of_another_protocol_version_gets_an_error_naming_both(
    daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "PROTOCOL_VERSION", 999)
    with pytest.raises(pool_env.VersionMismatchError, match="client speaks version 999, the daemon speaks version 2"):
        pool_env.connect(daemon.endpoint, num_envs=1, handshake_timeout=5)
    assert session_module.wire.PROTOCOL_VERSION == 999  # the session really sent 999


def test_status_prints_a_table_and_json(daemon: DaemonProcess) -> None:
    with pool_env.connect(daemon.endpoint, num_envs=2) as env:
        env.reset(seed=0)
        env.step(np.zeros(2, dtype=np.int64))
        stats = env.stats()
        assert stats["num_envs"] == 2 and len(stats["workers"]) == 2
        table = cli("status", daemon.endpoint)
        document = cli("status", daemon.endpoint, "--json")
    assert table.returncode == 0, table.stderr
    for text in ("workers:", "restarts", "steps/s", "cpu%", "rss", "leases (1):", "uptime", "faults recovered"):
        assert text in table.stdout
    status = json.loads(document.stdout)
    assert status["num_envs"] == 6 and status["free_slots"] == 4 and len(status["leases"]) == 1
    assert {"pid", "slots", "state", "restarts", "steps_per_s", "cpu_percent", "rss"} <= set(status["workers"][0])
    assert [w["state"] for w in status["workers"]] == ["running", "running"]


def test_status_of_a_daemon_that_is_not_there_fails_fast(tmp_path: object) -> None:
    result = cli("status", f"ipc://{tmp_path}/nobody.sock", "--timeout", "0.5")
    assert result.returncode == 2 and "no answer from the daemon" in result.stderr


def test_a_second_daemon_on_the_same_endpoint_fails_with_a_clear_message(daemon: DaemonProcess) -> None:
    result = cli("serve", "--spec", "gym:CartPole-v1", "--envs", "2", "--bind", daemon.endpoint)
    assert result.returncode == 2
    assert f"another daemon is already serving {daemon.endpoint}" in result.stderr
    with pool_env.connect(daemon.endpoint, num_envs=1) as env:  # the first one still serves
        env.reset(seed=0)


def test_raw_requests_get_error_replies_with_their_id(daemon: DaemonProcess) -> None:
    context = zmq.Context()
    sock = raw_socket(context, daemon.endpoint)
    try:
        sock.send(protocol.encode({"v": wire.PROTOCOL_VERSION, "id": 5, "op": "step", "lease": "nope"}))
        assert sock.poll(5000)
        reply = protocol.decode(sock.recv())
        assert reply["id"] == 5 and reply["ok"] is False
        assert reply["error"]["class"] == "LeaseError" and "unknown lease" in reply["error"]["message"]
    finally:
        sock.close(linger=0)
        context.term()
