"""``pool-env bench``: the benchmark suite (:mod:`pool_env.bench`) against gymnasium's vector envs.

A thin shell over :mod:`pool_env.bench.harness` and :mod:`pool_env.bench.workloads`; the method is
described in :mod:`pool_env.bench.harness`. Never part of the test suite's pass/fail.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

import click

from pool_env.cli.exits import CliError, ExitCode

__all__ = ["bench"]


def _workloads(value: str) -> list[str]:
    chosen = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set("abcd"))
    if unknown or not chosen:
        raise click.BadParameter(f"expected a comma-separated subset of a,b,c,d, got {value!r}")
    return chosen


def _command_line(workload: str, quick: bool, rounds: int | None, chunk_s: float | None, per_env_ms: float) -> str:
    parts = ["pool-env", "bench", "--workload", workload]
    parts += ["--quick"] if quick else []
    parts += ["--rounds", str(rounds)] if rounds is not None else []
    parts += ["--chunk-s", f"{chunk_s:g}"] if chunk_s is not None else []
    return " ".join([*parts, "--per-env-ms", f"{per_env_ms:g}"])


@click.command("bench")
@click.option(
    "--workload",
    "workload",
    default="a,b,c,d",
    show_default=True,
    help="workloads to run: a CartPole, b reference server, c 84x84x4 obs, d raw floor",
)
@click.option("--quick", is_flag=True, help="tiny sizes, ~10-20 s (a smoke run, not a measurement)")
@click.option("--rounds", type=click.IntRange(1), default=None, help="interleaved rounds per case [7; quick 2]")
@click.option(
    "--chunk-s",
    type=click.FloatRange(min=0.001),
    default=None,
    help="seconds per candidate per round [0.25; quick 0.03]",
)
@click.option(
    "--per-env-ms",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="(b) the server's cost per env entry of a request",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="write the results here")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="write a PNG of steps/s vs num_envs (needs the [bench] extra: matplotlib)",
)
@click.option("--quiet", is_flag=True, help="no progress lines")
def bench(
    workload: str,
    quick: bool,
    rounds: int | None,
    chunk_s: float | None,
    per_env_ms: float,
    json_path: str | None,
    plot_path: str | None,
    quiet: bool,
) -> None:
    """Benchmark PoolVectorEnv against gymnasium's Sync/AsyncVectorEnv, the challenge client's
    pattern and the raw IPC floor; print a table of medians and ratios."""
    from pool_env.bench.busy import BUSY_CORES, LOADED_AVERAGE, ForeignCpu
    from pool_env.bench.goals import IDLE_SECONDS, evaluate_goals, measure_idle_cpu
    from pool_env.bench.harness import RunSettings, format_table, host_info, run_case, write_json
    from pool_env.bench.workloads import Sizes, Suite, evaluate_targets

    chosen = _workloads(workload)
    settings = RunSettings(
        rounds=rounds if rounds is not None else (2 if quick else 7),
        chunk_s=chunk_s if chunk_s is not None else (0.03 if quick else 0.25),
        warmup_s=0.03 if quick else 0.3,
        quick=quick,
    )

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    started, started_at = time.monotonic(), datetime.datetime.now(datetime.UTC)
    foreign = ForeignCpu()
    host = host_info()
    progress(f"pool-env bench: workloads {','.join(chosen)}, {settings.rounds} rounds, load {host['loadavg']}")
    cases: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    with Suite(chosen, Sizes(quick, per_env_ms)) as suite:
        for case in suite.cases():
            progress(f"[{case.workload}] {case.name}")
            try:
                result = run_case(case, settings, progress)
            except Exception as exc:  # one broken case must not lose the others' results
                progress(f"  FAILED: {type(exc).__name__}: {exc}")
                failures.append({"workload": case.workload, "name": case.name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            cases.append(result.to_json())
    targets = evaluate_targets(cases)
    idle = None
    if "a" in chosen:
        progress("[idle] CPU of a pool the trainer does not call")
        idle = measure_idle_cpu(seconds=1.0 if quick else IDLE_SECONDS)
    goals = evaluate_goals(cases, idle)
    report: dict[str, Any] = {
        "meta": {
            "command": _command_line(workload, quick, rounds, chunk_s, per_env_ms),
            "started": started_at.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - started, 1),
            "settings": {
                "rounds": settings.rounds,
                "chunk_s": settings.chunk_s,
                "warmup_s": settings.warmup_s,
                "quick": quick,
                "workloads": chosen,
                "per_env_ms": per_env_ms,
            },
            "host": host,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cores": round(foreign.cores(), 3),
        },
        "cases": cases,
        "failed_cases": failures,
        "targets": targets,
        "idle": idle,
        "goals": goals,
    }
    click.echo("")
    for line in format_table(cases):
        click.echo(line)
    click.echo("\nissue-13 goals (ratios measured in this run)")
    for goal in goals:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[goal["met"]]
        measured = "-" if goal["measured"] is None else f"{goal['measured']:g}"
        click.echo(f"  {verdict:<8} {goal['goal']}: {measured} (goal {goal['target']})")
    other = report["meta"]["other_processes_cores"]
    if host["loadavg"][0] >= LOADED_AVERAGE or other >= BUSY_CORES:
        click.echo(
            f"  (measured on a loaded machine: load average {host['loadavg'][0]} at the start, other processes "
            f"busy {other:.2f} cores during the run; limits {LOADED_AVERAGE}, {BUSY_CORES}: ratios are less reliable)"
        )
    click.echo(
        f"\n{report['meta']['duration_s']} s; load {host['loadavg']} -> {report['meta']['loadavg_end']} "
        f"(the end counts this run's own processes); other processes: {other:.2f} cores on average"
    )
    for failure in failures:
        click.echo(f"FAILED case {failure['name']}: {failure['error']}")
    if json_path is not None:
        write_json(json_path, report)
        click.echo(f"wrote {json_path}")
    if plot_path is not None:
        from pool_env.bench.plot import write_plot

        try:
            write_plot(cases, plot_path, goals)
        except RuntimeError as exc:
            raise CliError("bench", str(exc)) from exc
        click.echo(f"wrote {plot_path}")
    if failures:
        raise SystemExit(ExitCode.FAILED)
