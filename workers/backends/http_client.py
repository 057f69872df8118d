"""One HTTP connection to a challenge server: requests, error translation, blind retries.

:class:`HttpClient` owns one ``requests.Session`` (keep-alive) with the ``User-Token`` and
``Content-Type`` headers, and translates every outcome of a request into one of:

* the decoded JSON body (HTTP 200 with a JSON body);
* :class:`RetryableError`: a transport failure (connect, timeout, reset, broken chunking, any
  other ``requests`` error), a 5xx, or a 2xx whose body is not JSON. The session is closed
  (a new one opens on the next request), since its connection may be half-dead;
* :class:`NotFoundError`: a 404, meaning an episode or server session is gone;
* :class:`pool_env.errors.HttpStatusError`: any other 4xx (a configuration error, never retried).

:meth:`HttpClient.call_idempotent` retries calls that are safe to apply twice (session and
episode creation, reset, state reads) with the injected policy, sleep and random source.
Steps are not safe: the backend retries them itself after checking the server's step counter.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from pool_env.errors import HttpStatusError, TransportError
from workers.backends.retry import RandomSource, RetriesExhaustedError, RetryPolicy, describe

__all__ = ["COUNTER_NAMES", "HttpClient", "NotFoundError", "RetryableError"]

log = logging.getLogger(__name__)

COUNTER_NAMES = (
    "requests",
    "retries",
    "transport_errors",
    "http_5xx",
    "bad_responses",
    "sessions_opened",
    "retries_exhausted",
)
"""Counters kept by :class:`HttpClient` (all start at 0)."""

_DETAIL_LIMIT = 500

T = TypeVar("T")


def _identity(payload: Any) -> Any:
    return payload


class RetryableError(TransportError):
    """A request failed in a way a retry may heal (transport error, 5xx, unreadable body)."""


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
        timeout: seconds for connect and for read, per request.
        session_factory: makes the ``requests.Session`` (tests mount a fake transport on it).
        sleep: called with each retry delay.
        rng: draws the retry jitter.
        counters: where the counters of :data:`COUNTER_NAMES` are added.
        policy: the retry budget until the first :meth:`start_budget`.
    """

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
    ) -> None:
        self._base_url = base_url
        self._headers = {"User-Token": user_token, "Content-Type": "application/json"}
        self._timeout = (timeout, timeout)
        self._session_factory = session_factory
        self.sleep = sleep
        self.rng = rng
        self.counters = counters
        self._session: requests.Session | None = None
        self._policy = policy

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
        """Close the session (idempotent)."""
        self.drop_session()

    def start_budget(self, policy: RetryPolicy) -> None:
        """Begin a new retry budget: the retries that :meth:`backoff` grants from now on."""
        self._policy = policy

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

        Raises:
            RetryableError: transport failure, 5xx, a body that is not JSON or that ``parse``
                rejects (the session is dropped).
            NotFoundError: 404.
            HttpStatusError: any other non-2xx status.
        """
        url = self._base_url + path
        headers = {"Session-ID": session_id} if session_id is not None else None
        data = None if body is None else json.dumps(body)
        self.counters["requests"] += 1
        try:
            response = self._open().request(method, url, data=data, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            self.counters["transport_errors"] += 1
            self.drop_session()
            raise RetryableError(f"{method} {path}: {describe(exc)}") from exc
        status = response.status_code
        if status >= 500:
            self.counters["http_5xx"] += 1
            self.drop_session()
            raise RetryableError(f"{method} {path}: HTTP {status}: {_detail(response)}")
        if status == 404:
            raise NotFoundError(_detail(response), url)
        if status >= 300:
            raise HttpStatusError(status, _detail(response), url)
        try:
            return parse(response.json())
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.counters["bad_responses"] += 1
            self.drop_session()
            raise RetryableError(f"{method} {path}: malformed response: {describe(exc)}") from exc

    def call_idempotent(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        session_id: str | None = None,
        parse: Callable[[Any], T] = _identity,
    ) -> T:
        """:meth:`request`, retried on :class:`RetryableError` while the budget allows.

        Only for calls that may be applied twice without harm.

        Raises:
            RetriesExhaustedError: the budget ran out (chained to the last failure).
            NotFoundError: 404 (not retried).
            HttpStatusError: any other 4xx (not retried).
        """
        while True:
            try:
                return self.request(method, path, body, session_id=session_id, parse=parse)
            except RetryableError as exc:
                self.backoff(exc)

    def backoff(self, error: RetryableError) -> None:
        """Charge one failed attempt to the budget and sleep its delay.

        Raises:
            RetriesExhaustedError: the budget allows no more retries (chained to ``error``).
        """
        try:
            self._policy, delay = self._policy.increment(error, self.rng)
        except RetriesExhaustedError:
            self.counters["retries_exhausted"] += 1
            log.warning("%s; giving up after %d retries", error, self._policy.retries)
            raise
        self.counters["retries"] += 1
        log.warning("%s; retry %d/%d in %.2f s", error, self._policy.retries, self._policy.max_retries, delay)
        self.sleep(delay)


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
