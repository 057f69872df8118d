"""A worker unpickles env factories only when started for an embedded env_fns pool (``--accept-pickle``).

Workers serving a daemon are started without the flag; a pickled ``init`` must be refused before
a single byte of it is unpickled. The payload here creates a file when unpickled, so the test
sees whether it was.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from pool_env import protocol
from pool_env.protocol import Op

TIMEOUT_MS = 30_000


class _TouchWhenUnpickled:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture
def router() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    directory = tempfile.mkdtemp(prefix="pool_env_test_")
    endpoint = f"ipc://{directory}/control"
    socket.bind(endpoint)
    try:
        yield socket, endpoint
    finally:
        socket.close(linger=0)
        context.term()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _init_with_pickle(socket: zmq.Socket[bytes], endpoint: str, marker: Path, *flags: str) -> dict[str, object]:
    command = [sys.executable, "-m", "workers", "--endpoint", endpoint, "--worker-id", "0", "--gen", "1"]
    command += ["--parent-pid", str(os.getpid()), *flags]
    worker = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        identity, hello = socket.recv_multipart()
        assert protocol.decode(hello)["op"] == Op.HELLO.value
        payload = pickle.dumps(_TouchWhenUnpickled(str(marker)))
        spec = {"kind": "env_fns", "env_fns": [[0, payload]], "sys_path": []}
        init = {"op": Op.INIT.value, "spec": spec, "slots": [0], "shm_name": "none", "layout": {}, "seeds": None}
        socket.send_multipart([identity, protocol.encode(init)])
        reply: dict[str, object] = {}
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not reply and worker.poll() is None and time.monotonic() < deadline:
            if socket.poll(100):
                reply = protocol.decode(socket.recv_multipart()[1])
        worker.wait(TIMEOUT_MS / 1000)
        return reply
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()


def test_a_worker_without_accept_pickle_refuses_a_pickled_init_without_unpickling_it(
    router: tuple[zmq.Socket[bytes], str], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    reply = _init_with_pickle(*router, marker)
    assert reply["op"] == Op.FATAL.value
    assert "pickled code" in str(reply["error"]["message"])
    assert not marker.exists()


def test_the_same_init_is_unpickled_by_a_worker_started_with_accept_pickle(
    router: tuple[zmq.Socket[bytes], str], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    _init_with_pickle(*router, marker, "--accept-pickle")
    assert marker.exists()
