"""Users' envs with bugs of their own: one rule, the README's failure table.

* A return that breaks the declared contract raises at once (``InvalidEnvReturnError``, a
  ``ValueError`` as in ``SyncVectorEnv``) naming the slot, the field, what was expected and what
  came; the worker lives and the other slots keep their episodes.
* An exception inside the env truncates its slot (``on_env_error="truncate"``) or is raised in
  the trainer with the remote traceback (``on_env_error="raise"``).
* A slot whose env raises ``env_failure_limit`` times in a row, or a pool whose workers were all
  given up on, raises a clear error instead of returning truncated batches forever.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import SyncVectorEnv

from pool_env import GymEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.envs.callables import EnvFnsSpec
from pool_env.errors import (
    EnvFailingError,
    EnvRaisedError,
    InvalidEnvReturnError,
    PoolGaveUpError,
    SpaceMismatchError,
)
from tests.envs.user_bugs import BadReturnEnv

pytestmark = pytest.mark.timeout(60)

ZEROS4 = np.zeros(4, np.int64)
EXPECTED = {  # field -> (what the message says was expected, what came)
    "reward": ("a real scalar", "ndarray of shape (1,) and dtype float64"),
    "observation": ("shape (1,) and dtype float32", "ndarray of shape (3, 1) and dtype float32"),
    "observation dtype": ("dtype float32 or one that casts to it", "ndarray of shape (1,) and dtype complex128"),
    "terminated": ("a bool", "NoneType None"),
    "truncated": ("a bool", "ndarray of shape (1,) and dtype float64"),
    "info": ("a dict", "list ['not', 'a', 'dict']"),
}


def bad_return_spec(field: str, bad_seeds: tuple[int, ...] = (1,)) -> GymEnvSpec:
    return GymEnvSpec("tests.envs.user_bugs:BadReturnEnv", field=field, bad_seeds=list(bad_seeds))


@pytest.mark.parametrize("field", sorted(EXPECTED))
def test_a_return_breaking_the_contract_raises_naming_slot_field_expected_and_got(field: str) -> None:
    expected, got = EXPECTED[field]
    with PoolVectorEnv(bad_return_spec(field), num_envs=4, num_workers=1) as env:
        env.reset(seed=0)
        with pytest.raises(InvalidEnvReturnError) as caught:
            env.step(ZEROS4)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and caught.value.slot == 1
    assert message.startswith("slot 1 (worker 0, pid "), message
    assert f"step() returned an invalid {field.split()[0]}" in message, message
    assert f"expected {expected}" in message and f"got {got}" in message, message


@pytest.mark.parametrize("field", ["reward", "observation"])
def test_sync_vector_env_raises_value_error_for_the_same_returns(field: str) -> None:
    """The cases gymnasium itself refuses (numpy 2): our error is a ValueError like theirs."""
    sync = SyncVectorEnv([lambda: BadReturnEnv(field)] * 4)
    sync.reset(seed=0)
    with pytest.raises(ValueError):
        sync.step(ZEROS4)
    sync.close()
    assert issubclass(InvalidEnvReturnError, ValueError)


def test_a_bad_reset_observation_raises_from_reset_and_reset_envs() -> None:
    """Case all_workers_given_up: reset returns (3, 1) rows for a (1,) space."""
    with PoolVectorEnv(bad_return_spec("reset observation", (0, 1)), num_envs=2, num_workers=1) as env:
        pid = env.worker_pids
        for reset in (lambda: env.reset(seed=0), lambda: env.reset_envs([1], seeds=[1])):
            with pytest.raises(
                InvalidEnvReturnError, match=r"reset\(\) returned an invalid observation: expected shape"
            ):
                reset()
        assert env.worker_pids == pid


def test_one_bad_slot_keeps_its_worker_and_its_neighbours_episodes() -> None:
    """Case c01c: only slot 1 misbehaves; slots 0, 2, 3 share its worker."""
    with PoolVectorEnv(bad_return_spec("reward"), num_envs=4, num_workers=1) as env:
        env.reset(seed=0)
        pid = env.worker_pids
        with pytest.raises(InvalidEnvReturnError, match=r"^slot 1 "):
            env.step(ZEROS4)
        # The next step resets slot 1 (its episode ended with the bug); the others step on.
        obs, reward, terminated, truncated, infos = env.step(ZEROS4)
        assert obs[:, 0].tolist() == [2.0, 0.0, 2.0, 2.0]
        assert reward.tolist() == [1.0, 0.0, 1.0, 1.0]
        assert not truncated.any() and not terminated.any() and "error" not in infos
        with pytest.raises(InvalidEnvReturnError, match=r"^slot 1 "):
            env.step(ZEROS4)
        obs, *_ = env.step(ZEROS4)
        assert obs[:, 0].tolist() == [4.0, 0.0, 4.0, 4.0]
        assert env.worker_pids == pid, "the worker was never replaced"
        row = env.stats()["workers"][0]
        assert row["restarts"] == 0 and row["state"] == "running"
        assert env.stats()["counters"]["invalid_env_returns"] == 2


def flaky_spec(every: int, bad_seeds: tuple[int, ...] | None = (0,)) -> GymEnvSpec:
    seeds = None if bad_seeds is None else list(bad_seeds)
    return GymEnvSpec("tests.envs.user_bugs:FlakyEnv", every=every, bad_seeds=seeds)


def test_env_exception_truncates_only_its_slot_by_default() -> None:
    with PoolVectorEnv(flaky_spec(2), num_envs=4, num_workers=2) as env:
        env.reset(seed=0)
        pids = env.worker_pids
        env.step(ZEROS4)
        obs, reward, _, truncated, infos = env.step(ZEROS4)
        assert truncated.tolist() == [True, False, False, False] and reward.tolist() == [0.0, 1.0, 1.0, 1.0]
        assert infos["_error"].tolist() == [True, False, False, False]
        assert "RuntimeError: flaky env failed at step 2" in infos["error"][0] and "Traceback" in infos["error"][0]
        assert obs[1:, 0].tolist() == [2.0, 2.0, 2.0]
        assert env.worker_pids == pids


def test_on_env_error_raise_re_raises_with_slot_pid_episode_step_and_remote_traceback() -> None:
    options = PoolOptions(on_env_error="raise")
    with PoolVectorEnv(flaky_spec(2, bad_seeds=(3,)), num_envs=4, num_workers=2, options=options) as env:
        env.reset(seed=0)
        env.step(ZEROS4)
        worker_pid = env.stats()["workers"][1]["pid"]
        with pytest.raises(EnvRaisedError) as caught:
            env.step(ZEROS4)
        message = str(caught.value)
        assert caught.value.slot == 3
        assert f"slot 3 (worker 1, pid {worker_pid}, episode 1, step 2)" in message, message
        assert "Traceback (most recent call last)" in message and "RuntimeError: flaky env failed at step 2" in message
        # The pool goes on: slot 3 starts a new episode, its neighbours keep theirs.
        obs, *_ = env.step(ZEROS4)
        assert obs[:, 0].tolist() == [3.0, 3.0, 3.0, 0.0]
        assert env.stats()["workers"][1]["pid"] == worker_pid


def test_a_slot_whose_env_raises_k_times_in_a_row_raises_naming_slot_env_and_cause() -> None:
    options = PoolOptions(env_failure_limit=3)
    with PoolVectorEnv(flaky_spec(1, bad_seeds=None), num_envs=2, num_workers=1, options=options) as env:
        env.reset(seed=0)
        steps = 0
        with pytest.raises(EnvFailingError) as caught:
            for _ in range(20):
                steps += 1
                env.step(np.zeros(2, np.int64))
        # raise, reset, raise, reset, raise: the third exception in a row without a good step.
        assert steps == 5
        message = str(caught.value)
        assert caught.value.slot == 0 and message.startswith(
            "slot 0: env 'tests.envs.user_bugs:FlakyEnv' raised 3 times"
        )
        assert re.search(r"Last cause: slot 0 \(.*\): step raised in the env:.*RuntimeError: flaky env", message, re.S)


def test_an_env_that_raises_between_good_steps_is_only_truncated() -> None:
    options = PoolOptions(env_failure_limit=2)
    with PoolVectorEnv(flaky_spec(2, bad_seeds=None), num_envs=2, num_workers=1, options=options) as env:
        env.reset(seed=0)
        truncations = 0
        for _ in range(30):
            _, _, _, truncated, _ = env.step(np.zeros(2, np.int64))
            truncations += int(truncated[0])
        assert truncations == 10  # good step, exception, reset: one in three


def test_a_pool_whose_workers_were_all_given_up_raises_from_step_and_reset() -> None:
    options = PoolOptions(flap_limit=2, restart_backoff=0.0, restart_backoff_cap=0.0)
    spec = GymEnvSpec("tests.envs.faulty:make_crashing_env", target_worker=0)
    with PoolVectorEnv(spec, num_envs=2, num_workers=1, options=options) as env:
        env.reset(seed=0)
        steps = 0
        with pytest.raises(PoolGaveUpError) as caught:
            for _ in range(50):
                steps += 1
                env.step(np.zeros(2, np.int64))
        assert steps <= 6
        message = str(caught.value)
        assert "every worker of this pool was given up on (env 'tests.envs.faulty:make_crashing_env')" in message
        assert "Slot 0 (worker 0)" in message and "exited with code 3" in message
        with pytest.raises(PoolGaveUpError):
            env.reset(seed=1)
        with pytest.raises(PoolGaveUpError):
            env.step(np.zeros(2, np.int64))


@pytest.mark.parametrize(
    ("which", "declared", "pools"),
    [
        ("observation", "Box(-100.0, 100.0, (3,), float32)", "Box(-100.0, 100.0, (1,), float32)"),
        ("action", "Discrete(3)", "Discrete(2)"),
    ],
)
def test_an_env_declaring_other_spaces_than_the_pools_fails_construction(which: str, declared: str, pools: str) -> None:
    spec = GymEnvSpec("tests.envs.user_bugs:SpaceBySlotEnv", which=which)
    with pytest.raises(SpaceMismatchError) as caught:
        PoolVectorEnv(spec, num_envs=2, num_workers=1)
    assert str(caught.value).startswith(f"slot 1: its env declares {which}_space {declared}, but the pool's is {pools}")


def test_through_a_daemon_a_contract_break_raises_the_same_error_and_the_daemon_stays_up() -> None:
    import pool_env
    from tests.integration.daemon_process import DaemonProcess

    with DaemonProcess("gym:tests.envs.user_bugs:BadReturnEnv", envs=4, workers=1) as daemon:
        with pool_env.connect(daemon.endpoint, num_envs=4) as env:
            env.reset(seed=0)
            with pytest.raises(
                InvalidEnvReturnError, match=r"^daemon at ipc://.*: slot 1 \(.*\): step\(\) returned an invalid reward"
            ):
                env.step(ZEROS4)
            obs, *_ = env.step(ZEROS4)
            assert obs[:, 0].tolist() == [2.0, 0.0, 2.0, 2.0]
        assert daemon.proc is not None and daemon.proc.poll() is None


def test_env_fns_whose_envs_declare_different_spaces_fail_construction_naming_the_slot() -> None:
    def wide() -> BadReturnEnv:
        env = BadReturnEnv()
        env.observation_space = spaces.Box(-100, 100, (3,), np.float32)
        return env

    with pytest.raises(
        SpaceMismatchError, match=r"^slot 2: its env declares observation_space Box\(-100.0, 100.0, \(3,\)"
    ):
        PoolVectorEnv(EnvFnsSpec.from_callables([BadReturnEnv, BadReturnEnv, wide]), num_envs=3, num_workers=1)
