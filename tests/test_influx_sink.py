"""The InfluxDB sink: batching, gzip, both APIs, retries, dead letters, the spool, outages.

v1 runs against the real InfluxDB 1.6 (`influxdb` fixture), stopped and started under the
sink's feet. No InfluxDB 2.x can be installed here, so the v2 path is checked against a
small local HTTP server (`FakeInflux`) that records every request and answers as scripted.

The outage test runs 5 s of outage in the normal suite; GS_INFLUX_OUTAGE_S=30 runs the
issue's 30 s version and prints its numbers (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from groundstation.influx_sink import (
    InfluxSink,
    SinkClosedError,
    SinkConfig,
    Spool,
    SpoolRecord,
    iter_segment,
)
from groundstation.influx_writer import InfluxV1, InfluxV2, detect_api, make_backend
from groundstation.servers import InfluxDBServer, free_port

T0 = 174_845_349_000_000_000  # 1975-07-17 16:09:09 UTC, first docking, in ns
APOLLO_PERIOD_NS = 20_000_000  # 50 frames/s
SOYUZ_PERIOD_NS = 100_000_000  # 10 frames/s

# Fast retry timings, so that outages are noticed and left quickly in tests.
FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.4, "spool_after_s": 0.3,
        "flush_interval_s": 0.05}


# -- helpers --------------------------------------------------------------------------


def apollo_line(i: int, nfields: int = 95) -> str:
    """One Apollo HBR frame's point, about as wide as the real one (95 parameters)."""
    fields = ",".join(f"p{k}={5.0 + math.sin(i * 0.01 + k):.4f}" for k in range(nfields))
    return f"tm,source=live,stream=hbr,vehicle=apollo_csm {fields},seq={i}i " \
           f"{T0 + i * APOLLO_PERIOD_NS}"


def soyuz_line(i: int) -> str:
    fields = ",".join(f"s{k}={700.0 + math.cos(i * 0.1 + k):.3f}" for k in range(60))
    return f"tm,source=live,stream=tm,vehicle=soyuz {fields},seq={i}i " \
           f"{T0 + i * SOYUZ_PERIOD_NS}"


