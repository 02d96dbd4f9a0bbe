"""Known values from the simulator's downlink, through a real Mosquitto and the ingest, read
back from a real InfluxDB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from groundstation.core import topics
from groundstation.core.definitions import load_all, load_definition
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.paths import defs_dir
from groundstation.storage.influx.backends import InfluxV1
from simulators.downlink import Downlink, nominal_values
from tests.harness import rows as _rows
from tests.harness import running_ingest, wait_for
from tests.paths import MINI


async def test_known_values_reach_influxdb_through_the_broker(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    mini = load_definition(MINI)
    influx = InfluxV1(influxdb.url, "e2e")
    async with running_ingest(mosquitto, influxdb, tmp_path, {"mini": mini}) as ingest:
        await _send_known_values(mini, mosquitto, ingest)
    _check_known_values(mini, influx)


PRESS = (np.arange(40) + 60) * 17 / 255  # counts 60..99: 4.0..6.6 psia, one per frame
T0 = 174_845_349_000_000_000  # 1975-07-17 16:09:09 UTC: first docking


async def _send_known_values(mini, mosquitto, ingest) -> None:  # type: ignore[no-untyped-def]

    link = Downlink(mini, mosquitto.host, mosquitto.port, frames_per_message=8,
                    values=lambda seq, n: {"cabin_press": PRESS[seq:seq + n], "hatch": "OPEN",
                                           "range": 222.0, "temp": 66.0})
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for k in range(5):
            topic, payload = link.next_message(T0 + k * 8 * 20_000_000)
            await client.publish(topic, payload, qos=1)
    await wait_for(lambda: ingest.acked >= 5, what="5 messages stored and acknowledged")


def _check_known_values(mini, influx) -> None:  # type: ignore[no-untyped-def]
    press, t0 = PRESS, T0
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
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    mini = load_definition(MINI)
    influx = InfluxV1(influxdb.url, "e2e")
    async with running_ingest(mosquitto, influxdb, tmp_path, {"mini": mini}) as ingest:
        await _send_good_and_bad(mini, mosquitto, ingest, influx)


async def _send_good_and_bad(mini, mosquitto, ingest, influx) -> None:  # type: ignore[no-untyped-def]
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
    await wait_for(lambda: ingest.messages_in >= 14 and ingest.acked >= 6)
    assert ingest.frames_in == good
    assert ingest.rejected["topic_mismatch"] == 1
    assert ingest.rejected["frame_length"] == 1
    assert sum(ingest.rejected.values()) == 8
    assert {q.reason for q in ingest.quarantine} >= {"topic_mismatch", "frame_length"}
    rows = _rows(influx, "SELECT count(cabin_press) FROM tm WHERE vehicle='mini'")
    assert rows[0]["count"] == good


@pytest.mark.skipif(not (defs_dir() / "apollo_csm.yaml").exists(), reason="no apollo_csm.yaml")
async def test_both_ships_nominal_values_are_stored(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    defs = load_all()
    influx = InfluxV1(influxdb.url, "e2e")
    async with running_ingest(mosquitto, influxdb, tmp_path, defs) as ingest:
        links = [Downlink(d, mosquitto.host, mosquitto.port, frames_per_message=25)
                 for d in defs.values()]
        await asyncio.gather(*(link.run(1.2) for link in links))
        sent = sum(link.sent_messages for link in links)
        await wait_for(lambda: ingest.acked >= sent)
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
