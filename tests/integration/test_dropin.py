"""PoolVectorEnv as a drop-in for gymnasium's AsyncVectorEnv: the whole VectorEnv API and the same
values as SyncVectorEnv (infos and options with their types, spaces, seeds, autoreset modes,
reset masks, actions outside the bounds, pickling), compared value for value. The rest of the
VectorEnv API (call, get_attr, set_attr, render, np_random, reset_async, close(terminate=)), big
infos, reset masks, seeds and pickling run both embedded and through a daemon (``open_pool``);
``test_dropin_daemon`` holds what only a daemon has (autoreset modes per lease, plain-data args)."""

from __future__ import annotations

import contextlib
import copy
import pickle
from collections.abc import Callable, Iterator
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import pool_env
from pool_env import CodecError, GymEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.errors import InvalidSeedError, UsageError
from tests.envs import dropin
from tests.integration.daemon_process import DaemonProcess
from tests.integration.reference import (
    assert_same,
    assert_steps_same,
    assert_traces_same,
    assert_values_same,
    cartpole,
    kill_worker_0_mid_episode,
    run_trace,
    sync,
)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
@pytest.mark.parametrize(("num_envs", "num_workers"), [(1, 1), (5, 2), (3, 3)])
def test_each_autoreset_mode_equals_sync_vector_env_bit_for_bit(
    mode: AutoresetMode, num_envs: int, num_workers: int
) -> None:
    spec = GymEnvSpec("CartPole-v1")
    reference = sync(cartpole, num_envs, autoreset_mode=mode)
    with contextlib.closing(reference), PoolVectorEnv(spec, num_envs, num_workers, autoreset_mode=mode) as env:
        assert env.autoreset_mode is mode and env.metadata["autoreset_mode"] is mode
        want, got = run_trace(reference, mode, 120), run_trace(env, mode, 120)
    ends = sum(int((batch[2] | batch[3]).sum()) for batch in want if len(batch) == 5)
    assert ends >= num_envs, "the trace must cross autoresets"
    assert_traces_same(got, want, mode.name)


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_infos_of_every_type_across_autoresets_equal_sync(mode: AutoresetMode) -> None:
    reference = sync(dropin.InfoZooEnv, 4, autoreset_mode=mode)
    spec = GymEnvSpec("tests.envs.dropin:InfoZooEnv")
    with contextlib.closing(reference), PoolVectorEnv(spec, 4, 2, autoreset_mode=mode) as env:
        want, got = run_trace(reference, mode, 8), run_trace(env, mode, 8)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_values_same(g[-1], w[-1], f"t={t} infos")
        assert_values_same(g[0], w[0], f"t={t} obs")


# -- failed slots under each mode (a real fault: the worker is killed) ----------------------


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_a_killed_worker_fails_its_slots_as_the_mode_says(mode: AutoresetMode) -> None:
    options = PoolOptions(restart_backoff=0.0, kill_grace=0.2)
    with PoolVectorEnv(GymEnvSpec("CartPole-v1"), 4, 2, options=options, autoreset_mode=mode) as env:
        before, failed, (obs, reward, terminated, truncated, infos) = kill_worker_0_mid_episode(env)
        if mode is AutoresetMode.SAME_STEP:
            # The new episode's first observation now; the last valid one in final_obs, the error in final_info.
            restarted = [cartpole().reset(seed=10 + s + 4)[0] for s in failed]  # seed + slot + num_envs * restarts
            for slot, first in zip(failed, restarted, strict=True):
                assert_same(obs[slot], first, f"slot {slot} first obs")
                assert_same(infos["final_obs"][slot], before[slot], f"slot {slot} final_obs")
                assert "exited" in infos["final_info"]["error"][slot]
            assert infos["_final_obs"].tolist() == [True, True, False, False]
        else:
            assert_same(obs[failed], before[failed], "the last valid observation")
        if mode is AutoresetMode.DISABLED:
            with pytest.raises(UsageError, match=r"slots \[0, 1\] ended.*reset_mask"):
                env.step(np.zeros(4, np.int64))
            env.reset(options={"reset_mask": truncated | terminated})
        obs, reward, terminated, truncated, infos = env.step(np.zeros(4, np.int64))
        assert "_error" not in infos or not infos["_error"].any()
        if mode is AutoresetMode.NEXT_STEP:
            assert not truncated[failed].any() and (reward[failed] == 0).all()  # the reset step


