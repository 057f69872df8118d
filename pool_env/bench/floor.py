"""The raw floor (workload d): what one coordinator ↔ worker round trip costs at the very least.

Two processes and the pool's own shared-memory layout (:mod:`pool_env.shm`). Per step the parent
writes the actions into shared memory and wakes the child; the child writes ``num_envs``
observation rows into shared memory (one memcpy from a ready array: no env, no Python objects
per slot) and answers; the parent returns when the answer is in. Two ways to signal:

* ``zmq``: one ROUTER ↔ DEALER message each way over ``ipc://`` (8-byte payloads, no msgpack),
  i.e. the transport pool_env uses, with none of its protocol;
* ``spin``: sequence counters in shared memory, both sides busy-polling (the child falls back to
  1 ms sleeps after 20 ms without a request, so it costs nothing between measurements). This is
  the "signal through shared memory" option of the design notes, as a lower bound.

The child is a fresh interpreter (``python -m pool_env.bench.floor``), as pool workers are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import zmq

from pool_env import shm

__all__ = ["FloorLink"]

SPIN_BUDGET_S = 0.02
STOP = -1


def _layouts(num_envs: int, obs_shape: tuple[int, ...], obs_dtype: str) -> tuple[shm.BatchLayout, shm.BatchLayout]:
    data = shm.BatchLayout(num_envs, (shm.Leaf((), np.dtype(obs_dtype).str, obs_shape),), (shm.Leaf((), "<i8", ()),))
    control = shm.BatchLayout(2, (shm.Leaf((), "<i8", ()),), ())  # obs[0] = [request seq, reply seq]
    return data, control


class FloorLink:
    """The parent side of the floor: a child process, a segment, and one :meth:`step` = one round trip.

    Args:
        mode: ``"zmq"`` or ``"spin"`` (see the module docstring).
        num_envs: rows written per step.
        obs_shape, obs_dtype: one observation row.
        start_timeout: seconds for the child to say hello.

    Raises:
        RuntimeError: the child did not start.
    """

    def __init__(
        self,
        mode: str,
        num_envs: int,
        obs_shape: tuple[int, ...] = (4,),
        obs_dtype: str = "float32",
        start_timeout: float = 30.0,
    ) -> None:
        if mode not in ("zmq", "spin"):
            raise ValueError(f"mode: must be 'zmq' or 'spin', got {mode!r}")
        self.mode = mode
        self.num_envs = num_envs
        data_layout, control_layout = _layouts(num_envs, obs_shape, obs_dtype)
        self._data = shm.create(data_layout)
        self._control = shm.create(control_layout)
        self._ctrl = self._control.obs[0]
        self._seq = 0
        self._dir = tempfile.mkdtemp(prefix="pool_env_floor_")
        endpoint = f"ipc://{self._dir}/floor"
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        command = [
            sys.executable, "-m", "pool_env.bench.floor",
            "--endpoint", endpoint, "--mode", mode,
            "--data", self._data.name, "--control", self._control.name,
            "--num-envs", str(num_envs), "--obs-shape", ",".join(map(str, obs_shape)), "--obs-dtype", obs_dtype,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        if not self._socket.poll(int(start_timeout * 1000)):
            self.close()
            raise RuntimeError(f"floor child did not start within {start_timeout} s")
        self._identity, _ = self._socket.recv_multipart()

    @property
    def pid(self) -> int:
        """Pid of the child process."""
        return self.process.pid

    def step(self, actions: np.ndarray) -> None:
        """Actions into shared memory, wake the child, wait until its rows are written."""
        self._data.act[0][...] = actions
        self._seq += 1
        seq = self._seq
        if self.mode == "zmq":
            self._socket.send_multipart([self._identity, seq.to_bytes(8, "little")])
            self._socket.recv_multipart()
        else:
            ctrl = self._ctrl
            ctrl[0] = seq
            while ctrl[1] != seq:
                os.sched_yield()  # lets the child run when both share a core

    def close(self) -> None:
        """Stop the child (bounded), close the socket, unlink the segments. Idempotent."""
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self._ctrl[0] = STOP
            if self.mode == "zmq" and getattr(self, "_identity", None) is not None:
                self._socket.send_multipart([self._identity, b""])
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._socket.closed:
            self._socket.close(linger=0)
            self._context.term()
        self._data.close()
        self._control.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FloorLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _serve(args: argparse.Namespace) -> int:
    obs_shape = tuple(int(n) for n in args.obs_shape.split(",") if n)
    data_layout, control_layout = _layouts(args.num_envs, obs_shape, args.obs_dtype)
    data = shm.attach(args.data, data_layout)
    control = shm.attach(args.control, control_layout)
    rows = np.ones((args.num_envs, *obs_shape), dtype=args.obs_dtype)
    parent = os.getppid()
    context = zmq.Context()
    socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(args.endpoint)
    socket.send(b"hello")
    try:
        if args.mode == "zmq":
            _serve_zmq(socket, data, rows, parent)
        else:
            _serve_spin(control.obs[0], data, rows, parent)
    finally:
        socket.close(linger=0)
        context.term()
        data.close()
        control.close()
    return 0


def _serve_zmq(socket: zmq.Socket[bytes], data: shm.BatchBuffers, rows: np.ndarray, parent: int) -> None:
    obs = data.obs[0]
    while True:
        if not socket.poll(500):
            if os.getppid() != parent:
                return
            continue
        message = socket.recv()
        if not message:
            return
        obs[...] = rows
        socket.send(message)


def _serve_spin(ctrl: np.ndarray, data: shm.BatchBuffers, rows: np.ndarray, parent: int) -> None:
    obs = data.obs[0]
    last = 0
    idle_since = time.monotonic()
    while True:
        seq = int(ctrl[0])
        if seq == STOP:
            return
        if seq != last:
            obs[...] = rows
            ctrl[1] = seq
            last = seq
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since > SPIN_BUDGET_S:
            if os.getppid() != parent:
                return
            time.sleep(0.001)
        else:
            os.sched_yield()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    parser = argparse.ArgumentParser(prog="python -m pool_env.bench.floor")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--mode", choices=("zmq", "spin"), required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--num-envs", type=int, required=True)
    parser.add_argument("--obs-shape", default="4")
    parser.add_argument("--obs-dtype", default="float32")
    args: Any = parser.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
