"""HttpBackend against the in-process fake challenge server of :mod:`tests.fakes.challenge_server`
(scripted faults, a fake clock: no sockets, no sleeping)."""

from __future__ import annotations

import math
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pool_env import errors
from pool_env.config import STEP_TIMEOUT_MARGIN, PoolOptions
from pool_env.envs import HttpEnvSpec, spec_from_wire
from pool_env.errors import ClosedError, ErrorKind, HttpStatusError, QuotaExceededError, StepFate
from tests.fakes.challenge_server import TOKEN, URL, Fault, FixedRandom, Harness, make
from workers.backends import retry
from workers.backends.http import BACKEND_COUNTER_NAMES


@pytest.fixture
def h() -> Harness:
    return make()


def ready(h: Harness) -> Harness:
    outcomes = h.backend.reset(range(h.backend.num_slots), [None] * h.backend.num_slots, None)
    assert [o.error for o in outcomes] == [None] * len(outcomes)
    h.server.log.clear()
    h.server.timeouts.clear()
    return h


# -- creation, headers, reset ---------------------------------------------------------------


def test_constructor_does_no_network_io(h: Harness) -> None:
    assert h.server.log == [] and h.adapters == []
    assert h.backend.counters() == dict.fromkeys(BACKEND_COUNTER_NAMES, 0)


def test_first_reset_creates_a_session_and_one_group_then_resets_it(h: Harness) -> None:
    h.backend.reset([0, 1], [None, None], None)
    assert h.server.paths() == [
        "/api/v1/session/create",
        "/api/v1/vectorized/episodes/create",
        "/api/v1/episode/vectorized_reset",
    ]
    create = h.server.log[1][3]
    assert create["num_envs"] == 2
    assert create["env_config"] == {
        "env_type": "DegradationEnv",
        "max_steps_per_episode": 1000,
        "auto_reset": True,
        "step_size": 10,
        "reward_config": {},
    }
    h.backend.reset([0, 1], [None, None], None)  # episodes exist now: only a reset
    assert h.server.paths()[3:] == ["/api/v1/episode/vectorized_reset"]


def test_session_id_header_is_sent_only_on_the_create_endpoints(h: Harness) -> None:
    ready(h)
    h.backend.step([0, 1], [0, 0])
    h.server.faults.append(Fault("vectorized_step", "500"))
    h.backend.step([0, 1], [0, 0])  # adds state/latest requests
    h.server.log.clear()
    h.server.restart()
    h.backend.reset([0, 1], [None, None], None)  # recreates session and episodes
    h.backend.step([0, 1], [0, 0])
    seen = {path: headers for _, path, headers, _ in h.server.log}
    for path, headers in seen.items():
        assert headers["User-Token"] == TOKEN
        assert headers["Content-Type"] == "application/json"
        assert ("Session-ID" in headers) == path.endswith(("/episode/create", "/episodes/create")), path


def test_reset_sends_seeds_with_nulls_and_follows_new_episode_ids(h: Harness) -> None:
    ready(h)
    h.backend.reset([1, 0], [7, None], None)
    assert h.server.log[-1][3]["seeds"] == [7, None]
    first_ids = h.backend.episode_ids
    h.backend.step([0, 1], [0, 0])
    outcomes = h.backend.reset([0, 1], [3, 4], None)
    assert [o.obs[0] for o in outcomes] == [3.0, 4.0]
    new_ids = h.backend.episode_ids
    assert all(new != old for new, old in zip(new_ids, first_ids, strict=True))
    h.backend.step([0, 1], [0, 0])
    assert [a["episode_id"] for a in h.server.log[-1][3]["episode_actions"]] == new_ids


def test_a_none_seed_continues_the_slot_seed_stream_like_gymnasium(h: Harness) -> None:
    h.backend.reset([0, 1], [5, None], None)
    h.backend.reset([0, 1], [None, None], None)
    h.backend.reset([0, 1], [None, None], None)
    sent = [body["seeds"] for _, path, _, body in h.server.log if path.endswith("vectorized_reset")]
    stream = random.Random(5)
    assert sent == [[5, None], [stream.randrange(2**31), None], [stream.randrange(2**31), None]]
    h.backend.reset([0], [5], None)  # an explicit seed restarts the stream
    assert h.server.log[-1][3]["seeds"] == [5]


