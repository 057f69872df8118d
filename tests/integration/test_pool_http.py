"""PoolVectorEnv on DegradationEnv episodes served by the real reference server, with real faults.

Each row of DESIGN.md's failure table for the HTTP backend has a test here: dropped
connections, 5xx, hangs past the client timeout, server episode errors, a server restart
(all episodes lost), 4xx configuration errors, an unreachable server. The server's own
per-token accounting proves that no step is lost or applied twice, and that no ended
episode is ever stepped.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import pool_env
from pool_env import ErrorKind, HttpEnvSpec, PoolOptions, PoolVectorEnv, StepFate
from pool_env.chaos import StepLedger
from pool_env.refserver.process import RefServer, free_port
from tests.integration.refserver_helpers import NO_FAULTS

NUM_ENVS = 6


@pytest.fixture
def token(server: RefServer) -> Iterator[str]:
    """A fresh user token per test, so the server's per-token accounting is the test's own."""
    server.set_faults(**NO_FAULTS)
    yield f"pool-{uuid.uuid4().hex[:8]}"
    if server.running:
        server.set_faults(**NO_FAULTS)


def make_pool(server: RefServer, token: str, num_workers: int = 2, **spec_fields: Any) -> PoolVectorEnv:
    fields: dict[str, Any] = {"request_timeout": 1.0, "retry_backoff": 0.01, "max_retries": 2, **spec_fields}
    return PoolVectorEnv(
        HttpEnvSpec(server.url, token, **fields), NUM_ENVS, num_workers, options=PoolOptions(step_timeout=15.0)
    )


def fly(num_envs: int = NUM_ENVS) -> np.ndarray:
    return np.zeros(num_envs, dtype=np.int64)


def run_steps(env: PoolVectorEnv, ledger: StepLedger, steps: int, action: int = 0) -> None:
    for _ in range(steps):
        _, _, terminated, truncated, infos = env.step(np.full(NUM_ENVS, action, dtype=np.int64))
        ledger.record(terminated, truncated, infos)


def token_stats(server: RefServer, token: str) -> dict[str, int]:
    stats: dict[str, int] = server.stats()["tokens"][token]
    return stats


def test_pool_steps_degradation_episodes_with_the_declared_spaces(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        assert env.single_observation_space.shape == (9,)
        assert env.single_action_space.n == 3
        obs, _ = env.reset(seed=1)
        assert obs.shape == (NUM_ENVS, 9) and obs.dtype == np.float32
        obs, rewards, terminated, truncated, infos = env.step(fly())
        assert np.all((obs[:, 0] > 700) & (obs[:, 0] < 900)), "HPC_Tout in kelvin"
        assert np.all(rewards > 0), "flying a new engine earns money"
        assert not terminated.any() and not truncated.any() and "error" not in infos
        assert infos["step"].tolist() == [10] * NUM_ENVS


def test_same_seed_gives_the_same_trajectories_for_any_worker_count(server: RefServer, token: str) -> None:
    traces = []
    for workers in (1, 3):
        with make_pool(server, f"{token}-{workers}", num_workers=workers) as env:
            obs, _ = env.reset(seed=7)
            trace = [obs]
            rng = np.random.default_rng(0)
            for _ in range(25):
                obs, rewards, terminated, truncated, _ = env.step(rng.choice([0, 0, 0, 1], NUM_ENVS))
                trace += [obs, rewards, terminated, truncated]
            traces.append(trace)
    for a, b in zip(*traces, strict=True):
        np.testing.assert_array_equal(a, b)


def test_chunk_observations_are_padded_with_the_row_count_in_infos(server: RefServer, token: str) -> None:
    with make_pool(server, token, observation="chunk", step_size=5) as env:
        assert env.single_observation_space.shape == (5, 9)
        env.reset(seed=3)
        obs, _, _, _, infos = env.step(np.full(NUM_ENVS, 2, dtype=np.int64))  # sell: one row
        assert infos["rows"].tolist() == [1] * NUM_ENVS
        assert np.all(obs[:, 1:] == 0) and np.all(obs[:, 0, 0] > 700)


def test_dropped_connections_and_5xx_lose_no_step_and_apply_none_twice(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        server.set_faults(p_drop=0.15, p_http_503=0.1, p_http_500=0.05, fault_seed=11)
        ledger = StepLedger(NUM_ENVS)
        run_steps(env, ledger, 60)
        server.set_faults(**NO_FAULTS)
        stats = token_stats(server, token)
    injected = server.stats()["faults_injected"]
    assert injected.get("drop", 0) > 0 and injected.get("503", 0) > 0, injected
    assert ledger.lost > 0, "some dropped step responses must have been detected"
    # Every step the trainer saw was applied once; a step whose fate the retries could not learn
    # (the state query failed too) may have been applied at most once.
    seen = ledger.applied + ledger.lost
    assert seen <= stats["steps_applied"] <= seen + ledger.uncertain, (stats, ledger)
    assert stats["steps_on_ended"] == 0, "the pool must never step an episode that ended"


def test_a_server_episode_error_truncates_only_that_slot_which_then_restarts(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        env.step(fly())
        server.fail_next("episode_error", count=1)
        _, rewards, terminated, truncated, infos = env.step(fly())
        assert infos["_error"].sum() == 1
        slot = int(np.flatnonzero(infos["_error"])[0])
        assert infos["error_kind"][slot] is ErrorKind.SERVER_EPISODE_ERROR
        assert infos["step_fate"][slot] is StepFate.NOT_APPLIED  # the live server applies no step of an error entry
        assert truncated.tolist() == [i == slot for i in range(NUM_ENVS)]
        assert rewards[slot] == 0 and not terminated.any()
        _, rewards, terminated, truncated, infos = env.step(fly())
        assert "error" not in infos and not truncated.any()
        assert rewards[slot] == 0.0, "the errored slot was reset (NEXT_STEP autoreset)"
        assert infos["step"][slot] == 0 and np.all(infos["step"][np.arange(NUM_ENVS) != slot] == 30)


def test_an_episode_error_in_a_lost_response_is_not_stepped_again(server: RefServer, token: str) -> None:
    """The server failed one entry of a step request and the connection dropped: the state check
    sees that episode's counter unchanged but the episode ended, so it must not send the step again."""
    with make_pool(server, token, num_workers=1) as env:
        env.reset(seed=0)
        env.step(fly())
        server.fail_next("episode_error", count=1)
        server.fail_next("drop", count=1, path="/api/v1/episode/vectorized_step")
        ledger = StepLedger(NUM_ENVS)
        run_steps(env, ledger, 1)
        assert ledger.lost == NUM_ENVS - 1 and ledger.not_applied == 1, ledger.errors
        run_steps(env, ledger, 2)
        stats = token_stats(server, token)
    assert stats["steps_on_ended"] == 0, "the failed episode was stepped again"
    assert stats["steps_applied"] == NUM_ENVS + ledger.seen


