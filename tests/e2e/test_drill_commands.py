"""A closed-loop drill end to end, on the secured broker with the real ACL: the instructor's
drill runner flies the ships as training data, the ingest and the commanding service run
under their own accounts, and a scripted trainee EECOM acts on what the drill shows.

The trainee who takes the expected action (O2 tank 2 heaters and fans off, as a procedure
read up to the crew) sees the ship recover: the tank stops climbing, never ruptures, and
the bus undervolt the rupture would bring never comes; the debrief scores the action in
time and the alarm it prevented. The trainee who shuts a healthy fuel cell down instead
(armed, then executed) sees the harmful action scored, the expected one missing, and the
tank rupture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from groundstation.core import messages
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import utc_ns_to_get
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.drills.runner import DrillOptions, DrillRunner
from groundstation.drills.scenario import load_scenario
from groundstation.storage.influx.backends import InfluxV1
from tests.commanding_helpers import USERS, Operator, running_commanding
from tests.harness import rows, running_ingest, secure_mosquitto, wait_for
from tests.paths import DATA

APOLLO = "apollo_csm"
SPEED = 20.0


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture
def broker(mosquitto: MosquittoServer, tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


async def _fly(broker: MosquittoServer, influxdb: InfluxDBServer, tmp: Path,
               defs: dict[str, VehicleDefinition], drill_id: str, good: bool
               ) -> tuple[dict[str, Any], DrillRunner, list[messages.CommandEvent]]:
    sc = load_scenario(DATA / "drill_loop.yaml", defs)
    source = f"training/{drill_id}"
    runner = DrillRunner(sc, defs, DrillOptions(
        host=broker.host, port=broker.port, username="instructor",
        password=USERS["instructor"], speed=SPEED, out_dir=tmp / drill_id, out_exact=True,
        drill_id=drill_id, settle_s=1.5))
    async with (
        running_ingest(broker, influxdb, tmp / drill_id, defs, "loop",
                       ("ingest", USERS["ingest"]), display_rate_hz=4),
        running_commanding(broker, influxdb, tmp / drill_id, defs, database="loop"),
        Operator.login(broker, "eecom", source, alarms=True) as eecom,
    ):
        drill = asyncio.create_task(runner.run())
        # The heater sticks a minute in: O2 TK 2 PRESS comes up yellow.
        await wait_for(lambda: eecom.raised("o2_tank2_press"), 40, "O2 TK 2 PRESS")
        await eecom.client.publish(
            f"ack/eecom/{APOLLO}", json.dumps({"request_id": "a1", "parameter":
                                               "o2_tank2_press", "source": source}), qos=1)
        if good:
            reply = await eecom.send(APOLLO, "o2_tank_heaters_fans_off tank=2")
            assert reply.ok, reply
            done = await eecom.final(reply.command_id, 30)
            assert done.stage == "verified", done
        else:
            armed = await eecom.send(APOLLO, "arm fuel_cell_shutdown cell=2")
            assert armed.ok and armed.stage == "armed"
            reply = await eecom.send(APOLLO, f"execute {armed.command_id}")
            assert reply.ok
            done = await eecom.final(armed.command_id, 30)
            assert done.stage == "verified"  # the ship did it: the cell is gone
        await asyncio.wait_for(drill, 90)
    d = json.loads((tmp / drill_id / "debrief.json").read_text())
    return d, runner, list(eecom.events)


async def test_the_right_action_saves_the_ship_and_is_scored(
        broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition]) -> None:
    d, runner, events = await _fly(broker, influxdb, tmp_path, defs, "loop-good", good=True)
    action = d["actions"][0]
    assert action["status"] == "in_time" and action["by"] == "eecom/EECOM"
    assert action["outcome"] == "verified" and 0 < action["after_s"] <= 210
    alarms = {a["parameter"]: a for f in d["faults"] for a in f["alarms"]}
    assert alarms["o2_tank2_press"]["status"] == "acknowledged"
    # The ship recovered: no rupture, so no bus undervolt: prevented, not missed.
    assert alarms["main_bus_b_volts"]["status"] == "prevented"
    assert runner.mission.apollo.rupture_time is None
    assert runner.mission.apollo.o2_switch[1] == "OFF"
    series = runner.series[(APOLLO, "o2_tank2_press")]
    act = next(e for e in events if e.stage == "crew_acknowledged").act_ns
    assert act is not None
    # Recorded off the ingest's parameters: the climb stops once the crew has acted.
    before = [v for t, v in series if t <= utc_ns_to_get(act)]
    after = [v for t, v in series if t > utc_ns_to_get(act) + 5]
    assert before and after and max(after) <= max(before) + 3 and max(after) < 1000
    assert d["harmful_actions"] == [] and d["commanders"] == ["eecom"]
    assert d["score"] == 100
    assert (tmp_path / "loop-good" / "timeline.png").stat().st_size > 10_000
    md = (tmp_path / "loop-good" / "debrief.md").read_text()
    assert "## Actions" in md and "sent in time" in md and "prevented by" in md
    influx = InfluxV1(influxdb.url, "loop")
    await wait_for(lambda: bool(rows(influx, "SELECT * FROM commands WHERE "
                                             "source='training/loop-good'")), 15, "InfluxDB")
    stages = {r["stage"] for r in rows(influx, "SELECT * FROM commands WHERE "
                                               "source='training/loop-good'")}
    assert stages == {"queued", "sent", "crew_acknowledged", "verified"}


async def test_a_harmful_action_is_scored_and_the_tank_ruptures(
        broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition]) -> None:
    d, runner, _ = await _fly(broker, influxdb, tmp_path, defs, "loop-harm", good=False)
    assert [h["command"] for h in d["harmful_actions"]] == ["fuel_cell_shutdown"]
    assert d["harmful_actions"][0]["by"] == "eecom/EECOM"
    assert d["actions"][0]["status"] == "missing"
    assert runner.mission.apollo.rupture_time is not None
    assert runner.mission.apollo.fc_shutdown[1]
    alarms = {a["parameter"]: a for f in d["faults"] for a in f["alarms"]}
    assert alarms["main_bus_b_volts"]["status"] == "not_acknowledged"
    # One ack in time (1) and nothing else of 3, minus the harm (1): 0, never below.
    assert d["counts"]["harmful"] == 1 and d["score"] == 0
    md = (tmp_path / "loop-harm" / "debrief.md").read_text()
    assert "Harmful (each costs its weight)" in md and "fuel_cell_shutdown" in md