# -- the rest of the VectorEnv API ----------------------------------------------------------


@contextlib.contextmanager
def _embedded(env_id: str, num_envs: int, num_workers: int) -> Iterator[Any]:
    with PoolVectorEnv(GymEnvSpec(env_id), num_envs, num_workers) as env:
        yield env


@contextlib.contextmanager
def _through_a_daemon(env_id: str, num_envs: int, num_workers: int) -> Iterator[Any]:
    with (
        DaemonProcess(f"gym:{env_id}", envs=num_envs, workers=num_workers) as daemon,
        pool_env.connect(daemon.endpoint, num_envs) as env,
    ):
        yield env


OpenPool = Callable[[str, int, int], contextlib.AbstractContextManager[Any]]


@pytest.fixture(params=[_embedded, _through_a_daemon], ids=["embedded", "daemon"])
def open_pool(request: pytest.FixtureRequest) -> OpenPool:
    """``open_pool(env_id, num_envs, num_workers)``: a PoolVectorEnv, or pool_env.connect to a
    ``pool-env serve`` of that env (``RemoteVectorEnv``), as a context manager."""
    return cast(OpenPool, request.param)


def test_get_attr_set_attr_and_call_equal_sync_per_slot(open_pool: OpenPool) -> None:
    reference = sync(lambda: gym.make("CartPole-v1"), 2)
    with contextlib.closing(reference), open_pool("CartPole-v1", 2, 2) as env:
        for target in (reference, env):
            target.reset(seed=0)
            target.set_attr("gravity", [9.8, 20.0])
        assert env.get_attr("gravity") == reference.get_attr("gravity") == (9.8, 20.0)
        assert env.call("get_wrapper_attr", "gravity") == reference.call("get_wrapper_attr", "gravity")
        env.set_attr("gravity", 3.5)  # one value for every slot
        assert env.get_attr("gravity") == (3.5, 3.5)
        with pytest.raises(ValueError, match="length equal to the number of environments"):
            env.set_attr("gravity", [1.0])
        with pytest.raises(AttributeError, match="no_such_thing"):  # the env's own exception type
            env.get_attr("no_such_thing")
        assert env.get_attr("gravity") == (3.5, 3.5), "the pool works after an env raised"


def test_call_with_arguments_call_async_wait_and_render_frames(open_pool: OpenPool) -> None:
    reference = sync(dropin.rgb_frame_env, 3)
    with contextlib.closing(reference), open_pool("tests.envs.dropin:rgb_frame_env", 3, 2) as env:
        assert env.render_mode == reference.render_mode == "rgb_array"
        for target in (reference, env):
            target.reset(seed=0)
            target.step(np.zeros(3, np.int64))
        frames = env.render()
        assert isinstance(frames, tuple) and len(frames) == 3
        assert_values_same(frames, reference.render())
        assert env.call("scaled", 2.0, offset=0.5) == reference.call("scaled", 2.0, offset=0.5)
        env.call_async("scaled", 3.0)
        with pytest.raises(UsageError):
            env.step(np.zeros(3, np.int64))  # a call is pending
        with pytest.raises(UsageError):
            env.step_wait()  # ... and it is no step
        assert env.call_wait(timeout=30) == reference.call("scaled", 3.0)
        with pytest.raises(UsageError):
            env.call_wait()


def test_np_random_spec_and_reset_async_wait(open_pool: OpenPool) -> None:
    reference = sync(cartpole, 2)
    with contextlib.closing(reference), open_pool("CartPole-v1", 2, 1) as env:
        env.reset_async(seed=5)
        obs, _ = env.reset_wait(timeout=30)
        assert_values_same(obs, reference.reset(seed=5)[0])
        generators = env.np_random
        assert len(generators) == 2
        for mine, theirs in zip(generators, reference.np_random, strict=True):
            assert mine.bit_generator.state == theirs.bit_generator.state
        assert env.np_random_seed == reference.np_random_seed
        assert env.get_attr("spec")[0].id == "CartPole-v1"
        with pytest.raises(UsageError):
            env.reset_wait()


def test_close_with_a_pending_call_waits_or_terminates(open_pool: OpenPool) -> None:
    with open_pool("CartPole-v1", 2, 1) as env:
        env.reset(seed=0)
        env.step_async(np.zeros(2, np.int64))
        env.close(terminate=True)
        assert env.closed


