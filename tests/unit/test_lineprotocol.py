"""Line protocol: the fast table-driven formatter writes exactly what plain formatting does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.paths import defs_dir
from groundstation.storage.influx.lineprotocol import _plain_lines, batch_lines
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
