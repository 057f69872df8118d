"""The reference server's HTTP API (PROTOCOL.md §§2-7, 11) and its fault switches, in process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pool_env.refserver.app import create_app
from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.middleware import ConnectionDropped
from pool_env.refserver.records import NONE_TYPE_ERROR

TOKEN = {"User-Token": "tok"}
ENV_CONFIG = {"env_type": "DegradationEnv", "max_steps_per_episode": 1000, "auto_reset": True, "step_size": 10}


class Api:
    """A TestClient with the challenge client's calls."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.session_id = client.post("/api/v1/session/create", headers=TOKEN).json()["session_id"]

    def create(self, **config: Any) -> str:
        headers = {**TOKEN, "Session-ID": self.session_id}
        r = self.client.post("/api/v1/episode/create", headers=headers, json={**ENV_CONFIG, **config})
        assert r.status_code == 200, r.text
        return str(r.json()["episode_id"])

    def create_group(self, num_envs: int, **config: Any) -> list[str]:
        body = {"env_config": {**ENV_CONFIG, "reward_config": {}, **config}, "num_envs": num_envs}
        headers = {**TOKEN, "Session-ID": self.session_id}
        r = self.client.post("/api/v1/vectorized/episodes/create", headers=headers, json=body)
        assert r.status_code == 200, r.text
        return list(r.json()["episode_ids"])

    def step(self, episode_id: str, action: int = 0, **extra: Any) -> Any:
        body = {"episode_id": episode_id, "action": action, "step_size": 10, "return_all_states": True}
        return self.client.post("/api/v1/episode/step", headers=TOKEN, json={**body, **extra})

    def vstep(self, ids: list[str], actions: list[int]) -> Any:
        entries = [
            {"episode_id": i, "action": a, "step_size": 10, "return_all_states": True}
            for i, a in zip(ids, actions, strict=True)
        ]
        return self.client.post("/api/v1/episode/vectorized_step", headers=TOKEN, json={"episode_actions": entries})

    def reset(self, episode_id: str, **extra: Any) -> Any:
        return self.client.post("/api/v1/episode/reset", headers=TOKEN, json={"episode_id": episode_id, **extra})

    def faults(self, **changes: Any) -> Any:
        r = self.client.post("/control/faults", json=changes)
        assert r.status_code == 200, r.text
        return r.json()

    def accounting(self, episode_id: str) -> dict[str, Any]:
        episodes: dict[str, Any] = self.client.get("/control/episodes").json()["episodes"]
        return dict(episodes[episode_id])


def make_api(**faults: Any) -> Iterator[Api]:
    with TestClient(create_app(FaultConfig(**faults))) as client:
        yield Api(client)


@pytest.fixture
def api() -> Iterator[Api]:
    yield from make_api()


# --- headers, version, session -----------------------------------------------------------------


def test_version_answers_0_4_and_needs_a_token(api: Api) -> None:
    assert api.client.get("/api/v1/version", headers=TOKEN).json() == {"latest_version": "0.4"}
    r = api.client.get("/api/v1/version")
    assert r.status_code == 401 and "User-Token" in r.json()["detail"]
    assert api.client.get("/api/v1/version", headers={"User-Token": ""}).status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/session/create"),
        ("POST", "/api/v1/episode/step"),
        ("POST", "/api/v1/episode/vectorized_step"),
        ("GET", "/api/v1/episode/x/state/latest"),
    ],
)
def test_every_challenge_endpoint_but_score_needs_a_token(api: Api, method: str, path: str) -> None:
    r = api.client.request(method, path, json={})
    assert r.status_code == 401 and "detail" in r.json()


def test_session_create_takes_no_body_and_returns_a_uuid(api: Api) -> None:
    r = api.client.post("/api/v1/session/create", headers={**TOKEN, "Content-Type": "application/json"})
    assert r.status_code == 200 and len(r.json()["session_id"]) == 36


def test_create_needs_a_known_session_id(api: Api) -> None:
    r = api.client.post("/api/v1/episode/create", headers=TOKEN, json=ENV_CONFIG)
    assert r.status_code == 400 and "Session-ID" in r.json()["detail"]
    r = api.client.post("/api/v1/vectorized/episodes/create", headers={**TOKEN, "Session-ID": "nope"}, json={})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_create_returns_an_id_and_a_flat_observation_without_a_body(api: Api) -> None:
    r = api.client.post("/api/v1/episode/create", headers={**TOKEN, "Session-ID": api.session_id})
    assert r.status_code == 200
    assert len(r.json()["episode_id"]) == 36 and len(r.json()["initial_observation"]) == 9


