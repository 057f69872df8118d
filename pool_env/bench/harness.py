"""The benchmark harness: interleaved repetitions, medians, ratios, a table and JSON.

Method
======

A *case* is one workload at one size (e.g. CartPole-v1, ``num_envs=16``) and the
*candidates* compared on it (PoolVectorEnv with some ``num_workers``, gymnasium's
``SyncVectorEnv`` and ``AsyncVectorEnv(shared_memory=True)``, the challenge client's pattern, the
raw floor). For every case:

1. **Open all candidates at once** (processes that are not being measured sit blocked on a
   socket or pipe and use no CPU), reset them with seed 0.
2. **Warm up** each candidate for ``warmup_s`` seconds. The warm-up also calibrates how many steps
   one *chunk* takes: about ``chunk_s`` seconds, at least 3 steps.
3. **Interleave**: ``rounds`` rounds; in each, every candidate runs one chunk, in an order rotated
   by one each round (A B C, B C A, C A B, ...), so slow drifts of the machine (other users, thermal,
   caches) hit every candidate alike. Each step is timed (``perf_counter_ns``); actions come from a
   pre-sampled cycle, so sampling is not measured.
4. **Statistics**: env steps/s of a candidate is the *median over rounds* of ``num_envs x steps /
   chunk time``; a ratio "A vs B" is the *median over rounds of the per-round ratio* (both measured
   within seconds of each other), which is far more robust on a noisy machine than a ratio of
   medians. Step latency p50/p99 come from every timed step. The spread over rounds (min..max
   steps/s) is kept in the JSON.
5. **Overhead** per step, in µs, is the mean step time minus the *ideal* step time: for local
   envs ``ceil(num_envs / P) x c``, with ``c`` the env's own cost per step (one env stepped in
   this process before the case; the fastest of 5 runs) and ``P`` the processes that can step
   envs at once (1 for ``SyncVectorEnv``, ``min(workers, cores)`` otherwise); for the reference
   server ``slots per request x per-env cost + latency`` (what the server itself takes, were its
   CPU free); for the floor 0. For the reference server the CPU time the server process spent
   per step is recorded too (``watched_cpu_us_per_step``): on a small machine it competes with
   the workers for the same cores.
6. **Memory**: after the rounds, RSS (and USS, memory unique to the process) of every worker
   process: PoolVectorEnv's from ``env.stats()["workers"]``, AsyncVectorEnv's and the floor's from
   ``psutil`` (the child processes that appeared when the candidate opened). In-process candidates
   have no workers.

The machine is shared and small (2 cores): read ratios, not absolute numbers, and look at the
min..max spread in the JSON before trusting a difference of a few per cent. Never assert speed in
tests.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

__all__ = [
    "Candidate",
    "Case",
    "CaseResult",
    "Memory",
    "RunSettings",
    "candidate_result_row",
    "format_table",
    "host_info",
    "run_case",
]

MIB = 1024 * 1024
MIN_CHUNK_STEPS = 3


@dataclass
class Memory:
    """Worker processes of one candidate: RSS and USS in bytes (``None`` where unknown)."""

    rss: list[int | None] = field(default_factory=list)
    uss: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """MiB figures: per worker, max, total."""
        rss = [r for r in self.rss if r is not None]
        uss = [u for u in self.uss if u is not None]
        return {
            "workers": len(self.rss),
            "rss_per_worker_mib": [round(r / MIB, 1) for r in rss],
            "rss_max_worker_mib": round(max(rss) / MIB, 1) if rss else None,
            "rss_total_mib": round(sum(rss) / MIB, 1) if rss else None,
            "uss_total_mib": round(sum(uss) / MIB, 1) if uss else None,
        }


def process_memory(pids: Sequence[int]) -> Memory:
    """RSS and USS of ``pids`` (``None`` for a process that is gone or unreadable)."""
    memory = Memory()
    for pid in pids:
        rss: int | None = None
        uss: int | None = None
        with contextlib.suppress(psutil.Error):
            info = psutil.Process(pid).memory_full_info()
            rss, uss = int(info.rss), int(info.uss)
        memory.rss.append(rss)
        memory.uss.append(uss)
    return memory


def child_pids() -> set[int]:
    """Pids of this process's children (recursive), without multiprocessing's resource tracker."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any("resource_tracker" in part for part in child.cmdline()):
                pids.add(child.pid)
    return pids


