"""Line protocol: the fast table-driven formatter writes exactly what plain formatting does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.paths import defs_dir
from groundstation.storage.influx import lineprotocol
from groundstation.storage.influx.lineprotocol import (
    LineFormatter,
    _float_reprs,
    _plain_lines,
    batch_lines,
    encoded_lines,
    line_count,
)
from tests.paths import MINI

FILES = [*sorted(defs_dir().glob("*.yaml")), MINI]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_fast_lines_equal_plain_lines(path: Path) -> None:
    defn = load_definition(path)
    rng = np.random.default_rng(7)
    enc, stream = FrameEncoder(defn), StreamDecoder(defn)
    values = {}
    for p in defn.parameters:
        if p.type == "discrete":
            assert p.calibration is not None and p.calibration.states is not None
            values[p.id] = rng.choice(sorted(p.calibration.states.values()), 300)
        else:
            lo, hi = p.eng_range()
            values[p.id] = rng.uniform(lo, hi, 300)
    frames = enc.encode(values, 300, start_counter=defn.frame.counter.first)
    frames[17, 0] ^= 0xFF  # a bad frame: no line for it
    frames = np.delete(frames, [40, 41], axis=0)  # a gap: the general gather path
    times = 1_000 + np.arange(frames.shape[0], dtype=np.int64) * 20_000_000
    batch = stream.decode(frames, times)
    fast = batch_lines(batch, "replay/abc", stream.decom)
    plain = _plain_lines(batch, "replay/abc")
    assert fast == plain
    assert len(fast) == batch.n_good == frames.shape[0] - 1
    assert fast[0].startswith(f"tm,source=replay/abc,stream={defn.stream},vehicle="
                              f"{defn.vehicle} ")
    for d in defn.derived:  # derived values ride on their frame's line
        assert any(f" {d.id}=" in line or f",{d.id}=" in line for line in fast)
    # What the ingest submits: the same lines, joined and encoded in one go.
    block = encoded_lines(batch, "replay/abc", stream.decom)
    assert block.data == ("\n".join(plain) + "\n").encode()
    assert block.count == len(plain) == line_count([block])
    assert line_count([block, "alarms,a=b c=1 2"]) == len(plain) + 1


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_fast_lines_equal_plain_lines_in_batches_of_a_few_frames(path: Path) -> None:
    """A live message is a few frames: the small-batch path writes the same lines, frames
    missing and bad ones included, and gives the general path's lines at its bound."""
    defn = load_definition(path)
    rng = np.random.default_rng(8)
    enc, stream = FrameEncoder(defn), StreamDecoder(defn)
    values = {p.id: rng.uniform(*p.eng_range(), 120) for p in defn.parameters
              if p.type == "analog"}
    frames = enc.encode(values, 120, start_counter=defn.frame.counter.first)
    frames[9, 0] ^= 0xFF  # a bad frame
    keep = np.delete(np.arange(120), [20, 21, 55])  # gaps
    times = 1_000 + np.arange(120, dtype=np.int64) * 20_000_000
    at, written = 0, []
    for size in (1, 2, 3, 5, 7, 16, 17, 5, 1, 16, 44):
        idx = keep[at:at + size]
        at += size
        batch = stream.decode(frames[idx], times[idx], seq=idx)
        fast = batch_lines(batch, "live", stream.decom)
        assert fast == _plain_lines(batch, "live")
        assert len(fast) == batch.n_good
        written += fast
    assert len(written) == 116  # 120, less three missing and one bad
    for d in defn.derived:  # every derived parameter written, on some line
        assert any(f",{d.id}=" in line for line in written)


@pytest.mark.parametrize("n", [40, 12])  # the general path, and the one for a few lines
def test_fast_lines_leave_out_frames_without_values_and_keep_derived_on_their_frame(
        n: int) -> None:
    defn = load_definition(MINI)
    enc, stream = FrameEncoder(defn), StreamDecoder(defn)
    values = {p.id: np.full(n, float(np.mean(p.eng_range()))) for p in defn.parameters
              if p.type == "analog"}
    frames = enc.encode(values, n, start_counter=defn.frame.counter.first)
    batch = stream.decode(frames, 10**18 + np.arange(n, dtype=np.int64) * 10**8)
    # A batch where some lines have no table value: only derived ones, or none at all.
    batch.lut_index = batch.lut_index.copy()
    pad = np.flatnonzero(stream.decom.table_layout()[0] == -1)[0]
    batch.lut_index[::3] = pad
    batch.param_index = batch.param_index.copy()
    batch.param_index[::3] = -1
    if defn.derived:
        times, vals, lim = next(iter(batch.derived.values()))
        pid = next(iter(batch.derived))
        batch.derived = {pid: (times[::2], vals[::2], lim[::2])}
    fast = batch_lines(batch, "live", stream.decom)
    assert fast == _plain_lines(batch, "live")
    assert encoded_lines(batch, "live", stream.decom).data == \
        "".join(f"{ln}\n" for ln in fast).encode()


def test_float_reprs_are_repr_of_each_value() -> None:
    rng = np.random.default_rng(3)
    for values in (np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-300, 5e-324] * 5),
                   np.round(rng.normal(28, 0.5, 1000), 1),  # few distinct values
                   rng.normal(0, 1, 1000),  # all distinct
                   np.array([1.5]), np.array([])):
        assert list(_float_reprs(values)) == [repr(v) for v in values.tolist()]


def test_derived_reprs_kept_across_batches_are_repr_of_each_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lineprotocol, "DERIVED_TEXTS_MAX", 16)
    defn = load_definition(MINI)
    f = LineFormatter(StreamDecoder(defn).decom)
    rng = np.random.default_rng(5)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.5, -1.5]
    for size in (8, 30, 200, 30, 8, 1000, 30):  # hits, misses, unions, the bound
        values = rng.choice(np.array(special + list(np.round(rng.normal(0, 9, 40), 1))),
                            size)
        assert list(f._derived_texts("d", values)) == [f",d={v!r}" for v in values.tolist()]
        known, texts = f.derived_texts["d"]
        assert known.size <= 16 and (np.diff(known) > 0).all()
        assert texts.tolist() == [f",d={v!r}" for v in known.view(np.float64).tolist()]
