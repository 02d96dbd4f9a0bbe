"""A drill end to end against real servers: real Mosquitto and InfluxDB, the real ingest, the
drill runner flying a short scenario at 20x, and a scripted trainee (operator "eecom") who
acknowledges one alarm in time (during an instructor's pause), one late, and misses one.
The instructor pauses, resumes and injects an extra fault through drill/control."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from matplotlib import image as mpimg

from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import format_get
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.drills.runner import DrillOptions, DrillRunner, control_topic, status_topic
from groundstation.drills.scenario import load_scenario
from groundstation.storage.influx.backends import InfluxV1
from tests.harness import rows, running_ingest, wait_for
from tests.paths import DATA

APOLLO = "apollo_csm"
SPEED = 20.0


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


class Trainee:
    """EECOM at the console: follows the drill's alarms and acknowledges on cue."""

    def __init__(self, client: aiomqtt.Client, drill_id: str):
        self.client = client
        self.drill_id = drill_id
        self.events: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.replies: list[dict[str, Any]] = []

    async def listen(self) -> None:
        async for m in self.client.messages:
            data = json.loads(bytes(m.payload))  # type: ignore[arg-type]
            topic = str(m.topic)
            if topic.startswith("alarms/replies/"):
                self.replies.append(data)
            elif topic.startswith("alarms/"):
                self.events.append({**data, "wall": time.monotonic()})
            elif topic.startswith("drill/status/"):
                self.status = data

    def raised(self, pid: str, severity: str = "red") -> dict[str, Any] | None:
        return next((e for e in self.events if e["parameter"] == pid
                     and e["transition"] in ("raised", "escalated") and e["severity"] == severity),
                    None)

    def acked(self, pid: str) -> bool:
        return any(e["parameter"] == pid and e["transition"] == "acknowledged" for e in self.events)

    async def ack(self, pid: str) -> None:
        await self.client.publish(
            f"ack/eecom/{APOLLO}",
            json.dumps({"request_id": f"ack-{pid}", "parameter": pid, "action": "acknowledge",
                        "source": f"training/{self.drill_id}"}), qos=1)

    async def instructor(self, payload: str | dict[str, Any]) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        await self.client.publish(control_topic(self.drill_id), text, qos=1)


async def _script(t: Trainee, runner: DrillRunner) -> dict[str, float]:
    """The trainee's and the instructor's part. Returns wall times worth checking."""
    marks: dict[str, float] = {}
    # 1. Fuel cell 2 goes red: the instructor pauses at once, the trainee acknowledges
    #    during the pause (2 s of wall time, 40 mission s at 20x, that must not count).
    await wait_for(lambda: t.raised("fc2_volts") is not None, 30, "fc2_volts red")
    await t.instructor("pause")
    await wait_for(lambda: t.status.get("state") == "paused", 10, "the drill to pause")
    marks["paused_get"] = float(t.status["get"])
    await asyncio.sleep(2.0)
    await t.ack("fc2_volts")
    await wait_for(lambda: t.acked("fc2_volts"), 10, "the fc2_volts acknowledgement")
    assert runner.clock == pytest.approx(marks["paused_get"], abs=1e-6)  # frozen
    await t.instructor({"cmd": "resume"})
    await wait_for(lambda: t.status.get("state") == "running", 10, "the drill to resume")
    # 2. The instructor adds a fault of their own, with the alarm it should raise.
    await t.instructor({"cmd": "inject", "vehicle": APOLLO, "fault": "bus_undervolt",
                        "params": {"bus": "A", "amps": 40.0}, "id": "short-a",
                        "expect": [{"parameter": "main_bus_a_volts", "severity": "red",
                                    "within_s": 60}]})
    await wait_for(lambda: t.raised("main_bus_a_volts") is not None, 30,
                   "main_bus_a_volts red")
    # 3. ... which the trainee acknowledges late: 5 s of wall time is 100 mission s.
    await asyncio.sleep(5.0)
    marks["late_ack_wall"] = time.monotonic()
    await t.ack("main_bus_a_volts")
    await wait_for(lambda: t.acked("main_bus_a_volts"), 10, "the late acknowledgement")
    # 4. O2 tank 2 pressure goes red and the trainee never acknowledges it.
    await wait_for(lambda: t.raised("o2_tank2_press") is not None, 40, "o2_tank2_press red")
    return marks


