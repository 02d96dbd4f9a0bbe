"""What every peer adapter shares: our definition flattened into peer-neutral field specs.

Each peer gets the same frames and the same parameters, generated from our loaded
`VehicleDefinition`, written in the peer's own definition language. This module turns our
definition into `FieldSpec`s (bit offset counted from the first bit of the frame, most
significant bit first, as COSMOS, XTCE and ccsdspy count; byte spans for AIT), and holds the
small numpy helpers the parser-only peers (ccsdspy, space_packet_parser) need around them:
piecewise-linear tables, limit checks and a fake CCSDS primary header.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

# Limit severities used when comparing peers with our engine (sign ignored: AIT has none).
NOMINAL, YELLOW, RED = 0, 1, 2
CCSDS_HEADER_BYTES = 6


@dataclass(frozen=True)
class FieldSpec:
    """One parameter's location, calibration and limits, in peer-neutral terms."""

    id: str
    type: str  # analog | discrete | counter
    bit_offset: int  # from the frame's first bit, MSB first
    bit_size: int
    frames: tuple[int, ...] | None  # minor-frame indices; None = every minor frame
    poly: tuple[float, ...] = ()  # c0, c1, c2 ... (analog/counter without a table)
    table: tuple[tuple[float, float], ...] = ()  # (raw, eng) points, clamped at the ends
    states: dict[int, str] = field(default_factory=dict)
    yellow: tuple[float | None, float | None] | None = None
    red: tuple[float | None, float | None] | None = None
    yellow_states: tuple[str, ...] = ()
    red_states: tuple[str, ...] = ()
    unit: str = ""

    @property
    def first_byte(self) -> int:
        return self.bit_offset // 8

    @property
    def last_byte(self) -> int:
        return (self.bit_offset + self.bit_size - 1) // 8

    @property
    def raw_max(self) -> int:
        return (1 << self.bit_size) - 1

    @property
    def has_limits(self) -> bool:
        if self.type == "discrete":
            return bool(self.yellow_states or self.red_states)
        return self.yellow is not None or self.red is not None

    def table_clamped(self) -> list[tuple[float, float]]:
        """Table points extended to raw 0 and raw_max with the end values (np.interp clamps)."""
        pts = [(float(r), float(e)) for r, e in self.table]
        if pts[0][0] > 0:
            pts.insert(0, (0.0, pts[0][1]))
        if pts[-1][0] < self.raw_max:
            pts.append((float(self.raw_max), pts[-1][1]))
        return pts

    def segments(self) -> list[tuple[float, float, float]]:
        """(lower raw bound, c0, c1) of each linear piece of the table, constant beyond ends."""
        pts = [(float(r), float(e)) for r, e in self.table]
        segs = [(-1.0, pts[0][1], 0.0)]  # below the first point: hold its value
        for (r0, e0), (r1, e1) in itertools.pairwise(pts):
            slope = (e1 - e0) / (r1 - r0)
            segs.append((r0, e0 - slope * r0, slope))
        segs.append((pts[-1][0], pts[-1][1], 0.0))  # at and above the last point
        return segs

    def calibrate(self, raw: NDArray[Any]) -> NDArray[np.float64]:
        """Reference calibration in numpy (used by the parser-only peers and by checks)."""
        x = np.asarray(raw, dtype=np.float64)
        if self.table:
            xs, ys = zip(*self.table, strict=True)
            return np.interp(x, xs, ys)
        if self.states:
            return x
        return np.polynomial.polynomial.polyval(x, self.poly)

    def full_states(self) -> dict[int, str]:
        """States with every undefined code named CODE_<n> (parsers that reject unknowns)."""
        out = {c: f"CODE_{c}" for c in range(self.raw_max + 1)} if self.bit_size <= 8 else {}
        out.update(self.states)
        return out

    def state_code(self, name: str) -> int:
        for code, state in self.states.items():
            if state == name:
                return code
        if name.startswith("CODE_"):
            return int(name[5:])
        raise KeyError(name)


@dataclass(frozen=True)
class CounterSpec:
    bit_offset: int
    bit_size: int
    first: int
    modulus: int
    minor_frames: int

    def minor_index(self, counter: NDArray[Any]) -> NDArray[np.int64]:
        return (np.asarray(counter, dtype=np.int64) - self.first) % self.minor_frames

    def counter_values(self, minor: int) -> list[int]:
        """Counter values that put a frame at this minor-frame index."""
        return [v for v in range(self.first, self.first + self.modulus)
                if (v - self.first) % self.minor_frames == minor]


