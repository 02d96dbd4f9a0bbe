"""The InfluxDB sink: batching, gzip, both APIs, retries, dead letters, the spool, outages.

v1 runs against the real InfluxDB 1.6 (`influxdb` fixture), stopped and started under the
sink's feet. No InfluxDB 2.x can be installed here, so the v2 path is checked against a
small local HTTP server (`FakeInflux`) that records every request and answers as scripted.

The outage test runs 5 s of outage in the normal suite; GS_INFLUX_OUTAGE_S=30 runs the
issue's 30 s version and prints its numbers (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from groundstation.deploy.servers import InfluxDBServer
from groundstation.storage.influx.backends import InfluxV1, InfluxV2, detect_api, make_backend
from groundstation.storage.influx.sink import (
    InfluxSink,
    SinkClosedError,
    SinkConfig,
    SpoolRecord,
    iter_segment,
)
from tests.harness import wait_for
from tests.influx_helpers import (
    APOLLO_PERIOD_NS,
    FAST,
    T0,
    FakeInflux,
    apollo_line,
    count,
    soyuz_line,
)
from tests.paths import REPO

# -- helpers --------------------------------------------------------------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def v1_database(server: InfluxDBServer, name: str = "gs") -> InfluxV1:
    influx = InfluxV1(server.url, name)
    influx.create_database()
    return influx


# -- writes arrive, in the shapes the APIs want ----------------------------------------


async def test_v1_lines_arrive_and_read_back(influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = v1_database(influxdb)
    # A queue bound smaller than one submit: the submit is split into chunks and the
    # bound still holds.
    cfg = SinkConfig(batch_max_lines=500, batch_max_bytes=256 << 10,
                     max_queue_bytes=512 << 10, concurrency=2, **FAST)
    async with InfluxSink(influx, tmp_path / "spool", cfg) as sink:
        big = [apollo_line(i) for i in range(3000)]  # ~3 MB of line protocol
        fut = await sink.submit(big)
        await sink.write([soyuz_line(i) for i in range(100)])
        await fut
        stats = sink.stats()
    assert count(influx, "apollo_csm") == 3000
    assert count(influx, "soyuz") == 100
    assert stats.lines_written == stats.lines_submitted == 3100
    assert stats.batches_written >= 6  # 500 lines a batch at most
    assert stats.queue_bytes_peak <= cfg.max_queue_bytes
    assert stats.lines_spooled == 0 and stats.failures == {}
    assert stats.write_latency_p50_s is not None and stats.write_latency_p99_s is not None
    assert stats.bytes_sent < sum(map(len, big)) / 2  # gzip did its job
    fields = stats.fields()  # flat, for self-telemetry
    assert fields["lines_written"] == 3100 and fields["spool_bytes"] == 0
    assert all(isinstance(v, int | float) for v in fields.values())
    row = influx.query("SELECT p0, seq FROM tm WHERE vehicle='apollo_csm' "
                       f"AND time = {T0 + 1234 * APOLLO_PERIOD_NS}")
    assert row["results"][0]["series"][0]["values"][0][1:] == [5.0 + round(math.sin(12.34),
                                                                            4), 1234]


async def test_api_detected_from_ping(influxdb: InfluxDBServer, fake: FakeInflux) -> None:
    assert detect_api(influxdb.url) == "v1"
    assert detect_api(fake.url) == "v2"
    assert isinstance(make_backend(influxdb.url, database="gs"), InfluxV1)
    backend = make_backend(fake.url, token="t", org="o", bucket="b")
    assert isinstance(backend, InfluxV2)
    with pytest.raises(ValueError, match="token"):
        make_backend(fake.url, org="o", bucket="b")
    # No version header: 1.x has no /api/v2/write (404), so that decides.
    fake.version = ""
    fake.respond = lambda seen: (404, {}, b"404 page not found")
    assert detect_api(fake.url) == "v1"


async def test_v1_field_type_conflict_isolated_against_real_influxdb(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = v1_database(influxdb)
    influx.write_lines([f"tm,vehicle=apollo_csm,stream=hbr,source=live seq=0i {T0}"])
    lines = [apollo_line(i) for i in range(1, 40)]
    conflict = f'tm,vehicle=apollo_csm,stream=hbr,source=live seq="oops" {T0 + 1}'
    lines.insert(17, conflict)
    async with InfluxSink(influx, tmp_path / "spool", SinkConfig(**FAST)) as sink:
        await sink.write(lines)
        await sink.write([apollo_line(1000)])
        stats = sink.stats()
    assert count(influx, "apollo_csm") == 1 + 39 + 1
    dead = (tmp_path / "spool" / "deadletter.lp").read_text().splitlines()
    assert dead[1:] == [conflict]
    assert "field type conflict" in dead[0]
    assert stats.dead_letter_lines == 1
    assert stats.failures.get("http_400", 0) >= 2  # the batch, then the halves leading to it


async def test_outage_at_live_rate_nothing_lost_nothing_duplicated_memory_bounded(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """Stop InfluxDB mid-stream at live rate, start it again: exactly once, bounded."""
    outage_s = float(os.environ.get("GS_INFLUX_OUTAGE_S", "5"))
    influx = v1_database(influxdb)
    cfg = SinkConfig(max_queue_bytes=4 << 20, spool_max_bytes=64 << 20,
                     spool_segment_bytes=1 << 20, **{**FAST, "retry_max_s": 1.0})
    tick = APOLLO_PERIOD_NS / 1e9
    futures: list[asyncio.Future[None]] = []
    ack_lag: list[float] = []
    peaks = {"rss_during": 0, "spool": 0, "queue": 0}
    counts = {"apollo": 0, "soyuz": 0}

    def on_durable(submitted: float) -> Callable[[asyncio.Future[None]], None]:
        return lambda f: ack_lag.append(time.monotonic() - submitted)

    async def produce(sink: InfluxSink, seconds: float, sample: bool = False) -> None:
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            lines = [apollo_line(counts["apollo"])]
            counts["apollo"] += 1
            if counts["apollo"] % 5 == 0:
                lines.append(soyuz_line(counts["soyuz"]))
                counts["soyuz"] += 1
            fut = await sink.submit(lines)
            fut.add_done_callback(on_durable(time.monotonic()))
            futures.append(fut)
            n += 1
            if sample and n % 25 == 0:
                s = sink.stats()
                peaks["rss_during"] = max(peaks["rss_during"], rss_kib())
                peaks["spool"] = max(peaks["spool"], s.spool_bytes)
                peaks["queue"] = max(peaks["queue"], s.queue_bytes)
            # Paced by the clock, not by sleeps, so the rate stays the live rate.
            await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
            del elapsed

    rss_before = rss_kib()
    async with InfluxSink(influx, tmp_path / "spool", cfg) as sink:
        await produce(sink, 1.0)
        await asyncio.to_thread(influxdb.stop)
        await produce(sink, outage_s, sample=True)
        spooled_during = sink.stats().lines_spooled
        await asyncio.to_thread(influxdb.start)
        back = time.monotonic()

        async def drained() -> float:
            while sink.stats().spool_pending_lines:
                await asyncio.sleep(0.005)
            return time.monotonic() - back

        drain_timer = asyncio.create_task(drained())
        await produce(sink, 1.0, sample=True)
        await asyncio.gather(*futures)  # every line was durable, so acked, at some point
        assert await sink.wait_drained(30)
        drain_s = await drain_timer
        stats = sink.stats()
    rss_after = rss_kib()

    # Nothing lost, nothing duplicated: one point per frame time, per series.
    assert count(influx, "apollo_csm") == counts["apollo"]
    assert count(influx, "soyuz") == counts["soyuz"]
    first, last = T0, T0 + (counts["apollo"] - 1) * APOLLO_PERIOD_NS
    assert count(influx, "apollo_csm", f" AND time >= {first} AND time <= {last}") \
        == counts["apollo"]
    # The outage happened and was bridged by the spool, which drained completely.
    assert spooled_during > 0.8 * outage_s * 60  # ~all data of the outage went to disk
    assert stats.lines_drained == stats.lines_spooled
    assert stats.spool_bytes == 0 and stats.spool_pending_lines == 0
    assert stats.failures.get("connection", 0) >= 1
    assert stats.lines_failed == 0 and stats.dead_letter_lines == 0
    # Bounded: the memory queue and the spool stayed within their bounds.
    assert stats.queue_bytes_peak <= cfg.max_queue_bytes
    assert stats.spool_bytes_peak <= cfg.spool_max_bytes
    assert stats.submit_blocked == 0  # the spool absorbed the outage: no backpressure
    assert max(ack_lag) < cfg.spool_after_s + 2.0  # the ingest could keep acking
    print(f"\noutage {outage_s:g} s at live rate: {counts['apollo']} Apollo + "
          f"{counts['soyuz']} Soyuz lines, {stats.lines_spooled} spooled; "
          f"RSS before {rss_before / 1024:.1f} MiB, during <= "
          f"{peaks['rss_during'] / 1024:.1f} MiB, after {rss_after / 1024:.1f} MiB; "
          f"spool peak {stats.spool_bytes_peak / 1024:.0f} KiB; queue peak "
          f"{stats.queue_bytes_peak / 1024:.0f} KiB; drained {drain_s:.2f} s after restart; "
          f"ack lag max {max(ack_lag):.2f} s; write p50 "
          f"{(stats.write_latency_p50_s or 0) * 1000:.1f} ms, p99 "
          f"{(stats.write_latency_p99_s or 0) * 1000:.1f} ms")


async def test_spool_full_blocks_submit_then_recovers_without_loss(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """Policy "block": at the bound nothing is dropped; submit waits (backpressure)."""
    influx = v1_database(influxdb)
    cfg = SinkConfig(batch_max_bytes=8 << 10, max_queue_bytes=16 << 10,
                     spool_max_bytes=64 << 10, spool_segment_bytes=8 << 10,
                     on_spool_full="block", **FAST)
    await asyncio.to_thread(influxdb.stop)
    futures: list[asyncio.Future[None]] = []
    total = 1500  # ~300 KB of poorly compressible lines: far more than memory + spool

    async def produce(sink: InfluxSink) -> None:
        for i in range(total):
            futures.append(await sink.submit([apollo_line(i * 7919, nfields=12)]))

    async with InfluxSink(influx, tmp_path / "spool", cfg) as sink:
        producer = asyncio.create_task(produce(sink))
        await wait_for(lambda: sink.stats().spool_full, 15, "the spool to fill")
        await asyncio.sleep(0.5)
        stalled_at = len(futures)
        await asyncio.sleep(0.3)
        stats = sink.stats()
        assert len(futures) == stalled_at < total  # submit blocks: backpressure
        assert not producer.done()
        assert stats.submit_blocked >= 1 and stats.spool_full_events >= 1
        assert stats.spool_bytes <= cfg.spool_max_bytes
        assert stats.queue_bytes_peak <= cfg.max_queue_bytes
        assert stats.spool_dropped_lines == 0
        not_durable = [f for f in futures if not f.done()]
        assert not_durable  # held in memory, so the ingest has not acked them
        await asyncio.to_thread(influxdb.start)
        await asyncio.wait_for(producer, 30)
        await asyncio.gather(*futures)
        assert await sink.wait_drained(30)
        stats = sink.stats()
    assert count(influx, "apollo_csm") == total
    assert stats.spool_bytes_peak <= cfg.spool_max_bytes
    assert stats.queue_bytes_peak <= cfg.max_queue_bytes
    assert stats.submit_blocked_s > 0.5 and not stats.spool_full


# -- crashes and restarts ----------------------------------------------------------------


async def test_torn_record_skipped_and_new_sink_drains_what_the_last_one_left(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = v1_database(influxdb)
    spool_dir = tmp_path / "spool"
    await asyncio.to_thread(influxdb.stop)
    async with InfluxSink(influx, spool_dir, SinkConfig(**FAST)) as sink:
        for k in range(10):
            await sink.write([apollo_line(k * 10 + j) for j in range(10)])
        assert sink.stats().spool_pending_lines == 100
    # As if the machine died in the middle of appending the last record.
    [segment] = spool_dir.glob("seg-*.spool")
    records = [r for r in iter_segment(segment) if isinstance(r, SpoolRecord)]
    assert len(records) == 10
    with segment.open("r+b") as f:
        f.truncate(records[-1].end - 7)
    assert isinstance(list(iter_segment(segment))[-1], tuple)

    await asyncio.to_thread(influxdb.start)
    async with InfluxSink(influx, spool_dir, SinkConfig(**FAST)) as sink:
        assert sink.stats().spool_pending_lines == 90
        assert await sink.wait_drained(10)
        stats = sink.stats()
    assert stats.spool_torn_records == 1 and stats.lines_drained == 90
    assert count(influx, "apollo_csm") == 90
    assert count(influx, "apollo_csm", f" AND time >= {T0 + 90 * APOLLO_PERIOD_NS}") == 0
    assert list((spool_dir / "torn").iterdir())  # the torn bytes were kept, not dropped
    assert not list(spool_dir.glob("seg-*.spool"))


CHILD = textwrap.dedent("""
    import asyncio, sys
    from groundstation.storage.influx.backends import InfluxV1
    from groundstation.storage.influx.sink import InfluxSink, SinkConfig
    from tests.influx_helpers import FAST, apollo_line

    async def main():
        cfg = SinkConfig(**FAST)
        sink = await InfluxSink(InfluxV1(sys.argv[1], "gs"), sys.argv[2], cfg).start()
        for i in range(100000):
            fut = await sink.submit([apollo_line(i, nfields=10)])
            # What the ingest does: acknowledge only once the data is durable.
            fut.add_done_callback(lambda f, i=i: print(i, flush=True))
            await asyncio.sleep(0.002)
    asyncio.run(main())
