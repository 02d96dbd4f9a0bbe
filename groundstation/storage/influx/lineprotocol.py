"""InfluxDB line protocol: every measurement the ingest writes.

- `tm`: engineering values (`batch_lines`, below);
- `alarms`: alarm events (`alarm_line`);
- `link`: a stream's link quality (`link_line`);
- `ingest`: the ingest's own health (`self_line`).

The schema of each is in the README ("InfluxDB schema").

`tm` in detail: tags `vehicle`, `stream` and `source` (live, or replay/<session>), one
field per parameter id, timestamp = the sample's frame time in ns. A frame's samples
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

import time
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import messages
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


# --- alarms, link quality and self-telemetry ------------------------------------------------


def _fields(values: Mapping[str, object]) -> str:
    out = []
    for k, v in values.items():
        if v is None or isinstance(v, dict):
            continue
        if isinstance(v, bool):
            out.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int):
            out.append(f"{k}={v}i")
        elif isinstance(v, float):
            if np.isfinite(v):
                out.append(f"{k}={v!r}")
        else:
            text = str(v).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{k}="{text}"')
    return ",".join(out)


def alarm_line(ev: messages.AlarmEvent) -> str:
    """An alarm event as line protocol: measurement `alarms`, one point per event (its
    engine sequence number is a tag so two events in the same nanosecond stay apart)."""
    tags = (f"alarms,parameter={escape_tag(ev.parameter)},seq={ev.seq},"
            f"source={escape_tag(str(ev.source))},transition={escape_tag(ev.transition.value)},"
            f"vehicle={escape_tag(ev.vehicle)}")
    fields = {"state": ev.state.value, "severity": ev.severity, "side": ev.side,
              "value": ev.value, "value_text": ev.value_text, "limit": ev.limit,
              "operator": ev.operator, "label": ev.label, "unit": ev.unit,
              "console": ev.console}
    return f"{tags} {_fields(fields)} {ev.time_ns}"


def link_line(source: str, vehicle: str, link: messages.LinkStats,
              time_ns: int | None = None) -> str:
    """A stream's link quality: measurement `link`, at the time it was measured."""
    return (f"link,source={escape_tag(source)},vehicle={escape_tag(vehicle)} "
            f"{_fields(link.counters())} {time.time_ns() if time_ns is None else time_ns}")


def self_line(stats: messages.IngestStats) -> str:
    """The ingest's own health: measurement `ingest`, one field per counter."""
    flat: dict[str, object] = stats.model_dump(exclude={"time_ns", "rejected", "sink"})
    for reason, n in stats.rejected.items():
        flat[f"rejected_{reason}"] = n
    for k, v in (stats.sink or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            flat[f"sink_{k}"] = v
    return f"ingest,service=ingest {_fields(flat)} {stats.time_ns}"
