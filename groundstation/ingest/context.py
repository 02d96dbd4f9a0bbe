"""Limit contexts: what a limit set may depend on, per source.

A limit set can depend on the mission phase (from the ships' `sim/state` messages, a
drill's own, or a replay session's from the flight plan; a replay session that announces
none borrows the live phase) and on other parameters, of the same ship or the other one
(e.g. a hatch's state). The contexts are kept per source (live, each replay session, each
drill), so a replay never judges live data and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from groundstation.core import messages, topics
from groundstation.core.decom import DecodedBatch
from groundstation.core.definitions import VehicleDefinition
from groundstation.ingest.stream import Stream, persists


def referenced_parameters(definitions: dict[str, VehicleDefinition]) -> dict[str, set[str]]:
    """vehicle -> parameters some limit context looks at (e.g. a hatch's state)."""
    wanted: dict[str, set[str]] = {}
    for d in definitions.values():
        for e in [*d.parameters, *d.derived]:
            for c in (e.limits.contexts if e.limits else []):
                name = c.when.parameter
                if name:
                    veh, pid = name.split(".", 1) if "." in name else (d.vehicle, name)
                    wanted.setdefault(veh, set()).add(pid)
    return wanted


class LimitContexts:
    def __init__(self, definitions: dict[str, VehicleDefinition]) -> None:
        # (source, vehicle) -> mission phase.
        self.phase: dict[tuple[str, str], str] = {}
        self.values: dict[str, dict[str, Any]] = {}  # source -> {vehicle.param: value}
        self.wanted = referenced_parameters(definitions)
        # A clustered ingest sends a vehicle's values to the instances that do not own it
        # (ingest/cluster.py): (source, vehicle, {"vehicle.param": value}).
        self.on_values: Callable[[str, str, dict[str, Any]], None] | None = None

    def for_stream(self, s: Stream) -> dict[str, Any]:
        """The context a stream's next batch is judged in."""
        ctx: dict[str, Any] = dict(self.values.get(s.source, {}))
        phase = self.phase.get((s.source, s.vehicle))
        if phase is None and not persists(s.source):  # a replay session
            phase = self.phase.get((topics.LIVE, s.vehicle))
        if phase is not None:
            ctx["phase"] = phase
        return ctx

    def update(self, s: Stream, batch: DecodedBatch | None = None) -> None:
        """After a batch: the stream's newest values of the parameters contexts look at."""
        wanted = self.wanted.get(s.vehicle)
        if not wanted:
            return
        values = self.values.setdefault(s.source, {})
        for pid in wanted:
            if pid in s.latest:
                v = s.latest[pid][1]
                p = s.definition._by_id.get(pid)
                if p is not None and p.calibration is not None and p.calibration.states:
                    values[f"{s.vehicle}.{pid}"] = p.calibration.states.get(int(v), v)
                else:
                    values[f"{s.vehicle}.{pid}"] = v
        if self.on_values is not None:
            mine = {k: values[k] for k in (f"{s.vehicle}.{pid}" for pid in wanted)
                    if k in values}
            if mine:
                self.on_values(s.source, s.vehicle, mine)

    def on_sim_state(self, where: topics.SimStateTopic, payload: bytes) -> None:
        """A ship's (or a drill's, or a replay's) state: its mission phase. An empty
        payload (the ships stopped and cleared their retained state) changes nothing: their
        last frames may still be queued here and keep the last phase; a replay session's
        context is freed when the session ends. Raises messages.MessageError."""
        if not payload:
            return
        state = messages.SimState.from_json(payload)
        self.phase[(str(where.source), where.vehicle)] = state.phase

    def drop_source(self, source: str) -> None:
        """A replay session ended: its context goes with it."""
        self.values.pop(source, None)
        for key in [k for k in self.phase if k[0] == source]:
            del self.phase[key]