""")


async def test_sigkilled_sink_loses_no_acknowledged_line(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """The durability hook: every line whose future completed survives a SIGKILL."""
    influx = v1_database(influxdb)
    spool_dir = tmp_path / "spool"
    await asyncio.to_thread(influxdb.stop)  # the child spools everything
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", CHILD, influxdb.url, str(spool_dir)],
                             stdout=subprocess.PIPE, stderr=log, text=True,
                             cwd=REPO)
    assert child.stdout is not None
    acked = -1
    try:
        for line in child.stdout:
            acked = max(acked, int(line))
            if acked >= 300:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        log.close()
    assert acked >= 300, (tmp_path / "child.log").read_text()
    await asyncio.to_thread(influxdb.start)
    async with InfluxSink(influx, spool_dir, SinkConfig(**FAST)) as sink:
        assert await sink.wait_drained(15)
    last = T0 + acked * APOLLO_PERIOD_NS
    assert count(influx, "apollo_csm", f" AND time <= {last}") == acked + 1


async def test_close_flushes_memory_to_influxdb_or_to_the_spool(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = v1_database(influxdb)
    slow = SinkConfig(**{**FAST, "flush_interval_s": 30.0})  # lines would sit in memory
    sink = await InfluxSink(influx, tmp_path / "a", slow).start()
    fut = await sink.submit([apollo_line(i) for i in range(10)])
    await sink.close()
    assert fut.done() and fut.exception() is None
    assert count(influx, "apollo_csm") == 10
    with pytest.raises(SinkClosedError):
        await sink.submit([apollo_line(99)])

    await asyncio.to_thread(influxdb.stop)
    sink = await InfluxSink(influx, tmp_path / "b", slow).start()
    fut = await sink.submit([apollo_line(i) for i in range(10, 20)])
    await sink.close()
    assert fut.done() and fut.exception() is None
    stats = sink.stats()
    assert stats.lines_spooled == 10 and stats.lines_failed == 0


async def test_uncompressed_writes_reach_real_influxdb_exactly(
        influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = v1_database(influxdb)
    lines = [apollo_line(i) for i in range(2000)]
    cfg = SinkConfig(batch_max_lines=700, compress=False, **FAST)
    async with InfluxSink(influx, tmp_path / "spool", cfg) as sink:
        await sink.write(lines)
        stats = sink.stats()
    assert count(influx, "apollo_csm") == 2000
    assert stats.lines_written == 2000 and stats.batches_written >= 3
    assert stats.bytes_sent == sum(map(len, lines)) + len(lines)  # sent as it is
    assert stats.lines_spooled == 0 and stats.failures == {}
    # Every field of a point reads back as written.
    t = T0 + 1234 * APOLLO_PERIOD_NS
    [line] = [ln for ln in lines if ln.endswith(f" {t}")]
    written = dict(kv.split("=") for kv in line.split(" ")[1].split(","))
    res = influx.query(f"SELECT * FROM tm WHERE vehicle='apollo_csm' AND time = {t}")
    series = res["results"][0]["series"][0]
    got = dict(zip(series["columns"], series["values"][0], strict=True))
    for key, text in written.items():
        value = int(text[:-1]) if text.endswith("i") else float(text)
        assert got[key] == value, key
