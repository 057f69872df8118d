"""The status document's table form, steps/s sampling, and the Prometheus exporter."""

from __future__ import annotations

import urllib.request
from typing import Any

from pool_env.daemon.status import RateMeter, format_status, start_metrics_server
from pool_env.refserver.process import free_port

STATUS: dict[str, Any] = {
    "version": 1,
    "pid": 4242,
    "endpoint": "ipc:///run/pool.sock",
    "uptime": 3600.0,
    "spec": "gym:CartPole-v1",
    "num_envs": 4,
    "num_workers": 2,
    "free_slots": 1,
    "draining": 1,
    "workers": [
        {
            "worker": 0,
            "pid": 11,
            "slots": [0, 1],
            "state": "running",
            "restarts": 2,
            "steps_per_s": 1234.5,
            "cpu_percent": 51.0,
            "rss": 52 * 1024 * 1024,
        },
        {
            "worker": 1,
            "pid": None,
            "slots": [2, 3],
            "state": "backoff",
            "restarts": 1,
            "steps_per_s": 0.0,
            "cpu_percent": None,
            "rss": None,
        },
    ],
    "leases": [{"lease": "ab12cd34", "slots": [0, 1], "age": 12.0, "idle": 0.3}],
    "counters": {"worker_failures": 3, "slot_errors": 4, "bad_requests": 5},
    "faults_recovered": 7,
}


def test_the_table_shows_workers_leases_uptime_and_faults() -> None:
    text = format_status(STATUS)
    assert "pool-env daemon pid 4242 at ipc:///run/pool.sock" in text
    assert "uptime 3600 s" in text and "faults recovered: 7" in text and "bad requests 5" in text
    assert "slots: 1 free, 1 draining, 2 leased" in text
    worker_row = next(line for line in text.splitlines() if line.strip().startswith("0 "))
    for cell in ("11", "[0-1]", "running", "2", "1234", "51", "52 MiB"):
        assert cell in worker_row.split() or cell in worker_row
    assert "ab12cd34" in text and "leases (1):" in text


def test_the_table_counts_one_worker_and_one_slot_in_the_singular() -> None:
    one = {**STATUS, "num_envs": 1, "num_workers": 1, "free_slots": 0, "draining": 0}
    assert "1 slot on 1 worker," in format_status(one)
    assert "4 slots on 2 workers," in format_status(STATUS)


def test_steps_per_second_come_from_counter_deltas_over_a_period() -> None:
    meter = RateMeter(period=1.0)
    meter.sample(10.0, {0: 100})
    meter.sample(10.5, {0: 150})
    assert meter.rates == {}
    meter.sample(12.0, {0: 500, 1: 20})
    assert meter.rates == {0: 200.0, 1: 10.0}


def test_the_prometheus_exporter_serves_the_latest_status() -> None:
    port = free_port()
    stop = start_metrics_server(port, "127.0.0.1", lambda: STATUS)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        stop()
    assert "pool_env_free_slots 1.0" in body
    assert 'pool_env_worker_steps_per_second{worker="0"} 1234.5' in body
    assert 'pool_env_events_total{event="worker_failures"} 3.0' in body
    assert 'pool_env_worker_rss_bytes{worker="1"}' not in body
