"""The step lane (pool_env.daemon.lane) on a real daemon process: steps of a same-host trainer go
on it with SyncVectorEnv's results; only its lease may open it; its descriptors close with the lease
or the trainer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import pool_env
from pool_env import GymEnvSpec
from pool_env.daemon.lane import LaneClient
from pool_env.daemon.wire import ClientOp
from tests.conditions import wait_until
from tests.integration.daemon_process import DaemonProcess
from tests.integration.reference import assert_same, make_reference
from tests.processes import reap

pytestmark = pytest.mark.timeout(60)

CARTPOLE = GymEnvSpec("CartPole-v1")
FIELDS = ("obs", "reward", "terminated", "truncated", "infos")


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with DaemonProcess(envs=4, workers=2, lease_timeout=1.0) as process:
        yield process


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_steps_go_on_the_lane_with_sync_vector_env_results(daemon: DaemonProcess) -> None:
    with (
        pool_env.connect(daemon.endpoint, num_envs=3) as env,
        contextlib.closing(make_reference(CARTPOLE, 3)) as ref,
    ):
        session = env._sessions[0]
        assert session.lane is not None, "an ipc lease in shared memory gets a step lane"
        posted: list[int] = []
        post = session.lane.post
        session.lane.post = lambda request_id: (posted.append(request_id), post(request_id))[1]  # type: ignore[method-assign]
        assert_same(env.reset(seed=5), ref.reset(seed=5), "reset")
        rng = np.random.default_rng(0)
        ended = 0
        for t in range(200):
            actions = rng.integers(0, 2, 3)
            got, want = env.step(actions), ref.step(actions)
            for name, actual, expected in zip(FIELDS, got, want, strict=True):
                assert_same(actual, expected, f"step {t} {name}")
            ended += int(np.sum(want[2] | want[3]))
        assert ended > 0, "the run must include autoresets"
        assert len(posted) == 200, "every step went on the lane"


def test_frames_leases_get_no_lane_and_a_lane_needs_a_lease_of_this_user(daemon: DaemonProcess) -> None:
    with pool_env.connect(daemon.endpoint, num_envs=1, shared_memory=False) as frames:
        assert frames._sessions[0].lane is None
        frames.reset(seed=0)
        frames.step(np.zeros(1, dtype=np.int64))
    with pool_env.connect(daemon.endpoint, num_envs=1) as env:
        session = env._sessions[0]
        assert session.lane is not None
        lane_name = _lane_name(daemon)
        with pytest.raises(OSError):
            LaneClient.connect(lane_name, "not-a-lease", 5.0)
        with pytest.raises(OSError):  # one lane per lease
            LaneClient.connect(lane_name, str(session.lease_id), 5.0)
        env.reset(seed=1)
        env.step(np.zeros(1, dtype=np.int64))  # the refused attempts did not disturb the lease


def _lane_name(daemon: DaemonProcess) -> str:
    """The daemon's lane socket name, from the reply to a lease of one slot (released at once)."""
    with pool_env.connect(daemon.endpoint, num_envs=1) as env:
        session = env._sessions[0]
        reply = session.request(ClientOp.LEASE, {"num_envs": 1, "shm": True})
        session.request(ClientOp.RELEASE, {"lease": reply.header["lease"]})
        return str(reply.header["lane"])


_TRAINER = """
import sys
import numpy as np
import pool_env
env = pool_env.connect(sys.argv[1], num_envs=1, timeout=30)
assert env._sessions[0].lane is not None
env.reset(seed=0)
env.step(np.zeros(1, dtype=np.int64))
print("stepped", flush=True)
sys.stdin.read()
"""


def test_a_lane_closes_with_its_lease_and_with_a_killed_trainer(daemon: DaemonProcess) -> None:
    before = _open_fds(daemon.pid)
    with pool_env.connect(daemon.endpoint, num_envs=2) as env:
        env.reset(seed=0)
        env.step(np.zeros(2, dtype=np.int64))
        assert _open_fds(daemon.pid) > before
    wait_until(lambda: _open_fds(daemon.pid) <= before, 10, "the released lease's lane closed")
    trainer = subprocess.Popen(
        [sys.executable, "-c", _TRAINER, daemon.endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert trainer.stdout is not None and trainer.stdout.readline().strip() == "stepped"
        assert _open_fds(daemon.pid) > before
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        wait_until(lambda: _open_fds(daemon.pid) <= before, 10, "the killed trainer's lane closed")
    finally:
        if trainer.stdin is not None:
            trainer.stdin.close()
        if trainer.stdout is not None:
            trainer.stdout.close()
        reap(trainer)
