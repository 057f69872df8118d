"""The reference server under hostile input (issue 15), in process: every client error is a 4xx with a
short detail, a request applies entirely or not at all, work per request is bounded, the control API
accepts only bounded finite values, and unused episodes and sessions are evicted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pool_env.refserver.app import create_app
from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.limits import CONTROL_TOKEN_HEADER, ServerLimits
from pool_env.refserver.records import ALIASES_KEPT, RETIRED_KEPT, ApiError, EpisodeSettings
from pool_env.refserver.state import ServerState

TOKEN = {"User-Token": "tok"}
MAX_DETAIL = 600  # characters: a detail never echoes a large input

POST_ENDPOINTS = [
    "/api/v1/episode/create",
    "/api/v1/vectorized/episodes/create",
    "/api/v1/episode/reset",
    "/api/v1/episode/vectorized_reset",
    "/api/v1/episode/step",
    "/api/v1/episode/vectorized_step",
    "/control/faults",
]
HUGE_ID = "e" * 200_000
HOSTILE_BODIES: dict[str, bytes] = {
    "nan": b'{"episode_id": "x", "action": NaN, "num_envs": NaN, "seed": NaN, "latency_ms": NaN}',
    "infinity": b'{"episode_id": "x", "action": Infinity, "num_envs": -Infinity, "hang_s": Infinity}',
    "1e999999": b'{"episode_id": "x", "action": 1e999999, "seed": 1e999999, "latency_ms": 1e999999}',
    "nan_in_list": b'{"episode_ids": ["x"], "seeds": [NaN], "episode_actions": [{"episode_id": "x", "action": NaN}]}',
    "int_of_5000_digits": b'{"seed": ' + b"9" * 5000 + b', "num_envs": 1, "action": 0, "episode_id": "x"}',
    "lone_surrogate": b'{"episode_id": "\\ud800", "episode_ids": ["\\udfff"], "action": 0, "env_type": "\\ud800"}',
    "invalid_utf8": b'{"episode_id": "\xff\xfe", "action": 0}',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "not_json": b"{episode_id: x",
    "a_list": b"[1, 2, 3]",
    "huge_id": json.dumps(
        {
            "episode_id": HUGE_ID,
            "episode_ids": [HUGE_ID],
            "action": 0,
            "env_type": HUGE_ID,
            "env_config": {"env_type": HUGE_ID},
        }
    ).encode(),
}


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        session = client.post("/api/v1/session/create", headers=TOKEN).json()["session_id"]
        self.headers = {**TOKEN, "Session-ID": session, "Content-Type": "application/json"}

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        content = raw if raw is not None else json.dumps(body).encode()
        return self.client.post(path, headers=self.headers, content=content)

    def group(self, num_envs: int) -> list[str]:
        r = self.post("/api/v1/vectorized/episodes/create", {"num_envs": num_envs})
        assert r.status_code == 200, r.text
        return list(r.json()["episode_ids"])

    def vstep(self, ids: list[str], actions: list[Any]) -> Any:
        entries = [{"episode_id": i, "action": a} for i, a in zip(ids, actions, strict=True)]
        return self.post("/api/v1/episode/vectorized_step", {"episode_actions": entries})

    def latest(self, episode_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/episode/{episode_id}/state/latest", headers=TOKEN)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def tokens(self) -> dict[str, Any]:
        return dict(self.client.get("/control/stats").json()["tokens"])


def make_api(faults: FaultConfig | None = None, limits: ServerLimits | None = None) -> Iterator[Api]:
    with TestClient(create_app(faults, limits)) as client:
        yield Api(client)


@pytest.fixture
def api() -> Iterator[Api]:
    yield from make_api(limits=ServerLimits(max_body_bytes=4_000_000))


def assert_client_error(response: Any, status: int | None = None) -> str:
    """A 4xx (``status`` if given) whose body is ``{"detail": <short str>}``; returns the detail."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    detail = response.json()["detail"]
    assert isinstance(detail, str) and 0 < len(detail) <= MAX_DETAIL, detail[:300]
    return detail


