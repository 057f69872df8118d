"""Request counters and the connection-drop fault, as one pure ASGI middleware.

An endpoint asks for a drop by setting the :data:`DROP_HEADER` response header: the middleware then
sends nothing and aborts the TCP transport (RST), so an HTTP client sees a connection error after the
server has already applied the request. Under uvicorn the transport is reached through the bound
``send`` method of its request cycle; where there is none (e.g. FastAPI's TestClient) the middleware
raises :class:`ConnectionDropped` instead, which the TestClient re-raises in the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DROP_HEADER", "ConnectionDropped", "RefServerMiddleware", "RequestStats"]

DROP_HEADER = b"x-refserver-drop"
_PER_SECOND_WINDOW = 600


class ConnectionDropped(ConnectionError):
    """Raised inside the app when a drop was injected but no transport can be aborted."""


class RequestStats:
    """Request counters: total, per endpoint (``"METHOD /route/{template}"``), per status, per second."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = clock()
        self.lock = threading.Lock()
        self.total = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.per_second: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.dropped = 0

    def begin(self) -> None:
        """Count a request that starts now."""
        with self.lock:
            self.total += 1
            second = int(self.clock())
            self.per_second[second] += 1
            if len(self.per_second) > _PER_SECOND_WINDOW:
                for old in [s for s in self.per_second if s <= second - _PER_SECOND_WINDOW]:
                    del self.per_second[old]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, endpoint: str, status: str) -> None:
        """Count the end of a request on ``endpoint`` with ``status`` (``"200"``, ``"dropped"`` …)."""
        with self.lock:
            self.in_flight -= 1
            self.by_endpoint[endpoint] += 1
            self.by_status[status] += 1
            if status == "dropped":
                self.dropped += 1

    def snapshot(self) -> dict[str, Any]:
        """The request part of ``GET /control/stats``."""
        with self.lock:
            return {
                "uptime_s": self.clock() - self.started_at,
                "requests_total": self.total,
                "requests_by_endpoint": dict(self.by_endpoint),
                "requests_by_status": dict(self.by_status),
                "requests_per_second": {str(s): n for s, n in sorted(self.per_second.items())},
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "dropped_connections": self.dropped,
            }


class RefServerMiddleware:
    """Outermost ASGI middleware: counts every HTTP request and performs injected drops."""

    def __init__(self, app: ASGIApp, stats: RequestStats, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.stats = stats
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, then count the request; abort the connection if a drop was requested.

        A request whose ``Content-Length`` is above ``max_body_bytes`` answers 413 without running the
        app (and without reading the body).
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.stats.begin()
        if self._too_big(scope):
            await _send_413(send, self.max_body_bytes or 0)
            self.stats.end(f"{scope.get('method', '?')} (body too large)", "413")
            return
        status = "error"
        drop = False

        async def send_or_hold(message: Message) -> None:
            nonlocal status, drop
            if message["type"] == "http.response.start":
                drop = any(name == DROP_HEADER for name, _ in message.get("headers", []))
                status = "dropped" if drop else str(message["status"])
            if not drop:
                await send(message)

        try:
            await self.app(scope, receive, send_or_hold)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "(no route)"  # never the raw path: keys stay bounded
            self.stats.end(f"{scope.get('method', '?')} {path}", status)
        if drop:
            await _abort_connection(send)

    def _too_big(self, scope: Scope) -> bool:
        if self.max_body_bytes is None:
            return False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                return value.isdigit() and int(value) > self.max_body_bytes
        return False


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body is larger than this server's limit of {limit} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _abort_connection(send: Send) -> None:
    """Reset the client connection without answering. Raises ConnectionDropped if not possible."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise ConnectionDropped("connection drop injected")
    transport.abort()
    # Let the protocol's connection_lost run, so uvicorn sees a disconnect rather than an app that
    # returned without a response (which it would log as an error).
    for _ in range(3):
        await asyncio.sleep(0)
