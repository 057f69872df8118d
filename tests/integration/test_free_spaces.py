"""Spaces without a fixed shape (Text, Sequence stacked or not, Graph, OneOf, a custom ``Space``, and
such parts inside a Tuple or a Dict with int keys and an empty Dict) travel through the messages, as
with ``AsyncVectorEnv(shared_memory=False)``, value for value ``SyncVectorEnv`` (types, dtypes,
shapes, tuple layout) — embedded and through a real ``pool-env serve`` daemon (its shared memory and
its frames); what gymnasium refuses fails with gymnasium's own ``TypeError``; ``env.spec`` is what
gymnasium's vector envs expose."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import zmq
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

import pool_env
from pool_env import GymEnvSpec, PoolVectorEnv, protocol
from pool_env.errors import InvalidActionError, SpecError
from tests.envs.free_spaces import KIND_VARIABLE, EchoActionEnv, EchoTextEnv, FreeShapeEnv, NotASpaceEnv, Point
from tests.integration.daemon_process import DaemonProcess, cli, raw_header, raw_request, raw_socket
from tests.integration.reference import FIELDS, assert_values_same, run_trace

pytestmark = pytest.mark.timeout(120)

WHERE = ["embedded", "daemon"]


@contextlib.contextmanager
def pools(
    env_class: type[gym.Env[Any, Any]], kind: str, where: str, mode: AutoresetMode = AutoresetMode.NEXT_STEP
) -> Iterator[list[Callable[[], Any]]]:
    """Makers of 3-slot vector envs of ``env_class(kind)``: one embedded pool (2 workers), or — from
    one ``pool-env serve`` (2 workers) — a connection through its shared memory and one through frames."""
    if where == "embedded":
        yield [lambda: PoolVectorEnv([partial(env_class, kind)] * 3, num_workers=2, autoreset_mode=mode)]
        return
    spec = f"gym:tests.envs.free_spaces:{env_class.__name__}"
    with DaemonProcess(spec, envs=3, workers=2, lease_timeout=5.0, env={KIND_VARIABLE: kind}) as daemon:
        yield [
            partial(pool_env.connect, daemon.endpoint, 3, autoreset_mode=mode, shared_memory=shared)
            for shared in (True, False)
        ]


def assert_types_same(actual: Any, expected: Any, where: str) -> None:
    """The same Python types all the way down (a ``GraphInstance`` is no plain tuple)."""
    assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        for key in expected:
            assert_types_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, tuple | list):
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_types_same(a, e, f"{where}[{i}]")


def assert_traces_same(got: list[Any], expected: list[Any], what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} calls, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        assert_types_same(a[0], e[0], f"{what} call {i} obs")
        for name, x, y in zip(FIELDS, a, e, strict=False):
            assert_values_same(x, y, f"{what} call {i} {name}")


def trace(env: Any, steps: int, mode: AutoresetMode) -> list[Any]:
    """:func:`run_trace` with the reset seed 3 and the action seed 0 of these tests."""
    return run_trace(env, mode, steps, seed=3, action_seed=0)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(
    "kind", ["text", "sequence", "stacked", "graph", "oneof", "mixed", "tuple", "custom", "objects"]
)
def test_observations_without_a_fixed_shape_equal_sync_vector_env(kind: str, where: str) -> None:
    reference = SyncVectorEnv([partial(FreeShapeEnv, kind)] * 3)
    expected = trace(reference, 12, AutoresetMode.NEXT_STEP)
    assert sum(int((b[2] | b[3]).sum()) for b in expected[1:]) >= 3, "the trace must cross autoresets"
    with pools(FreeShapeEnv, kind, where) as makers:
        for make in makers:
            with make() as pool:
                assert pool.single_observation_space == reference.single_observation_space
                assert pool.observation_space == reference.observation_space
                got = trace(pool, 12, AutoresetMode.NEXT_STEP)
                assert pool.observation_space.contains(got[-1][0])
            assert_traces_same(got, expected, f"{kind} {where}")


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED], ids=lambda m: m.name)
def test_observations_without_a_fixed_shape_under_every_autoreset_mode_equal_sync(
    mode: AutoresetMode, where: str
) -> None:
    expected = trace(SyncVectorEnv([partial(FreeShapeEnv, "tuple")] * 3, autoreset_mode=mode), 10, mode)
    with pools(FreeShapeEnv, "tuple", where, mode) as makers:
        for make in makers:
            with make() as pool:
                got = trace(pool, 10, mode)
            assert_traces_same(got, expected, f"{mode.name} {where}")


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", ["text", "stacked", "graph", "oneof", "tuple", "custom"])
def test_actions_without_a_fixed_shape_reach_the_envs_like_sync(kind: str, where: str) -> None:
    """Each env returns its action as its observation: the action crossed intact, types included;
    the spaces keep their seeded generators, so ``action_space.sample()`` draws what Sync's does."""
    reference = SyncVectorEnv([partial(EchoActionEnv, kind)] * 3)
    with pools(EchoActionEnv, kind, where) as makers:
        for make in makers:
            with make() as pool:
                assert pool.single_action_space == reference.single_action_space
                assert_values_same(pool.reset(seed=1), reference.reset(seed=1), "reset")
                for step in range(6):
                    actions = pool.action_space.sample()
                    assert_values_same(actions, reference.action_space.sample(), f"{where} sample {step}")
                    got, want = pool.step(actions), reference.step(actions)
                    assert_types_same(got[0], want[0], f"{kind} {where} step {step} obs")
                    for name, a, e in zip(FIELDS, got, want, strict=True):
                        assert_values_same(a, e, f"{kind} {where} step {step} {name}")
            reference = SyncVectorEnv([partial(EchoActionEnv, kind)] * 3)  # fresh generators for the next


