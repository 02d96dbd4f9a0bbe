"""InfluxDB line protocol for decoded batches.

Schema: measurement `tm`, tags `vehicle`, `stream` and `source` (live, or replay/<session>),
one field per parameter id, timestamp = the sample's frame time in ns. A frame's samples
(derived parameters included) share one line, so (measurement, tags, timestamp) identifies
a frame and a rewrite of the same frame overwrites it instead of adding a point: that is
what makes retries idempotent. Discretes and counters are integer fields; analog values
are floats.

Formatting is the ingest's most expensive step if done value by value (a float's repr
costs more than decoding it), so one-word values, which are most of them, are formatted
once per possible raw word: `LineFormatter` keeps a table of ready-made `name=value,`
strings aligned with the decommutator's lookup tables, and a batch's fields are a take()
from it and a join per line.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core.decom import PAD, DecodedBatch, Decommutator

MEASUREMENT = "tm"


def escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def series_key(vehicle: str, stream: str, source: str) -> str:
    # Tags in key order: InfluxDB sorts them anyway, and sorted input is cheaper for it.
    return (f"{MEASUREMENT},source={escape_tag(source)},stream={escape_tag(stream)},"
            f"vehicle={escape_tag(vehicle)}")


class LineFormatter:
    """Line protocol for one decommutator's batches.

    `table[j]` is the `name=value,` text of lookup-table entry j, made the first time a
    batch needs it (a one-word parameter has 256 entries, a two-word one 65536, of which a
    pass uses few); padding entries are empty."""

    def __init__(self, decom: Decommutator):
        d = decom.definition
        self.names = [p.id for p in d.parameters]
        self.integer = [p.type != "analog" for p in d.parameters]
        self.owner, self.n_table = decom.table_layout()
        self.eng = decom.eng_table
        self.table: NDArray[Any] = np.full(self.owner.size, "", dtype=object)
        self.made = self.owner == PAD

    def _make(self, positions: NDArray[np.int64]) -> None:
        positions = np.unique(positions)
        names, integer, owner = self.names, self.integer, self.owner
        self.table[positions] = [
            f"{names[i]}={int(v)}i," if integer[i] else f"{names[i]}={v!r},"
            for i, v in zip(owner[positions].tolist(), self.eng[positions].tolist(),
                            strict=True)]
        self.made[positions] = True

    def lines(self, batch: DecodedBatch, source: str) -> list[str]:
        d = batch.definition
        key = series_key(d.vehicle, d.stream, source)
        if batch.n_good == 0:
            return []
        columns: list[list[str]] = []
        k_table = 0
        if batch.lut_index is not None:
            idx = batch.lut_index
            k_table = idx.shape[1]
            missing = ~self.made.take(idx)
            if missing.any():
                self._make(idx[missing])
            columns.append(list(map("".join, self.table.take(idx).tolist())))
        names, integer = self.names, self.integer
        for k in range(k_table, batch.eng.shape[1]):  # values wider than 16 bits
            columns.append([
                "" if i == PAD else f"{names[i]}={int(v)}i," if integer[i]
                else f"{names[i]}={v!r},"
                for i, v in zip(batch.param_index[:, k].tolist(), batch.eng[:, k].tolist(),
                                strict=True)])
        for pid, (times, values, _) in batch.derived.items():
            columns.append(self._derived_column(batch, pid, times, values))
        out = []
        for t, *parts in zip(batch.times_ns.tolist(), *columns, strict=True):
            body = "".join(parts)
            if body:
                out.append(f"{key} {body[:-1]} {t}")
        return out

    @staticmethod
    def _derived_column(batch: DecodedBatch, pid: str, times: NDArray[np.int64],
                        values: NDArray[np.float64]) -> list[str]:
        """A derived value belongs on the line of the frame it was computed at."""
        if times.size == batch.n_good and np.array_equal(times, batch.times_ns):
            return [f"{pid}={v!r}," for v in values.tolist()]
        col = [""] * batch.n_good
        rows = np.searchsorted(batch.times_ns, times)
        for r, t, v in zip(rows.tolist(), times.tolist(), values.tolist(), strict=True):
            if r < len(col) and batch.times_ns[r] == t:
                col[r] += f"{pid}={v!r},"
        return col


_formatters: weakref.WeakKeyDictionary[Decommutator, LineFormatter] = (
    weakref.WeakKeyDictionary())


def formatter(decom: Decommutator) -> LineFormatter:
    f = _formatters.get(decom)
    if f is None:
        f = _formatters[decom] = LineFormatter(decom)
    return f


def batch_lines(batch: DecodedBatch, source: str, decom: Decommutator | None = None
                ) -> list[str]:
    """Line protocol for a decoded batch: one line per good frame.

    decom: the decommutator that decoded the batch, for its pre-formatted field table;
    without it every value is formatted one by one (same output, slower)."""
    if decom is not None:
        return formatter(decom).lines(batch, source)
    return _plain_lines(batch, source)


def _plain_lines(batch: DecodedBatch, source: str) -> list[str]:
    d = batch.definition
    key = series_key(d.vehicle, d.stream, source)
    ints = [p.type != "analog" for p in d.parameters]
    names = [p.id for p in d.parameters]
    extra: dict[int, list[str]] = {}
    for pid, (times, values, _) in batch.derived.items():
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            extra.setdefault(t, []).append(f"{pid}={v!r}")
    lines: list[str] = []
    for t, row_idx, row_val in zip(batch.times_ns.tolist(), batch.param_index.tolist(),
                                   batch.eng.tolist(), strict=True):
        fields = [f"{names[i]}={int(v)}i" if ints[i] else f"{names[i]}={v!r}"
                  for i, v in zip(row_idx, row_val, strict=True) if i != PAD]
        fields += extra.get(t, [])
        if fields:
            lines.append(f"{key} {','.join(fields)} {t}")
    return lines
