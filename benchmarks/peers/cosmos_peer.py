"""OpenC3 COSMOS (the `openc3` Python package): its text telemetry definition language.

The frame becomes one TELEMETRY packet: every parameter an ITEM at its bit offset, with
POLY_READ_CONVERSION, SEG_POLY_READ_CONVERSION (piecewise-linear tables, held constant past
the ends as our np.interp does) or STATE ... GREEN/YELLOW/RED, and LIMITS DEFAULT. Each
frame then goes through what COSMOS's decom microservice does per packet: set the buffer,
`check_limits()`, `decom()` (raw, converted and formatted values plus limits states), minus
the Redis/topic write.

COSMOS has no minor-frame subcommutation in one packet: every parameter is decoded in every
frame (IGNORE_OVERLAP lets subcommutated parameters share their word), so it produces more
values per frame than we do; compare values/s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import (
    RED,
    YELLOW,
    FieldSpec,
    FrameSpec,
    PeerResult,
    fmt_limit,
)

TARGET = "APOLLO"
_SEVERITY = {"GREEN": 0, "BLUE": 0, "GREEN_LOW": 0, "GREEN_HIGH": 0, None: 0,
             "YELLOW": YELLOW, "YELLOW_LOW": YELLOW, "YELLOW_HIGH": YELLOW,
             "RED": RED, "RED_LOW": RED, "RED_HIGH": RED}


def item_name(f: FieldSpec) -> str:
    return f.id.upper()


def definition_text(spec: FrameSpec) -> str:
    """The frame in COSMOS's cmd/tlm definition language."""
    pkt = spec.stream.upper()
    lines = [f'TELEMETRY {TARGET} {pkt} BIG_ENDIAN "{spec.vehicle} {spec.stream} minor frame"',
             "  IGNORE_OVERLAP"]
    c = spec.counter
    lines.append(f'  ITEM FRAME_ID {c.bit_offset} {c.bit_size} UINT "minor frame counter"')
    for f in spec.fields:
        lines.append(f'  ITEM {item_name(f)} {f.bit_offset} {f.bit_size} UINT "{f.id}"')
        if f.type == "discrete":
            bad = {s: "RED" for s in f.red_states}
            bad.update({s: "YELLOW" for s in f.yellow_states if s not in bad})
            for code, name in sorted(f.states.items()):
                lines.append(f"    STATE {name} {code} {bad.get(name, 'GREEN')}")
            continue
        if f.table:
            for lower, c0, c1 in f.segments():
                lines.append(f"    SEG_POLY_READ_CONVERSION {lower!r} {c0!r} {c1!r}")
        elif f.poly and f.poly != (0.0, 1.0):
            lines.append("    POLY_READ_CONVERSION " + " ".join(repr(x) for x in f.poly))
        if f.unit and f.unit != "state":
            lines.append(f'    UNITS "{f.unit}" "{f.unit}"')
        if f.has_limits:
            y = f.yellow or (None, None)
            r = f.red or (None, None)
            red_lo = fmt_limit(r[0], -1e300)
            red_hi = fmt_limit(r[1], 1e300)
            # COSMOS wants all four; a missing yellow side coincides with red.
            yel_lo = fmt_limit(y[0], float(red_lo))
            yel_hi = fmt_limit(y[1], float(red_hi))
            lines.append(f"    LIMITS DEFAULT 1 ENABLED {red_lo} {yel_lo} {yel_hi} {red_hi}")
    last_bit = max([f.bit_offset + f.bit_size for f in spec.fields] + [0])
    if last_bit < spec.nbytes * 8:  # pin the packet length to the whole frame
        lines.append(f'  ITEM FRAME_TAIL {spec.nbytes * 8 - 8} 8 UINT "last byte"')
    return "\n".join(lines) + "\n"


class CosmosPeer:
    name = "OpenC3 COSMOS"
    package = "openc3"
    language = "COSMOS tlm text (ITEM/POLY_READ_CONVERSION/SEG_POLY/STATE/LIMITS)"
    per_frame = True
    handles = "all parameters in every minor frame (no subcommutation)"

    def build(self, spec: FrameSpec, workdir: Path) -> None:
        from openc3.packets.packet_config import PacketConfig

        self.spec = spec
        path = Path(workdir) / "cosmos_tlm.txt"
        path.write_text(definition_text(spec))
        self.definition_file = path
        config = PacketConfig()
        config.process_file(str(path), TARGET)
        self.packet = config.telemetry[TARGET][spec.stream.upper()]
        self.fields = spec.fields
        self.values_per_frame = len(spec.fields)

    def _one(self, buf: bytes) -> dict[str, Any]:
        pkt = self.packet
        pkt.buffer = buf
        pkt.check_limits()
        return pkt.decom()

    def run(self, frames: NDArray[np.uint8]) -> int:
        for row in frames:
            self._one(row.tobytes())
        return frames.shape[0] * self.values_per_frame

    def collect(self, frames: NDArray[np.uint8]) -> PeerResult:
        rows = np.arange(frames.shape[0], dtype=np.int64)
        vals: dict[str, list[Any]] = {f.id: [] for f in self.fields}
        sev: dict[str, list[int]] = {f.id: [] for f in self.fields}
        for row in frames:
            h = self._one(row.tobytes())
            for f in self.fields:
                n = item_name(f)
                vals[f.id].append(h.get(f"{n}__C", h[n]))
                sev[f.id].append(_SEVERITY[h.get(f"{n}__L")])
        out = PeerResult(n_values=frames.shape[0] * self.values_per_frame)
        for f in self.fields:
            out.values[f.id] = (rows, np.array(vals[f.id], dtype=object),
                                np.array(sev[f.id], dtype=np.int8))
        return out
