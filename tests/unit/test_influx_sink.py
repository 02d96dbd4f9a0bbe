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
import os
import time
from pathlib import Path

import pytest

from groundstation.deploy.servers import free_port
from groundstation.storage.influx.backends import InfluxV1, InfluxV2
from groundstation.storage.influx.sink import (
    EncodedLines,
    InfluxSink,
    SinkClosedError,
    SinkConfig,
    Spool,
    SpoolRecord,
    _split_encoded,
    iter_segment,
)
from tests.harness import wait_for
from tests.influx_helpers import (
    FAST,
    Answer,
    FakeInflux,
    Seen,
    apollo_line,
    soyuz_line,
)

# -- helpers --------------------------------------------------------------------------


def v2(fake: FakeInflux) -> InfluxV2:
    return InfluxV2(fake.url, org="nasa-jsc", bucket="astp", token="s3cr3t-t0ken")


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


async def test_uncompressed_writes_send_plain_line_protocol_both_apis(
        fake: FakeInflux, tmp_path: Path) -> None:
    lines = [apollo_line(i) for i in range(10)]
    cfg = SinkConfig(**FAST, compress=False)
    async with InfluxSink(InfluxV1(fake.url, "gs"), tmp_path / "s1", cfg) as sink:
        await sink.write(lines)
        assert sink.stats().bytes_sent == len(("\n".join(lines) + "\n").encode())
    async with InfluxSink(v2(fake), tmp_path / "s2", cfg) as sink:
        await sink.write(lines)
    v1_req, v2_req = fake.requests
    assert v1_req.path == "/write" and v2_req.path == "/api/v2/write"
    for req in (v1_req, v2_req):
        assert req.headers.get("content-encoding") in (None, "identity")
        assert req.headers["content-type"].startswith("text/plain")
        assert req.body == ("\n".join(lines) + "\n").encode()


async def test_uncompressed_writes_still_spool_gzip_and_drain_it(tmp_path: Path) -> None:
    down = [True]
    fake = FakeInflux(lambda seen: (503, {}, b"down") if down[0] else (204, {}, b""))
    lines = [soyuz_line(i) for i in range(20)]
    try:
        cfg = SinkConfig(**FAST, compress=False)
        async with InfluxSink(v2(fake), tmp_path / "spool", cfg) as sink:
            await sink.write(lines)  # durable: in the spool
            assert sink.stats().lines_spooled == 20
            [segment] = (tmp_path / "spool").glob("seg-*.spool")
            [record] = iter_segment(segment)
            # The spool's format is unchanged: gzip bodies.
            assert isinstance(record, SpoolRecord) and record.payload[:2] == b"\x1f\x8b"
            down[0] = False
            await wait_for(lambda: sink.stats().lines_drained == 20, 10)
    finally:
        fake.close()
    drained = fake.requests[-1]
    assert drained.status == 204 and drained.headers["content-encoding"] == "gzip"
    assert drained.lines == lines


def test_encoded_lines_are_cut_at_newlines_within_the_bounds() -> None:
    lines = [f"m,t=a f={'x' * (i % 7)}i {i}" for i in range(200)] + ["m,t=a f=" + "9" * 900]
    data = "".join(f"{ln}\n" for ln in lines).encode()
    for max_bytes, max_lines in ((1 << 20, 10_000), (1024, 10_000), (1 << 20, 7), (300, 5),
                                 (1024, 1)):
        pieces = list(_split_encoded(data, len(lines), max_bytes, max_lines))
        assert b"".join(p for p, _ in pieces) == data
        assert sum(n for _, n in pieces) == len(lines)
        for piece, n in pieces:
            assert piece.endswith(b"\n") and piece.count(b"\n") == n <= max_lines
            assert len(piece) <= max_bytes or n == 1  # only a line longer than the bound
    assert list(_split_encoded(b"", 0, 1024, 10)) == []


async def test_encoded_lines_and_lines_in_one_submission(fake: FakeInflux,
                                                         tmp_path: Path) -> None:
    block = [apollo_line(i) for i in range(30)]
    loose = [soyuz_line(i) for i in range(3)]
    encoded = EncodedLines("".join(f"{ln}\n" for ln in block).encode(), len(block))
    cfg = SinkConfig(**{**FAST, "batch_max_lines": 8, "flush_interval_s": 0.01})
    async with InfluxSink(InfluxV1(fake.url, "gs"), tmp_path / "spool", cfg) as sink:
        await sink.write([encoded, *loose])
        stats = sink.stats()
    assert stats.lines_submitted == stats.lines_written == 33
    got = [ln for req in fake.requests for ln in req.lines]
    assert got == block + loose  # all of them, in order
    assert all(len(req.lines) <= 8 for req in fake.requests)


async def test_a_batch_big_enough_goes_at_once_a_small_one_waits_for_companions(
        fake: FakeInflux, tmp_path: Path) -> None:
    """A free writer does not leave the database idle for flush_interval_s when the lines
    waiting already make a request worth sending (batch_ready_bytes); a few lines do
    wait for companions."""
    cfg = SinkConfig(**{**FAST, "flush_interval_s": 1.5, "batch_ready_bytes": 4096})
    big = [apollo_line(i) for i in range(8)]  # ~8 kB
    async with InfluxSink(InfluxV1(fake.url, "gs"), tmp_path / "spool", cfg) as sink:
        t0 = time.monotonic()
        await sink.write(big)
        took_big = time.monotonic() - t0
        t0 = time.monotonic()
        await sink.write([soyuz_line(1)])
        took_small = time.monotonic() - t0
    assert [len(r.lines) for r in fake.requests] == [8, 1]
    assert took_big < 1.0 < 1.4 < took_small


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
    await wait_for(lambda: sink.stats().spool_full and sink.stats().submit_blocked > 0,
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