def test_a_space_gymnasium_refuses_fails_with_gymnasiums_own_type_error() -> None:
    with pytest.raises(TypeError) as sync_error:
        AsyncVectorEnv([NotASpaceEnv] * 2, shared_memory=False)
    with pytest.raises(TypeError) as pool_error:
        PoolVectorEnv([NotASpaceEnv] * 2)
    assert str(pool_error.value) == str(sync_error.value)
    assert "is not a gymnasium Space instance" in str(pool_error.value)
    served = cli("serve", "--spec", "gym:tests.envs.free_spaces:NotASpaceEnv", "--envs", "1", "--workers", "1")
    assert served.returncode == 2, served.stderr
    (line,) = served.stderr.strip().splitlines()  # one line with gymnasium's own text, no traceback
    assert str(sync_error.value) in line and "observation space" in line, line


def test_partial_batches_of_a_free_shape_space_are_refused_naming_the_fix() -> None:
    with pytest.raises(SpecError, match="use batch_size=num_envs"):
        PoolVectorEnv([partial(FreeShapeEnv, "text")] * 4, num_workers=2, batch_size=2)


def test_env_spec_is_what_gymnasium_vector_envs_expose() -> None:
    with PoolVectorEnv(GymEnvSpec("CartPole-v1", max_episode_steps=40), num_envs=2, num_workers=1) as pool:
        reference = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async", max_episode_steps=40)
        assert pool.spec == reference.spec and pool.spec is not None
        assert pool.spec.kwargs["max_episode_steps"] == 40
        reference.close()
    with PoolVectorEnv([lambda: gym.make("CartPole-v1")] * 2, num_workers=1) as pool:
        assert pool.spec is None  # as AsyncVectorEnv(env_fns): nothing says how to make it again
    with PoolVectorEnv(GymEnvSpec("tests.envs.free_spaces:FreeShapeEnv"), num_envs=1) as pool:
        assert pool.spec is None  # an import string is no registered id


@pytest.mark.parametrize("nested", [False, True], ids=["text", "dict_with_text"])
def test_text_actions_reach_the_envs_like_sync_and_a_wrong_count_is_refused(nested: bool) -> None:
    make = partial(EchoTextEnv, nested)
    reference = SyncVectorEnv([make] * 3)
    with PoolVectorEnv([make] * 3, num_workers=2) as pool:
        assert pool.action_space == reference.action_space
        assert_values_same(pool.reset(seed=1), reference.reset(seed=1), "reset")
        pool.action_space.seed(4)
        for step in range(7):
            actions = pool.action_space.sample()
            for name, got, want in zip(FIELDS, pool.step(actions), reference.step(actions), strict=True):
                assert_values_same(got, want, f"step {step} {name}")
        with pytest.raises(InvalidActionError, match="tuple of 3 values"):
            pool.step({"say": ("a", "b"), "volume": np.zeros((3, 1), np.float32)} if nested else ("a", "b"))


@pytest.mark.parametrize(
    ("factory", "named"),
    [
        ("local_space_env", "local_space_env.<locals>.Local"),  # no import path
        ("point_action_env", "PointSpace (the action space)"),  # actions that are objects of a class
    ],
)
def test_a_custom_space_that_cannot_cross_stops_serve_with_one_line_naming_it(factory: str, named: str) -> None:
    result = cli("serve", "--spec", f"gym:tests.envs.free_spaces:{factory}", "--envs", "1", "--workers", "1")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert named in line and "cannot cross the daemon wire" in line and "embedded" in line, line


