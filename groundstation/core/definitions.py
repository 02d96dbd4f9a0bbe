"""Telemetry definitions: load a vehicle's YAML file into a validated model.

The schema is documented in telemetry_defs/README.md. Validation happens in two passes:
pydantic checks the shape of each entry, then `_check_*` functions check what only the
whole file can tell (overlapping bits, subcommutation against the major frame, limits
against the calibration). Every problem is reported with the file, the parameter and the
field, and all problems in a file are reported at once so an author fixes them in one go.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from groundstation import paths
from groundstation.core.units import UnitError, conversion, get_unit

HOUSTON_POSITIONS = frozenset(
    {"FLIGHT", "CAPCOM", "EECOM", "GNC", "INCO", "FIDO", "RETRO", "GUIDO", "SURGEON",
     "PROCEDURES", "BOOSTER", "NETWORK"}
)
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_LUT_BITS = 16


class FileProblems(ValueError):
    """A file is wrong in one or more places: `problems` lists every (where, what) found, so
    a user fixes them all in one go."""

    what = "file"

    def __init__(self, path: str | Path, problems: Sequence[tuple[str, str]]):
        self.path = str(path)
        self.problems = list(problems)
        lines = [f"{self.path}: {where}: {what}" if where else f"{self.path}: {what}"
                 for where, what in self.problems]
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in {self.what} {self.path}"
        super().__init__(head + ":\n  " + "\n  ".join(lines))


class DefinitionError(FileProblems):
    """A definition file is wrong."""

    what = "telemetry definition"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


Pair = tuple[float | None, float | None]


class Sync(_Model):
    words: tuple[int, int]
    pattern: int
    mask: int | None = None
    complement_odd: int = 0


class Counter(_Model):
    word: int | None = None
    words: list[int] | None = None
    bits: tuple[int, int] | None = None
    first: int = 0
    modulus: int

    @model_validator(mode="after")
    def _one_location(self) -> Counter:
        if (self.word is None) == (self.words is None):
            raise ValueError("give exactly one of 'word' or 'words'")
        if self.words is None:
            self.words = [self.word]  # type: ignore[list-item]
        return self


class Frame(_Model):
    words: int = Field(gt=0)
    word_bits: Literal[8, 16] = 8
    rate_hz: float = Field(gt=0)
    minor_frames: int = Field(ge=1)
    sync: Sync
    counter: Counter

    @property
    def bytes_per_frame(self) -> int:
        return self.words * self.word_bits // 8


class Calibration(_Model):
    linear: tuple[float, float] | None = None
    poly: list[float] | None = None
    table: list[tuple[float, float]] | None = None
    states: dict[int, str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Calibration:
        given = [k for k in ("linear", "poly", "table", "states") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of linear, poly, table or states"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> Literal["poly", "table", "states"]:
        if self.table is not None:
            return "table"
        if self.states is not None:
            return "states"
        return "poly"


class When(_Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    phase: list[str] | None = None
    parameter: str | None = None
    in_: list[Any] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _shape(self) -> When:
        if (self.phase is None) == (self.parameter is None):
            raise ValueError("give exactly one of 'phase' or 'parameter'")
        if self.parameter is not None and not self.in_:
            raise ValueError("'parameter' needs 'in': the values for which this set applies")
        return self

    def matches(self, context: dict[str, Any], vehicle: str) -> bool:
        if self.phase is not None:
            return context.get("phase") in self.phase
        name = self.parameter or ""
        key = name if "." in name else f"{vehicle}.{name}"
        value = context.get(key, context.get(name))
        return value is not None and value in (self.in_ or [])


class LimitSet(_Model):
    yellow: Pair | None = None
    red: Pair | None = None
    yellow_states: list[str] | None = None
    red_states: list[str] | None = None


class LimitContext(LimitSet):
    when: When


class Limits(LimitSet):
    persistence: int = Field(default=1, ge=1)
    persistence_s: float | None = Field(default=None, gt=0)
    deadband: float = Field(default=0.0, ge=0)
    source: str | None = None
    contexts: list[LimitContext] = []

    def set_for(self, context: dict[str, Any] | None, vehicle: str) -> LimitSet:
        if context:
            for c in self.contexts:
                if c.when.matches(context, vehicle):
                    return c
        return self


class _Described(_Model):
    id: str
    unit: str = "state"
    limits: Limits | None = None
    console: dict[str, str] = {}
    subsystem: str | None = None
    label: dict[str, str] = {}
    display: dict[str, str] = {}
    source: str | None = None
    description: str | None = None

    @property
    def is_estimate(self) -> bool:
        return (self.source or "").strip().lower().startswith("estimate")


class Parameter(_Described):
    msid: str | None = None
    channel: str | None = None
    type: Literal["analog", "discrete", "counter"]
    word: int | None = None
    words: list[int] | None = None
    bits: tuple[int, int] | None = None
    frames: list[int] | None = None
    every: int | None = Field(default=None, ge=1)
    offset: int | None = Field(default=None, ge=0)
    calibration: Calibration | None = None
    # Discretes: each state's name in another language, {lang: {STATE: name}} (the state
    # names themselves are the English ones).
    state_labels: dict[str, dict[str, str]] = {}
    # Filled in from the frame format once the whole file is known.
    lsb: int = 0
    width: int = 0

    @model_validator(mode="after")
    def _location(self) -> Parameter:
        if (self.word is None) == (self.words is None):
            raise ValueError("give exactly one of 'word' or 'words'")
        if self.words is None:
            self.words = [self.word]  # type: ignore[list-item]
        if not self.words:
            raise ValueError("'words' must name at least one word")
        if self.frames is not None and self.every is not None:
            raise ValueError("give 'frames' or 'every', not both")
        if self.offset is not None and self.every is None:
            raise ValueError("'offset' goes with 'every'")
        return self

    @property
    def raw_max(self) -> int:
        return (1 << self.width) - 1

    @cached_property
    def poly(self) -> list[float] | None:
        cal = self.calibration
        if cal is None:
            return [0.0, 1.0]
        if cal.linear is not None:
            lo, hi = cal.linear
            return [lo, (hi - lo) / self.raw_max]
        return cal.poly

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw counts to engineering values (states give their raw code)."""
        raw = np.asarray(raw, dtype=np.float64)
        cal = self.calibration
        if cal is not None and cal.table is not None:
            xs, ys = zip(*cal.table, strict=True)
            return np.interp(raw, xs, ys)
        if cal is not None and cal.states is not None:
            return raw
        poly = self.poly
        assert poly is not None  # a calibration has exactly one of linear/poly/table/states
        return np.polynomial.polynomial.polyval(raw, poly)

    def eng_range(self) -> tuple[float, float]:
        ends = self.calibrate(np.array([0, self.raw_max]))
        return float(ends.min()), float(ends.max())

    def state_label(self, state: str, lang: str) -> str:
        """A state's name in a language ('en' or 'ru'); the state name when none is given."""
        if lang == "en":
            return self.state_labels.get("en", {}).get(state, state)
        return self.state_labels.get(lang, {}).get(state, state)

    def state_code(self, name: str) -> int:
        states = (self.calibration.states if self.calibration else None) or {}
        for code, state in states.items():
            if state == name:
                return code
        raise KeyError(f"{self.id}: no state {name!r}; states are {sorted(states.values())}")


