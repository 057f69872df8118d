"""Chaos runs: a DegradationEnv pool stepped under a seeded fault mix, with every batch checked
against the pool's invariants and the trainer's step ledger checked against the server's
accounting. Used by ``tests/chaos`` and by ``pool-env soak``."""

from __future__ import annotations

from pool_env.chaos.invariants import BatchChecker
from pool_env.chaos.ledger import ServerTally, StepLedger
from pool_env.chaos.run import ChaosReport, ChaosRun, FaultMix

__all__ = [
    "BatchChecker",
    "ChaosReport",
    "ChaosRun",
    "FaultMix",
    "ServerTally",
    "StepLedger",
]
