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
once per possible raw word: `LineFormatter` keeps a table of ready-made `,name=value`
strings aligned with the decommutator's lookup tables, and a batch's fields are a take()
from it; the whole batch's text is then one join (`LineFormatter.text`), and the ingest
hands it to the sink already encoded (`encoded_lines`), so no Python code runs per line.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import messages
from groundstation.core.decom import PAD, DecodedBatch, Decommutator

MEASUREMENT = "tm"
DERIVED_TEXTS_MAX = 4096  # texts of a derived parameter's values kept (LineFormatter)
SMALL_BATCH = 16  # lines up to which derived values are placed in plain Python


def escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def series_key(vehicle: str, stream: str, source: str) -> str:
    # Tags in key order: InfluxDB sorts them anyway, and sorted input is cheaper for it.
    return (f"{MEASUREMENT},source={escape_tag(source)},stream={escape_tag(stream)},"
            f"vehicle={escape_tag(vehicle)}")


class LineFormatter:
    """Line protocol for one decommutator's batches.

    `table[j]` is the `,name=value` text of lookup-table entry j, made the first time a
    batch needs it (a one-word parameter has 256 entries, a two-word one 65536, of which a
    pass uses few), and `first[j]` the same without its comma (a line's first field);
    padding entries are empty."""

    def __init__(self, decom: Decommutator):
        d = decom.definition
        self.names = [p.id for p in d.parameters]
        self.integer = [p.type != "analog" for p in d.parameters]
        self.owner, self.n_table = decom.table_layout()
        self.eng = decom.eng_table
        self.table: NDArray[Any] = np.full(self.owner.size, "", dtype=object)
        self.first: NDArray[Any] = self.table.copy()  # the same texts without their comma
        self.pad = self.owner == PAD
        self.made = self.pad.copy()
        # Each derived parameter's texts of values seen before: sorted bit patterns and
        # their repr()s (see `_derived_reprs`).
        self.derived_texts: dict[str, tuple[NDArray[np.int64], NDArray[Any]]] = {}

    def _make(self, positions: NDArray[np.int64]) -> None:
        positions = np.unique(positions)
        names, integer, owner = self.names, self.integer, self.owner
        texts = [f",{names[i]}={int(v)}i" if integer[i] else f",{names[i]}={v!r}"
                 for i, v in zip(owner[positions].tolist(), self.eng[positions].tolist(),
                                 strict=True)]
        self.table[positions] = texts
        self.first[positions] = [t[1:] for t in texts]
        self.made[positions] = True

    def lines(self, batch: DecodedBatch, source: str) -> list[str]:
        return self.text(batch, source)[0].split("\n")[:-1]

    def encoded(self, batch: DecodedBatch, source: str) -> EncodedLines:
        text, count = self.text(batch, source)
        return EncodedLines(text.encode(), count)

    def text(self, batch: DecodedBatch, source: str) -> tuple[str, int]:
        """The batch's lines as one text, each line newline-terminated, and their count.

        Every piece of every line is a string in one (lines, pieces) object array: the
        table's ready-made `,name=value` fields (a take()), each derived value's
        `,name=value` (texts kept from batch to batch), and last the line's end, which
        carries the next line's start: ` <timestamp>\\n<series key> `. The first field of
        each line comes from a second table, without its comma. The lines are then one
        join of the whole array: no Python code runs per field, and only the few values
        not in a table (wider than 16 bits, or derived ones not seen before) are formatted
        one by one, by repr() of their list. Fewer pieces a line is what makes it fast:
        the join, and the take() that fills the array, cost per piece."""
        d = batch.definition
        key = series_key(d.vehicle, d.stream, source) + " "
        n = batch.n_good
        if n == 0:
            return "", 0
        k_table = 0 if batch.lut_index is None else batch.lut_index.shape[1]
        n_wide = batch.eng.shape[1] - k_table
        n_fields = k_table + n_wide + len(batch.derived)
        pieces = np.empty((n, n_fields + 1), dtype=object)
        present = np.empty((n, n_fields), dtype=bool)  # which fields each line has
        idx = batch.lut_index
        if idx is not None:
            missing = ~self.made.take(idx)
            if missing.any():
                self._make(idx[missing])
            pieces[:, :k_table] = self.table.take(idx)
            np.logical_not(self.pad.take(idx), out=present[:, :k_table])
        names, integer = self.names, self.integer
        for k in range(k_table, batch.eng.shape[1]):  # values wider than 16 bits
            which = batch.param_index[:, k]
            pieces[:, k] = [
                "" if i == PAD else f",{names[i]}={int(v)}i" if integer[i]
                else f",{names[i]}={v!r}"
                for i, v in zip(which.tolist(), batch.eng[:, k].tolist(), strict=True)]
            present[:, k] = which != PAD
        if n <= SMALL_BATCH:
            # A few lines (a live message): plain Python beats numpy's per-call cost.
            # (the first line of a time, as searchsorted gives in the general path)
            line_of = {t: r for r, t in reversed(list(enumerate(batch.times_ns.tolist())))}
            for j, (pid, (times, values, _)) in enumerate(batch.derived.items(),
                                                          start=k_table + n_wide):
                col, got = [""] * n, [False] * n
                prefix = f",{pid}="
                for t, text in zip(times.tolist(), _reprs(values), strict=True):
                    r = line_of.get(t)
                    if r is not None:  # in time order: two on one line keep their order
                        col[r] += prefix + text
                        got[r] = True
                pieces[:, j] = col
                present[:, j] = got
        else:
            for j, (pid, (times, values, _)) in enumerate(batch.derived.items(),
                                                          start=k_table + n_wide):
                present[:, j] = self._derived_pieces(pieces[:, j], batch, pid, times,
                                                     values)
        # Each line's end and the next one's series key in one piece: " <t>\n<key> ".
        end = "\n" + key
        pieces[:, -1] = (" " + (end + "\x00 ").join(_reprs(batch.times_ns)) + end
                         ).split("\x00")
        has_field = present.any(axis=1)
        if not has_field.all():  # a frame with no value at all has no line
            if not has_field.any():
                return "", 0
            pieces, present, idx = (pieces[has_field], present[has_field],
                                    None if idx is None else idx[has_field])
        n = pieces.shape[0]
        # The first field of a line without its comma: from the table without commas.
        first = present.argmax(axis=1)
        rows = np.arange(n)
        if idx is not None and k_table and (first < k_table).all():
            pieces[rows, first] = self.first.take(idx[rows, first])
        else:
            pieces[rows, first] = [p[1:] for p in pieces[rows, first].tolist()]
        pieces[-1, -1] = pieces[-1, -1][:-len(key)]  # no series key after the last line
        return key + "".join(pieces.ravel().tolist()), n

    def _derived_pieces(self, out: NDArray[Any], batch: DecodedBatch, pid: str,
                        times: NDArray[np.int64], values: NDArray[np.float64]
                        ) -> NDArray[np.bool_]:
        """Fill a column of `out` with a derived value's `,name=value` on the line of the
        frame it was computed at; which lines got one."""
        n = batch.n_good
        if times.size == n and np.array_equal(times, batch.times_ns):
            out[:] = self._derived_texts(pid, values)
            return np.ones(n, dtype=bool)
        out[:] = ""
        rows = np.searchsorted(batch.times_ns, times)
        got = np.zeros(n, dtype=bool)
        if (times.size and rows[-1] < n and (rows[1:] > rows[:-1]).all()
                and np.array_equal(batch.times_ns.take(rows), times)):
            # Each value on a line of its own (the usual case: fewer numpy calls)
            out[rows] = self._derived_texts(pid, values)
            got[rows] = True
            return got
        ok = rows < n
        ok[ok] = batch.times_ns[rows[ok]] == times[ok]
        rows = rows[ok]
        if rows.size == 0:
            return got
        if rows.size > 1 and not (np.diff(rows) > 0).all():
            # Two values on one line (never seen: derived times are sample times): one
            # piece with both, in order.
            col = [""] * n
            for r, v in zip(rows.tolist(), values[ok].tolist(), strict=True):
                col[r] += f",{pid}={v!r}"
            out[:] = col
        else:
            out[rows] = self._derived_texts(pid, values[ok])
        got[rows] = True
        return got

    def _derived_texts(self, pid: str, values: NDArray[np.float64]
                       ) -> NDArray[Any] | list[str]:
        """`,name=value` of every value of a derived parameter. Derived values repeat
        across batches (they are computed from a few raw counts), so the texts of the
        values seen before are kept, by bit pattern (-0.0 and 0.0, NaNs, keep their text),
        up to DERIVED_TEXTS_MAX a parameter: a batch whose values are all known is one
        searchsorted() and one take() (a few us instead of ~20 for np.unique)."""
        prefix = f",{pid}="
        if values.size < 8:
            return [prefix + s for s in _reprs(values)]
        bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
        cached = self.derived_texts.get(pid)
        if cached is not None:
            known, texts = cached
            pos = np.searchsorted(known, bits)
            np.minimum(pos, known.size - 1, out=pos)
            if np.array_equal(known.take(pos), bits):
                return texts.take(pos)
            if known.size >= DERIVED_TEXTS_MAX:
                return [prefix + s for s in _float_reprs(values)]
        distinct, first, inverse = np.unique(bits, return_index=True, return_inverse=True)
        if distinct.size > values.size // 2:
            out: NDArray[Any] = np.array([prefix + s for s in _reprs(values)], dtype=object)
        else:
            out = np.array([prefix + s for s in _reprs(distinct.view(np.float64))],
                           dtype=object).take(inverse)
        new_texts = out.take(first)
        if cached is not None:  # the union, sorted
            merged, where = np.unique(np.concatenate([cached[0], distinct]),
                                      return_index=True)
            distinct, new_texts = merged, np.concatenate([cached[1], new_texts]).take(where)
        if distinct.size <= DERIVED_TEXTS_MAX:
            self.derived_texts[pid] = (distinct, new_texts)
        return out


