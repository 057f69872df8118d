"""Resets sent ahead on a second connection (``HttpBackend.reset_early`` / ``finish_reset``,
:mod:`workers.backends.http_side`): the same outcomes as a plain reset, failures retried by the
ordinary path, an answer that does not come abandoned. Against the in-process fake server."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest
import requests

from pool_env.errors import HttpStatusError
from tests.fakes.challenge_server import Fault, Harness, make
from workers.backends.http_side import SideChannel


@pytest.fixture
def h() -> Harness:
    return make()


def ready(h: Harness) -> Harness:
    outcomes = h.backend.reset([0, 1], [None, None], None)
    assert [o.error for o in outcomes] == [None, None]
    h.backend.step([0, 1], [0, 0])  # applied steps: the next reset mints new episode ids
    h.server.log.clear()
    return h


def test_a_reset_sent_ahead_gives_the_outcomes_of_a_plain_reset_and_follows_new_ids() -> None:
    ahead, plain = ready(make()), ready(make())
    old_ids = ahead.backend.episode_ids
    early = ahead.backend.reset_early([0, 1], [3, None])
    assert early is not None
    got = ahead.backend.finish_reset(early)
    want = plain.backend.reset([0, 1], [3, None], None)
    for a, b in zip(got, want, strict=True):
        assert a.error is None and b.error is None
        np.testing.assert_array_equal(a.obs, b.obs)
        assert a.info == b.info
    assert ahead.server.log[0][3]["seeds"] == plain.server.log[0][3]["seeds"] == [3, None]
    new_ids = ahead.backend.episode_ids
    assert all(new != old for new, old in zip(new_ids, old_ids, strict=True))
    ahead.backend.step([0, 1], [0, 0])
    assert [a["episode_id"] for a in ahead.server.log[-1][3]["episode_actions"]] == new_ids


def test_a_reset_sent_ahead_goes_on_a_second_connection_that_is_kept_alive(h: Harness) -> None:
    ready(h)
    for _ in range(3):
        early = h.backend.reset_early([0, 1], [None, None])
        assert early is not None
        assert [o.error for o in h.backend.finish_reset(early)] == [None, None]
    assert len(h.adapters) == 2 and not any(a.closed for a in h.adapters)
    counters = h.backend.counters()
    assert (counters["sessions_opened"], counters["requests"]) == (2, 3 + 3 + 1)  # 3 + create, reset, step


def test_the_seed_stream_advances_as_for_a_plain_reset() -> None:
    ahead, plain = make(), make()
    for h in (ahead, plain):
        h.backend.reset([0, 1], [5, 6], None)
    early = ahead.backend.reset_early([0, 1], [None, None])
    assert early is not None
    ahead.backend.finish_reset(early)
    plain.backend.reset([0, 1], [None, None], None)
    assert ahead.server.log[-1][3]["seeds"] == plain.server.log[-1][3]["seeds"]


@pytest.mark.parametrize("kind", ["503", "connect", "drop", "timeout", "not_json"])
def test_a_failed_reset_sent_ahead_is_retried_by_the_ordinary_path(h: Harness, kind: str) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_reset", kind))
    early = h.backend.reset_early([0, 1], [1, 2])
    assert early is not None
    outcomes = h.backend.finish_reset(early)
    assert [o.error for o in outcomes] == [None, None]
    assert [o.obs[0] for o in outcomes] == [1.0, 2.0]
    assert h.server.paths("vectorized_reset") == ["/api/v1/episode/vectorized_reset"] * 2
    assert len(h.sleeps) == 1 and h.backend.counters()["retries"] == 1
    assert h.adapters[1].closed and not h.adapters[0].closed  # the failed connection is the second one


def test_a_reset_sent_ahead_of_forgotten_episodes_makes_new_ones_in_the_same_call(h: Harness) -> None:
    ready(h)
    h.server.restart()
    early = h.backend.reset_early([0, 1], [1, 2])
    assert early is not None
    outcomes = h.backend.finish_reset(early)
    assert [o.error for o in outcomes] == [None, None] and [o.obs[0] for o in outcomes] == [1.0, 2.0]
    assert h.server.paths("vectorized_reset") == ["/api/v1/episode/vectorized_reset"] * 2


def test_a_4xx_for_a_reset_sent_ahead_raises_from_finish(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_reset", "status", status=422, detail="bad seeds"))
    early = h.backend.reset_early([0, 1], [None, None])
    assert early is not None
    with pytest.raises(HttpStatusError, match="bad seeds"):
        h.backend.finish_reset(early)


def test_an_error_entry_in_a_reset_sent_ahead_gets_a_new_episode_as_a_plain_reset_does(h: Harness) -> None:
    ready(h)
    h.server.faults.append(Fault("vectorized_reset", "mutate", mutate=lambda a: a["infos"][1].update(error="boom")))
    early = h.backend.reset_early([0, 1], [1, 2])
    assert early is not None
    outcomes = h.backend.finish_reset(early)
    assert [o.error for o in outcomes] == [None, None]
    assert h.backend.counters()["episode_errors"] == 1 and h.backend.counters()["episodes_created"] == 3


def test_nothing_is_sent_ahead_for_a_slot_without_an_episode(h: Harness) -> None:
    assert h.backend.reset_early([0, 1], [None, None]) is None
    assert h.server.log == [] and h.adapters == []


# -- the side channel itself ------------------------------------------------------------------


class BlockingSession(requests.Session):
    """A session whose request waits for ``release`` (a server that has not answered yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.closed = False

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert self.release.wait(10.0)
        response = requests.Response()
        response.status_code = 200
        return response

    def close(self) -> None:
        self.closed = True


def test_a_side_request_returns_at_once_and_its_answer_is_read_later() -> None:
    session = BlockingSession()
    channel = SideChannel(lambda: session, {}, Counter())
    request = channel.send("POST", "http://x.test/r", None, None, 1.0)
    assert not request.done()  # sent: the caller went on while the server works
    session.release.set()
    outcome = request.wait(5.0)
    assert isinstance(outcome, requests.Response) and outcome.status_code == 200
    assert not session.closed  # kept alive for the next request
    session.release.clear()
    second = channel.send("POST", "http://x.test/r", None, None, 1.0)  # the same connection, reused
    with pytest.raises(RuntimeError, match="in flight"):
        channel.send("POST", "http://x.test/r", None, None, 1.0)  # one request at a time
    session.release.set()
    assert isinstance(second.wait(5.0), requests.Response)


def test_an_answer_that_does_not_come_in_time_is_abandoned_and_its_connection_closed() -> None:
    session = BlockingSession()
    channel = SideChannel(lambda: session, {}, Counter())
    request = channel.send("POST", "http://x.test/r", None, None, 1.0)
    outcome = request.wait(0.01)
    assert isinstance(outcome, requests.Timeout) and channel.abandoned
    assert not session.closed  # the request still runs: its thread closes the session
    session.release.set()
    request._thread.join(5.0)
    assert session.closed


def test_the_backend_waits_a_request_timeout_at_most_then_retries_on_the_main_connection() -> None:
    h = ready(make(request_timeout=0.05, max_retries=1, retry_backoff=0.0))
    blocked = threading.Event()
    release = threading.Event()
    original = h.server.handle

    def handle(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("vectorized_reset") and not blocked.is_set():
            blocked.set()
            release.wait(10.0)  # the first reset's answer never comes in time
        return original(method, path, *args, **kwargs)

    h.server.handle = handle  # type: ignore[method-assign]
    early = h.backend.reset_early([0, 1], [1, 2])
    assert early is not None
    outcomes = h.backend.finish_reset(early)
    release.set()
    assert [o.error for o in outcomes] == [None, None]  # the retry, on the main connection, was answered
    assert h.backend.counters()["transport_errors"] == 1 and h.backend.counters()["retries"] == 1
