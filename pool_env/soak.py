"""The soak run: the chaos suite's fault mix against a pool for as long as asked, with a report.

:func:`run_soak` starts the reference server, a pool of DegradationEnv episodes (embedded, or
behind a ``pool-env serve`` daemon subprocess) and a :class:`~pool_env.chaos.ChaosRun`, and steps
until the time is up: workers SIGKILLed and frozen past ``step_timeout``, server episode errors,
HTTP 500/503, hangs, latency spikes, dropped connections, and a full server restart every
``restart_every`` seconds. Every batch is checked; every ``sample_every`` seconds the memory of the
coordinator (this process, or the daemon) and of the workers is sampled and ``on_progress`` gets a
:class:`SoakReport` so far. The final report adds the accounting against the server and what was
left behind (worker processes, shared-memory segments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from pool_env import shm
from pool_env.chaos import ChaosReport, ChaosRun, FaultMix
from pool_env.chaos.run import is_worker_process
from pool_env.config import PoolOptions
from pool_env.daemon.child import ServeProcess
from pool_env.envs import HttpEnvSpec

__all__ = ["SoakReport", "run_soak"]

STEP_SIZE = 10
MAX_STEPS = 1000
STEP_TIMEOUT = 3.0
MIB = 2**20


@dataclass
class SoakReport:
    """A soak run's figures (:meth:`to_dict` is the ``--json`` document)."""

    mode: str
    seed: int
    minutes: float
    chaos: ChaosReport
    ledger: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, float]] = field(default_factory=list)  # t, coordinator and workers RSS (MiB)
    leaked_processes: list[int] = field(default_factory=list)
    leaked_segments: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No broken invariant, the accounting agrees, nothing left behind."""
        return self.chaos.ok and not self.leaked_processes and not self.leaked_segments

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        c = self.chaos
        return {
            "ok": self.ok,
            "mode": self.mode,
            "seed": self.seed,
            "minutes": self.minutes,
            "seconds": round(c.seconds, 1),
            "steps": c.steps,
            "env_steps": c.env_steps,
            "env_steps_per_second": round(c.env_steps / c.seconds, 1) if c.seconds else 0.0,
            "faults_injected_by_server": c.server_faults,
            "faults_injected_by_soak": dict(c.injected),
            "faults_seen_by_trainer": self.ledger.get("errors_by_kind", {}),
            "recoveries": c.recoveries,
            "worker_restarts": c.worker_restarts,
            "step_latency_s": {"p50": c.latency(0.5), "p99": c.latency(0.99), "max": max(c.latencies, default=0.0)},
            "ledger": self.ledger,
            "server_steps": c.server_steps,
            "accounting_problems": c.accounting,
            "invariant_violations": c.violation_count,
            "first_violations": c.violations[:10],
            "memory_mib": self.memory,
            "leaked_processes": self.leaked_processes,
            "leaked_segments": self.leaked_segments,
        }


def run_soak(
    minutes: float,
    *,
    daemon: bool = False,
    num_envs: int = 16,
    num_workers: int = 4,
    seed: int | None = None,
    mix: FaultMix | None = None,
    restart_every: float = 60.0,
    process_fault_every: float = 20.0,
    sample_every: float = 10.0,
    on_progress: Callable[[SoakReport], None] | None = None,
) -> SoakReport:
    """Run the soak (see the module docstring) and return its final report.

    ``process_fault_every``: mean seconds between two worker faults (a SIGKILL, or one time in
    four a SIGSTOP); with 4 workers each is hit about every 80 s, below the default flapping
    limit (5 failures in 60 s), so the run measures healing, not giving up.
    """
    from pool_env.refserver.process import RefServer

    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    token = f"soak-{uuid.uuid4().hex[:8]}"
    with RefServer() as server:
        spec = HttpEnvSpec(
            server.url, token, step_size=STEP_SIZE, max_steps_per_episode=MAX_STEPS,
            request_timeout=1.0, max_retries=2, retry_backoff=0.05, call_timeout=2.0,
        )  # fmt: skip
        with _pool(spec, daemon, num_envs, num_workers) as (env, coordinator_pid):
            # Process faults come on a clock here, not per step: per step, a fast pool would kill its
            # workers faster than the restart policy's flapping limit allows (and give up on them).
            mix = dataclasses.replace(mix or FaultMix(), p_kill=0.0, p_freeze=0.0)
            run = ChaosRun(env, server, token, step_size=STEP_SIZE, max_steps=MAX_STEPS, seed=seed, mix=mix)
            report = SoakReport("daemon" if daemon else "embedded", seed, minutes, run.report)
            timing = (minutes, restart_every, process_fault_every, sample_every)
            _loop(run, report, timing, coordinator_pid, on_progress)
            run.finish()
            report.ledger = run.ledger.summary()
            owners = {os.getpid(), coordinator_pid}
    report.leaked_processes = sorted(pid for pid in run.seen_pids if is_worker_process(pid))
    report.leaked_segments = sorted(
        name for name in shm.list_segments() if any(name.startswith(f"{shm.SEGMENT_PREFIX}{o}_") for o in owners)
    )
    return report


def _loop(
    run: ChaosRun,
    report: SoakReport,
    timing: tuple[float, float, float, float],
    coordinator_pid: int,
    on_progress: Callable[[SoakReport], None] | None,
) -> None:
    minutes, restart_every, process_fault_every, sample_every = timing
    run.start()
    start = time.monotonic()
    end = start + minutes * 60.0
    next_restart = start + restart_every
    next_sample = start
    next_fault = start + run.rng.expovariate(1.0 / process_fault_every)
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            report.memory.append(_memory(run, coordinator_pid, now - start))
            report.ledger = run.ledger.summary()
            if on_progress is not None:
                on_progress(report)
            next_sample += sample_every
        if now >= next_restart:
            run.restart_server()
            next_restart += restart_every
        force = None
        if now >= next_fault:
            force = signal.SIGSTOP if run.rng.random() < 0.25 else signal.SIGKILL
            next_fault = now + run.rng.expovariate(1.0 / process_fault_every)
        run.step(force=force)
    report.memory.append(_memory(run, coordinator_pid, time.monotonic() - start))


def _memory(run: ChaosRun, coordinator_pid: int, elapsed: float) -> dict[str, float]:
    """RSS of the coordinator and of the live workers, in MiB."""
    workers = 0
    for pid in run.env.stats()["workers"]:
        with contextlib.suppress(psutil.Error, TypeError):
            workers += psutil.Process(int(pid["pid"])).memory_info().rss
    coordinator = psutil.Process(coordinator_pid).memory_info().rss
    return {"t": round(elapsed, 1), "coordinator": round(coordinator / MIB, 1), "workers": round(workers / MIB, 1)}


@contextlib.contextmanager
def _pool(spec: HttpEnvSpec, daemon: bool, num_envs: int, num_workers: int) -> Iterator[tuple[Any, int]]:
    """The env to step and the pid of its coordinator (this process, or the daemon)."""
    options = PoolOptions(step_timeout=STEP_TIMEOUT)
    if not daemon:
        from pool_env.vector_env import PoolVectorEnv

        with PoolVectorEnv(spec, num_envs, num_workers, options=options) as env:
            yield env, os.getpid()
        return
    import pool_env

    with _daemon(spec, num_envs, num_workers) as (endpoint, pid), pool_env.connect(endpoint, num_envs=num_envs) as env:
        yield env, pid


@contextlib.contextmanager
def _daemon(spec: HttpEnvSpec, num_envs: int, num_workers: int) -> Iterator[tuple[str, int]]:
    """A ``pool-env serve`` subprocess for ``spec`` (the daemon's own retry settings apply)."""
    args = [
        "--spec", spec.server_url, "--token", spec.user_token, "--step-size", str(spec.step_size),
        "--envs", str(num_envs), "--workers", str(num_workers), "--step-timeout", str(STEP_TIMEOUT),
        "--lease-timeout", "30",
    ]  # fmt: skip
    with ServeProcess(args, stderr=subprocess.DEVNULL) as daemon:
        yield daemon.endpoint, daemon.pid
