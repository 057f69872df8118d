"""What ``pool-env status`` shows: the status document, its table form, steps/s, Prometheus, and
the one request that fetches it (:func:`fetch_status`, no lease).

The daemon builds one status document (a plain dict, the ``status`` reply and the ``--json``
output) from the coordinator's worker stats and counters and its lease table. The Prometheus
exporter serves the latest document, refreshed by the daemon's loop about once a second, so the
exporter thread never touches the daemon's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from pool_env import protocol
from pool_env.daemon.leases import describe_slots
from pool_env.daemon.security import client_keys
from pool_env.daemon.view import DaemonView
from pool_env.daemon.wire import MAX_HEADER_BYTES, PROTOCOL_VERSION, ClientOp, raise_reply_error, reply_document
from pool_env.errors import DaemonUnavailableError, TransportError

__all__ = ["RateMeter", "fetch_status", "format_status", "plural", "start_metrics_server", "status_document"]


def status_document(daemon: DaemonView, rates: dict[int, float], uptime: float, now: float) -> dict[str, Any]:
    """The status of ``daemon``: workers (with steps/s from ``rates``), leases, counters."""
    coordinator = daemon.coordinator
    workers = coordinator.worker_stats()
    for worker in workers:
        worker["steps_per_s"] = rates.get(worker["worker"], 0.0)
    counters = {**dict(coordinator.counters), **dict(daemon.counters)}
    spec = daemon.config.spec
    return {
        "version": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "endpoint": daemon.endpoint,
        "uptime": uptime,
        "spec": spec.label(),
        "num_envs": daemon.config.num_envs,
        "num_workers": daemon.config.num_workers,
        "free_slots": len(daemon.leases.free_slots()),
        "draining": len(daemon.leases.draining),
        "workers": workers,
        "leases": [
            {
                "lease": lease.short_id,
                "slots": lease.slots,
                "age": now - lease.granted_at,
                "idle": now - lease.last_seen,
            }
            for lease in daemon.leases.leases
        ],
        "counters": counters,
        "error_kinds": {kind.value: n for kind, n in sorted(coordinator.error_kinds.items())},
        "faults_recovered": counters.get("worker_failures", 0) + counters.get("slot_errors", 0),
    }


class RateMeter:
    """Steps per second per worker, from counters sampled at most once per ``period`` seconds."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self._last: tuple[float, dict[int, int]] | None = None
        self.rates: dict[int, float] = {}

    def sample(self, now: float, steps: dict[int, int]) -> None:
        """Record cumulative ``steps`` per worker at ``now``; rates update once a period passed."""
        if self._last is None:
            self._last = (now, dict(steps))
            return
        then, before = self._last
        if now - then < self.period:
            return
        self.rates = {w: max(0, n - before.get(w, 0)) / (now - then) for w, n in steps.items()}
        self._last = (now, dict(steps))


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value //= 1024
    return f"{value} TiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return lines


def plural(count: int, noun: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_status(status: dict[str, Any]) -> str:
    """The human-readable status table."""
    counters = status.get("counters", {})
    lines = [
        f"pool-env daemon pid {status['pid']} at {status['endpoint']} (protocol v{status['version']})",
        f"spec {status['spec']}, {plural(status['num_envs'], 'slot')} on {plural(status['num_workers'], 'worker')}, "
        f"uptime {status['uptime']:.0f} s",
        f"slots: {status['free_slots']} free, {status['draining']} draining, "
        f"{status['num_envs'] - status['free_slots'] - status['draining']} leased",
        f"faults recovered: {status['faults_recovered']} (worker restarts {counters.get('worker_failures', 0)}, "
        f"slot errors {counters.get('slot_errors', 0) + counters.get('slot_failures', 0)}); "
        f"bad requests {counters.get('bad_requests', 0)}",
        "",
        "workers:",
    ]
    rows = []
    for w in status["workers"]:
        cpu = "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}"
        rows.append(
            [
                str(w["worker"]),
                str(w["pid"] or "-"),
                describe_slots(w["slots"]),
                w["state"],
                str(w["restarts"]),
                f"{w.get('steps_per_s', 0.0):.0f}",
                cpu,
                _size(w.get("rss")),
            ]
        )
    lines += [
        "  " + line for line in _table(["id", "pid", "slots", "state", "restarts", "steps/s", "cpu%", "rss"], rows)
    ]
    lines += ["", f"leases ({len(status['leases'])}):"]
    if status["leases"]:
        rows = [
            [lease["lease"], describe_slots(lease["slots"]), f"{lease['age']:.0f} s", f"{lease['idle']:.1f} s"]
            for lease in status["leases"]
        ]
        lines += ["  " + line for line in _table(["lease", "slots", "age", "idle"], rows)]
    else:
        lines.append("  none")
    return "\n".join(lines)


def _metric_families(status: dict[str, Any]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    gauges = {
        "pool_env_uptime_seconds": ("seconds since the daemon started", status["uptime"]),
        "pool_env_slots": ("slots in the pool", status["num_envs"]),
        "pool_env_free_slots": ("slots no trainer holds", status["free_slots"]),
        "pool_env_leases": ("current leases", len(status["leases"])),
    }
    for name, (doc, value) in gauges.items():
        yield GaugeMetricFamily(name, doc, value=value)
    counters = CounterMetricFamily("pool_env_events", "daemon and pool event counters", labels=["event"])
    for event, value in sorted(status["counters"].items()):
        counters.add_metric([event], value)
    yield counters
    per_worker = {
        "pool_env_worker_steps_per_second": ("env steps per second", "steps_per_s"),
        "pool_env_worker_restarts": ("restarts of the worker", "restarts"),
        "pool_env_worker_cpu_percent": ("cpu % of the worker process", "cpu_percent"),
        "pool_env_worker_rss_bytes": ("resident memory of the worker process", "rss"),
    }
    for name, (doc, key) in per_worker.items():
        family = GaugeMetricFamily(name, doc, labels=["worker"])
        for worker in status["workers"]:
            if worker.get(key) is not None:
                family.add_metric([str(worker["worker"])], float(worker[key]))
        yield family


def start_metrics_server(port: int, host: str, latest: Callable[[], dict[str, Any]]) -> Callable[[], None]:
    """Serve ``latest()`` as Prometheus metrics on ``host:port``; returns a function that stops it.

    Raises:
        TransportError: ``host:port`` cannot be bound (in use, or not an address of this host).
    """
    from prometheus_client import CollectorRegistry, start_http_server

    class _Collector:
        def collect(self) -> Iterator[Any]:
            yield from _metric_families(latest())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise TransportError(
            f"metrics_port: cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
            "choose a free port with --metrics-port"
        ) from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def fetch_status(
    endpoint: str, timeout: float = 5.0, server_key: str | None = None, client_secret_key: str | None = None
) -> dict[str, Any]:
    """One ``status`` request, no lease (what ``pool-env status`` runs).

    Raises:
        DaemonUnavailableError: no answer within ``timeout`` (not running, unreachable, refused).
    """
    curve = client_keys(server_key, client_secret_key)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        sock.send(protocol.encode({"v": PROTOCOL_VERSION, "id": 1, "op": ClientOp.STATUS.value}))
        if not sock.poll(int(timeout * 1000)):
            raise DaemonUnavailableError(
                f"no answer from the daemon at {endpoint} within {timeout} s (not running, unreachable, or refused)"
            )
        header = protocol.decode(sock.recv_multipart()[0], MAX_HEADER_BYTES)
        if header.get("ok") is not True:
            raise_reply_error(header, endpoint)
        return reply_document(header)
    finally:
        sock.close(linger=0)
        context.term()
