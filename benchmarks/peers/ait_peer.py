"""NASA AMMOS Instrument Toolkit (`ait-core`): its tlm.yaml and limits.yaml dictionaries.

The frame becomes one `!Packet` whose `!Field`s sit at byte offsets (`bytes`) with a type
(U8, MSB_U16, MSB_U32) and a `mask` for bit fields; calibration is a `dntoeu` equation
(polynomials in `raw.<field>`; tables through a packet `functions:` entry with one branch
per segment); discretes use `enum`. Subcommutated parameters carry a `when:` guard on the
frame ID, AIT's own idiom for mux-dependent fields. Limits go in limits.yaml as `!Limit`
entries (lower/upper error/warn, value error/warn for states). Per frame we do what AIT's
TelemetryLimitMonitor plugin does: build a `tlm.Packet`, read each field, test error then
warn.

Importing ait.core needs AIT_CONFIG, and importing its tlm module loads leap-second data
(ait.core.dmc), downloading it from the IERS when the cached file is missing or expired.
With no network we write that cache file first: a msgpack file, path from the config key
`leapseconds.filename` (default <config dir>/leapseconds.dat), holding the leap seconds
since the GPS epoch (GPS-UTC 18 s from 2017-01-01, i.e. TAI-UTC 37 s) and a validity date.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import RED, YELLOW, FieldSpec, FrameSpec, PeerResult, minor_of, rows_for

PACKET = "APOLLO_HBR"
_SIZES = {"U8": 1, "MSB_U16": 2, "MSB_U32": 4}

# Dates each leap second took effect since the GPS epoch (1980-01-06); GPS-UTC after it.
LEAP_SECONDS = [
    (1981, 7, 1), (1982, 7, 1), (1983, 7, 1), (1985, 7, 1), (1988, 1, 1), (1990, 1, 1),
    (1991, 1, 1), (1992, 7, 1), (1993, 7, 1), (1994, 7, 1), (1996, 1, 1), (1997, 7, 1),
    (1999, 1, 1), (2006, 1, 1), (2009, 1, 1), (2012, 7, 1), (2015, 7, 1), (2017, 1, 1),
]  # TAI-UTC = 19 + GPS-UTC: 37 s since 2017-01-01


def write_leapseconds(path: Path, valid_days: int = 365) -> None:
    """Write AIT's leapseconds.dat cache in the format ait.core.dmc reads (msgpack, with
    dmc's datetime/tuple tags), valid for `valid_days` from now so AIT does not refetch."""
    import msgpack

    def stamp(d: dt.datetime) -> dict[str, Any]:
        return {"__dmc_datetime__": True, "as_iso_str": d.isoformat(timespec="microseconds")}

    valid = dt.datetime.now() + dt.timedelta(days=valid_days)
    data = {
        "valid": stamp(valid),
        "leapseconds": [
            {"__dmc_tuple__": True, "as_list": [stamp(dt.datetime(*ymd)), i]}
            for i, ymd in enumerate(LEAP_SECONDS, start=1)
        ],
    }
    path.write_bytes(msgpack.packb(data))


def prepare_ait(workdir: Path) -> Path:
    """Write config.yaml and leapseconds.dat; point AIT_CONFIG at them (before importing ait)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    if not config.exists():
        write_leapseconds(workdir / "leapseconds.dat")
        config.write_text(
            "default:\n"
            "  leapseconds:\n    filename: leapseconds.dat\n"
            "  tlmdict:\n    filename: tlm.yaml\n"
            "  limits:\n    filename: limits.yaml\n"
        )
    os.environ.setdefault("AIT_ROOT", str(workdir))
    os.environ.setdefault("AIT_CONFIG", str(config))
    return config


def _field_type(f: FieldSpec, nbytes: int) -> tuple[str, int, int] | None:
    """(AIT type, first byte, mask) reading the field's bytes, or None if it cannot."""
    span = f.last_byte - f.first_byte + 1
    for typ, size in _SIZES.items():
        if size >= span:
            start = min(f.first_byte, nbytes - size)
            shift = (start + size) * 8 - (f.bit_offset + f.bit_size)
            return typ, start, f.raw_max << shift
    return None


def _when(f: FieldSpec, spec: FrameSpec) -> str | None:
    if f.frames is None:
        return None
    ids = sorted(v for m in f.frames for v in spec.counter.counter_values(m))
    return f"raw.FRAME_ID in ({', '.join(str(v) for v in ids)},)"


def _py(x: float) -> str:
    return repr(float(x))


