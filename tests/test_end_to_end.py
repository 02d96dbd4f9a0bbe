"""Known values from the simulator's downlink, through a real Mosquitto and the ingest, read
back from a real InfluxDB."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from groundstation import topics
from groundstation.definitions import DEFS_DIR, load_all, load_definition
from groundstation.envelope import encode_envelope
from groundstation.influx_writer import InfluxV1
from groundstation.ingest import Ingest
from groundstation.servers import InfluxDBServer, MosquittoServer
from simulators.downlink import Downlink, nominal_values

MINI = Path(__file__).parent / "data" / "mini.yaml"


async def _wait_for(cond: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the ingest")
        await asyncio.sleep(0.05)


def _rows(influx: InfluxV1, q: str) -> list[dict[str, Any]]:
    res = influx.query(q)["results"][0]
    out = []
    for s in res.get("series", []):
        out += [dict(zip(s["columns"], v, strict=True)) for v in s["values"]]
    return out


async def test_known_values_reach_influxdb_through_the_broker(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer) -> None:
    mini = load_definition(MINI)
    influx = InfluxV1(influxdb.url, "e2e")
    influx.create_database()
    ingest = Ingest({"mini": mini}, influx)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ingest.run(mosquitto.host, mosquitto.port, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)

    # Cabin pressure steps through counts 60..99 (4.0..6.6 psia), one per frame.
    press = (np.arange(40) + 60) * 17 / 255
    link = Downlink(mini, mosquitto.host, mosquitto.port, frames_per_message=8,
                    values=lambda seq, n: {"cabin_press": press[seq:seq + n], "hatch": "OPEN",
                                           "range": 222.0, "temp": 66.0})
    t0 = 174_845_349_000_000_000  # 1975-07-17 16:09:09 UTC: first docking
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for k in range(5):
            topic, payload = link.next_message(t0 + k * 8 * 20_000_000)
            await client.publish(topic, payload, qos=1)
    await _wait_for(lambda: ingest.frames_in >= 40)
    stop.set()
    await task

    rows = _rows(influx, "SELECT cabin_press, hatch, range FROM tm WHERE vehicle='mini' "
                         "AND source='live'")
    assert len(rows) == 40
    got = np.array([r["cabin_press"] for r in rows])
    np.testing.assert_allclose(got, press, rtol=1e-12)
    assert {r["hatch"] for r in rows} == {mini.parameter("hatch").state_code("OPEN")}
    assert rows[0]["time"] == t0 and rows[-1]["time"] == t0 + 39 * 20_000_000
    temps = _rows(influx, "SELECT temp FROM tm WHERE vehicle='mini' AND temp > 0")
    assert len(temps) == 8  # minor frames 1 and 6 of each 10-frame cycle, 40 frames
    assert all(abs(r["temp"] - 66.0) < 0.5 for r in temps)


async def test_bad_messages_are_quarantined_and_good_ones_still_stored(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer) -> None:
    mini = load_definition(MINI)
    influx = InfluxV1(influxdb.url, "e2e")
    influx.create_database()
    ingest = Ingest({"mini": mini}, influx)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ingest.run(mosquitto.host, mosquitto.port, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    link = Downlink(mini, mosquitto.host, mosquitto.port, frames_per_message=4)
    topic = topics.telemetry("mini", "hbr")
    good = 0
    t0 = 174_845_349_000_000_000
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for k in range(6):
            _, payload = link.next_message(t0 + k * 80_000_000)
            await client.publish(topic, payload, qos=1)
            good += 4
            await client.publish(topic, b"\x93garbage" * k, qos=1)
        await client.publish(topic, encode_envelope("soyuz", "hbr", 0, t0, [b"\x00" * 16]),
                             qos=1)
        await client.publish(topic, encode_envelope("mini", "hbr", 0, t0, [b"\x00" * 15]),
                             qos=1)
    await _wait_for(lambda: ingest.messages_in >= 14)
    stop.set()
    await task
    assert ingest.frames_in == good
    assert ingest.rejected["topic_mismatch"] == 1
    assert ingest.rejected["frame_length"] == 1
    assert sum(ingest.rejected.values()) == 8
    assert {q.reason for q in ingest.quarantine} >= {"topic_mismatch", "frame_length"}
    rows = _rows(influx, "SELECT count(cabin_press) FROM tm WHERE vehicle='mini'")
    assert rows[0]["count"] == good


@pytest.mark.skipif(not (DEFS_DIR / "apollo_csm.yaml").exists(), reason="no apollo_csm.yaml")
async def test_both_ships_nominal_values_are_stored(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer) -> None:
    defs = load_all()
    influx = InfluxV1(influxdb.url, "e2e")
    influx.create_database()
    ingest = Ingest(defs, influx)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ingest.run(mosquitto.host, mosquitto.port, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    links = [Downlink(d, mosquitto.host, mosquitto.port, frames_per_message=25)
             for d in defs.values()]
    await asyncio.gather(*(link.run(1.2) for link in links))
    sent = sum(link.sent_frames for link in links)
    await _wait_for(lambda: ingest.frames_in >= sent)
    stop.set()
    await task
    for d in defs.values():
        nominal = nominal_values(d)
        last = _rows(influx, f"SELECT last(*) FROM tm WHERE vehicle='{d.vehicle}'")[0]
        for p in d.parameters:
            got = last[f"last_{p.id}"]
            if p.type == "discrete":
                assert got == p.state_code(nominal[p.id]), p.id
            else:
                lo, hi = p.eng_range()
                assert abs(got - nominal[p.id]) <= (hi - lo) / p.raw_max, p.id
