"""What the DegradationEnv is: its observation fields, its actions, its fixed rewards.

The one home of these facts (PROTOCOL.md §8): the HTTP env kind, the reference server, the chaos
run, the demo and the challenge-client shim all read them from here. Plain constants, no imports,
so that an HTTP worker and the reference server pay nothing for them.
"""

from __future__ import annotations

import enum

__all__ = [
    "ACTIONS",
    "FAILURE_REWARD",
    "FLY",
    "NUM_ACTIONS",
    "OBS_FIELDS",
    "OBS_FIELD_NAMES",
    "REPAIR",
    "SELL",
    "SELL_REWARD",
    "Action",
]


class Action(enum.IntEnum):
    """The three actions of a decision step; the value is what the server receives."""

    FLY = 0
    """Fly the engine for the whole step."""
    REPAIR = 1
    """Repair the engine on the step's first flight, then fly the rest."""
    SELL = 2
    """Retire the engine for :data:`SELL_REWARD`; ends the episode (terminated)."""


FLY, REPAIR, SELL = Action.FLY, Action.REPAIR, Action.SELL
ACTIONS = tuple(Action)
NUM_ACTIONS = len(ACTIONS)
"""The size of the action space, ``Discrete(3)``."""

OBS_FIELD_NAMES = (
    "HPC_Tout",
    "HP_Nmech",
    "HPC_Tin",
    "LPT_Tin",
    "Fuel_flow",
    "HPC_Pout_st",
    "LP_Nmech",
    "phase_type",
    "DTAMB",
)
"""The values of one flight's observation row, in order: 7 sensors, the phase, the ambient deviation."""
OBS_FIELDS = len(OBS_FIELD_NAMES)
"""Values per flight in an observation row (9)."""

SELL_REWARD = 150.0
"""The reward of a sale (exactly, on every live server since March)."""
FAILURE_REWARD = -1000.0
"""The reward of the step in which the engine fails (the episode terminates)."""