class Candidate:
    """One implementation on one case. Subclasses implement :meth:`_open`, :meth:`step`, :meth:`close`.

    Attributes:
        name: shown in the table (unique within a case).
        kind: ``pool``, ``sync``, ``async``, ``client``, ``floor``: what the ratios refer to.
        num_envs: env slots stepped per :meth:`step`.
        num_workers: processes doing the env work (0: in this process).
        parallelism: how many of them can run at once on this machine (for the ideal step time).
        ideal_step_s: the ideal step time (set by the workload; see the module docstring).
        extra: fields added to the candidate's JSON row.
    """

    name: str
    kind: str
    num_envs: int
    num_workers: int
    parallelism: int
    ideal_step_s: float | None = None
    extra: dict[str, Any]
    _new_pids: list[int]

    def __init__(self, name: str, kind: str, num_envs: int, num_workers: int) -> None:
        self.name = name
        self.kind = kind
        self.num_envs = num_envs
        self.num_workers = num_workers
        self.parallelism = max(1, min(num_workers, os.cpu_count() or 1))
        self.extra = {}
        self._new_pids = []

    def open(self) -> None:
        """Start the candidate (and remember which child processes it made)."""
        before = child_pids()
        self._open()
        self._new_pids = sorted(child_pids() - before)

    def _open(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        """One batch step of every slot."""
        raise NotImplementedError

    def focus(self, active: bool) -> None:
        """Called with ``True`` before each of this candidate's warm-up and chunks and with ``False``
        after: a candidate with helper load of its own (a competing trainer) runs it only meanwhile,
        so it never weighs on the other candidates' measurements. Default: nothing."""

    def memory(self) -> Memory:
        """The worker processes' memory (default: the children that appeared at :meth:`open`)."""
        return process_memory(self._new_pids)

    def close(self) -> None:
        """Stop the candidate (idempotent)."""
        raise NotImplementedError


@dataclass
class Case:
    """One workload at one size and the candidates compared on it.

    Attributes:
        workload: ``a``, ``b``, ``c`` or ``d``.
        name: e.g. ``"CartPole-v1 N=16"``.
        num_envs: slots per step.
        candidates: built lazily by ``make_candidates`` (so nothing runs before the case does).
        references: ``(label, candidate name)`` pairs every candidate's ratio is computed against.
        params: workload parameters for the JSON (latency, per-env cost, env cost ...).
        chunk_scale: multiplies the run's ``chunk_s`` and ``warmup_s`` (slow remote steps need longer).
        setup: called once before the candidates are built (e.g. measures the env's own cost and
            stores it in ``params``).
        ratio_to_ideal: also show "x ideal" (ideal step time / mean step time) among the ratios;
            the JSON always has it as ``vs_ideal``.
        watch: pids of processes outside the candidates (the env server) whose CPU time per step
            is recorded for every candidate (``watched_cpu_us_per_step``).
    """

    workload: str
    name: str
    num_envs: int
    make_candidates: Callable[[Case], list[Candidate]]
    references: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    chunk_scale: float = 1.0
    setup: Callable[[Case], None] | None = None
    ratio_to_ideal: bool = False
    watch: Callable[[], list[int]] | None = None


@dataclass(frozen=True)
class RunSettings:
    """How long to measure: ``rounds`` interleaved rounds of ``chunk_s`` seconds per candidate."""

    rounds: int = 7
    chunk_s: float = 0.25
    warmup_s: float = 0.3
    quick: bool = False


@dataclass
class CandidateRun:
    """Raw measurements of one candidate in one case."""

    candidate: Candidate
    chunk_steps: int = 0
    rates: list[float] = field(default_factory=list)
    step_ns: list[np.ndarray] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    watched_cpu_s: float = 0.0


@dataclass
class CaseResult:
    """What a case produced: one JSON-able row per candidate."""

    case: Case
    rows: list[dict[str, Any]]
    started_load: float
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        """The case as a JSON object."""
        return {
            "workload": self.case.workload,
            "name": self.case.name,
            "num_envs": self.case.num_envs,
            "params": self.case.params,
            "references": dict(self.case.references),
            "load_at_start": round(self.started_load, 2),
            "duration_s": round(self.duration_s, 1),
            "results": self.rows,
        }


def _chunk(candidate: Candidate, steps: int) -> tuple[float, np.ndarray]:
    """Run ``steps`` steps; the wall time and every step's duration in ns."""
    durations = np.empty(steps, dtype=np.int64)
    clock = time.perf_counter_ns
    step = candidate.step
    start = clock()
    for i in range(steps):
        t0 = clock()
        step()
        durations[i] = clock() - t0
    return (clock() - start) / 1e9, durations


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _warm_up(candidate: Candidate, seconds: float) -> float:
    """Step for about ``seconds``; the mean step time it saw."""
    steps, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < seconds or steps < MIN_CHUNK_STEPS:
        candidate.step()
        steps += 1
        elapsed = time.perf_counter() - start
    return elapsed / steps


def run_case(case: Case, settings: RunSettings, log: Callable[[str], None] = lambda _: None) -> CaseResult:
    """Open the case's candidates, warm up, run the interleaved rounds, close; the result rows.

    Every candidate is closed even when one fails to open or step.
    """
    started = time.monotonic()
    load = os.getloadavg()[0]
    if case.setup is not None:
        case.setup(case)
    runs: list[CandidateRun] = []
    try:
        for candidate in case.make_candidates(case):
            log(f"  open {candidate.name}")
            candidate.open()
            runs.append(CandidateRun(candidate))
        chunk_s = settings.chunk_s * case.chunk_scale
        for run in runs:
            run.candidate.focus(True)
            mean_step = _warm_up(run.candidate, settings.warmup_s * case.chunk_scale)
            run.candidate.focus(False)
            run.chunk_steps = max(MIN_CHUNK_STEPS, round(chunk_s / max(mean_step, 1e-9)))
        watched = [psutil.Process(pid) for pid in case.watch()] if case.watch is not None else []
        for r in range(settings.rounds):
            shift = r % len(runs)
            for run in runs[shift:] + runs[:shift]:
                run.candidate.focus(True)
                cpu_before = _cpu_seconds(watched)
                elapsed, durations = _chunk(run.candidate, run.chunk_steps)
                run.watched_cpu_s += _cpu_seconds(watched) - cpu_before
                run.candidate.focus(False)
                run.rates.append(run.candidate.num_envs * run.chunk_steps / elapsed)
                run.step_ns.append(durations)
        for run in runs:
            run.memory = run.candidate.memory()
    finally:
        for run in reversed(runs):
            with contextlib.suppress(Exception):
                run.candidate.close()
    by_name = {run.candidate.name: run for run in runs}
    rows = [candidate_result_row(run, case, by_name) for run in runs]
    return CaseResult(case, rows, load, time.monotonic() - started)


def candidate_result_row(run: CandidateRun, case: Case, by_name: dict[str, CandidateRun]) -> dict[str, Any]:
    """The JSON row of one candidate: throughput, ratios, latency, overhead, memory."""
    candidate = run.candidate
    rates = np.asarray(run.rates)
    steps_per_s = float(np.median(rates))
    all_ns = np.concatenate(run.step_ns) if run.step_ns else np.zeros(1)
    ratios: dict[str, float] = {}
    for label, ref_name in case.references:
        ref = by_name.get(ref_name)
        if ref is None or ref is run:
            continue
        per_round = rates / np.asarray(ref.rates)
        ratios[label] = round(float(np.median(per_round)), 3)
    mean_step_s = candidate.num_envs / steps_per_s
    ideal = candidate.ideal_step_s
    vs_ideal = round(ideal / mean_step_s, 3) if ideal else None
    if case.ratio_to_ideal and vs_ideal is not None:
        ratios["ideal"] = vs_ideal
    return {
        "impl": candidate.name,
        "kind": candidate.kind,
        "num_envs": candidate.num_envs,
        "num_workers": candidate.num_workers,
        "steps_per_s": round(steps_per_s, 1),
        "steps_per_s_min": round(float(rates.min()), 1),
        "steps_per_s_max": round(float(rates.max()), 1),
        "rounds": len(run.rates),
        "steps_measured": int(all_ns.size),
        "ratios": ratios,
        "step_us_mean": round(mean_step_s * 1e6, 1),
        "step_us_p50": round(float(np.percentile(all_ns, 50)) / 1e3, 1),
        "step_us_p99": round(float(np.percentile(all_ns, 99)) / 1e3, 1),
        "ideal_step_us": None if ideal is None else round(ideal * 1e6, 1),
        "watched_cpu_us_per_step": round(run.watched_cpu_s / all_ns.size * 1e6, 1) if run.watched_cpu_s else None,
        "vs_ideal": vs_ideal,
        "overhead_us": None if ideal is None else round((mean_step_s - ideal) * 1e6, 1),
        **run.memory.to_json(),
        **candidate.extra,
    }


def host_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import gymnasium
    import zmq

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "pyzmq": zmq.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# -- terminal table -----------------------------------------------------------------------------

_COLUMNS: list[tuple[str, str, int]] = [
    ("case", "<", 22),
    ("impl", "<", 22),
    ("W", ">", 3),
    ("steps/s", ">", 9),
    ("ratios (median of rounds)", "<", 34),
    ("p50 µs", ">", 8),
    ("p99 µs", ">", 8),
    ("ovh µs", ">", 8),
    ("RSS/w MiB", ">", 9),
    ("RSS tot", ">", 8),
]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def format_table(cases: Sequence[dict[str, Any]]) -> list[str]:
    """The result table, one line per candidate, cases separated by a rule."""
    header = " ".join(f"{title:{align}{width}}" for title, align, width in _COLUMNS)
    lines = [header, "-" * len(header)]
    for index, case in enumerate(cases):
        if index:
            lines.append("")
        for i, row in enumerate(case["results"]):
            ratios = ", ".join(f"{value:.2f}x {label}" for label, value in row["ratios"].items())
            cells = [
                case["name"] if i == 0 else "",
                row["impl"],
                str(row["num_workers"]) if row["num_workers"] else "-",
                _num(row["steps_per_s"]),
                ratios,
                _num(row["step_us_p50"]),
                _num(row["step_us_p99"]),
                _num(row["overhead_us"]),
                _num(row["rss_max_worker_mib"], 1),
                _num(row["rss_total_mib"], 0),
            ]
            lines.append(
                " ".join(f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS, strict=True))
            )
    return lines


def write_json(path: str, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON (creating the directory)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=1)
        file.write("\n")