def count(influx: InfluxV1, vehicle: str, where: str = "") -> int:
    q = f"SELECT count(seq) FROM tm WHERE vehicle='{vehicle}'{where}"
    res = influx.query(q)["results"][0]
    series = res.get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def v1_database(server: InfluxDBServer, name: str = "gs") -> InfluxV1:
    influx = InfluxV1(server.url, name)
    influx.create_database()
    return influx


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Seen:
    """One request the fake server received."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes  # as received (gzip)
    status: int  # what we answered

    @property
    def lines(self) -> list[str]:
        raw = gzip.decompress(self.body) if self.headers.get("content-encoding") == "gzip" \
            else self.body
        return [ln for ln in raw.decode().split("\n") if ln]


Answer = tuple[int, dict[str, str], bytes]


class FakeInflux:
    """A loopback HTTP server standing in for InfluxDB 2.x.

    `respond(seen)` decides each write's answer (default 204); `down = True` answers 503.
    """

    def __init__(self, respond: Callable[[Seen], Answer] | None = None,
                 version: str = "v2.7.4") -> None:
        self.requests: list[Seen] = []
        self.respond = respond or (lambda seen: (204, {}, b""))
        self.down = False
        self.version = version
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB does

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("X-Influxdb-Version", fake.version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(204 if self.path.startswith("/ping") else 404, {}, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = urllib.parse.urlsplit(self.path)
                seen = Seen(time.monotonic(), "POST", url.path,
                            dict(urllib.parse.parse_qsl(url.query)),
                            {k.lower(): v for k, v in self.headers.items()}, body, 0)
                if fake.down:
                    answer: Answer = (503, {}, b'{"code":"unavailable","message":"down"}')
                else:
                    answer = fake.respond(seen)
                seen.status = answer[0]
                with fake._lock:
                    fake.requests.append(seen)
                self._answer(*answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def written_lines(self) -> list[str]:
        with self._lock:
            return [ln for r in self.requests if 200 <= r.status < 300 for ln in r.lines]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeInflux]:
    server = FakeInflux()
    try:
        yield server
    finally:
        server.close()


def v2(fake: FakeInflux) -> InfluxV2:
    return InfluxV2(fake.url, org="nasa-jsc", bucket="astp", token="s3cr3t-t0ken")


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


async def test_v1_request_is_gzip_with_db_rp_precision_and_credentials(
        fake: FakeInflux, tmp_path: Path) -> None:
    influx = InfluxV1(fake.url, "gs", retention_policy="autogen", username="eecom",
                      password="pw")
    lines = [apollo_line(i) for i in range(10)]
    async with InfluxSink(influx, tmp_path / "spool", SinkConfig(**FAST)) as sink:
        await sink.write(lines)
    [req] = fake.requests
    assert req.path == "/write"
    assert req.query == {"db": "gs", "rp": "autogen", "precision": "ns", "u": "eecom",
                         "p": "pw"}
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-type"].startswith("text/plain")
    assert req.body[:2] == b"\x1f\x8b"  # a gzip stream on the wire
    assert gzip.decompress(req.body) == ("\n".join(lines) + "\n").encode()


async def test_v2_request_url_org_bucket_precision_token_gzip_body(
        fake: FakeInflux, tmp_path: Path) -> None:
    lines = [soyuz_line(i) for i in range(25)]
    async with InfluxSink(v2(fake), tmp_path / "spool", SinkConfig(**FAST)) as sink:
        await sink.write(lines)
        assert sink.stats().api == "v2"
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == "/api/v2/write"
    assert req.query == {"org": "nasa-jsc", "bucket": "astp", "precision": "ns"}
    assert req.headers["authorization"] == "Token s3cr3t-t0ken"
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-type"].startswith("text/plain")
    # Compressed once, by us: influxdb-client must not gzip the gzip.
    assert gzip.decompress(req.body) == ("\n".join(lines) + "\n").encode()


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


# -- retries, backoff, Retry-After, and what is not retried ----------------------------


async def test_v2_retries_503_and_429_honouring_retry_after(tmp_path: Path) -> None:
    script = [(503, {}, b'{"code":"unavailable","message":"write buffer full"}'),
              (429, {"Retry-After": "1"}, b'{"code":"too many requests","message":"slow"}')]
    fake = FakeInflux(lambda seen: script.pop(0) if script else (204, {}, b""))
    try:
        cfg = SinkConfig(**{**FAST, "spool_after_s": 5.0})  # retried in memory, not spooled
        async with InfluxSink(v2(fake), tmp_path / "spool", cfg) as sink:
            await sink.write([soyuz_line(1), soyuz_line(2)])
            stats = sink.stats()
    finally:
        fake.close()
    first, second, third = fake.requests
    assert [r.status for r in fake.requests] == [503, 429, 204]
    assert first.body == second.body == third.body  # the same batch, resent as it was
    assert third.at - second.at >= 0.95  # Retry-After: 1 was honoured
    assert second.at - first.at < 0.5  # ...while the 503 got a short backoff
    assert stats.retries == 2
    assert stats.failures == {"http_503": 1, "http_429": 1}
    assert stats.lines_written == 2 and stats.lines_spooled == 0


async def test_v2_400_not_retried_bad_line_isolated_to_dead_letter(tmp_path: Path) -> None:
    def respond(seen: Seen) -> Answer:
        bad = [ln for ln in seen.lines if "BAD" in ln]
        if bad:
            msg = f"unable to parse '{bad[0]}': missing field value"
            return 400, {"Content-Type": "application/json"}, \
                json.dumps({"code": "invalid", "message": msg}).encode()
        return 204, {}, b""

    fake = FakeInflux(respond)
    lines = [soyuz_line(i) for i in range(16)]
    lines[5] = "tm,vehicle=soyuz BAD= 1"
    try:
        async with InfluxSink(v2(fake), tmp_path / "spool", SinkConfig(**FAST)) as sink:
            await sink.write(lines)  # completes: the bad line does not block anything
            await sink.write([soyuz_line(100)])
            stats = sink.stats()
    finally:
        fake.close()
    # The whole batch was sent once, then only halves: never the same 400 body twice.
    bodies = [r.body for r in fake.requests if r.status == 400]
    assert len(bodies) == len(set(bodies))
    assert sorted(fake.written_lines()) == sorted([*lines[:5], *lines[6:], soyuz_line(100)])
    dead = (tmp_path / "spool" / "deadletter.lp").read_text().splitlines()
    assert dead[1] == "tm,vehicle=soyuz BAD= 1"
    assert dead[0].startswith("# ") and "http_400" in dead[0] and "isolated" in dead[0]
    assert "missing field value" in dead[0]  # InfluxDB's own words
    assert len(dead) == 2
    assert stats.dead_letter_lines == 1 and stats.dead_letter_entries == 1
    assert stats.lines_written == 16 and stats.retries == 0


async def test_v2_auth_error_dead_letters_whole_batch_once(tmp_path: Path) -> None:
    fake = FakeInflux(lambda seen: (401, {}, b'{"code":"unauthorized",'
                                              b'"message":"unauthorized access"}'))
    lines = [soyuz_line(i) for i in range(4)]
    try:
        async with InfluxSink(v2(fake), tmp_path / "spool", SinkConfig(**FAST)) as sink:
            await sink.write(lines)
            stats = sink.stats()
    finally:
        fake.close()
    assert len(fake.requests) == 1  # a 401 is neither retried nor split
    dead = (tmp_path / "spool" / "deadletter.lp").read_text().splitlines()
    assert "unauthorized access" in dead[0] and "whole batch" in dead[0]
    assert dead[1:] == lines
    assert stats.dead_letter_lines == 4 and stats.failures == {"http_401": 1}


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


# -- the spool ---------------------------------------------------------------------------


def test_spool_rotates_segments_resumes_from_cursor_and_deletes_sent_ones(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    payloads = [os.urandom(300 + i) for i in range(60)]
    for i, p in enumerate(payloads):
        assert spool.append(p, i + 1)
    assert spool.segments > 3 and spool.pending_records == 60
    with pytest.raises(RuntimeError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    first = spool.peek(max_records=25)
    assert [r.payload for r in first] == payloads[:25]
    spool.commit(first)
    spool.close()

    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert spool.pending_records == 35
    assert spool.pending_lines == sum(range(26, 61))
    rest: list[SpoolRecord] = []
    while batch := spool.peek(max_records=7):
        rest += batch
        spool.commit(batch)
    assert [r.payload for r in rest] == payloads[25:]
    assert spool.segments == 0 and spool.bytes == 0
    spool.close()
    assert not list(tmp_path.glob("seg-*"))


def test_spool_bound_refuses_or_drops_oldest(tmp_path: Path) -> None:
    payload = os.urandom(1000)
    block = Spool(tmp_path / "block", max_bytes=16384, segment_bytes=4096)
    results = [block.append(payload, 1) for _ in range(30)]
    assert results.count(True) == 16 and not any(results[16:])
    assert block.full and block.full_events == 1 and block.bytes <= 16384
    block.close()

    drop = Spool(tmp_path / "drop", max_bytes=16384, segment_bytes=4096, on_full="drop_oldest")
    assert all(drop.append(payload, 1) for _ in range(30))
    assert drop.bytes <= 16384
    assert drop.dropped_lines + drop.pending_lines == 30 and drop.dropped_lines >= 14
    # What is left is the newest data, still in order.
    kept = drop.peek(max_records=100)
    assert len(kept) == drop.pending_records and kept == sorted(
        kept, key=lambda r: (r.segment, r.offset))
    drop.close()


async def test_v2_spool_drains_in_order_after_outage(fake: FakeInflux, tmp_path: Path) -> None:
    fake.down = True
    cfg = SinkConfig(drain_max_records=4, **FAST)
    async with InfluxSink(v2(fake), tmp_path / "spool", cfg) as sink:
        for i in range(60):
            await sink.submit([soyuz_line(i)])
            await asyncio.sleep(0.01)
        await sink.flush()  # all durable: in the spool
        stats = sink.stats()
        assert stats.lines_spooled == 60 and not stats.db_up
        assert stats.spool_pending_lines == 60
        fake.down = False
        assert await sink.wait_drained(10)
        stats = sink.stats()
    seqs = [int(ln.split("seq=")[1].split("i")[0]) for ln in fake.written_lines()]
    assert seqs == list(range(60))  # in order, each exactly once
    assert stats.lines_drained == 60 and stats.db_up
    assert stats.spool_bytes == 0 and stats.spool_pending_lines == 0
    assert stats.failures.get("http_503", 0) >= 1


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
        await wait_until(lambda: sink.stats().spool_full, 15, "the spool to fill")
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


async def test_spool_full_drop_oldest_is_counted(fake: FakeInflux, tmp_path: Path) -> None:
    fake.down = True
    cfg = SinkConfig(batch_max_bytes=8 << 10, max_queue_bytes=16 << 10,
                     spool_max_bytes=64 << 10, spool_segment_bytes=8 << 10,
                     on_spool_full="drop_oldest", **FAST)
    total = 1500
    async with InfluxSink(v2(fake), tmp_path / "spool", cfg) as sink:
        for i in range(total):
            await sink.submit([apollo_line(i * 7919, nfields=12)])
        await sink.flush()
        stats = sink.stats()
        assert stats.submit_blocked == 0 or stats.submit_blocked_s < 1.0
        assert stats.spool_dropped_lines > 0 and stats.spool_bytes <= cfg.spool_max_bytes
        fake.down = False
        assert await sink.wait_drained(10)
    seqs = [int(ln.split("seq=")[1].split("i")[0]) // 7919 for ln in fake.written_lines()]
    assert len(seqs) == len(set(seqs)) == total - stats.spool_dropped_lines
    assert seqs == sorted(seqs) and seqs[-1] == total - 1  # the newest data was kept


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
    from groundstation.influx_writer import InfluxV1
    from groundstation.influx_sink import InfluxSink, SinkConfig
    from tests.test_influx_sink import FAST, apollo_line

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
                             cwd=Path(__file__).parent.parent)
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


async def test_close_fails_what_cannot_be_made_durable(tmp_path: Path) -> None:
    """Database down and spool full at shutdown: the futures fail, so nothing is acked."""
    dead_url = f"http://127.0.0.1:{free_port()}"
    cfg = SinkConfig(batch_max_bytes=8 << 10, max_queue_bytes=16 << 10,
                     spool_max_bytes=16 << 10, spool_segment_bytes=8 << 10, **FAST)
    sink = await InfluxSink(InfluxV1(dead_url, "gs"), tmp_path / "spool", cfg).start()
    futures: list[asyncio.Future[None]] = []

    async def produce() -> None:
        for i in range(1000):
            futures.append(await sink.submit([apollo_line(i * 7919, nfields=12)]))

    producer = asyncio.create_task(produce())
    await wait_until(lambda: sink.stats().spool_full and sink.stats().submit_blocked > 0,
                     10, "the spool to fill and submit to block")
    await sink.close(timeout=1.0)
    with pytest.raises(SinkClosedError):
        await producer  # the submit that was waiting for room
    failed = [f for f in futures if f.exception() is not None]
    assert failed and all(isinstance(f.exception(), SinkClosedError) for f in failed)
    assert all(f.done() for f in futures)
    stats = sink.stats()
    assert stats.lines_failed == len(failed)
    assert stats.lines_spooled + stats.lines_failed == len(futures)
