"""The challenge server's step quota (issue 12), against the real reference server and real workers:
a spent quota raises QuotaExceededError with the count, without retries or worker restarts;
``stats()`` shows the server steps; ``max_server_steps`` stops the pool before the server does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import pool_env
from pool_env import HttpEnvSpec, PoolOptions, PoolVectorEnv
from pool_env.errors import QuotaExceededError, SpecError
from pool_env.refserver.process import RefServer
from tests.integration.daemon_process import DaemonProcess

NUM_ENVS = 4
STEP_PATH = "POST /api/v1/episode/vectorized_step"


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    with RefServer(max_steps_quota=3 * NUM_ENVS) as ref:
        yield ref


def make_pool(server: RefServer, **spec_fields: object) -> PoolVectorEnv:
    token = f"quota-{uuid.uuid4().hex[:8]}"  # a fresh token: a quota of its own
    spec = HttpEnvSpec(server.url, token, request_timeout=2.0, retry_backoff=0.01, **spec_fields)  # type: ignore[arg-type]
    return PoolVectorEnv(spec, NUM_ENVS, 2, options=PoolOptions(step_timeout=15.0))


def fly() -> np.ndarray:
    return np.zeros(NUM_ENVS, dtype=np.int64)


def test_a_spent_server_quota_raises_with_the_count_once_per_call_and_the_workers_stay(server: RefServer) -> None:
    with make_pool(server) as env:
        env.reset(seed=3)
        for _ in range(3):
            env.step(fly())
        counters = env.stats()["counters"]
        assert counters["server_steps"] == counters["server_steps_sent"] == 12
        assert counters["server_steps_reported"] == 12 and counters["server_steps_limit"] == 12  # from the server
        pids = sorted(env.worker_pids)
        for _ in range(3):
            before = server.stats()["requests_by_endpoint"][STEP_PATH]
            with pytest.raises(QuotaExceededError, match="12 of 12 steps used") as caught:
                env.step(fly())
            assert caught.value.status == 429 and caught.value.url.endswith("/vectorized_step")
            after = server.stats()["requests_by_endpoint"][STEP_PATH]
            assert after - before == 2  # one request per worker: no retry storm
        stats = env.stats()
        assert sorted(env.worker_pids) == pids and all(w["restarts"] == 0 for w in stats["workers"])
        assert stats["counters"]["retries"] == 0
        obs, _ = env.reset(seed=4)  # resets are not steps: the pool is still usable
        assert obs.shape == (NUM_ENVS, 9)


def test_max_server_steps_stops_the_pool_before_the_server_does(server: RefServer) -> None:
    with make_pool(server, max_server_steps=2 * NUM_ENVS + 1) as env:
        env.reset(seed=5)
        env.step(fly())
        env.step(fly())
        token = env.spec_.user_token  # type: ignore[union-attr]
        with pytest.raises(QuotaExceededError, match="max_server_steps budget of 9") as caught:
            env.step(fly())
        assert caught.value.url == "" and (caught.value.steps_used, caught.value.limit) == (8, 9)
        assert server.stats()["tokens"][token]["steps_used"] == 8  # nothing was sent
        with pytest.raises(QuotaExceededError):  # the EnvPool-style path: refused, nothing left in flight
            env.send(fly())
        with pytest.raises(QuotaExceededError):  # not "slots in flight"
            env.step(fly())
        assert server.stats()["tokens"][token]["steps_used"] == 8 and env.stats()["counters"]["server_steps"] == 8
        env.reset(seed=6)


def test_max_server_steps_must_be_a_non_negative_int() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(SpecError, match="max_server_steps"):
            HttpEnvSpec("http://127.0.0.1:1", "t", max_server_steps=bad)  # type: ignore[arg-type]


def test_a_trainer_on_a_daemon_gets_the_quota_error_with_its_count(server: RefServer) -> None:
    token = f"quota-{uuid.uuid4().hex[:8]}"
    with (
        DaemonProcess(spec=server.url, envs=NUM_ENVS, workers=2, extra=("--token", token)) as daemon,
        pool_env.connect(daemon.endpoint, num_envs=NUM_ENVS) as env,
    ):
        env.reset(seed=0)
        for _ in range(3):
            env.step(fly())
        with pytest.raises(QuotaExceededError, match="12 of 12 steps used") as caught:
            env.step(fly())
        assert (caught.value.steps_used, caught.value.limit) == (12, 12)
        env.reset(seed=1)  # the daemon and the lease are still fine