def test_more_than_64_slots_are_created_in_several_groups() -> None:
    h = make(num_slots=70)
    h.backend.reset(range(70), [None] * 70, None)
    sizes = [body["num_envs"] for _, path, _, body in h.server.log if path.endswith("episodes/create")]
    assert sizes == [64, 6]
    assert len(set(h.backend.episode_ids)) == 70
    assert h.server.paths().count("/api/v1/episode/vectorized_reset") == 1


def test_reset_outcome_in_chunk_mode_is_padded_with_one_real_row() -> None:
    h = make(observation="chunk", step_size=4)
    (outcome,) = h.backend.reset([0], [5], None)
    assert outcome.obs.shape == (4, 9) and outcome.obs.dtype == np.float32
    assert outcome.info == {"rows": 1}
    assert outcome.obs[0].tolist() == [5.0] * 9 and not outcome.obs[1:].any()


# -- step parsing -----------------------------------------------------------------------------


def test_step_in_last_mode_gives_the_last_row_reward_and_flight_counter(h: Harness) -> None:
    ready(h)
    outcomes = h.backend.step([0, 1], [0, 1])
    for outcome in outcomes:
        assert outcome.error is None
        assert outcome.obs.shape == (9,) and outcome.obs.dtype == np.float32
        assert outcome.obs[0] == 10.0  # the 10th flight's row
        assert (outcome.reward, outcome.terminated, outcome.truncated) == (10.0, False, False)
        assert outcome.info == {"step": 10}  # internals such as degradation are not passed on
    body = h.server.log[-1][3]["episode_actions"]
    assert [a["action"] for a in body] == [0, 1]
    assert all(a["step_size"] == 10 and a["return_all_states"] is True for a in body)


def test_step_in_chunk_mode_pads_short_chunks_and_reports_rows_and_reason() -> None:
    h = ready(make(observation="chunk", step_size=5))
    fly, sell = h.backend.step([0, 1], [np.int64(0), np.int64(2)])
    assert fly.obs.shape == sell.obs.shape == (5, 9)
    assert fly.info == {"step": 5, "rows": 5}
    assert fly.obs[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert sell.info == {"step": 1, "reason": "sold", "rows": 1}
    assert sell.terminated and sell.reward == 150.0
    assert sell.obs[0, 0] == 1.0 and not sell.obs[1:].any()


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(answer: dict[str, Any]) -> None:
        answer[key][0] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message", "kind"),
    [
        (
            _set("infos", {"error": "'NoneType' object has no attribute 'astype'", "step": 10}),
            "astype",
            ErrorKind.SERVER_EPISODE_ERROR,
        ),
        (_set("observations", []), "empty observation", ErrorKind.BAD_RESPONSE),
        (_set("observations", None), "empty observation", ErrorKind.BAD_RESPONSE),
        (_set("observations", [[math.nan] * 9]), "NaN", ErrorKind.BAD_RESPONSE),
        (_set("observations", [[1.0] * 8]), "rows of 9", ErrorKind.BAD_RESPONSE),
        (_set("observations", [[1.0] * 9, [1.0] * 8]), "ragged", ErrorKind.BAD_RESPONSE),
        (_set("observations", [[1.0] * 9] * 11), "more than step_size", ErrorKind.BAD_RESPONSE),
        (_set("rewards", None), "bad reward", ErrorKind.BAD_RESPONSE),
        (_set("rewards", "12"), "bad reward", ErrorKind.BAD_RESPONSE),
        (_set("rewards", math.inf), "bad reward", ErrorKind.BAD_RESPONSE),
    ],
)
def test_a_bad_entry_fails_only_its_slot_which_gets_a_new_episode(
    h: Harness, mutate: Callable[[dict[str, Any]], None], message: str, kind: ErrorKind
) -> None:
    ready(h)
    old_ids = h.backend.episode_ids
    h.server.faults.append(Fault("vectorized_step", "mutate", mutate=mutate))
    bad, good = h.backend.step([0, 1], [0, 0])
    assert bad.error is not None and message in bad.error and bad.kind is kind
    # An error entry is not applied by the server; a bad value in an answer without one was.
    assert bad.fate is (StepFate.NOT_APPLIED if kind is ErrorKind.SERVER_EPISODE_ERROR else StepFate.APPLIED)
    assert bad.truncated and bad.obs is None and bad.reward == 0.0
    assert good.error is None and good.info == {"step": 10}
    assert h.backend.counters()["episode_errors"] == 1
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"]  # no retry
    h.backend.reset([0], [None], None)
    assert h.server.log[-2][1].endswith("episodes/create") and h.server.log[-2][3]["num_envs"] == 1
    assert h.backend.episode_ids[0] != old_ids[0] and h.backend.episode_ids[1] == old_ids[1]


