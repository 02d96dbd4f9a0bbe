"""Flying a drill scenario offline, without a broker: the mission from the scenario's start
with its faults, the ships' frames through the real decoder and alarm engine (with the
limit context the ingest would use), only the frames a ground station would hear live.

It answers "does this scenario really raise the alarms it expects, in time, and nothing
else, and do the cues of its timed calls show in time?" in seconds: `groundstation drill
check --fly` and tests/test_drill_scenarios.py use it. Frames out of coverage are left out
(Apollo would dump them from its recorder later, too late for a controller to call), so a
scenario that relies on them fails here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundstation.core import messages, topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import DecodedBatch, StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import LIFTOFF_NS, NS, utc_ns_to_get
from groundstation.drills.scenario import Call, Scenario
from simulators.checks import check_blocks
from simulators.mission import Mission
from simulators.telemetry import FrameBlock, TelemetryStream

CHUNK_S = 60.0


@dataclass
class OfflineResult:
    events: list[dict[str, Any]] = field(default_factory=list)  # raised/escalated/...
    frames: dict[str, int] = field(default_factory=dict)  # heard live, per ship
    frames_not_heard: dict[str, int] = field(default_factory=dict)
    injected: dict[str, float] = field(default_factory=dict)  # fault id -> GET
    # (call index in sc.calls, cue index) -> GET the cue first showed after its fault's
    # injection, live (absent: never)
    cues: dict[tuple[int, int], float] = field(default_factory=dict)
    calls: dict[int, float] = field(default_factory=dict)  # call index -> all cues together
    last_cue: dict[tuple[int, int], bool] = field(default_factory=dict)


def build_mission(sc: Scenario, defs: dict[str, VehicleDefinition]) -> Mission:
    return Mission(sc.start_get, seed=sc.seed, historical=sc.historical, definitions=defs)


def fly_offline(sc: Scenario, defs: dict[str, VehicleDefinition] | None = None,
                until: float | None = None) -> OfflineResult:
    """Every alarm event the scenario's ships raise from its start to its end (plus grace),
    as the debrief records them (vehicle, parameter, transition, severity, get)."""
    defs = defs if defs is not None else load_all()
    mission = build_mission(sc, defs)
    result = OfflineResult()
    for f in sc.faults:
        got = mission.inject(f.vehicle, f.fault, f.params, at=f.start_get, ramp_s=f.ramp_s,
                             duration_s=f.duration_s)
        result.injected[f.id] = got.start
    end = until if until is not None else sc.end_get + sc.grace
    streams = {v: TelemetryStream(mission, defs[v]) for v in sc.ships}
    decoders = {v: StreamDecoder(defs[v]) for v in sc.ships}
    engines = {v: AlarmEngine(defs[v], topics.training("offline")) for v in sc.ships}
    for v in sc.ships:
        result.frames[v] = result.frames_not_heard[v] = 0
    while True:
        more = False
        for v, s in streams.items():
            block = s.frames_until(min(end, s.next_get + CHUNK_S))
            if block is None:
                continue
            more = True
            heard = block.aos
            result.frames[v] += int(heard.sum())
            result.frames_not_heard[v] += int((~heard).sum())
            if not heard.any():
                continue
            live = FrameBlock(v, block.k0, block.frames[heard], block.times_ns[heard],
                              block.get[heard], block.aos[heard], block.garbled[heard])
            engine = engines[v]

            def on_batch(batch: DecodedBatch, ctx: dict[str, Any],
                         engine: AlarmEngine = engine, v: str = v) -> None:
                for ev in engine.process(batch, ctx):
                    result.events.append(event_record(messages.AlarmEvent.from_event(ev),
                                                      None))
                _watch_cues(sc, defs, v, batch, result)

            check_blocks(mission, defs[v], [live], decoders[v], on_batch=on_batch)
        if not more:
            break
    result.events.sort(key=lambda e: (e["get"], e["seq"]))
    return result


def _watch_cues(sc: Scenario, defs: dict[str, VehicleDefinition], vehicle: str,
                batch: DecodedBatch, result: OfflineResult) -> None:
    """When each timed call's cues first show, each on its own and all together (every cue
    holding at one moment, each parameter at its latest sample), after the injection of the
    fault the call answers."""
    for i, c in enumerate(sc.calls):
        if not isinstance(c, Call):
            continue
        f = sc.call_fault(c)
        if f is None or f.id not in result.injected:
            continue
        since = result.injected[f.id] - 1.0
        series = []
        for j, cue in enumerate(c.cues):
            if sc.cue_vehicle(c, cue) != vehicle:
                continue  # cues on another ship: only the per-cue times are kept
            t_ns, v, _ = batch.series(cue.parameter)
            get = (t_ns - LIFTOFF_NS) / NS
            if cue.state is not None:
                hit = v == defs[vehicle].parameter(cue.parameter).state_code(cue.state)
            elif cue.above is not None:
                hit = v > cue.above
            else:
                hit = v < (cue.below if cue.below is not None else -np.inf)
            first = np.flatnonzero(hit & (get >= since))
            if first.size and (i, j) not in result.cues:
                result.cues[(i, j)] = float(get[first[0]])
            series.append((j, get, hit))
        if i in result.calls or len(series) != len(c.cues) or not series:
            continue
        times = np.unique(np.concatenate([g for _, g, _ in series]))
        times = times[times >= since]
        together = np.ones(times.size, dtype=bool)
        for j, get, hit in series:
            before = result.last_cue.get((i, j), False)
            if get.size == 0:
                together &= before
                continue
            k = np.searchsorted(get, times, side="right") - 1
            together &= np.where(k >= 0, hit[np.clip(k, 0, None)], before)
            result.last_cue[(i, j)] = bool(hit[-1])
        first = np.flatnonzero(together)
        if first.size:
            result.calls[i] = float(times[first[0]])


def event_record(ev: messages.AlarmEvent, clock: float | None) -> dict[str, Any]:
    """An alarm event as the debrief keeps it: the ingest's event plus its GET and the
    mission clock when the drill runner received it (None offline)."""
    return {"vehicle": ev.vehicle, "parameter": ev.parameter,
            "transition": ev.transition.value, "severity": ev.severity,
            "state": ev.state.value, "side": ev.side, "value": ev.value,
            "value_text": ev.value_text, "limit": ev.limit, "operator": ev.operator,
            "label": ev.label, "unit": ev.unit, "seq": ev.seq, "time_ns": ev.time_ns,
            "get": utc_ns_to_get(ev.time_ns), "clock": clock}
