"""The reference server as a real process: HTTP over TCP, drops, hangs, restarts and clean stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pool_env.refserver.faults import FaultConfig
from pool_env.refserver.process import RefServer, RefServerError, free_port
from tests.conditions import wait_until
from tests.processes import is_running, reap

TOKEN = {"User-Token": "itok"}  # tests that read per-token totals use a token of their own


class Client:
    """A keep-alive ``requests`` client of one server."""

    def __init__(self, server: RefServer) -> None:
        self.url = server.url + "/api/v1"
        self.http = requests.Session()
        self.session_id = self.http.post(self.url + "/session/create", headers=TOKEN, timeout=5).json()["session_id"]

    def create_group(self, num_envs: int) -> list[str]:
        headers = {**TOKEN, "Session-ID": self.session_id}
        r = self.http.post(
            self.url + "/vectorized/episodes/create", headers=headers, json={"num_envs": num_envs}, timeout=5
        )
        r.raise_for_status()
        return list(r.json()["episode_ids"])

    def vstep(self, ids: list[str], timeout: float = 5.0) -> requests.Response:
        entries = [{"episode_id": i, "action": 0, "step_size": 10, "return_all_states": True} for i in ids]
        return self.http.post(
            self.url + "/episode/vectorized_step", headers=TOKEN, json={"episode_actions": entries}, timeout=timeout
        )

    def latest(self, episode_id: str) -> requests.Response:
        return self.http.get(f"{self.url}/episode/{episode_id}/state/latest", headers=TOKEN, timeout=5)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RefServer]:
    with RefServer() as srv:
        yield srv
    assert not srv.running


@pytest.fixture
def server(shared_server: RefServer) -> Iterator[RefServer]:
    """The module's server, with every fault switch back to its default after the test."""
    yield shared_server
    shared_server.set_faults(**FaultConfig().to_dict(), clear_pending=True)


@pytest.fixture
def own_server() -> Iterator[RefServer]:
    """A server of the test's own, for tests that restart or kill it."""
    with RefServer() as srv:
        yield srv
    assert not srv.running


@pytest.fixture
def client(server: RefServer) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.close()


def test_vectorized_steps_over_http_are_counted_once_each(server: RefServer, client: Client) -> None:
    ids = client.create_group(4)
    for _ in range(3):
        body = client.vstep(ids).json()
        assert [len(o) for o in body["observations"]] == [10] * 4
    episodes = server.episodes()["episodes"]
    assert [episodes[i]["steps_applied"] for i in ids] == [3, 3, 3, 3]
    assert sum(episodes[i]["step"] for i in ids) == 4 * 30


def test_a_drop_raises_a_connection_error_after_the_step_was_applied(server: RefServer, client: Client) -> None:
    ids = client.create_group(2)
    server.fail_next("drop", path="vectorized_step")
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        client.vstep(ids)
    assert [server.episodes()["episodes"][i]["steps_applied"] for i in ids] == [1, 1]
    assert client.latest(ids[0]).json()["step"] == 10  # what a retry must look at before stepping again
    assert client.vstep(ids).json()["infos"][0]["step"] == 20  # the keep-alive client recovers
    assert server.stats()["dropped_connections"] >= 1
    assert "Traceback" not in server.output() and "ASGI" not in server.output()  # not an app error


def test_hang_outlasts_the_client_timeout_without_blocking_others(server: RefServer, client: Client) -> None:
    ids = client.create_group(1)
    server.set_faults(hang_s=3.0, fail_next={"kind": "hang", "path": "vectorized_step"})
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.vstep(ids, timeout=0.5)
    other = Client(server)  # the server still answers while the hung request sleeps
    assert other.latest(ids[0]).json()["step"] == 10  # the hung step was applied
    other.close()


def test_latency_is_served_concurrently(server: RefServer) -> None:
    clients = [Client(server) for _ in range(8)]
    groups = [c.create_group(1) for c in clients]
    server.set_faults(latency_ms=400)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda c=c, g=g: statuses.append(c.vstep(g).status_code))
        for c, g in zip(clients, groups, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert statuses == [200] * 8
    assert server.stats()["max_in_flight"] >= 6  # other tests of this module never exceed 3
    for c in clients:
        c.close()


def test_faults_given_at_start_reach_the_server_and_survive_a_restart() -> None:
    with RefServer(p_http_503=1.0, latency_ms=1.0, fault_seed=3) as server:
        faults: dict[str, Any] = server.get_faults()["faults"]
        assert faults["p_http_503"] == 1.0 and faults["fault_seed"] == 3
        client = Client(server)
        r = client.http.post(client.url + "/episode/reset", headers=TOKEN, json={"episode_id": "x"}, timeout=5)
        assert r.status_code == 503 and "detail" in r.json()
        server.set_faults(p_http_503=0.0, p_http_500=1.0)
        server.restart()
        assert server.get_faults()["faults"]["p_http_500"] == 1.0
        client.close()


def test_restart_keeps_the_port_and_loses_every_episode(own_server: RefServer) -> None:
    server, client = own_server, Client(own_server)
    ids = client.create_group(1)
    client.vstep(ids)
    old_pid, port = server.pid, server.port
    server.restart()
    assert server.port == port and server.pid != old_pid and not is_running(old_pid)
    r = client.latest(ids[0])
    assert r.status_code == 404 and ids[0] in r.json()["detail"]
    assert server.episodes()["episodes"] == {}
    client.close()


def test_kill_is_a_crash_and_stop_is_idempotent(own_server: RefServer) -> None:
    server, client = own_server, Client(own_server)
    pid = server.pid
    server.kill()
    assert not is_running(pid)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.http.get(server.url + "/api/v1/version", headers=TOKEN, timeout=2)
    server.stop()
    server.stop()
    with pytest.raises(RefServerError):
        _ = server.pid
    client.close()


def test_stop_leaves_no_process_and_frees_the_port() -> None:
    server = RefServer()
    server.start()
    pid = server.pid
    server.close()
    assert not is_running(pid) and not server.running
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((server.host, server.port))


def test_a_busy_port_is_a_clear_start_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = RefServer(port=sock.getsockname()[1], start_timeout=10)
        with pytest.raises(RefServerError, match="exited with code"):
            server.start()
        assert not server.running
        server.close()


def test_server_exits_when_its_parent_dies() -> None:
    script = textwrap.dedent(
        """
        import time
        from pool_env.refserver.process import RefServer
        server = RefServer()
        server.start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert is_running(server_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        wait_until(lambda: not is_running(server_pid), 10, "the server exits after its parent")
    finally:
        reap(parent)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_pool_env_ref_server_stops_on_a_signal_with_exit_0_and_frees_its_port(signum: signal.Signals) -> None:
    port = free_port()
    command = [sys.executable, "-m", "pool_env.cli", "ref-server", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _answers(port) or proc.poll() is not None, 30, "the ref-server answers /api/v1/version")
        assert proc.poll() is None, proc.communicate()

        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=20)
    finally:
        reap(proc)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert not is_running(proc.pid)
    with socket.socket() as sock:  # the port is released
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/api/v1/version", headers=TOKEN, timeout=1).status_code == 200
    except requests.exceptions.ConnectionError:
        return False
