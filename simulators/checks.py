"""Flying a stretch of the mission offline and checking its frames against the limits,
through the real decoder: what the tests (and anyone tuning a model) use.

    mission = Mission(start, definitions=defs)
    report = check_window(mission, defs["apollo_csm"], end)
    report.violations      # parameter -> Violation, empty for a nominal ship

Frames are decoded with the limit context the ingest would use for them: the ship's phase
and the discretes other limit sets look at, taken per physics step, with the batch split
wherever that context changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import flightplan as tl
from groundstation.core.decom import DecodedBatch, StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from simulators.mission import DT, Mission
from simulators.telemetry import FrameBlock, ShipDownlink


@dataclass
class Violation:
    samples: int
    first_get: float
    value: float
    phase: str
    worst: int  # the limit state furthest out (-2 red low ... 2 red high)


@dataclass
class Report:
    vehicle: str
    frames: int = 0
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    violations: dict[str, Violation] = field(default_factory=dict)
    bad_frames: int = 0
    frames_by_stream: dict[str, int] = field(default_factory=dict)


def context_runs(mission: Mission, vehicle: str, get: NDArray[np.float64]
                 ) -> list[tuple[int, int, dict[str, Any]]]:
    """[start, end) frame ranges that share one limit context."""
    step = np.floor(get / DT + 1e-9).astype(np.int64)
    cut = np.flatnonzero(np.diff(step)) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [get.size]))
    runs: list[tuple[int, int, dict[str, Any]]] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        ctx = mission.context(vehicle, float(get[a]))
        if runs and runs[-1][2] == ctx:
            runs[-1] = (runs[-1][0], b, ctx)
        else:
            runs.append((a, b, ctx))
    return runs


def check_blocks(mission: Mission, definition: VehicleDefinition, blocks: list[FrameBlock],
                 decoder: StreamDecoder | None = None, report: Report | None = None,
                 on_batch: Callable[[DecodedBatch, dict[str, Any]], None] | None = None
                 ) -> Report:
    """Decode frames with their limit context and collect every out-of-limit sample."""
    v = definition.vehicle
    decoder = decoder or StreamDecoder(definition)
    report = report or Report(v)
    ids = [p.id for p in definition.parameters] + [d.id for d in definition.derived]
    for block in blocks:
        report.frames += block.n
        for a, b, ctx in context_runs(mission, v, block.get):
            batch = decoder.decode(block.frames[a:b], block.times_ns[a:b], ctx)
            report.bad_frames += batch.n_frames - batch.n_good
            phase = ctx["phase"]
            report.seconds_by_phase[phase] = (report.seconds_by_phase.get(phase, 0.0)
                                              + (b - a) / definition.frame.rate_hz)
            for pid in ids:
                t, eng, lim = batch.series(pid)
                bad = np.flatnonzero(lim != 0)
                if bad.size:
                    worst = int(lim[bad][np.argmax(np.abs(lim[bad]))])
                    got = report.violations.get(pid)
                    if got is None:
                        first = float(block.get[0] + (t[bad[0]] - block.times_ns[0]) / 1e9)
                        report.violations[pid] = Violation(int(bad.size), first,
                                                           float(eng[bad[0]]), phase, worst)
                    else:
                        got.samples += int(bad.size)
                        if abs(worst) > abs(got.worst):
                            got.worst = worst
            if on_batch is not None:
                on_batch(batch, ctx)
    return report


def check_window(mission: Mission, definitions: list[VehicleDefinition], until: float,
                 chunk_s: float = 300.0) -> dict[str, Report]:
    """Fly the given ships to a GET and check all their frames, chunk by chunk (so memory
    stays small however long the window), in whichever format each ship's downlink is
    (Apollo's high and low bit rate: each decoded with its own definition)."""
    streams = [ShipDownlink(mission, d) for d in definitions]
    decoders = {(d.vehicle, st): StreamDecoder(sd) for d in definitions
                for st, sd in d.streams.items()}
    reports = {d.vehicle: Report(d.vehicle) for d in definitions}
    defs = {d.vehicle: d for d in definitions}
    while True:
        more = False
        for s in streams:
            stop = min(until, tl.MISSION_END[s.vehicle])
            if s.next_get >= stop:
                continue
            more = True
            for block in s.frames_until(min(stop, s.next_get + chunk_s)):
                d = defs[s.vehicle].streams[block.stream or defs[s.vehicle].stream]
                check_blocks(mission, d, [block], decoders[(s.vehicle, d.stream)],
                             reports[s.vehicle])
                reports[s.vehicle].frames_by_stream[d.stream] = (
                    reports[s.vehicle].frames_by_stream.get(d.stream, 0) + block.n)
        if not more:
            return reports


def nominal_window(window: tuple[float, float, tuple[str, ...], int]) -> dict[str, Any]:
    """Fly [start, end) with no faults and no historical anomalies and check every frame of
    the given ships; a plain-data summary (for a worker process)."""
    start, end, vehicles, seed = window
    defs = load_all()
    mission = Mission(start, seed=seed, definitions=defs, historical=False)
    reports = check_window(mission, [defs[v] for v in vehicles], end)
    return {v: {"frames": r.frames, "bad_frames": r.bad_frames,
                "frames_by_stream": dict(r.frames_by_stream),
                "seconds": dict(r.seconds_by_phase),
                "violations": {pid: (x.samples, x.first_get, x.value, x.phase, x.worst)
                               for pid, x in r.violations.items()}}
            for v, r in reports.items()}
