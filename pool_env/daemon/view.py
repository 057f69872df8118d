"""The small interfaces the daemon's handlers and its status document see (``typing.Protocol``).

Handlers (:mod:`~pool_env.daemon.handlers`) and the status document
(:mod:`~pool_env.daemon.status`) take a :class:`DaemonView`, never the whole
:class:`~pool_env.daemon.server.PoolDaemon`; the daemon satisfies it structurally, so neither
module imports the server (no import cycle) and tests can hand them a small fake. Backends behind
one ``Protocol``, as EnvPool and PufferLib put theirs (see ``../shared/STYLE.md``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from pool_env.daemon.config import DaemonConfig
from pool_env.daemon.leases import Lease, LeaseTable
from pool_env.daemon.wire import Request
from pool_env.errors import ErrorKind
from pool_env.protocol import Op
from pool_env.shm import BatchBuffers, Leaf

__all__ = ["DaemonView", "PoolView"]


class PoolView(Protocol):
    """What the daemon's handlers and status use of the pool (:class:`~pool_env.coordinator.Coordinator`)."""

    @property
    def buffers(self) -> BatchBuffers | None:
        """The pool's shared-memory batch (``None`` once closed)."""

    @property
    def counters(self) -> Counter[str]:
        """Pool event counters (worker failures, slot errors, ...)."""

    @property
    def error_kinds(self) -> Counter[ErrorKind]:
        """Every slot failure reported, by kind."""

    @property
    def message_obs(self) -> dict[int, list[Any]]:
        """Observation leaves without a fixed shape: leaf index → the last value of every slot."""

    def restarts_of(self, slot: int) -> int:
        """How often the worker of ``slot`` was restarted."""

    def worker_stats(self) -> list[dict[str, Any]]:
        """Per worker: id, pid, slots, state, restarts, steps, cpu %, rss, last error."""


class DaemonView(Protocol):
    """What the daemon's handlers and status document use of the daemon."""

    @property
    def config(self) -> DaemonConfig:
        """The daemon's configuration."""

    @property
    def leases(self) -> LeaseTable:
        """Who holds which slots."""

    @property
    def counters(self) -> Counter[str]:
        """Daemon event counters (requests, leases granted, bad requests, ...)."""

    @property
    def endpoint(self) -> str:
        """Where the daemon serves."""

    @property
    def hello(self) -> dict[str, Any]:
        """The ``hello`` reply body (spaces, metadata, sizes)."""

    @property
    def lane_name(self) -> str | None:
        """The abstract socket where a shared-memory lease opens its step lane (``None``: no lanes)."""

    @property
    def act_leaves(self) -> list[Leaf]:
        """The leaves of one slot's action."""

    @property
    def coordinator(self) -> PoolView:
        """The pool."""

    def check_actions(self, arrays: list[Any], rows: int) -> list[Any]:
        """Validate one lease's actions (raises ``InvalidActionError``)."""

    def send(self, identity: bytes, header: bytes, arrays: list[Any] | None = None) -> None:
        """Send a reply header (and array frames) to ``identity``."""

    def reply(self, identity: bytes, request_id: int, body: dict[str, Any], arrays: list[Any] | None = None) -> None:
        """Send a success reply."""

    def submit(self, identity: bytes, request: Request, lease: Lease, op: Op, **kwargs: Any) -> None:
        """Start a reset/step/call for ``lease``; its reply is sent when it completes."""

    def end_lease(self, lease: Lease, why: str) -> None:
        """A released lease: its slots drain."""

    def status(self) -> dict[str, Any]:
        """The status document."""