def test_one_shot_5xx_is_retried_without_the_trainer_noticing(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        server.fail_next("503", count=2)
        ledger = StepLedger(NUM_ENVS)
        run_steps(env, ledger, 3)
        assert ledger.errors == []
        assert token_stats(server, token)["steps_applied"] == 3 * NUM_ENVS


def test_a_hang_past_the_request_timeout_costs_one_step_of_that_workers_slots(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        server.set_faults(hang_s=3.0)
        server.fail_next("hang", count=1, path="/api/v1/episode/vectorized_step")
        ledger = StepLedger(NUM_ENVS)
        run_steps(env, ledger, 1)
        # The hung request was applied by the server: its slots are truncated (never re-sent).
        assert ledger.lost == NUM_ENVS // 2, ledger.errors
        run_steps(env, ledger, 3)
        assert token_stats(server, token)["steps_applied"] == ledger.applied + ledger.lost


def test_server_restart_is_healed_without_trainer_action(token: str) -> None:
    with RefServer() as server, make_pool(server, token) as env:
        env.reset(seed=0)
        ledger = StepLedger(NUM_ENVS)
        run_steps(env, ledger, 2)
        server.restart()  # every episode on the server is lost
        _, _, _, truncated, infos = env.step(fly())
        assert truncated.all() and infos["_error"].all(), "every episode was lost with the server"
        deadline = time.monotonic() + 20
        while True:
            _, _, _, truncated, infos = env.step(fly())
            if "error" not in infos and not truncated.any():
                break
            assert time.monotonic() < deadline, f"pool did not recover: {infos.get('error')}"
        assert sum(w["restarts"] for w in env.stats()["workers"]) == 0, "healed inside the workers"


def test_steps_during_an_outage_fail_fast_as_data_and_recover_when_the_server_returns(token: str) -> None:
    with RefServer() as ref, make_pool(ref, token, max_retries=1) as env:
        env.reset(seed=0)
        ref.kill()
        for _ in range(2):
            _, _, _, truncated, infos = env.step(fly())
            assert truncated.all() and infos["_error"].all()
        ref.start()
        deadline = time.monotonic() + 20
        while True:
            _, _, _, truncated, infos = env.step(fly())
            if "error" not in infos:
                break
            assert time.monotonic() < deadline, infos["error"]


def test_a_killed_http_worker_costs_only_its_slots(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        env.step(fly())
        os.kill(env.stats()["workers"][1]["pid"], signal.SIGKILL)
        _, _, _, truncated, infos = env.step(fly())
        assert truncated.tolist() == [False] * 3 + [True] * 3
        assert all("exited with code -9" in e for e in infos["error"][3:])
        assert infos["restarts"][3:].tolist() == [1, 1, 1]
        _, rewards, _, truncated, infos = env.step(fly())
        assert not truncated.any() and "error" not in infos
        assert rewards[3:].tolist() == [0.0] * 3 and np.all(rewards[:3] > 0)


def test_a_4xx_raises_a_clear_error_naming_the_detail_without_retries(server: RefServer, token: str) -> None:
    with make_pool(server, token) as env:
        env.reset(seed=0)
        env.step(fly())
        server.set_faults(max_steps_quota=1)
        before = server.stats()["requests_total"]
        with pytest.raises(pool_env.HttpStatusError) as caught:
            env.step(fly())
        assert caught.value.status == 429 and "limit" in caught.value.detail
        # one step request per worker, no retry storm (+1 for this stats call itself)
        assert server.stats()["requests_total"] - before <= 2 + 1
        server.set_faults(max_steps_quota=100_000)
        _, _, _, _, infos = env.step(fly())
        assert "error" not in infos, "the pool still works once the configuration is fixed"


def test_an_unreachable_server_fails_construction_fast_and_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(pool_env.TransportError, match="cannot reach"):
        PoolVectorEnv(HttpEnvSpec(url, "t", request_timeout=2.0), 4, 2)
    assert time.monotonic() - start < 10
