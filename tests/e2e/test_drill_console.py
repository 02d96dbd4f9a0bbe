"""A training drill as it runs in the control room, on the secured broker with the real ACL:
the instructor's drill runner flies the ships as training data, the ingest logs in as
`ingest`, and the trainee EECOM acknowledges on the Houston terminal console, logged in as
`eecom`. The debrief names the operator the broker authenticated; a live console sees none
of the drill."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.drills.runner import DrillOptions, DrillRunner
from groundstation.drills.scenario import load_scenario
from tests.harness import running_ingest, secure_mosquitto, wait_for
from tests.paths import DATA

USERS = {"ingest": "ingest-pw", "instructor": "instructor-pw", "eecom": "eecom-pw",
         "flight": "flight-pw"}
APOLLO = "apollo_csm"
SPEED = 10.0


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


def login(broker: MosquittoServer, user: str) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, username=user,  # type: ignore[call-arg]
                      password=USERS[user])


async def test_trainee_acknowledges_a_drill_alarm_on_the_console(
        secure_broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    defs: dict[str, VehicleDefinition] = load_all()
    sc = load_scenario(DATA / "drill_short.yaml", defs)
    drill_id = "console-drill-1"
    source = f"training/{drill_id}"
    trainee = console.ConsoleApp(centre="houston", position="EECOM",
                                 mqtt=login(secure_broker, "eecom"), source=source,
                                 definitions=defs)
    live_console = console.ConsoleApp(centre="houston", mqtt=login(secure_broker, "flight"),
                                      source="live", definitions=defs)
    runner = DrillRunner(sc, defs, DrillOptions(
        host=secure_broker.host, port=secure_broker.port, username="instructor",
        password=USERS["instructor"], speed=SPEED, out_dir=tmp_path / "debrief",
        out_exact=True, drill_id=drill_id, settle_s=1.5))
    drill_view = trainee.model.source(source)
    async with running_ingest(secure_broker, influxdb, tmp_path, defs, "drill",
                              ("ingest", USERS["ingest"]), display_rate_hz=4), \
            trainee.run_test(size=(150, 46)), live_console.run_test(size=(150, 46)):
        drill = asyncio.create_task(runner.run())
        key = f"{APOLLO}/fc2_volts"

        def fc2_row() -> list[str] | None:
            return next(([c.plain for c in cells] for k, cells in
                         trainee.alarm_rows(drill_view) if k == key), None)

        # Fuel cell 2 is lost 30 mission seconds in: its red alarm reaches the console.
        await wait_for(lambda: (r := fc2_row()) is not None and r[6] == "RED", 30,
                       "the drill's FC 2 VOLTS alarm on the trainee's console")
        raised_wall = time.monotonic()
        # The key acts on the alarm table on the screen, redrawn a few times a second from
        # the model: under load it can lag the model by more than a redraw.
        table = trainee.query_one("#alarms", DataTable)
        await wait_for(lambda: key in {k.value for k in table.rows}, 5, "the alarm drawn")
        keys = [row.key.value for row in table.ordered_rows]
        steps = keys.index(key) - table.cursor_row
        for k in (["down"] * steps if steps > 0 else ["up"] * -steps) + ["a"]:
            trainee.simulate_key(k)
        await wait_for(lambda: (r := fc2_row()) is not None and r[7] == "ACK"
                       and r[8] == "eecom", 10, "the acknowledgement on the console")
        acked_wall = time.monotonic()
        result = await asyncio.wait_for(drill, 90)
        # Never on the live console: drill data are training data.
        assert not live_console.alarm_rows(live_console.model.source("live"))
        assert all(str(e.source) == source for e in drill_view.events)

    d = json.loads((tmp_path / "debrief" / "debrief.json").read_text())
    assert d == json.loads(json.dumps(result.debrief, default=str))
    alarms = {a["parameter"]: a for f in d["faults"] for a in f["alarms"]}
    fc2 = alarms["fc2_volts"]
    assert fc2["acked_by"] == "eecom"
    assert fc2["status"] == "acknowledged"
    # The reaction the debrief reports is the trainee's on the mission clock: at 10x, ten
    # mission seconds per wall second between the alarm on the console and the key.
    wall_reaction = acked_wall - raised_wall
    assert 0 <= fc2["reaction_s"] <= SPEED * (wall_reaction + 1.0)
    # O2 tank 2 was left alone: missed by the trainee.
    assert alarms["o2_tank2_press"]["status"] == "not_acknowledged"
    assert d["operators"] == ["eecom"]
    # One of two expected alarms acknowledged in time, one never: 50 of 100.
    assert d["counts"] == {"expected": 2, "acknowledged": 1, "late": 0,
                           "missed_by_trainee": 1, "missed_by_system": 0, "prevented": 0,
                           "actions_expected": 0, "harmful": 0, "calls_expected": 0}
    assert d["score"] == 50
