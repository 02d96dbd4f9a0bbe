"""Link quality through the real pipeline (Mosquitto, the ingest, InfluxDB) when messages
come twice: a QoS 1 message the broker delivers again after a restart carries frames the
ingest has already decoded. They are counted as duplicates, never as missing frames, and
never feed the alarm engine twice; frames really lost are still counted exactly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from groundstation.core import topics
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.storage.influx.backends import InfluxV1
from tests.harness import rows, running_ingest, wait_for
from tests.paths import MINI

T0 = 174_845_349_000_000_000
PERIOD = 20_000_000  # mini: 50 frames/s
LINK = "ingest/link/live/mini"


def message(seq: int, n: int = 5, press: float | np.ndarray = 5.0,
            playback: bool = False) -> bytes:
    """n consecutive mini frames from sequence number seq, as the vehicle sends them."""
    mini = load_definition(MINI)
    frames = FrameEncoder(mini).encode({"cabin_press": press, "hatch": "CLOSED"}, n,
                                       start_counter=1 + seq % 50)
    if playback:
        from simulators.link import pack
        return pack("mini", "hbr", seq, T0 + seq * PERIOD, frames, playback=True)
    return encode_envelope("mini", "hbr", seq, T0 + seq * PERIOD, frames)


class LinkWatcher:
    """The retained link statistics and the alarm events, as a console receives them."""

    def __init__(self, broker: MosquittoServer):
        self.broker = broker
        self.link: dict[str, Any] = {}
        self.alarms: list[dict[str, Any]] = []

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as c:
            await c.subscribe(LINK, qos=1)
            await c.subscribe(topics.alarms("mini"), qos=1)
            async for m in c.messages:
                if not m.payload:
                    continue
                payload = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                if str(m.topic) == LINK:
                    self.link = payload
                else:
                    self.alarms.append(payload)


async def send(broker: MosquittoServer, payloads: list[bytes]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for p in payloads:
            await client.publish(topics.telemetry("mini", "hbr"), p, qos=1)


def influx_link(influx: InfluxV1) -> dict[str, Any]:
    got = rows(influx, "SELECT last(frames_good) AS frames_good, last(frames_missing) AS "
                       "frames_missing, last(frames_duplicate) AS frames_duplicate FROM link "
                       "WHERE vehicle='mini' AND source='live'")
    return got[0] if got else {}


async def test_redelivered_frames_count_as_duplicates_and_lost_frames_as_missing(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    watcher = LinkWatcher(mosquitto)
    watch = asyncio.create_task(watcher.run())
    influx = InfluxV1(influxdb.url, "link")
    try:
        async with running_ingest(mosquitto, influxdb, tmp_path,
                                  {"mini": load_definition(MINI)}, "link",
                                  stats_interval_s=0.2) as ingest:
            # 50 frames in ten messages; then the message of frames 20..24 once more, as
            # the broker delivers it again after a restart; then 50 more frames.
            first = [message(seq) for seq in range(0, 50, 5)]
            await send(mosquitto, first)
            await wait_for(lambda: ingest.frames_stored >= 50, what="the first 50 frames")
            await send(mosquitto, [first[4]])
            await send(mosquitto, [message(seq) for seq in range(50, 100, 5)])
            await wait_for(lambda: watcher.link.get("frames_good") == 100
                           and watcher.link.get("frames_duplicate") == 5,
                           what="link statistics after the redelivery")
            assert watcher.link["frames_missing"] == 0
            assert watcher.link["sync_errors"] == watcher.link["counter_errors"] == 0
            await wait_for(lambda: influx_link(influx).get("frames_good") == 100,
                           what="the link measurement in InfluxDB")
            assert influx_link(influx) | {"time": None} == {
                "time": None, "frames_good": 100, "frames_missing": 0, "frames_duplicate": 5}
            # Every frame's values are stored once per frame time (the rewrite overwrote).
            assert rows(influx, "SELECT count(cabin_press) FROM tm WHERE vehicle='mini'"
                        )[0]["count"] == 100

            # Frames 105..111 are lost on the link: exactly 7 missing.
            await send(mosquitto, [message(100), message(112, 10)])
            await wait_for(lambda: watcher.link.get("frames_good") == 115,
                           what="link statistics after the loss")
            assert watcher.link["frames_missing"] == 7
            assert watcher.link["frames_duplicate"] == 5
            await wait_for(lambda: influx_link(influx).get("frames_good") == 115,
                           what="the link measurement after the loss")
            assert influx_link(influx)["frames_missing"] == 7
            assert ingest.rejected.total() == 0
    finally:
        watch.cancel()


async def test_a_redelivered_violation_does_not_count_twice_toward_persistence(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """cabin_press needs 2 consecutive red samples: one red frame delivered twice is still
    one sample, so no alarm; the values are stored all the same."""
    watcher = LinkWatcher(mosquitto)
    watch = asyncio.create_task(watcher.run())
    try:
        async with running_ingest(mosquitto, influxdb, tmp_path,
                                  {"mini": load_definition(MINI)}, "persist",
                                  stats_interval_s=0.2) as ingest:
            red = message(5, 1, press=6.0)
            await send(mosquitto, [message(0), red])
            await wait_for(lambda: ingest.frames_stored >= 6)
            await send(mosquitto, [red, message(6, 5)])
            await wait_for(lambda: watcher.link.get("frames_good") == 11
                           and watcher.link.get("frames_duplicate") == 1,
                           what="link statistics")
            await asyncio.sleep(0.3)
            assert watcher.link["frames_missing"] == 0
            assert watcher.alarms == []
    finally:
        watch.cancel()


async def test_a_recorder_dump_fills_the_gap_it_left(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """Apollo's playback: frames 20..49, not heard live, arrive after newer live ones with
    their original sequence numbers and times. They were missing when the live stream
    skipped them; they come back as recovered frames and never as a wrap of the counter."""
    watcher = LinkWatcher(mosquitto)
    watch = asyncio.create_task(watcher.run())
    influx = InfluxV1(influxdb.url, "dump")
    try:
        async with running_ingest(mosquitto, influxdb, tmp_path,
                                  {"mini": load_definition(MINI)}, "dump",
                                  stats_interval_s=0.2):
            live = [message(seq) for seq in (*range(0, 20, 5), *range(50, 100, 5))]
            dump = [message(seq, 10, playback=True) for seq in range(20, 50, 10)]
            await send(mosquitto, [*live[:6], dump[0], *live[6:9], dump[1], dump[2],
                                   *live[9:], dump[1]])
            await wait_for(lambda: watcher.link.get("frames_good") == 100
                           and watcher.link.get("frames_duplicate") == 10,
                           what="link statistics after the dump")
            assert watcher.link["frames_missing"] == 30
            assert watcher.link["frames_recovered"] == 30
            await wait_for(lambda: bool(rows(influx, "SELECT count(cabin_press) FROM tm")) and
                           rows(influx, "SELECT count(cabin_press) FROM tm")[0]["count"] == 100,
                           what="every frame stored")
    finally:
        watch.cancel()