def tlm_yaml(spec: FrameSpec) -> tuple[str, list[FieldSpec]]:
    """The packet dictionary in AIT's tlm.yaml language, and the fields it carries."""
    c = spec.counter
    ctype = _field_type(
        FieldSpec("FRAME_ID", "counter", c.bit_offset, c.bit_size, None), spec.nbytes)
    assert ctype is not None
    out = [f"- !Packet\n  name: {PACKET}\n  desc: {spec.vehicle} {spec.stream} minor frame"]
    funcs: list[str] = []
    fields = [f"    - !Field\n      name: FRAME_ID\n      type: {ctype[0]}\n"
              f"      bytes: {_bytes(ctype)}\n"
              f"      mask: {ctype[2]:#x}"]
    taken: list[FieldSpec] = []
    for f in spec.fields:
        ft = _field_type(f, spec.nbytes)
        if ft is None:
            continue
        typ, _, mask = ft
        size = _SIZES[typ]
        lines = [f"    - !Field\n      name: {f.id}\n      type: {typ}\n"
                 f"      bytes: {_bytes(ft)}"]
        if mask != (1 << (8 * size)) - 1:
            lines.append(f"      mask: {mask:#x}")
        when = _when(f, spec)
        if when:
            lines.append(f'      when: "{when}"')
        if f.type == "discrete":
            lines.append("      enum:")
            lines += [f"        {code}: '{name}'" for code, name in sorted(f.states.items())]
        elif f.table:
            fn = f"cal_{f.id}"
            funcs.append(f"    {fn}(x):")
            segs = f.segments()
            for k, (_lower, c0, c1) in enumerate(segs):
                cond = "True" if k == len(segs) - 1 else f"x < {_py(segs[k + 1][0])}"
                funcs.append(f'      "{cond}": "{_py(c0)} + {_py(c1)} * x"')
            lines.append(f"      dntoeu:\n        equation: {fn}(raw.{f.id})")
            lines.append(f"        units: '{f.unit}'")
        elif f.poly and f.poly != (0.0, 1.0):
            terms = [_py(f.poly[0])] + [
                f"{_py(a)} * raw.{f.id}" + (f" ** {k}" if k > 1 else "")
                for k, a in enumerate(f.poly) if k > 0]
            lines.append(f"      dntoeu:\n        equation: {' + '.join(terms)}")
            lines.append(f"        units: '{f.unit}'")
        fields.append("\n".join(lines))
        taken.append(f)
    if funcs:
        out.append("  functions:\n" + "\n".join(funcs))
    out.append("  fields:\n" + "\n".join(fields))
    return "\n".join(out) + "\n", taken


def _bytes(ft: tuple[str, int, int]) -> str:
    start, size = ft[1], _SIZES[ft[0]]
    return str(start) if size == 1 else f"[{start}, {start + size - 1}]"


def limits_yaml(fields: list[FieldSpec]) -> str:
    out: list[str] = []
    for f in fields:
        if not f.has_limits:
            continue
        entry = [f"- !Limit\n  source: {PACKET}.{f.id}"]
        if f.type == "discrete":
            entry.append("  value:")
            if f.red_states:
                entry.append(f"    error: {list(f.red_states)!r}")
            if f.yellow_states:
                entry.append(f"    warn: {list(f.yellow_states)!r}")
        else:
            for side, k in (("lower", 0), ("upper", 1)):
                err = f.red[k] if f.red else None
                warn = f.yellow[k] if f.yellow else None
                if err is None and warn is None:
                    continue
                entry.append(f"  {side}:")
                if err is not None:
                    entry.append(f"    error: {_py(err)}")
                if warn is not None:
                    entry.append(f"    warn: {_py(warn)}")
        out.append("\n".join(entry))
    return "\n".join(out) + "\n" if out else "[]\n"


class AitPeer:
    name = "NASA AIT (ait-core)"
    package = "ait-core"
    language = "AIT tlm.yaml (!Packet/!Field, dntoeu, enum, when) + limits.yaml (!Limit)"
    per_frame = True
    handles = "all parameters; subcommutated ones only in their minor frames (when: guard)"

    def build(self, spec: FrameSpec, workdir: Path) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        text, self.fields = tlm_yaml(spec)
        (workdir / "tlm.yaml").write_text(text)
        (workdir / "limits.yaml").write_text(limits_yaml(self.fields))
        prepare_ait(workdir)  # before the first ait import: config and leap seconds
        from ait.core import limits, tlm

        self.tlm = tlm
        tlmdict = tlm.TlmDict(str(workdir / "tlm.yaml"))
        self.defn = tlmdict[PACKET]
        lims = limits.LimitsDict(str(workdir / "limits.yaml"))
        self.limit_of = {f.id: lims.get(f"{PACKET}.{f.id}") for f in self.fields}
        self.names = [f.id for f in self.fields]
        self.spec = spec

    def _one(self, buf: bytearray) -> tuple[dict[str, Any], dict[str, int]]:
        pkt = self.tlm.Packet(self.defn, data=buf)
        values: dict[str, Any] = {}
        states: dict[str, int] = {}
        for name in self.names:
            v = pkt._getattr(name)
            if v is None:  # `when` guard false: not sampled in this minor frame
                continue
            values[name] = v
            lim = self.limit_of[name]
            if lim is not None:
                if lim.error(v):
                    states[name] = RED
                elif lim.warn(v):
                    states[name] = YELLOW
        return values, states

    def run(self, frames: NDArray[np.uint8]) -> int:
        n = 0
        for row in frames:
            values, _ = self._one(bytearray(row.tobytes()))
            n += len(values)
        return n

    def collect(self, frames: NDArray[np.uint8]) -> PeerResult:
        per = [self._one(bytearray(row.tobytes())) for row in frames]
        minor = minor_of(frames, self.spec)
        out = PeerResult(n_values=sum(len(v) for v, _ in per))
        for f in self.fields:
            rows = rows_for(f, minor)
            vals = np.array([per[r][0].get(f.id) for r in rows], dtype=object)
            sev = np.array([per[r][1].get(f.id, 0) for r in rows], dtype=np.int8)
            out.values[f.id] = (rows, vals, sev)
        return out
