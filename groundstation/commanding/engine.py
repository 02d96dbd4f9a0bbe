"""The command path's logic, without I/O: requests in, checks, stamps, the uplink, the
ship's answers and the processed parameters in, every stage out. The service
(groundstation/commanding/service.py) feeds it from MQTT and stores and publishes what it
says; the tests feed it directly.

Stages of one command (messages.CommandStage):

    request --(refused: why)
        |-- hazardous: armed --(execute)--> queued ... (disarm, or not executed in time:
        |                                              cancelled)
        `-- queued -> sent -> received (real-time) | crew_acknowledged (procedure)
                                 -> verified | failed (why)

A request is checked against, in this order: its shape (bad_request), the source (a replay
cannot be commanded: not_commandable), the vehicle (unknown_vehicle), the command
(unknown_command), the operator's rights (not_operator: not in the operators file;
wrong_position: the operator does not hold the position asked for, or none of theirs may
send this command), the arguments (bad_argument), arming (needs_arm: a hazardous command
must be armed, then executed; not_armed: execute or disarm of no armed command of the
operator's). A refusal is answered on the operator's reply topic and, when it names a
vehicle and a command, recorded as a `refused` event. Nothing is sent.

Verification is Yamcs's: each condition of the definition (a parameter's state, or a value
above or below a level) must show in the processed parameters the ingest publishes, with a
data time inside its window: from when the ship acts (a real-time command as it is
received; a procedure `crew_delay_s` after the crew's readback, both by the ship's own
clock) to `within_s` after. Windows are mission time, so a drill at 20x is judged like one
at 1x. When no published sample falls inside a window (a fast drill: the ingest publishes a
few times a second of wall time), the first sample after it decides. No answer from the
ship within `ack_timeout_s` (out of contact, or no ship listening) fails the command; so
does a verification that no telemetry arrives to decide (`verify_grace_s` of wall time past
its windows).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from groundstation.commanding.operators import Operators
from groundstation.core import messages, topics
from groundstation.core.commanddefs import (
    CommandArgError,
    CommandDefinition,
    Condition,
    VehicleCommands,
    canonical_position,
    holds,
)
from groundstation.core.definitions import Parameter, VehicleDefinition
from groundstation.core.mission_time import NS
from groundstation.core.topics import Source

log = logging.getLogger("groundstation.commanding")

HISTORY = 50  # commands kept per vehicle and source in the retained history
MAX_REQUEST = 16 * 1024


@dataclass
class Settings:
    arm_timeout_s: float = 30.0  # wall seconds between arm and execute
    ack_timeout_s: float = 15.0  # wall seconds for the ship to answer
    verify_grace_s: float = 30.0  # wall seconds past the windows before "no telemetry"


@dataclass
class _Check:
    condition: Condition  # bound to the arguments
    parameter: Parameter | None
    end_ns: int
    ok: bool | None = None
    at_ns: int | None = None
    value: float | None = None
    seen_inside: bool = False  # a sample inside the window was seen (and did not hold)

    def result(self) -> messages.VerifyResult:
        text = None
        if self.value is not None and self.parameter is not None \
                and self.parameter.type == "discrete":
            states = self.parameter.calibration.states if self.parameter.calibration else None
            text = (states or {}).get(round(self.value))
        return messages.VerifyResult(condition=self.condition.describe(),
                                     parameter=self.condition.parameter, ok=self.ok,
                                     at_ns=self.at_ns, value=self.value, value_text=text)


@dataclass
class Command:
    """One command the engine follows."""

    command_id: str
    source: Source
    vehicle: str
    definition: CommandDefinition
    args: dict[str, Any]
    operator: str
    position: str | None
    stage: messages.CommandStage = "queued"
    armed_until: float = 0.0  # monotonic
    sent_at: float = 0.0  # monotonic
    act_ns: int | None = None
    checks: list[_Check] = field(default_factory=list)
    deadline: float = 0.0  # monotonic: give up verifying

    @property
    def key(self) -> tuple[str, str]:
        return str(self.source), self.vehicle


@dataclass
class _Refusal(Exception):
    reason: messages.CommandRefusal
    error: str
    command: str | None = None


class CommandEngine:
    """Everything the commanding service decides. Outputs accumulate in `outbox` (MQTT
    messages: topic, payload, retain) and `events` (to store before publishing); the
    caller drains both after each call."""

    def __init__(self, commands: Mapping[str, VehicleCommands],
                 definitions: Mapping[str, VehicleDefinition], operators: Operators,
                 settings: Settings | None = None, *,
                 clock: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic):
        self.commands = dict(commands)
        self.definitions = dict(definitions)
        self.operators = operators
        self.settings = settings or Settings()
        self.clock = clock
        self.monotonic = monotonic
        self.outbox: list[tuple[str, bytes, bool]] = []
        self.events: list[messages.CommandEvent] = []
        self.active: dict[str, Command] = {}  # command_id -> not yet final
        self.history: dict[tuple[str, str], OrderedDict[str, messages.CommandEvent]] = {}
        self.stages: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
        self.data_time: dict[tuple[str, str], int] = {}  # newest data time per source, ship
        self._prefix = secrets.token_hex(3)
        self._n = 0
        self.seq = 0
        self.counts: dict[str, int] = {}

    # --- requests ------------------------------------------------------------------------

    def on_request(self, operator: str, vehicle: str, payload: bytes) -> None:
        """One request from cmd/request/<operator>/<vehicle>: the operator is whom the
        broker authenticated."""
        request_id: str | None = None
        command_name: str | None = None
        req: messages.CommandRequest | None = None
        try:
            if len(payload) > MAX_REQUEST:
                raise _Refusal("bad_request", f"a request of {len(payload)} bytes is over "
                                              f"{MAX_REQUEST}")
            try:
                req = messages.CommandRequest.from_json(payload)
            except messages.MessageError as exc:
                request_id = None if exc.request_id is None else str(exc.request_id)
                raise _Refusal("bad_request", f"{exc} (a request is "
                                              f"{messages.COMMAND_REQUEST_FORM})") from None
            request_id = req.request_id
            command_name = req.command
            self._handle(operator, vehicle, req)
        except _Refusal as r:
            self._count(f"refused_{r.reason}")
            log.warning("refused %s's request %s on %s: %s", operator, request_id, vehicle,
                        r.error)
            self._reply(operator, messages.CommandReply(
                ok=False, request_id=request_id, command=r.command or command_name,
                vehicle=vehicle, error=r.error, reason=r.reason))
            name = r.command or command_name
            if req is not None and name and vehicle in self.commands \
                    and req.source.kind is not topics.SourceKind.REPLAY:
                d = self.commands[vehicle].get(name)
                self._event(messages.CommandEvent(
                    command_id=self._new_id(), seq=0, vehicle=vehicle, source=req.source,
                    command=name, kind=d.kind if d else None,
                    title=d.label if d else "", args=req.args, operator=operator,
                    position=req.position, stage="refused", time_ns=self.clock(),
                    data_time_ns=self.data_time.get((str(req.source), vehicle)),
                    reason=r.error, code=r.reason, hazardous=bool(d and d.hazardous)))

    def _handle(self, operator: str, vehicle: str, req: messages.CommandRequest) -> None:
        if req.source.kind is topics.SourceKind.REPLAY:
            raise _Refusal("not_commandable", f"{req.source} is a replay of a recording: it "
                                              "cannot be commanded (its command history is "
                                              "the recording's)")
        vc = self.commands.get(vehicle)
        if vc is None:
            raise _Refusal("unknown_vehicle", f"no commands for {vehicle!r} (vehicles: "
                                              f"{', '.join(self.commands) or 'none'})")
        if req.action in ("execute", "disarm"):
            self._armed_step(operator, vehicle, req)
            return
        assert req.command is not None  # the message requires it
        d = vc.get(req.command)
        if d is None:
            raise _Refusal("unknown_command", f"{vehicle} has no command {req.command!r} "
                                              f"(its commands: "
                                              f"{', '.join(c.id for c in vc.commands)})")
        position = self._position(operator, d, req.position)
        try:
            args = d.check_args(req.args)
        except CommandArgError as exc:
            raise _Refusal("bad_argument", f"{d.id}: {exc}", d.id) from None
        if d.hazardous and req.action == "send":
            raise _Refusal("needs_arm", f"{d.id} is hazardous: arm it, then execute it "
                                        "(action arm, then execute with the command id)", d.id)
        if not d.hazardous and req.action == "arm":
            raise _Refusal("bad_request", f"{d.id} is not hazardous: send it, no arming",
                           d.id)
        cmd = Command(self._new_id(), req.source, vehicle, d, dict(args), operator, position)
        if req.action == "arm":
            cmd.stage = "armed"
            cmd.armed_until = self.monotonic() + self.settings.arm_timeout_s
            self.active[cmd.command_id] = cmd
            expires = self.clock() + int(self.settings.arm_timeout_s * NS)
            self._stage(cmd, "armed")
            self._reply(operator, messages.CommandReply(
                ok=True, request_id=req.request_id, command_id=cmd.command_id, command=d.id,
                vehicle=vehicle, stage="armed", arm_expires_ns=expires))
            return
        self._queue(cmd, req.request_id)

    def _position(self, operator: str, d: CommandDefinition, asked: str | None) -> str:
        held = self.operators.of(operator)
        if held is None:
            raise _Refusal("not_operator", f"{operator!r} is not an operator (not in the "
                                           f"operators file {self.operators.path or ''})".rstrip(),
                           d.id)
        allowed = ", ".join(d.positions)
        if asked is not None:
            pos = canonical_position(asked)
            if pos is None or pos not in held:
                raise _Refusal("wrong_position", f"{operator} does not hold the position "
                                                 f"{asked} (holds: {', '.join(held) or 'none'})",
                               d.id)
            if not d.allows(pos):
                raise _Refusal("wrong_position", f"{d.id} is sent from {allowed}, not from "
                                                 f"{pos}", d.id)
            return pos
        for pos in held:
            if d.allows(pos):
                return pos
        raise _Refusal("wrong_position", f"{d.id} is sent from {allowed}; {operator} holds "
                                         f"{', '.join(held) or 'no position'}", d.id)

    def _armed_step(self, operator: str, vehicle: str, req: messages.CommandRequest) -> None:
        cmd = self.active.get(req.command_id or "")
        if cmd is None or cmd.stage != "armed" or cmd.operator != operator \
                or cmd.vehicle != vehicle or cmd.source != req.source:
            raise _Refusal("not_armed", f"no armed command {req.command_id!r} of {operator}'s "
                                        f"on {vehicle} ({req.source}); an arm lasts "
                                        f"{self.settings.arm_timeout_s:g} s")
        if self.monotonic() > cmd.armed_until:
            self._cancel(cmd, f"not executed within {self.settings.arm_timeout_s:g} s of "
                              "arming")
            raise _Refusal("not_armed", f"{cmd.command_id} was armed more than "
                                        f"{self.settings.arm_timeout_s:g} s ago: arm it again",
                           cmd.definition.id)
        if req.action == "disarm":
            self._cancel(cmd, f"disarmed by {operator}")
            self._reply(operator, messages.CommandReply(
                ok=True, request_id=req.request_id, command_id=cmd.command_id,
                command=cmd.definition.id, vehicle=vehicle, stage="cancelled"))
            return
        self._queue(cmd, req.request_id)

    def _queue(self, cmd: Command, request_id: str) -> None:
        d = cmd.definition
        self.active[cmd.command_id] = cmd
        self._stage(cmd, "queued")
        self._reply(cmd.operator, messages.CommandReply(
            ok=True, request_id=request_id, command_id=cmd.command_id, command=d.id,
            vehicle=cmd.vehicle, stage="queued"))
        up = messages.CommandUplink(command_id=cmd.command_id, command=d.id, kind=d.kind,
                                    args=cmd.args, operator=cmd.operator,
                                    position=cmd.position, sent_ns=self.clock())
        self.outbox.append((topics.command_uplink(cmd.vehicle, cmd.source), up.to_json(),
                            False))
        cmd.sent_at = self.monotonic()
        self._stage(cmd, "sent")
        self._count("sent")

    def _cancel(self, cmd: Command, why: str) -> None:
        self._stage(cmd, "cancelled", reason=why)

    # --- the ship's answers ----------------------------------------------------------------

    def on_ack(self, source: Source, vehicle: str, payload: bytes) -> None:
        try:
            ack = messages.CommandAck.from_json(payload)
        except messages.MessageError as exc:
            log.warning("ignored a malformed ship answer on %s/%s: %s", source, vehicle, exc)
            return
        cmd = self.active.get(ack.command_id)
        if cmd is None or cmd.key != (str(source), vehicle) or cmd.stage != "sent":
            return  # not ours, or already decided (a late or repeated answer)
        if ack.stage == "rejected":
            self._stage(cmd, "failed", data_time=ack.time_ns,
                        reason=f"the ship rejected it: {ack.reason or 'no reason given'}")
            return
        d = cmd.definition
        cmd.act_ns = ack.act_ns if ack.act_ns is not None else \
            ack.time_ns + int(d.delay_s * NS)
        defn = self.definitions.get(vehicle)
        for c in d.conditions(cmd.args):
            p = defn._by_id.get(c.parameter) if defn is not None else None
            cmd.checks.append(_Check(c, p, cmd.act_ns + int(c.within_s * NS)))
        cmd.deadline = self.monotonic() + (cmd.act_ns - ack.time_ns) / NS \
            + d.window_s + self.settings.verify_grace_s
        self._stage(cmd, ack.stage, data_time=ack.time_ns)

    # --- telemetry --------------------------------------------------------------------------

    def on_params(self, source: Source, vehicle: str, update: messages.ParamsUpdate) -> None:
        key = (str(source), vehicle)
        newest = self.data_time.get(key)
        if newest is None or update.time_ns > newest:
            self.data_time[key] = update.time_ns
        for cmd in [c for c in self.active.values() if c.key == key and c.checks
                    and c.stage in ("received", "crew_acknowledged")]:
            self._verify(cmd, update)

    def _verify(self, cmd: Command, update: messages.ParamsUpdate) -> None:
        assert cmd.act_ns is not None
        for ch in cmd.checks:
            if ch.ok is not None:
                continue
            sample = update.values.get(ch.condition.parameter)
            if sample is not None:
                ts, value, _ = sample
                if ts >= cmd.act_ns:
                    good = holds(ch.condition, value, ch.parameter)
                    inside = ts <= ch.end_ns
                    if good and (inside or not ch.seen_inside):
                        ch.ok, ch.at_ns, ch.value = True, ts, value
                        continue
                    if inside:
                        ch.seen_inside = True
                        ch.value = value
                    else:
                        ch.ok, ch.at_ns, ch.value = False, ts, value
                        continue
            if sample is None and update.time_ns > ch.end_ns and ch.seen_inside:
                ch.ok = False
        if any(ch.ok is False for ch in cmd.checks):
            bad = [ch for ch in cmd.checks if ch.ok is False]
            self._stage(cmd, "failed", data_time=update.time_ns,
                        reason="; ".join(_why(ch, cmd.act_ns) for ch in bad))
        elif all(ch.ok for ch in cmd.checks):
            self._stage(cmd, "verified", data_time=max(ch.at_ns or 0 for ch in cmd.checks))

    # --- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Arms that expired, ships that never answered, verifications with no telemetry."""
        now = self.monotonic()
        for cmd in list(self.active.values()):
            if cmd.stage == "armed" and now > cmd.armed_until:
                self._cancel(cmd, f"not executed within {self.settings.arm_timeout_s:g} s of "
                                  "arming")
            elif cmd.stage == "sent" and now - cmd.sent_at > self.settings.ack_timeout_s:
                self._stage(cmd, "failed", reason=(
                    f"no answer from {cmd.vehicle} within {self.settings.ack_timeout_s:g} s: "
                    "out of contact (the ship must hear the up-link, or the crew the voice "
                    "link), or no ship listening"))
            elif cmd.stage in ("received", "crew_acknowledged") and now > cmd.deadline:
                waiting = [ch for ch in cmd.checks if ch.ok is not True]
                self._stage(cmd, "failed", reason=(
                    "no telemetry to verify it by: " + "; ".join(
                        ch.condition.describe() for ch in waiting)))

    # --- stages and the history ----------------------------------------------------------

    def _new_id(self) -> str:
        self._n += 1
        return f"{self._prefix}-{self._n}"

    def _stage(self, cmd: Command, stage: messages.CommandStage, *,
               data_time: int | None = None, reason: str | None = None) -> None:
        cmd.stage = stage
        d = cmd.definition
        if data_time is None:
            data_time = self.data_time.get(cmd.key)
        ev = messages.CommandEvent(
            command_id=cmd.command_id, seq=0, vehicle=cmd.vehicle, source=cmd.source,
            command=d.id, kind=d.kind, title=d.label, args=cmd.args, operator=cmd.operator,
            position=cmd.position, stage=stage, time_ns=self.clock(), data_time_ns=data_time,
            reason=reason, hazardous=d.hazardous,
            act_ns=cmd.act_ns if stage in ("received", "crew_acknowledged", "verified",
                                           "failed") else None,
            verify=[ch.result() for ch in cmd.checks] if stage in ("verified", "failed")
            else [])
        if stage in messages.FINAL_STAGES:
            self.active.pop(cmd.command_id, None)
            self._count(stage)
        log.info("%s %s %s %s %s%s", cmd.command_id, cmd.vehicle, d.id, cmd.operator, stage,
                 f": {reason}" if reason else "")
        self._event(ev)

    def _event(self, ev: messages.CommandEvent) -> None:
        self.seq += 1
        ev = ev.model_copy(update={"seq": self.seq})
        self.events.append(ev)
        self.file(ev)
        self.outbox.append((topics.command_events(ev.vehicle, ev.source), ev.to_json(), False))
        self.outbox.append(self.history_message(str(ev.source), ev.vehicle))

    def file(self, ev: messages.CommandEvent) -> None:
        """Put an event in the retained history (also for events read back at start)."""
        key = (str(ev.source), ev.vehicle)
        h = self.history.setdefault(key, OrderedDict())
        h[ev.command_id] = ev
        h.move_to_end(ev.command_id)
        stages = self.stages.setdefault(key, {})
        stages.setdefault(ev.command_id, {})[ev.stage] = ev.time_ns
        while len(h) > HISTORY:
            old, _ = h.popitem(last=False)
            stages.pop(old, None)
        self.seq = max(self.seq, ev.seq)

    def history_message(self, source: str, vehicle: str) -> tuple[str, bytes, bool]:
        key = (source, vehicle)
        events = list(reversed(self.history.get(key, {}).values()))
        msg = messages.CommandHistory(vehicle=vehicle, source=Source.parse(source),
                                      time_ns=self.clock(), commands=events,
                                      stages=dict(self.stages.get(key, {})))
        return topics.command_history(vehicle, source), msg.to_json(), True

    def _reply(self, operator: str, reply: messages.CommandReply) -> None:
        self.outbox.append((topics.command_replies(operator), reply.to_json(), False))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def interrupted(self, ev: messages.CommandEvent, why: str) -> None:
        """A command a previous run left undecided (read back from the history at start):
        failed, saying why."""
        self._event(ev.model_copy(update={"stage": "failed", "reason": why,
                                          "time_ns": self.clock(), "verify": []}))

    def drain(self) -> tuple[list[tuple[str, bytes, bool]], list[messages.CommandEvent]]:
        out, events = self.outbox, self.events
        self.outbox, self.events = [], []
        return out, events


def _why(ch: _Check, act_ns: int) -> str:
    c = ch.condition
    what = c.state if c.state is not None else (f"above {c.above:g}" if c.above is not None
                                                else f"below {c.below:g}")
    if ch.at_ns is not None and holds(c, ch.value, ch.parameter):
        return (f"{c.parameter} {what} only {(ch.at_ns - act_ns) / NS:.0f} s after the ship "
                f"acted, not within {c.within_s:g} s")
    got = ch.result().value_text or (f"{ch.value:.4g}" if ch.value is not None else "nothing")
    return f"{c.parameter} not {what} within {c.within_s:g} s (read {got})"
