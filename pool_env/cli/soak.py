"""``pool-env soak``: the chaos fault mix against a pool for N minutes, with a live summary and a report."""

from __future__ import annotations

import json
import sys

import click

from pool_env.cli.exits import CliError, ExitCode
from pool_env.soak import SoakReport

__all__ = ["soak"]


def _progress(report: SoakReport) -> None:
    c = report.chaos
    memory = report.memory[-1] if report.memory else {}
    faults = sum(report.ledger.get("errors_by_kind", {}).values())
    click.echo(
        f"[{memory.get('t', 0):6.0f} s] steps {c.steps:6d}  env steps {c.env_steps:7d}  slot faults {faults:5d}  "
        f"recoveries {c.recoveries:5d}  violations {c.violation_count}  "
        f"p99 {c.latency(0.99) * 1000:6.0f} ms  max {max(c.latencies, default=0.0) * 1000:6.0f} ms  "
        f"rss coordinator {memory.get('coordinator', 0):.0f} MiB, workers {memory.get('workers', 0):.0f} MiB"
    )


@click.command()
@click.option(
    "--minutes", type=click.FloatRange(min=0.0, min_open=True), default=5.0, show_default=True, help="how long to run"
)
@click.option("--daemon", is_flag=True, help="step through a pool-env serve daemon instead of an embedded pool")
@click.option("--envs", "num_envs", type=click.IntRange(min=1), default=16, show_default=True, help="env slots")
@click.option(
    "--workers", "num_workers", type=click.IntRange(min=1), default=4, show_default=True, help="worker processes"
)
@click.option("--seed", default=None, type=int, help="seed of the faults and episodes (default: random)")
@click.option(
    "--restart-every",
    type=click.FloatRange(min=0.0, min_open=True),
    default=60.0,
    show_default=True,
    help="seconds between server restarts",
)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="write the report here")
def soak(
    minutes: float,
    daemon: bool,
    num_envs: int,
    num_workers: int,
    seed: int | None,
    restart_every: float,
    json_path: str | None,
) -> None:
    """Run the chaos fault mix against a pool for MINUTES and report what happened (exit 1 on a problem)."""
    from pool_env.soak import run_soak

    if num_workers > num_envs:
        raise CliError("soak", f"--workers {num_workers} is more than --envs {num_envs}: give at most one per env")

    report = run_soak(
        minutes, daemon=daemon, num_envs=num_envs, num_workers=num_workers, seed=seed,
        restart_every=restart_every, on_progress=_progress,
    )  # fmt: skip
    document = report.to_dict()
    text = json.dumps(document, indent=2)
    if json_path is not None:
        with open(json_path, "w") as handle:
            handle.write(text + "\n")
    click.echo("\npool_env soak report")
    click.echo(text)
    sys.exit(ExitCode.OK if report.ok else ExitCode.FAILED)
