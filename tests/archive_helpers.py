"""What the archive, passes and replay tests share: archiving the mini vehicle's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.mission_time import parse_time_ns
from groundstation.storage.archive import ArchiveWriter
from tests.paths import MINI

T0 = parse_time_ns("1975-07-17T16:09:09Z")


PERIOD = 20_000_000


FPM = 5


def record(root: Path, spans: list[tuple[int, int]], *, start_seq: int = 0,
           press: float = 5.0, **kw: Any) -> int:
    """Archive mini frames: (start time, frames) spans, FPM frames a record; the frame
    number goes into `range` so every frame is told apart. Returns the next seq."""
    defn = load_definition(MINI)
    enc = FrameEncoder(defn)
    seq = start_seq
    with ArchiveWriter.for_definition(root, defn, **kw) as w:
        for start, n in spans:
            for k in range(0, n, FPM):
                frames = enc.encode({"cabin_press": press, "hatch": "CLOSED",
                                     "range": (seq + np.arange(FPM)) * 0.01}, FPM,
                                    start_counter=1 + seq % 50)
                t = start + k * PERIOD
                w.append(seq, t, frames, t + 5_000_000)
                seq += FPM
    return seq
