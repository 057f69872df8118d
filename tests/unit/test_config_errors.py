"""Specs and options validate in one place; errors name the field and survive pickling."""

from __future__ import annotations

import pickle

import pytest
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

from pool_env import errors
from pool_env.config import PoolOptions
from pool_env.envs import GymEnvSpec, HttpEnvSpec, spec_from_wire


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"server_url": "localhost:80"}, "server_url"),
        ({"user_token": ""}, "user_token"),
        ({"step_size": 0}, "step_size"),
        ({"step_size": 51}, "step_size"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"observation": "all"}, "observation"),
    ],
)
def test_bad_http_spec_fields_are_named(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"server_url": "http://x", "user_token": "t"}
    with pytest.raises(errors.SpecError, match=field):
        HttpEnvSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_specs_round_trip_through_the_wire_form() -> None:
    http = HttpEnvSpec("http://host:1/", "tok", step_size=5, observation="chunk")
    assert http.server_url == "http://host:1"
    assert spec_from_wire(http.to_wire()) == http
    gym_spec = GymEnvSpec("CartPole-v1", imports=["math"], max_episode_steps=50)
    assert spec_from_wire(gym_spec.to_wire()) == gym_spec
    with pytest.raises(errors.SpecError, match="kind"):
        spec_from_wire({"kind": "carrier-pigeon"})


def test_pool_options_validate_and_pick_step_timeouts() -> None:
    with pytest.raises(errors.SpecError, match="flap_limit"):
        PoolOptions(flap_limit=0)
    with pytest.raises(errors.SpecError, match=r"^on_env_error: must be 'truncate' or 'raise', got 'ignore'"):
        PoolOptions(on_env_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(errors.SpecError, match=r"^env_failure_limit: must be an int >= 1"):
        PoolOptions(env_failure_limit=0)
    assert PoolOptions(step_timeout=3).effective_step_timeout(GymEnvSpec("CartPole-v1")) == 3
    assert PoolOptions().effective_step_timeout(GymEnvSpec("CartPole-v1")) == 60.0
    http = HttpEnvSpec("http://x", "t", request_timeout=1.0, max_retries=0)
    assert PoolOptions().effective_step_timeout(http) > 2 * http.request_timeout


@pytest.mark.parametrize(
    "error",
    [
        errors.PoolEnvError("x"),
        errors.ClosedError("closed"),
        errors.AlreadyPendingError("pending", "step"),
        errors.NoPendingCallError("none", "step"),
        errors.InvalidActionError("bad"),
        errors.SpecError("f: bad"),
        errors.WorkerStartError("w"),
        errors.ProtocolError("p"),
        errors.TransportError("t"),
        errors.HttpStatusError(401, "invalid token", "http://x/api"),
        errors.EnvCreationError("e"),
        errors.StepTimeoutError("late"),
    ],
)
def test_every_error_survives_pickling(error: errors.PoolEnvError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)


def test_errors_subclass_gymnasium_and_builtin_counterparts() -> None:
    assert issubclass(errors.AlreadyPendingError, AlreadyPendingCallError)
    assert issubclass(errors.NoPendingCallError, NoAsyncCallError)
    assert issubclass(errors.StepTimeoutError, TimeoutError)
    assert issubclass(errors.InvalidActionError, ValueError)
    http = errors.HttpStatusError(422, "step_size must be >= 1", "http://x")
    assert http.status == 422 and "step_size must be >= 1" in str(http)
