"""An in-process fake of the challenge server, mounted as a ``requests`` transport adapter.

The fake keeps the server's truth (sessions, episodes, per-episode step counters and how many
steps it applied) and can be scripted to fail the next matching request in the ways a real
server fails: a 5xx before applying, a connection error before or *after* applying, a 4xx, a
malformed body, or a crafted answer. No sockets, no sleeping: the backend gets a fake clock whose
``sleep`` records the delay and moves the clock; the server moves it by its latency, and when a
request would take longer than the timeout the backend gave it, by that timeout before a
``ReadTimeout`` (so call deadlines are checked without waiting). The transport seam is httpx's
(a transport that tests swap for an in-process handler).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

from pool_env.envs import HttpEnvSpec
from workers.backends import retry
from workers.backends.http import HttpBackend

__all__ = [
    "TOKEN",
    "URL",
    "Episode",
    "FakeAdapter",
    "FakeClock",
    "FakeServer",
    "Fault",
    "FixedRandom",
    "Harness",
    "make",
]

URL = "http://fake.test"
TOKEN = "tok-1"


@dataclass
class Fault:
    """Fail the next request whose path contains ``path``.

    kinds: ``"500"``/``"503"`` (nothing applied), ``"connect"`` (connection error, nothing
    applied), ``"drop"`` (applied, then the connection breaks), ``"drop_first"`` (only the first
    entry of a step is applied, then the connection breaks), ``"timeout"`` (applied, then a read
    timeout), ``"status"`` (answer ``status`` with ``detail``), ``"not_json"``, ``"mutate"``
    (apply, then ``mutate`` the answer), ``"restart"`` (forget everything, then a connection error),
    ``"slow"`` (take ``delay`` seconds more than the server's latency).
    """

    path: str
    kind: str
    status: int = 0
    detail: Any = ""
    mutate: Callable[[dict[str, Any]], None] | None = None
    times: int = 1
    delay: float = 0.0


@dataclass
class FakeClock:
    """Monotonic seconds that move only when the backend sleeps or a request takes time."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FixedRandom:
    """A random source that always draws ``value`` (0.0: no back-off delay at all)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass
class Episode:
    step: int = 0
    applied: int = 0
    ended: bool = False


@dataclass
class FakeServer:
    """The server's state, its request log and the scripted faults."""

    sessions: set[str] = field(default_factory=set)
    episodes: dict[str, Episode] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    request_timeout: float = 2.0
    faults: list[Fault] = field(default_factory=list)
    down: bool = False
    clock: FakeClock = field(default_factory=FakeClock)
    latency: float = 0.0
    timeouts: list[float] = field(default_factory=list)  # the read timeout of each request

    def restart(self) -> None:
        self.sessions.clear()
        self.episodes.clear()
        self.aliases.clear()

    def paths(self, needle: str = "") -> list[str]:
        return [path for _, path, _, _ in self.log if needle in path]

    def applied(self) -> int:
        return sum(e.applied for e in self.episodes.values())

    def _resolve(self, episode_id: str) -> Episode | None:
        return self.episodes.get(self.aliases.get(episode_id, episode_id))

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: Any, timeout: float = math.inf
    ) -> tuple[int, Any]:
        self.log.append((method, path, headers, body))
        self.timeouts.append(timeout)
        if self.down:
            raise requests.ConnectionError("server is down")
        fault = next((f for f in self.faults if f.path in path), None)
        if fault is not None:
            fault.times -= 1
            if fault.times == 0:
                self.faults.remove(fault)
        took = self.latency + (fault.delay if fault is not None and fault.kind == "slow" else 0.0)
        if took > timeout:  # the client stops waiting; the server still does the work (a step is applied)
            self.clock.now += timeout
            self._apply(method, path, headers, body, None)
            raise requests.exceptions.ReadTimeout(f"read timed out (read timeout={timeout})")
        self.clock.now += took
        if fault is not None:
            if fault.kind in ("500", "503"):
                return int(fault.kind), {"detail": "injected"}
            if fault.kind == "connect":
                raise requests.ConnectionError("connection refused")
            if fault.kind == "status":
                return fault.status, {"detail": fault.detail}
            if fault.kind == "restart":
                self.restart()
                raise requests.ConnectionError("connection reset by peer")
        status, answer = self._apply(method, path, headers, body, fault)
        if fault is not None:
            if fault.kind in ("drop", "drop_first"):
                raise requests.exceptions.ChunkedEncodingError("connection broken: IncompleteRead")
            if fault.kind == "timeout":
                raise requests.exceptions.ReadTimeout("read timed out")
            if fault.kind == "not_json":
                return 200, b"<html>gateway</html>"
            if fault.kind == "mutate":
                assert fault.mutate is not None
                fault.mutate(answer)
        return status, answer

    def _apply(
        self, method: str, path: str, headers: dict[str, str], body: Any, fault: Fault | None
    ) -> tuple[int, Any]:
        if path == "/api/v1/session/create":
            session_id = str(uuid.uuid4())
            self.sessions.add(session_id)
            return 200, {"session_id": session_id}
        if path == "/api/v1/vectorized/episodes/create":
            if headers.get("Session-ID") not in self.sessions:
                return 404, {"detail": "Session not found"}
            ids = [str(uuid.uuid4()) for _ in range(body["num_envs"])]
            self.episodes.update((i, Episode()) for i in ids)
            return 200, {"episode_ids": ids, "vectorized_group_id": "g"}
        if path == "/api/v1/episode/vectorized_reset":
            return 200, self._reset(body)
        if path == "/api/v1/episode/vectorized_step":
            return 200, self._step(body, fault)
        if path.endswith("/state/latest"):
            episode = self._resolve(path.split("/")[4])
            if episode is None:
                return 404, {"detail": "Episode not found"}
            return 200, {"observation": [0.0] * 9, "step": episode.step, "terminated": episode.ended}
        return 404, {"detail": "Not Found"}

    def _reset(self, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, list[Any]] = {"observations": [], "infos": [], "new_episode_ids": []}
        for episode_id, seed in zip(body["episode_ids"], body["seeds"], strict=True):
            episode = self._resolve(episode_id)
            if episode is None:
                answer["observations"].append([])
                answer["infos"].append({"error": f"Episode {episode_id} not found"})
                answer["new_episode_ids"].append(None)
                continue
            new_id = None
            if episode.applied:  # mint a new id, keep the old one as an alias (PROTOCOL §7)
                new_id = str(uuid.uuid4())
                episode = self.episodes[new_id] = Episode()
                self.aliases[episode_id] = new_id
            episode.step, episode.ended = 0, False
            answer["observations"].append([float(seed or 0)] * 9)
            answer["infos"].append({"step": 0})
            answer["new_episode_ids"].append(new_id)
        return answer

    def _step(self, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        answer: dict[str, list[Any]] = {
            k: [] for k in ("observations", "rewards", "terminateds", "truncateds", "infos")
        }
        for j, entry in enumerate(body["episode_actions"]):
            episode = self._resolve(entry["episode_id"])
            if episode is None or (fault is not None and fault.kind == "drop_first" and j > 0):
                rows, reward, terminated, info = [], 0.0, True, {"error": "not found", "step": 0}
            elif entry["action"] == 2:  # sell: one row, terminated
                episode.step += 1
                episode.applied += 1
                episode.ended = True
                rows, reward, terminated = [[float(episode.step)] * 9], 150.0, True
                info = {"step": episode.step, "terminated": True, "reason": "sold"}
            else:
                k = entry["step_size"]
                rows = [[float(episode.step + r + 1)] * 9 for r in range(k)]
                episode.step += k
                episode.applied += 1
                reward, terminated, info = 10.0, False, {"step": episode.step, "degradation": 0.1}
            answer["observations"].append(rows)
            answer["rewards"].append(reward)
            answer["terminateds"].append(terminated)
            answer["truncateds"].append(False)
            answer["infos"].append(info)
        return answer


class FakeAdapter(BaseAdapter):
    """Routes every request of a session to the fake server; records that it was closed."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__()
        self.server = server
        self.closed = False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        connect, read = kwargs["timeout"]
        assert connect == read and 0 < read <= self.server.request_timeout
        raw = request.body
        body = json.loads(raw) if raw else None
        path = urlsplit(str(request.url)).path
        status, payload = self.server.handle(request.method or "", path, dict(request.headers), body, read)
        response = requests.Response()
        response.status_code = status
        response._content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response.url = str(request.url)
        response.request = request
        response.reason = "OK" if status == 200 else "Error"
        return response

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    server: FakeServer
    backend: HttpBackend
    sleeps: list[float]
    adapters: list[FakeAdapter]
    clock: FakeClock


def make(num_slots: int = 2, rng: retry.RandomSource | None = None, **spec_fields: Any) -> Harness:
    clock = FakeClock()
    adapters: list[FakeAdapter] = []

    def session_factory() -> requests.Session:
        session = requests.Session()
        adapter = FakeAdapter(server)
        adapters.append(adapter)
        session.mount("http://", adapter)
        return session

    fields: dict[str, Any] = {"request_timeout": 2.0, "max_retries": 3, "retry_backoff": 0.1, **spec_fields}
    spec = HttpEnvSpec(URL, TOKEN, **fields)
    server = FakeServer(clock=clock, request_timeout=spec.request_timeout)
    backend = HttpBackend(spec, num_slots, session_factory=session_factory, sleep=clock.sleep, rng=rng, clock=clock)
    return Harness(server, backend, clock.sleeps, adapters, clock)
