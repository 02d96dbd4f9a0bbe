"""Flying a drill scenario offline, without a broker: the mission from the scenario's start
with its faults, the ships' frames through the real decoder and alarm engine (with the
limit context the ingest would use), only the frames a ground station would hear live.

It answers "does this scenario really raise the alarms it expects, in time, and nothing
else, and do the cues of its timed calls show in time?" in seconds: `groundstation drill
check --fly` and tests/test_drill_scenarios.py use it. Frames out of coverage are left out
(Apollo would dump them from its recorder later, too late for a controller to call), so a
scenario that relies on them fails here.

With `actions=True` it flies the scenario a second way: each expected action sent at its
due time (the latest a trainee may send it and still be in time), heard by the ship as the
commanding service would send it, and carried out after the crew's delay; it then answers
"does the right action, taken at the last moment, still save the ship?": each action's
effect shows (and holds), the command's own verification passes, and the alarms it
prevents do not come after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundstation.core import flightplan as tl
from groundstation.core import messages, topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.commanddefs import VehicleCommands, load_all_commands
from groundstation.core.decom import DecodedBatch, StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import LIFTOFF_NS, NS, format_get, utc_ns_to_get
from groundstation.drills.scenario import Call, Cue, Scenario
from simulators.checks import check_blocks
from simulators.commands import ShipCommands
from simulators.mission import Mission
from simulators.telemetry import FrameBlock, ShipDownlink

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
    actions: dict[str, ActionFlown] = field(default_factory=dict)  # with actions=True


@dataclass
class Watch:
    """One thing to see in the telemetry after an action: an effect of the scenario's, or a
    verification condition of the command's definition."""

    what: str  # as it reads: "o2_tank2_press below 1000 within 60 s"
    vehicle: str
    cue: Cue
    start: float  # GET it may show from (the ship acting)
    within_s: float
    hold: bool = False
    shown: float | None = None  # GET it first showed, in the window
    broken: float | None = None  # hold: GET it first failed to hold

    @property
    def ok(self) -> bool:
        return self.shown is not None and self.broken is None


@dataclass
class ActionFlown:
    """An expected action flown at its due time."""

    id: str
    vehicle: str
    command: str
    due: float  # GET sent
    heard: bool
    act: float | None = None  # GET the ship acted
    reason: str | None = None  # not sent: why
    watches: list[Watch] = field(default_factory=list)


def build_mission(sc: Scenario, defs: dict[str, VehicleDefinition]) -> Mission:
    return Mission(sc.start_get, seed=sc.seed, historical=sc.historical, definitions=defs)


def fly_offline(sc: Scenario, defs: dict[str, VehicleDefinition] | None = None,
                until: float | None = None, *, actions: bool = False,
                commands: dict[str, VehicleCommands] | None = None) -> OfflineResult:
    """Every alarm event the scenario's ships raise from its start to its end (plus grace),
    as the debrief records them (vehicle, parameter, transition, severity, get). With
    `actions`, the expected actions are taken at their due time and watched."""
    defs = defs if defs is not None else load_all()
    mission = build_mission(sc, defs)
    result = OfflineResult()
    for f in sc.faults:
        got = mission.inject(f.vehicle, f.fault, f.params, at=f.start_get, ramp_s=f.ramp_s,
                             duration_s=f.duration_s)
        result.injected[f.id] = got.start
    if actions and sc.actions:
        _take_actions(sc, mission, commands if commands is not None
                      else load_all_commands(defs), result)
    end = until if until is not None else sc.end_get + sc.grace
    streams = {v: ShipDownlink(mission, defs[v]) for v in sc.ships}
    # One decoder per format of each ship's downlink (Apollo's high and low bit rate), one
    # alarm engine per ship.
    decoders = {(v, st): StreamDecoder(d) for v in sc.ships
                for st, d in defs[v].streams.items()}
    engines = {v: AlarmEngine(defs[v], topics.training("offline")) for v in sc.ships}
    for v in sc.ships:
        result.frames[v] = result.frames_not_heard[v] = 0
    while True:
        more = False
        for v, s in streams.items():
            blocks = s.frames_until(min(end, s.next_get + CHUNK_S))
            if s.next_get < min(end, tl.MISSION_END[v]):
                more = True
            for block in blocks:
                _offline_block(sc, defs, mission, v, block, decoders, engines[v], result)
        if not more:
            break
    result.events.sort(key=lambda e: (e["get"], e["seq"]))
    return result


def _offline_block(sc: Scenario, defs: dict[str, VehicleDefinition], mission: Mission,
                   v: str, block: FrameBlock, decoders: dict[tuple[str, str], StreamDecoder],
                   engine: AlarmEngine, result: OfflineResult) -> None:
    """One block of a ship's frames (in one format): what the ground hears of it,
    decoded, its alarms and the scenario's cues and actions watched."""
    heard = block.aos
    result.frames[v] += int(heard.sum())
    result.frames_not_heard[v] += int((~heard).sum())
    if not heard.any():
        return
    stream = block.stream or defs[v].stream
    live = FrameBlock(v, block.k0, block.frames[heard], block.times_ns[heard],
                      block.get[heard], block.aos[heard], block.garbled[heard], stream)

    def on_batch(batch: DecodedBatch, ctx: dict[str, Any]) -> None:
        for ev in engine.process(batch, ctx):
            result.events.append(event_record(messages.AlarmEvent.from_event(ev), None))
        _watch_cues(sc, defs, v, batch, result)
        _watch_actions(defs, v, batch, result)

    check_blocks(mission, defs[v].streams[stream], [live], decoders[(v, stream)],
                 on_batch=on_batch)


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


