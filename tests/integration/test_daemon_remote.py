"""Daemons across "hosts": tcp with CURVE (accept, refuse), several endpoints, an HTTP env server."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pool_env
from pool_env import GymEnvSpec
from pool_env.refserver.process import RefServer, free_port
from tests.conditions import wait_until
from tests.integration.daemon_process import DaemonProcess, cli
from tests.integration.reference import assert_same, make_reference

pytestmark = pytest.mark.timeout(60)

CARTPOLE = GymEnvSpec("CartPole-v1")
FIELDS = ("obs", "reward", "terminated", "truncated", "infos")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("server", "trainer", "stranger"):
        result = cli("keygen", name, "--dir", str(directory))
        assert result.returncode == 0, result.stderr
    assert (os.stat(directory / "trainer.key_secret").st_mode & 0o777) == 0o600
    return directory


@pytest.fixture(scope="module")
def tcp_daemon(keys: Path) -> Iterator[DaemonProcess]:
    bind = f"tcp://127.0.0.1:{free_port()}"
    extra = ("--curve-secret-key", str(keys / "server.key_secret"), "--allow-client-key", str(keys / "trainer.key"))
    with DaemonProcess(envs=3, workers=1, bind=bind, extra=extra) as process:
        yield process


def test_an_allowed_client_key_steps_over_tcp_with_sync_vector_env_results(
    tcp_daemon: DaemonProcess, keys: Path
) -> None:
    with (
        pool_env.connect(
            tcp_daemon.endpoint, num_envs=3, server_key=str(keys / "server.key"),
            client_secret_key=str(keys / "trainer.key_secret"),
        ) as env,
        contextlib.closing(make_reference(CARTPOLE, 3)) as ref,
    ):  # fmt: skip
        assert env._sessions[0].buffers is None  # arrays travel as frames across hosts
        assert_same(env.reset(seed=3)[0], ref.reset(seed=3)[0], "reset obs")
        rng = np.random.default_rng(0)
        for t in range(60):
            actions = rng.integers(0, 2, 3)
            for name, got, want in zip(FIELDS, env.step(actions), ref.step(actions), strict=True):
                assert_same(got, want, f"step {t} {name}")
        status = cli(
            "status", tcp_daemon.endpoint, "--json", "--server-key", str(keys / "server.key"),
            "--client-secret-key", str(keys / "trainer.key_secret"),
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert len(json.loads(status.stdout)["leases"]) == 1


def test_an_unknown_client_key_is_refused_with_a_clear_error_not_a_hang(tcp_daemon: DaemonProcess, keys: Path) -> None:
    started = time.monotonic()
    with pytest.raises(pool_env.DaemonUnavailableError, match="refused this client"):
        pool_env.connect(
            tcp_daemon.endpoint, num_envs=1, handshake_timeout=1.0, server_key=str(keys / "server.key"),
            client_secret_key=str(keys / "stranger.key_secret"),
        )  # fmt: skip
    assert time.monotonic() - started < 3.0
    wait_until(lambda: "not on the allow-list" in tcp_daemon.log(), 5.0, "the daemon logs the refusal")


def test_tcp_without_curve_keys_is_refused_by_both_sides(keys: Path) -> None:
    result = cli("serve", "--spec", "gym:CartPole-v1", "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "tcp:// needs CURVE" in result.stderr
    with pytest.raises(pool_env.SpecError, match="needs CURVE keys"):
        pool_env.connect("tcp://127.0.0.1:1", num_envs=1)


def test_one_vector_env_over_slots_of_two_daemons(tmp_path: Path) -> None:
    metrics_port = free_port()
    config = tmp_path / "second.toml"
    config.write_text(f"metrics-port = {metrics_port}\nstop_timeout = 3.0\n")  # config file keys, like the flags
    with (
        DaemonProcess(envs=3, workers=1) as first,
        DaemonProcess(envs=2, workers=1, extra=("--config", str(config))) as second,
        pool_env.connect([first.endpoint, second.endpoint], num_envs=[3, 2], shared_memory=False) as env,
        contextlib.closing(make_reference(CARTPOLE, 5)) as ref,
    ):
        assert env.num_envs == 5
        got, want = env.reset(seed=7), ref.reset(seed=7)  # seeds 7..11 run across both daemons
        assert_same(got[0], want[0], "reset obs")
        rng = np.random.default_rng(1)
        for t in range(120):
            actions = rng.integers(0, 2, 5)
            for name, actual, expected in zip(FIELDS, env.step(actions), ref.step(actions), strict=True):
                assert_same(actual, expected, f"step {t} {name}")
        assert len(env.stats()["daemons"]) == 2
        metrics = wait_until(
            lambda: next((text for text in [scrape(metrics_port)] if "pool_env_leases 1.0" in text), ""),
            5.0,
            "the exporter shows the lease (it refreshes once a second)",
        )
        assert "pool_env_worker_steps_per_second" in metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_a_daemon_over_the_reference_http_server() -> None:
    with (
        RefServer() as server,
        DaemonProcess(
            spec=server.url, envs=4, workers=2, extra=("--token", "daemon-test", "--step-size", "5")
        ) as daemon,
        pool_env.connect(daemon.endpoint, num_envs=4) as env,
    ):
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 9) and obs.dtype == np.float32
        for _ in range(5):
            obs, reward, _, _, infos = env.step(np.ones(4, dtype=np.int64))
            assert np.isfinite(obs).all() and reward.shape == (4,)
            assert "error" not in infos
