"""Who may command: the operators file (TOML), mapping each operator (the MQTT user name the
broker authenticates) to the console positions they hold.

    [operators]
    eecom = ["EECOM"]
    flight = ["FLIGHT", "CAPCOM"]
    sozh = ["SOZH"]          # Latin spellings of the Moscow positions are accepted

The shipped file is deploy/commanding/operators.toml. Every problem in the file is reported
at once, naming the operator.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from groundstation.core import fleet
from groundstation.core.commanddefs import POSITIONS, canonical_position
from groundstation.core.definitions import FileProblems
from groundstation.core.topics import check_level

# Accounts that are never operators: the vehicles and the services (and the vehicles'
# fleet members, groundstation.core.fleet).
NOT_OPERATORS = frozenset({"apollo_csm", "soyuz", "ingest", "replay", "commanding"})


class OperatorsError(FileProblems):
    what = "operators file"


@dataclass(frozen=True)
class Operators:
    positions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    path: str = ""

    def of(self, operator: str) -> tuple[str, ...] | None:
        """The positions an operator holds; None for someone who is no operator."""
        return self.positions.get(operator)


def parse_operators(data: object, path: str | Path = "<operators>") -> Operators:
    problems: list[tuple[str, str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("operators"), dict):
        raise OperatorsError(path, [("", "the file needs an [operators] table: name = "
                                         "[\"POSITION\", ...]")])
    extra = sorted(set(data) - {"operators"})
    if extra:
        problems.append((extra[0], "unknown table (the file has [operators] only)"))
    out: dict[str, tuple[str, ...]] = {}
    for name, positions in data["operators"].items():
        where = f"operator {name!r}"
        try:
            check_level("operator", name)
        except ValueError as exc:
            problems.append((where, str(exc)))
            continue
        if name in NOT_OPERATORS or fleet.base_of(name) in NOT_OPERATORS:
            problems.append((where, f"{name} is a vehicle or a service account, never an "
                                    "operator"))
            continue
        if not isinstance(positions, list) or not all(isinstance(p, str) for p in positions):
            problems.append((where, "give a list of positions, e.g. [\"EECOM\"]"))
            continue
        held = []
        for p in positions:
            c = canonical_position(p)
            if c is None:
                problems.append((where, f"{p!r} is not a console position (known: "
                                        f"{', '.join(sorted(POSITIONS))})"))
            elif c not in held:
                held.append(c)
        out[name] = tuple(held)
    if problems:
        raise OperatorsError(path, problems)
    return Operators(out, str(path))


def load_operators(path: str | Path) -> Operators:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise OperatorsError(path, [("", f"cannot read the file: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise OperatorsError(path, [("", f"not valid TOML: {exc}")]) from None
    return parse_operators(data, path)
