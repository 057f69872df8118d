"""HttpBackend against the real reference server in a subprocess, with its fault injection.

One server serves the module; every test uses its own user token, so the server's per-token
accounting (``steps_applied``, quota) belongs to that test alone.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pool_env.envs import HttpEnvSpec
from pool_env.errors import ErrorKind, HttpStatusError, StepFate
from pool_env.refserver.process import RefServer
from tests.integration.refserver_helpers import NO_FAULTS
from workers.backends.base import Outcome
from workers.backends.http import HttpBackend

SLOTS = [0, 1, 2, 3]


@pytest.fixture
def token(server: RefServer) -> Iterator[str]:
    yield f"test-{uuid.uuid4().hex[:8]}"
    server.set_faults(**NO_FAULTS)


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    made: list[HttpBackend] = []
    yield made
    for backend in made:
        backend.close()


def make(server: RefServer, token: str, backends: list[HttpBackend], **fields: Any) -> HttpBackend:
    spec_fields: dict[str, Any] = {"request_timeout": 2.0, "retry_backoff": 0.0, **fields}
    backend = HttpBackend(HttpEnvSpec(server.url, token, **spec_fields), len(SLOTS))
    backends.append(backend)
    return backend


def errors(outcomes: list[Outcome]) -> list[str | None]:
    return [o.error for o in outcomes]


def applied_on_server(server: RefServer, token: str) -> int:
    return int(server.stats()["tokens"][token]["steps_applied"])


def test_reset_and_step_four_slots_for_several_steps(server: RefServer, token: str, backends: list) -> None:
    backend = make(server, token, backends)
    outcomes = backend.reset(SLOTS, [1, 2, 3, 4], None)
    assert errors(outcomes) == [None] * 4
    assert all(o.obs.shape == (9,) and o.obs.dtype == np.float32 for o in outcomes)
    for n in range(1, 4):
        outcomes = backend.step(SLOTS, [0, 0, 0, 0])
        assert errors(outcomes) == [None] * 4
        assert [o.info["step"] for o in outcomes] == [10 * n] * 4
        assert all(np.isfinite(o.obs).all() and o.obs[8] >= 9.1 for o in outcomes)
    assert applied_on_server(server, token) == 12
    assert backend.counters()["requests"] == 3 + 3  # session, group, reset + three steps


def test_chunk_observations_are_padded_with_the_real_row_count(server: RefServer, token: str, backends: list) -> None:
    backend = make(server, token, backends, observation="chunk", step_size=10)
    backend.reset(SLOTS, [None] * 4, None)
    fly, _, sell, _ = backend.step(SLOTS, [0, 1, 2, 0])
    assert fly.obs.shape == sell.obs.shape == (10, 9)
    assert fly.info["rows"] == 10 and fly.obs[0, 8] == pytest.approx(9.1)  # DTAMB pins each chunk's first row
    assert sell.info == {"step": 1, "reason": "sold", "rows": 1}
    assert sell.terminated and sell.reward == 150.0 and not sell.obs[1:].any()


def test_an_injected_500_on_a_step_is_retried_and_applied_once(server: RefServer, token: str, backends: list) -> None:
    backend = make(server, token, backends)
    backend.reset(SLOTS, [None] * 4, None)
    server.fail_next("500", path="vectorized_step")
    assert errors(backend.step(SLOTS, [0] * 4)) == [None] * 4
    assert applied_on_server(server, token) == 4
    assert backend.counters()["http_5xx"] == 1


def test_a_hung_step_times_out_and_is_reported_applied_not_resent(
    server: RefServer, token: str, backends: list
) -> None:
    backend = make(server, token, backends, request_timeout=0.5)
    backend.reset(SLOTS, [None] * 4, None)
    server.set_faults(hang_s=3.0)
    server.fail_next("hang", path="vectorized_step")
    outcomes = backend.step(SLOTS, [0] * 4)
    assert all(e is not None and "response was lost" in e for e in errors(outcomes))
    assert all((o.kind, o.fate) == (ErrorKind.LOST_RESPONSE, StepFate.APPLIED) for o in outcomes)
    assert applied_on_server(server, token) == 4
    assert backend.counters()["transport_errors"] == 1


def test_dropped_connections_never_apply_a_step_twice(server: RefServer, token: str, backends: list) -> None:
    """Drive the backend like the worker loop while the server drops 25 % of the connections
    after applying the request; every step the server applied is one the backend reported as
    applied (with its answer) or as applied-but-lost, never more."""
    backend = make(server, token, backends, max_retries=30)
    server.set_faults(p_drop=0.25, fault_seed=11)
    rng = random.Random(3)
    needs_reset = list(SLOTS)
    reported = lost = 0
    for _ in range(25):
        if needs_reset:
            for outcome in backend.reset(needs_reset, [None] * len(needs_reset)):
                assert outcome.error is None, outcome.error
            needs_reset = []
        to_step = SLOTS
        actions = [rng.choice([0, 0, 0, 1, 2]) for _ in to_step]
        for slot, outcome in zip(to_step, backend.step(to_step, actions), strict=True):
            if outcome.error is None:
                reported += 1
                if outcome.terminated or outcome.truncated:
                    needs_reset.append(slot)
            else:
                assert "step applied but its response was lost" in outcome.error, outcome.error
                lost += 1
                needs_reset.append(slot)
    server.set_faults(p_drop=0.0)
    counters = backend.counters()
    assert counters["transport_errors"] > 10 and counters["lost_responses"] == lost > 0
    assert applied_on_server(server, token) == reported + lost


def test_a_server_restart_fails_the_slots_then_the_next_reset_recovers(token: str, backends: list) -> None:
    with RefServer() as server:  # its own server: a restart makes a new child process
        restart_and_recover(server, token, backends)


def restart_and_recover(server: RefServer, token: str, backends: list[HttpBackend]) -> None:
    backend = make(server, token, backends)
    backend.reset(SLOTS, [None] * 4, None)
    assert errors(backend.step(SLOTS, [0] * 4)) == [None] * 4
    server.restart()
    outcomes = backend.step(SLOTS, [0] * 4)
    assert all(e is not None and "not found" in e for e in errors(outcomes))
    # The server reports an unknown episode of a vectorized step as that entry's error payload.
    assert all((o.kind, o.fate) == (ErrorKind.SERVER_EPISODE_ERROR, StepFate.NOT_APPLIED) for o in outcomes)
    assert all(o.truncated for o in outcomes)
    assert errors(backend.reset(SLOTS, [None] * 4, None)) == [None] * 4
    outcomes = backend.step(SLOTS, [0] * 4)
    assert errors(outcomes) == [None] * 4
    assert [o.info["step"] for o in outcomes] == [10] * 4
    assert backend.counters()["episodes_created"] == 8


def test_the_step_quota_raises_http_status_error_429(server: RefServer, token: str, backends: list) -> None:
    backend = make(server, token, backends)
    server.set_faults(max_steps_quota=6)
    backend.reset(SLOTS, [None] * 4, None)
    assert errors(backend.step(SLOTS, [0] * 4)) == [None] * 4
    with pytest.raises(HttpStatusError) as info:
        backend.step(SLOTS, [0] * 4)
    assert info.value.status == 429 and info.value.detail == "step limit of 6 reached"
    assert backend.counters()["retries"] == 0


def test_a_group_larger_than_the_server_allows_raises_http_status_error_422(
    server: RefServer, token: str, backends: list
) -> None:
    server.set_faults(max_num_envs=2)
    try:
        backend = make(server, token, backends)
        with pytest.raises(HttpStatusError) as info:
            backend.reset(SLOTS, [None] * 4, None)
        assert info.value.status == 422 and "num_envs must be between 1 and 2" in info.value.detail
    finally:
        server.set_faults(max_num_envs=64)
