"""``pool-env``: the command line, a thin shell over the Python API.

Every option can also come from an environment variable ``POOL_ENV_<COMMAND>_<OPTION>``
(e.g. ``POOL_ENV_DEMO_ENVS=32``).
"""

from __future__ import annotations

import logging
import sys

import click

from pool_env.bench_cli import bench

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1


@click.group(context_settings={"auto_envvar_prefix": "POOL_ENV", "help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="WARNING", show_default=True, help="logging level")
def main(log_level: str) -> None:
    """pool_env: many RL env episodes in parallel behind one self-healing vector env."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--envs", "num_envs", default=16, show_default=True, help="env slots in the pool")
@click.option("--workers", "num_workers", default=4, show_default=True, help="worker processes")
@click.option("--steps", default=300, show_default=True, help="pool steps to run")
@click.option("--seed", default=0, show_default=True, help="seed of the episodes and of the faults")
@click.option("--p-episode-error", default=0.01, show_default=True, help="server per-env error probability")
@click.option("--latency-ms", default=2.0, show_default=True, help="latency the server adds per request")
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
    """Step DegradationEnv episodes against the bundled reference server, with light faults."""
    from pool_env.demo import run_demo

    summary = run_demo(
        num_envs,
        num_workers,
        steps,
        seed,
        faults={"p_episode_error": p_episode_error, "latency_ms": latency_ms},
        kill_worker_at=None if no_kill else 0.5,
        progress=not no_progress,
    )
    click.echo("\npool_env demo summary")
    for line in summary.lines():
        click.echo(f"  {line}")
    if summary.leaked_processes or summary.leaked_segments:
        sys.exit(EXIT_FAILED)


@main.command(
    "ref-server",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def ref_server(ctx: click.Context) -> None:
    """Run the reference DegradationEnv server (flags: ``pool-env ref-server --help``)."""
    from pool_env.refserver.serve import main as serve_main

    serve_main(ctx.args)


main.add_command(bench)


from pool_env.daemon_cli import keygen, serve, status  # noqa: E402 - registered on the group above

main.add_command(serve)
main.add_command(status)
main.add_command(keygen)

from pool_env.soak_cli import soak  # noqa: E402 - registered on the group above

main.add_command(soak)

if __name__ == "__main__":  # pragma: no cover
    main()
