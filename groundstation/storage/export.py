"""Export a recorded pass's engineering values (`groundstation archive export PASS`).

The frames are read from the archive in chunks (``ArchiveReader.read_frames``), decoded
with the same decommutator the ingest uses (by default with the definitions the pass was
recorded with; ``--limits current`` for today's), and written chunk by chunk, so memory
stays bounded by one chunk however long the pass.

Layouts:

``wide`` (default)
    One row per good frame: ``time_ns``, ``time_utc``, ``get_s`` (seconds of ground
    elapsed time), ``seq``, then one column per parameter (measured, then derived) in the
    definition's order. A cell is empty where the frame does not carry the parameter
    (subcommutated parameters appear once per major frame). Discretes are written as their
    state names; analogs and counters in the canonical unit of the definition.
``long``
    One row per sample: ``time_ns``, ``time_utc``, ``parameter``, ``value`` (a discrete's
    state code), ``text`` (a discrete's state name), ``unit``, ``limit`` (nominal,
    yellow_low, red_high, ...: the limit check without mission-phase context).

Formats: ``csv`` (standard library) or ``parquet`` (needs pyarrow: ``pip install
'groundstation[export]'``), one row group per chunk. Frames that fail their sync or counter
check are left out (they are in the quarantine, see ``archive show``); each frame is
written once, in time order: a frame archived twice (a QoS 1 redelivery) once, frames a
recorder played back later in their place in time.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core.decom import DecodedBatch, StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all, parse_definition
from groundstation.core.limits import LimitState
from groundstation.core.mission_time import LIFTOFF_NS, NS
from groundstation.progress import Progress
from groundstation.storage.archive import ArchiveReader
from groundstation.storage.passes import Pass, drop_repeats

__all__ = ["FORMATS", "LAYOUTS", "ExportResult", "export_pass"]

FORMATS = ("csv", "parquet")
LAYOUTS = ("wide", "long")
_LIMIT_NAMES = {s.value: s.name.lower() for s in LimitState}


@dataclass
class ExportResult:
    path: Path
    rows: int
    frames: int
    skipped_bad: int  # frames that failed sync or counter checks
    repeats: int  # further copies of frames archived more than once, left out
    seconds: float
    columns: list[str]


class _Columns:
    """A definition's parameters as output columns."""

    def __init__(self, defn: VehicleDefinition, only: list[str] | None) -> None:
        ids = defn.all_ids
        if only:
            unknown = [p for p in only if p not in ids]
            if unknown:
                raise ValueError(f"{defn.vehicle} has no parameter {', '.join(unknown)}")
            ids = [p for p in ids if p in only]
        self.ids = ids
        self.units: dict[str, str] = {}
        self.states: dict[str, NDArray[np.str_]] = {}
        for pid in ids:
            p = defn._by_id.get(pid)
            d = next((x for x in defn.derived if x.id == pid), None)
            self.units[pid] = p.unit if p is not None else d.unit if d is not None else ""
            if p is not None and p.calibration is not None and p.calibration.states:
                top = max(max(p.calibration.states), 0) + 1
                names = np.array([p.calibration.states.get(i, str(i)) for i in range(top)])
                self.states[pid] = names


def _state_names(names: NDArray[np.str_], codes: NDArray[np.float64]) -> NDArray[np.str_]:
    c = codes.astype(np.int64)
    ok = (c >= 0) & (c < names.size)
    out = np.where(ok, names[np.clip(c, 0, names.size - 1)], c.astype(str))
    return out.astype(str)