def test_create_rejects_another_env_type(api: Api) -> None:
    headers = {**TOKEN, "Session-ID": api.session_id}
    r = api.client.post("/api/v1/episode/create", headers=headers, json={"env_type": "CartPole"})
    assert r.status_code == 400 and "env_type" in r.json()["detail"]


@pytest.mark.parametrize(("num_envs", "status"), [(0, 422), (1, 200), (64, 200), (65, 422)])
def test_group_create_accepts_1_to_64_envs(api: Api, num_envs: int, status: int) -> None:
    headers = {**TOKEN, "Session-ID": api.session_id}
    r = api.client.post("/api/v1/vectorized/episodes/create", headers=headers, json={"num_envs": num_envs})
    assert r.status_code == status
    if status == 200:
        assert len(set(r.json()["episode_ids"])) == num_envs and r.json()["vectorized_group_id"]


# --- reset and ids -----------------------------------------------------------------------------


def test_reset_keeps_the_id_before_any_step_and_mints_one_after(api: Api) -> None:
    eid = api.create()
    r = api.reset(eid, seed=3)
    assert r.json()["new_episode_id"] == eid and len(r.json()["observation"]) == 9
    api.step(eid)
    new_id = api.reset(eid).json()["new_episode_id"]
    assert new_id not in (None, eid)


def test_old_ids_stay_aliases_of_the_live_episode(api: Api) -> None:
    old = api.create()
    api.step(old)
    new = api.reset(old).json()["new_episode_id"]
    assert api.step(old).json()["step"] == 10  # a v0.3 client keeps stepping the old id
    assert api.client.get(f"/api/v1/episode/{old}", headers=TOKEN).json()["episode_id"] == new
    assert api.client.get(f"/api/v1/episode/{old}/state/latest", headers=TOKEN).json()["step"] == 10
    assert api.accounting(new)["steps_applied"] == 1 and api.accounting(new)["aliases"] == [old]
    assert api.accounting(old)["retired"] and api.accounting(old)["steps_applied"] == 1


def test_reset_with_the_same_seed_gives_the_same_observation(api: Api) -> None:
    eid = api.create()
    first = api.reset(eid, seed=42).json()["observation"]
    api.step(eid)
    assert api.reset(eid, seed=42).json()["observation"] == first


def test_vectorized_reset_pairs_results_and_returns_null_for_unchanged_ids(api: Api) -> None:
    ids = api.create_group(3)
    api.vstep(ids[:1], [0])
    r = api.client.post(
        "/api/v1/episode/vectorized_reset", headers=TOKEN, json={"episode_ids": ids, "seeds": [1, None, 2]}
    )
    body = r.json()
    assert [len(o) for o in body["observations"]] == [9, 9, 9]
    assert body["new_episode_ids"][0] not in (None, ids[0]) and body["new_episode_ids"][1:] == [None, None]
    assert [i["episode_id"] for i in body["infos"]] == [body["new_episode_ids"][0], *ids[1:]]
    assert all(i["step"] == 0 and i["terminated"] is False for i in body["infos"])


def test_vectorized_reset_reports_an_unknown_id_per_entry(api: Api) -> None:
    ids = api.create_group(2)
    r = api.client.post("/api/v1/episode/vectorized_reset", headers=TOKEN, json={"episode_ids": [ids[0], "nope"]})
    body = r.json()
    assert r.status_code == 200 and body["observations"][1] == [] and "nope" in body["infos"][1]["error"]
    assert len(body["observations"][0]) == 9 and body["new_episode_ids"] == [None, None]


def test_vectorized_reset_rejects_mismatched_seeds(api: Api) -> None:
    ids = api.create_group(2)
    r = api.client.post("/api/v1/episode/vectorized_reset", headers=TOKEN, json={"episode_ids": ids, "seeds": [1]})
    assert r.status_code == 422


# --- step --------------------------------------------------------------------------------------


def test_single_step_answers_the_protocol_keys(api: Api) -> None:
    eid = api.create()
    body = api.step(eid).json()
    assert set(body) == {"observation", "reward", "terminated", "truncated", "step", "info"}
    assert len(body["observation"]) == 10 and all(len(row) == 9 for row in body["observation"])
    assert body["step"] == 10 and body["info"]["info"]["step"] == 10 and "reason" not in body["info"]


def test_missing_step_fields_use_the_episode_step_size_and_a_flat_observation(api: Api) -> None:
    eid = api.create(step_size=5)
    body = api.client.post("/api/v1/episode/step", headers=TOKEN, json={"episode_id": eid, "action": 0}).json()
    assert body["step"] == 5 and len(body["observation"]) == 9 and isinstance(body["observation"][0], float)


def test_step_size_is_clamped_to_50_and_rejected_below_1(api: Api) -> None:
    eid = api.create()
    assert len(api.step(eid, step_size=500).json()["observation"]) == 50
    assert api.step(eid, step_size=0).status_code == 422
    assert api.step(eid, action=3).status_code == 422


