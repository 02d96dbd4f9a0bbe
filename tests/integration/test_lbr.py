"""Apollo's low bit rate end to end, through the real broker, ingest, InfluxDB, archive and
replay: in one pass the instructor switches the ship's PCM from HBR to LBR and back; the
values of both formats are stored (the LBR frames carry fewer parameters), the archive
holds both streams, the pass catalogue sees a change of format (no gap, nothing missing),
and a replay of the span delivers both again."""

from __future__ import annotations

import json
from pathlib import Path

import aiomqtt
import pytest

from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.replay.replayer import Replayer, plan_replay
from groundstation.storage.archive import ArchiveReader
from groundstation.storage.influx.backends import InfluxV1
from groundstation.storage.passes import Catalogue
from simulators import control
from simulators.link import Message, Transmitter
from simulators.mission import Mission
from simulators.telemetry import ShipDownlink
from tests.harness import rows, running_ingest, wait_for

A = tl.APOLLO
HBR1, LBR, HBR2 = 12.0, 20.0, 8.0  # seconds in each format, in that order


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def fly(defs: dict[str, VehicleDefinition]) -> tuple[list[Message], dict[str, int], float]:
    """Apollo in a ground station pass, switched to LBR and back by instructor requests
    (the sim/control payloads, as the runner hands them to simulators.control)."""
    probe = Mission(tl.hms(30), seed=7, definitions=defs)
    start = probe.find_coverage(A, probe.t, HBR1 + LBR + HBR2 + 30)
    m = Mission(start, seed=7, definitions=defs)
    assert m.pcm_mode(A) == "HBR"
    for at, mode in ((start + HBR1, "LBR"), (start + HBR1 + LBR, "HBR")):
        reply = control.reply(m, A, json.dumps({"cmd": "pcm_mode", "mode": mode,
                                                "at": at}).encode())
        assert reply.ok and reply.stream == mode.lower(), reply
    ship = ShipDownlink(m, defs[A])
    tx = Transmitter(defs[A], m.faults, m.seed, frames_per_message=25)
    msgs: list[Message] = []
    frames: dict[str, int] = {}
    for block in ship.frames_until(start + HBR1 + LBR + HBR2):
        assert block.aos.all()
        frames[block.stream] = frames.get(block.stream, 0) + block.n
        msgs += tx.feed(block)
    msgs += tx.flush()
    return msgs, frames, start


def _count(influx: InfluxV1, field: str, source: str) -> int:
    got = rows(influx, f"SELECT count({field}) FROM tm WHERE vehicle='{A}' AND "
                       f"source='{source}'")
    return int(got[0]["count"]) if got else 0


