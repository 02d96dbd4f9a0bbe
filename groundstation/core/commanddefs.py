"""Command definitions: what a controller may send each ship, who may send it, and how the
ground knows it worked. The schema is documented in telemetry_defs/README.md ("Commands").

One YAML file per vehicle in telemetry_defs/commands/, beside the telemetry definitions it
refers to. Two kinds of command:

- **realtime**: a real-time command uplinked to the ship (Apollo's up-data link, Soyuz's
  command radio link); the ship acts on it as it is received, if it hears the up-link.
- **procedure**: a procedure read up by voice (CAPCOM, Moscow's "Заря") for the crew to
  carry out; the crew reads it back at once and acts `crew_delay_s` later (an estimate).

Each command names its arguments and their ranges, the console positions allowed to send
it, whether it is hazardous (arm, then execute), and its verification: telemetry conditions
(a discrete's state, a value above or below a level) that must each show within their time
after the ship acts, as Yamcs's command verifiers do. A condition's parameter and state may
name the command's arguments in braces (`o2_tank{tank}_htr`), and `when` limits it to some
argument values; the loader expands every allowed combination and checks each against the
telemetry definitions.

Validation is the telemetry definitions' (groundstation/core/definitions.py): pydantic checks
the shape, then the whole file is checked against the vehicle's telemetry definition, every
problem reported at once with the file, the command and the field. Pure: the loader, the
argument checks and the conditions are used by the commanding service, the simulators, the
consoles and the drills alike.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from groundstation import paths
from groundstation.core.definitions import (
    HOUSTON_POSITIONS,
    FileProblems,
    Parameter,
    VehicleDefinition,
    _Loader,
)
from groundstation.core.presentation import MOSCOW_GROUPS

ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MOSCOW_OVERVIEW = "ОБЗОР"
MOSCOW_POSITIONS = frozenset({MOSCOW_OVERVIEW, *MOSCOW_GROUPS})
POSITIONS = HOUSTON_POSITIONS | MOSCOW_POSITIONS
# Latin spellings of the Moscow positions, for keyboards and files without Cyrillic (the
# console's --position takes the same).
POSITION_ALIASES = {"OBZOR": MOSCOW_OVERVIEW, "OVERVIEW": MOSCOW_OVERVIEW, "SOZH": "СОЖ",
                    "STR": "СТР", "SEP": "СЭП", "SUD": "СУД", "DU": "ДУ", "SSVP": "ССВП",
                    "RTS": "РТС", "SIGNAL": "Сигнализация"}
KINDS = ("realtime", "procedure")
MAX_EXPANSIONS = 64  # argument combinations a templated condition may expand to


def canonical_position(name: str) -> str | None:
    """The position a name means (FLIGHT, EECOM, СОЖ, ... ; Latin aliases and any case for
    the Houston ones), or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    text = name.strip()
    if text in POSITIONS:
        return text
    up = text.upper()
    if up in HOUSTON_POSITIONS:
        return up
    if up in POSITION_ALIASES:
        return POSITION_ALIASES[up]
    return next((p for p in MOSCOW_POSITIONS if p.casefold() == text.casefold()), None)


class CommandDefinitionError(FileProblems):
    """A command definition file is wrong."""

    what = "command definition"


class CommandArgError(ValueError):
    """A command's arguments do not fit its definition; `field` is the argument (None:
    the arguments as a whole)."""

    def __init__(self, problem: str, field: str | None = None):
        self.problem = problem
        self.field = field
        super().__init__(f"{field}: {problem}" if field else problem)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


ArgValue = bool | int | float | str


