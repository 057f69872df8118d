"""The goodbye list of a daemon: bounded, the silent and least recently heard sockets go first."""

from __future__ import annotations

from pool_env.daemon.peers import Peers


def test_peers_are_remembered_once_each() -> None:
    peers = Peers(forget_after=10.0)
    peers.heard(b"a", 1.0)
    peers.heard(b"b", 2.0)
    peers.heard(b"a", 3.0)
    assert list(peers) == [b"b", b"a"]


def test_a_full_table_forgets_the_silent_then_the_least_recently_heard() -> None:
    peers = Peers(forget_after=5.0, limit=3)
    for name, now in ((b"old", 0.0), (b"a", 8.0), (b"b", 9.0)):
        peers.heard(name, now)
    peers.heard(b"c", 10.0)  # "old" was silent for 10 s > 5 s
    assert list(peers) == [b"a", b"b", b"c"]
    peers.heard(b"a", 11.0)
    peers.heard(b"d", 12.0)  # nobody silent long enough: the least recently heard ("b") goes
    assert list(peers) == [b"c", b"a", b"d"]