def test_drill_end_to_end(mosquitto: MosquittoServer, influxdb: InfluxDBServer,
                          tmp_path: Path, defs: dict[str, VehicleDefinition]) -> None:
    sc = load_scenario(DATA / "drill_short.yaml", defs)
    out = tmp_path / "debrief"
    drill_id = "short-eps-test1"

    async def main() -> tuple[Any, Trainee, dict[str, float]]:
        async with running_ingest(mosquitto, influxdb, tmp_path, defs, database="drill"):
            runner = DrillRunner(sc, defs, DrillOptions(
                host=mosquitto.host, port=mosquitto.port, speed=SPEED, out_dir=out,
                out_exact=True, drill_id=drill_id, settle_s=1.5))
            async with aiomqtt.Client(mosquitto.host, mosquitto.port,
                                      identifier="eecom-console") as client:
                await client.subscribe(f"alarms/training/{drill_id}/+", qos=1)
                await client.subscribe(status_topic(drill_id), qos=1)
                await client.subscribe("alarms/replies/eecom", qos=1)
                trainee = Trainee(client, drill_id)
                listener = asyncio.create_task(trainee.listen())
                drill = asyncio.create_task(runner.run())
                marks = await asyncio.wait_for(_script(trainee, runner), 60)
                result = await asyncio.wait_for(drill, 60)
                listener.cancel()
            return result, trainee, marks

    t0 = time.monotonic()
    result, trainee, marks = asyncio.run(main())
    assert time.monotonic() - t0 < 60
    d = json.loads((out / "debrief.json").read_text())
    assert d == json.loads(json.dumps(result.debrief, default=str))
    assert d["source"] == f"training/{drill_id}"

    faults = {f["id"]: f for f in d["faults"]}
    assert set(faults) == {"fc2", "tank2", "short-a"}
    # Injected on the mission clock at their planned GETs.
    assert faults["fc2"]["get"] == pytest.approx(sc.start_get + 30)
    assert faults["tank2"]["get"] == pytest.approx(sc.start_get + 60)
    assert faults["fc2"]["get_text"] == format_get(sc.start_get + 30)
    assert faults["short-a"]["origin"] == "instructor"
    assert marks["paused_get"] <= faults["short-a"]["get"] <= d["ended_get"]

    fc2 = faults["fc2"]["alarms"][0]
    tank = faults["tank2"]["alarms"][0]
    bus = faults["short-a"]["alarms"][0]
    for row, inj in ((fc2, faults["fc2"]), (tank, faults["tank2"]), (bus, faults["short-a"])):
        assert row["raised_get"] is not None
        assert 0 < row["raised_get"] - inj["get"] <= row["within_s"]
    # The raise times are the data's: the same as the events the trainee saw.
    assert fc2["raised_get"] == pytest.approx(
        (trainee.raised("fc2_volts")["time_ns"] - _liftoff()) / 1e9)  # type: ignore[index]

    # Acknowledged during the pause: the 2 s of wall time (40 mission s) did not count.
    assert fc2["status"] == "acknowledged" and fc2["acked_by"] == "eecom"
    assert fc2["reaction_s"] < 20
    assert fc2["acked_get"] == pytest.approx(fc2["raised_get"] + fc2["reaction_s"])
    assert fc2["acked_get"] <= marks["paused_get"] + 1e-6
    # Acknowledged 5 s of wall time after the raise: ~100 mission s, over the 60 allowed.
    assert bus["status"] == "late" and bus["acked_by"] == "eecom"
    assert 80 <= bus["reaction_s"] <= 160
    # Never acknowledged: missed by the trainee.
    assert tank["status"] == "not_acknowledged" and tank["acked_by"] is None
    assert d["counts"] == {"expected": 3, "acknowledged": 1, "late": 1,
                           "missed_by_trainee": 1, "missed_by_system": 0, "prevented": 0,
                           "actions_expected": 0, "harmful": 0, "calls_expected": 0}
    assert d["score"] == round(100 * (1 + 0.5 + 0) / 3)  # the README's rule: 50
    assert d["operators"] == ["eecom"]
    assert d["raised_without_fault"] == []
    assert [c["request"].get("cmd") for c in d["commands"]] == ["pause", "resume", "inject"]
    assert len(d["pauses"]) == 1 and d["pauses"][0]["wall_s"] >= 2.0

    md = (out / "debrief.md").read_text()
    assert "score: 50 / 100" in md and "missed by the trainee" in md
    assert "eecom" in md and "![timeline](timeline.png)" in md

    # The picture: a real PNG of a sensible size with something drawn on it.
    png = out / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert 600 <= w <= 2000 and 500 <= h <= 3000
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200
    # Key parameters were received for the plot (and the drill stayed training data).
    assert len(result.debrief["events"]) >= 6

    influx = InfluxV1(influxdb.url, "drill")
    training = rows(influx, f"SELECT count(fc2_volts) FROM tm WHERE source='training/{drill_id}'")
    assert training and training[0]["count"] > 1000
    assert rows(influx, "SELECT count(fc2_volts) FROM tm WHERE source='live'") == []
    alarms = rows(influx, f"SELECT * FROM alarms WHERE source='training/{drill_id}' "
                          "AND transition='acknowledged'")
    assert {a["operator"] for a in alarms} == {"eecom"}
    assert rows(influx, "SELECT * FROM alarms WHERE source='live'") == []


def _liftoff() -> int:
    from groundstation.core.mission_time import LIFTOFF_NS

    return LIFTOFF_NS


def _cli(argv: list[str]) -> int:
    from groundstation.cli import main

    return main(argv)


def test_drill_cli_list_check_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["drill", "list"]) == 0
    out = capsys.readouterr().out
    assert "o2-tank-spike" in out and "Apollo 13 pattern" in out
    assert _cli(["drill", "check", str(DATA / "drill_short.yaml")]) == 0
    assert _cli(["drill", "show", "dm-trapped-gas"]) == 0
    out = capsys.readouterr().out
    assert "docking module" in out.lower() and "dm_trapped_gas" not in out  # no spoiler
    bad = DATA / "drill_short.yaml"
    assert _cli(["drill", "run", "no-such-drill"]) == 1
    assert "no scenario 'no-such-drill'" in capsys.readouterr().err
    assert bad.exists()


def test_drill_cli_run_without_an_ingest(mosquitto: MosquittoServer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The command end to end with nobody listening: the ships fly, nothing raises an alarm,
    and the debrief says the system missed everything (not the trainee)."""
    out = tmp_path / "d"
    rc = _cli(["drill", "run", str(DATA / "drill_short.yaml"), "--speed", "100",
               "--out", str(out), "--drill-id", "cli-1", "--no-progress", "--no-stdin",
               "--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port)])
    assert rc == 0
    d = json.loads((out / "debrief.json").read_text())
    assert d["drill"] == "cli-1" and d["score"] is None
    assert d["counts"]["missed_by_system"] == 2
    assert (out / "timeline.png").stat().st_size > 10_000
    assert "score: n/a" in capsys.readouterr().out