@dataclass(frozen=True)
class FrameSpec:
    vehicle: str
    stream: str
    nbytes: int
    counter: CounterSpec
    fields: list[FieldSpec]
    skipped: list[tuple[str, str]]  # (parameter id, why no peer can take it)

    def by_id(self) -> dict[str, FieldSpec]:
        return {f.id: f for f in self.fields}


def _location(words: Sequence[int], lsb: int, width: int, word_bits: int) -> tuple[int, int]:
    n = len(words)
    total = n * word_bits
    return words[0] * word_bits + total - (lsb + width), width


def frame_spec(defn: Any) -> FrameSpec:
    """Flatten our VehicleDefinition into FieldSpecs (attribute names as in definitions.py)."""
    frame = defn.frame
    wb = frame.word_bits
    c = frame.counter
    cwords = list(c.words if getattr(c, "words", None) else [c.word])
    clsb, cmsb = c.bits if c.bits is not None else (0, len(cwords) * wb - 1)
    coff, csize = _location(cwords, clsb, cmsb - clsb + 1, wb)
    counter = CounterSpec(coff, csize, int(c.first), int(c.modulus), int(frame.minor_frames))
    fields: list[FieldSpec] = []
    skipped: list[tuple[str, str]] = []
    for p in defn.parameters:
        words = list(p.words)
        if words != list(range(words[0], words[0] + len(words))):
            skipped.append((p.id, f"words {words} are not adjacent"))
            continue
        off, size = _location(words, p.lsb, p.width, wb)
        cal = p.calibration
        kind = cal.kind if cal is not None else "poly"
        lim = p.limits
        fields.append(FieldSpec(
            id=p.id, type=p.type, bit_offset=off, bit_size=size,
            frames=None if p.frames is None else tuple(p.frames),
            poly=tuple(float(x) for x in p.poly) if kind == "poly" else (),
            table=tuple((float(r), float(e)) for r, e in cal.table) if kind == "table" else (),
            states=dict(cal.states) if kind == "states" else {},
            yellow=_pair(lim.yellow) if lim else None,
            red=_pair(lim.red) if lim else None,
            yellow_states=tuple(lim.yellow_states or ()) if lim else (),
            red_states=tuple(lim.red_states or ()) if lim else (),
            unit=str(getattr(p, "unit", "") or ""),
        ))
    nbytes = frame.words * wb // 8
    return FrameSpec(defn.vehicle, defn.stream, nbytes, counter, fields, skipped)


def _pair(p: Any) -> tuple[float | None, float | None] | None:
    if p is None:
        return None
    lo, hi = p
    return (None if lo is None else float(lo), None if hi is None else float(hi))


# --- numpy helpers for parser-only peers ------------------------------------------------


def severity(values: NDArray[Any], f: FieldSpec) -> NDArray[np.int8]:
    """Limit severity (0 nominal, 1 yellow, 2 red) of engineering values or state names.

    Same rule as ours: out of limits when strictly beyond a limit; red overrides yellow.
    """
    out = np.zeros(np.shape(values), dtype=np.int8)
    if f.type == "discrete":
        if f.yellow_states:
            out[np.isin(values, f.yellow_states)] = YELLOW
        if f.red_states:
            out[np.isin(values, f.red_states)] = RED
        return out
    for pair, level in ((f.yellow, YELLOW), (f.red, RED)):
        if pair is None:
            continue
        lo, hi = pair
        if lo is not None:
            out[values < lo] = level
        if hi is not None:
            out[values > hi] = level
    return out


def fake_ccsds_headers(n: int, data_bytes: int, apid: int = 0x0A5) -> NDArray[np.uint8]:
    """n CCSDS primary headers (version 0, telemetry, no secondary header, unsegmented),
    sequence counts 0..n-1, packet data length = data_bytes - 1, as (n, 6) bytes."""
    seq = np.arange(n, dtype=np.uint32) % 16384
    hdr = np.empty((n, CCSDS_HEADER_BYTES), dtype=np.uint8)
    hdr[:, 0] = (apid >> 8) & 0x07
    hdr[:, 1] = apid & 0xFF
    hdr[:, 2] = 0xC0 | (seq >> 8).astype(np.uint8)
    hdr[:, 3] = (seq & 0xFF).astype(np.uint8)
    hdr[:, 4] = ((data_bytes - 1) >> 8) & 0xFF
    hdr[:, 5] = (data_bytes - 1) & 0xFF
    return hdr


def fmt_limit(x: float | None, default: float) -> str:
    v = default if x is None else x
    if math.isinf(v):
        return "-1e300" if v < 0 else "1e300"
    return repr(float(v))


