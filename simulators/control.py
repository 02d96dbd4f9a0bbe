"""The simulator's MQTT control interface: request handling and replies.

    control   requests (messages.SimControlRequest; an instructor, a drill script)
    reply     one reply per request (messages.SimControlReply): {"ok": true, ...} or
              {"ok": false, "error": "..."}; a bad request changes nothing
    state     retained (messages.SimState): GET, UTC, phase, docked, AOS, faults, ...

(topics.sim_control, topics.sim_reply and topics.sim_state name the topics.)

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
    {"cmd": "pcm_mode", "mode": "LBR", "at": "now"}
                                             Apollo's PCM to low (or high) bit rate: its
                                             frames go down on telemetry/.../lbr (hbr) from
                                             then on, until the timeline or another request
                                             switches it again

Pause and resume act on the runner, which flies every ship of its mission on one clock:
pausing through either ship's topic pauses both. Both are idempotent (the reply's
"paused" says where the clock is now). A drill's ships (source training/<drill>) listen
to no control topic: the drill pauses them in-process (SimRunner.pause, resume).
"""

from __future__ import annotations

from collections.abc import Callable

from groundstation.core import messages, topics
from groundstation.core.mission_time import format_get
from simulators.faults import CATALOGUE, COMMON, FaultError
from simulators.mission import Mission

MAX_REQUEST = 64 * 1024
COMMANDS = messages.SIM_COMMANDS

# The runner's answer to pause (True) or resume (False): whether the clock is paused now,
# and the GET it stands at.
PauseHandler = Callable[[bool], tuple[bool, float]]


def control_topic(vehicle: str) -> str:
    return topics.sim_control(vehicle)


def reply_topic(vehicle: str) -> str:
    return topics.sim_reply(vehicle)


def state_topic(vehicle: str, source: str = topics.LIVE) -> str:
    return topics.sim_state(vehicle, source)


def catalogue(vehicle: str) -> list[messages.FaultCatalogueEntry]:
    out = []
    for spec in CATALOGUE.values():
        if vehicle not in spec.vehicles:
            continue
        out.append(messages.FaultCatalogueEntry(
            fault=spec.name, kind=spec.kind, doc=spec.doc, effects=spec.effects,
            params={p.name: {"doc": p.doc, "required": p.required, "default": p.default,
                             **({"min": p.lo} if p.lo is not None else {}),
                             **({"max": p.hi} if p.hi is not None else {}),
                             **({"choices": list(p.choices)} if p.choices else {})}
                    for p in spec.params}))
    return out


def reply(mission: Mission, vehicle: str, payload: bytes,
          pause: PauseHandler | None = None) -> messages.SimControlReply:
    """Apply one control request for a vehicle; the reply says what happened. Pause and
    resume need the runner's handler; without one they are refused."""
    request: str | int | None = None
    try:
        if len(payload) > MAX_REQUEST:
            raise FaultError(f"request of {len(payload)} bytes is over {MAX_REQUEST}")
        try:
            msg = messages.SimControlRequest.from_json(payload)
        except messages.MessageError as exc:
            request = exc.request_id  # still named in the reply, when it could be read
            raise FaultError(str(exc)) from None
        request = msg.id
        if msg.cmd in ("pause", "resume"):
            if pause is None:
                raise FaultError(f"{msg.cmd}: this simulator has no clock to {msg.cmd} "
                                 "(no runner)")
            paused, get = pause(msg.cmd == "pause")
            return messages.SimControlReply(ok=True, request=request, cmd=msg.cmd,
                                            paused=paused, get=get, get_text=format_get(get))
        return _apply(mission, vehicle, msg)
    except FaultError as exc:
        return messages.SimControlReply(ok=False, request=request, error=str(exc))


def handle(mission: Mission, vehicle: str, payload: bytes,
           pause: PauseHandler | None = None) -> dict[str, object]:
    """reply(), as plain data."""
    return reply(mission, vehicle, payload, pause).to_dict()


def _apply(mission: Mission, vehicle: str, msg: messages.SimControlRequest
           ) -> messages.SimControlReply:
    if msg.cmd == "inject":
        assert msg.fault is not None  # the message requires it
        common = {c.name: c for c in COMMON}
        ramp = common["ramp_s"].check("inject", msg.ramp_s or 0.0)
        duration = msg.duration_s
        if duration is not None:
            duration = common["duration_s"].check("inject", duration)
        f = mission.inject(vehicle, msg.fault, msg.params,
                           at="now" if msg.at is None else msg.at, ramp_s=ramp,
                           duration_s=duration)
        return messages.SimControlReply(ok=True, request=msg.id, cmd=msg.cmd,
                                        fault=f.describe(), fault_id=f.id)
    if msg.cmd == "clear":
        if (msg.fault_id is None) == (msg.fault is None):
            raise FaultError("clear: give exactly one of 'fault_id' or 'fault'")
        cleared = mission.clear(vehicle, fault_id=msg.fault_id, fault=msg.fault)
        return messages.SimControlReply(ok=True, request=msg.id, cmd=msg.cmd,
                                        cleared=[f.id for f in cleared])
    if msg.cmd == "clear_all":
        cleared = mission.clear(vehicle)
        return messages.SimControlReply(ok=True, request=msg.id, cmd=msg.cmd,
                                        cleared=[f.id for f in cleared])
    if msg.cmd == "pcm_mode":
        assert msg.mode is not None  # the message requires it
        get, stream = mission.set_pcm_mode(vehicle, msg.mode,
                                           at="now" if msg.at is None else msg.at)
        return messages.SimControlReply(ok=True, request=msg.id, cmd=msg.cmd, mode=msg.mode,
                                        stream=stream, get=get, get_text=format_get(get))
    if msg.cmd == "list":
        return messages.SimControlReply(
            ok=True, request=msg.id, cmd=msg.cmd,
            faults=[f.describe() for f in mission.faults.pending_or_active(vehicle, mission.t)],
            catalogue=catalogue(vehicle))
    return messages.SimControlReply(ok=True, request=msg.id, cmd=msg.cmd,
                                    state=mission.state(vehicle))