# -- 4xx --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (401, "User-Token header is required", "User-Token header is required"),
        (400, "bad request", "bad request"),
        (422, [{"loc": ["body", "x"], "msg": "field required"}], '"msg": "field required"'),
        (429, "step limit of 100000 reached", "step limit of 100000 reached"),
    ],
)
def test_a_4xx_on_step_raises_http_status_error_with_the_detail_and_no_retry(
    h: Harness, status: int, detail: Any, expected: str
) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "status", status=status, detail=detail))
    with pytest.raises(HttpStatusError) as info:
        h.backend.step([0, 1], [0, 0])
    assert info.value.status == status
    assert expected in info.value.detail
    assert info.value.url == URL + "/api/v1/episode/vectorized_step"
    assert h.server.paths() == ["/api/v1/episode/vectorized_step"] and h.sleeps == []


def test_a_429_without_quota_headers_takes_the_count_from_the_detail_and_is_not_retried(h: Harness) -> None:
    ready(h)  # the live server's answer: no X-Steps-* headers, only the detail
    h.server.faults.append(Fault("vectorized_step", "status", status=429, detail="step limit of 100000 reached"))
    with pytest.raises(QuotaExceededError, match="100,000 of 100,000 steps used") as info:
        h.backend.step([0, 1], [0, 0])
    assert (info.value.steps_used, info.value.limit, info.value.status) == (100_000, 100_000, 429)
    assert h.server.paths() == ["/api/v1/episode/vectorized_step"] and h.sleeps == []
    assert h.backend.counters()["server_steps_sent"] == 2
    assert h.backend.counters()["server_steps_reported"] == 0  # no header: nothing reported


def test_a_4xx_on_session_create_raises_http_status_error(h: Harness) -> None:
    h.server.faults.append(Fault("session/create", "status", status=401, detail="bad token"))
    with pytest.raises(HttpStatusError, match=r"HTTP 401.*bad token"):
        h.backend.reset([0, 1], [None, None], None)
    assert len(h.server.log) == 1


# -- retries of resets and creates ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["503", "connect", "drop", "timeout", "not_json"])
def test_reset_and_create_failures_are_retried_blindly(h: Harness, kind: str) -> None:
    h.server.faults += [Fault("episodes/create", kind), Fault("vectorized_reset", kind)]
    outcomes = h.backend.reset([0, 1], [1, 2], None)
    assert [o.error for o in outcomes] == [None, None]
    assert h.server.paths("episodes/create") == ["/api/v1/vectorized/episodes/create"] * 2
    assert h.server.paths("vectorized_reset") == ["/api/v1/episode/vectorized_reset"] * 2
    assert len(h.sleeps) == 2 and h.backend.counters()["retries"] == 2
    if kind in ("drop", "timeout"):  # the lost create left two orphan episodes on the server
        assert len(h.server.episodes) == 4


def test_a_reset_that_keeps_failing_errors_its_slots_and_the_next_reset_starts_afresh(h: Harness) -> None:
    ready(h)
    old_ids = h.backend.episode_ids
    h.server.faults.append(Fault("vectorized_reset", "503", times=4))
    outcomes = h.backend.reset([0, 1], [None, None], None)
    assert all(o.error and o.error.startswith("reset failed: gave up after 3 retries") for o in outcomes)
    assert all((o.kind, o.fate) == (ErrorKind.SERVER_5XX, StepFate.NOT_APPLIED) for o in outcomes)
    assert "HTTP 503" in str(outcomes[0].error) and len(h.sleeps) == 3
    assert h.backend.episode_ids == [None, None]
    h.server.log.clear()
    assert [o.error for o in h.backend.reset([0, 1], [None, None], None)] == [None, None]
    assert h.server.paths()[:2] == ["/api/v1/session/create", "/api/v1/vectorized/episodes/create"]
    assert set(h.backend.episode_ids).isdisjoint(old_ids)


