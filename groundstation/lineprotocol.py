"""InfluxDB line protocol for decoded batches.

Schema: measurement `tm`, tags `vehicle`, `stream` and `source` (live, or replay/<session>),
one field per parameter id, timestamp = the sample's frame time in ns. A frame's samples
share one line, so (measurement, tags, timestamp) identifies a frame and a rewrite of the
same frame overwrites it instead of adding a point: that is what makes retries idempotent.
Discretes and counters are integer fields; analog values are floats.
"""

from __future__ import annotations

from groundstation.decom import PAD, DecodedBatch

MEASUREMENT = "tm"


def escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def series_key(vehicle: str, stream: str, source: str) -> str:
    # Tags in key order: InfluxDB sorts them anyway, and sorted input is cheaper for it.
    return (f"{MEASUREMENT},source={escape_tag(source)},stream={escape_tag(stream)},"
            f"vehicle={escape_tag(vehicle)}")


def batch_lines(batch: DecodedBatch, source: str) -> list[str]:
    d = batch.definition
    key = series_key(d.vehicle, d.stream, source)
    ints = [p.type != "analog" for p in d.parameters]
    names = [p.id for p in d.parameters]
    lines: list[str] = []
    eng = batch.eng.tolist()
    pidx = batch.param_index.tolist()
    for t, row_idx, row_val in zip(batch.times_ns.tolist(), pidx, eng, strict=True):
        fields = [f"{names[i]}={int(v)}i" if ints[i] else f"{names[i]}={v!r}"
                  for i, v in zip(row_idx, row_val, strict=True) if i != PAD]
        if fields:
            lines.append(f"{key} {','.join(fields)} {t}")
    for pid, (times, values, _) in batch.derived.items():
        lines.extend(f"{key} {pid}={v!r} {t}"
                     for t, v in zip(times.tolist(), values.tolist(), strict=True))
    return lines
