"""Start-up limits of the reference server: request size, memory bounds and the control API's access.

Unlike :class:`~pool_env.refserver.faults.FaultConfig`, these are fixed when the server starts
(CLI flags of ``pool-env ref-server``); ``POST /control/faults`` cannot change them. They keep a
long-lived server (users run it for days as their test double) bounded under hostile input:

* every request body is at most ``max_body_bytes`` (413 beyond);
* a list in a request has at most ``max_num_envs`` entries (the fault switch, itself capped by
  ``num_envs_limit``);
* a slot (the stable place of an episode and its successors) or a session unused for
  ``idle_timeout_s`` is evicted; stepping an evicted id answers 404 saying so;
* one token has at most ``max_live_episodes`` live slots (409 beyond);
* ``/control`` can be switched off (404) or require ``X-Control-Token: <control_token>`` (403).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTROL_TOKEN_HEADER", "ServerLimits", "server_limits_from_options"]

CONTROL_TOKEN_HEADER = "X-Control-Token"


@dataclass(frozen=True)
class ServerLimits:
    """Limits fixed at start-up (CLI ``--max-body-bytes`` …, or ``RefServer(limits=...)``).

    Attributes:
        max_body_bytes: Largest request body accepted, in bytes (413 beyond).
        num_envs_limit: Largest value ``max_num_envs`` may take, at start or via ``/control/faults``.
        idle_timeout_s: Seconds after which an unused slot (with all its ids) or session is evicted.
        max_live_episodes: Live slots one token may hold at once (a create beyond answers 409).
        control: Whether the ``/control`` endpoints exist (False: they answer 404).
        control_token: If set, ``/control`` requests need the header ``X-Control-Token`` with it.
    """

    max_body_bytes: int = 1_048_576
    num_envs_limit: int = 1024
    idle_timeout_s: float = 3600.0
    max_live_episodes: int = 4096
    control: bool = True
    control_token: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "num_envs_limit", "max_live_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be an integer >= 1, got {value!r}")
        idle = self.idle_timeout_s
        if isinstance(idle, bool) or not isinstance(idle, int | float) or not math.isfinite(idle) or idle <= 0:
            raise ValueError(f"ServerLimits.idle_timeout_s must be a finite number > 0, got {idle!r}")
        if self.control_token is not None and not self.control_token:
            raise ValueError("ServerLimits.control_token must be non-empty (or None for no token)")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (the token is shown only as whether one is set)."""
        out = dataclasses.asdict(self)
        out["control_token"] = self.control_token is not None
        return out


def server_limits_from_options(**options: Any) -> ServerLimits:
    """Build :class:`ServerLimits` from CLI options named like its fields; None values keep defaults.

    Other names are ignored, so a whole argparse namespace can be passed.

    Raises:
        ValueError: On an invalid value.
    """
    names = {f.name for f in dataclasses.fields(ServerLimits)}
    return ServerLimits(**{k: v for k, v in options.items() if k in names and v is not None})
