"""A second keep-alive connection whose one request runs on a thread while the worker goes on.

An HTTP worker resets the episodes that ended right after it answered a step (NEXT_STEP makes
that reset certain), so the reset's round trip is off the next step's critical path. Done
blocking, it was not: a trainer that answers at once finds the worker still waiting for the
reset, and every step with an ended episode cost two round trips. Here the reset goes out on a
connection of its own and the worker returns to its command loop at once; the next step's request
then flies *while* the reset's answer comes back, and the worker reads that answer after the step
(:meth:`workers.backends.http.HttpBackend.reset_early`). The same overlap the asyncio ideal client
gets from ``asyncio.gather`` (httpx's ``AsyncClient``), with one thread and no event loop.

Only calls that may be applied twice go here (resets): an answer that does not come in time is
abandoned — its thread closes its session when the request ends — and the ordinary path retries
the call. Thread safety: the thread owns the session while its request runs; the worker touches
it only after :meth:`SideRequest.wait` returned the outcome, never while a request runs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import requests

__all__ = ["SideChannel", "SideRequest"]


class SideRequest:
    """One request running on a :class:`SideChannel`'s thread."""

    _channel: SideChannel
    _thread: threading.Thread
    _outcome: requests.Response | requests.RequestException | None

    def __init__(self, channel: SideChannel, send: Callable[[], requests.Response]) -> None:
        self._channel = channel
        self._outcome = None
        self._thread = threading.Thread(target=self._run, args=(send,), name="pool-env-side-request", daemon=True)

    def start(self) -> None:
        """Start the request's thread (after the channel recorded it as in flight)."""
        self._thread.start()

    def _run(self, send: Callable[[], requests.Response]) -> None:
        outcome: requests.Response | requests.RequestException
        try:
            outcome = send()
        except requests.RequestException as exc:
            outcome = exc
        except Exception as exc:  # a transport's own bug: a failed request like any other
            outcome = requests.RequestException(f"{type(exc).__name__}: {exc}")
        self._channel.finished(self, outcome)

    def done(self) -> bool:
        """Whether the answer (or the failure) is in."""
        return self._outcome is not None

    def wait(self, timeout: float) -> requests.Response | requests.RequestException:
        """The response, or the exception the request raised; after ``timeout`` seconds without
        one, a ``requests.Timeout`` (the request is abandoned, its connection closed when it ends).
        """
        self._thread.join(max(0.0, timeout))
        outcome = self._outcome
        if outcome is None:
            self._channel.abandon(self)
            return requests.Timeout(f"no answer within {timeout:.3g} s (sent ahead on a second connection)")
        return outcome


class SideChannel:
    """A second keep-alive ``requests.Session`` for :class:`SideRequest`, one request at a time.

    Args:
        session_factory: makes the session (the backend's own factory: same transport).
        headers: set on the session (``User-Token``, ``Content-Type``).
        counters: ``sessions_opened`` is counted here.
    """

    abandoned: bool
    _session: requests.Session | None
    _lock: threading.Lock
    _in_flight: SideRequest | None

    def __init__(
        self, session_factory: Callable[[], requests.Session], headers: dict[str, str], counters: Counter[str]
    ) -> None:
        self.abandoned = False
        self._session_factory = session_factory
        self._headers = headers
        self._counters = counters
        self._session = None
        self._lock = threading.Lock()
        self._in_flight = None

    def send(
        self, method: str, url: str, data: str | None, headers: dict[str, str] | None, timeout: float
    ) -> SideRequest:
        """Start the request on the thread; the :class:`SideRequest` to wait on.

        Raises:
            RuntimeError: a request is still in flight on this channel (wait for it first).
        """
        if self._in_flight is not None or self.abandoned:
            raise RuntimeError("a side request is still in flight")
        if self._session is None:
            session = self._session_factory()
            session.headers.update(self._headers)
            self._session = session
            self._counters["sessions_opened"] += 1
        session = self._session
        request = SideRequest(
            self, lambda: session.request(method, url, data=data, headers=headers, timeout=(timeout, timeout))
        )
        self._in_flight = request
        request.start()
        return request

    def finished(self, request: SideRequest, outcome: requests.Response | requests.RequestException) -> None:
        """(The thread) record ``outcome``; close the session if the request was abandoned."""
        with self._lock:
            request._outcome = outcome
            if self._in_flight is request:
                self._in_flight = None
            if self.abandoned:
                self._close_session()

    def abandon(self, request: SideRequest) -> None:
        """Give up on ``request``: the channel is not used again, its thread closes the session."""
        with self._lock:
            self.abandoned = True
            if request.done():
                self._close_session()

    def drop_session(self) -> None:
        """Close the session after a failure (no request in flight); the next request opens a new one."""
        with self._lock:
            if self._in_flight is None:
                self._close_session()

    def close(self) -> None:
        """Close the session now, or (a request in flight) when its request ends. Idempotent."""
        with self._lock:
            self.abandoned = True
            if self._in_flight is None:
                self._close_session()

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