# --- every client error is a 4xx with a short detail ----------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_answer_4xx_with_a_short_detail_on_every_post_endpoint(api: Api, name: str) -> None:
    ids = api.group(2)
    before = [api.latest(i) for i in ids]
    for path in POST_ENDPOINTS:
        assert_client_error(api.post(path, raw=HOSTILE_BODIES[name]))
    assert [api.latest(i) for i in ids] == before  # nothing was applied
    assert api.client.get("/control/stats").json()["requests_by_status"].get("500") is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/episode/reset", {"episode_id": "E", "seed": -1}),
        ("/api/v1/episode/reset", {"episode_id": "E", "seed": 2**64}),
        ("/api/v1/episode/vectorized_reset", {"episode_ids": ["E"], "seeds": [-5]}),
        ("/api/v1/episode/create", {"max_steps_per_episode": 10**30}),
        ("/api/v1/vectorized/episodes/create", {"num_envs": 10**4000}),
        ("/api/v1/episode/step", {"episode_id": "E", "action": 0, "step_size": -3}),
        ("/api/v1/episode/vectorized_step", {"episode_actions": "all of them"}),
    ],
)
def test_out_of_range_values_answer_422(api: Api, path: str, body: dict[str, Any]) -> None:
    (eid,) = api.group(1)
    raw = json.dumps(body).replace('"E"', json.dumps(eid)).encode()
    assert_client_error(api.post(path, raw=raw), 422)


@pytest.mark.parametrize("episode_id", ["%ED%A0%80", "%FF", "x" * 5000, "%00"])
def test_get_with_a_bad_id_is_a_short_404(api: Api, episode_id: str) -> None:
    for suffix in ("", "/state/latest"):
        r = api.client.get(f"/api/v1/episode/{episode_id}{suffix}", headers=TOKEN)
        assert "not found" in assert_client_error(r, 404)


def test_bad_query_and_unknown_routes_are_4xx(api: Api) -> None:
    assert_client_error(api.client.get("/api/v1/user/tok/score?limit=" + "9" * 5000), 422)
    assert_client_error(api.client.get("/api/v1/user/tok/score?limit=NaN"), 422)
    assert_client_error(api.client.get("/api/v1/no/such/" + "z" * 3000, headers=TOKEN), 404)
    endpoints = api.client.get("/control/stats").json()["requests_by_endpoint"]
    assert not any("zzz" in key for key in endpoints)  # unknown paths do not grow the counters


# --- a request applies entirely or not at all -----------------------------------------------------


def test_vectorized_reset_with_one_bad_seed_resets_nothing(api: Api) -> None:
    ids = api.group(2)
    assert api.vstep(ids, [0, 0]).status_code == 200
    r = api.post("/api/v1/episode/vectorized_reset", {"episode_ids": ids, "seeds": [1, -1]})
    assert "seeds.1" in assert_client_error(r, 422)
    for eid in ids:
        state = api.latest(eid)
        assert state["step"] == 10 and state["episode_id"] == eid  # not reset, no new id minted


def test_vectorized_step_with_one_bad_entry_steps_nothing_and_counts_nothing(api: Api) -> None:
    ids = api.group(3)
    for bad in (3, -1, "fly", None, 0.5):
        assert_client_error(api.vstep(ids, [0, bad, 0]), 422)
    assert [api.latest(i)["step"] for i in ids] == [0, 0, 0]
    assert api.tokens()["tok"]["steps_used"] == 0


