"""The worker process around its command loop: socket, heartbeat, and the last-resort cleanup.

:func:`run_worker` is what ``python -P -m workers`` runs (:mod:`workers.__main__`): it connects a
DEALER socket to the coordinator, starts the heartbeat thread (:mod:`pool_env.supervisor.liveness`)
and serves a :class:`~workers.loop.WorkerLoop` until told to stop. When the trainer died without
cleaning up, the worker removes the dead trainer's socket directory and stops its own process tree.
The heartbeat thread proves the worker alive while its main thread is busy, and stops the worker's
process tree if the trainer died while a step hangs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal

import zmq

from pool_env.supervisor.liveness import HeartbeatBoard, HeartbeatThread
from workers.loop import PARENT_CHECK_MS, WorkerLoop

__all__ = ["run_worker"]


def _stop_orphaned_tree(socket_dir: str | None) -> None:
    """Last resort when the trainer died while this worker is stuck: remove the dead trainer's
    socket directory and SIGKILL what its envs started (descendants, also those that left our
    process group) and this worker's process group (itself included)."""
    if socket_dir:
        shutil.rmtree(socket_dir, ignore_errors=True)
    with contextlib.suppress(Exception):
        import psutil  # already imported by pool_env.shm

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    if os.getpgrp() == os.getpid():  # a session of our own (the supervisor starts us so)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)


def run_worker(
    endpoint: str,
    worker_id: int,
    gen: int,
    parent_pid: int,
    socket_dir: str | None,
    accept_pickle: bool = False,
    heartbeat_path: str | None = None,
) -> int:
    """Connect to the coordinator at ``endpoint`` and serve until told to stop; the exit code.

    ``accept_pickle``: whether an ``init`` may carry pickled env factories (``env_fns``).
    ``heartbeat_path``: the pool's heartbeat board (a heartbeat thread beats there).
    """
    heartbeat = None
    if heartbeat_path:
        heartbeat = HeartbeatThread(
            HeartbeatBoard(heartbeat_path),
            worker_id,
            on_orphaned=functools.partial(_stop_orphaned_tree, socket_dir),
            parent_alive=lambda: os.getppid() == parent_pid,
        )
        heartbeat.start()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IDENTITY, f"w{worker_id}.{gen}".encode())
    socket.setsockopt(zmq.LINGER, 1000)
    socket.setsockopt(zmq.RCVTIMEO, PARENT_CHECK_MS)
    socket.connect(endpoint)
    loop = WorkerLoop(socket, parent_pid, gen, worker_id, accept_pickle)
    orphaned = False
    try:
        loop.serve()
        orphaned = not loop._parent_alive()
    finally:
        loop.close()
        socket.close(linger=0 if orphaned else 1000)
        context.term()
        if heartbeat is not None:
            heartbeat.stop()
    if orphaned:
        # The coordinator died without cleaning up: remove its socket directory and whatever
        # our envs left running in our process group.
        _stop_orphaned_tree(socket_dir)
    return 0