def test_a_custom_space_the_trainer_cannot_import_is_one_error_naming_it(tmp_path: Any) -> None:
    (tmp_path / "daemon_only_space.py").write_text(
        "import gymnasium as gym\nfrom tests.envs.free_spaces import FreeShapeEnv, Parity\n\n"
        "class Hidden(Parity):\n    pass\n\n"
        "def make():\n    env = FreeShapeEnv('custom')\n    env.observation_space = Hidden(1)\n    return env\n"
    )
    with (
        DaemonProcess("gym:daemon_only_space:make", envs=1, workers=1, env={"PYTHONPATH": str(tmp_path)}) as daemon,
        pytest.raises(SpecError) as error,
    ):
        pool_env.connect(daemon.endpoint, 1)
    message = str(error.value)
    assert "daemon_only_space:Hidden" in message and "ModuleNotFoundError" in message, message
    assert "PoolVectorEnv" in message and "\n" not in message


def test_malformed_action_parts_from_a_raw_client_get_error_replies_and_the_daemon_stays_up() -> None:
    box = np.zeros((1, 2), np.float32).tobytes()  # the Box part of EchoActionEnv("tuple")'s action
    good = {0: [(1, 2)], 1: [[np.zeros(2, np.int64), None, None]]}  # its Sequence and Graph parts
    bad_steps = {
        "no parts": {},
        "a list, not a map": {"actions": [1, 2]},
        "a leaf missing": {"actions": {0: [(1,)]}},
        "two values for one slot": {"actions": {**good, 0: [(1,), (2,)]}},
        "a graph of two fields": {"actions": {**good, 1: [[np.zeros(2, np.int64), None]]}},
        "an object of a class": {"actions": {**good, 1: [Point(3)]}},
    }
    spec = "gym:tests.envs.free_spaces:EchoActionEnv"
    with DaemonProcess(spec, envs=2, workers=1, env={KIND_VARIABLE: "tuple"}) as daemon:
        context = zmq.Context()
        sock = raw_socket(context, daemon.endpoint)
        try:
            lease = raw_request(sock, {"op": "lease", "num_envs": 1})["lease"]
            raw_request(sock, {"op": "reset", "lease": lease, "seeds": [3]})
            for what, body in bad_steps.items():
                sock.send_multipart([raw_header({"op": "step", "lease": lease, **body}), box])
                assert sock.poll(5000), f"{what}: no reply"
                reply = protocol.decode(sock.recv_multipart()[0])
                assert reply["ok"] is False, f"{what}: accepted"
                assert "actions" in reply["error"]["message"] or "class" in reply["error"]["message"], reply
            sock.send_multipart([raw_header({"op": "step", "lease": lease, "actions": good}), box])
            assert sock.poll(5000)
            assert protocol.decode(sock.recv_multipart()[0])["ok"] is True
        finally:
            sock.close(linger=0)
            context.term()
        with pool_env.connect(daemon.endpoint, 1) as env:  # the other slot still serves
            env.reset(seed=0)
            env.step(env.action_space.sample())
        assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_a_killed_worker_fails_free_shape_slots_as_the_mode_says(mode: AutoresetMode, where: str) -> None:
    """A failed slot keeps its last valid observation (NEXT_STEP, DISABLED), or starts a new episode
    with the last valid one in ``final_obs`` (SAME_STEP) — for parts without a fixed shape too."""
    with pools(FreeShapeEnv, "tuple", where, mode) as makers, makers[-1]() as env:
        env.reset(seed=10)
        before = list(iterate(env.observation_space, env.step(np.zeros(3, np.int64))[0]))
        victim = env.stats()["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        obs, reward, terminated, truncated, infos = env.step(np.zeros(3, np.int64))
        failed = list(victim["slots"])
        assert truncated[failed].all() and not terminated[failed].any() and (reward[failed] == 0).all()
        assert infos["_error"][failed].all()
        assert env.observation_space.contains(obs)
        after = list(iterate(env.observation_space, obs))
        for slot in failed:
            if mode is AutoresetMode.SAME_STEP:
                assert_types_same(infos["final_obs"][slot], before[slot], f"slot {slot} final_obs")
                assert_values_same(infos["final_obs"][slot], before[slot], f"slot {slot} final_obs")
            else:
                assert_types_same(after[slot], before[slot], f"slot {slot} obs")
                assert_values_same(after[slot], before[slot], f"slot {slot} kept obs")
