"""Users' machines: a ``workers`` module in the trainer's directory, a long ``TMPDIR``, and the
run directory of a trainer killed with ``kill -9`` together with its workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from pool_env import GymEnvSpec, PoolEnvError, PoolVectorEnv, ownership
from pool_env.supervisor import rundir
from pool_env.supervisor.rundir import IPC_PATH_MAX, RUN_DIR_PREFIX, sweep_stale_run_dirs
from tests.conditions import wait_until
from tests.processes import reap

pytestmark = pytest.mark.timeout(60)

TRAINER = """
import json
import numpy as np
import pool_env

with pool_env.PoolVectorEnv(pool_env.GymEnvSpec("my_envs:make_env"), num_envs=2, num_workers=2) as env:
    env.reset(seed=0)
    _, _, _, truncated, infos = env.step(np.zeros(2, dtype=np.int64))
    print(json.dumps({"errors": [str(e) for e in infos.get("error", ["", ""])], "truncated": truncated.tolist()}))
"""

MY_ENVS = """
import gymnasium as gym

def make_env():
    return gym.make("CartPole-v1")
"""


@pytest.mark.parametrize("shadow", ["workers.py", "workers/__init__.py"])
def test_a_workers_module_next_to_the_training_script_does_not_shadow_the_pool_workers(
    tmp_path: Path, shadow: str
) -> None:
    (tmp_path / shadow).parent.mkdir(exist_ok=True)
    (tmp_path / shadow).write_text("raise SystemExit('the user workers module was imported')\n")
    (tmp_path / "my_envs.py").write_text(MY_ENVS)  # next to the script: an env import string target
    (tmp_path / "train.py").write_text(TRAINER)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"errors": ["", ""], "truncated": [False, False]}


def long_directory(root: str) -> str:
    path = os.path.join(root, *(["d" * 40] * 3))
    os.makedirs(path, exist_ok=True)
    return path


def test_a_long_tmpdir_still_starts_the_pool_with_a_socket_path_within_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", long_directory(tempfile.gettempdir()))
    assert len(os.path.join(tempfile.gettempdir(), "pool_env_123_abcdefgh", "control")) > IPC_PATH_MAX
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs=2, num_workers=1) as env:
        env.reset(seed=0)
        run_dir = env._coordinator.socket_dir
        assert run_dir.startswith(rundir.FALLBACK_DIR + os.sep)
        assert len(env._coordinator.endpoint) - len("ipc://") <= IPC_PATH_MAX
    assert not os.path.exists(run_dir)


def test_no_short_enough_directory_is_a_pool_env_error_naming_tmpdir_and_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long = long_directory(tempfile.gettempdir())
    monkeypatch.setattr(tempfile, "tempdir", long)
    monkeypatch.setattr(rundir, "FALLBACK_DIR", long)
    with pytest.raises(PoolEnvError, match=rf"limited to {IPC_PATH_MAX} bytes: set TMPDIR to a short"):
        PoolVectorEnv(GymEnvSpec("CartPole-v1"), num_envs=2, num_workers=1)


KILLED_TRAINER = """
import json, time
import pool_env
env = pool_env.PoolVectorEnv(pool_env.GymEnvSpec("CartPole-v1"), num_envs=2, num_workers=2)
print(json.dumps({"workers": env.worker_pids, "run_dir": env._coordinator.socket_dir}), flush=True)
time.sleep(600)
"""


def test_the_run_dir_of_a_trainer_killed_with_its_workers_is_swept_but_a_live_owners_is_kept() -> None:
    trainer = subprocess.Popen([sys.executable, "-c", KILLED_TRAINER], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None
        started = json.loads(trainer.stdout.readline())
        for pid in started["workers"]:
            os.kill(pid, signal.SIGSTOP)  # they cannot clean up after their trainer ...
        trainer.kill()
        trainer.wait(10)
        for pid in started["workers"]:
            os.kill(pid, signal.SIGKILL)  # ... and die with it (OOM killer, container stop)
        wait_until(lambda: not any(psutil.pid_exists(p) for p in started["workers"]), 10, "workers are gone")
    finally:
        reap(trainer)
    run_dir = started["run_dir"]
    assert os.path.isdir(run_dir)

    # Another pool's directory whose pid means nothing here (another PID namespace): its lock is held.
    foreign = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{trainer.pid}_", dir=os.path.dirname(run_dir))
    fd = ownership.hold(foreign)
    try:
        removed = sweep_stale_run_dirs([os.path.dirname(run_dir)])
        assert removed == [run_dir] and not os.path.exists(run_dir)
        assert os.path.isdir(foreign), "a directory whose owner holds its lock is kept, whatever its pid"
    finally:
        ownership.release(fd)
    assert sweep_stale_run_dirs([os.path.dirname(run_dir)]) == [foreign]
