"""Shared settings for tests that drive the reference server."""

from __future__ import annotations

from typing import Any

__all__ = ["NO_FAULTS"]

NO_FAULTS: dict[str, Any] = {
    "p_episode_error": 0.0,
    "p_http_500": 0.0,
    "p_http_503": 0.0,
    "p_hang": 0.0,
    "p_drop": 0.0,
    "hang_s": 40.0,
    "latency_ms": 0.0,
    "max_steps_quota": 100_000,
    "clear_pending": True,
}
"""``RefServer.set_faults(**NO_FAULTS)`` switches every fault off and drops pending one-shot faults."""