# --- the expected actions, at their due time ------------------------------------------------

def _take_actions(sc: Scenario, mission: Mission, commands: dict[str, VehicleCommands],
                  result: OfflineResult) -> None:
    ship = ShipCommands(mission, commands)
    for a in sc.actions:
        f = sc.action_fault(a)
        v = sc.action_vehicle(a)
        if f is None or f.id not in result.injected:
            continue
        due = result.injected[f.id] + a.within_s
        c = commands[v].get(a.command)
        assert c is not None  # the scenario's checks saw to it
        flown = ActionFlown(a.id, v, a.command, due, heard=ship.hears(v, due))
        result.actions[a.id] = flown
        if not flown.heard:
            flown.reason = (f"{v} does not hear the ground at {format_get(due)}, the "
                            "action's due time (out of contact)")
            continue
        up = messages.CommandUplink(command_id=f"offline-{a.id}", command=c.id, kind=c.kind,
                                    args=dict(a.args), operator="offline", sent_ns=0)
        ack = ship.apply(v, up, due)
        if ack.stage == "rejected" or ack.act_ns is None:
            flown.reason = f"the ship rejected it: {ack.reason}"
            continue
        flown.act = utc_ns_to_get(ack.act_ns)
        for e in a.effect:
            flown.watches.append(Watch(f"effect: {e.describe()}", e.vehicle or v, e,
                                       flown.act, e.within_s, e.hold))
        for cond in c.conditions(c.check_args(a.args)):
            cue = Cue(parameter=cond.parameter, state=cond.state, above=cond.above,
                      below=cond.below)
            flown.watches.append(Watch(f"verification: {cond.describe()}", v, cue,
                                       flown.act, cond.within_s))


def _watch_actions(defs: dict[str, VehicleDefinition], vehicle: str, batch: DecodedBatch,
                   result: OfflineResult) -> None:
    for flown in result.actions.values():
        for w in flown.watches:
            if w.vehicle != vehicle or (w.shown is not None and not w.hold):
                continue
            t_ns, v, _ = batch.series(w.cue.parameter)
            get = (t_ns - LIFTOFF_NS) / NS
            cue = w.cue
            if cue.state is not None:
                hit = v == defs[vehicle].parameter(cue.parameter).state_code(cue.state)
            elif cue.above is not None:
                hit = v > cue.above
            else:
                hit = v < (cue.below if cue.below is not None else -np.inf)
            after = get >= w.start - 1e-6
            if w.shown is None:
                # Within its window; with none (within_s 0), the first sample after the act.
                end = w.start + w.within_s if w.within_s else np.inf
                first = np.flatnonzero(hit & after & (get <= end + 1e-6))
                if w.within_s == 0:
                    first = np.flatnonzero(after)[:1]
                    first = first[hit[first]]
                if first.size:
                    w.shown = float(get[first[0]])
            if w.hold and w.broken is None:
                holding = get >= w.start + w.within_s - 1e-6
                bad = np.flatnonzero(holding & ~hit)
                if bad.size:
                    w.broken = float(get[bad[0]])


def action_problems(sc: Scenario, result: OfflineResult) -> list[str]:
    """What a flight with the actions found wrong: an action the ship would not hear or
    could not do at its due time, an effect or a verification that did not show (or hold),
    an alarm the action prevents raised after it."""
    out: list[str] = []
    for a in sc.actions:
        flown = result.actions.get(a.id)
        if flown is None:
            out.append(f"action {a.id!r}: not taken (its fault was not injected)")
            continue
        if flown.reason is not None:
            out.append(f"action {a.id!r} ({a.describe()} at {format_get(flown.due)}): "
                       f"{flown.reason}")
            continue
        for w in flown.watches:
            if w.shown is None:
                out.append(f"action {a.id!r} ({a.describe()} sent {format_get(flown.due)}, "
                           f"acted {format_get(flown.act or 0)}): {w.what}: never showed")
            elif w.broken is not None:
                out.append(f"action {a.id!r}: {w.what}: did not hold (broken at "
                           f"{format_get(w.broken)})")
    for f in sc.faults:
        for e in f.expect:
            acts = [result.actions[n].act for n in e.prevented_by
                    if n in result.actions and result.actions[n].act is not None]
            if not acts:
                continue
            since = min(a for a in acts if a is not None)
            v = e.vehicle or f.vehicle
            late = [ev for ev in result.events if ev["vehicle"] == v
                    and ev["parameter"] == e.parameter and ev["transition"] == "raised"
                    and ev["get"] > since + 1.0]
            if late:
                out.append(f"{v} {e.parameter}: raised at {format_get(late[0]['get'])} although "
                           f"{', '.join(e.prevented_by)} (which prevents it) acted at "
                           f"{format_get(since)}")
    return out