def test_a_transport_error_closes_the_session_and_opens_a_new_one(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "connect"))
    h.backend.step([0, 1], [0, 0])
    assert [a.closed for a in h.adapters] == [True, False]
    counters = h.backend.counters()
    assert (counters["sessions_opened"], counters["transport_errors"], counters["retries"]) == (2, 1, 1)


def test_retry_delays_use_full_jitter_below_the_doubling_ceiling() -> None:
    h = ready(make(max_retries=4, retry_backoff=0.5))
    h.server.faults.append(Fault("vectorized_step", "500", times=4))
    assert [o.error for o in h.backend.step([0, 1], [0, 0])] == [None, None]
    assert len(h.sleeps) == 4
    for delay, ceiling in zip(h.sleeps, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert 0.0 <= delay < ceiling


# -- retries of steps: never twice ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "connect"])
def test_a_step_that_was_not_applied_is_checked_then_sent_again_once(h: Harness, kind: str) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", kind))
    outcomes = h.backend.step([0, 1], [0, 0])
    assert [o.error for o in outcomes] == [None, None]
    assert [o.info["step"] for o in outcomes] == [10, 10]
    ids = h.backend.episode_ids
    assert h.server.paths() == [
        "/api/v1/episode/vectorized_step",
        f"/api/v1/episode/{ids[0]}/state/latest",
        f"/api/v1/episode/{ids[1]}/state/latest",
        "/api/v1/episode/vectorized_step",
    ]
    assert h.server.applied() == 2  # one step per episode
    assert h.backend.counters()["lost_responses"] == 0


@pytest.mark.parametrize("kind", ["drop", "timeout", "not_json"])
def test_a_step_applied_with_its_response_lost_is_not_sent_again(h: Harness, kind: str) -> None:
    ready(h)
    h.backend.step([0, 1], [0, 0])  # counters at 10
    ids = h.backend.episode_ids
    h.server.faults.append(Fault("vectorized_step", kind))  # applied, then the answer is lost
    outcomes = h.backend.step([0, 1], [0, 0])
    for outcome in outcomes:
        assert outcome.error is not None and "step applied but its response was lost" in outcome.error
        assert (outcome.kind, outcome.fate) == (ErrorKind.LOST_RESPONSE, StepFate.APPLIED)
        assert "10 -> 20" in outcome.error
        assert outcome.truncated and outcome.obs is None
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"] * 2
    assert h.server.applied() == 4
    assert h.backend.counters()["lost_responses"] == 2
    assert h.backend.episode_ids == ids  # not broken: the episodes are just reset next
    h.server.log.clear()
    h.backend.reset([0, 1], [None, None], None)
    assert h.server.paths() == ["/api/v1/episode/vectorized_reset"]


def test_only_the_slots_whose_step_was_not_applied_are_sent_again(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "drop_first"))
    lost, fine = h.backend.step([0, 1], [0, 0])
    assert lost.error is not None and "response was lost" in lost.error
    assert fine.error is None and fine.info == {"step": 10}
    resent = [a["episode_id"] for a in h.server.log[-1][3]["episode_actions"]]
    assert resent == [h.backend.episode_ids[1]]
    assert [e.applied for e in h.server.episodes.values()] == [1, 1]


def test_an_episode_gone_at_the_state_check_fails_its_slot_and_is_recreated(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "restart"))
    outcomes = h.backend.step([0, 1], [0, 0])
    for outcome in outcomes:
        assert outcome.error is not None and "is gone" in outcome.error and "Episode not found" in outcome.error
        assert (outcome.kind, outcome.fate) == (ErrorKind.EPISODE_GONE, StepFate.NOT_APPLIED)
    assert h.backend.episode_ids == [None, None]
    assert h.backend.counters()["episode_errors"] == 2
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"]
    h.server.log.clear()
    outcomes = h.backend.reset([0, 1], [None, None], None)
    assert [o.error for o in outcomes] == [None, None]
    # the old server session is unknown too: a 404 on create makes a new one
    assert h.server.paths() == [
        "/api/v1/vectorized/episodes/create",
        "/api/v1/session/create",
        "/api/v1/vectorized/episodes/create",
        "/api/v1/episode/vectorized_reset",
    ]
    assert [o.error for o in h.backend.step([0, 1], [0, 0])] == [None, None]