def _decoded_chunks(reader: ArchiveReader, p: Pass, defs: dict[str, VehicleDefinition],
                    current: VehicleDefinition | None, chunk_frames: int,
                    stats: dict[str, int]) -> Iterator[tuple[DecodedBatch, NDArray[np.int64]]]:
    """(decoded batch, seq of its good frames) per chunk of the pass, in time order.

    read_frames gives each frame once, in time order (a recorder's playback in its place,
    a redelivery once); drop_repeats is only a guard. A frame is decoded with the
    definitions of the file starting last at or before it (files sorted by time: a
    playback's file may have been written after later ones)."""
    files = sorted(reader.files(p.vehicle, p.stream, p.source),
                   key=lambda f: (f.header.first_t_ns, f.number))
    starts = np.array([f.header.first_t_ns for f in files] or [0], dtype=np.int64)
    shas = [f.header.definition_sha256 for f in files] or [""]
    decoders: dict[str, StreamDecoder] = {}

    def decoder_for(sha: str) -> StreamDecoder:
        key = "" if current is not None else sha
        if key not in decoders:
            defn = current if current is not None else defs[sha]
            decoders[key] = StreamDecoder(defn)
        return decoders[key]

    last_t = -1
    left_out = reader.stats.repeats  # read_frames counts the copies it leaves out
    dropped_here = 0
    for chunk in reader.read_frames(p.vehicle, p.stream, p.source, p.aos_ns, p.los_ns + 1,
                                    chunk_frames=chunk_frames):
        chunk, last_t, dropped = drop_repeats(chunk, last_t)
        dropped_here += dropped
        stats["repeats"] = reader.stats.repeats - left_out + dropped_here
        if not len(chunk.times_ns):
            continue
        file_of = np.maximum(np.searchsorted(starts, chunk.times_ns, side="right") - 1, 0)
        # Split where the definitions change (a new file with another SHA-256).
        sha_of = np.array([shas[i] for i in file_of.tolist()]) if len(set(shas)) > 1 \
            else None
        cuts = [0, len(chunk.times_ns)]
        if sha_of is not None:
            cuts = [0, *(np.flatnonzero(sha_of[1:] != sha_of[:-1]) + 1).tolist(),
                    len(chunk.times_ns)]
        for a, b in itertools.pairwise(cuts):
            sha = shas[int(file_of[a])]
            dec = decoder_for(sha)
            batch = dec.decode(chunk.frames[a:b], chunk.times_ns[a:b])
            stats["frames"] += b - a
            stats["bad"] += batch.n_frames - batch.n_good
            yield batch, chunk.seq[a:b][batch.rows]
    stats["repeats"] = reader.stats.repeats - left_out + dropped_here


def _wide(batch: DecodedBatch, cols: _Columns) -> dict[str, NDArray[Any]]:
    t = batch.times_ns
    out: dict[str, NDArray[Any]] = {}
    for pid in cols.ids:
        st, v, _ = batch.series(pid)
        col = np.full(t.size, np.nan)
        if st.size:
            col[np.searchsorted(t, st)] = v
        out[pid] = col
    return out


def _long(batch: DecodedBatch, cols: _Columns) -> dict[str, NDArray[Any]]:
    parts: dict[str, list[NDArray[Any]]] = {k: [] for k in
                                            ("time_ns", "parameter", "value", "limit", "order")}
    for i, pid in enumerate(cols.ids):
        st, v, lim = batch.series(pid)
        parts["time_ns"].append(st)
        parts["parameter"].append(np.full(st.size, i, dtype=np.int32))
        parts["value"].append(v)
        parts["limit"].append(lim)
    time_ns = np.concatenate(parts["time_ns"]) if parts["time_ns"] else np.empty(0, np.int64)
    param = np.concatenate(parts["parameter"]) if parts["parameter"] else np.empty(0, np.int32)
    order = np.lexsort((param, time_ns))
    return {"time_ns": time_ns[order], "parameter": param[order],
            "value": np.concatenate(parts["value"])[order] if parts["value"] else np.empty(0),
            "limit": np.concatenate(parts["limit"])[order] if parts["limit"]
            else np.empty(0, np.int8)}


def _utc_strings(t: NDArray[np.int64]) -> NDArray[np.str_]:
    return np.char.add(np.datetime_as_string(t.astype("datetime64[ns]"), unit="us"), "Z")


def _csv_cell(col: NDArray[Any]) -> NDArray[np.str_]:
    if col.dtype.kind == "f":
        text = col.astype(str)
        return np.where(np.isnan(col), "", text)
    return col.astype(str)


class _CsvWriter:
    def __init__(self, path: Path, header: list[str]) -> None:
        self.f = path.open("w", newline="", encoding="utf-8")
        csv.writer(self.f).writerow(header)

    def write(self, columns: list[NDArray[np.str_]]) -> None:
        if not columns or not columns[0].size:
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerows(zip(*(c.tolist() for c in columns), strict=True))
        self.f.write(buf.getvalue())

    def close(self) -> None:
        self.f.close()


def _parquet() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("Parquet needs pyarrow: pip install 'groundstation[export]' "
                         "(or pip install pyarrow)") from None
    return pa, pq