def test_a_refused_group_create_creates_nothing(api: Api) -> None:
    created = api.tokens()["tok"]["episodes_created"] if "tok" in api.tokens() else 0
    r = api.post("/api/v1/vectorized/episodes/create", {"num_envs": 2, "env_config": {"env_type": "Other"}})
    assert_client_error(r, 400)
    assert_client_error(api.post("/api/v1/vectorized/episodes/create", {"num_envs": 65}), 422)
    assert api.tokens().get("tok", {}).get("episodes_created", 0) == created


# --- bounded work per request ---------------------------------------------------------------------


def test_lists_longer_than_max_num_envs_are_refused_before_anything_else() -> None:
    for api in make_api(FaultConfig(max_num_envs=4)):
        entries = [{"episode_id": "nope", "action": 0}] * 5
        r = api.post("/api/v1/episode/vectorized_step", {"episode_actions": entries})
        assert "at most 4" in assert_client_error(r, 422)
        r = api.post("/api/v1/episode/vectorized_reset", {"episode_ids": ["nope"] * 5})
        assert "at most 4" in assert_client_error(r, 422)
        assert api.tokens().get("tok", {}).get("steps_used", 0) == 0


def test_the_quota_is_checked_from_the_list_length_before_parsing_entries() -> None:
    for api in make_api(FaultConfig(max_steps_quota=2)):
        # entries that would fail validation: the 429 comes first, from the length alone
        r = api.post("/api/v1/episode/vectorized_step", {"episode_actions": [{"bogus": 1}] * 3})
        assert assert_client_error(r, 429) == "step limit of 2 reached"
        assert api.tokens().get("tok", {}).get("steps_used", 0) == 0


def test_a_body_over_the_limit_is_413_without_being_read() -> None:
    for api in make_api(limits=ServerLimits(max_body_bytes=1000)):
        (eid,) = api.group(1)
        big = {"episode_id": eid, "action": 0, "pad": "p" * 2000}
        assert_client_error(api.post("/api/v1/episode/step", big), 413)

        def chunks(eid: str = eid) -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"episode_id": "' + eid.encode() + b'", "action": 0, "pad": "'
            for _ in range(100):
                yield b"p" * 100
            yield b'"}'

        r = api.client.post("/api/v1/episode/step", headers=api.headers, content=chunks())
        assert_client_error(r, 413)
        assert api.latest(eid)["step"] == 0


# --- /control/faults: bounded, finite, capped, can be closed --------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"latency_ms": Infinity}',
        b'{"hang_s": 1e999999}',
        b'{"p_hang": NaN}',
        b'{"latency_ms": 1e12}',
        b'{"hang_s": -1}',
        b'{"p_drop": "0.5"}',
        b'{"p_drop": true}',
        b'{"max_steps_quota": 1.5}',
        b'{"max_num_envs": 1025}',
        b'{"fault_seed": -1}',
        b'{"fail_next": {"kind": "500", "count": 1e9}}',
        b'{"fail_next": {"kind": "500", "count": 0}}',
        b'{"fail_next": [' + b",".join([b'{"kind": "500"}'] * 1001) + b"]}",
        b'"latency_ms"',
    ],
)
def test_control_faults_accept_only_bounded_finite_values(api: Api, raw: bytes) -> None:
    before = api.client.get("/control/faults").json()
    assert_client_error(api.client.post("/control/faults", content=raw), None)
    assert api.client.get("/control/faults").json() == before


def test_max_num_envs_can_rise_only_to_the_start_up_limit() -> None:
    for api in make_api(limits=ServerLimits(num_envs_limit=100)):
        assert api.client.post("/control/faults", json={"max_num_envs": 100}).status_code == 200
        assert len(api.group(100)) == 100
        r = api.client.post("/control/faults", json={"max_num_envs": 101})
        assert "--num-envs-limit" in assert_client_error(r, 422)
    with pytest.raises(ValueError, match="num-envs-limit"):
        create_app(FaultConfig(max_num_envs=200), ServerLimits(num_envs_limit=100))