def test_a_reset_of_forgotten_episodes_makes_new_ones_in_the_same_call(h: Harness) -> None:
    ready(h)
    h.server.restart()
    outcomes = h.backend.reset([0, 1], [1, 2], None)
    assert [o.error for o in outcomes] == [None, None]
    assert [o.obs[0] for o in outcomes] == [1.0, 2.0]
    assert h.server.paths("vectorized_reset") == ["/api/v1/episode/vectorized_reset"] * 2


def test_a_404_for_the_whole_step_checks_the_episodes_then_resends(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "status", status=404, detail="nope"))
    assert [o.error for o in h.backend.step([0, 1], [0, 0])] == [None, None]
    assert h.server.applied() == 2 and h.sleeps == []


def test_a_404_for_the_step_while_every_episode_exists_is_a_configuration_error(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "status", status=404, detail="Not Found", times=2))
    with pytest.raises(HttpStatusError, match="404"):
        h.backend.step([0, 1], [0, 0])


def test_exhausted_retries_fail_every_slot_and_the_backend_recovers_later(h: Harness) -> None:
    ready(h)
    h.server.down = True
    outcomes = h.backend.step([0, 1], [0, 0])
    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.error.startswith("step failed, may have been applied: gave up after 3 retries")
        assert "ConnectionError: server is down" in outcome.error
        assert (outcome.kind, outcome.fate) == (ErrorKind.TRANSPORT, StepFate.UNKNOWN)
        assert outcome.truncated
    # one back-off after the step request failed, then the check's state request gives up
    assert len(h.sleeps) == 1 + 3
    assert h.backend.counters()["retries_exhausted"] == 1
    assert h.backend.episode_ids == [None, None]
    # While the server is down a reset fails per slot too, without raising.
    assert all(o.error and "could not create an episode" in o.error for o in h.backend.reset([0, 1], [None] * 2))
    h.server.down = False
    h.server.log.clear()
    outcomes = h.backend.reset([0, 1], [None, None], None)
    assert [o.error for o in outcomes] == [None, None]
    assert h.server.paths()[:2] == ["/api/v1/session/create", "/api/v1/vectorized/episodes/create"]
    assert [o.error for o in h.backend.step([0, 1], [0, 0])] == [None, None]


