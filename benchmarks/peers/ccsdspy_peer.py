"""ccsdspy: numpy-vectorised fixed-length packet decoding, with numpy limit checks around it.

The frame is a `FixedLength` packet loaded from ccsdspy's CSV packet definition (name,
data_type, bit_length, bit_offset: explicit bit offsets for each field), calibrated
by ccsdspy's own converters (`PolyConverter` for polynomials, `EnumConverter` for states,
and a `Converter` subclass using np.interp for piecewise-linear tables, since ccsdspy has
none). ccsdspy only reads CCSDS space packets: `FixedLength.load` always parses a 6-byte
primary header and takes the packet length from it. So each 128-byte frame gets a fake
primary header (APID 0xA5, sequence count = row, packet data length 127) prepended, the
field offsets shift by 48 bits, and the header build is part of the timed work.
ccsdspy decodes every field of every packet; subcommutated parameters are then picked out
of their minor frames with numpy, and limits are checked with numpy.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import (
    CCSDS_HEADER_BYTES,
    FrameSpec,
    PeerResult,
    fake_ccsds_headers,
    severity,
)


def _interp_converter() -> Any:
    from ccsdspy.converters import Converter

    class InterpConverter(Converter):
        """Piecewise-linear table (held constant past the end points)."""

        def __init__(self, points: list[tuple[float, float]]):
            self.xs = np.array([p[0] for p in points], dtype=np.float64)
            self.ys = np.array([p[1] for p in points], dtype=np.float64)

        def convert(self, field_array: NDArray[Any]) -> NDArray[np.float64]:
            return np.interp(field_array.astype(np.float64), self.xs, self.ys)

    return InterpConverter


def packet_fields(spec: FrameSpec) -> list[tuple[str, int, int]]:
    """(name, bit_offset including the fake header, bit_length) for each field."""
    h = CCSDS_HEADER_BYTES * 8
    c = spec.counter
    out = [("FRAME_ID", h + c.bit_offset, c.bit_size)]
    out += [(f.id, h + f.bit_offset, f.bit_size) for f in spec.fields]
    return sorted(out, key=lambda x: x[1])


def packet_csv(spec: FrameSpec) -> str:
    """ccsdspy's packet definition file (name, data_type, bit_length, bit_offset)."""
    lines = ["name, data_type, bit_length, bit_offset"]
    lines += [f"{n}, uint, {size}, {off}" for n, off, size in packet_fields(spec)]
    return "\n".join(lines) + "\n"


class CcsdspyPeer:
    name = "ccsdspy + numpy limits"
    package = "ccsdspy"
    language = "ccsdspy packet definition CSV (FixedLength.from_file) + converters"
    per_frame = False
    handles = ("all parameters; subcommutated ones picked out of their minor frames "
               "with numpy")

    def build(self, spec: FrameSpec, workdir: Path) -> None:
        import ccsdspy
        from ccsdspy.converters import EnumConverter, PolyConverter

        logging.getLogger("ccsdspy").setLevel(logging.ERROR)
        interp = _interp_converter()
        self.spec = spec
        self.fields = spec.fields
        path = Path(workdir) / "apollo_ccsdspy.csv"
        path.write_text(packet_csv(spec))
        self.definition_file = path
        pkt = ccsdspy.FixedLength.from_file(str(path))
        for f in spec.fields:
            if f.type == "discrete":
                conv: Any = EnumConverter(f.full_states())
            elif f.table:
                conv = interp(list(f.table))
            else:
                conv = PolyConverter(list(reversed(f.poly)))  # highest power first
            pkt.add_converted_field(f.id, f"{f.id}_eng", conv)
        self.packet = pkt
        c = spec.counter
        self.minor_lut = np.full(1 << c.bit_size, -1, dtype=np.int64)
        for v in range(c.first, c.first + c.modulus):
            self.minor_lut[v] = (v - c.first) % c.minor_frames
        self.subcom = {f.id: np.isin(np.arange(c.minor_frames), f.frames)
                       for f in spec.fields if f.frames is not None}

    def _decode(self, frames: NDArray[np.uint8]
                ) -> dict[str, tuple[NDArray[np.int64] | slice, NDArray[Any], NDArray[np.int8]]]:
        n = frames.shape[0]
        buf = np.empty((n, CCSDS_HEADER_BYTES + frames.shape[1]), dtype=np.uint8)
        buf[:, :CCSDS_HEADER_BYTES] = fake_ccsds_headers(n, frames.shape[1])
        buf[:, CCSDS_HEADER_BYTES:] = frames
        arrays = self.packet.load(io.BytesIO(buf.tobytes()))
        minor = self.minor_lut[arrays["FRAME_ID"]]
        out: dict[str, tuple[NDArray[np.int64] | slice, NDArray[Any], NDArray[np.int8]]] = {}
        for f in self.fields:
            eng = arrays[f"{f.id}_eng"]
            if f.frames is None:
                rows: NDArray[np.int64] | slice = slice(None)
            else:
                rows = np.flatnonzero(self.subcom[f.id][minor])
                eng = eng[rows]
            out[f.id] = (rows, eng, severity(eng, f))
        return out

    def run(self, frames: NDArray[np.uint8]) -> int:
        return sum(v[1].shape[0] for v in self._decode(frames).values())

    def collect(self, frames: NDArray[np.uint8]) -> PeerResult:
        out = self._decode(frames)
        res = PeerResult(n_values=sum(v[1].shape[0] for v in out.values()))
        every = np.arange(frames.shape[0], dtype=np.int64)
        for f in self.fields:
            rows, eng, sev = out[f.id]
            res.values[f.id] = (every if isinstance(rows, slice) else rows, eng, sev)
        return res
