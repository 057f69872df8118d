"""A chaos run: step a DegradationEnv pool under a seeded mix of faults and check everything.

:class:`ChaosRun` drives any vector env with the pool's interface (an embedded
:class:`~pool_env.vector_env.PoolVectorEnv` or a daemon client from :func:`pool_env.connect`)
against a :class:`~pool_env.refserver.process.RefServer`. The server injects its own faults
(:meth:`FaultMix.server_faults`: episode errors, HTTP 500/503, hangs, dropped connections); the
run adds, per pool step and from one seeded RNG, SIGKILLed workers, workers frozen with SIGSTOP
(the coordinator must replace them after ``step_timeout``), latency spikes, and full server
restarts at the steps asked for. Every batch goes through a
:class:`~pool_env.chaos.invariants.BatchChecker` and a :class:`~pool_env.chaos.ledger.StepLedger`;
:meth:`ChaosRun.finish` compares the ledger with the server's per-token accounting.

The run never raises on a broken invariant: it collects the violations in :class:`ChaosReport`
(a test asserts there are none; the soak command reports them).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from pool_env.chaos.invariants import BatchChecker
from pool_env.chaos.ledger import ServerTally, StepLedger
from pool_env.envs.degradation import FLY, REPAIR, SELL

__all__ = ["ChaosReport", "ChaosRun", "FaultMix", "is_worker_process"]

MAX_VIOLATIONS_KEPT = 50


@dataclass(frozen=True)
class FaultMix:
    """How often each fault happens.

    Server-side probabilities are per request (``p_episode_error``: per step entry); the others
    are per pool step. ``p_hang`` hangs a request ``hang_s`` seconds *after* applying it.
    """

    p_episode_error: float = 0.03
    p_http_500: float = 0.01
    p_http_503: float = 0.01
    p_drop: float = 0.01
    p_hang: float = 0.003
    hang_s: float = 1.5
    latency_ms: float = 0.0
    p_kill: float = 0.006
    p_freeze: float = 0.002
    p_spike: float = 0.02
    spike_ms: float = 150.0
    spike_steps: int = 3

    def server_faults(self, seed: int) -> dict[str, Any]:
        """The :meth:`RefServer.set_faults` arguments of this mix."""
        return {
            "p_episode_error": self.p_episode_error,
            "p_http_500": self.p_http_500,
            "p_http_503": self.p_http_503,
            "p_drop": self.p_drop,
            "p_hang": self.p_hang,
            "hang_s": self.hang_s,
            "latency_ms": self.latency_ms,
            "fault_seed": seed,
        }


@dataclass
class ChaosReport:
    """What a chaos run did and saw."""

    seed: int
    steps: int = 0
    env_steps: int = 0
    seconds: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)  # by this run: kills, freezes, spikes, restarts
    server_faults: dict[str, int] = field(default_factory=dict)  # by the server, summed over restarts
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    accounting: list[str] = field(default_factory=list)
    server_steps: dict[str, int] = field(default_factory=dict)
    recoveries: int = 0
    failed_after_restart: int = 0  # slots failed on the first step after a server restart (its episodes are gone)
    worker_restarts: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))  # compact: soaks run for hours

    @property
    def ok(self) -> bool:
        """No invariant broken and the accounting agrees."""
        return not self.violation_count and not self.accounting

    def latency(self, q: float) -> float:
        """The ``q`` quantile of the step latency in seconds (0 when nothing ran)."""
        return float(np.quantile(self.latencies, q)) if self.latencies else 0.0


class ChaosRun:
    """Steps ``env`` under :class:`FaultMix` (see the module docstring).

    Args:
        env: the vector env (``reset``, ``step_async``, ``step_wait``, ``stats``).
        server: the reference server the env's workers talk to.
        token: the env's user token (the server accounts per token).
        step_size, max_steps: the env spec's, for the invariants.
        seed: seeds the episodes, the server's faults and this run's fault choices.
        mix: the fault mix.
        worker_pids: the live worker pids (default: from ``env.stats()["workers"]``).
    """

    def __init__(
        self,
        env: Any,
        server: Any,
        token: str,
        *,
        step_size: int,
        max_steps: int,
        seed: int,
        mix: FaultMix | None = None,
        worker_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self.env = env
        self.server = server
        self.mix = mix or FaultMix()
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.num_envs = int(env.num_envs)
        self.checker = BatchChecker(self.num_envs, step_size, max_steps)
        self.ledger = StepLedger(self.num_envs)
        self.tally = ServerTally(token)
        self.faults_banked: Counter[str] = Counter()
        self.report = ChaosReport(seed)
        self._worker_pids = worker_pids or self._pids_from_stats
        self._spike_left = 0
        self._failed = np.zeros(self.num_envs, dtype=bool)
        self._deferred_fault: signal.Signals | None = None  # a forced fault that found no live worker yet
        self._server_restarted = False  # until the step after a server restart
        self._obs: Any = None
        self._started = time.monotonic()
        self.seen_pids: set[int] = set()  # every worker pid this run looked at (none may outlive the pool)

    # -- driving ----------------------------------------------------------------------------

    def start(self) -> None:
        """Switch the server's faults on and reset every slot."""
        self.server.set_faults(**self.mix.server_faults(self.report.seed))
        self._started = time.monotonic()
        obs, infos = self.env.reset(seed=self.report.seed)
        self._violations(self.checker.reset(obs, infos))
        self._failed = np.asarray(infos.get("_error", np.zeros(self.num_envs, dtype=bool)), dtype=bool)
        self.ledger.reset()
        self.ledger.ended = self._failed.copy()
        self._obs = obs

    def step(self, force: signal.Signals | None = None, faults: bool = True) -> None:
        """One pool step, checked, with this step's faults (``faults=False``: none; ``force``: also
        send this signal to a worker).

        Random process faults only hit a healthy pool: while a worker waits out its restart
        back-off its slots fail at once, so steps are fast, and per-step kills would then come
        faster than the restart policy's flapping limit allows.
        """
        mix, rng = self.mix, self.rng
        if faults:
            self._latency_spike()
        actions = self._actions()
        # A forced fault is never replaced by a random one, and waits for a live worker to hit.
        forced = force or self._deferred_fault
        self._deferred_fault = None
        process_fault = forced
        draw_kill, draw_freeze = rng.random(), rng.random()
        if forced is None and faults and self.healthy and draw_kill < mix.p_kill:
            process_fault = signal.SIGKILL
        elif forced is None and faults and self.healthy and draw_freeze < mix.p_freeze:
            process_fault = signal.SIGSTOP
        victim = self._pick_worker() if process_fault is not None else None
        if forced is not None and victim is None:
            self._deferred_fault = forced
        mid_command = rng.random() < 0.5
        if victim is not None and not mid_command and not self._signal(victim, process_fault) and forced:
            self._deferred_fault = forced
        start = time.perf_counter()
        self.env.step_async(actions)
        if victim is not None and mid_command and not self._signal(victim, process_fault) and forced:
            self._deferred_fault = forced
        obs, rewards, terminated, truncated, infos = self.env.step_wait()
        self.report.latencies.append(time.perf_counter() - start)
        self._violations(self.checker.step(actions, obs, rewards, terminated, truncated, infos))
        self.ledger.record(terminated, truncated, infos)
        error = np.asarray(infos.get("_error", np.zeros(self.num_envs, dtype=bool)), dtype=bool)
        if self._server_restarted:
            self.report.failed_after_restart += int(error.sum())
            self._server_restarted = False
        self.report.recoveries += int((self._failed & ~error).sum())
        self._failed = error
        self.report.steps += 1
        self.report.env_steps += self.num_envs
        self._obs = obs

    @property
    def healthy(self) -> bool:
        """Whether the last step returned no error (every worker up, every episode live)."""
        return not self._failed.any()

    def restart_server(self) -> None:
        """Restart the server between two steps (nothing in flight), banking its counters first."""
        stats = self.server.stats()
        self.tally.bank(stats)
        self.faults_banked.update(stats.get("faults_injected", {}))
        self.server.restart()
        self.report.injected["server restart"] += 1
        self._server_restarted = True

    def finish(self) -> ChaosReport:
        """Switch faults off, compare the ledger with the server, fill in the report."""
        report = self.report
        report.seconds = time.monotonic() - self._started
        self.server.set_faults(p_episode_error=0.0, p_http_500=0.0, p_http_503=0.0, p_drop=0.0, p_hang=0.0)
        stats = self.server.stats()
        totals = self.tally.total(stats)
        report.server_steps = {k: int(totals[k]) for k in ("steps_applied", "steps_on_ended", "episode_errors")}
        report.server_faults = dict(self.faults_banked + Counter(stats.get("faults_injected", {})))
        report.accounting = self.ledger.problems(totals["steps_applied"], totals["steps_on_ended"])
        with contextlib.suppress(Exception):
            workers = self.env.stats()["workers"]
            report.worker_restarts = sum(int(w["restarts"]) for w in workers)
            self.seen_pids.update(int(w["pid"]) for w in workers if w.get("pid"))
        return report

    # -- faults -----------------------------------------------------------------------------

    def _latency_spike(self) -> None:
        if self._spike_left > 0:
            self._spike_left -= 1
            if self._spike_left == 0:
                self.server.set_faults(latency_ms=self.mix.latency_ms)
        elif self.rng.random() < self.mix.p_spike:
            self.server.set_faults(latency_ms=self.mix.spike_ms)
            self._spike_left = self.mix.spike_steps
            self.report.injected["latency spike"] += 1

    def _actions(self) -> np.ndarray:
        return self.np_rng.choice([FLY, REPAIR, SELL], size=self.num_envs, p=[0.88, 0.09, 0.03]).astype(np.int64)

    def _pids_from_stats(self) -> list[int]:
        return [int(w["pid"]) for w in self.env.stats()["workers"] if w.get("pid")]

    def _pick_worker(self) -> int | None:
        pids = [pid for pid in self._worker_pids() if is_worker_process(pid)]
        self.seen_pids.update(pids)
        return self.rng.choice(pids) if pids else None

    def _signal(self, pid: int, signum: signal.Signals | None) -> bool:
        """Send ``signum`` to ``pid``; whether it reached a process."""
        assert signum is not None
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
        self.report.injected["worker SIGKILL" if signum == signal.SIGKILL else "worker SIGSTOP"] += 1
        return True

    def _violations(self, found: list[str]) -> None:
        report = self.report
        report.violation_count += len(found)
        report.violations.extend(found[: max(0, MAX_VIOLATIONS_KEPT - len(report.violations))])


def is_worker_process(pid: int) -> bool:
    """Whether ``pid`` is a running pool worker (``python -m workers``), not a recycled pid."""
    try:
        process = psutil.Process(pid)
        return "workers" in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