def export_pass(root: str | Path, p: Pass, output: str | Path, *, fmt: str = "csv",
                layout: str = "wide", limits: str = "recorded",
                definitions: Mapping[str, VehicleDefinition] | None = None,
                parameters: list[str] | None = None,
                chunk_frames: int = 8192, progress: bool = True,
                progress_stream: Any = None) -> ExportResult:
    """Write a pass's engineering values to ``output``; see the module docstring."""
    if fmt not in FORMATS or layout not in LAYOUTS:
        raise ValueError(f"format must be one of {FORMATS}, layout one of {LAYOUTS}")
    started = time.monotonic()
    reader = ArchiveReader(root)
    defs: dict[str, VehicleDefinition] = {}
    current: VehicleDefinition | None = None
    if limits == "current":
        known = definitions if definitions is not None else load_all()
        main = known.get(p.vehicle)
        current = main.stream_definition(p.stream) if main is not None else None
        if current is None:
            raise ValueError(f"no current definition for {p.vehicle}/{p.stream}")
    else:
        for sha in p.definitions:
            recorded = reader.definition_text(sha) if sha else None
            if recorded is None:
                raise ValueError(f"the definitions {p.vehicle} was recorded with "
                                 f"({sha[:12] or 'unknown'}) are not in the archive; "
                                 "export with --limits current")
            defs[sha] = parse_definition(recorded, f"<archive definition {sha[:12]}>")
    first = current if current is not None else defs[p.definitions[0]]
    cols = _Columns(first, parameters)
    if fmt == "parquet":
        pa, pq = _parquet()
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    if layout == "wide":
        header = ["time_ns", "time_utc", "get_s", "seq", *cols.ids]
    else:
        header = ["time_ns", "time_utc", "parameter", "value", "text", "unit", "limit"]
    bar = Progress(p.frames, desc=f"export {p.id}", enabled=progress, stream=progress_stream)
    stats = {"frames": 0, "bad": 0, "repeats": 0}
    rows = 0
    writer: Any = None
    names = np.array(cols.ids)
    units = np.array([cols.units[i] for i in cols.ids])
    try:
        if fmt == "csv":
            writer = _CsvWriter(tmp, header)
        for batch, seq in _decoded_chunks(reader, p, defs, current, chunk_frames, stats):
            if layout == "wide":
                values = _wide(batch, cols)
                t = batch.times_ns
                table: dict[str, NDArray[Any]] = {
                    "time_ns": t, "time_utc": _utc_strings(t),
                    "get_s": (t - LIFTOFF_NS) / NS, "seq": seq}
                for pid in cols.ids:
                    v = values[pid]
                    if pid in cols.states:
                        text = _state_names(cols.states[pid], np.nan_to_num(v, nan=-1))
                        if fmt == "csv":
                            table[pid] = np.where(np.isnan(v), "", text)
                        else:  # parquet: null where the frame does not carry it
                            named = text.astype(object)
                            named[np.isnan(v)] = None
                            table[pid] = named
                    else:
                        table[pid] = v
            else:
                lg = _long(batch, cols)
                t = lg["time_ns"]
                pidx = lg["parameter"]
                text = np.full(t.size, "", dtype=object)
                for i, pid in enumerate(cols.ids):
                    if pid in cols.states:
                        sel = pidx == i
                        text[sel] = _state_names(cols.states[pid], lg["value"][sel])
                table = {"time_ns": t, "time_utc": _utc_strings(t), "parameter": names[pidx],
                         "value": lg["value"], "text": text.astype(str), "unit": units[pidx],
                         "limit": np.array([_LIMIT_NAMES.get(int(x), str(int(x)))
                                            for x in range(-2, 3)])[lg["limit"] + 2]}
            n = len(table["time_ns"])
            if fmt == "csv":
                writer.write([_csv_cell(np.asarray(table[h])) for h in header])
            else:
                arrays = []
                for h in header:
                    col = table[h]
                    if h == "time_utc":
                        arrays.append(pa.array(table["time_ns"], pa.timestamp("ns", tz="UTC")))
                    elif isinstance(col, np.ndarray) and col.dtype == object:
                        arrays.append(pa.array(col.tolist(), pa.string()))
                    elif col.dtype.kind == "f":
                        arrays.append(pa.array(col, mask=np.isnan(col)))
                    else:
                        arrays.append(pa.array(col))
                tbl = pa.Table.from_arrays(arrays, names=header)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, tbl.schema)
                writer.write_table(tbl)
            rows += n
            bar.update(batch.n_frames)
        if writer is None and fmt == "parquet":
            # An empty pass still gives a readable file with the columns.
            writer = pq.ParquetWriter(tmp, pa.schema([(h, pa.float64()) for h in header]))
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        bar.close(note="failed")
        raise
    writer.close()
    tmp.replace(output)
    bar.close(note=f"{rows:,} rows")
    return ExportResult(output, rows, stats["frames"], stats["bad"], stats["repeats"],
                        time.monotonic() - started, header)