async def test_a_pass_that_switches_to_lbr_and_back(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition]) -> None:
    influx = InfluxV1(influxdb.url, "lbr")
    msgs, frames, _ = fly(defs)
    # 12 s and 8 s at 50 frames/s, 20 s at 5 frames/s.
    assert frames == {"hbr": 1000, "lbr": 100}
    assert {m.topic for m in msgs} == {f"telemetry/live/{A}/hbr", f"telemetry/live/{A}/lbr"}
    root = tmp_path / "archive"
    # Batches held long (300 ms): the messages of both formats are all waiting together.
    async with running_ingest(mosquitto, influxdb, tmp_path, defs, database="lbr",
                              batch_max_delay_ms=300) as ingest:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for m in msgs:
                await client.publish(m.topic, m.payload, qos=1)
        # roll_att is in every frame of both formats; vhf_range only in HBR's.
        await wait_for(lambda: _count(influx, "roll_att", "live") == 1100,
                       what="every frame of both formats in InfluxDB")
        await wait_for(lambda: ingest.acked >= len(msgs), what="every message acknowledged")
        assert ingest.rejected == {}
        hbr = ingest.streams[(topics.LIVE, A, "hbr")]
        lbr = ingest.streams[(topics.LIVE, A, "lbr")]
        assert hbr.alarms is lbr.alarms  # one alarm state for the ship
        # The 20 s in LBR are a change of format, not 1000 lost HBR frames.
        assert (hbr.decoder.frames_missing, lbr.decoder.frames_missing) == (0, 0)
    assert _count(influx, "vhf_range", "live") == 1000
    assert _count(influx, "cabin_press", "live") == 10 * (HBR1 + HBR2) + LBR  # 10/s, 1/s
    modes = rows(influx, f"SELECT pcm_mode FROM tm WHERE vehicle='{A}' AND source='live'")
    assert {r["pcm_mode"] for r in modes} == {0.0, 1.0}  # LBR, HBR (the state codes)

    # The archive holds both streams; the HBR pass goes over the LBR stretch.
    streams = {(k.vehicle, k.stream) for k in ArchiveReader(root).streams()}
    assert streams == {(A, "hbr"), (A, "lbr")}
    cat = Catalogue(root)
    by_stream = {p.stream: p for p in cat.passes}
    assert sorted(by_stream) == ["hbr", "lbr"] and len(cat.passes) == 2
    p = by_stream["hbr"]
    assert (p.frames, p.missing, p.gaps, p.expected) == (1000, 0, [], 1000)
    assert [f.stream for f in p.formats] == ["lbr"]
    assert (by_stream["lbr"].frames, by_stream["lbr"].missing) == (100, 0)

    # A replay of the span delivers both formats again.
    async with running_ingest(mosquitto, influxdb, tmp_path / "b", defs,
                              database="lbr") as service:
        plan = plan_replay(root, start=p.aos_ns, end=p.los_ns, vehicle=A)
        assert {k.stream for k in plan.streams} == {"hbr", "lbr"}
        result = await Replayer(root, plan, host=mosquitto.host, port=mosquitto.port,
                                session="lbr1", speed=None, progress=False).run()
        assert (result.state, result.frames_sent) == ("finished", 1100)
        await wait_for(lambda: _count(influx, "roll_att", "replay/lbr1") == 1100,
                       what="the replayed frames")
        assert _count(influx, "vhf_range", "replay/lbr1") == 1000
        assert service.rejected == {}
    live = rows(influx, "SELECT roll_att, cabin_press FROM tm WHERE source='live'")
    again = rows(influx, "SELECT roll_att, cabin_press FROM tm WHERE source='replay/lbr1'")
    assert live == again


async def test_a_recorded_lbr_stretch_dumped_during_live_hbr(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition]) -> None:
    """Out of contact in LBR (recorded), then heard in HBR: the recorder dumps the LBR at
    32x on its own stream while HBR comes down live. Every frame is stored; the dump, older
    than the live HBR, is a playback: it raises no alarm (its cabin pressure reads red) and
    moves no display."""
    influx = InfluxV1(influxdb.url, "dump")
    probe = Mission(tl.hms(30), seed=8, definitions=defs)
    start = probe.find_coverage(A, probe.t, 200)
    m = Mission(start, seed=8, definitions=defs)
    m.set_pcm_mode(A, "LBR")
    m.set_pcm_mode(A, "HBR", at=start + 60)
    m.inject(A, "los", duration_s=60)  # unheard: recorded
    m.inject(A, "sensor_bias", {"parameter": "cabin_press", "offset": 1.5}, duration_s=60)
    ship = ShipDownlink(m, defs[A])
    tx = Transmitter(defs[A], m.faults, m.seed, frames_per_message=25, recorder_frames=90_000)
    msgs: list[Message] = []
    for block in ship.frames_until(start + 90):
        msgs += tx.feed(block)
    msgs += tx.flush()
    kinds = {(m.topic.rsplit("/", 1)[1], m.kind): 0 for m in msgs}
    for msg in msgs:
        kinds[(msg.topic.rsplit("/", 1)[1], msg.kind)] += msg.frames
    assert kinds == {("hbr", "live"): 1500, ("lbr", "playback"): 300}
    async with running_ingest(mosquitto, influxdb, tmp_path, defs, database="dump") as ingest:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for msg in msgs:
                await client.publish(msg.topic, msg.payload, qos=1)
        await wait_for(lambda: _count(influx, "roll_att", "live") == 1800,
                       what="the live HBR and the dumped LBR in InfluxDB")
        await wait_for(lambda: ingest.acked >= len(msgs), what="every message acknowledged")
        lbr = ingest.streams[(topics.LIVE, A, "lbr")]
        assert lbr.latest == {} and lbr.last_frame_ns == 0  # never live
    red = rows(influx, f"SELECT max(cabin_press) FROM tm WHERE vehicle='{A}' AND "
                       "source='live' AND stream='lbr'")
    assert red[0]["max"] > 6.0  # the dump's biased reading is stored ...
    assert rows(influx, "SELECT * FROM alarms WHERE parameter='cabin_press'") == []  # ... only

