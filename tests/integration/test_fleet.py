"""A fleet of Apollo and Soyuz members through the real Mosquitto (the repository's ACL with
the members' accounts) and the real ingest into the real InfluxDB: every member's frames
are stored under its own vehicle tag, and nothing of one member under another's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from groundstation import cli as gs
from groundstation.core import fleet, topics
from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.storage.influx.backends import InfluxV1
from simulators import cli
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.harness import (
    ACL_USERS,
    MARK,
    login,
    received_until_mark,
    rows,
    running_ingest,
    secure_mosquitto,
)

FLEET = {"apollo_csm": 2, "soyuz": 2}
MEMBERS = fleet.members(FLEET)
PASSWORD = "fleet-pw"  # the members' accounts share one (the [mqtt] password)
USERS = {**ACL_USERS, **dict.fromkeys(MEMBERS, PASSWORD)}
START = tl.parse_time("044:27:00")  # docked, both ships heard for the next ten minutes
SECONDS = 30.0  # of mission time, flown at 10x


def _every_frame_parameter(d: VehicleDefinition) -> str:
    """A parameter of the main stream sampled in every minor frame: its count is the
    number of frames stored."""
    return next(p.id for p in d.parameters if p.frames is None)


def _stored(influx: InfluxV1, defs: dict[str, VehicleDefinition]
            ) -> dict[str, tuple[int, int, int]]:
    """vehicle -> (frames, first and last frame time) in InfluxDB's live data, for every
    vehicle tag of the fleet's bases and members."""
    out = {}
    for base in FLEET:
        pid = _every_frame_parameter(defs[base])
        res = influx.query(f"SELECT count(\"{pid}\") FROM tm WHERE source='live' "
                           "GROUP BY vehicle")["results"][0]
        for s in res.get("series", []):
            vehicle = s["tags"]["vehicle"]
            if vehicle in (base, *(m for m, b in MEMBERS.items() if b == base)):
                first, last = (rows(influx, f"SELECT {f}(\"{pid}\") FROM tm WHERE "
                                            f"vehicle='{vehicle}' AND source='live'")[0]["time"]
                               for f in ("first", "last"))
                out[vehicle] = (s["values"][0][1], first, last)
    return out


async def test_every_members_frames_are_stored_under_its_own_vehicle(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    base_defs = load_all()
    defs = fleet.expand(base_defs, FLEET)
    influx = InfluxV1(influxdb.url, "e2e")
    with secure_mosquitto(tmp_path, USERS, FLEET) as broker:
        async with running_ingest(broker, influxdb, tmp_path, defs,
                                  mqtt_user=("ingest", ACL_USERS["ingest"])):
            runner = SimRunner(
                Mission(START, seed=1975, definitions=base_defs), [],
                RunnerOptions(host=broker.host, port=broker.port, password=PASSWORD,
                              speed=10, until=START + SECONDS, fail_fast=True),
                [defs[m] for m in MEMBERS])
            await asyncio.wait_for(runner.run(), 60)
            sent = {m: runner.publishers[m].sent_frames for m in MEMBERS}
            assert all(n > 0 for n in sent.values()), sent
            deadline = time.monotonic() + 30
            while {v: c[0] for v, c in _stored(influx, defs).items()} != sent:
                assert time.monotonic() < deadline, (_stored(influx, defs), sent)
                await asyncio.sleep(0.2)
    stored = _stored(influx, defs)
    # Only the members flew: no frame under the base ships' ids, none of one member under
    # another's (each count is exactly what that member's account sent).
    assert set(stored) == set(MEMBERS)
    for base in FLEET:
        # Every member flies its base's mission: the same frames, the same times.
        mine = {stored[m] for m in MEMBERS if MEMBERS[m] == base}
        assert len(mine) == 1, (base, mine)
    apollo = stored["apollo_csm-1"][0]
    assert apollo == pytest.approx(SECONDS * 50, abs=50)  # HBR, 50 frames a second


async def test_a_member_publishes_only_its_own_telemetry(mosquitto: MosquittoServer,
                                                         tmp_path: Path) -> None:
    with secure_mosquitto(tmp_path, USERS, FLEET) as broker:
        async with login(broker, "ingest", "telemetry/#", "sim/state/#") as ingest, \
                login(broker, "apollo_csm-1", password=PASSWORD) as member:
            for other in ("apollo_csm", "apollo_csm-2", "soyuz-1"):
                await member.publish(topics.telemetry(other, "hbr"), b"DENIED", qos=1)
            await member.publish(topics.sim_state("apollo_csm-2"), b"DENIED", qos=1)
            await member.publish(topics.telemetry("apollo_csm-1", "hbr"), MARK, qos=1)
            assert await received_until_mark(ingest) == [
                ("telemetry/live/apollo_csm-1/hbr", MARK)]
        # A member is a vehicle, not an operator: it acknowledges no alarm.
        async with login(broker, "ingest", "ack/#") as ingest, \
                login(broker, "soyuz-2", password=PASSWORD) as member, \
                login(broker, "flight") as flight:
            await member.publish(topics.acknowledgements("soyuz-2", "soyuz"), b"DENIED", qos=1)
            await flight.publish(topics.acknowledgements("flight", "soyuz"), MARK, qos=1)
            assert await received_until_mark(ingest) == [("ack/flight/soyuz", MARK)]


def test_sim_fleet_flies_the_members_and_says_how_fast(
        mosquitto: MosquittoServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "PROGRESS_S", 0.5)
    status = gs.main(["sim", "fleet", "--fleet", "apollo_csm=2,soyuz=1", "--speed", "10",
                      "--start", "044:27:00", "--until", "044:27:20",
                      "--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "flying the fleet from 044:27:00 at 10x" in out
    assert "apollo_csm-1 .. apollo_csm-2, soyuz-1, each logged in as itself" in out
    progress = [line for line in out.splitlines() if line.startswith("fleet: 3 ships at ")]
    assert progress and all("frames/s" in line for line in progress), out
    summary = next(line for line in out.splitlines() if line.startswith("fleet: 3 members"))
    # 20 s of mission: 2 x 1000 HBR frames and 200 Soyuz frames.
    assert "sent 2200 frames" in summary, summary
