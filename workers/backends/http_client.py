"""One HTTP connection to a challenge server: requests, error translation, blind retries.

:class:`HttpClient` owns one ``requests.Session`` (keep-alive) with the ``User-Token`` and
``Content-Type`` headers, and translates every outcome of a request into one of:

* the decoded JSON body (HTTP 200 with a JSON body);
* :class:`RetryableError`: a transport failure (connect, timeout, reset, broken chunking, any
  other ``requests`` error), a 5xx, or a 2xx whose body is not JSON or is malformed. The session
  is closed (a new one opens on the next request), since its connection may be half-dead;
* :class:`NotFoundError`: a 404, meaning an episode or server session is gone;
* :class:`pool_env.errors.QuotaExceededError`: a 429, the token's step quota is spent (never
  retried; the count comes from the ``X-Steps-Used``/``X-Steps-Limit`` headers or the detail);
* :class:`pool_env.errors.HttpStatusError`: any other 4xx (a configuration error, never retried).

Every answer carrying ``X-Steps-Used`` / ``X-Steps-Limit`` (the reference server sends them with
step answers; the live server documents none) updates the ``server_steps_reported`` and
``server_steps_limit`` gauges in the counters (the highest value seen).

:meth:`HttpClient.call_idempotent` retries calls that are safe to apply twice (session and
episode creation, reset, state reads), each with a fresh copy of the retry policy;
:meth:`HttpClient.backoff` charges one failure to a policy and sleeps its delay with the
injected sleep and random source. Steps are not safe to repeat: the backend retries them
itself, with :meth:`HttpClient.backoff`, after checking the server's step counters.

Every backend call runs inside :meth:`HttpClient.deadline` (``HttpEnvSpec.call_timeout``): each
request's timeout is ``min(request_timeout, time left)``, and once the deadline leaves no time
for the next request or back-off the client raises :class:`~pool_env.errors.CallTimeoutError`
instead (a :class:`RetriesExhaustedError`, so callers handle both alike). A request that never started
was never applied, which the backend relies on when it reports a step "not applied".
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import requests

from pool_env.errors import ErrorKind, HttpStatusError, QuotaExceededError, RetriesExhaustedError, TransportError
from workers.backends.http_side import SideChannel, SideRequest
from workers.backends.retry import Deadline, RandomSource, RetryPolicy, describe

__all__ = ["COUNTER_NAMES", "GAUGE_NAMES", "HttpClient", "NotFoundError", "RetryableError"]

log = logging.getLogger(__name__)

COUNTER_NAMES = (
    "requests",
    "retries",
    "transport_errors",
    "http_5xx",
    "bad_responses",
    "sessions_opened",
    "retries_exhausted",
    "call_timeouts",
)
"""Counters kept by :class:`HttpClient` (all start at 0)."""

GAUGE_NAMES = ("server_steps_reported", "server_steps_limit")
"""Values the server reported (the highest seen; 0 = never reported): merged by maximum, not summed."""

_STEPS_USED_HEADER = "X-Steps-Used"
_STEPS_LIMIT_HEADER = "X-Steps-Limit"
_LIMIT_IN_DETAIL = re.compile(r"(?:step )?limit of (\d+)")

_DETAIL_LIMIT = 500

T = TypeVar("T")


def _identity(payload: Any) -> Any:
    return payload


class RetryableError(TransportError):
    """A request failed in a way a retry may heal (transport error, 5xx, unreadable body).

    Attributes:
        kind: :attr:`ErrorKind.TRANSPORT`, :attr:`ErrorKind.SERVER_5XX` or :attr:`ErrorKind.BAD_RESPONSE`;
            the kind of the slots' failure if the retries run out on it.
    """

    _wire_args = ("message", "kind")

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.TRANSPORT) -> None:
        super().__init__(message)
        self.kind = kind


class NotFoundError(TransportError):
    """The server answered 404: the episode (or server session) named in the request is gone."""

    def __init__(self, detail: str, url: str = "") -> None:
        super().__init__(f"404 for {url}: {detail}")
        self.detail = detail
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.url))


class HttpClient:
    """Requests to one server with one keep-alive session, reopened after every failure.

    Args:
        base_url: the server URL without a trailing ``/``.
        user_token: the ``User-Token`` header.
        timeout: seconds for connect and for read, per request (less when a deadline is near).
        session_factory: makes the ``requests.Session`` (tests mount a fake transport on it).
        sleep: called with each retry delay.
        rng: draws the retry jitter.
        counters: where the counters of :data:`COUNTER_NAMES` are added.
        policy: the retry policy each request starts with (``max_retries`` retries per request).
        clock: monotonic seconds, for :meth:`deadline` (tests pass a fake clock).
    """

    sleep: Callable[[float], None]
    rng: RandomSource
    counters: Counter[str]
    _session: requests.Session | None
    policy: RetryPolicy
    _deadline: Deadline | None
    _side: SideChannel | None  # the second connection of send_ahead, opened on first use

    def __init__(
        self,
        base_url: str,
        user_token: str,
        timeout: float,
        *,
        session_factory: Callable[[], requests.Session],
        sleep: Callable[[float], None],
        rng: RandomSource,
        counters: Counter[str],
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url
        self._headers = {"User-Token": user_token, "Content-Type": "application/json"}
        self._timeout = timeout
        self._session_factory = session_factory
        self.sleep = sleep
        self.rng = rng
        self.counters = counters
        self._session = None
        self.policy = policy
        self._clock = clock
        self._deadline = None
        self._side = None

    def _open(self) -> requests.Session:
        if self._session is None:
            session = self._session_factory()
            session.headers.update(self._headers)
            self._session = session
            self.counters["sessions_opened"] += 1
        return self._session

    def drop_session(self) -> None:
        """Close the keep-alive session; the next request opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def close(self) -> None:
        """Close the session and the second connection (idempotent)."""
        self.drop_session()
        side, self._side = self._side, None
        if side is not None:
            side.close()

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[Deadline]:
        """Bound every request and back-off inside the ``with`` block to ``seconds`` from now.

        Counts ``call_timeouts`` once if the block ran out of time.
        """
        deadline = self._deadline = Deadline(seconds, self._clock)
        try:
            yield deadline
        finally:
            self._deadline = None
            if deadline.hit:
                self.counters["call_timeouts"] += 1

    def _failed(self, message: str, kind: ErrorKind) -> RetryableError:
        """A :class:`RetryableError` for ``message``, remembered as the deadline's last error."""
        if self._deadline is not None:
            self._deadline.last_error = message
        return RetryableError(message, kind)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        session_id: str | None = None,
        parse: Callable[[Any], T] = _identity,
    ) -> T:
        """Make one attempt of ``method path`` and return ``parse`` of the decoded JSON body.

        Args:
            method: ``"GET"`` or ``"POST"``.
            path: starts with ``/api/v1/``.
            body: the JSON body, or None for no body.
            session_id: sent as ``Session-ID`` (only the two create endpoints take it).
            parse: checks and converts the body; it raises ``ValueError``, ``TypeError``,
                ``KeyError`` or ``IndexError`` when the body is malformed.

        Inside :meth:`deadline` the connect and read timeouts are ``min(timeout, time left)``.

        Raises:
            RetryableError: transport failure, 5xx, a body that is not JSON or that ``parse``
                rejects (the session is dropped).
            NotFoundError: 404.
            HttpStatusError: any other non-2xx status.
            CallTimeoutError: the deadline has passed; nothing was sent.
        """
        timeout = self._timeout
        if self._deadline is not None:
            left = self._deadline.left()
            if left <= 0:
                raise self._deadline.expired(self._deadline.last_error or f"no time left for {method} {path}")
            timeout = min(timeout, left)
        url, data, headers = self._prepare(path, body, session_id)
        self.counters["requests"] += 1
        try:
            response = self._open().request(method, url, data=data, headers=headers, timeout=(timeout, timeout))
        except requests.RequestException as exc:
            return self.answer(method, path, exc, parse)
        return self.answer(method, path, response, parse)

    def _prepare(self, path: str, body: Any, session_id: str | None) -> tuple[str, str | None, dict[str, str] | None]:
        headers = {"Session-ID": session_id} if session_id is not None else None
        return self._base_url + path, None if body is None else json.dumps(body), headers

    def send_ahead(self, method: str, path: str, body: Any = None) -> SideRequest:
        """Start ``method path`` now on a second connection (:class:`SideRequest`); its answer is
        read later with :meth:`answer`, like one attempt of :meth:`request`. Only for calls that
        may be applied twice (a failed one is retried by the ordinary path)."""
        url, data, headers = self._prepare(path, body, None)
        self.counters["requests"] += 1
        side = self._side
        if side is None or side.abandoned:
            side = self._side = SideChannel(self._session_factory, self._headers, self.counters)
        return side.send(method, url, data, headers, self._timeout)

    def collect(self, method: str, path: str, request: SideRequest, parse: Callable[[Any], T]) -> T:
        """The answer of a request :meth:`send_ahead` started, like one attempt of :meth:`request`:
        waits for it ``min(timeout, time left)`` seconds at most (then it failed, retryably).

        Raises:
            RetryableError, NotFoundError, HttpStatusError, QuotaExceededError: as :meth:`request`.
        """
        timeout = self._timeout if self._deadline is None else min(self._timeout, self._deadline.left())
        side = self._side
        assert side is not None
        return self.answer(method, path, request.wait(timeout), parse, drop=side.drop_session)

    def answer(
        self,
        method: str,
        path: str,
        outcome: requests.Response | requests.RequestException,
        parse: Callable[[Any], T],
        drop: Callable[[], None] | None = None,
    ) -> T:
        """``parse`` of the decoded JSON body of a request's ``outcome`` (its response, or the
        exception the request raised); the errors of :meth:`request`, which uses it. After a
        retryable failure ``drop`` closes the connection it came on (default: the main session)."""
        drop = self.drop_session if drop is None else drop
        if isinstance(outcome, requests.RequestException):
            self.counters["transport_errors"] += 1
            drop()
            raise self._failed(f"{method} {path}: {describe(outcome)}", ErrorKind.TRANSPORT) from outcome
        response = outcome
        url = self._base_url + path
        status = response.status_code
        used, limit = self._note_quota(response)
        if status >= 500:
            self.counters["http_5xx"] += 1
            drop()
            raise self._failed(f"{method} {path}: HTTP {status}: {_detail(response)}", ErrorKind.SERVER_5XX)
        if status == 404:
            raise NotFoundError(_detail(response), url)
        if status == 429:
            detail = _detail(response)
            if limit is None and (match := _LIMIT_IN_DETAIL.search(detail)):
                limit = int(match.group(1))  # "step limit of 100000 reached": the quota is spent
            raise QuotaExceededError(detail, url, used if used is not None else limit, limit)
        if status >= 300:
            raise HttpStatusError(status, _detail(response), url)
        try:
            return parse(response.json())
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.counters["bad_responses"] += 1
            drop()
            raise self._failed(f"{method} {path}: malformed response: {describe(exc)}", ErrorKind.BAD_RESPONSE) from exc

    def call_idempotent(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        session_id: str | None = None,
        parse: Callable[[Any], T] = _identity,
        first: Callable[[Callable[[Any], T]], T] | None = None,
    ) -> T:
        """:meth:`request`, retried on :class:`RetryableError` while :attr:`policy` and the deadline allow.

        Only for calls that may be applied twice without harm. ``first``: the first attempt's
        answer instead of a request (given ``parse``; e.g. :meth:`collect` of a request sent ahead).

        Raises:
            RetriesExhaustedError: every attempt failed (chained to the last failure), or
                :class:`~pool_env.errors.CallTimeoutError`: the deadline left no time for the next attempt.
            NotFoundError: 404 (not retried).
            HttpStatusError: any other 4xx (not retried).
        """
        policy = self.policy
        while True:
            try:
                if first is not None:
                    attempt, first = first, None
                    return attempt(parse)
                return self.request(method, path, body, session_id=session_id, parse=parse)
            except RetryableError as exc:
                policy = self.backoff(policy, exc)

    def backoff(self, policy: RetryPolicy, error: RetryableError) -> RetryPolicy:
        """Charge one failed attempt to ``policy``, sleep its delay, return the policy for the next try.

        Raises:
            RetriesExhaustedError: ``policy`` allows no more retries (chained to ``error``).
            CallTimeoutError: the deadline passes before the delay ends (chained to ``error``);
                no sleep then.
        """
        try:
            policy, delay = policy.increment(error, self.rng)
        except RetriesExhaustedError:
            self.counters["retries_exhausted"] += 1
            log.warning("%s; giving up after %d retries", error, policy.retries)
            raise
        if self._deadline is not None:
            if delay >= self._deadline.left():
                expired = self._deadline.expired(str(error))
                log.warning("%s; giving up: %s", error, expired)
                raise expired from error
            self._deadline.retries += 1
        self.counters["retries"] += 1
        log.warning("%s; retry %d/%d in %.2f s", error, policy.retries, policy.max_retries, delay)
        self.sleep(delay)
        return policy

    def _note_quota(self, response: requests.Response) -> tuple[int | None, int | None]:
        """Read ``X-Steps-Used``/``X-Steps-Limit`` (None where absent) into the gauges."""
        values: list[int | None] = []
        for header, gauge in ((_STEPS_USED_HEADER, GAUGE_NAMES[0]), (_STEPS_LIMIT_HEADER, GAUGE_NAMES[1])):
            text = response.headers.get(header, "")
            value = int(text) if text.isdigit() and len(text) < 19 else None
            if value is not None:
                self.counters[gauge] = max(self.counters[gauge], value)
            values.append(value)
        return values[0], values[1]


def _detail(response: requests.Response) -> str:
    """The FastAPI ``detail`` of an error response, else the start of its body."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "detail" in payload:
        detail = payload["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
    else:
        text = response.text or response.reason or ""
    return text[:_DETAIL_LIMIT]