def _reprs(values: NDArray[Any]) -> list[str]:
    """repr() of every element of a 1-D int or float array (the same text as repr() of
    each; one C call for the list, instead of one Python call for each)."""
    if values.size == 0:
        return []
    return repr(values.tolist())[1:-1].split(", ")


def _float_reprs(values: NDArray[np.float64]) -> NDArray[Any] | list[str]:
    """repr() of every value of a 1-D float array, each distinct value formatted once: a
    float's repr costs ~0.5 us, and derived values repeat (they are computed from a few
    raw counts). Distinct by bit pattern, so -0.0 and 0.0 (and NaNs) keep their text."""
    if values.size < 8:
        return _reprs(values)
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    distinct, inverse = np.unique(bits, return_inverse=True)
    if distinct.size > values.size // 2:
        return _reprs(values)
    return np.array(_reprs(distinct.view(np.float64)), dtype=object).take(inverse)


class EncodedLines:
    """Line protocol already joined and encoded: `count` lines, each newline-terminated.
    What the ingest hands the InfluxDB sink for a batch of frames (see InfluxSink.submit)."""

    __slots__ = ("count", "data")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count

    def __repr__(self) -> str:
        return f"EncodedLines({self.count} lines, {len(self.data)} bytes)"


def line_count(lines: Iterable[str | EncodedLines]) -> int:
    """How many lines: each str is one."""
    return sum(x.count if isinstance(x, EncodedLines) else 1 for x in lines)