# -- the same values: infos, options, spaces, seeds, actions --------------------------------


def test_reset_options_reach_the_envs_with_their_types() -> None:
    options = {"pose": np.array([1.5, -2.0, 0.25]), "lap": (1, 3), "task": dropin.Tag("hairpin"), "n": np.int8(2)}
    reference = sync(dropin.OptionsEchoEnv, 2)
    with contextlib.closing(reference), PoolVectorEnv(GymEnvSpec("tests.envs.dropin:OptionsEchoEnv"), 2, 1) as env:
        got, want = env.reset(seed=0, options=dict(options)), reference.reset(seed=0, options=dict(options))
        assert_values_same(got, want)
        seen = got[1]["seen"]
        assert seen["lap"].tolist() == [(1, 3), (1, 3)] and seen["task"].tolist() == [dropin.Tag("hairpin")] * 2
        assert seen["n"].dtype == np.int8 and seen["pose"].dtype == np.float64


def test_an_option_that_cannot_cross_is_a_type_error_naming_the_key_before_sending() -> None:
    with PoolVectorEnv(GymEnvSpec("tests.envs.dropin:OptionsEchoEnv"), 2, 1) as env:
        with pytest.raises(TypeError, match=r"options\['hook'\] is a builtins.function") as caught:
            env.reset(seed=0, options={"hook": lambda: None})
        assert isinstance(caught.value, CodecError)
        env.reset(seed=0)  # nothing was sent: the pool works


def test_an_info_that_cannot_cross_names_the_slot_and_key() -> None:
    spec = GymEnvSpec("tests.envs.dropin:InfoZooEnv", unsendable=True)
    with PoolVectorEnv(spec, 2, 1) as env:
        env.reset(seed=0)
        env.step(np.zeros(2, np.int64))
        with pytest.raises(TypeError, match=r"the info of slot 0 at \['callback'\] is a builtins.function"):
            env.step(np.zeros(2, np.int64))


def test_megabytes_of_infos_per_step_arrive_whole(open_pool: OpenPool) -> None:
    reference = sync(dropin.BigInfoEnv, 16)
    with contextlib.closing(reference), open_pool("tests.envs.dropin:BigInfoEnv", 16, 1) as env:
        env.reset(seed=0), reference.reset(seed=0)
        for _ in range(2):
            got, want = env.step(np.zeros(16, np.int64)), reference.step(np.zeros(16, np.int64))
            assert_values_same(got[-1], want[-1])


def test_reset_mask_resets_each_masked_slot_once_like_sync(open_pool: OpenPool) -> None:
    def trace(env: Any) -> list[Any]:
        obs, _ = env.reset(seed=[0, 1, 2, 3])
        rng, out = np.random.default_rng(0), []
        for _ in range(150):
            obs, _, terminated, truncated, _ = env.step(rng.integers(0, 2, 4))
            if (terminated | truncated).any():
                obs, _ = env.reset(options={"reset_mask": terminated | truncated})
            out.append(obs)
        env.close()
        return out

    want = trace(gym.make_vec("CartPole-v1", 4, vectorization_mode="sync"))
    with open_pool("CartPole-v1", 4, 1) as env:
        got = trace(env)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_same(g, w, f"step {t}")


@pytest.mark.parametrize(
    ("mask", "error", "text"),
    [
        ([True, False], TypeError, "must be a numpy array"),
        (np.array([1, 0]), TypeError, "dtype=np.bool_"),
        (np.array([True]), ValueError, "must have shape"),
        (np.array([False, False]), ValueError, "at least one True"),
    ],
)
def test_a_bad_reset_mask_raises_what_sync_raises(
    open_pool: OpenPool, mask: Any, error: type[Exception], text: str
) -> None:
    with open_pool("CartPole-v1", 2, 1) as env:
        env.reset(seed=0)
        with pytest.raises(error, match=text):
            sync(cartpole, 2).reset(options={"reset_mask": mask})
        with pytest.raises(error, match=text):
            env.reset(options={"reset_mask": mask})