def test_a_step_that_failed_for_the_last_time_is_still_checked_and_reported_not_applied(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_step", "500", times=4))
    outcomes = h.backend.step([0, 1], [0, 0])
    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.error.startswith("step failed, not applied: gave up after 3 retries")
        assert "POST /api/v1/episode/vectorized_step: HTTP 500: injected" in outcome.error
        assert (outcome.kind, outcome.fate) == (ErrorKind.SERVER_5XX, StepFate.NOT_APPLIED)
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"] * 4
    assert h.server.applied() == 0 and h.backend.episode_ids == [None, None]


def test_a_last_attempt_applied_with_its_answer_lost_is_reported_lost(h: Harness) -> None:
    ready(h)
    h.server.faults += [Fault("vectorized_step", "500", times=3), Fault("vectorized_step", "drop")]
    outcomes = h.backend.step([0, 1], [0, 0])
    assert all(o.error and "step applied but its response was lost (step counter 0 -> 10)" in o.error for o in outcomes)
    assert h.server.applied() == 2


def test_stepping_a_slot_without_an_episode_is_an_error_not_a_request(h: Harness) -> None:
    (outcome,) = h.backend.step([0], [0])
    assert outcome.error is not None and "reset it first" in outcome.error
    assert (outcome.kind, outcome.fate) == (ErrorKind.EPISODE_GONE, StepFate.NOT_APPLIED)
    assert h.server.log == []


# -- lifecycle --------------------------------------------------------------------------------


def test_close_closes_the_session_and_later_calls_raise(h: Harness) -> None:
    ready(h)
    h.backend.close()
    h.backend.close()
    assert [a.closed for a in h.adapters] == [True]
    with pytest.raises(ClosedError):
        h.backend.step([0], [0])


def test_the_http_backend_does_not_import_gymnasium() -> None:
    """A fresh interpreter importing what an HTTP worker imports loads no gymnasium (DESIGN: performance)."""
    code = """if True:
        import sys
        import pool_env, pool_env.errors, workers.__main__, workers.loop, workers.backends.http
        from pool_env import HttpEnvSpec, PoolEnvError, errors
        from pool_env.envs import spec_from_wire
        # The worker's path: the spec from the init message, its backend through the kind registry.
        spec_from_wire(HttpEnvSpec("http://x", "t").to_wire([0, 1])).make_backend([0, 1]).close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "gymnasium")
        print("worker:", loaded)
        errors.NoPendingCallError  # the gymnasium-derived errors load gymnasium on first use only
        print("after:", "gymnasium" in sys.modules)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["worker: []", "after: True"], done.stdout


def test_gymnasium_derived_errors_are_made_once_and_pickle() -> None:
    import gymnasium.error

    import pool_env

    assert errors.AlreadyPendingError is pool_env.AlreadyPendingError is errors.AlreadyPendingError
    assert issubclass(errors.AlreadyPendingError, gymnasium.error.AlreadyPendingCallError)
    assert issubclass(errors.NoPendingCallError, gymnasium.error.NoAsyncCallError)
    assert issubclass(errors.NoPendingCallError, errors.UsageError)
    copy = pickle.loads(pickle.dumps(errors.NoPendingCallError("no call", "reset")))
    assert type(copy) is errors.NoPendingCallError and copy.name == "reset" and str(copy) == "no call"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        errors.Nope  # noqa: B018


# -- the call deadline (call_timeout) -------------------------------------------------------------


def test_call_timeout_is_validated_and_bounds_the_worker_command() -> None:
    for bad in (0, -1.0, math.inf, math.nan, "5"):
        with pytest.raises(errors.SpecError, match="call_timeout"):
            HttpEnvSpec(URL, TOKEN, call_timeout=bad)  # type: ignore[arg-type]
    default = HttpEnvSpec(URL, TOKEN)  # request_timeout 10, max_retries 3
    assert default.effective_call_timeout() == 4 * 10.0 + 3 * retry.DEFAULT_CAP == 55.0
    assert default.worst_case_step_seconds() == 2 * (55.0 + 10.0)
    assert PoolOptions().effective_step_timeout(default) == 130.0 + STEP_TIMEOUT_MARGIN
    spec = HttpEnvSpec(URL, TOKEN, request_timeout=2.0, call_timeout=7.5)
    assert spec.effective_call_timeout() == 7.5
    assert spec.worst_case_step_seconds() == 2 * (7.5 + 2.0)
    assert spec_from_wire(spec.to_wire()) == spec


def test_retries_stop_at_the_deadline_even_with_retries_left() -> None:
    # Delays drawn at 0.999 of their ceiling: 0.4995, 0.999, then 1.998 > the 1.5 s left.
    h = make(max_retries=50, retry_backoff=0.5, call_timeout=3.0, rng=FixedRandom(0.999))
    h.server.down = True
    outcomes = h.backend.reset([0, 1], [None, None], None)
    for outcome in outcomes:
        assert outcome.error is not None and outcome.truncated
        assert outcome.error.startswith("could not create an episode: gave up after 1.5 s (call_timeout=3 s)")
        assert (outcome.kind, outcome.fate) == (ErrorKind.CALL_TIMEOUT, StepFate.NOT_APPLIED)
        assert "last error: POST /api/v1/session/create: ConnectionError: server is down" in outcome.error
    assert h.sleeps == pytest.approx([0.4995, 0.999])
    assert len(h.server.log) == 3 and h.clock.now <= 3.0
    counters = h.backend.counters()
    assert (counters["retries"], counters["call_timeouts"], counters["retries_exhausted"]) == (2, 1, 0)
    h.server.down = False  # the next call has a fresh deadline
    assert [o.error for o in h.backend.reset([0, 1], [None, None], None)] == [None, None]


def test_request_timeouts_shrink_to_the_time_left() -> None:
    h = make(request_timeout=1.0, call_timeout=1.75)
    h.server.latency = 0.5
    outcomes = h.backend.reset([0, 1], [1, 2], None)  # session, create, reset: 0.5 s each
    assert [o.error for o in outcomes] == [None, None]
    assert h.server.timeouts == [1.0, 1.0, 0.75]
    h.server.timeouts.clear()
    h.backend.step([0, 1], [0, 0])  # a new call: a full request timeout again
    assert h.server.timeouts == [1.0]


def test_a_slow_server_ends_the_step_by_the_deadline_and_unresolved_slots_may_have_been_applied() -> None:
    h = ready(make(request_timeout=1.0, call_timeout=1.75, rng=FixedRandom(0.0)))
    ids = h.backend.episode_ids
    start = h.clock.now
    h.server.latency = 0.5
    h.server.faults += [
        Fault("vectorized_step", "drop"),  # applied, answer lost
        Fault(f"{ids[1]}/state/latest", "slow", delay=10.0, times=99),  # never answers in time
    ]
    lost, unknown = h.backend.step([0, 1], [0, 0])
    assert lost.error is not None and "step applied but its response was lost (step counter 0 -> 10)" in lost.error
    assert unknown.error is not None and unknown.truncated
    assert unknown.error.startswith("step failed, may have been applied: gave up after 1.75 s (call_timeout=1.75 s)")
    assert (lost.kind, lost.fate) == (ErrorKind.LOST_RESPONSE, StepFate.APPLIED)
    assert (unknown.kind, unknown.fate) == (ErrorKind.CALL_TIMEOUT, StepFate.UNKNOWN)
    assert f"GET /api/v1/episode/{ids[1]}/state/latest: ReadTimeout" in unknown.error
    assert h.clock.now - start == 1.75  # step 0.5, state of slot 0 0.5, state of slot 1 cut to 0.75
    assert h.server.timeouts == [1.0, 1.0, 0.75]
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"]  # never twice
    assert h.server.applied() == 2 and h.backend.counters()["call_timeouts"] == 1


def test_a_step_known_not_applied_is_not_resent_after_the_deadline() -> None:
    h = ready(make(request_timeout=1.0, call_timeout=1.5, rng=FixedRandom(0.0)))
    h.server.latency = 0.5
    h.server.faults.append(Fault("vectorized_step", "500"))
    outcomes = h.backend.step([0, 1], [0, 0])  # step, 2 state checks: 1.5 s, no time to resend
    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.error.startswith("step failed, not applied: gave up after 1.5 s (call_timeout=1.5 s)")
        assert (outcome.kind, outcome.fate) == (ErrorKind.CALL_TIMEOUT, StepFate.NOT_APPLIED)
        assert "last error: POST /api/v1/episode/vectorized_step: HTTP 500: injected" in outcome.error
    assert h.server.paths("vectorized_step") == ["/api/v1/episode/vectorized_step"]
    assert h.server.applied() == 0 and h.backend.episode_ids == [None, None]


@pytest.mark.parametrize("call", ["reset", "step"])
def test_every_call_ends_within_call_timeout_plus_one_request_timeout(call: str) -> None:
    h = ready(make(request_timeout=2.0, max_retries=100, call_timeout=5.0, rng=FixedRandom(0.0)))
    start = h.clock.now
    h.server.latency = 100.0  # every request times out (and a step is still applied)
    if call == "reset":
        outcomes = h.backend.reset([0, 1], [None, None], None)
        expected = "reset failed: gave up after 5 s (call_timeout=5 s)"
    else:
        outcomes = h.backend.step([0, 1], [0, 0])
        expected = "step failed, may have been applied: gave up after 5 s (call_timeout=5 s)"
    assert all(o.error is not None and o.error.startswith(expected) for o in outcomes), outcomes
    fate = StepFate.NOT_APPLIED if call == "reset" else StepFate.UNKNOWN
    assert all((o.kind, o.fate) == (ErrorKind.CALL_TIMEOUT, fate) for o in outcomes), outcomes
    assert h.clock.now - start <= 5.0 + 2.0
    assert h.server.applied() == (2 if call == "step" else 0)


def test_retries_exhausted_error_lives_in_pool_env_errors() -> None:
    assert retry.RetriesExhaustedError is errors.RetriesExhaustedError
    assert issubclass(errors.RetriesExhaustedError, errors.TransportError)
    assert issubclass(errors.CallTimeoutError, errors.RetriesExhaustedError)
    for error in (errors.RetriesExhaustedError(3, "boom"), errors.CallTimeoutError(5.0, 5.25, 2, "slow")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.last_error == error.last_error
    message = str(errors.CallTimeoutError(5.0, 5.25, 2, "slow"))
    assert message == "gave up after 5.25 s (call_timeout=5 s); last error: slow"