def test_control_can_be_disabled_or_guarded_by_a_token() -> None:
    for api in make_api(limits=ServerLimits(control=False)):
        for method, path in (("GET", "/control/faults"), ("POST", "/control/faults"), ("GET", "/control/stats")):
            assert "disabled" in assert_client_error(api.client.request(method, path, json={"p_drop": 1}), 404)
        assert len(api.group(1)) == 1  # the challenge API still works
    for api in make_api(limits=ServerLimits(control_token="s3cret")):
        assert_client_error(api.client.post("/control/faults", json={"latency_ms": 5}), 403)
        bad = {CONTROL_TOKEN_HEADER: "guess"}
        assert_client_error(api.client.post("/control/faults", json={"latency_ms": 5}, headers=bad), 403)
        good = {CONTROL_TOKEN_HEADER: "s3cret"}
        r = api.client.post("/control/faults", json={"latency_ms": 5}, headers=good)
        assert r.status_code == 200 and r.json()["faults"]["latency_ms"] == 5
        assert r.json()["limits"]["control_token"] is True  # the token itself is never shown


# --- bounded memory: eviction and caps (fake clock) -----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_state(clock: FakeClock, **kwargs: Any) -> ServerState:
    return ServerState(idle_clock=clock, **{"idle_timeout_s": 60.0, **kwargs})


def test_unused_slots_and_sessions_are_evicted_and_their_ids_say_so() -> None:
    clock = FakeClock()
    state = make_state(clock)
    session = state.create_session("t")
    _, (kept, gone) = state.create_episodes("t", session, EpisodeSettings(), 2, group=True)
    clock.now += 40
    state.step("t", kept.episode_id, 0, 10, False)  # used: its idle time starts again
    clock.now += 30
    assert state.resolve(kept.episode_id) is kept
    with pytest.raises(ApiError, match="was evicted: unused for more than 60 s") as exc:
        state.resolve(gone.episode_id)
    assert exc.value.status_code == 404
    with pytest.raises(ApiError, match="not found") as unknown:
        state.resolve("never-minted")
    assert "evicted" not in unknown.value.detail
    assert session not in state.sessions  # unused since creation: evicted
    assert state.tokens["t"].live_slots == 1 and state.evictions == 1


def test_a_token_holds_at_most_max_live_episodes_and_eviction_frees_room() -> None:
    clock = FakeClock()
    state = make_state(clock, max_live_episodes=5)
    session = state.create_session("t")
    state.create_episodes("t", session, EpisodeSettings(), 4, group=True)
    with pytest.raises(ApiError, match="limit of 5") as exc:
        state.create_episodes("t", session, EpisodeSettings(), 2, group=True)
    assert exc.value.status_code == 409 and state.tokens["t"].live_slots == 4
    other = state.create_session("u")  # the cap is per token
    state.create_episodes("u", other, EpisodeSettings(), 5, group=True)
    clock.now += 61
    session = state.create_session("t")
    state.create_episodes("t", session, EpisodeSettings(), 5, group=True)
    assert state.tokens["t"].live_slots == 5 and len(state.live) == 5


def test_a_slot_reset_many_times_keeps_its_first_id_and_bounded_records() -> None:
    state = make_state(FakeClock())
    session = state.create_session("t")
    _, (first,) = state.create_episodes("t", session, EpisodeSettings(), 1, group=False)
    ids = [first.episode_id]
    for _ in range(200):
        state.step("t", ids[-1], 0, 10, False)
        episode, _ = state.reset("t", ids[-1], None)
        ids.append(episode.episode_id)
    assert state.resolve(first.episode_id) is state.resolve(ids[-1])  # the v0.3 client's id still works
    assert state.resolve(ids[-ALIASES_KEPT]).episode_id == ids[-1]
    assert len(state.slots) == ALIASES_KEPT + 1 and len(state.episodes) <= RETIRED_KEPT + 1
    with pytest.raises(ApiError, match="evicted"):
        state.resolve(ids[1])
