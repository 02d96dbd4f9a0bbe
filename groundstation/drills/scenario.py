"""Drill scenarios: YAML files that say where in the mission a training drill starts, which
faults are injected when, which alarms each fault must raise, and how long the trainee has
to acknowledge them. The schema is documented in simulators/scenarios/README.md.

Validation is in two passes, like the telemetry definitions (groundstation/core/definitions.py):
pydantic checks the shape, then the whole file is checked against the mission (times inside
the ships' missions), the simulators' fault catalogue (names, parameters, values: the same
FaultManager.validate the simulators use, so a scenario that loads will inject) and the
telemetry definitions (parameter ids, that the expected severity has a limit to raise it).
Every problem is reported with the file, the fault and the field, all at once.

Closed-loop drills: `actions` lists what the trainees are expected to do (a command or a
procedure of the command definitions, telemetry_defs/commands/, by when, from which
position) and the effect it must have on the ship's telemetry; `harmful` lists commands
that hurt the ship in this drill; an expected alarm that the right action prevents names it
in `prevented_by`. Checked against the command definitions as the faults are against the
simulators' catalogue.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from groundstation.core import flightplan as tl
from groundstation.core.commanddefs import (
    CommandArgError,
    VehicleCommands,
    canonical_position,
    load_all_commands,
)
from groundstation.core.definitions import FileProblems, VehicleDefinition, load_all
from groundstation.core.mission_time import EARLIEST_GET, format_get, parse_duration
from groundstation.paths import scenarios_dir
from simulators.faults import CATALOGUE, FaultError, FaultManager

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHIP_ALIASES = {"apollo": tl.APOLLO, "apollo_csm": tl.APOLLO, "soyuz": tl.SOYUZ}
SEVERITY_RANK = {"yellow": 1, "red": 2}


class ScenarioError(FileProblems):
    """A scenario file is wrong."""

    what = "drill scenario"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


Duration = float | int | str


def _vehicle(v: Any) -> Any:
    if isinstance(v, str):
        return SHIP_ALIASES.get(v.strip().lower(), v)
    return v


class Expect(_Model):
    """An alarm a fault must raise."""

    parameter: str
    vehicle: str | None = None  # default: the fault's vehicle
    severity: Literal["yellow", "red"] = "yellow"  # at least this severe
    within_s: float = Field(gt=0)  # after the injection, mission seconds
    ack_within_s: float | None = Field(default=None, gt=0)  # default: the scenario's
    weight: float = Field(default=1.0, gt=0)
    # Expected actions (ids) whose taking stops this alarm from coming: not raised after
    # one of them was carried out, it is "prevented", not "missed by the system".
    prevented_by: list[str] = []

    _norm = field_validator("vehicle", mode="before")(_vehicle)


class Cue(_Model):
    """Something the telemetry shows that a call rests on: a discrete in a state, or a value
    above or below a level (in the parameter's own unit)."""

    parameter: str
    vehicle: str | None = None  # default: the fault's vehicle
    state: str | None = None
    above: float | None = None
    below: float | None = None

    _norm = field_validator("vehicle", mode="before")(_vehicle)

    def describe(self) -> str:
        if self.state is not None:
            return f"{self.parameter} {self.state}"
        if self.above is not None:
            return f"{self.parameter} above {self.above:g}"
        return f"{self.parameter} below {self.below:g}"


class Call(_Model):
    """A call the trainee should make on cues that raise no alarm, and by when: the offline
    flight checks that every cue shows within `within_s` of the fault's injection. Trainees
    make calls with the console's call key; the debrief scores the first call after the
    injection whose text has each of `keywords` (an entry "rcs|рсу" takes either word; no
    keywords: any call) as an expected action is scored: in time, late or missing."""

    call: str
    fault: str | None = None  # the fault id it answers (default: the scenario's only fault)
    within_s: float = Field(gt=0)
    cues: list[Cue] = Field(min_length=1)
    keywords: list[str] = []  # what a made call must say (case-insensitive), each or-ed by |
    weight: float = Field(default=1.0, gt=0)

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        for k in v:
            if not any(w.strip() for w in k.split("|")):
                raise ValueError(f"keyword {k!r} is empty")
        return v

    def matches(self, text: str) -> bool:
        """Whether a call made in these words answers this one."""
        said = " ".join(text.casefold().split())
        return all(any(w.strip().casefold() in said for w in k.split("|") if w.strip())
                   for k in self.keywords)


class Effect(Cue):
    """What the telemetry shows once an action is carried out: within `within_s` of the
    ship acting (the crew's delay counted), and with `hold`, at every sample from then to
    the end of the drill."""

    within_s: float = Field(default=0.0, ge=0)
    hold: bool = False

    def describe(self) -> str:
        return (super().describe() + (f" within {self.within_s:g} s" if self.within_s else "")
                + (" to the end" if self.hold else ""))


class Action(_Model):
    """A command or procedure the trainees are expected to send, by when, from which
    position, and what it must do to the ship."""

    id: str
    command: str  # a command id of the vehicle's command definitions
    fault: str | None = None  # the fault it answers (default: the only fault)
    vehicle: str | None = None  # default: the fault's
    args: dict[str, Any] = {}  # the arguments that must match (others are free)
    position: str | None = None  # who must send it (default: any the command allows)
    within_s: float = Field(gt=0)  # sent at most this long after the fault's injection
    weight: float = Field(default=1.0, gt=0)
    effect: list[Effect] = []  # checked by drill check --fly: the action at its due time
    note: str | None = None

    _norm = field_validator("vehicle", mode="before")(_vehicle)

    @field_validator("position", mode="before")
    @classmethod
    def _position(cls, v: Any) -> Any:
        return canonical_position(v) or v if isinstance(v, str) else v

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.command} {args}".strip()


