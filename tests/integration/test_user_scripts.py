"""Training scripts as users write them: ids registered at run time, and a missing main guard.

Each script runs as ``python script.py`` in its own directory (a subprocess, as a user runs it):
what the pool does with ``__main__`` only shows there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import pool_env
from pool_env import errors

SCRIPT_TIMEOUT = 120.0

SMALL_ENVS = '''
import numpy as np
import gymnasium as gym

class OffsetEnv(gym.Env):
    observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, (1,)).astype(np.float32), {}
    def step(self, action):
        return np.full(1, 10 + action, np.float32), 1.0, False, False, {}
'''

REGISTER_IN_MAIN = '''
import gymnasium as gym
import numpy as np
import pool_env

class MainEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, (1,)).astype(np.float32), {}
    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}

if __name__ == "__main__":
    gym.register("MainClassEnv-v0", entry_point=MainEnv)
    gym.register("RuntimeStringEnv-v0", entry_point="small_envs:OffsetEnv")
    for env_id in ["MainClassEnv-v0", "RuntimeStringEnv-v0"]:
        sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
        with pool_env.PoolVectorEnv(pool_env.GymEnvSpec(env_id), num_envs=3, num_workers=2) as env:
            same = np.array_equal(env.reset(seed=4)[0], sync.reset(seed=4)[0])
            same &= np.array_equal(env.step(np.array([1, 0, 1]))[0], sync.step(np.array([1, 0, 1]))[0])
        sync.close()
        print(env_id, "same as sync:", same, flush=True)
'''

NO_MAIN_GUARD = '''
import os
import gymnasium as gym
import numpy as np
import pool_env

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"), "a") as log:
    log.write(f"{os.getpid()} {__name__}\\n")
if sum(1 for _ in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"))) > 6:
    raise SystemExit("safety valve: workers are starting workers")

class MyEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}
    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}

# no `if __name__ == "__main__":` guard: the usual first version of a training script
env = pool_env.PoolVectorEnv(pool_env.GymEnvSpec("no_guard:MyEnv"), num_envs=2, num_workers=1)
print("pool started", flush=True)
env.close()
'''


def _run(directory: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, name], cwd=directory, capture_output=True, text=True, check=False, timeout=SCRIPT_TIMEOUT
    )


def test_ids_registered_in_the_training_script_work_in_the_workers(tmp_path: Path) -> None:
    (tmp_path / "small_envs.py").write_text(textwrap.dedent(SMALL_ENVS))
    (tmp_path / "register_in_main.py").write_text(textwrap.dedent(REGISTER_IN_MAIN))
    done = _run(tmp_path, "register_in_main.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["MainClassEnv-v0 same as sync: True", "RuntimeStringEnv-v0 same as sync: True"]


def test_a_script_without_its_main_guard_fails_fast_naming_the_guard_and_no_worker_starts_workers(
    tmp_path: Path,
) -> None:
    (tmp_path / "no_guard.py").write_text(textwrap.dedent(NO_MAIN_GUARD))
    started = time.monotonic()
    done = _run(tmp_path, "no_guard.py")
    elapsed = time.monotonic() - started
    assert done.returncode != 0 and "pool started" not in done.stdout
    assert "inside a pool_env worker process" in done.stderr, done.stderr
    assert 'if __name__ == "__main__":' in done.stderr, done.stderr
    imports = (tmp_path / "imports.log").read_text().split()
    # the trainer ran the script, its one worker imported it once, refused to build a pool: nothing more
    assert imports[1::2] == ["__main__", "no_guard"], imports
    assert elapsed < SCRIPT_TIMEOUT


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Ids registered by a test, removed afterwards."""
    ids: list[str] = []
    yield ids
    for env_id in ids:
        gym.registry.pop(env_id, None)


def test_an_id_registered_with_an_entry_point_workers_cannot_import_is_refused_naming_the_fixes(
    registered: list[str],
) -> None:
    class LocalEnv(gym.Env[np.ndarray, int]):
        observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

    gym.register("PoolEnvLocalClass-v0", entry_point=LocalEnv)
    registered.append("PoolEnvLocalClass-v0")
    with pytest.raises(errors.SpecError, match=r"cannot import.*top level of a module.*gym.spec"):
        pool_env.PoolVectorEnv(pool_env.GymEnvSpec("PoolEnvLocalClass-v0"), num_envs=1)


def test_an_entry_point_module_missing_in_the_workers_fails_naming_the_cause_and_the_fix(
    registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = types.ModuleType("pool_env_ghost_module")  # importable here (sys.modules) only

    class GhostEnv(gym.Env[np.ndarray, int]):
        observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            return np.zeros(1, np.float32), {}

    ghost.GhostEnv = GhostEnv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pool_env_ghost_module", ghost)
    gym.register("PoolEnvGhost-v0", entry_point="pool_env_ghost_module:GhostEnv")
    registered.append("PoolEnvGhost-v0")
    with pytest.raises(errors.EnvCreationError, match=r"No module named 'pool_env_ghost_module'.*PYTHONPATH"):
        pool_env.PoolVectorEnv(pool_env.GymEnvSpec("PoolEnvGhost-v0"), num_envs=1)