_formatters: weakref.WeakKeyDictionary[Decommutator, LineFormatter] = (
    weakref.WeakKeyDictionary())


def formatter(decom: Decommutator) -> LineFormatter:
    f = _formatters.get(decom)
    if f is None:
        f = _formatters[decom] = LineFormatter(decom)
    return f


def encoded_lines(batch: DecodedBatch, source: str, decom: Decommutator) -> EncodedLines:
    """`batch_lines`, joined and encoded in one go: what the ingest submits."""
    return formatter(decom).encoded(batch, source)


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


def fields_text(values: Mapping[str, object]) -> str:
    """Line-protocol fields of one point; None, NaN and nested dicts left out."""
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
    return f"{tags} {fields_text(fields)} {ev.time_ns}"


def link_line(source: str, vehicle: str, link: messages.LinkStats,
              time_ns: int | None = None) -> str:
    """A stream's link quality: measurement `link`, at the time it was measured."""
    return (f"link,source={escape_tag(source)},vehicle={escape_tag(vehicle)} "
            f"{fields_text(link.counters())} {time.time_ns() if time_ns is None else time_ns}")


def self_line(stats: messages.IngestStats) -> str:
    """The ingest's own health: measurement `ingest`, one field per counter."""
    flat: dict[str, object] = stats.model_dump(exclude={"time_ns", "rejected", "sink",
                                                        "instance"})
    for reason, n in stats.rejected.items():
        flat[f"rejected_{reason}"] = n
    for k, v in (stats.sink or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            flat[f"sink_{k}"] = v
    # Instances of a clustered ingest each a series of their own.
    instance = f",instance={escape_tag(stats.instance)}" if stats.instance else ""
    return f"ingest,service=ingest{instance} {fields_text(flat)} {stats.time_ns}"