class Harmful(_Model):
    """A command that hurts the ship in this drill: taking it costs its weight."""

    command: str
    vehicle: str | None = None  # default: the scenario's first ship
    args: dict[str, Any] = {}  # the arguments that make it harmful (none: any)
    reason: str
    weight: float = Field(default=1.0, gt=0)

    _norm = field_validator("vehicle", mode="before")(_vehicle)


class FaultPlan(_Model):
    id: str
    vehicle: str
    fault: str
    params: dict[str, Any] = {}
    at: Duration | None = None  # after the drill starts ("+2m", "90s", 120)
    get: str | None = None  # a GET or event[+/-offset]
    ramp_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    # Alarms it must raise; a fault that raises none is answered by a timed call instead.
    expect: list[Expect] = []
    # Alarms this fault may also raise that are not scored (knock-on effects).
    collateral: list[str] = []
    note: str | None = None
    # Filled in by the whole-file checks: GET of the injection.
    start_get: float = 0.0

    _norm = field_validator("vehicle", mode="before")(_vehicle)


class Tolerated(_Model):
    vehicle: str
    parameter: str
    reason: str

    _norm = field_validator("vehicle", mode="before")(_vehicle)


class Scenario(_Model):
    schema_: Literal[1] = Field(alias="schema")
    id: str
    title: str
    briefing: str
    history: str | None = None  # the real event the drill is drawn from
    # What the trainee should call, for the debrief: a sentence, or a timed call on cues.
    calls: list[str | Call] = []
    positions: list[str] = ["EECOM"]
    start: str
    ships: list[str] = Field(min_length=1)
    speed: float = Field(default=1.0, gt=0, le=1000)
    duration: Duration
    seed: int = 1975
    historical: bool = False  # the real minor anomalies (TV failure, false GNC alarm)
    ack_within_s: float = Field(default=60.0, gt=0)
    grace_s: float | None = Field(default=None, ge=0)  # mission s after the end for acks
    faults: list[FaultPlan] = Field(min_length=1)
    tolerate: list[Tolerated] = []
    actions: list[Action] = []  # what the trainees are expected to do
    harmful: list[Harmful] = []  # what hurts the ship in this drill
    plot: dict[str, list[str]] = {}
    path: str = ""
    # Filled in by the whole-file checks.
    start_get: float = 0.0
    duration_s: float = 0.0

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("ships", mode="before")
    @classmethod
    def _ships(cls, v: Any) -> Any:
        return [_vehicle(x) for x in v] if isinstance(v, list) else v

    @field_validator("plot", mode="before")
    @classmethod
    def _plot(cls, v: Any) -> Any:
        return {_vehicle(k): x for k, x in v.items()} if isinstance(v, dict) else v

    @property
    def end_get(self) -> float:
        return self.start_get + self.duration_s

    @property
    def grace(self) -> float:
        if self.grace_s is not None:
            return self.grace_s
        return max([self.ack_within(e) for f in self.faults for e in f.expect] + [30.0])

    def ack_within(self, e: Expect) -> float:
        return e.ack_within_s if e.ack_within_s is not None else self.ack_within_s

    def expected_vehicle(self, f: FaultPlan, e: Expect) -> str:
        return e.vehicle or f.vehicle

    @property
    def timed_calls(self) -> list[Call]:
        return [c for c in self.calls if isinstance(c, Call)]

    def call_fault(self, c: Call) -> FaultPlan | None:
        """The fault a timed call answers."""
        if c.fault is None:
            return self.faults[0] if len(self.faults) == 1 else None
        return next((f for f in self.faults if f.id == c.fault), None)

    def cue_vehicle(self, c: Call, cue: Cue) -> str:
        f = self.call_fault(c)
        return cue.vehicle or (f.vehicle if f is not None else self.ships[0])

    def action_fault(self, a: Action) -> FaultPlan | None:
        """The fault an action answers."""
        if a.fault is None:
            return self.faults[0] if len(self.faults) == 1 else None
        return next((f for f in self.faults if f.id == a.fault), None)

    def action_vehicle(self, a: Action) -> str:
        f = self.action_fault(a)
        return a.vehicle or (f.vehicle if f is not None else self.ships[0])

    def harmful_vehicle(self, h: Harmful) -> str:
        return h.vehicle or self.ships[0]

    def plot_parameters(self) -> dict[str, list[str]]:
        """Key parameters per transmitting ship: the plot section, else the expected
        alarms' parameters in the order the faults name them."""
        if self.plot:
            return {v: list(p) for v, p in self.plot.items() if v in self.ships}
        out: dict[str, list[str]] = {}
        for f in self.faults:
            for e in f.expect:
                v = self.expected_vehicle(f, e)
                if v in self.ships and e.parameter not in out.setdefault(v, []):
                    out[v].append(e.parameter)
        return out


