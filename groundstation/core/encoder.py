"""The frame encoder: engineering values to raw counts to minor frames, the decommutator's
inverse. The simulators use it, so what they send is defined by the same file the ingest
decodes with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from groundstation.core.definitions import MAX_LUT_BITS, Parameter, VehicleDefinition


class EncodeError(ValueError):
    pass


class FrameEncoder:
    def __init__(self, definition: VehicleDefinition):
        self.definition = definition
        f = definition.frame
        self.frame_bytes = f.bytes_per_frame
        self.period_ns = round(1e9 / f.rate_hz)
        self._inverse: dict[str, tuple[NDArray[np.float64], bool]] = {}

    # --- values to counts ----------------------------------------------------------------

    def to_counts(self, param: Parameter | str, values: ArrayLike) -> NDArray[np.int64]:
        """Nearest raw count for each engineering value (clamped to the sensor's range).

        Discretes take state names or codes."""
        p = self.definition.parameter(param) if isinstance(param, str) else param
        if p.type == "discrete":
            return self._state_codes(p, values)
        v = np.asarray(values, dtype=np.float64)
        if np.isnan(v).any():
            raise EncodeError(f"{self.definition.vehicle}.{p.id}: cannot encode NaN")
        if p.width > MAX_LUT_BITS and p.calibration is not None and p.calibration.table is None:
            c = p.poly or [0.0, 1.0]
            if len(c) > 2 and any(c[2:]):
                raise EncodeError(f"{p.id}: nonlinear calibration on a {p.width}-bit value")
            raw = np.rint((v - c[0]) / (c[1] if len(c) > 1 else 1.0))
            return np.clip(raw, 0, p.raw_max).astype(np.int64)
        if p.width > MAX_LUT_BITS:
            return np.clip(np.rint(v), 0, p.raw_max).astype(np.int64)
        table, increasing = self._table(p)
        key = v if increasing else -v
        sorted_table = table if increasing else -table
        hi = np.clip(np.searchsorted(sorted_table, key), 1, table.size - 1)
        lo = hi - 1
        nearer_hi = np.abs(sorted_table[hi] - key) < np.abs(key - sorted_table[lo])
        return np.where(nearer_hi, hi, lo).astype(np.int64)

    def _table(self, p: Parameter) -> tuple[NDArray[np.float64], bool]:
        if p.id not in self._inverse:
            eng = p.calibrate(np.arange(p.raw_max + 1))
            self._inverse[p.id] = (eng, bool(eng[-1] >= eng[0]))
        return self._inverse[p.id]

    def _state_codes(self, p: Parameter, values: ArrayLike) -> NDArray[np.int64]:
        states = p.calibration.states if p.calibration and p.calibration.states else {}
        by_name = {name: code for code, name in states.items()}
        arr = np.asarray(values)
        if arr.dtype.kind in "iuf":
            codes = arr.astype(np.int64)
            bad = ~np.isin(codes, list(states))
            if bad.any():
                raise EncodeError(f"{p.id}: code {codes[bad].flat[0]} is not a state "
                                  f"({states})")
            return codes
        flat = [by_name.get(str(x)) for x in arr.ravel()]
        if None in flat:
            wrong = arr.ravel()[flat.index(None)]
            raise EncodeError(f"{p.id}: {wrong!r} is not a state; states are "
                              f"{sorted(by_name)}")
        return np.asarray(flat, dtype=np.int64).reshape(arr.shape)

    # --- frames --------------------------------------------------------------------------

    def counters(self, start_counter: int, n_frames: int) -> NDArray[np.int64]:
        c = self.definition.frame.counter
        return c.first + (start_counter - c.first + np.arange(n_frames)) % c.modulus

    def encode(self, values: Mapping[str, Any], n_frames: int, start_counter: int | None = None,
               *, strict: bool = True) -> NDArray[np.uint8]:
        """Build n_frames minor frames, the first carrying counter start_counter.

        values: engineering value per parameter id, a scalar or one value per frame (only
        the frames where the parameter is sampled are read). Parameters not given are sent
        as raw zero. strict: an unknown parameter id is an error.
        """
        d = self.definition
        f = d.frame
        start = f.counter.first if start_counter is None else start_counter
        frames = np.zeros((n_frames, self.frame_bytes), dtype=np.uint8)
        counters = self.counters(start, n_frames)
        self._write_sync(frames, counters)
        minor = (counters - f.counter.first) % f.minor_frames
        known = {p.id for p in d.parameters}
        if strict:
            unknown = [k for k in values if k not in known]
            if unknown:
                raise EncodeError(f"{d.vehicle} has no parameter {unknown[0]!r}")
        for p in d.parameters:
            if p.id not in values:
                continue
            rows = (np.arange(n_frames) if p.frames is None
                    else np.flatnonzero(np.isin(minor, p.frames)))
            if rows.size == 0:
                continue
            v = values[p.id]
            arr = np.asarray(v)
            if arr.ndim and arr.shape[0] == n_frames:
                v = arr[rows]
            counts = np.broadcast_to(self.to_counts(p, v), rows.shape)
            self._write_field(frames, rows, p, counts)
        return frames

    def _write_sync(self, frames: NDArray[np.uint8], counters: NDArray[np.int64]) -> None:
        f = self.definition.frame
        first, last = f.sync.words
        odd = (counters & 1).astype(bool)
        pattern = np.where(odd, f.sync.pattern ^ f.sync.complement_odd, f.sync.pattern)
        mask = f.sync.mask or 0
        pattern = pattern & mask
        for col in range(first, last + 1):
            shift = 8 * (last - col)
            frames[:, col] |= ((pattern >> shift) & 0xFF).astype(np.uint8)
        c = f.counter
        assert c.words is not None
        cp = Parameter(id="counter", type="counter", words=c.words, unit="count")
        lsb, msb = c.bits if c.bits is not None else (0, 8 * len(c.words) - 1)
        cp.lsb, cp.width = lsb, msb - lsb + 1
        self._write_field(frames, np.arange(frames.shape[0]), cp, counters)

    @staticmethod
    def _write_field(frames: NDArray[np.uint8], rows: NDArray[np.int64], p: Parameter,
                     counts: NDArray[np.int64]) -> None:
        assert p.words is not None
        n = len(p.words)
        shifted = counts.astype(np.uint64) << np.uint64(p.lsb)
        field_mask = ((1 << p.width) - 1) << p.lsb
        for j, w in enumerate(p.words):
            shift = 8 * (n - 1 - j)
            byte_mask = (field_mask >> shift) & 0xFF
            if not byte_mask:
                continue
            byte = ((shifted >> np.uint64(shift)) & np.uint64(byte_mask)).astype(np.uint8)
            frames[rows, w] = (frames[rows, w] & np.uint8(~byte_mask & 0xFF)) | byte
