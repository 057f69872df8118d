"""Micro-benchmark of the raw signalling floors between two processes (the reasons in bell.py).

One round trip = the parent posts a sequence number, the child sees it and answers, the parent
sees the answer. Nothing else happens (no env, no rows), so this is the floor under any pool step:

* ``spin``: both sides busy-poll a word in shared memory (costs two cores);
* ``pipe``: ``os.pipe`` ping-pong, poll then read (what a named-pipe bell would do);
* ``eventfd``: ``os.eventfd`` ping-pong, blocking reads (descriptors passed at spawn);
* ``futex``: FUTEX_WAIT/FUTEX_WAKE through ``ctypes`` on a word of the shared segment;
* ``fast``: the pool's fast path as shipped — :class:`FastLane`/:class:`WorkerPort`, spin
  ``spin_us`` then block on the bell;
* ``zmq``: one ROUTER/DEALER message each way over ``ipc://`` (the pool's control transport).

``python -m pool_env.fastpath.probe [--rounds N] [MODE ...]`` prints µs per round trip.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import zmq

from pool_env import shm
from pool_env.fastpath.bell import spin_until
from pool_env.fastpath.block import FAST_STEP, FastCommand, FastLane, WorkerPort, control_words, pack

__all__ = ["MODES", "measure"]

MODES = ("spin", "pipe", "eventfd", "futex", "fast", "zmq")
_SYS_FUTEX = 202  # x86-64
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_STOP = (1 << 40) - 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _futex(libc: Any, address: int, op: int, value: int) -> None:
    timeout = _Timespec(0, 100_000_000) if op == _FUTEX_WAIT else None
    libc.syscall(
        _SYS_FUTEX, ctypes.c_void_p(address), op, ctypes.c_int(value), timeout and ctypes.byref(timeout), None, 0
    )


def measure(mode: str, rounds: int = 5000, spin_us: float = 50.0) -> dict[str, float]:
    """Median, p99 and mean µs of ``rounds`` round trips in ``mode`` (after 200 warm-up ones).

    Raises:
        ValueError: unknown ``mode``.
        RuntimeError: the child did not start.
    """
    if mode not in MODES:
        raise ValueError(f"mode: one of {', '.join(MODES)}, got {mode!r}")
    directory = tempfile.mkdtemp(prefix="pool_env_probe_")
    layout = shm.BatchLayout(1, (shm.Leaf((), "<f4", ()),), (shm.Leaf((), "<i8", ()),), control_words=control_words(1))
    buffers = shm.create(layout)
    lane = FastLane(buffers, 1)
    context = zmq.Context()
    socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{directory}/probe"
    socket.bind(endpoint)
    fds: tuple[int, ...] = ()
    if mode == "eventfd":
        fds = (os.eventfd(0), os.eventfd(0))
    elif mode == "pipe":
        fds = (*os.pipe(), *os.pipe())  # parent → child: fds[0] read, fds[1] write; child → parent: 2, 3
    config = {
        **lane.worker_config(0),
        "segment": buffers.name,
        "layout": layout.to_wire(),
        "endpoint": endpoint,
        "mode": mode,
        "fds": list(fds),
        "spin": spin_us * 1e-6,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "pool_env.fastpath.probe", "--child", json.dumps(config)],
        stdin=subprocess.DEVNULL, pass_fds=fds + lane.worker_fds(0),
    )  # fmt: skip
    try:
        if not socket.poll(30_000):
            raise RuntimeError("probe child did not start within 30 s")
        identity, _ = socket.recv_multipart()
        one_trip = _parent_trip(mode, lane, buffers, socket, identity, fds, spin_us * 1e-6)
        times, rings = [], []
        for seq in range(1, rounds + 201):
            start = time.perf_counter_ns()
            rings.append(one_trip(seq))
            times.append(time.perf_counter_ns() - start)
        one_trip(_STOP)
        child.wait(5.0)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for fd in fds:
            os.close(fd)
        socket.close(linger=0)
        context.term()
        lane.close()
        buffers.close()
        shutil.rmtree(directory, ignore_errors=True)
    measured = sorted(times[200:])
    return {
        "median_us": statistics.median(measured) / 1000,
        "ring_us": statistics.median(rings[200:]) / 1000,
        "p99_us": measured[int(len(measured) * 0.99)] / 1000,
        "mean_us": statistics.fmean(measured) / 1000,
    }


def _parent_trip(
    mode: str,
    lane: FastLane,
    buffers: shm.BatchBuffers,
    socket: Any,
    identity: bytes,
    fds: tuple[int, ...],
    spin: float,
) -> Any:
    words = lane._words
    clock = time.perf_counter_ns
    if mode == "spin":

        def trip(seq: int) -> int:
            words[0] = seq
            while words[8] != seq:
                pass
            return 0

    elif mode == "pipe":

        def trip(seq: int) -> int:
            words[0] = seq
            start = clock()
            os.write(fds[1], b"\x01")
            ring = clock() - start
            os.read(fds[2], 1)
            return ring

    elif mode == "eventfd":

        def trip(seq: int) -> int:
            words[0] = seq
            start = clock()
            os.eventfd_write(fds[0], 1)
            ring = clock() - start
            os.eventfd_read(fds[1])
            return ring

    elif mode == "futex":
        libc = ctypes.CDLL(None, use_errno=True)
        assert buffers.control is not None
        base = buffers.control.ctypes.data

        def trip(seq: int) -> int:
            words[0] = seq
            start = clock()
            _futex(libc, base, _FUTEX_WAKE, 1)
            ring = clock() - start
            while (got := words[8]) != seq:
                _futex(libc, base + 64, _FUTEX_WAIT, got & 0xFFFFFFFF)
            return ring

    elif mode == "fast":

        def trip(seq: int) -> int:
            start = clock()
            lane.post(0, 1, seq, FAST_STEP)
            ring = clock() - start
            word = pack(1, seq)
            while not spin_until(lambda: lane.finished(0, word), spin):
                lane.doorbell.wait(0.05)
            return ring

    else:

        def trip(seq: int) -> int:
            start = clock()
            socket.send_multipart([identity, seq.to_bytes(8, "little")])
            ring = clock() - start
            socket.recv_multipart()
            return ring

    return trip


def _child(config: dict[str, Any]) -> None:
    mode = config["mode"]
    context = zmq.Context()
    socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(config["endpoint"])
    buffers = shm.attach(config["segment"], shm.BatchLayout.from_wire(config["layout"]))
    port = WorkerPort(config, 1, buffers)
    words = port._words
    socket.send(b"hello")
    try:
        if mode == "zmq":
            while True:
                message = socket.recv()
                socket.send(message)
                if int.from_bytes(message, "little") == _STOP:
                    return
        if mode == "fast":
            spin = float(config["spin"])
            taken: list[FastCommand] = []

            def ready() -> bool:
                command = port.poll()
                if command is not None:
                    taken.append(command)
                return command is not None

            while True:
                if not spin_until(ready, spin):
                    port.bell.wait(0.5)
                    continue
                seq = taken.pop().seq
                port.publish(seq)
                if seq == _STOP:
                    return
        libc = ctypes.CDLL(None, use_errno=True)
        assert buffers.control is not None
        base = buffers.control.ctypes.data
        seq = 0
        while seq != _STOP:
            if mode == "spin":
                while (seq := words[0]) == words[8]:
                    pass
            elif mode == "pipe":
                os.read(config["fds"][0], 1)
                seq = words[0]
            elif mode == "eventfd":
                os.eventfd_read(config["fds"][0])
                seq = words[0]
            else:
                while (seq := words[0]) == words[8]:
                    _futex(libc, base, _FUTEX_WAIT, seq & 0xFFFFFFFF)
            words[8] = seq
            if mode == "pipe":
                os.write(config["fds"][3], b"\x01")
            elif mode == "eventfd":
                os.eventfd_write(config["fds"][1], 1)
            elif mode == "futex":
                _futex(libc, base + 64, _FUTEX_WAKE, 1)
    finally:
        port.close()
        buffers.close()
        socket.close(linger=0)
        context.term()


def main(argv: list[str] | None = None) -> int:
    """``python -m pool_env.fastpath.probe``: print the floors (or run as the child)."""
    parser = argparse.ArgumentParser(prog="python -m pool_env.fastpath.probe")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--spin-us", type=float, default=50.0)
    parser.add_argument("modes", nargs="*", default=list(MODES))
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    print(f"load average {os.getloadavg()[0]:.2f}; µs per round trip over {args.rounds} rounds")
    for mode in args.modes:
        result = measure(mode, args.rounds, args.spin_us)
        row = "  ".join(f"{key[:-3]} {value:8.2f}" for key, value in result.items())
        print(f"  {mode:8s} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