DerivedOp = Literal["sum", "difference", "product", "ratio", "mean", "min", "max"]


class Derived(_Described):
    op: DerivedOp
    inputs: list[str] = Field(min_length=1)
    unit: str


class VehicleDefinition(_Model):
    schema_: Literal[1] = Field(alias="schema")
    vehicle: str
    name: dict[str, str] = {}
    stream: str
    # Another format of the vehicle's downlink (Apollo's low bit rate): its own frame and a
    # subset of the named stream's parameters, each the same but for where it sits.
    subset_of: str | None = None
    source: str | None = None
    frame: Frame
    parameters: list[Parameter] = Field(min_length=1)
    derived: list[Derived] = []
    path: str = ""
    # The vehicle's other formats by stream (load_all attaches them to the main one).
    _others: dict[str, VehicleDefinition] = PrivateAttr(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def streams(self) -> dict[str, VehicleDefinition]:
        """Every format of this vehicle's downlink by stream, this one first."""
        return {self.stream: self, **self._others}

    def stream_definition(self, stream: str) -> VehicleDefinition | None:
        """The definition of one of this vehicle's streams (None: no such stream)."""
        return self if stream == self.stream else self._others.get(stream)

    def parameter(self, pid: str) -> Parameter:
        try:
            return self._by_id[pid]
        except KeyError:
            raise KeyError(f"{self.vehicle} has no parameter {pid!r}") from None

    @cached_property
    def _by_id(self) -> dict[str, Parameter]:
        return {p.id: p for p in self.parameters}

    @property
    def all_ids(self) -> list[str]:
        return [p.id for p in self.parameters] + [d.id for d in self.derived]


# --- loading -----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 turns ON/OFF/YES/NO into booleans; state names must stay strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_definition(path: str | Path) -> VehicleDefinition:
    """Load and validate one vehicle's definition file; raise DefinitionError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(path, [("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_definition(text, path)


def parse_definition(text: str, path: str | Path = "<string>") -> VehicleDefinition:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise DefinitionError(path, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise DefinitionError(path, [("", "the file must be a mapping with 'frame' and "
                                          "'parameters' at the top level")])
    try:
        defn = VehicleDefinition.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise DefinitionError(path, [_where_what(err, data) for err in exc.errors()]) from None
    problems = _check(defn)
    if problems:
        raise DefinitionError(path, problems)
    return defn


def load_all(directory: str | Path | None = None) -> dict[str, VehicleDefinition]:
    """Every vehicle's definition in a directory (default: telemetry_defs/), keyed by vehicle
    id: its main stream's, with the vehicle's other formats (files with `subset_of`)
    attached (`VehicleDefinition.streams`, `stream_definition`)."""
    if directory is None:
        directory = paths.defs_dir()
    defs: dict[str, VehicleDefinition] = {}
    others: list[VehicleDefinition] = []
    for f in sorted(Path(directory).glob("*.yaml")):
        d = load_definition(f)
        if d.subset_of is not None:
            others.append(d)
            continue
        if d.vehicle in defs:
            raise DefinitionError(f, [("vehicle", f"{d.vehicle!r} is already defined in "
                                                  f"{defs[d.vehicle].path} (another format "
                                                  "of its downlink names it in subset_of)")])
        defs[d.vehicle] = d
    if not defs:
        raise DefinitionError(directory, [("", "no *.yaml telemetry definitions found here")])
    for d in others:
        attach_stream(defs, d)
    _check_cross_vehicle(defs)
    return defs


def attach_stream(defs: dict[str, VehicleDefinition], other: VehicleDefinition) -> None:
    """Attach another format of a vehicle's downlink to its main definition, after checking
    that it is a subset of it (DefinitionError naming the file, the parameter and the
    field)."""
    main = defs.get(other.vehicle)
    if main is None:
        raise DefinitionError(other.path, [("vehicle", f"no main definition of "
                                                       f"{other.vehicle!r} (a file without "
                                                       "subset_of) in this directory")])
    if other.subset_of != main.stream:
        raise DefinitionError(other.path, [("subset_of", f"{other.vehicle!r}'s main stream "
                                                         f"is {main.stream!r} ({main.path})")])
    if other.stream in main.streams:
        raise DefinitionError(other.path, [("stream", f"{other.vehicle!r} already has a "
                                                      f"stream {other.stream!r} "
                                                      f"({main.streams[other.stream].path})")])
    problems = check_subset(other, main)
    if problems:
        raise DefinitionError(other.path, problems)
    main._others[other.stream] = other


# Where a parameter sits in its frame: the only fields another format may change.
_LOCATION_FIELDS = frozenset({"word", "words", "bits", "frames", "every", "offset"})


def check_subset(other: VehicleDefinition, main: VehicleDefinition) -> list[tuple[str, str]]:
    """Every parameter of `other` is one of `main`'s with the same calibration, unit,
    limits, labels and console, so both formats give the same values and alarms."""
    problems: list[tuple[str, str]] = []
    mine = {e.id: e for e in [*main.parameters, *main.derived]}
    for kind, entries in (("parameter", other.parameters), ("derived parameter",
                                                            other.derived)):
        for e in entries:
            where = f"{kind} {e.id!r}"
            ref = mine.get(e.id)
            if ref is None or type(ref) is not type(e):
                problems.append((where, f"not a {kind} of the {main.stream!r} stream "
                                        f"({main.path})"))
                continue
            a, b = e.model_dump(), ref.model_dump()
            for f in sorted(set(a) | set(b)):
                if f not in _LOCATION_FIELDS and a.get(f) != b.get(f):
                    problems.append((f"{where}: {f}", f"differs from the {main.stream!r} "
                                                      f"stream's ({main.path}); only where "
                                                      "it sits in the frame may differ"))
    return problems


def _entry_name(data: dict[str, Any], section: str, index: int) -> str:
    try:
        pid = data[section][index].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        pid = None
    kind = "parameter" if section == "parameters" else "derived parameter"
    return f"{kind} {pid!r}" if pid else f"{section}[{index}]"


def _where_what(err: Any, data: dict[str, Any]) -> tuple[str, str]:
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] in ("parameters", "derived") and isinstance(loc[1], int):
        where = _entry_name(data, loc[0], loc[1])
        loc = loc[2:]
    field = ".".join(str(x) for x in loc if not str(x).startswith(("function-", "tagged-")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against telemetry_defs/README.md)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    where = ": ".join(x for x in (where, field) if x)
    return where, msg


# --- whole-file checks -------------------------------------------------------------------


def _check(defn: VehicleDefinition) -> list[tuple[str, str]]:
    frame_problems = _check_frame(defn.frame)
    problems = list(frame_problems)
    seen: dict[str, str] = {}
    for kind, entries in (("parameter", defn.parameters), ("derived parameter", defn.derived)):
        for e in entries:
            where = f"{kind} {e.id!r}"
            if not ID_RE.match(e.id):
                problems.append((where, "id must be lower-case letters, digits and '_', "
                                        "starting with a letter"))
            if e.id in seen:
                problems.append((where, f"duplicate id (also a {seen[e.id]})"))
            seen[e.id] = kind
            problems += [(f"{where}: {f}", m) for f, m in _check_described(e)]
    if frame_problems:
        # Word positions mean nothing against a broken frame format.
        return problems
    placed = True
    for p in defn.parameters:
        found = _check_location(p, defn)
        placed = placed and not found
        if not found:
            found = _check_calibration(p)
            if not found and p.limits is not None:
                found = _check_limits_fit(p, defn)
        problems += [(f"parameter {p.id!r}: {f}", m) for f, m in found]
    if placed:
        problems += _check_occupancy(defn)
    problems += _check_derived(defn)
    return problems


def _check_frame(frame: Frame) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    first, last = frame.sync.words
    if not 0 <= first <= last < frame.words:
        out.append(("frame.sync.words", f"[{first}, {last}] is not a word range inside the "
                                        f"{frame.words}-word frame"))
        return out
    sync_bits = (last - first + 1) * frame.word_bits
    full = (1 << sync_bits) - 1
    mask = full if frame.sync.mask is None else frame.sync.mask
    if frame.sync.mask is None:
        frame.sync.mask = full
    for name, value in (("pattern", frame.sync.pattern), ("mask", mask),
                        ("complement_odd", frame.sync.complement_odd)):
        if not 0 <= value <= full:
            out.append((f"frame.sync.{name}", f"{value:#x} does not fit in the {sync_bits} "
                                             "sync bits"))
    if frame.sync.complement_odd & ~mask:
        out.append(("frame.sync.complement_odd", "complements bits the mask does not check"))
    c = frame.counter
    assert c.words is not None
    if any(not 0 <= w < frame.words for w in c.words):
        out.append(("frame.counter.words", f"{c.words} reaches outside the {frame.words}-word "
                                           "frame"))
        return out
    cbits = len(c.words) * frame.word_bits
    lsb, msb = c.bits if c.bits is not None else (0, cbits - 1)
    if not 0 <= lsb <= msb < cbits:
        out.append(("frame.counter.bits", f"[{lsb}, {msb}] is wider than its {cbits}-bit "
                                          "word(s)"))
    elif c.first + c.modulus - 1 > (1 << (msb - lsb + 1)) - 1:
        out.append(("frame.counter.modulus", f"counter values {c.first}..{c.first + c.modulus - 1}"
                                             f" do not fit in {msb - lsb + 1} bits"))
    if c.modulus < 1 or c.modulus % frame.minor_frames:
        out.append(("frame.counter.modulus", f"{c.modulus} is not a multiple of minor_frames "
                                             f"({frame.minor_frames}), so the subcommutation "
                                             "phase would slip when the counter wraps"))
    return out


def _check_described(e: _Described) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    try:
        get_unit(e.unit)
    except UnitError as exc:
        out.append(("unit", str(exc)))
        return out
    for centre, unit in e.display.items():
        if centre not in ("houston", "moscow"):
            out.append((f"display.{centre}", "control centres are 'houston' and 'moscow'"))
            continue
        try:
            conversion(e.unit, unit)
        except UnitError as exc:
            out.append((f"display.{centre}", str(exc)))
    for centre in e.console:
        if centre not in ("houston", "moscow"):
            out.append((f"console.{centre}", "control centres are 'houston' and 'moscow'"))
    pos = e.console.get("houston")
    if pos is not None and pos not in HOUSTON_POSITIONS:
        out.append(("console.houston", f"{pos!r} is not a Houston position; use one of "
                                       f"{', '.join(sorted(HOUSTON_POSITIONS))}"))
    for lang in e.label:
        if lang not in ("en", "ru"):
            out.append((f"label.{lang}", "labels are 'en' and 'ru'"))
    if e.limits is not None:
        out += _check_limit_values(e.limits, "limits")
        for i, c in enumerate(e.limits.contexts):
            out += _check_limit_values(c, f"limits.contexts[{i}]")
        if e.limits.persistence_s is not None and "persistence" in e.limits.model_fields_set:
            out.append(("limits", "give 'persistence' (samples) or 'persistence_s' (seconds), "
                                  "not both"))
    return out


def _check_limit_values(ls: LimitSet, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in ("yellow", "red"):
        pair = getattr(ls, name)
        if pair is not None and None not in pair and pair[0] > pair[1]:
            out.append((f"{where}.{name}", f"low {pair[0]} is above high {pair[1]}"))
    y, r = ls.yellow, ls.red
    if y is not None and r is not None:
        if y[0] is not None and r[0] is not None and r[0] > y[0]:
            out.append((f"{where}.red", f"red low {r[0]} is inside the yellow low {y[0]}; "
                                        "red must be at or beyond yellow"))
        if y[1] is not None and r[1] is not None and r[1] < y[1]:
            out.append((f"{where}.red", f"red high {r[1]} is inside the yellow high {y[1]}; "
                                        "red must be at or beyond yellow"))
    return out


def _check_location(p: Parameter, defn: VehicleDefinition) -> list[tuple[str, str]]:
    """Words, bit field and subcommutation; normalises lsb, width and frames."""
    out: list[tuple[str, str]] = []
    frame = defn.frame
    assert p.words is not None
    bad = [w for w in p.words if not 0 <= w < frame.words]
    if bad:
        out.append(("words", f"word {bad[0]} is outside the frame (words 0..{frame.words - 1})"))
    if len(set(p.words)) != len(p.words):
        out.append(("words", "a word is listed twice"))
    total = len(p.words) * frame.word_bits
    lsb, msb = p.bits if p.bits is not None else (0, total - 1)
    if not 0 <= lsb <= msb:
        out.append(("bits", f"[{lsb}, {msb}] is not [lsb, msb] with 0 <= lsb <= msb"))
    elif msb >= total:
        out.append(("bits", f"bit field [{lsb}, {msb}] is wider than its {len(p.words)} "
                            f"word(s) of {frame.word_bits} bits (bits 0..{total - 1})"))
    elif msb - lsb + 1 > 32:
        out.append(("bits", "raw values are limited to 32 bits"))
    p.lsb, p.width = lsb, msb - lsb + 1
    n = frame.minor_frames
    if p.every is not None:
        if n % p.every:
            out.append(("every", f"every {p.every} frames does not fit the major frame of {n} "
                                 "minor frames (it must divide it)"))
        off = p.offset or 0
        if off >= p.every:
            out.append(("offset", f"offset {off} must be less than every ({p.every})"))
        p.frames = list(range(off, n, p.every))
        p.every = p.offset = None
    elif p.frames is not None:
        outside = [f for f in p.frames if not 0 <= f < n]
        if outside:
            out.append(("frames", f"minor frame {outside[0]} does not fit the major frame "
                                  f"(minor frames 0..{n - 1})"))
        if len(set(p.frames)) != len(p.frames) or not p.frames:
            out.append(("frames", "list each minor frame once, at least one"))
        p.frames = sorted(p.frames)
    if not out and p.frames is not None and len(p.frames) == n:
        p.frames = None  # sampled in every minor frame: not subcommutated at all
    return out


def _check_calibration(p: Parameter) -> list[tuple[str, str]]:
    cal = p.calibration
    if p.type == "discrete":
        if cal is None or cal.states is None:
            return [("calibration", "a discrete needs 'states' naming its values")]
        bad = [c for c in cal.states if not 0 <= c <= p.raw_max]
        if bad:
            return [("calibration.states", f"code {bad[0]} does not fit in {p.width} bits")]
        if len(set(cal.states.values())) != len(cal.states):
            return [("calibration.states", "two codes share a state name")]
        return _check_state_labels(p, set(cal.states.values()))
    if cal is not None and cal.states is not None:
        return [("calibration.states", f"'states' is for discretes; this is {p.type}")]
    if p.state_labels:
        return [("state_labels", f"state labels are for discretes; this is {p.type}")]
    if p.unit == "state":
        return [("unit", f"an {p.type} parameter needs a unit of measure")]
    if cal is not None and cal.table is not None:
        raws = [r for r, _ in cal.table]
        engs = [e for _, e in cal.table]
        if len(raws) < 2:
            return [("calibration.table", "needs at least two points")]
        if any(b <= a for a, b in itertools.pairwise(raws)):
            return [("calibration.table", f"raw points {raws} must be strictly increasing")]
        if raws[0] < 0 or raws[-1] > p.raw_max:
            return [("calibration.table", f"raw points must lie in 0..{p.raw_max}")]
        steps = np.diff(engs)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            return [("calibration.table", f"engineering values {engs} are not monotonic; the "
                                          "simulators could not invert this calibration")]
        return []
    if cal is not None and cal.poly is not None and not cal.poly:
        return [("calibration.poly", "needs at least one coefficient")]
    raw = (np.arange(p.raw_max + 1) if p.width <= MAX_LUT_BITS
           else np.linspace(0, p.raw_max, 65537))
    steps = np.diff(p.calibrate(raw))
    if not (np.all(steps > 0) or np.all(steps < 0)):
        field = "calibration." + ("linear" if cal is not None and cal.linear else "poly")
        return [(field, "is not monotonic over the raw range "
                        f"0..{p.raw_max}; the simulators could not invert it")]
    return []


def _check_state_labels(p: Parameter, states: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for lang, names in p.state_labels.items():
        if lang not in ("en", "ru"):
            out.append((f"state_labels.{lang}", "state labels are 'en' and 'ru'"))
            continue
        unknown = sorted(set(names) - states)
        missing = sorted(states - set(names))
        if unknown:
            out.append((f"state_labels.{lang}", f"{unknown[0]!r} is not one of the states "
                                                f"{sorted(states)}"))
        if missing:
            out.append((f"state_labels.{lang}", f"no {lang} name for the state "
                                                f"{missing[0]!r}: name every state"))
        empty = [k for k, v in names.items() if not str(v).strip()]
        if empty:
            out.append((f"state_labels.{lang}.{empty[0]}", "the name is empty"))
    return out


def _check_limits_fit(p: Parameter, defn: VehicleDefinition) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    lim = p.limits
    assert lim is not None
    sets: list[tuple[str, LimitSet]] = [("limits", lim)]
    sets += [(f"limits.contexts[{i}]", c) for i, c in enumerate(lim.contexts)]
    if p.type == "discrete":
        states = set(p.calibration.states.values()) if p.calibration and p.calibration.states \
            else set()
        for where, ls in sets:
            if ls.yellow is not None or ls.red is not None:
                out.append((where, "a discrete takes red_states/yellow_states, not numbers"))
            for name in ("yellow_states", "red_states"):
                unknown = [s for s in getattr(ls, name) or [] if s not in states]
                if unknown:
                    out.append((f"{where}.{name}", f"{unknown[0]!r} is not one of the states "
                                                   f"{sorted(states)}"))
    else:
        lo, hi = p.eng_range()
        for where, ls in sets:
            if ls.yellow_states or ls.red_states:
                out.append((where, "states limits are for discretes"))
            for name in ("yellow", "red"):
                for v in getattr(ls, name) or ():
                    if v is not None and not lo <= v <= hi:
                        out.append((f"{where}.{name}", f"limit {v} {p.unit} lies outside the "
                                    f"sensor's range {lo:g}..{hi:g} {p.unit}: it can never "
                                    "be seen"))
    for i, c in enumerate(lim.contexts):
        when_param = c.when.parameter
        if when_param and "." not in when_param and when_param not in defn.all_ids:
            out.append((f"limits.contexts[{i}].when.parameter", f"no parameter {when_param!r} in "
                                                                f"{defn.vehicle}"))
    return out


def _occupied_bits(p: Parameter, word_bits: int) -> Iterable[tuple[int, int]]:
    """(word, bit) pairs a parameter's bit field covers; bit 0 is a word's LSB."""
    assert p.words is not None
    n = len(p.words)
    for bit in range(p.lsb, p.lsb + p.width):
        j, b = divmod(bit, word_bits)
        yield p.words[n - 1 - j], b


def _check_occupancy(defn: VehicleDefinition) -> list[tuple[str, str]]:
    frame = defn.frame
    owner = np.full((frame.minor_frames, frame.words, frame.word_bits), -1, dtype=np.int32)
    names = ["the sync pattern", "the frame counter"]
    first, last = frame.sync.words
    nsync = last - first + 1
    for k in range(nsync * frame.word_bits):
        if (frame.sync.mask or 0) >> k & 1:
            j, b = divmod(k, frame.word_bits)
            owner[:, last - j, b] = 0
    c = frame.counter
    assert c.words is not None
    cp = Parameter(id="counter", type="counter", words=c.words, unit="count")
    cp.lsb, cp.width = c.bits if c.bits is not None else (0, len(c.words) * frame.word_bits)
    if c.bits is not None:
        cp.width = c.bits[1] - c.bits[0] + 1
    out: list[tuple[str, str]] = []
    for w, b in _occupied_bits(cp, frame.word_bits):
        if owner[0, w, b] >= 0:
            out.append(("frame.counter", f"word {w} bit {b} is also used by the sync pattern"))
        owner[:, w, b] = 1
    for i, p in enumerate(defn.parameters, start=2):
        names.append(f"parameter {p.id!r}")
        rows = list(range(frame.minor_frames)) if p.frames is None else p.frames
        for w, b in _occupied_bits(p, frame.word_bits):
            taken = owner[rows, w, b]
            clash = np.nonzero(taken >= 0)[0]
            if clash.size:
                other = names[taken[clash[0]]]
                out.append((f"parameter {p.id!r}", f"word {w} bit {b} in minor frame "
                            f"{rows[clash[0]]} is also used by {other}"))
                break
            owner[rows, w, b] = i
    return out


def _check_derived(defn: VehicleDefinition) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    known = set(defn.all_ids)
    graph = {d.id: d.inputs for d in defn.derived}
    for d in defn.derived:
        where = f"derived parameter {d.id!r}"
        missing = [i for i in d.inputs if i not in known]
        if missing:
            out.append((f"{where}: inputs", f"no parameter {missing[0]!r} in {defn.vehicle}"))
        if d.op in ("difference", "ratio") and len(d.inputs) != 2:
            out.append((f"{where}: inputs", f"'{d.op}' takes exactly two inputs"))
        discretes = [i for i in d.inputs if i in defn._by_id
                     and defn._by_id[i].type == "discrete"]
        if discretes:
            out.append((f"{where}: inputs", f"{discretes[0]!r} is a discrete; derived values "
                                            "are computed from numbers"))
        if d.op not in ("product", "ratio"):
            units = {e.id: e.unit for e in [*defn.parameters, *defn.derived]}
            for i in d.inputs:
                if i in units:
                    try:
                        conversion(units[i], d.unit)
                    except UnitError:
                        out.append((f"{where}: inputs", f"{i!r} is in {units[i]}, which does "
                                    f"not convert to this parameter's unit {d.unit}"))
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2 or n not in graph:
            return
        if state.get(n) == 1:
            cyc = " -> ".join([*path[path.index(n):], n])
            out.append((f"derived parameter {n!r}: inputs", f"derived inputs form a cycle: {cyc}"))
            return
        state[n] = 1
        for m in graph[n]:
            visit(m, [*path, n])
        state[n] = 2

    for d in defn.derived:
        visit(d.id, [])
    return out


def _check_cross_vehicle(defs: dict[str, VehicleDefinition]) -> None:
    for d in defs.values():
        problems: list[tuple[str, str]] = []
        for e in [*d.parameters, *d.derived]:
            for i, c in enumerate(e.limits.contexts if e.limits else []):
                name = c.when.parameter
                if name and "." in name:
                    veh, pid = name.split(".", 1)
                    if veh not in defs or pid not in defs[veh].all_ids:
                        problems.append((f"parameter {e.id!r}: limits.contexts[{i}].when."
                                         "parameter", f"no parameter {pid!r} in vehicle "
                                                      f"{veh!r}"))
        if problems:
            raise DefinitionError(d.path, problems)


def hash_definition(text: str | bytes) -> str:
    """SHA-256 (hex) of a telemetry definition file's exact bytes (what the archive keeps
    definitions by, and what a replay session names them by)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()
