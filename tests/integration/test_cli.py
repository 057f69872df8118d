"""``pool-env`` as users run it: every error one line with exit code 2, config files, keygen, --ready-json."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pool_env.daemon.child import ServeProcess
from tests.integration.daemon_process import cli

pytestmark = pytest.mark.timeout(90)

SERVE_CONFIG = 'spec = "gym:CartPole-v1"\nenvs = 4\nworkers = 1\n'
"""A user's config file (the ``serve_config.toml`` case): silently 16 slots on 2 workers before."""


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code 2, one line on stderr naming every needle, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_ARGUMENTS = [
    (("demo", "--envs", "0"), ("--envs", "0 is not in the range x>=1")),
    (("demo", "--envs", "2", "--workers", "3"), ("--workers 3 is more than --envs 2",)),
    (("demo", "--p-episode-error", "1.5"), ("--p-episode-error", "0.0<=x<=1.0")),
    (("demo", "--p-episode-error", "-0.1"), ("--p-episode-error", "0.0<=x<=1.0")),
    (("--log-level", "LOUD", "demo"), ("--log-level", "'LOUD' is not one of")),
    (("serve", "--spec", "gym:CartPole-v1", "--worker-log-level", "chatty"), ("--worker-log-level",)),
    (("serve", "--spec", "gym:CartPole-v1", "--bind", "/tmp/pool.sock"), ("ipc:///tmp/pool.sock",)),
    (("serve", "--spec", "gym:CartPole-v1", "--envs", "2", "--workers", "3"), ("workers", "must be 1..envs=2")),
    (("status", "tcp://127.0.0.1:5555"), ("needs CURVE keys", "--server-key", "--client-secret-key")),
    (("soak", "--envs", "2", "--workers", "3"), ("--workers 3 is more than --envs 2",)),
    (("serve", "--spec", "gym:CartPole-v1", "--bind", "ipc:///proc/nope/x.sock"), ("/proc/nope", "choose an ipc path")),
    (("ref-server", "--port", "99999"), ("--port", "99999 is not in the range 0<=x<=65535")),
    (("ref-server", "--p-http-500", "1.5"), ("--p-http-500", "0.0<=x<=1.0")),
]


@pytest.mark.parametrize(("args", "needles"), BAD_ARGUMENTS, ids=[" ".join(args) for args, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_one_line_and_exit_code_2(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_one_line_error(cli(*args), *needles)


def test_a_busy_metrics_port_is_one_line_and_the_pool_it_started_is_gone() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli("serve", "--spec", "gym:CartPole-v1", "--envs", "2", "--workers", "1", "--metrics-port", str(port))
    assert_one_line_error(result, f"127.0.0.1:{port}", "--metrics-port")  # no_leaks: no worker, segment or socket


def test_a_busy_ref_server_port_is_one_line_and_exit_code_2() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli("ref-server", "--port", str(port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "Address already in use", "--port")


@pytest.mark.parametrize("command", ["demo", "serve", "status", "keygen", "ref-server", "bench", "soak"])
def test_every_command_help_has_the_same_click_usage_line(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: python -m pool_env.cli {command} [OPTIONS]"), result.stdout[:200]
    assert "-h, --help" in result.stdout


def test_serve_banner_says_1_worker_not_1_workers(tmp_path: Path) -> None:
    bind = f"ipc://{tmp_path}/pool.sock"
    args = ["--spec", "gym:CartPole-v1", "--envs", "1", "--workers", "1", "--bind", bind, "--stop-timeout", "2"]
    with subprocess.Popen(
        [sys.executable, "-m", "pool_env.cli", "serve", *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()  # the banner is printed once the daemon serves
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert banner.startswith(f"pool-env daemon serving {bind} "), banner
    assert banner.rstrip().endswith("1 slot, 1 worker)"), banner


def test_serve_config_file_is_honoured_under_the_flags_names(tmp_path: Path) -> None:
    config = tmp_path / "serve_config.toml"
    config.write_text(SERVE_CONFIG)
    with ServeProcess(["--config", str(config), "--stop-timeout", "2"]) as daemon:
        document = json.loads(cli("status", "--json", daemon.endpoint).stdout)
    assert (document["num_envs"], document["num_workers"]) == (4, 1)
    assert len(document["workers"]) == 1


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text('spec = "gym:CartPole-v1"\nenvs = 4\nworkers = 1\nlease-timeout = 3.0\n')
    with ServeProcess(["--config", str(config), "--envs", "2"]) as daemon:
        document = json.loads(cli("status", "--json", daemon.endpoint).stdout)
    assert (document["num_envs"], document["num_workers"]) == (2, 1)


def test_unknown_config_keys_are_an_error_naming_the_valid_ones(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text('spec = "gym:CartPole-v1"\nnum_envs = 4\ncolour = "red"\n')
    result = cli("serve", "--config", str(config))
    assert_one_line_error(result, "unknown keys ['colour', 'num_envs']", "rename num_envs -> envs", "valid keys:")
    valid = result.stderr.split("valid keys:")[1]
    for key in ("envs", "workers", "lease_timeout", "worker_log_level", "spec", "bind", "metrics_port"):
        assert key in valid


def test_keygen_refuses_to_overwrite_keys_unless_forced(tmp_path: Path) -> None:
    assert cli("keygen", "server", "--dir", str(tmp_path)).returncode == 0
    public = (tmp_path / "server.key").read_text()
    secret = (tmp_path / "server.key_secret").read_text()

    refused = cli("keygen", "server", "--dir", str(tmp_path))

    assert_one_line_error(refused, "already exist", "--force")
    assert (tmp_path / "server.key").read_text() == public
    assert (tmp_path / "server.key_secret").read_text() == secret
    forced = cli("keygen", "server", "--dir", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "server.key").read_text() != public


def test_ready_json_is_one_machine_line_and_stop_is_clean() -> None:
    daemon = ServeProcess(["--spec", "gym:CartPole-v1", "--envs", "2", "--workers", "1"])
    with daemon:
        assert daemon.endpoint.startswith("ipc://")
        assert cli("status", daemon.endpoint).returncode == 0
    assert daemon.process is not None and daemon.process.returncode == 0
