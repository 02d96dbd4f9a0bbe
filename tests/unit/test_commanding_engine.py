"""The command path's logic (groundstation/commanding/engine.py) without a broker: every
refusal with its reason, arm then execute, the stages, verification passing, failing and
timing out, all on fake clocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from groundstation.commanding.engine import CommandEngine, Settings
from groundstation.commanding.operators import Operators, OperatorsError, parse_operators
from groundstation.core import messages, topics
from groundstation.core.commanddefs import load_all_commands
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import NS
from groundstation.core.topics import Source

APOLLO = "apollo_csm"
LIVE = Source.live()
T0 = 174_886_000_000_000_000  # a 1975 data time, ns


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_700_000_000 * NS

    def ns(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall += int(s * NS)


OPS = Operators({"eecom": ("EECOM",), "flight": ("FLIGHT",), "gnc": ("GNC",),
                 "inco": ("INCO",), "sozh": ("СОЖ",)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(defs: dict[str, VehicleDefinition], clock: Clock) -> CommandEngine:
    return CommandEngine(load_all_commands(defs), defs, OPS,
                         Settings(arm_timeout_s=30, ack_timeout_s=15, verify_grace_s=30),
                         clock=clock.ns, monotonic=clock.monotonic)


def request(engine: CommandEngine, operator: str, vehicle: str, **fields: Any
            ) -> tuple[list[messages.CommandReply], list[messages.CommandEvent],
                       list[tuple[str, bytes, bool]]]:
    fields.setdefault("request_id", "r1")
    engine.on_request(operator, vehicle, json.dumps(fields).encode())
    return drain(engine)


def drain(engine: CommandEngine) -> tuple[list[messages.CommandReply],
                                          list[messages.CommandEvent],
                                          list[tuple[str, bytes, bool]]]:
    out, events = engine.drain()
    replies = [messages.CommandReply.from_json(p) for t, p, _ in out
               if t.startswith("cmd/replies/")]
    return replies, events, out


def params(engine: CommandEngine, t_ns: int, vehicle: str = APOLLO,
           source: Source = LIVE, **values: float) -> None:
    engine.on_params(source, vehicle, messages.ParamsUpdate(
        vehicle=vehicle, source=source, time_ns=t_ns,
        values={k: (t_ns, v, 0) for k, v in values.items()}))


def ack(engine: CommandEngine, command_id: str, stage: str, t_ns: int,
        act_ns: int | None = None, vehicle: str = APOLLO) -> None:
    engine.on_ack(LIVE, vehicle, messages.CommandAck(
        command_id=command_id, stage=stage, time_ns=t_ns, act_ns=act_ns).to_json())


def test_a_command_is_queued_sent_received_and_verified(engine: CommandEngine,
                                                        defs: dict[str, VehicleDefinition]
                                                        ) -> None:
    params(engine, T0, cw_crew_alert=0)
    replies, events, out = request(engine, "inco", APOLLO, command="crew_alert")
    assert replies[0].ok and replies[0].stage == "queued" and replies[0].request_id == "r1"
    cid = replies[0].command_id
    assert [e.stage for e in events] == ["queued", "sent"]
    assert events[0].operator == "inco" and events[0].position == "INCO"
    assert events[0].data_time_ns == T0 and events[0].kind == "realtime"
    uplink = [p for t, p, _ in out if t == topics.command_uplink(APOLLO)]
    up = messages.CommandUplink.from_json(uplink[0])
    assert (up.command, up.command_id, up.operator) == ("crew_alert", cid, "inco")
    history = [p for t, p, r in out if t == topics.command_history(APOLLO) and r]
    assert messages.CommandHistory.from_json(history[-1]).commands[0].stage == "sent"
    ack(engine, cid, "received", T0 + 2 * NS, T0 + 3 * NS)
    _, events, _ = drain(engine)
    assert [(e.stage, e.act_ns, e.data_time_ns) for e in events] == [
        ("received", T0 + 3 * NS, T0 + 2 * NS)]
    on = defs[APOLLO].parameter("cw_crew_alert").state_code("ON")
    # Before the ship acts the light does not count, whatever it reads.
    params(engine, T0 + 2 * NS, cw_crew_alert=on)
    assert drain(engine)[1] == []
    params(engine, T0 + 5 * NS, cw_crew_alert=on)
    _, events, _ = drain(engine)
    assert events[0].stage == "verified"
    v = events[0].verify[0]
    assert (v.ok, v.at_ns, v.value_text, v.parameter) == (True, T0 + 5 * NS, "ON",
                                                          "cw_crew_alert")
    assert cid not in engine.active


def test_a_procedure_acts_after_the_crew_delay_and_fails_when_the_effect_is_late(
        engine: CommandEngine, defs: dict[str, VehicleDefinition]) -> None:
    params(engine, T0)
    replies, _, _ = request(engine, "eecom", APOLLO, command="o2_tank_heaters_fans_off",
                            args={"tank": 2})
    cid = replies[0].command_id
    ack(engine, cid, "crew_acknowledged", T0 + NS, T0 + 16 * NS)
    assert drain(engine)[1][0].stage == "crew_acknowledged"
    on = defs[APOLLO].parameter("o2_tank2_htr").state_code("ON")
    off = defs[APOLLO].parameter("o2_tank2_htr").state_code("OFF")
    params(engine, T0 + 20 * NS, o2_tank2_htr=on, o2_tank2_fan=off)
    params(engine, T0 + 30 * NS, o2_tank2_htr=on, o2_tank2_fan=off)
    assert drain(engine)[1] == []
    params(engine, T0 + 37 * NS, o2_tank2_htr=off, o2_tank2_fan=off)  # window ends at 36 s
    _, events, _ = drain(engine)
    assert events[0].stage == "failed"
    assert events[0].reason == ("o2_tank2_htr OFF only 21 s after the ship acted, not "
                                "within 20 s")
    assert {v.parameter: v.ok for v in events[0].verify} == {"o2_tank2_htr": False,
                                                            "o2_tank2_fan": True}


def test_the_first_sample_after_a_window_decides_when_none_fell_inside(
        engine: CommandEngine, defs: dict[str, VehicleDefinition]) -> None:
    # A fast drill: the ingest's display updates are ten mission seconds apart.
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert")
    ack(engine, replies[0].command_id, "received", T0, T0)
    drain(engine)
    params(engine, T0 + 12 * NS, cw_crew_alert=defs[APOLLO].parameter(
        "cw_crew_alert").state_code("ON"))
    assert drain(engine)[1][0].stage == "verified"


def test_no_answer_from_the_ship_and_no_telemetry_fail_the_command(
        engine: CommandEngine, clock: Clock) -> None:
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert")
    clock.advance(14)
    engine.tick()
    assert drain(engine)[1] == []
    clock.advance(2)
    engine.tick()
    ev = drain(engine)[1][0]
    assert ev.stage == "failed" and "no answer from apollo_csm" in (ev.reason or "")
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert", request_id="r2")
    ack(engine, replies[0].command_id, "received", T0, T0)
    drain(engine)
    clock.advance(10 + 30 + 1)
    engine.tick()
    ev = drain(engine)[1][0]
    assert ev.stage == "failed" and ev.reason.startswith("no telemetry to verify it by")
    # A late answer for a command already decided changes nothing.
    ack(engine, replies[0].command_id, "received", T0, T0)
    assert drain(engine)[1] == []


def test_the_ship_rejecting_a_command_fails_it(engine: CommandEngine) -> None:
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert")
    engine.on_ack(LIVE, APOLLO, messages.CommandAck(
        command_id=replies[0].command_id, stage="rejected", time_ns=T0,
        reason="no such command").to_json())
    ev = drain(engine)[1][0]
    assert ev.stage == "failed" and ev.reason == "the ship rejected it: no such command"
    # An answer on another ship's topic is not this command's.
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert", request_id="r2")
    ack(engine, replies[0].command_id, "received", T0, T0, vehicle="soyuz")
    assert drain(engine)[1] == []


@pytest.mark.parametrize(("operator", "vehicle", "fields", "reason", "says"), [
    ("eecom", APOLLO, {"command": "no_such"}, "unknown_command", "has no command 'no_such'"),
    ("eecom", "vostok", {"command": "crew_alert"}, "unknown_vehicle", "no commands for"),
    ("nobody", APOLLO, {"command": "crew_alert"}, "not_operator", "is not an operator"),
    ("gnc", APOLLO, {"command": "crew_alert"}, "wrong_position",
     "crew_alert is sent from INCO, CAPCOM, FLIGHT; gnc holds GNC"),
    ("eecom", APOLLO, {"command": "o2_tank_heaters_fans_off", "args": {"tank": 2},
                       "position": "FLIGHT"}, "wrong_position",
     "eecom does not hold the position FLIGHT"),
    ("eecom", APOLLO, {"command": "o2_tank_heaters_fans_off", "args": {"tank": 3}},
     "bad_argument", "tank: 3 is not one of 1, 2"),
    ("eecom", APOLLO, {"command": "o2_tank_heaters_fans_off"}, "bad_argument",
     "tank: required"),
    ("eecom", APOLLO, {"command": "o2_tank_heaters_fans_off", "args": {"tank": 2, "x": 1}},
     "bad_argument", "x: o2_tank_heaters_fans_off takes tank=1|2"),
    ("eecom", APOLLO, {"command": "power_down"}, "needs_arm", "power_down is hazardous"),
    ("eecom", APOLLO, {"action": "execute", "command_id": "zz-1"}, "not_armed",
     "no armed command 'zz-1'"),
    ("eecom", APOLLO, {"command": "crew_alert", "source": "replay/s1"}, "not_commandable",
     "cannot be commanded"),
    ("eecom", APOLLO, {"command": "crew_alert", "speed": 2}, "bad_request",
     "speed: unknown field for send"),
    ("sozh", "soyuz", {"command": "tv_power", "args": {"state": "ON"}}, "wrong_position",
     "tv_power is sent from РТС, ОБЗОР"),
])
def test_a_refused_request_says_why_and_nothing_is_sent(
        engine: CommandEngine, operator: str, vehicle: str, fields: dict[str, Any],
        reason: str, says: str) -> None:
    replies, events, out = request(engine, operator, vehicle, **fields)
    assert len(replies) == 1 and not replies[0].ok
    assert replies[0].reason == reason and says in (replies[0].error or "")
    assert replies[0].request_id == "r1"
    assert not [t for t, _, _ in out if t.startswith("cmd/uplink/")]
    assert all(e.stage == "refused" and e.code == reason for e in events)
    assert not engine.active


def test_garbage_gets_an_error_reply_and_changes_nothing(engine: CommandEngine) -> None:
    for payload in (b"", b"\xff\xfe", b"[1]", b'{"request_id": 5}', b"x" * 20000):
        engine.on_request("eecom", APOLLO, payload)
        replies, events, out = drain(engine)
        assert len(replies) == 1 and replies[0].reason == "bad_request"
        assert events == [] and len(out) == 1
    engine.on_request("eecom", APOLLO, b'{"request_id": "keep-me", "action": "fly"}')
    replies, _, _ = drain(engine)
    assert replies[0].request_id == "keep-me" and "unknown action" in (replies[0].error or "")


def test_hazardous_commands_are_armed_then_executed(engine: CommandEngine,
                                                    clock: Clock) -> None:
    replies, events, out = request(engine, "eecom", APOLLO, command="power_down",
                                   action="arm")
    assert replies[0].ok and replies[0].stage == "armed" and replies[0].arm_expires_ns
    assert [e.stage for e in events] == ["armed"]
    assert not [t for t, _, _ in out if t.startswith("cmd/uplink/")]
    cid = replies[0].command_id
    # Another operator cannot execute it, nor can it be executed on another ship.
    replies, _, _ = request(engine, "flight", APOLLO, action="execute", command_id=cid)
    assert replies[0].reason == "not_armed"
    replies, _, _ = request(engine, "eecom", "soyuz", action="execute", command_id=cid)
    assert replies[0].reason == "not_armed"
    replies, events, out = request(engine, "eecom", APOLLO, action="execute", command_id=cid)
    assert replies[0].ok and replies[0].stage == "queued" and replies[0].command_id == cid
    assert [e.stage for e in events] == ["queued", "sent"]
    assert [t for t, _, _ in out if t == topics.command_uplink(APOLLO)]
    # Executed once: a second execute finds nothing armed.
    replies, _, _ = request(engine, "eecom", APOLLO, action="execute", command_id=cid)
    assert replies[0].reason == "not_armed"
    # Arming a command that is not hazardous is a mistake, said as such.
    replies, _, _ = request(engine, "inco", APOLLO, command="crew_alert", action="arm")
    assert replies[0].reason == "bad_request" and "not hazardous" in (replies[0].error or "")


def test_an_arm_expires_or_is_disarmed(engine: CommandEngine, clock: Clock) -> None:
    replies, _, _ = request(engine, "eecom", APOLLO, command="fuel_cell_shutdown",
                            args={"cell": 2}, action="arm")
    cid = replies[0].command_id
    clock.advance(31)
    engine.tick()
    ev = drain(engine)[1][0]
    assert ev.stage == "cancelled" and "not executed within 30 s" in (ev.reason or "")
    replies, _, _ = request(engine, "eecom", APOLLO, action="execute", command_id=cid)
    assert replies[0].reason == "not_armed"
    replies, _, _ = request(engine, "eecom", APOLLO, command="fuel_cell_shutdown",
                            args={"cell": 2}, action="arm", request_id="r2")
    replies, events, out = request(engine, "eecom", APOLLO, action="disarm",
                                   command_id=replies[0].command_id, request_id="r3")
    assert replies[0].ok and replies[0].stage == "cancelled"
    assert events[0].stage == "cancelled" and events[0].reason == "disarmed by eecom"
    assert not [t for t, _, _ in out if t.startswith("cmd/uplink/")]


def test_training_commands_go_to_the_drills_ships(engine: CommandEngine) -> None:
    drill = Source.training("d1")
    replies, events, out = request(engine, "sozh", "soyuz", command="close_hatch_sa_bo",
                                   source="training/d1")
    assert replies[0].ok
    assert [t for t, _, _ in out if t == topics.command_uplink("soyuz", drill)]
    assert {str(e.source) for e in events} == {"training/d1"}
    assert topics.command_events("soyuz", drill) in {t for t, _, _ in out}


def test_the_operators_file(tmp_path: Any) -> None:
    ops = parse_operators({"operators": {"eecom": ["EECOM"], "sozh": ["SOZH", "СОЖ"],
                                         "boss": ["flight", "capcom"]}})
    assert ops.of("sozh") == ("СОЖ",) and ops.of("boss") == ("FLIGHT", "CAPCOM")
    assert ops.of("stranger") is None
    with pytest.raises(OperatorsError) as e:
        parse_operators({"operators": {"apollo_csm": ["EECOM"], "x/y": ["EECOM"],
                                       "eve": ["JANITOR"], "bob": "EECOM"}}, "ops.toml")
    text = str(e.value)
    assert "4 problems in operators file ops.toml" in text
    assert "operator 'apollo_csm': apollo_csm is a vehicle or a service account" in text
    assert "operator 'eve': 'JANITOR' is not a console position" in text
    assert "operator 'bob': give a list of positions" in text


async def test_a_restart_reads_the_history_back_and_fails_what_was_undecided(
        defs: dict[str, VehicleDefinition], tmp_path: Any) -> None:
    from groundstation.commanding.service import CommandingService
    from groundstation.config import Config, IngestConfig
    from groundstation.ingest.wiring import NullSink
    from groundstation.storage.command_log import CommandLogWriter, log_path, read_events

    base = {"vehicle": APOLLO, "source": "live", "command": "crew_alert", "kind": "realtime",
            "operator": "inco", "time_ns": 1, "data_time_ns": T0}
    w = CommandLogWriter(tmp_path, "live")
    for n, (cid, stage) in enumerate([("a-1", "queued"), ("a-1", "verified"),
                                      ("a-2", "queued"), ("a-2", "sent")], start=1):
        w.append(messages.CommandEvent.from_data({**base, "command_id": cid, "seq": n,
                                                  "stage": stage}))
    w.close()
    config = Config(ingest=IngestConfig(archive_dir=tmp_path))  # type: ignore[call-arg]
    service = CommandingService(config, defs, load_all_commands(defs), OPS, NullSink(),
                                tmp_path)
    service.restore()
    await service._flush(None)
    events = list(read_events(log_path(tmp_path, "live")))
    assert [(e.command_id, e.stage) for e in events[-1:]] == [("a-2", "failed")]
    assert events[-1].reason == "the commanding service stopped before it was decided"
    assert events[-1].seq > 4  # the order goes on from where it was
    history = [messages.CommandHistory.from_json(p) for t, p, r in service._pending
               if t == topics.command_history(APOLLO)]
    assert [(c.command_id, c.stage) for c in history[-1].commands] == [("a-2", "failed"),
                                                                       ("a-1", "verified")]
    for w in service._logs.values():
        w.close()
