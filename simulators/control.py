"""The simulator's MQTT control interface: topics, request handling, replies.

    sim/control/<vehicle>   requests, JSON objects (an instructor, a drill script)
    sim/reply/<vehicle>     one JSON reply per request: {"ok": true, ...} or
                            {"ok": false, "error": "..."}; a bad request changes nothing
    sim/state/<vehicle>     retained JSON state: GET, UTC, phase, docked, AOS, faults, ...

Requests ("id" is optional and echoed in the reply as "request"):

    {"cmd": "inject", "fault": "cabin_leak", "params": {"rate_lb_h": 5},
     "at": "now" | "055:53:00" | "docking+10m" | <GET seconds>,
     "ramp_s": 60, "duration_s": 600, "id": "drill-7"}
    {"cmd": "clear", "fault_id": "F3"}      or {"cmd": "clear", "fault": "cabin_leak"}
    {"cmd": "clear_all"}
    {"cmd": "list"}                          active and scheduled faults, and the catalogue
    {"cmd": "status"}                        the state message, now
    {"cmd": "pause"}                         freeze the mission clock: no frames go down,
                                             the state says "paused": true
    {"cmd": "resume"}                        fly on from the same GET at the same speed

Pause and resume act on the runner, which flies every ship of its mission on one clock:
pausing through either ship's topic pauses both. Both are idempotent (the reply's
"paused" says where the clock is now). A drill's ships (source training/<drill>) listen
to no control topic: the drill pauses them in-process (SimRunner.pause, resume).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from groundstation.core import topics
from simulators.faults import CATALOGUE, COMMON, FaultError
from simulators.mission import Mission

MAX_REQUEST = 64 * 1024
COMMANDS = ("inject", "clear", "clear_all", "list", "status", "pause", "resume")
_KEYS = {
    "inject": {"cmd", "id", "fault", "params", "at", "ramp_s", "duration_s"},
    "clear": {"cmd", "id", "fault", "fault_id"},
    "clear_all": {"cmd", "id"},
    "list": {"cmd", "id"},
    "status": {"cmd", "id"},
    "pause": {"cmd", "id"},
    "resume": {"cmd", "id"},
}

# The runner's answer to pause (True) or resume (False): what goes into the reply.
PauseHandler = Callable[[bool], dict[str, Any]]


def control_topic(vehicle: str) -> str:
    return f"sim/control/{vehicle}"


def reply_topic(vehicle: str) -> str:
    return f"sim/reply/{vehicle}"


def state_topic(vehicle: str, source: str = topics.LIVE) -> str:
    return topics.sim_state(vehicle, source)


def catalogue(vehicle: str) -> list[dict[str, Any]]:
    out = []
    for spec in CATALOGUE.values():
        if vehicle not in spec.vehicles:
            continue
        out.append({"fault": spec.name, "kind": spec.kind, "doc": spec.doc,
                    "effects": spec.effects,
                    "params": {p.name: {"doc": p.doc, "required": p.required,
                                        "default": p.default,
                                        **({"min": p.lo} if p.lo is not None else {}),
                                        **({"max": p.hi} if p.hi is not None else {}),
                                        **({"choices": list(p.choices)} if p.choices else {})}
                               for p in spec.params}})
    return out


def handle(mission: Mission, vehicle: str, payload: bytes,
           pause: PauseHandler | None = None) -> dict[str, Any]:
    """Apply one control request for a vehicle; the reply says what happened. Pause and
    resume need the runner's handler; without one they are refused."""
    request: Any = None
    try:
        if len(payload) > MAX_REQUEST:
            raise FaultError(f"request of {len(payload)} bytes is over {MAX_REQUEST}")
        try:
            msg = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FaultError(f"not a JSON object: {exc}") from None
        if not isinstance(msg, dict):
            raise FaultError(f"a request is a JSON object, got {type(msg).__name__}")
        request = msg.get("id")
        if request is not None and not isinstance(request, str | int):
            request = None
            raise FaultError("id must be a string or an integer")
        cmd = msg.get("cmd")
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            raise FaultError(f"cmd must be one of {', '.join(COMMANDS)}; got {cmd!r}")
        extra = sorted(set(msg) - _KEYS[cmd])
        if extra:
            raise FaultError(f"{cmd}: unknown key {extra[0]!r}; it takes "
                             f"{', '.join(sorted(_KEYS[cmd] - {'cmd'}))}")
        if cmd in ("pause", "resume"):
            if pause is None:
                raise FaultError(f"{cmd}: this simulator has no clock to {cmd} (no runner)")
            result = pause(cmd == "pause")
        else:
            result = _apply(mission, vehicle, cmd, msg)
        return {"ok": True, "request": request, "cmd": cmd, **result}
    except FaultError as exc:
        return {"ok": False, "request": request, "error": str(exc)}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _apply(mission: Mission, vehicle: str, cmd: str, msg: dict[str, Any]) -> dict[str, Any]:
    if cmd == "inject":
        if "fault" not in msg:
            raise FaultError("inject: 'fault' is required")
        common = {c.name: c for c in COMMON}
        at = msg.get("at", "now")
        if not isinstance(at, str | int | float) or isinstance(at, bool):
            raise FaultError("at must be 'now', a GET such as '055:53:00', an event such as "
                             "'docking+10m', or GET seconds")
        ramp = common["ramp_s"].check("inject", msg.get("ramp_s", 0.0))
        duration = msg.get("duration_s")
        if duration is not None:
            duration = common["duration_s"].check("inject", duration)
        f = mission.inject(vehicle, msg["fault"], msg.get("params"), at=at, ramp_s=ramp,
                           duration_s=duration)
        return {"fault": f.describe(), "fault_id": f.id}
    if cmd == "clear":
        fid, name = msg.get("fault_id"), msg.get("fault")
        if (fid is None) == (name is None):
            raise FaultError("clear: give exactly one of 'fault_id' or 'fault'")
        cleared = mission.clear(vehicle, fault_id=fid, fault=name)
        return {"cleared": [f.id for f in cleared]}
    if cmd == "clear_all":
        cleared = mission.clear(vehicle)
        return {"cleared": [f.id for f in cleared]}
    if cmd == "list":
        return {"faults": [f.describe() for f in
                           mission.faults.pending_or_active(vehicle, mission.t)],
                "catalogue": catalogue(vehicle)}
    return {"state": _finite(mission.state(vehicle))}


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}