# --- loading ----------------------------------------------------------------------------------

def load_scenario(path: str | Path, definitions: dict[str, VehicleDefinition] | None = None,
                  commands: dict[str, VehicleCommands] | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(path, [("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_scenario(text, path, definitions, commands)


def parse_scenario(text: str, path: str | Path = "<string>",
                   definitions: dict[str, VehicleDefinition] | None = None,
                   commands: dict[str, VehicleCommands] | None = None) -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(path, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise ScenarioError(path, [("", "the file must be a mapping with id, title, "
                                        "briefing, start, ships, duration and faults")])
    try:
        sc = Scenario.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise ScenarioError(path, [_where_what(e, data) for e in exc.errors()]) from None
    defs = definitions if definitions is not None else load_all()
    problems = _check(sc, defs)
    if sc.actions or sc.harmful:
        problems += _check_actions(sc, defs, commands if commands is not None
                                   else load_all_commands(defs))
    if problems:
        raise ScenarioError(path, problems)
    return sc


def scenario_files(directory: str | Path | None = None) -> list[Path]:
    return sorted(Path(directory if directory is not None else scenarios_dir()).glob("*.yaml"))


def find_scenario(name: str, directory: str | Path | None = None) -> Path:
    """A scenario by file path, or by id / file stem in the scenarios directory."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"no scenario file {name}")
        return p
    for f in scenario_files(directory):
        if f.stem == name:
            return f
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("id") == name:
            return f
    known = ", ".join(f.stem for f in scenario_files(directory)) or "none"
    raise FileNotFoundError(f"no scenario {name!r} in {directory} (scenarios: {known}; "
                            "`groundstation drill list` shows them)")


def _fault_name(data: dict[str, Any], index: int) -> str:
    try:
        fid = data["faults"][index].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        fid = None
    return f"fault {fid!r} (faults[{index}])" if fid else f"faults[{index}]"


def _where_what(err: Any, data: dict[str, Any]) -> tuple[str, str]:
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "faults" and isinstance(loc[1], int):
        where = _fault_name(data, loc[1])
        loc = loc[2:]
    field = ".".join(str(x) if not isinstance(x, int) else f"[{x}]" for x in loc
                     if not str(x).startswith(("function-", "tagged-")))
    field = field.replace(".[", "[")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against simulators/scenarios/README.md)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return ": ".join(x for x in (where, field) if x), msg


# --- whole-file checks ------------------------------------------------------------------------

def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 90, '90s', '20m' or '1h30m'")
    if isinstance(value, int | float):
        t = float(value)
    else:
        t = parse_duration(str(value).strip().removeprefix("+"))
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{value!r} is not a duration")
    return t


def _check(sc: Scenario, defs: dict[str, VehicleDefinition]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not ID_RE.match(sc.id):
        out.append(("id", "must be 1-64 lower-case letters, digits, '-' or '_' (it becomes "
                          "part of the drill id, one MQTT topic level)"))
    for i, v in enumerate(sc.ships):
        if v not in tl.VEHICLES:
            out.append((f"ships[{i}]", f"no ship {v!r}; ships are {', '.join(tl.VEHICLES)}"))
        elif v not in defs:
            out.append((f"ships[{i}]", f"no telemetry definition for {v}"))
    if len(set(sc.ships)) != len(sc.ships):
        out.append(("ships", "a ship is listed twice"))
    ships = [v for v in sc.ships if v in tl.VEHICLES and v in defs]
    try:
        sc.start_get = tl.parse_time(sc.start)
    except ValueError as exc:
        out.append(("start", str(exc)))
        sc.start_get = math.nan
    try:
        sc.duration_s = _duration(sc.duration)
        if sc.duration_s <= 0:
            out.append(("duration", "must be longer than 0"))
    except ValueError as exc:
        out.append(("duration", str(exc)))
        sc.duration_s = math.nan
    timed = math.isfinite(sc.start_get) and math.isfinite(sc.duration_s)
    if timed:
        for v in ships:
            if sc.start_get >= tl.MISSION_END[v]:
                out.append(("start", f"{format_get(sc.start_get)} is after {v}'s mission "
                                     f"ended ({format_get(tl.MISSION_END[v])})"))
            elif sc.end_get > tl.MISSION_END[v]:
                out.append(("duration", f"the drill would end at {format_get(sc.end_get)}, "
                                        f"after {v}'s mission ended "
                                        f"({format_get(tl.MISSION_END[v])}); shorten it or "
                                        "start earlier"))
    seen: set[str] = set()
    manager = FaultManager(lambda v, pid: defs[v].parameter(pid))
    for i, f in enumerate(sc.faults):
        where = f"fault {f.id!r} (faults[{i}])"
        if not ID_RE.match(f.id):
            out.append((f"{where}: id", "must be lower-case letters, digits, '-' or '_'"))
        if f.id in seen:
            out.append((f"{where}: id", "duplicate fault id"))
        seen.add(f.id)
        out += [(f"{where}: {field}", m) for field, m in _check_fault(sc, f, manager, defs,
                                                                        ships, timed)]
    out += _check_calls(sc, defs, ships, timed)
    for i, t in enumerate(sc.tolerate):
        out += [(f"tolerate[{i}]: {field}", m)
                for field, m in _check_parameter(t.vehicle, t.parameter, None, defs,
                                                 ships, "parameter")]
    for v, pids in sc.plot.items():
        if v not in ships:
            out.append((f"plot: {v}", f"{v} does not transmit in this drill (ships: "
                                      f"{', '.join(sc.ships)})"))
            continue
        for j, pid in enumerate(pids):
            try:
                defs[v].parameter(pid)
            except KeyError:
                if pid not in {d.id for d in defs[v].derived}:
                    out.append((f"plot: {v}[{j}]", f"{v} has no parameter {pid!r}"))
    return out


def _check_fault(sc: Scenario, f: FaultPlan, manager: FaultManager,
                 defs: dict[str, VehicleDefinition], ships: list[str], timed: bool
                 ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    when = math.nan
    if (f.at is None) == (f.get is None):
        out.append(("at", "give exactly one of 'at' (after the drill starts, e.g. '+2m') "
                          "or 'get' (a GET such as '055:53:00' or an event such as "
                          "'docking+10m')"))
    elif f.at is not None:
        try:
            when = sc.start_get + _duration(f.at)
        except ValueError as exc:
            out.append(("at", str(exc)))
    else:
        try:
            when = tl.parse_time(str(f.get))
        except ValueError as exc:
            out.append(("get", str(exc)))
    field_of_time = "at" if f.at is not None else "get"
    if timed and math.isfinite(when):
        if when < sc.start_get:
            out.append((field_of_time, f"{format_get(when)} is before the drill starts "
                                       f"({format_get(sc.start_get)})"))
        elif when >= sc.end_get:
            out.append((field_of_time, f"{format_get(when)} is not before the drill ends "
                                       f"({format_get(sc.end_get)}); lengthen 'duration' or "
                                       "inject earlier"))
    f.start_get = when
    if f.fault not in CATALOGUE:
        out.append(("fault", f"no fault {f.fault!r}; faults are {', '.join(CATALOGUE)} "
                             "(`groundstation sim both --list-faults`)"))
    elif f.vehicle not in tl.VEHICLES:
        out.append(("vehicle", f"no ship {f.vehicle!r}; ships are {', '.join(tl.VEHICLES)}"))
    else:
        try:
            manager.validate(f.vehicle, f.fault, f.params,
                             now=when if math.isfinite(when) else EARLIEST_GET,
                             at=when if math.isfinite(when) else "now", ramp_s=f.ramp_s,
                             duration_s=f.duration_s)
        except FaultError as exc:
            out.append((_fault_field(str(exc), f.fault, field_of_time), str(exc)))
    for j, e in enumerate(f.expect):
        v = e.vehicle or f.vehicle
        out += [(f"expect[{j}]: {field}", m)
                for field, m in _check_parameter(v, e.parameter, e.severity, defs, ships,
                                                 "parameter")]
        if timed and sc.start_get <= when < sc.end_get \
                and when + e.within_s > sc.end_get + sc.grace:
            out.append((f"expect[{j}]: within_s", f"{e.within_s:g} s after the injection "
                                                  f"is past the end of the drill "
                                                  f"({format_get(sc.end_get)}) and its "
                                                  "grace; lengthen 'duration'"))
    for j, pid in enumerate(f.collateral):
        out += [(f"collateral[{j}]", m)
                for _, m in _check_parameter(f.vehicle, pid, None, defs, ships, "")]
    return out


def _check_calls(sc: Scenario, defs: dict[str, VehicleDefinition], ships: list[str],
                 timed: bool) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    answered: set[str] = set()
    for i, c in enumerate(sc.calls):
        if not isinstance(c, Call):
            continue
        where = f"calls[{i}]"
        f = sc.call_fault(c)
        if f is None:
            out.append((f"{where}: fault", f"no fault {c.fault!r} in this scenario"
                        if c.fault is not None else "name the fault this call answers "
                        "(the scenario has several)"))
            continue
        answered.add(f.id)
        if timed and math.isfinite(f.start_get) \
                and f.start_get + c.within_s > sc.end_get + sc.grace:
            out.append((f"{where}: within_s", f"{c.within_s:g} s after the injection is past "
                                              f"the end of the drill "
                                              f"({format_get(sc.end_get)}) and its grace"))
        for j, cue in enumerate(c.cues):
            out += [(f"{where}: cues[{j}]" + (f": {field}" if field else ""), m)
                    for field, m in _check_cue(sc.cue_vehicle(c, cue), cue, defs, ships)]
    for a in sc.actions:
        af = sc.action_fault(a)
        if af is not None:
            answered.add(af.id)  # an expected action answers its fault too
    for i, f in enumerate(sc.faults):
        if not f.expect and f.id not in answered:
            out.append((f"fault {f.id!r} (faults[{i}]): expect", "a fault must expect at "
                        "least one alarm, or be answered by a timed call (calls: - call: "
                        "..., within_s: ..., cues: [...]) or an expected action"))
    return out


def _check_cue(vehicle: str, cue: Cue, defs: dict[str, VehicleDefinition], ships: list[str]
               ) -> list[tuple[str, str]]:
    if vehicle not in tl.VEHICLES or vehicle not in defs:
        return [("vehicle", f"no ship {vehicle!r}; ships are {', '.join(tl.VEHICLES)}")]
    if vehicle not in ships:
        return [("vehicle", f"{vehicle} does not transmit in this drill; add it to 'ships'")]
    d = defs[vehicle]
    entry = next((e for e in [*d.parameters, *d.derived] if e.id == cue.parameter), None)
    if entry is None:
        return [("parameter", f"{vehicle} has no parameter {cue.parameter!r}")]
    given = [k for k in ("state", "above", "below") if getattr(cue, k) is not None]
    if len(given) != 1:
        return [("", "give exactly one of state, above or below")]
    discrete = getattr(entry, "type", "analog") == "discrete"
    if discrete != (cue.state is not None):
        return [(given[0], f"{vehicle}.{cue.parameter} is "
                           + ("a discrete: give its state" if discrete
                              else "not a discrete: give above or below"))]
    if discrete:
        cal = getattr(entry, "calibration", None)
        states = sorted((cal.states or {}).values()) if cal is not None else []
        if cue.state not in states:
            return [("state", f"{cue.state!r} is not a state of {cue.parameter} "
                              f"({', '.join(states)})")]
    return []


def _fault_field(msg: str, fault: str, time_field: str) -> str:
    """Which field of the scenario's fault a simulator FaultError is about."""
    if msg.startswith(("no fault", "fault must")):
        return "fault"
    if msg.startswith(("no vehicle", f"{fault} is a")):
        return "vehicle"
    for name in ("ramp_s", "duration_s"):
        if msg.startswith(f"{fault}: {name}"):
            return name
    if msg.startswith(("at ", "at:", f"{fault}: at ")) or " no gas is sealed " in msg:
        return time_field
    return "params"


def _check_parameter(vehicle: str, pid: str, severity: str | None,
                     defs: dict[str, VehicleDefinition], ships: list[str], field: str
                     ) -> list[tuple[str, str]]:
    if vehicle not in tl.VEHICLES or vehicle not in defs:
        return [("vehicle", f"no ship {vehicle!r}; ships are {', '.join(tl.VEHICLES)}")]
    if vehicle not in ships:
        return [("vehicle", f"{vehicle} does not transmit in this drill, so its alarms "
                            "cannot be raised; add it to 'ships'")]
    d = defs[vehicle]
    entry = next((e for e in [*d.parameters, *d.derived] if e.id == pid), None)
    if entry is None:
        return [(field, f"{vehicle} has no parameter {pid!r}")]
    if entry.limits is None:
        return [(field, f"{vehicle}.{pid} has no limits, so it never raises an alarm")]
    if severity == "red":
        sets = [entry.limits, *entry.limits.contexts]
        if not any((s.red is not None and any(x is not None for x in s.red)) or s.red_states
                   for s in sets):
            return [("severity", f"{vehicle}.{pid} has no red limit; expect yellow")]
    return []


# --- closed-loop drills: expected actions and harmful ones ---------------------------------

def _check_actions(sc: Scenario, defs: dict[str, VehicleDefinition],
                   commands: dict[str, VehicleCommands]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    ships = [v for v in sc.ships if v in tl.VEHICLES and v in defs]
    timed = math.isfinite(sc.start_get) and math.isfinite(sc.duration_s)
    seen: set[str] = set()
    for i, a in enumerate(sc.actions):
        where = f"action {a.id!r} (actions[{i}])"
        if not ID_RE.match(a.id):
            out.append((f"{where}: id", "must be lower-case letters, digits, '-' or '_'"))
        if a.id in seen:
            out.append((f"{where}: id", "duplicate action id"))
        seen.add(a.id)
        f = sc.action_fault(a)
        if f is None:
            out.append((f"{where}: fault", f"no fault {a.fault!r} in this scenario"
                        if a.fault is not None else "name the fault this action answers "
                        "(the scenario has several)"))
            continue
        v = sc.action_vehicle(a)
        out += [(f"{where}: {field}", m)
                for field, m in _check_command(v, a.command, a.args, commands, ships)]
        vc = commands.get(v)
        c = vc.get(a.command) if vc is not None else None
        if c is not None and a.position is not None and not c.allows(a.position):
            out.append((f"{where}: position", f"{a.position} may not send {a.command} (it is "
                                              f"sent from {', '.join(c.positions)})"))
        if timed and math.isfinite(f.start_get) \
                and f.start_get + a.within_s > sc.end_get + sc.grace:
            out.append((f"{where}: within_s", f"{a.within_s:g} s after the injection is past "
                                              f"the end of the drill "
                                              f"({format_get(sc.end_get)}) and its grace"))
        for j, eff in enumerate(a.effect):
            out += [(f"{where}: effect[{j}]" + (f": {field}" if field else ""), m)
                    for field, m in _check_cue(eff.vehicle or v, eff, defs, ships)]
    ids = {a.id for a in sc.actions}
    for i, f in enumerate(sc.faults):
        for j, e in enumerate(f.expect):
            for k, name in enumerate(e.prevented_by):
                if name not in ids:
                    out.append((f"fault {f.id!r} (faults[{i}]): expect[{j}]: prevented_by[{k}]",
                                f"no action {name!r} in this scenario"))
    for i, h in enumerate(sc.harmful):
        out += [(f"harmful[{i}]: {field}", m)
                for field, m in _check_command(sc.harmful_vehicle(h), h.command, h.args,
                                               commands, ships)]
    return out


def _check_command(vehicle: str, command: str, args: dict[str, Any],
                   commands: dict[str, VehicleCommands], ships: list[str]
                   ) -> list[tuple[str, str]]:
    if vehicle not in tl.VEHICLES:
        return [("vehicle", f"no ship {vehicle!r}; ships are {', '.join(tl.VEHICLES)}")]
    if vehicle not in ships:
        return [("vehicle", f"{vehicle} does not fly in this drill, so it cannot be "
                            "commanded; add it to 'ships'")]
    vc = commands.get(vehicle)
    c = vc.get(command) if vc is not None else None
    if c is None:
        known = ", ".join(x.id for x in vc.commands) if vc is not None else "none"
        return [("command", f"{vehicle} has no command {command!r} (its commands: {known}; "
                            "groundstation commanding list)")]
    out: list[tuple[str, str]] = []
    known_args = {x.name: x for x in c.args}
    for k, value in args.items():
        if k not in known_args:
            out.append((f"args.{k}", f"{command} takes no argument {k!r}"))
            continue
        try:
            known_args[k].check(value)
        except CommandArgError as exc:
            out.append((f"args.{k}", exc.problem))
    return out


def same_args(wanted: dict[str, Any], got: dict[str, Any]) -> bool:
    """Whether a command's arguments are the ones an action or a harmful entry names (the
    ones it names; others are free)."""
    return all(k in got and str(got[k]).casefold() == str(v).casefold()
               for k, v in wanted.items())
