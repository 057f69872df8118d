"""The reference server as a long-lived service under hostile input (issue 15), as a real process:
huge bodies and a fuzz batch leave its memory bounded, 10,000 abandoned episodes idle out, and the
start-up limits arrive through the command line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
import requests

from pool_env.refserver.limits import ServerLimits
from pool_env.refserver.process import RefServer
from tests.conditions import wait_until

RSS_GROWTH_MB = 150  # allowed growth while serving the hostile batch (the old server reached 1.96 GB)


def rss_mb(server: RefServer) -> float:
    return float(psutil.Process(server.pid).memory_info().rss) / 2**20


def session(http: requests.Session, server: RefServer, token: str) -> dict[str, str]:
    headers = {"User-Token": token}
    sid = http.post(server.url + "/api/v1/session/create", headers=headers, timeout=10).json()["session_id"]
    return {**headers, "Session-ID": sid}


@pytest.fixture
def server() -> Iterator[RefServer]:
    with RefServer(limits=ServerLimits(max_body_bytes=65_536)) as srv:
        yield srv
    assert not srv.running


def send_raw(server: RefServer, head: bytes, body_chunks: Iterator[bytes]) -> int:
    """Send a request by hand (so the body can be a lie or endless); return the answered status."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed while we were still sending: expected
        reply = sock.recv(65_536)
    return int(reply.split(b" ", 2)[1])


def test_huge_bodies_are_refused_and_memory_stays_bounded(server: RefServer) -> None:
    http = requests.Session()
    headers = session(http, server, "fuzz")
    eid = http.post(server.url + "/api/v1/episode/create", headers=headers, timeout=10).json()["episode_id"]
    baseline = rss_mb(server)
    ten_mb = json.dumps({"episode_ids": [eid] * 250_000}).encode()  # ≈ 10 MB of ids
    for path in ("/api/v1/episode/vectorized_reset", "/api/v1/episode/vectorized_step", "/control/faults"):
        r = http.post(server.url + path, data=ten_mb, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 413 and len(r.content) < 200
    # 100 MB announced by Content-Length, and 100 MB chunked without one: neither is ever held
    head = (
        f"POST /api/v1/episode/vectorized_step HTTP/1.1\r\nHost: x\r\nUser-Token: fuzz\r\n"
        f"Content-Type: application/json\r\nContent-Length: {100 * 2**20}\r\n\r\n"
    ).encode()
    assert send_raw(server, head, iter([b"[" * 65_536] * 1600)) == 413
    head = (
        b"POST /api/v1/episode/vectorized_step HTTP/1.1\r\nHost: x\r\nUser-Token: fuzz\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"10000\r\n" + b"[" * 65_536 + b"\r\n"
    assert send_raw(server, head, iter([chunk] * 1600)) == 413
    hostile = [b'{"episode_ids": [NaN]}', b'{"episode_actions": [{"episode_id": "\\ud800", "action": 1e999999}]}']
    for _ in range(200):
        for body in hostile:
            r = http.post(server.url + "/api/v1/episode/vectorized_step", data=body, headers=headers)
            assert 400 <= r.status_code < 500
    assert rss_mb(server) - baseline < RSS_GROWTH_MB
    r = http.post(server.url + "/api/v1/episode/step", json={"episode_id": eid, "action": 0}, headers=headers)
    assert r.status_code == 200 and r.json()["step"] == 10  # still serving
    by_status = server.stats()["requests_by_status"]
    assert "500" not in by_status and by_status["413"] >= 5


def test_10000_abandoned_episodes_idle_out_under_the_cap() -> None:
    cap, tokens, per_call = 640, 16, 64
    limits = ServerLimits(idle_timeout_s=6.0, max_live_episodes=cap)  # room for a loaded CI machine
    with RefServer(limits=limits) as server:
        http = requests.Session()
        baseline = rss_mb(server)
        first_id = ""
        created = 0
        for t in range(tokens):
            headers = session(http, server, f"abandon-{t}")
            for _ in range(cap // per_call):
                r = http.post(
                    server.url + "/api/v1/vectorized/episodes/create", json={"num_envs": per_call}, headers=headers
                )
                assert r.status_code == 200, r.text
                first_id = first_id or r.json()["episode_ids"][0]
                created += len(r.json()["episode_ids"])
            r = http.post(server.url + "/api/v1/episode/create", headers=headers)
            assert r.status_code == 409 and "limit of 640" in r.json()["detail"], r.text
        assert created == cap * tokens == 10_240
        # sessions too: the last one was used after the last episode (by the refused create)
        wait_until(
            lambda: server.stats()["live_episodes"] == server.stats()["sessions"] == 0,
            60.0,
            "every idle episode and session is evicted",
            interval=0.1,
        )
        stats = server.stats()
        assert stats["episode_records"] == 0 and stats["evicted_slots"] == 10_240
        assert stats["tokens"] == {}  # tokens that used no quota are not kept either
        r = http.post(server.url + "/api/v1/episode/step", json={"episode_id": first_id, "action": 0}, headers=headers)
        assert r.status_code == 404 and "was evicted" in r.json()["detail"]
        assert rss_mb(server) - baseline < RSS_GROWTH_MB


def test_start_up_limits_and_control_flags_reach_the_server() -> None:
    with RefServer(limits=ServerLimits(num_envs_limit=128, control_token="tok-1")) as server:
        assert server.set_faults(max_num_envs=128)["limits"]["num_envs_limit"] == 128  # sends the token
        r = requests.post(server.url + "/control/faults", json={"latency_ms": 1}, timeout=5)
        assert r.status_code == 403
        r = requests.post(
            server.url + "/control/faults", data=b'{"latency_ms": Infinity}', headers={"X-Control-Token": "tok-1"}
        )
        assert r.status_code == 400
        assert server.get_faults()["faults"]["latency_ms"] == 0.0
    with RefServer(limits=ServerLimits(control=False)) as server:
        assert requests.get(server.url + "/control/stats", timeout=5).status_code == 404


def test_cli_documents_the_limits_and_refuses_a_max_num_envs_above_the_limit() -> None:
    pool_env = [sys.executable, "-m", "pool_env.cli"]
    out = subprocess.run([*pool_env, "ref-server", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--max-body-bytes", "--num-envs-limit", "--idle-timeout-s", "--max-live-episodes", "--no-control"):
        assert flag in out.stdout
    bad = subprocess.run(
        [*pool_env, "ref-server", "--max-num-envs", "300", "--num-envs-limit", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "above --num-envs-limit 100" in bad.stderr and "Traceback" not in bad.stderr
