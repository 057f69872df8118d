"""The trainers' sockets a daemon has heard from: who gets a ``goodbye`` when it stops.

A trainer talks to the daemon from two zmq sockets (its requests, its heartbeat thread), each a
ROUTER identity on the daemon's side. Pure bookkeeping with a bound, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["MAX_PEERS", "Peers"]

MAX_PEERS = 4096
"""Client sockets remembered at most (the least recently heard go first)."""


class Peers:
    """zmq identities of trainers' sockets and when each last sent a request.

    Args:
        forget_after: seconds of silence after which a socket is forgotten once the table is full.
        limit: the most sockets remembered.
    """

    forget_after: float
    limit: int
    _seen: dict[bytes, float]

    def __init__(self, forget_after: float, limit: int = MAX_PEERS) -> None:
        self.forget_after = forget_after
        self.limit = limit
        self._seen = {}

    def heard(self, identity: bytes, now: float) -> None:
        """``identity`` sent a request at ``now``; when full, forget the silent and the least recent."""
        self._seen.pop(identity, None)
        self._seen[identity] = now  # insertion order = least recently heard first
        if len(self._seen) > self.limit:
            horizon = now - self.forget_after
            self._seen = {peer: seen for peer, seen in self._seen.items() if seen >= horizon}
            while len(self._seen) > self.limit:
                del self._seen[next(iter(self._seen))]

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._seen))

    def __len__(self) -> int:
        return len(self._seen)