class Arg(_Model):
    """One argument of a command."""

    name: str
    type: Literal["int", "float", "enum", "bool"]
    doc: str = ""
    choices: list[int | str] | None = None  # int, enum
    min: float | None = None  # int, float
    max: float | None = None
    default: ArgValue | None = None  # without one the argument is required
    unit: str | None = None

    def check(self, value: object) -> ArgValue:
        """The value in its canonical form; CommandArgError saying what is wrong."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off"):
                return value.lower() in ("true", "on")
            raise CommandArgError(f"must be true or false, got {value!r}", self.name)
        if self.type == "enum":
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise CommandArgError(f"must be one of {self._choices_text()}, got {value!r}",
                                      self.name)
            text = str(value)
            match = next((c for c in self.choices or [] if str(c).casefold() == text.casefold()),
                         None)
            if match is None:
                raise CommandArgError(f"{value!r} is not one of {self._choices_text()}",
                                      self.name)
            return str(match)
        if isinstance(value, bool):
            raise CommandArgError(f"must be a number, got {value!r}", self.name)
        if self.type == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise CommandArgError(f"must be a whole number, got {value!r}",
                                          self.name) from None
            if not isinstance(value, int):
                raise CommandArgError(f"must be a whole number, got {value!r}", self.name)
        else:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise CommandArgError(f"must be a number, got {value!r}",
                                          self.name) from None
            if not isinstance(value, int | float):
                raise CommandArgError(f"must be a number, got {value!r}", self.name)
            value = float(value)
            if not math.isfinite(value):
                raise CommandArgError("must be a finite number", self.name)
        if self.choices is not None and value not in self.choices:
            raise CommandArgError(f"{value} is not one of {self._choices_text()}", self.name)
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and value < self.min:
            raise CommandArgError(f"{value:g}{unit} is below the minimum {self.min:g}{unit}",
                                  self.name)
        if self.max is not None and value > self.max:
            raise CommandArgError(f"{value:g}{unit} is above the maximum {self.max:g}{unit}",
                                  self.name)
        return value

    def _choices_text(self) -> str:
        return ", ".join(str(c) for c in self.choices or [])

    def values(self) -> list[ArgValue] | None:
        """Every value it can take, when there are few (bool, enum, int with choices or a
        small range); None otherwise."""
        if self.type == "bool":
            return [False, True]
        if self.choices is not None:
            return [str(c) if self.type == "enum" else c for c in self.choices]
        if self.type == "int" and self.min is not None and self.max is not None \
                and self.max - self.min < MAX_EXPANSIONS:
            return list(range(math.ceil(self.min), math.floor(self.max) + 1))
        return None

    def describe(self) -> str:
        if self.type == "bool":
            what = "true|false"
        elif self.choices is not None:
            what = "|".join(str(c) for c in self.choices)
        else:
            lo = "" if self.min is None else f"{self.min:g}"
            hi = "" if self.max is None else f"{self.max:g}"
            what = f"{self.type} {lo}..{hi}" + (f" {self.unit}" if self.unit else "")
        default = "" if self.default is None else f" (default {self.default})"
        return f"{self.name}={what}{default}"


class Condition(_Model):
    """One verification: a parameter reaching a state, or passing a level, within a time
    after the ship acts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    parameter: str
    state: str | None = None  # a discrete's state
    above: float | None = None  # a number above this (its own unit)
    below: float | None = None  # ... or below
    within_s: float = Field(gt=0)
    when: dict[str, list[ArgValue]] | None = None  # only for these argument values

    def describe(self) -> str:
        if self.state is not None:
            what = self.state
        elif self.above is not None:
            what = f"above {self.above:g}"
        else:
            what = f"below {self.below:g}"
        return f"{self.parameter} {what} within {self.within_s:g} s"

    def applies(self, args: Mapping[str, ArgValue]) -> bool:
        if not self.when:
            return True
        return all(_same(args.get(k), allowed) for k, allowed in self.when.items())

    def bind(self, args: Mapping[str, ArgValue]) -> Condition:
        """This condition with the arguments put into its parameter and state."""
        values = {k: str(v) for k, v in args.items()}
        return self.model_copy(update={
            "parameter": self.parameter.format_map(values),
            "state": None if self.state is None else self.state.format_map(values),
            "when": None})


def _same(value: object, allowed: list[ArgValue]) -> bool:
    return value is not None and any(str(value).casefold() == str(a).casefold()
                                     for a in allowed)


