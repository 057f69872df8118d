"""Parameter types more than one ``pool-env`` command uses."""

from __future__ import annotations

import click

__all__ = ["LOG_LEVEL", "PROBABILITY"]

LOG_LEVEL = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
"""A :mod:`logging` level name, any case."""

PROBABILITY = click.FloatRange(0.0, 1.0)
"""A probability: a float in [0, 1]."""
