"""`groundstation sim`: fly the simulated ships (the simulators' own command line)."""

from __future__ import annotations

from simulators.cli import add_parser, run

__all__ = ["add_parser", "run"]