def holds(condition: Condition, value: float | None, parameter: Parameter | None) -> bool:
    """Whether a value (a discrete's state code, or a number in the parameter's unit)
    meets a bound condition."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    if condition.state is not None:
        if parameter is None:
            return False
        try:
            return round(value) == parameter.state_code(condition.state)
        except KeyError:
            return False
    if condition.above is not None:
        return value > condition.above
    return condition.below is not None and value < condition.below


class CommandDefinition(_Model):
    id: str
    kind: Literal["realtime", "procedure"]
    title: dict[str, str] = {}
    description: str | None = None
    subsystem: str | None = None
    positions: list[str] = Field(min_length=1)
    hazardous: bool = False  # arm, then execute
    args: list[Arg] = []
    crew_delay_s: float | None = Field(default=None, ge=0)  # procedures: readback to the act
    verify: list[Condition] = Field(min_length=1)
    source: str | None = None

    @field_validator("positions", mode="before")
    @classmethod
    def _positions(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [canonical_position(x) or x for x in v]
        return v

    @property
    def label(self) -> str:
        return self.title.get("en") or self.id

    def label_in(self, lang: str) -> str:
        return self.title.get(lang) or self.label

    @property
    def delay_s(self) -> float:
        """Seconds from the ship hearing it to acting on it: the crew's delay for a
        procedure, none for a real-time command."""
        return float(self.crew_delay_s or 0.0) if self.kind == "procedure" else 0.0

    @property
    def window_s(self) -> float:
        """The longest verification window, after the ship acts."""
        return max(c.within_s for c in self.verify)

    def check_args(self, args: Mapping[str, object] | None) -> dict[str, ArgValue]:
        """Every argument in its canonical form, defaults filled in; CommandArgError names
        the first wrong or unknown one."""
        args = dict(args or {})
        known = {a.name: a for a in self.args}
        unknown = [k for k in args if k not in known]
        if unknown:
            takes = ", ".join(a.describe() for a in self.args) or "no arguments"
            raise CommandArgError(f"{self.id} takes {takes}", unknown[0])
        out: dict[str, ArgValue] = {}
        for a in self.args:
            if a.name in args:
                out[a.name] = a.check(args[a.name])
            elif a.default is not None:
                out[a.name] = a.check(a.default)
            else:
                raise CommandArgError(f"required ({a.describe()})", a.name)
        return out

    def conditions(self, args: Mapping[str, ArgValue]) -> list[Condition]:
        """The verification conditions for these (checked) arguments, bound to them."""
        return [c.bind(args) for c in self.verify if c.applies(args)]

    def allows(self, position: str) -> bool:
        return canonical_position(position) in self.positions

    def usage(self) -> str:
        return " ".join([self.id, *(a.describe() for a in self.args)])


class VehicleCommands(_Model):
    schema_: Literal[1] = Field(alias="schema")
    vehicle: str
    source: str | None = None
    commands: list[CommandDefinition] = Field(min_length=1)
    path: str = ""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @cached_property
    def by_id(self) -> dict[str, CommandDefinition]:
        return {c.id: c for c in self.commands}

    def get(self, command: str) -> CommandDefinition | None:
        return self.by_id.get(command)

    def for_position(self, position: str | None) -> list[CommandDefinition]:
        """The commands a position may send (all of them for None)."""
        return [c for c in self.commands if position is None or c.allows(position)]


# --- loading ----------------------------------------------------------------------------------


def commands_dir() -> Path:
    """telemetry_defs/commands/: one file per vehicle."""
    return paths.defs_dir() / "commands"


def load_commands(path: str | Path, definitions: Mapping[str, VehicleDefinition]
                  ) -> VehicleCommands:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandDefinitionError(path, [("", f"cannot read the file: {exc.strerror}")]) \
            from None
    return parse_commands(text, definitions, path)


def parse_commands(text: str, definitions: Mapping[str, VehicleDefinition],
                   path: str | Path = "<string>") -> VehicleCommands:
    try:
        data = yaml.load(text, Loader=_Loader)  # ON/OFF stay strings, as in the definitions
    except yaml.YAMLError as exc:
        raise CommandDefinitionError(path, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise CommandDefinitionError(path, [("", "the file must be a mapping with 'schema', "
                                                 "'vehicle' and 'commands'")])
    try:
        vc = VehicleCommands.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise CommandDefinitionError(path, [_where_what(e, data) for e in exc.errors()]) \
            from None
    problems = _check(vc, definitions)
    if problems:
        raise CommandDefinitionError(path, problems)
    return vc


def load_all_commands(definitions: Mapping[str, VehicleDefinition],
                      directory: str | Path | None = None) -> dict[str, VehicleCommands]:
    """Every vehicle's commands in a directory (default telemetry_defs/commands/), by
    vehicle id. A missing directory is no commands at all."""
    directory = Path(directory) if directory is not None else commands_dir()
    out: dict[str, VehicleCommands] = {}
    if not directory.is_dir():
        return out
    for f in sorted(directory.glob("*.yaml")):
        vc = load_commands(f, definitions)
        if vc.vehicle in out:
            raise CommandDefinitionError(f, [("vehicle", f"{vc.vehicle!r} already has "
                                                         f"commands in {out[vc.vehicle].path}")])
        out[vc.vehicle] = vc
    return out


def _where_what(err: Any, data: dict[str, Any]) -> tuple[str, str]:
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "commands" and isinstance(loc[1], int):
        where = _command_name(data, loc[1])
        loc = loc[2:]
    field = ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in loc
                     if not str(x).startswith(("function-", "tagged-", "literal[", "union[")))
    field = field.replace(".[", "[")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against telemetry_defs/README.md)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return ": ".join(x for x in (where, field) if x), msg


def _command_name(data: dict[str, Any], index: int) -> str:
    try:
        cid = data["commands"][index].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        cid = None
    return f"command {cid!r} (commands[{index}])" if cid else f"commands[{index}]"


# --- whole-file checks ------------------------------------------------------------------------


def _check(vc: VehicleCommands, defs: Mapping[str, VehicleDefinition]
           ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    d = defs.get(vc.vehicle)
    if d is None:
        out.append(("vehicle", f"no telemetry definition for {vc.vehicle!r} (known: "
                               f"{', '.join(defs) or 'none'}): the verifications need one"))
    seen: set[str] = set()
    for i, c in enumerate(vc.commands):
        where = f"command {c.id!r} (commands[{i}])"
        if not ID_RE.match(c.id):
            out.append((f"{where}: id", "must be lower-case letters, digits and '_', starting "
                                        "with a letter"))
        if c.id in seen:
            out.append((f"{where}: id", "duplicate command id"))
        seen.add(c.id)
        out += [(f"{where}: {field}" if field else where, m) for field, m in _check_command(c, d)]
    return out


def _check_command(c: CommandDefinition, d: VehicleDefinition | None
                   ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for lang in c.title:
        if lang not in ("en", "ru"):
            out.append((f"title.{lang}", "titles are 'en' and 'ru'"))
    if "en" not in c.title:
        out.append(("title", "give at least the English title (title: {en: ...})"))
    for j, p in enumerate(c.positions):
        if p not in POSITIONS:
            out.append((f"positions[{j}]", f"{p!r} is not a console position; Houston: "
                                           f"{', '.join(sorted(HOUSTON_POSITIONS))}; Moscow: "
                                           f"{', '.join(sorted(MOSCOW_POSITIONS))}"))
    if len(set(c.positions)) != len(c.positions):
        out.append(("positions", "a position is listed twice"))
    if c.kind == "procedure" and c.crew_delay_s is None:
        out.append(("crew_delay_s", "a procedure says how long the crew takes to carry it "
                                    "out after the readback (seconds; mark it an estimate in "
                                    "'source')"))
    if c.kind == "realtime" and c.crew_delay_s is not None:
        out.append(("crew_delay_s", "a real-time command acts as the ship receives it: no "
                                    "crew delay"))
    names: set[str] = set()
    for j, a in enumerate(c.args):
        where = f"args[{j}]"
        if not ID_RE.match(a.name):
            out.append((f"{where}.name", "must be lower-case letters, digits and '_'"))
        if a.name in names:
            out.append((f"{where}.name", f"duplicate argument {a.name!r}"))
        names.add(a.name)
        out += [(f"{where}.{f}" if f else where, m) for f, m in _check_arg(a)]
    for j, cond in enumerate(c.verify):
        out += [(f"verify[{j}]" + (f".{f}" if f else ""), m)
                for f, m in _check_condition(c, cond, d)]
    return out


def _check_arg(a: Arg) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if a.type in ("bool", "float") and a.choices is not None:
        out.append(("choices", f"a {a.type} argument takes no choices"))
    if a.type == "enum":
        if not a.choices:
            out.append(("choices", "an enum argument lists its choices"))
        if a.min is not None or a.max is not None:
            out.append(("min", "an enum argument has choices, not a range"))
    if a.type == "int" and a.choices is not None \
            and any(isinstance(x, str | bool) for x in a.choices):
        out.append(("choices", "an int argument's choices are whole numbers"))
    if a.choices is not None and len({str(x).casefold() for x in a.choices}) != len(a.choices):
        out.append(("choices", "a choice is listed twice"))
    if a.min is not None and a.max is not None and a.min > a.max:
        out.append(("min", f"min {a.min:g} is above max {a.max:g}"))
    if a.type == "bool" and (a.min is not None or a.max is not None):
        out.append(("min", "a bool argument has no range"))
    if a.default is not None and not out:
        try:
            a.check(a.default)
        except CommandArgError as exc:
            out.append(("default", exc.problem))
    return out


def _template_names(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError:
        return ["{"]


def _check_condition(c: CommandDefinition, cond: Condition, d: VehicleDefinition | None
                     ) -> list[tuple[str, str]]:
    given = [k for k in ("state", "above", "below") if getattr(cond, k) is not None]
    if len(given) != 1:
        return [("", "give exactly one of state, above or below")]
    args = {a.name: a for a in c.args}
    used = _template_names(cond.parameter) + (_template_names(cond.state)
                                               if cond.state is not None else [])
    bad = [n for n in used if n not in args]
    if bad:
        return [("parameter" if bad[0] in _template_names(cond.parameter) else "state",
                 f"{{{bad[0]}}} names no argument of {c.id}"
                 + (f" (arguments: {', '.join(args)})" if args else " (it has none)"))]
    out: list[tuple[str, str]] = []
    for name, allowed in (cond.when or {}).items():
        if name not in args:
            out.append((f"when.{name}", f"{c.id} has no argument {name!r}"))
            continue
        for v in allowed:
            try:
                args[name].check(v)
            except CommandArgError as exc:
                out.append((f"when.{name}", exc.problem))
    if out:
        return out
    # Every combination of the arguments the condition names (and its `when` narrows).
    names = sorted(set(used) | set(cond.when or {}))
    pools: list[list[ArgValue]] = []
    for n in names:
        values = args[n].values()
        if values is None:
            return [("parameter", f"{{{n}}}: a templated argument needs choices or a small "
                                  "int range, so every value can be checked")]
        pools.append(values)
    combos = list(itertools.islice(itertools.product(*pools), MAX_EXPANSIONS + 1))
    if len(combos) > MAX_EXPANSIONS:
        return [("parameter", f"expands to more than {MAX_EXPANSIONS} argument combinations")]
    if d is None:
        return []
    ids = set(d.all_ids)
    applied = 0
    for combo in combos:
        bound_args = dict(zip(names, combo, strict=True))
        if not cond.applies(bound_args):
            continue
        applied += 1
        bound = cond.bind(bound_args)
        with_args = f" (with {', '.join(f'{k}={v}' for k, v in bound_args.items())})" \
            if bound_args and used else ""
        if bound.parameter not in ids:
            out.append(("parameter", f"{d.vehicle} has no parameter {bound.parameter!r}"
                                     f"{with_args}"))
            break
        p = d._by_id.get(bound.parameter)
        discrete = p is not None and p.type == "discrete"
        if discrete != (bound.state is not None):
            out.append((given[0], f"{d.vehicle}.{bound.parameter} is "
                        + ("a discrete: give its state" if discrete
                           else "not a discrete: give above or below")))
            break
        if discrete and p is not None:
            states = sorted((p.calibration.states or {}).values()) if p.calibration else []
            if bound.state not in states:
                out.append(("state", f"{bound.state!r} is not a state of {bound.parameter} "
                                     f"({', '.join(states)}){with_args}"))
                break
    if not applied and not out:
        out.append(("when", "matches no value the arguments can take"))
    return out