@pytest.mark.parametrize("seed", [-5, 1.5, "7", [0, -1, 2]])
def test_invalid_seeds_raise_as_sync_before_anything_is_sent(open_pool: OpenPool, seed: Any) -> None:
    reference = sync(cartpole, 3)
    with contextlib.closing(reference), open_pool("CartPole-v1", 3, 2) as env:
        env.reset(seed=5)
        with pytest.raises((gym.error.Error, TypeError, ValueError)) as want:
            reference.reset(seed=seed)
        with pytest.raises(type(want.value)) as got:
            env.reset(seed=seed)
        if isinstance(want.value, gym.error.Error):
            assert str(got.value) == str(want.value)
        with pytest.raises(InvalidSeedError, match="length must match num_envs=3"):
            env.reset(seed=[1, 2])
        obs, *_ = env.step(np.zeros(3, np.int64))  # nothing was sent: the episodes go on
        fresh = sync(cartpole, 3)  # the reference's envs are broken by their failed reset
        fresh.reset(seed=5)
        assert_same(obs, fresh.step(np.zeros(3, np.int64))[0])
        fresh.close()


def test_numpy_int_seeds_work(open_pool: OpenPool) -> None:
    reference = sync(cartpole, 2)
    with contextlib.closing(reference), open_pool("CartPole-v1", 2, 1) as env:
        assert_same(env.reset(seed=np.int64(4))[0], reference.reset(seed=4)[0])
        assert_same(env.reset(seed=[np.uint8(1), None])[0][0], reference.reset(seed=[1, None])[0][0])


def test_box_actions_outside_the_bounds_reach_the_env_unless_checked() -> None:
    actions = np.array([[2.5], [-3.0]], dtype=np.float64)
    reference = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    with contextlib.closing(reference), PoolVectorEnv(GymEnvSpec("Pendulum-v1"), 2, 1) as env:
        env.reset(seed=0), reference.reset(seed=0)
        got, want = env.step(actions), reference.step(actions)
        # The env gets the action in the space's dtype (float32, through shared memory) where
        # SyncVectorEnv passes the caller's float64: equal to float32 precision.
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros((2, 2)))
    with PoolVectorEnv(GymEnvSpec("Pendulum-v1"), 2, 1, check_action_bounds=True) as env:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(actions)


@pytest.mark.parametrize(("make", "spec", "actions"), dropin.NESTED_CASES, ids=dropin.NESTED_CASE_IDS)
def test_nested_and_int_keyed_dict_spaces_round_trip_like_sync(make: Any, spec: str, actions: Any) -> None:
    reference = sync(make, 3)
    with contextlib.closing(reference), PoolVectorEnv(GymEnvSpec(spec), 3, 2) as env:
        assert_steps_same(env, reference, actions)


def test_pickle_and_deepcopy_are_one_clear_type_error(open_pool: OpenPool, capfd: pytest.CaptureFixture[str]) -> None:
    with open_pool("CartPole-v1", 2, 1) as env:
        env.reset(seed=0)
        for attempt in (pickle.dumps, copy.deepcopy, copy.copy):
            with pytest.raises(TypeError, match=f"a {type(env).__name__}"):
                attempt(env)
        env.step(np.zeros(2, np.int64))  # still usable
    assert capfd.readouterr().err == ""


def test_what_envs_print_warn_and_log_reaches_the_terminal_prefixed(capfd: pytest.CaptureFixture[str]) -> None:
    with PoolVectorEnv(GymEnvSpec("tests.envs.dropin:ChattyEnv"), 2, 1) as env:
        env.reset(seed=0)
        env.step(np.zeros(2, np.int64))
        pid = env.worker_pids[0]
    out, err = capfd.readouterr()
    prefix = f"[worker 0 pid {pid}] "
    assert out.count(f"{prefix}CHATTY-PRINT step 1\n") == 2, out
    assert f"{prefix}" in err and "UserWarning: CHATTY-WARN reset called" in err, err
    assert f"{prefix}WARNING:chatty:CHATTY-LOG reset" in err, err


def test_worker_output_false_silences_the_envs(capfd: pytest.CaptureFixture[str]) -> None:
    options = PoolOptions(worker_output=False)
    with PoolVectorEnv(GymEnvSpec("tests.envs.dropin:ChattyEnv"), 2, 1, options=options) as env:
        env.reset(seed=0)
        env.step(np.zeros(2, np.int64))
    out, err = capfd.readouterr()
    assert "CHATTY" not in out + err