def test_step_on_an_unknown_episode_is_404(api: Api) -> None:
    r = api.step("nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_sell_then_the_ended_episode_answers_zero_without_auto_reset(api: Api) -> None:
    eid = api.create()
    sold = api.step(eid, action=2).json()
    assert sold["reward"] == 150.0 and sold["terminated"] and sold["info"]["reason"] == "sold"
    assert len(sold["observation"]) == 1 and sold["step"] == 1
    again = api.step(eid).json()
    assert again["reward"] == 0.0 and again["terminated"] and again["observation"] == [] and again["step"] == 1
    assert again["info"]["reason"] == "sold" and again["info"]["info"]["terminated"] is True
    assert api.accounting(eid)["steps_applied"] == 1


def test_failure_answers_minus_1000_and_reason_failure(api: Api) -> None:
    eid = api.create()
    api.reset(eid, seed=0)
    body: dict[str, Any] = {}
    for _ in range(20):
        body = api.step(eid).json()
        if body["terminated"]:
            break
    assert body["reward"] == -1000.0 and body["info"]["reason"] == "failure"
    assert 1 <= len(body["observation"]) <= 10


def test_max_steps_per_episode_truncates(api: Api) -> None:
    eid = api.create(max_steps_per_episode=15)
    api.step(eid)
    body = api.step(eid).json()
    assert body["truncated"] and not body["terminated"] and body["step"] == 15 and len(body["observation"]) == 5
    assert body["info"]["reason"] == "max_steps"


def test_vectorized_step_keeps_entries_aligned_with_the_request(api: Api) -> None:
    ids = api.create_group(3)
    body = api.vstep([ids[2], "nope", ids[0]], [2, 0, 1]).json()
    assert [len(o) for o in body["observations"]] == [1, 0, 10]
    assert body["rewards"][0] == 150.0 and body["rewards"][1] == 0.0 and body["rewards"][2] < 0
    assert body["terminateds"] == [True, True, False] and body["truncateds"] == [False, False, False]
    assert [i["episode_id"] for i in body["infos"]] == [ids[2], "nope", ids[0]]
    assert all({"step", "terminated", "truncated"} <= set(i) for i in body["infos"])
    assert body["infos"][0]["terminated"] is True and "error" in body["infos"][1]


# --- read-only calls and score -------------------------------------------------------------------


def test_get_episode_and_latest_state(api: Api) -> None:
    eid = api.create()
    api.step(eid, action=1)
    info = api.client.get(f"/api/v1/episode/{eid}", headers={**TOKEN, "Content-Type": "application/json"}).json()
    assert {
        "episode_id",
        "session_id",
        "status",
        "step",
        "total_reward",
        "terminated",
        "truncated",
        "num_repairs",
        "step_size",
        "created_at",
    } <= set(info)
    assert info["status"] == "active" and info["num_repairs"] == 1 and info["step"] == 10
    latest = api.client.get(f"/api/v1/episode/{eid}/state/latest", headers=TOKEN).json()
    assert len(latest["observation"]) == 9 and latest["step"] == 10 and latest["terminated"] is False


def test_score_counts_each_finished_episode_once(api: Api) -> None:
    assert api.client.get("/api/v1/user/tok/score").status_code == 404
    eid = api.create()
    api.step(eid, action=1)
    api.step(eid, action=2)
    api.step(eid, action=2)  # stepping the ended episode does not count it again
    api.reset(eid)
    metrics = api.client.get("/api/v1/user/tok/score?limit=100").json()["metrics"]
    assert metrics["total_episodes"] == 1 and metrics["total_maintenance"] == 1 and metrics["avg_steps"] == 11
    assert metrics["failure_rate"] == 0.0 and metrics["best_reward"] == metrics["total_reward"]
    assert isinstance(metrics["last_episode_date"], str)


def test_quota_answers_429_and_counts_every_step_entry() -> None:
    for api in make_api(max_steps_quota=3):
        ids = api.create_group(2)
        assert api.vstep(ids, [0, 0]).status_code == 200
        r = api.vstep(ids, [0, 0])
        assert r.status_code == 429 and r.json()["detail"] == "step limit of 3 reached"
        assert (r.headers["X-Steps-Used"], r.headers["X-Steps-Limit"]) == ("2", "3")
        ok = api.step(ids[0])
        assert ok.status_code == 200 and ok.headers["X-Steps-Used"] == "3"
        assert api.step(ids[0]).status_code == 429
        assert api.client.get("/control/stats").json()["tokens"]["tok"]["steps_used"] == 3


# --- faults and counters -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503"])
def test_http_error_faults_answer_before_applying(api: Api, kind: str) -> None:
    eid = api.create()
    api.faults(fail_next={"kind": kind, "count": 2, "path": "step"})
    assert api.client.get("/api/v1/version", headers=TOKEN).status_code == 200  # not faultable
    for _ in range(2):
        r = api.step(eid)
        assert r.status_code == int(kind) and "injected" in r.json()["detail"]
    assert api.accounting(eid)["steps_applied"] == 0
    assert api.step(eid).json()["step"] == 10
    assert api.client.get("/control/stats").json()["faults_injected"][kind] == 2


def test_episode_error_breaks_only_its_entry_until_reset(api: Api) -> None:
    ids = api.create_group(2)
    api.faults(fail_next={"kind": "episode_error", "count": 1})
    body = api.vstep(ids, [2, 0]).json()
    assert body["observations"][0] == [] and body["rewards"][0] == 0.0 and body["terminateds"][0] is True
    assert body["infos"][0]["error"] == NONE_TYPE_ERROR and body["infos"][0]["terminated"] is False
    assert len(body["observations"][1]) == 10
    assert api.accounting(ids[0])["broken"] and api.accounting(ids[0])["steps_applied"] == 0
    again = api.vstep(ids[:1], [0]).json()
    assert again["observations"] == [[]] and again["terminateds"] == [True]
    api.client.post("/api/v1/episode/vectorized_reset", headers=TOKEN, json={"episode_ids": ids[:1]})
    assert len(api.vstep(ids[:1], [0]).json()["observations"][0]) == 10


def test_episode_error_on_a_single_step(api: Api) -> None:
    eid = api.create()
    api.faults(fail_next={"kind": "episode_error"})
    body = api.step(eid).json()
    assert body["terminated"] and body["reward"] == 0.0 and body["observation"] == []
    assert body["info"]["error"] == NONE_TYPE_ERROR and body["info"]["reason"] == "error"


def test_drop_applies_the_step_then_drops_the_answer(api: Api) -> None:
    eid = api.create()
    api.faults(fail_next={"kind": "drop", "path": "step"})
    with pytest.raises(ConnectionDropped):
        api.step(eid)
    assert api.accounting(eid)["steps_applied"] == 1
    assert api.client.get(f"/api/v1/episode/{eid}/state/latest", headers=TOKEN).json()["step"] == 10
    stats = api.client.get("/control/stats").json()
    assert stats["dropped_connections"] == 1 and stats["requests_by_status"]["dropped"] == 1


def test_hang_applies_the_step_then_waits_hang_s(api: Api) -> None:
    eid = api.create()
    api.faults(hang_s=0.3, fail_next={"kind": "hang"})
    start = time.monotonic()
    assert api.step(eid).json()["step"] == 10
    assert time.monotonic() - start >= 0.3


def test_latency_is_per_request_plus_per_env() -> None:
    for api in make_api(latency_ms=50, per_env_ms=25):
        ids = api.create_group(4)
        start = time.monotonic()
        assert api.vstep(ids, [0, 0, 0, 0]).status_code == 200
        assert time.monotonic() - start >= 0.15


def test_probabilistic_faults_follow_the_fault_seed() -> None:
    sequences = []
    for _ in range(2):
        for api in make_api():
            eid = api.create()
            api.faults(p_http_500=0.5, fault_seed=9)  # setting the seed restarts the fault RNG
            sequences.append([api.step(eid).status_code for _ in range(20)])
    assert sequences[0] == sequences[1] and {200, 500} == set(sequences[0])


def test_control_faults_round_trip_and_validation(api: Api) -> None:
    snapshot = api.faults(p_drop=0.25, fail_next=[{"kind": "503", "count": 2}])
    assert snapshot["faults"]["p_drop"] == 0.25 and snapshot["pending"] == [{"kind": "503", "count": 2, "path": None}]
    assert api.client.get("/control/faults").json()["faults"]["p_drop"] == 0.25
    for bad in ({"p_drop": 2}, {"nonsense": 1}, {"fail_next": {"kind": "boom"}}):
        r = api.client.post("/control/faults", json=bad)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    assert api.faults(clear_pending=True)["pending"] == []


def test_stats_count_requests_per_endpoint_and_second(api: Api) -> None:
    eid = api.create()
    api.step(eid)
    api.client.get(f"/api/v1/episode/{eid}", headers=TOKEN)
    stats = api.client.get("/control/stats").json()
    assert stats["requests_by_endpoint"]["POST /api/v1/episode/step"] == 1
    assert stats["requests_by_endpoint"]["GET /api/v1/episode/{episode_id}"] == 1
    assert stats["requests_total"] == sum(stats["requests_per_second"].values()) == 5
    assert stats["tokens"]["tok"]["steps_applied"] == 1
