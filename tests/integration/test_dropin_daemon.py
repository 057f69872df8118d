"""The drop-in behaviours through a ``pool-env serve`` daemon (``pool_env.connect``): each
autoreset mode, infos and options with their types, nested and int-keyed Dict spaces, reset
masks and seeds, compared value for value with SyncVectorEnv; failed slots per mode after a
real worker kill."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import pool_env
from pool_env.errors import UsageError
from tests.envs import dropin
from tests.integration.daemon_process import DaemonProcess
from tests.integration.reference import (
    FIELDS,
    assert_same,
    assert_steps_same,
    assert_traces_same,
    assert_values_same,
    cartpole,
    kill_worker_0_mid_episode,
    run_trace,
    sync,
)

pytestmark = pytest.mark.timeout(120)

MODES = list(AutoresetMode)


@pytest.fixture(scope="module", params=[(1, 1), (5, 2), (3, 3)], ids=lambda p: f"N{p[0]}-W{p[1]}")
def cartpole_daemon(request: pytest.FixtureRequest) -> Iterator[tuple[DaemonProcess, int]]:
    num_envs, workers = request.param
    with DaemonProcess(envs=num_envs, workers=workers, lease_timeout=5.0) as daemon:
        yield daemon, num_envs


@contextlib.contextmanager
def served_and_sync(
    make: Callable[[], gym.Env[Any, Any]], spec: str, num_envs: int, workers: int, **connect: Any
) -> Iterator[tuple[Any, SyncVectorEnv]]:
    """A trainer of ``num_envs`` slots of a ``pool-env serve`` daemon of env ``spec`` (an import
    string) with ``workers`` workers, and ``SyncVectorEnv`` of ``make`` for reference; all closed after."""
    reference = sync(make, num_envs, autoreset_mode=connect.get("autoreset_mode", AutoresetMode.NEXT_STEP))
    with (
        DaemonProcess(f"gym:{spec}", envs=num_envs, workers=workers) as daemon,
        contextlib.closing(reference),
        pool_env.connect(daemon.endpoint, num_envs, **connect) as env,
    ):
        yield env, reference


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_each_autoreset_mode_through_the_daemon_equals_sync_bit_for_bit(
    cartpole_daemon: tuple[DaemonProcess, int], mode: AutoresetMode
) -> None:
    daemon, num_envs = cartpole_daemon
    reference = sync(cartpole, num_envs, autoreset_mode=mode)
    with contextlib.closing(reference), pool_env.connect(daemon.endpoint, num_envs, autoreset_mode=mode) as env:
        assert env.metadata["autoreset_mode"] is mode and env.autoreset_mode is mode
        want, got = run_trace(reference, mode, 120), run_trace(env, mode, 120)
    assert sum(int((b[2] | b[3]).sum()) for b in want if len(b) == 5) >= num_envs, "the trace must cross autoresets"
    assert_traces_same(got, want, mode.name)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_infos_of_every_type_through_the_daemon_equal_sync(mode: AutoresetMode) -> None:
    zoo = "tests.envs.dropin:InfoZooEnv"
    with served_and_sync(dropin.InfoZooEnv, zoo, 4, 2, autoreset_mode=mode) as (env, reference):
        want, got = run_trace(reference, mode, 8), run_trace(env, mode, 8)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_values_same(g[-1], w[-1], f"t={t} infos")
        assert_values_same(g[0], w[0], f"t={t} obs")


def test_reset_options_masks_and_seeds_through_the_daemon() -> None:
    with served_and_sync(dropin.OptionsEchoEnv, "tests.envs.dropin:OptionsEchoEnv", 2, 1) as (env, reference):
        options = {"pose": np.array([1.5, -2.0, 0.25]), "lap": (1, 3), "n": np.int8(2)}
        assert_values_same(env.reset(seed=0, options=dict(options)), reference.reset(seed=0, options=dict(options)))
        mask = np.array([False, True])
        got = env.reset(options={"reset_mask": mask, "pose": np.ones(3)})
        want = reference.reset(options={"reset_mask": mask, "pose": np.ones(3)})
        assert_values_same(got, want)
        with pytest.raises(gym.error.Error, match="greater or equal to zero"):
            env.reset(seed=-5)
        with pytest.raises(TypeError, match="must be a numpy array"):
            env.reset(options={"reset_mask": [True, False]})
        with pytest.raises(TypeError, match=r"options\['hook'\]"):
            env.reset(options={"hook": lambda: None})
        # A daemon rebuilds no objects for a network peer (it would import their modules): the
        # client refuses them before sending, naming the key; the lease goes on.
        with pytest.raises(TypeError, match=r"options\['task'\] holds an enum member, object"):
            env.reset(options={"task": dropin.Tag("x")})
        env.reset(seed=1)


@pytest.mark.parametrize(("make", "spec", "actions"), dropin.NESTED_CASES, ids=dropin.NESTED_CASE_IDS)
def test_nested_and_int_keyed_dict_spaces_through_the_daemon(make: Any, spec: str, actions: Any) -> None:
    with served_and_sync(make, spec, 3, 2) as (env, reference):
        assert_steps_same(env, reference, actions)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_a_killed_worker_fails_its_slots_as_the_mode_says_through_the_daemon(mode: AutoresetMode) -> None:
    with DaemonProcess(envs=4, workers=2) as daemon, pool_env.connect(daemon.endpoint, 4, autoreset_mode=mode) as env:
        before, failed, (obs, _, terminated, truncated, infos) = kill_worker_0_mid_episode(env)
        if mode is AutoresetMode.SAME_STEP:
            for slot in failed:
                # The daemon's restarted slots draw fresh seeds: a CartPole first observation.
                assert (np.abs(obs[slot]) <= 0.05).all(), f"slot {slot}: {obs[slot]} is no first observation"
                assert_same(infos["final_obs"][slot], before[slot], f"slot {slot} final_obs")
                assert "exited" in infos["final_info"]["error"][slot]
        else:
            assert_same(obs[failed], before[failed], "the last valid observation")
        if mode is AutoresetMode.DISABLED:
            with pytest.raises(UsageError, match=r"slots \[0, 1\] ended"):
                env.step(np.zeros(4, np.int64))
            env.reset(options={"reset_mask": truncated | terminated})
        *_, infos = env.step(np.zeros(4, np.int64))
        assert "_error" not in infos or not infos["_error"].any()


def test_call_values_a_daemon_cannot_take_or_give_are_type_errors_naming_them() -> None:
    with served_and_sync(dropin.rgb_frame_env, "tests.envs.dropin:rgb_frame_env", 2, 1) as (env, reference):
        env.reset(seed=0)
        # A daemon rebuilds no objects of a class for a network peer: refused before sending.
        with pytest.raises(TypeError, match=r"call\('scaled'\) argument 0 holds an enum member, object"):
            env.call("scaled", dropin.Tag("x"))
        with pytest.raises(TypeError, match=r"call\('scaled'\) keyword 'offset' is a builtins.function"):
            env.call("scaled", 1.0, offset=lambda: None)
        with pytest.raises(TypeError, match=r"set_attr\('gain'\) value of slot 1 holds an enum member"):
            env.set_attr("gain", [1.0, dropin.Tag("x")])
        # A result that cannot cross back: named, with its slot and where it sits.
        with pytest.raises(TypeError, match=r"the call result of slot 0 at \['dtype'\] is a numpy.dtypes"):
            env.get_attr("observation_space")
        # The lease goes on, and values keep their types both ways (numpy scalars, tuples).
        reference.reset(seed=0)
        reference.set_attr("gain", [np.float32(2.0), 0.5])
        env.set_attr("gain", [np.float32(2.0), 0.5])
        assert_values_same(env.get_attr("gain"), reference.get_attr("gain"))
        assert_values_same(env.call("scaled", 3.0, offset=np.int8(1)), reference.call("scaled", 3.0, offset=np.int8(1)))


def test_set_attr_per_slot_and_calls_across_two_daemons_equal_sync() -> None:
    reference = sync(cartpole, 3)
    with (
        DaemonProcess(envs=2, workers=1) as first,
        DaemonProcess(envs=1, workers=1) as second,
        contextlib.closing(reference),
        pool_env.connect([first.endpoint, second.endpoint], [2, 1]) as env,
    ):
        for target in (reference, env):
            target.reset(seed=4)
            target.set_attr("gravity", [1.0, 20.0, 3.0])  # one value per slot, over both daemons
        assert env.get_attr("gravity") == reference.get_attr("gravity") == (1.0, 20.0, 3.0)
        assert env.call("get_wrapper_attr", "gravity") == (1.0, 20.0, 3.0)
        with pytest.raises(AttributeError, match="no_such_thing"):
            env.get_attr("no_such_thing")  # raised once both daemons answered: both leases stay usable
        actions = np.random.default_rng(4)
        for t in range(6):  # each slot steps with its own gravity, as in SyncVectorEnv
            action = actions.integers(0, 2, 3)
            for name, got, want in zip(FIELDS, env.step(action), reference.step(action), strict=True):
                assert_values_same(got, want, f"t={t} {name}")


@pytest.mark.parametrize(
    ("served", "registered"), [("gym:CartPole-v1", True), ("gym:tests.envs.dropin:OptionsEchoEnv", False)]
)
def test_env_spec_through_the_daemon_is_what_make_vec_sets(served: str, registered: bool) -> None:
    with DaemonProcess(served, envs=3, workers=1) as daemon, pool_env.connect(daemon.endpoint, 2) as env:
        if not registered:  # an import string names no registry entry: None, as AsyncVectorEnv(env_fns)
            assert env.spec is None
            return
        entry = gym.spec("CartPole-v1")
        assert env.spec is not None and env.spec is not entry
        assert env.spec.kwargs == {"num_envs": 2, "vectorization_mode": "async"}  # this env's slots
        for name in ("id", "entry_point", "max_episode_steps", "reward_threshold", "vector_entry_point"):
            assert getattr(env.spec, name) == getattr(entry, name), name
        with contextlib.closing(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")) as reference:
            sync_spec = reference.spec
        assert sync_spec is not None and {**sync_spec.kwargs, "vectorization_mode": "async"} == env.spec.kwargs
