"""A call made on the console's call key, scored in the drill's debrief, on the secured
broker with the real ACL: the instructor's drill runner flies the ship as training data,
the trainee GNC watches the drill on the Houston terminal console logged in as `eecom`,
presses `k` and makes the call; the runner hears it under the name the broker
authenticated, stamps it with the mission clock, and the debrief scores it against the
scenario's timed calls (in time; the other one never made: missing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import MosquittoServer
from groundstation.drills.runner import DrillOptions, DrillRunner
from groundstation.drills.scenario import load_scenario
from tests.harness import secure_mosquitto, wait_for
from tests.paths import DATA

USERS = {"instructor": "instructor-pw", "eecom": "eecom-pw"}
SPEED = 10.0


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


async def test_a_call_on_the_console_is_scored_in_the_debrief(
        secure_broker: MosquittoServer, tmp_path: Path) -> None:
    defs: dict[str, VehicleDefinition] = load_all()
    sc = load_scenario(DATA / "drill_call.yaml", defs)
    drill_id = "call-drill-1"
    trainee = console.ConsoleApp(
        centre="houston", position="GNC", source=f"training/{drill_id}", definitions=defs,
        mqtt=MqttConfig(host=secure_broker.host, port=secure_broker.port,  # type: ignore[call-arg]
                        username="eecom", password=USERS["eecom"]))  # type: ignore[arg-type]
    runner = DrillRunner(sc, defs, DrillOptions(
        host=secure_broker.host, port=secure_broker.port, username="instructor",
        password=USERS["instructor"], speed=SPEED, out_dir=tmp_path / "debrief",
        out_exact=True, drill_id=drill_id, settle_s=0.5))

    async def call(pilot: object, text: str) -> None:
        trainee.simulate_key("k")
        line = trainee.query_one("#callline", Input)
        await wait_for(lambda: line.has_class("open") and line.has_focus, 5, "the call line")
        line.value = text
        trainee.simulate_key("enter")
        await wait_for(lambda: f"— eecom: {text}" in trainee.status_text.plain, 10,
                       f"the call {text!r} made")

    async with trainee.run_test(size=(150, 46)) as pilot:
        await wait_for(lambda: trainee.model.connected, 10, "the console on the broker")
        drill = asyncio.create_task(runner.run())
        await wait_for(lambda: runner.state == "running", 20, "the drill running")
        # Before the fault: a call that answers nothing (listed, no credit, no cost).
        await call(pilot, "GNC is go")
        await wait_for(lambda: len(runner.calls) == 1, 10, "the first call heard")
        # The fault 60 mission seconds in; the call, well within its 150 s.
        await wait_for(lambda: runner.injections and runner.clock
                       >= runner.injections[0].get + 20, 30, "the fault in")
        await call(pilot, "RCS off now, fumes in the cabin")
        await wait_for(lambda: len(runner.calls) == 2, 10, "the second call heard")
        result = await asyncio.wait_for(drill, 90)

    d = json.loads((tmp_path / "debrief" / "debrief.json").read_text())
    assert d == json.loads(json.dumps(result.debrief, default=str))
    rcs, els = d["timed_calls"]
    # The caller is whom the broker authenticated, from the console's position.
    assert rcs["status"] == "in_time" and rcs["by"] == "eecom/GNC"
    assert rcs["said"] == "RCS off now, fumes in the cabin"
    assert 20 <= rcs["after_s"] <= 150
    assert els["status"] == "missing"
    assert [m["text"] for m in d["other_calls"]] == ["GNC is go"]
    assert d["callers"] == ["eecom"]
    assert d["score"] == 50  # one call of two
    text = (tmp_path / "debrief" / "debrief.md").read_text()
    assert "**called in time: eecom/GNC" in text and "**missing (never called)**" in text
    assert (tmp_path / "debrief" / "timeline.png").exists()
