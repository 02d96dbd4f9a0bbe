"""The command path end to end, through the real Mosquitto with the repository's ACL, the
real ingest, the commanding service and both ships flying: a command sent, the ship's
telemetry changing, verification passing; a command whose effect does not come in time
failing; a request from the wrong position, in another operator's name or from a ship
refused by the broker or the service; arm then execute enforced; garbage answered with an
error and changing nothing; every stage in InfluxDB and in the command history file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.core import flightplan as tl
from groundstation.core import messages, topics
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.storage.command_log import log_path, read_events
from groundstation.storage.influx.backends import InfluxV1
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.commanding_helpers import USERS, Operator, running_commanding
from tests.harness import flying, login, rows, running_ingest, wait_for

APOLLO, SOYUZ = tl.APOLLO, tl.SOYUZ
START = "044:25:30"  # docked, both ships in contact (the demo's start)
SPEED = 5.0


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture
def broker(mosquitto: MosquittoServer, tmp_path: Path) -> Iterator[MosquittoServer]:
    from tests.harness import secure_mosquitto

    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


def ship(broker: MosquittoServer, defs: dict[str, VehicleDefinition], vehicle: str
         ) -> tuple[Mission, SimRunner]:
    m = Mission(tl.parse_time(START), seed=11, historical=False, definitions=defs)
    return m, SimRunner(m, [defs[vehicle]], RunnerOptions(
        host=broker.host, port=broker.port, username=vehicle, password=USERS[vehicle],
        speed=SPEED, client_id=f"sim-{vehicle}-cmd"))


async def test_commands_reach_the_ships_and_are_verified_in_their_telemetry(
        broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition]) -> None:
    apollo, apollo_runner = ship(broker, defs, APOLLO)
    _, soyuz_runner = ship(broker, defs, SOYUZ)
    async with (
        running_ingest(broker, influxdb, tmp_path, defs, "cmd", ("ingest", USERS["ingest"]),
                       display_rate_hz=4),
        running_commanding(broker, influxdb, tmp_path, defs, database="cmd") as service,
        flying(apollo_runner), flying(soyuz_runner),
        Operator.login(broker, "inco") as inco, Operator.login(broker, "eecom") as eecom,
        Operator.login(broker, "gnc") as gnc, Operator.login(broker, "rts") as rts,
    ):
        # The ingest's processed parameters are what verification watches: wait for them.
        await wait_for(lambda: (topics.LIVE, APOLLO) in service.engine.data_time, 30,
                       "Apollo's processed parameters")

        # 1. A real-time command: CREW ALERT, heard by the ship, its light in the frames.
        reply = await inco.send(APOLLO, "crew_alert")
        assert reply.ok and reply.stage == "queued"
        done = await inco.final(reply.command_id)
        assert inco.stages(reply.command_id) == ["queued", "sent", "received", "verified"]
        assert done.verify[0].value_text == "ON" and done.verify[0].ok
        assert done.operator == "inco" and done.position == "INCO"
        assert apollo.applied[0][1:3] == (APOLLO, "crew_alert")

        # 2. A procedure: read up, read back, carried out 15 s later, verified.
        reply = await eecom.send(APOLLO, "o2_tank_heaters_fans_off tank=1")
        done = await eecom.final(reply.command_id)
        assert eecom.stages(reply.command_id) == ["queued", "sent", "crew_acknowledged",
                                                  "verified"]
        ack = next(e for e in eecom.events if e.command_id == reply.command_id
                   and e.stage == "crew_acknowledged")
        assert ack.act_ns is not None and ack.data_time_ns is not None
        # The crew's 15 s, mission time (to the ship's next 1 s physics step).
        assert 15e9 <= ack.act_ns - ack.data_time_ns < 16e9
        assert all(v.at_ns is not None and v.at_ns >= ack.act_ns for v in done.verify)
        assert apollo.apollo.o2_switch == ["OFF", "AUTO"]

        # 3. An effect that never comes: fuel cell 2 has failed, resetting it brings nothing.
        apollo.inject(APOLLO, "fuel_cell_loss", {"cell": 2})
        reply = await eecom.send(APOLLO, "fuel_cell_reset cell=2")
        done = await eecom.final(reply.command_id)
        assert done.stage == "failed"
        assert done.reason is not None and done.reason.startswith(
            "fc2_amps not above 5 within 30 s (read ")

        # 4. The wrong position: refused by the service, saying why; nothing sent.
        reply = await gnc.send(APOLLO, "crew_alert")
        assert not reply.ok and reply.reason == "wrong_position"
        assert reply.error == "crew_alert is sent from INCO, CAPCOM, FLIGHT; gnc holds GNC"
        reply = await rts.send(SOYUZ, "tv_power state=BLUE")
        assert reply.reason == "bad_argument" and "BLUE" in (reply.error or "")

        # 5. Another operator's name, a ship, garbage: the broker drops the first two (the
        #    service would have queued them, and it handles requests in order: eecom's own
        #    request after them is the marker), garbage gets an error and changes nothing.
        before = len(eecom.events)
        await eecom.client.publish(topics.command_requests("inco", APOLLO),
                                   messages.CommandRequest.parse_line("crew_alert", "f1")
                                   .to_json(), qos=1)
        async with login(broker, APOLLO, password=USERS[APOLLO]) as csm:
            await csm.publish(topics.command_requests(APOLLO, APOLLO),
                              messages.CommandRequest.parse_line("crew_alert", "f2")
                              .to_json(), qos=1)
        reply = await eecom.send(APOLLO, raw=b'{"request_id": "junk-1", "command": 7}')
        assert not reply.ok and reply.reason == "bad_request" and reply.request_id == "junk-1"
        reply = await eecom.send(APOLLO, "o2_tank_heaters_fans_off tank=2")
        assert reply.ok
        await wait_for(lambda: "queued" in eecom.stages(reply.command_id), 10, "queued")
        new = eecom.events[before:]
        assert next(e.operator for e in new if e.stage == "queued") == "eecom"
        assert not [e for e in new if e.operator in ("inco", APOLLO)]

        # 6. Arm, then execute: a hazardous command is never sent in one step.
        reply = await eecom.send(APOLLO, "fuel_cell_shutdown cell=3")
        assert reply.reason == "needs_arm"
        armed = await eecom.send(APOLLO, "arm fuel_cell_shutdown cell=3")
        assert armed.ok and armed.stage == "armed"
        stolen = await inco.send(APOLLO, f"execute {armed.command_id}")
        assert stolen.reason == "not_armed"
        reply = await eecom.send(APOLLO, f"execute {armed.command_id}")
        assert reply.ok and reply.command_id == armed.command_id
        done = await eecom.final(armed.command_id)
        assert eecom.stages(armed.command_id) == ["armed", "queued", "sent",
                                                  "crew_acknowledged", "verified"]
        assert apollo.apollo.fc_shutdown == [False, False, True]

        # Every operator watches the same history, retained for consoles that start later.
        await wait_for(lambda: any(h.vehicle == APOLLO and len(h.commands) >= 6
                                   for h in inco.histories), 10, "the history")
    history = next(h for h in reversed(inco.histories) if h.vehicle == APOLLO)
    assert history.commands[0].command_id == armed.command_id
    assert history.stages[armed.command_id].keys() >= {"armed", "queued", "verified"}

    # Stored: every stage in the command history file and in InfluxDB.
    stored = list(read_events(log_path(tmp_path / "archive", "live")))
    assert [e.stage for e in stored if e.command_id == armed.command_id] == [
        "armed", "queued", "sent", "crew_acknowledged", "verified"]
    assert {e.stage for e in stored if e.command == "crew_alert"} >= {"refused", "verified"}
    influx = InfluxV1(influxdb.url, "cmd")
    await wait_for(lambda: len(rows(influx, "SELECT * FROM commands")) >= len(stored), 15,
                   "the commands measurement")
    points = rows(influx, "SELECT * FROM commands WHERE source='live' AND "
                          "vehicle='apollo_csm' AND stage='verified'")
    assert {p["command"] for p in points} >= {"crew_alert", "o2_tank_heaters_fans_off",
                                              "fuel_cell_shutdown"}
    failed = rows(influx, "SELECT reason, verify FROM commands WHERE stage='failed'")
    assert any("fc2_amps" in p["reason"] for p in failed)
    assert json.loads(failed[0]["verify"])[0]["parameter"] == "fc2_amps"


async def test_a_ship_out_of_contact_never_answers_and_the_command_fails(
        broker: MosquittoServer, tmp_path: Path, defs: dict[str, VehicleDefinition]) -> None:
    """Soyuz outside a Soviet pass does not hear Moscow: no answer, the command fails."""
    m = Mission(tl.parse_time(START), seed=11, historical=False, definitions=defs)
    quiet = m.find_coverage(SOYUZ, m.t, 120, aos=False)
    m.fast_forward(quiet)
    runner = SimRunner(m, [defs[SOYUZ]], RunnerOptions(
        host=broker.host, port=broker.port, username=SOYUZ, password=USERS[SOYUZ], speed=1,
        client_id="sim-soyuz-los"))
    async with (
        running_commanding(broker, None, tmp_path, defs, ack_timeout_s=2.0),
        flying(runner), Operator.login(broker, "rts") as rts,
    ):
        reply = await rts.send(SOYUZ, "tv_power state=ON")
        done = await rts.final(reply.command_id, timeout=20)
    assert rts.stages(reply.command_id) == ["queued", "sent", "failed"]
    assert done.reason is not None and done.reason.startswith("no answer from soyuz within 2 s")
    assert m.applied == []


async def test_the_shell_sender(broker: MosquittoServer, tmp_path: Path,
                                defs: dict[str, VehicleDefinition],
                                capsys: pytest.CaptureFixture[str]) -> None:
    """`groundstation commanding send` as an operator: a refusal says why, exit 1."""
    from groundstation.cli import main

    def send(user: str, *line: str) -> int:
        return main(["commanding", "send", APOLLO, *line, "--mqtt-host", broker.host,
                     "--mqtt-port", str(broker.port), "--mqtt-username", user,
                     "--mqtt-password", USERS[user], "--timeout", "5"])

    async with running_commanding(broker, None, tmp_path, defs, ack_timeout_s=1.0):
        assert await asyncio.to_thread(send, "gnc", "crew_alert") == 1
        assert "refused (wrong_position): crew_alert is sent from INCO, CAPCOM, FLIGHT" in \
            capsys.readouterr().err
        # No ship flies here: sent, then failed for want of an answer.
        assert await asyncio.to_thread(send, "inco", "crew_alert") == 1
        out = capsys.readouterr().out
        assert "crew_alert queued" in out and "FAILED" in out and "no answer from" in out
