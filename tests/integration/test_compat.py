"""pool_env.compat: the challenge client's names and shapes, backed by the self-healing pool."""

from __future__ import annotations

import os
import signal
import uuid

import numpy as np

from pool_env.compat import create_student_gym_env_vectorized
from pool_env.refserver.process import RefServer


def test_a_notebook_loop_written_for_the_challenge_client_runs_unchanged(server: RefServer) -> None:
    token = f"compat-{uuid.uuid4().hex[:6]}"
    env = create_student_gym_env_vectorized(num_envs=6, step_size=10, user_token=token, server_url=server.url)
    with env:
        obs, infos = env.reset(seed=0)
        assert obs.shape == (6, 9) and obs.dtype == np.float32
        assert len(infos) == 6 and all(not i["terminated"] for i in infos)
        assert env.get_active_count() == 6 and env.get_terminated_env_indices() == []
        actions = np.array([0, 0, 0, 0, 2, 2])  # two engines are sold: a 1-row chunk, +150, terminated
        obs_list, rewards, terminateds, truncateds, infos = env.step(actions)
        assert [o.shape for o in obs_list] == [(10, 9)] * 4 + [(1, 9)] * 2
        assert rewards.dtype == np.float32 and rewards[4] == rewards[5] == 150.0
        assert terminateds.tolist() == [False] * 4 + [True] * 2 and not truncateds.any()
        assert [i["step"] for i in infos] == [10] * 4 + [1] * 2
        assert infos[4]["reason"] == "sold" and infos[4]["terminated"] is True
        assert env.get_terminated_env_indices() == [4, 5] and env.get_active_count() == 4
        reset_obs, reset_infos = env.reset_specific_envs(env.get_terminated_env_indices())
        assert reset_obs.shape == (2, 9) and len(reset_infos) == 2
        assert env.get_active_count() == 6
        obs_list, rewards, terminateds, _, infos = env.step(np.zeros(6, dtype=np.int64))
        assert [i["step"] for i in infos] == [20] * 4 + [10] * 2, "reset envs start a fresh episode"


def test_one_failed_worker_no_longer_terminates_every_env(server: RefServer) -> None:
    token = f"compat-{uuid.uuid4().hex[:6]}"
    with create_student_gym_env_vectorized(
        num_envs=4, step_size=10, user_token=token, server_url=server.url, num_workers=2
    ) as env:
        env.reset(seed=1)
        os.kill(env.pool.worker_pids[0], signal.SIGKILL)
        _, _, terminateds, truncateds, infos = env.step(np.zeros(4, dtype=np.int64))
        assert truncateds.tolist() == [True, True, False, False]
        assert not terminateds.any()
        assert "error" in infos[0] and "error" not in infos[2]
        _, _, _, truncateds, infos = env.step(np.zeros(4, dtype=np.int64))
        assert not truncateds.any() and all("error" not in i for i in infos)
        assert env.get_active_count() == 4
