"""Daemon configuration: one frozen dataclass validated in one place, spec strings, TOML files.

A config file holds the same keys as the ``pool-env serve`` flags, under the flags' names
(dashes or underscores)::

    spec = "http://127.0.0.1:8001"
    token = "my-token"
    envs = 64
    workers = 8
    bind = "ipc:///run/user/1000/pool-env/pool.sock"
    lease-timeout = 10.0
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pool_env.config import PoolOptions
from pool_env.envs import EnvSpec, GymEnvSpec, HttpEnvSpec
from pool_env.errors import SpecError

__all__ = ["DaemonConfig", "default_runtime_dir", "load_config_file", "parse_spec"]

_OTHER_NAMES = {"num_envs": "envs", "num_workers": "workers", "log_level": "worker_log_level"}
"""Names of the Python API that a config file might use by mistake, and the flag they mean."""


def parse_spec(spec: str, token: str | None = None, step_size: int = 10) -> EnvSpec:
    """``gym:CartPole-v1`` / ``gym:package.module:make_env`` / ``http://HOST:PORT`` → an env spec.

    Raises:
        SpecError: an unknown form, or an HTTP spec without a token.
    """
    if spec.startswith("gym:"):
        return GymEnvSpec(spec[len("gym:") :])
    if spec.startswith(("http://", "https://")):
        if not token:
            raise SpecError("token: an http:// spec needs --token (or POOL_ENV_SERVE_TOKEN)")
        return HttpEnvSpec(spec, token, step_size=step_size)
    raise SpecError(f"spec: expected gym:ENV_ID or http(s)://HOST:PORT, got {spec!r}")


def default_runtime_dir() -> str:
    """Where a default ``ipc://`` socket directory goes: ``$XDG_RUNTIME_DIR`` or the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()


def load_config_file(path: str, keys: Iterable[str]) -> dict[str, Any]:
    """Read a TOML config file into ``serve`` parameter names (``lease-timeout`` → ``lease_timeout``).

    Args:
        path: the TOML file.
        keys: the valid keys (the ``serve`` flags' names, with underscores).

    Raises:
        SpecError: unreadable TOML, or unknown keys (named, with the valid ones).
    """
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"config: cannot read {path}: {exc}") from exc
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    known = set(keys)
    unknown = sorted(set(values) - known)
    if unknown:
        hints = [f"{key} -> {_OTHER_NAMES[key]}" for key in unknown if _OTHER_NAMES.get(key) in known]
        raise SpecError(
            f"config: unknown keys {unknown} in {path}"
            + (f" (rename {', '.join(hints)})" if hints else "")
            + f"; valid keys: {', '.join(sorted(known))}"
        )
    if isinstance(values.get("allow_client_key"), str):
        values["allow_client_key"] = [values["allow_client_key"]]
    return values


@dataclass(frozen=True)
class DaemonConfig:
    """Everything a :class:`~pool_env.daemon.server.PoolDaemon` needs.

    Attributes:
        spec: what each slot runs.
        num_envs: slots in the pool.
        num_workers: worker processes.
        bind: ``ipc://PATH`` or ``tcp://HOST:PORT``; ``None`` makes a private ipc socket.
        lease_timeout: seconds without a heartbeat after which a lease expires.
        stop_timeout: seconds a graceful stop waits for in-flight commands.
        curve_secret_key: the server's secret key file (``pool-env keygen``); needed for tcp.
        allow_client_keys: public key files of the clients allowed to connect (CURVE).
        metrics_port: serve Prometheus metrics on this port (``None``: off).
        metrics_host: interface of the metrics server.
        options: the pool's worker options.
        log_level: log level of the worker processes.
    """

    spec: EnvSpec
    num_envs: int = 16
    num_workers: int = 2
    bind: str | None = None
    lease_timeout: float = 10.0
    stop_timeout: float = 10.0
    curve_secret_key: str | None = None
    allow_client_keys: tuple[str, ...] = ()
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    options: PoolOptions = field(default_factory=PoolOptions)
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        def require(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise SpecError(f"{name}: {message}")

        require(
            not self.spec.carries_code,
            "spec",
            f"a daemon runs env specs, not pickled callables ({self.spec.kind!r}); its workers never unpickle",
        )
        require(isinstance(self.num_envs, int) and self.num_envs >= 1, "envs", f"must be >= 1, got {self.num_envs}")
        require(
            isinstance(self.num_workers, int) and 1 <= self.num_workers <= self.num_envs,
            "workers",
            f"must be 1..envs={self.num_envs}, got {self.num_workers}",
        )
        require(self.lease_timeout > 0, "lease_timeout", f"must be > 0, got {self.lease_timeout}")
        require(self.stop_timeout >= 0, "stop_timeout", f"must be >= 0, got {self.stop_timeout}")
        bind = self.bind
        require(
            bind is None or bind.startswith(("ipc://", "tcp://")),
            "bind",
            f"must be ipc://PATH or tcp://HOST:PORT, got {bind!r}"
            + (f" (for a socket file: ipc://{bind})" if bind is not None and bind.startswith("/") else ""),
        )
        if bind is not None and bind.startswith("tcp://"):
            require(
                self.curve_secret_key is not None and bool(self.allow_client_keys),
                "bind",
                "tcp:// needs CURVE encryption: pass --curve-secret-key FILE and at least one "
                "--allow-client-key FILE (make keys with `pool-env keygen`)",
            )
        if self.allow_client_keys and self.curve_secret_key is None:
            raise SpecError("curve_secret_key: --allow-client-key needs --curve-secret-key")
        require(self.metrics_port is None or 0 <= self.metrics_port < 65536, "metrics_port", "must be a TCP port")

    @property
    def curve(self) -> bool:
        """Whether the client socket uses CURVE."""
        return self.curve_secret_key is not None
