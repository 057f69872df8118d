"""Env kinds: one module per kind, behind one protocol and one registry.

* :mod:`~pool_env.envs.base` — :class:`EnvSpec`, what every kind provides (wire form, spaces,
  default worker count, start-up check, worker backend), and :class:`Probe`;
* :mod:`~pool_env.envs.http` — :class:`HttpEnvSpec`, DegradationEnv episodes over HTTP;
* :mod:`~pool_env.envs.gym` — :class:`GymEnvSpec`, a local gymnasium env by id or import string;
* :mod:`~pool_env.envs.callables` — :class:`EnvFnsSpec`, one factory per slot (``env_fns``);
* :mod:`~pool_env.envs.degradation` — the DegradationEnv's fields, actions and fixed rewards;
* :mod:`~pool_env.envs.registry` — the kinds by wire name, :func:`spec_from_wire`.

Importing this package imports neither gymnasium nor requests.
"""

from __future__ import annotations

from pool_env.envs.base import EnvSpec, Probe
from pool_env.envs.callables import EnvFnsSpec
from pool_env.envs.gym import GymEnvSpec
from pool_env.envs.http import HttpEnvSpec
from pool_env.envs.registry import KINDS, is_spec, spec_from_wire

__all__ = ["KINDS", "EnvFnsSpec", "EnvSpec", "GymEnvSpec", "HttpEnvSpec", "Probe", "is_spec", "spec_from_wire"]