# --- the adapter interface ----------------------------------------------------------------


@dataclass
class PeerResult:
    """What a peer decoded from a batch: per parameter, the batch rows that carried it,
    engineering values (state names for discretes) and limit severities."""

    n_values: int
    values: dict[str, tuple[NDArray[np.int64], NDArray[Any], NDArray[np.int8]]] = field(
        default_factory=dict)


class Peer(Protocol):
    name: str  # shown in the table
    package: str  # pip distribution name
    language: str  # the peer's own definition language
    per_frame: bool  # decodes frame by frame in Python (timing may truncate a batch)
    handles: str  # which parameters it decodes and how it treats subcommutation

    def build(self, spec: FrameSpec, workdir: Any) -> None: ...

    def run(self, frames: NDArray[np.uint8]) -> int:
        """Decode, calibrate and limit-check a batch; return the number of values."""
        ...

    def collect(self, frames: NDArray[np.uint8]) -> PeerResult:
        """As run(), keeping every value and severity for the agreement check."""
        ...


def rows_for(f: FieldSpec, minor: NDArray[np.int64]) -> NDArray[np.int64]:
    """Batch rows whose minor-frame index carries this field."""
    if f.frames is None:
        return np.arange(minor.size, dtype=np.int64)
    return np.flatnonzero(np.isin(minor, f.frames))


def names_to_codes(f: FieldSpec, names: Iterable[Any]) -> NDArray[np.float64]:
    return np.array([f.state_code(str(n)) for n in names], dtype=np.float64)


def synthetic_frames(defn: Any, n: int, start_counter: int | None = None,
                     seed: int = 1975) -> NDArray[np.uint8]:
    """n random frames with a valid sync pattern and a running frame counter.

    Stands in for realistic frames when the frame encoder is not available.
    """
    frame = defn.frame
    nbytes = frame.words * frame.word_bits // 8
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    c = frame.counter
    cwords = list(c.words if getattr(c, "words", None) else [c.word])
    clsb, cmsb = c.bits if c.bits is not None else (0, len(cwords) * 8 - 1)
    first = int(c.first) if start_counter is None else int(start_counter)
    values = (first - int(c.first) + np.arange(n)) % int(c.modulus) + int(c.first)
    cmask = ((1 << (cmsb - clsb + 1)) - 1) << clsb
    nb = len(cwords)
    word_val = np.zeros(n, dtype=np.uint64)
    for j, w in enumerate(cwords):
        word_val |= out[:, w].astype(np.uint64) << np.uint64(8 * (nb - 1 - j))
    word_val = (word_val & np.uint64(~cmask & ((1 << (8 * nb)) - 1))) | (
        values.astype(np.uint64) << np.uint64(clsb))
    for j, w in enumerate(cwords):
        out[:, w] = ((word_val >> np.uint64(8 * (nb - 1 - j))) & np.uint64(0xFF)).astype(np.uint8)
    s0, s1 = frame.sync.words
    ns = s1 - s0 + 1
    mask = int(frame.sync.mask if frame.sync.mask is not None else (1 << (8 * ns)) - 1)
    sync = np.zeros(n, dtype=np.uint64)
    for j, w in enumerate(range(s0, s1 + 1)):
        sync |= out[:, w].astype(np.uint64) << np.uint64(8 * (ns - 1 - j))
    pattern = np.where(values & 1, frame.sync.pattern ^ frame.sync.complement_odd,
                       frame.sync.pattern).astype(np.uint64)
    sync = (sync & np.uint64(~mask & ((1 << (8 * ns)) - 1))) | (pattern & np.uint64(mask))
    for j, w in enumerate(range(s0, s1 + 1)):
        out[:, w] = ((sync >> np.uint64(8 * (ns - 1 - j))) & np.uint64(0xFF)).astype(np.uint8)
    return out


def extract(frames: NDArray[np.uint8], bit_offset: int, bit_size: int) -> NDArray[np.int64]:
    """Unsigned big-endian bit field of each frame (up to 56 bits)."""
    first, last = bit_offset // 8, (bit_offset + bit_size - 1) // 8
    value = np.zeros(frames.shape[0], dtype=np.int64)
    for b in range(first, last + 1):
        value = (value << 8) | frames[:, b]
    value >>= (last + 1) * 8 - (bit_offset + bit_size)
    return value & ((1 << bit_size) - 1)


def minor_of(frames: NDArray[np.uint8], spec: FrameSpec) -> NDArray[np.int64]:
    c = spec.counter
    return c.minor_index(extract(frames, c.bit_offset, c.bit_size))
