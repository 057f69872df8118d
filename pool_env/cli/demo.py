"""``pool-env demo``: DegradationEnv episodes against the bundled reference server, with light faults."""

from __future__ import annotations

import sys

import click

from pool_env.cli.exits import CliError, ExitCode
from pool_env.cli.options import PROBABILITY
from pool_env.errors import PoolEnvError

__all__ = ["demo"]


@click.command()
@click.option("--envs", "num_envs", type=click.IntRange(min=1), default=16, show_default=True, help="env slots")
@click.option("--workers", "num_workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="worker processes (at most --envs)")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="pool steps to run")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="seed of episodes and faults")
@click.option("--p-episode-error", type=PROBABILITY, default=0.01, show_default=True,
              help="server per-env error probability, in [0, 1]")  # fmt: skip
@click.option("--latency-ms", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="latency the server adds per request")  # fmt: skip
@click.option("--no-kill", is_flag=True, help="do not kill a worker half way")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def demo(
    num_envs: int,
    num_workers: int,
    steps: int,
    seed: int,
    p_episode_error: float,
    latency_ms: float,
    no_kill: bool,
    no_progress: bool,
) -> None:
    """Step DegradationEnv episodes against the bundled reference server, with light faults.

    Exit code 1 when the run left a process or a shared-memory segment behind.
    """
    if num_workers > num_envs:
        raise CliError("demo", f"--workers {num_workers} is more than --envs {num_envs}: give at most one per env")
    from pool_env.demo import run_demo

    try:
        summary = run_demo(
            num_envs,
            num_workers,
            steps,
            seed,
            faults={"p_episode_error": p_episode_error, "latency_ms": latency_ms},
            kill_worker_at=None if no_kill else 0.5,
            progress=not no_progress,
        )
    except PoolEnvError as exc:
        raise CliError("demo", str(exc)) from exc
    click.echo("\npool_env demo summary")
    for line in summary.lines():
        click.echo(f"  {line}")
    if summary.leaked_processes or summary.leaked_segments:
        sys.exit(ExitCode.FAILED)
