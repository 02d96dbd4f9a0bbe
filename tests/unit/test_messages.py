"""The payloads (groundstation/core/messages.py): each message survives its own way out and
back in, a malformed payload is refused with a MessageError naming the wrong field, and a
request's id is echoed even when the rest of the request is refused."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundstation.core import messages as m
from groundstation.core.alarms import AlarmEngine, AlarmState, Transition
from groundstation.core.definitions import load_definition
from groundstation.core.topics import Source
from tests.paths import MINI

EVENT: dict[str, Any] = {
    "time_ns": 174_845_349_000_000_000, "seq": 3, "vehicle": "mini", "source": "live",
    "parameter": "cabin_press", "transition": "raised", "state": "active_unacked",
    "severity": "red", "side": "high", "value": 6.0, "value_text": None, "limit": 5.4,
    "onset_ns": 174_845_348_980_000_000, "operator": None, "until_ns": None,
    "label": "CABIN PRESS", "label_ru": "Давление в КМ", "unit": "psia", "console": "EECOM",
    "subsystem": "ECS"}


def roundtrip(msg: m.Message) -> None:
    again = type(msg).from_json(msg.to_json())
    assert again == msg
    assert json.loads(msg.to_json()) == msg.to_dict()


def test_an_alarm_event_carries_its_transition() -> None:
    ev = m.AlarmEvent.from_json(json.dumps(EVENT))
    assert ev.transition is Transition.RAISED and ev.state is AlarmState.ACTIVE_UNACKED
    assert ev.source == Source.live()
    assert ev.to_dict() == EVENT  # the same keys, "transition" among them, nothing else
    roundtrip(ev)
    with pytest.raises(m.MessageError) as bad:
        m.AlarmEvent.from_json(json.dumps({**EVENT, "transition": "exploded"}))
    assert bad.value.field == "transition"
    with pytest.raises(m.MessageError, match=r"^source: source 'lve'"):
        m.AlarmEvent.from_json(json.dumps({**EVENT, "source": "lve"}))
    # What a newer ingest adds does not stop an older console.
    assert m.AlarmEvent.from_json(json.dumps({**EVENT, "new_field": 1})) == ev


def test_events_and_active_lists_from_the_engine() -> None:
    engine = AlarmEngine(load_definition(MINI), "training/d1")
    with pytest.raises(ValueError):
        engine.acknowledge("cabin_press", "eecom")  # nothing to acknowledge yet
    ev = engine.shelve("cabin_press", "eecom", 60.0, time_ns=1_000)
    msg = m.AlarmEvent.from_event(ev)
    assert (msg.transition, msg.operator, msg.until_ns, str(msg.source)) == (
        Transition.SHELVED, "eecom", 1_000 + 60 * 10**9, "training/d1")
    active = m.ActiveAlarms.from_data(engine.active())
    assert active.alarms[0].state is AlarmState.SHELVED and not active.master_alarm
    assert active.counts.shelved == 1
    roundtrip(msg)
    roundtrip(active)


def test_an_operator_request_and_its_reply_share_the_request_id() -> None:
    req = m.OperatorRequest.from_json(b'{"request_id": "c1-7", "parameter": "cabin_press",'
                                      b' "action": "shelve", "duration_s": 600,'
                                      b' "source": "replay/s1"}')
    assert (req.action, req.duration_s, req.source) == ("shelve", 600.0, Source.replay("s1"))
    roundtrip(req)
    plain = m.OperatorRequest.from_json(b'{"request_id": "c1-8", "parameter": "hatch"}')
    assert (plain.action, plain.source) == ("acknowledge", Source.live())
    ev = m.AlarmEvent.from_data({**EVENT, "transition": "acknowledged",
                                 "state": "active_acked", "operator": "eecom"})
    done = m.OperatorReply.done(req.request_id, ev)
    assert done.to_dict()["request_id"] == "c1-7" and done.to_dict()["event"] == ev.to_dict()
    roundtrip(done)
    no = m.OperatorReply.refused("c1-8", "mini.hatch has no alarm to acknowledge",
                                 reason="no_alarm", parameter="hatch")
    assert (no.ok, no.request_id, no.reason) == (False, "c1-8", "no_alarm")
    roundtrip(no)
    with pytest.raises(m.MessageError, match="an ok reply carries the event"):
        m.OperatorReply.from_json(b'{"ok": true, "request_id": "x"}')


@pytest.mark.parametrize(("payload", "field", "problem", "request_id"), [
    (b"not json", None, "not a JSON object", None),
    (b'["ack"]', None, "a message is a JSON object, got an array", None),
    (b'{"parameter": "cabin_press"}', "request_id", "required", None),
    (b'{"request_id": 7, "parameter": "cabin_press"}', "request_id", "valid string", None),
    (b'{"request_id": "r1"}', "parameter", "required", "r1"),
    (b'{"request_id": "r2", "parameter": "p", "action": "explode"}', "action",
     "unknown action 'explode'; use acknowledge, shelve or unshelve", "r2"),
    (b'{"request_id": "r3", "parameter": "p", "action": "shelve"}', None,
     "duration_s: required to shelve", "r3"),
    (b'{"request_id": "r4", "parameter": "p", "duration_s": 60}', None,
     "duration_s: only a shelve takes a duration", "r4"),
    (b'{"request_id": "r5", "parameter": "p", "action": "shelve", "duration_s": -1}',
     "duration_s", "greater than 0", "r5"),
    (b'{"request_id": "r6", "parameter": "p", "action": "shelve", "duration_s": NaN}',
     "duration_s", "finite", "r6"),
    (b'{"request_id": "r7", "parameter": "p", "source": "replay"}', "source",
     "must be 'live', 'replay/<session>' or 'training/<drill>'", "r7"),
    (b'{"request_id": "r8", "parameter": "p", "operator": "flight"}', "operator",
     "unknown field", "r8"),
])
def test_a_malformed_request_names_the_field_and_keeps_its_id(
        payload: bytes, field: str | None, problem: str, request_id: str | None) -> None:
    with pytest.raises(m.MessageError) as bad:
        m.OperatorRequest.from_json(payload)
    assert bad.value.field == field
    assert problem in str(bad.value)
    assert bad.value.request_id == request_id
    if field:
        assert str(bad.value).startswith(f"{field}: ")
    # The reply to it names the request, or null when it had no usable id.
    reply = m.OperatorReply.refused(bad.value.request_id, str(bad.value), reason="bad_request")
    assert json.loads(reply.to_json())["request_id"] == request_id


def test_console_values_link_and_ingest_stats() -> None:
    upd = m.ParamsUpdate(vehicle="mini", source=Source.live(), time_ns=5,
                         values={"cabin_press": (5, 5.0, 0), "temp": (5, None, -2)})
    assert json.loads(upd.to_json())["values"] == {"cabin_press": [5, 5.0, 0],
                                                    "temp": [5, None, -2]}
    roundtrip(upd)
    with pytest.raises(m.MessageError, match=r"^values\.temp\[1\]"):
        m.ParamsUpdate.from_json(b'{"vehicle": "mini", "source": "live", "time_ns": 5,'
                                 b' "values": {"temp": [5, "warm", 0]}}')
    with pytest.raises(m.MessageError, match=r"^values: "):
        m.ParamsUpdate.from_json(b'{"vehicle": "mini", "source": "live", "time_ns": 5,'
                                 b' "values": 3}')
    link = m.LinkStats.from_json(b'{"frames_good": 100, "frames_missing": 2}')
    assert (link.frames_good, link.sync_errors, link.latency_ms_p50) == (100, 0, None)
    assert link.counters()["frames_missing"] == 2 and "vehicle" not in link.counters()
    roundtrip(link)
    stats = m.IngestStats(time_ns=1, messages_in=2, frames_in=3, frames_stored=3,
                          lines_submitted=3, messages_acked=2, inflight_messages=0,
                          pending_frames=0, outbox=0, alarm_events=0, alarm_state_saves=0,
                          alarm_state_errors=0, rejected={"bad_sync": 1}, rejected_total=1,
                          sink={"lines_written": 3, "spool_full": False, "p99_ms": 1.5})
    assert m.IngestStats.from_json(stats.to_json()).sink == {
        "lines_written": 3, "spool_full": False, "p99_ms": 1.5}


def test_simulator_state_control_and_replies() -> None:
    state = m.SimState.from_json(b'{"vehicle": "apollo_csm", "phase": "entry",'
                                 b' "from": "flight plan at the recording\'s time"}')
    assert state.origin == "flight plan at the recording's time"
    assert json.loads(state.to_json())["from"] == state.origin
    roundtrip(state)
    with pytest.raises(m.MessageError, match=r"^phase: required"):
        m.SimState.from_json(b'{"vehicle": "apollo_csm"}')
    req = m.SimControlRequest.from_json(b'{"cmd": "inject", "fault": "cabin_leak",'
                                        b' "params": {"rate_lb_h": 5}, "at": "docking+10m",'
                                        b' "id": 4}')
    assert (req.cmd, req.params, req.at, req.id) == ("inject", {"rate_lb_h": 5},
                                                     "docking+10m", 4)
    for payload, problem, request in (
            (b'{"cmd": "explode", "id": "b1"}', "cmd must be one of inject, clear", "b1"),
            (b'{"cmd": "pause", "speed": 2, "id": "b2"}', "pause: unknown key 'speed'", "b2"),
            (b'{"cmd": "inject", "id": "b3"}', "inject: 'fault' is required", "b3"),
            (b'{"cmd": "inject", "fault": "los", "at": true}', "at must be 'now'", None),
            (b'{"cmd": "inject", "fault": "x", "params": {"p": NaN}}', "not a finite", None),
            (b'{"cmd": "status", "id": [1]}', "id must be a string or an integer", None),
            (b"[1, 2]", "a request is a JSON object, got an array", None)):
        with pytest.raises(m.MessageError, match=problem) as bad:
            m.SimControlRequest.from_json(payload)
        assert bad.value.request_id == request
    # Unset parts of a reply are left out; `request` is always there.
    assert m.SimControlReply(ok=False, request=None, error="no").to_dict() == {
        "ok": False, "request": None, "error": "no"}
    reply = m.SimControlReply(ok=True, request=4, cmd="status", state=state)
    assert m.SimControlReply.from_json(reply.to_json()) == reply


@pytest.mark.parametrize(("text", "command", "speed", "to", "by_s"), [
    ("pause", "pause", None, None, None),
    ("speed 10", "speed", 10.0, None, None),
    ("speed max", "speed", "max", None, None),
    ("seek GET 044:22:00", "seek", None, "GET 044:22:00", None),
    ('{"command": "seek", "by_s": -30}', "seek", None, None, -30.0),
    ('{"command": "speed", "speed": "100"}', "speed", 100.0, None, None),
    ("STOP", "stop", None, None, None),
])
def test_replay_control_reads_json_and_text(text: str, command: str, speed: object,
                                            to: object, by_s: object) -> None:
    c = m.ReplayControl.from_json(text.encode())
    assert (c.command, c.speed, c.to, c.by_s) == (command, speed, to, by_s)
    assert m.ReplayControl.from_json(c.to_json()) == c


@pytest.mark.parametrize(("text", "problem"), [
    ("jump", "command: unknown command 'jump'; use pause, resume, speed, seek, stop"),
    ("speed fast", "speed: 'fast': give a factor"),
    ("speed -3", "speed: '-3': give a factor"),
    ("speed", "speed needs a factor"),
    ("seek", "seek needs 'to' (UTC, GET or ns) or 'by_s'"),
    ("pause now", "pause takes no argument"),
    ('{"command": "pause", "speed": 3}', "pause takes no speed"),
    ('{"command": "pause", "colour": 3}', "colour: unknown field"),
    ("{not json", "not a JSON object"),
])
def test_a_bad_replay_command_says_why(text: str, problem: str) -> None:
    with pytest.raises(m.MessageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        m.ReplayControl.from_json(text.encode())


def test_replay_session_and_status() -> None:
    s = m.ReplaySession(session="s1", definitions={"mini": m.ReplayDefinition(
        stream="hbr", sha256="ab", text="vehicle: mini")}, pass_id="mini/hbr/x", from_ns=1)
    assert json.loads(s.to_json())["pass"] == "mini/hbr/x"
    roundtrip(s)
    with pytest.raises(m.MessageError, match=r"^definitions\.mini\.sha256: required"):
        m.ReplaySession.from_json(b'{"v": 1, "session": "s", "definitions": {"mini":'
                                  b' {"stream": "hbr", "text": ""}}}')
    with pytest.raises(m.MessageError, match=r"^v: "):
        m.ReplaySession.from_json(b'{"v": 2, "session": "s"}')
    answer = m.ReplayControlReply(ok=True, command="speed", speed="10x", paused=False,
                                  time_ns=3)
    status = m.ReplayStatus(session="s1", state="running", speed="10x", position_ns=1,
                            position_utc="u", position_get="g", frames_sent=1,
                            frames_total=2, from_utc="a", to_utc="b", limits="recorded",
                            last_command=answer, time_ns=4)
    assert "error" not in json.loads(status.to_json())["last_command"]  # unset: left out
    roundtrip(status)


def test_drill_control_reads_json_and_text() -> None:
    c = m.DrillControl.from_json(b"inject apollo_csm cabin_leak rate_lb_h=5 ramp_s=1m "
                                 b"id=x1 stuck=true")
    assert (c.cmd, c.vehicle, c.fault, c.params, c.ramp_s, c.id) == (
        "inject", "apollo_csm", "cabin_leak", {"rate_lb_h": 5, "stuck": True}, 60.0, "x1")
    assert m.DrillControl.from_json(b"stop now").now
    assert not m.DrillControl.from_json(b"stop").now
    assert m.DrillControl.from_json(c.to_json()) == c
    assert c.to_dict(compact=True) == {"cmd": "inject", "vehicle": "apollo_csm",
                                       "fault": "cabin_leak", "params": c.params,
                                       "ramp_s": 60.0, "id": "x1"}
    j = m.DrillControl.from_json(json.dumps({
        "cmd": "inject", "vehicle": "soyuz", "fault": "coolant_loop",
        "expect": [{"parameter": "coolant_temp", "within_s": 900}]}))
    assert j.expect[0].within_s == 900 and j.expect[0].severity == "yellow"
    for payload, problem in (
            (b"", "empty command"),
            (b"jump", "unknown command 'jump'; commands are pause"),
            (b"inject apollo_csm", "inject VEHICLE FAULT"),
            (b"inject a f rate", "'rate' is not key=value"),
            (b"inject a f ramp_s=soon", "ramp_s: "),
            (b'{"cmd": "inject", "fault": "f"}', "inject: 'vehicle' is required"),
            (b'{"cmd": "inject", "vehicle": "a", "fault": "f", "colour": 1}',
             "inject: unknown key 'colour'"),
            (b'{"cmd": "inject", "vehicle": "a", "fault": "f", "expect": [{}]}',
             r"expect\[0\]\.parameter: required"),
            (b'{"cmd": "pause", "now": true}', "pause: unknown key 'now'")):
        with pytest.raises(m.MessageError, match=problem):
            m.DrillControl.from_json(payload)


@given(st.text(max_size=40))
def test_garbage_is_refused_with_a_message_error_never_anything_else(text: str) -> None:
    for kind in (m.OperatorRequest, m.AlarmEvent, m.ActiveAlarms, m.ParamsUpdate,
                 m.SimState, m.SimControlRequest, m.ReplaySession, m.ReplayControl,
                 m.DrillControl, m.DrillStatus):
        with contextlib.suppress(m.MessageError):
            kind.from_json(text.encode())
