"""Untrusted input at the edges, through the real broker, ingest and InfluxDB (issue 12):
an ingest that refuses to start into a missing database (or creates it when allowed), a
database dropped while running treated as an outage, frame times and sequence numbers at
the limits of their range rejected by reason, redelivered bad frames counted once, a link
latency that means something on mission-time data, and a log that stays small under a
flood of bad messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.core.definitions import load_all, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.ingest.service import IngestService
from groundstation.ingest.wiring import check_database, make_sink
from groundstation.paths import defs_dir
from groundstation.storage.influx.backends import InfluxV1
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.harness import (
    flying,
    ingest_config,
    rows,
    running_ingest,
    start_ingest_process,
    wait_for,
)
from tests.paths import MINI

T0 = 174_845_349_000_000_000  # 1975-07-17, the first docking
PERIOD = 20_000_000  # mini: 50 frames/s
MINI_DEF = load_definition(MINI)


def message(seq: int, n: int = 5, t: int | None = None, press: float = 5.0,
            bad: tuple[int, ...] = ()) -> bytes:
    frames = FrameEncoder(MINI_DEF).encode({"cabin_press": press, "hatch": "CLOSED"}, n,
                                           start_counter=1 + seq % 50)
    for i in bad:
        frames[i, 0] ^= 0xFF  # a broken sync pattern
    return encode_envelope("mini", "hbr", seq, T0 + seq * PERIOD if t is None else t, frames)


async def publish(broker: MosquittoServer, payloads: list[bytes],
                  topic: str = topics.telemetry("mini", "hbr")) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for p in payloads:
            await client.publish(topic, p, qos=1)


def count(influx: InfluxV1, q: str = "SELECT count(cabin_press) FROM tm") -> int:
    got = rows(influx, q)
    return int(got[0]["count"]) if got else 0


def defs_dir_with_mini(tmp: Path) -> Path:
    d = tmp / "defs"
    d.mkdir(exist_ok=True)
    (d / "mini.yaml").write_text(MINI.read_text())
    return d


# --- 1. a missing database -----------------------------------------------------------------


def test_the_ingest_refuses_to_start_without_its_database_and_says_what_to_run(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "groundstation", "ingest", "--mqtt-host", mosquitto.host,
           "--mqtt-port", str(mosquitto.port), "--influx-api", "v1", "--influx-url",
           influxdb.url, "--influx-database", "nosuchdb", "--ingest-defs-dir",
           str(defs_dir_with_mini(tmp_path)), "--influx-spool-dir", str(tmp_path / "spool"),
           "--ingest-archive-dir", str(tmp_path / "arch")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "subscribed" not in done.stdout
    assert "no database 'nosuchdb'" in done.stderr
    assert 'CREATE DATABASE "nosuchdb"' in done.stderr
    assert "--influx-create-database" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_ingest_creates_its_database_when_allowed(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = InfluxV1(influxdb.url, "created")
    proc = start_ingest_process(mosquitto, influxdb, defs_dir_with_mini(tmp_path), "created",
                                "--influx-create-database", "--influx-spool-dir",
                                str(tmp_path / "spool"), "--ingest-archive-dir",
                                str(tmp_path / "arch"))
    try:
        asyncio.run(publish(mosquitto, [message(seq) for seq in range(0, 50, 5)]))
        asyncio.run(wait_for(lambda: count(influx) == 50, 20, "50 frames stored"))
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.asynccontextmanager
async def ingest_creating_its_database(mosquitto: MosquittoServer, influxdb: InfluxDBServer,
                                      tmp: Path, database: str
                                      ) -> AsyncIterator[IngestService]:
    """The real ingest with [influx] create_database on, started as `serve` starts it."""
    config = ingest_config(mosquitto, influxdb, tmp, database)
    config.influx.create_database = True
    sink = make_sink(config)
    await check_database(sink, True)  # creates it
    await sink.start()
    service = IngestService(config, {"mini": MINI_DEF}, sink)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield service
    finally:
        stop.set()
        await task
        await sink.close()


@pytest.mark.parametrize("who", ["operator", "ingest"])
async def test_a_database_dropped_while_running_is_an_outage_and_loses_nothing(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        who: str) -> None:
    """Dropped while running: spooled, then written once it exists again, created by the
    operator, or by the ingest itself when [influx] create_database is on."""
    influx = InfluxV1(influxdb.url, "dropped")
    running = (running_ingest(mosquitto, influxdb, tmp_path, {"mini": MINI_DEF}, "dropped")
               if who == "operator" else
               ingest_creating_its_database(mosquitto, influxdb, tmp_path, "dropped"))
    async with running as ingest:
        await publish(mosquitto, [message(seq) for seq in range(0, 100, 5)])
        await wait_for(lambda: count(influx) == 100, what="the first 100 frames")
        influx.query('DROP DATABASE "dropped"')
        await publish(mosquitto, [message(seq) for seq in range(100, 200, 5)])
        # Spooled (durable), so acknowledged; nothing dead-lettered.
        await wait_for(lambda: ingest.stats()["sink"]["lines_spooled"] > 0
                       and ingest.acked >= 40, 30, "the next 100 frames spooled")
        assert ingest.stats()["sink"]["dead_letter_lines"] == 0
        if who == "operator":
            influx.create_database()  # the spool drains once it exists again
        await wait_for(lambda: count(influx) >= 100, 30, "the spooled frames in InfluxDB")
        await publish(mosquitto, [message(seq) for seq in range(200, 250, 5)])
        await wait_for(lambda: count(influx) == 150, 30, "the spool and the new frames")
    assert not (tmp_path / "spool" / "deadletter.lp").exists()
    times = [r["time"] for r in rows(influx, "SELECT cabin_press FROM tm")]
    assert times == sorted(set(times)) == [T0 + s * PERIOD for s in range(100, 250)]


# --- 2. times and sequence numbers at the limits -------------------------------------------


async def test_times_and_seqs_at_the_limits_are_rejected_by_reason(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    influx = InfluxV1(influxdb.url, "edges")
    soyuz = load_all(defs_dir())[tl.SOYUZ]
    soyuz_frames = np.zeros((5, soyuz.frame.bytes_per_frame), dtype=np.uint8)
    edge = [
        # The first frame's time is valid, the later ones pass 2**63 (Soyuz, 100 ms).
        (topics.telemetry(tl.SOYUZ, soyuz.stream),
         encode_envelope(tl.SOYUZ, soyuz.stream, 0, 2**63 - 1 - 10**8, soyuz_frames)),
        # InfluxDB could store these, but they are far outside the sanity window.
        (topics.telemetry("mini", "hbr"), message(0, t=7_258_118_400 * 10**9)),  # 2200
        (topics.telemetry("mini", "hbr"), message(0, t=10**9)),  # 1970
        (topics.telemetry("mini", "hbr"), message(0, t=2**63 - 2 * 10**8, press=6.0)),
    ]
    with caplog.at_level(logging.WARNING):
        async with running_ingest(mosquitto, influxdb, tmp_path,
                                  {"mini": MINI_DEF, tl.SOYUZ: soyuz}, "edges",
                                  stats_interval_s=0.2) as ingest:
            for topic, payload in edge:
                await publish(mosquitto, [payload], topic)
            # A valid stream, and one valid message with seq 2**63 - 1 in it.
            await publish(mosquitto, [message(seq, press=6.0) for seq in range(0, 50, 5)])
            await publish(mosquitto, [encode_envelope(
                "mini", "hbr", 2**63 - 1, T0 + 50 * PERIOD, FrameEncoder(MINI_DEF).encode(
                    {"cabin_press": 6.0, "hatch": "CLOSED"}, 1, start_counter=1))])
            await wait_for(lambda: ingest.frames_stored == 51
                           and ingest.rejected["time_range"] == 4, what="the edges")
            await asyncio.sleep(0.6)  # link quality published and stored
            link = ingest.stats_message()
            stream = ingest.streams[("live", "mini", "hbr")]
            assert stream.decoder.frames_missing == 0 and stream.decoder.seq_jumps == 1
    assert ingest.rejected == {"time_range": 4}
    assert {q.reason for q in ingest.quarantine} == {"time_range"}
    assert "internal_error" not in link.rejected
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text
    # Nothing stored out of range: every value and alarm at its frame's 1975 time.
    for q in ("SELECT * FROM tm", "SELECT * FROM alarms"):
        times = [r["time"] for r in rows(influx, q)]
        assert times and all(T0 <= t < T0 + 10**11 for t in times), (q, times)
    got = rows(influx, "SELECT last(frames_missing) AS m, last(seq_jumps) AS j FROM link "
                       "WHERE vehicle='mini'")
    assert (got[0]["m"], got[0]["j"]) == (0, 1)
    # Raised once, never with a time past what InfluxDB holds.
    alarms = rows(influx, "SELECT state, transition FROM alarms")
    assert [a["transition"] for a in alarms] == ["raised"]


# --- 3. redelivered bad frames count once ----------------------------------------------------


async def test_a_bad_frame_received_again_counts_once(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    async with running_ingest(mosquitto, influxdb, tmp_path, {"mini": MINI_DEF},
                              "again") as ingest:
        bad = message(0, bad=(1, 3))
        await publish(mosquitto, [bad, message(5), bad, bad])  # sent again, twice
        await wait_for(lambda: ingest.messages_in == 4, what="4 messages")
        await wait_for(lambda: ingest.acked == 4, what="4 messages stored")
        stream = ingest.streams[("live", "mini", "hbr")]
    assert ingest.rejected == {"bad_sync": 2}
    assert len(ingest.quarantine) == 2
    assert stream.decoder.frames_duplicate == 10 and stream.decoder.frames_bad_sync == 2


# --- 4. a link latency that means something ------------------------------------------------


async def test_the_link_latency_of_simulated_ships_is_a_delay_not_the_years_since_1975(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    defs = load_all(defs_dir())
    probe = Mission(tl.hms(44, 25, 30), seed=1, definitions=defs)  # the demo's start
    start = probe.find_coverage(tl.APOLLO, probe.t, 200)
    runner = SimRunner(Mission(start, seed=1, definitions=defs), [defs[tl.APOLLO]],
                       RunnerOptions(host=mosquitto.host, port=mosquitto.port))
    link: dict[str, Any] = {}
    async with running_ingest(mosquitto, influxdb, tmp_path, defs, "latency",
                              stats_interval_s=0.3) as ingest, \
            aiomqtt.Client(mosquitto.host, mosquitto.port) as watch, flying(runner):
        await watch.subscribe(topics.ingest_link(tl.APOLLO), qos=1)
        async with asyncio.timeout(20):
            async for m in watch.messages:
                link = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                if link.get("frames_good", 0) >= 30 and link.get("latency_ms_p50") is not None:
                    break
        assert ingest.frames_stored >= 30
    # Mission time (1975): measured against the ship's own clock, a delay of a few
    # batches at most, never 1.6e12 ms.
    assert 0 <= link["latency_ms_p50"] < 1000, link
    assert 0 <= link["latency_ms_max"] < 5000, link


# --- 5. the log under a flood --------------------------------------------------------------


async def test_the_log_stays_small_under_a_flood_of_bad_messages(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    n = 10_000
    with caplog.at_level(logging.INFO, logger="groundstation.ingest"):
        async with running_ingest(mosquitto, influxdb, tmp_path, {"mini": MINI_DEF},
                                  "flood") as ingest:
            garbage = [b"\xc1" + i.to_bytes(4, "big") for i in range(n // 2)]
            wrong = [message(i, n=1)[:-3] for i in range(n // 2)]  # truncated
            await publish(mosquitto, garbage + wrong)
            await wait_for(lambda: ingest.messages_in == n, 60, "the flood")
            await publish(mosquitto, [message(0)])
            await wait_for(lambda: ingest.frames_stored == 5, what="a good message after it")
    assert ingest.rejected.total() == n
    lines = [r for r in caplog.records if r.name == "groundstation.ingest"]
    size = sum(len(r.getMessage()) for r in lines)
    assert len(lines) < 20 and size < 5000, (len(lines), size)
    assert any("more messages as not_msgpack" in r.getMessage() for r in lines)
