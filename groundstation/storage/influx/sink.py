"""The InfluxDB sink: batched, compressed, retried writes that lose nothing in an outage.

The ingest hands line-protocol lines to `InfluxSink.submit`, which returns a future that
completes once the lines are *durable*: accepted by InfluxDB, or appended (and fsynced) to
the on-disk spool, or, for lines InfluxDB refuses as malformed, written to the dead-letter
file. The ingest acknowledges its MQTT messages only then, so a crash at any moment loses
nothing the broker does not still hold.

    sink = InfluxSink(make_backend(url, database="groundstation"), "/var/spool/gs-influx")
    await sink.start()
    fut = await sink.submit(lines)      # waits only while the in-memory queue is full
    fut.add_done_callback(lambda f: ack(message) if f.exception() is None else None)
    ...
    await sink.close()                  # flushes memory to InfluxDB, or to the spool

Path of a batch
  Submitted lines are encoded once into chunks (bytes) and queued in memory; the queue is
  bounded in bytes (`max_queue_bytes`, counting chunks until they are durable, in-flight
  ones included), and `submit` waits while it is full: backpressure. A writer task takes
  chunks up to `batch_max_lines` / `batch_max_bytes`, or what arrived within
  `flush_interval_s` of the oldest one, gzips them and POSTs them.
  - 2xx: durable.
  - No answer, 5xx, 429: retried with exponential backoff and jitter (at least Retry-After)
    for up to `spool_after_s`; after that the batch goes to the spool and the sink counts
    the database as down: later batches are spooled at once, without waiting on a dead
    server, until a write succeeds again.
  - Any other 4xx (malformed line, field type conflict, too large): never retried as is.
    400/413/422 batches are split in halves, recursively, to isolate the bad lines (good
    halves are written; a v1 "partial write" already stored the good points, and a rewrite
    of them is idempotent); each isolated bad line, or what is left when the split budget
    is spent, goes to the dead-letter file with InfluxDB's error text, is counted and
    logged. 401/403/404 (a configuration problem) go there whole. Nothing blocks the queue.

The spool (`Spool`)
  Append-only segment files `seg-<seq>.spool` in the spool directory, each a run of records
  `magic "GSP1" | u32 payload length | u32 line count | u32 crc32 | payload`, the payload
  being the gzip body exactly as it would be POSTed (spooled data takes ~5-10x less disk,
  and a lone record drains without recompressing). A drainer task sends records oldest
  first, several per request (re-compressed as one gzip stream), and a segment is
  deleted once fully sent; `cursor` remembers the position inside the oldest
  one (written without fsync: being behind only means re-sending, which is idempotent).
  A restart never appends to an old segment: it opens a new one, so a record torn by a
  crash can only be the last of an old segment, where its bad length or crc32 shows. It is
  skipped, counted, and its bytes kept under `torn/`; with fsync on, its future never
  completed, so the ingest never acked it and the broker redelivers it.
  Live data goes straight to InfluxDB while the drainer backfills (consoles see current
  values as soon as the database is back); the spool itself drains strictly in order.

fsync policy (`fsync=True`, the default)
  Every spool append and dead-letter entry is fdatasync'ed before its future completes,
  and the directory is fsynced when a segment is created, so an acknowledged message
  survives power loss. During an outage that is one fsync per batch (a handful a second at
  live rate). `fsync=False` survives a crash of the process, not of the machine.

When the spool is full (`spool_max_bytes`)
  `on_spool_full="block"` (the default): nothing is dropped. The writer keeps the batch in
  memory and retries the database; the memory queue fills; `submit` blocks; the ingest
  stops acknowledging, so the broker keeps the messages (QoS 1, persistent session) and
  they arrive when there is room again. For a ground station losing telemetry is the worst
  outcome, and the backlog then sits where it is already durable and redelivered by
  design. The state is reported (`spool_full`, `spool_full_events`, `submit_blocked`).
  `on_spool_full="drop_oldest"`: the oldest segment is deleted to make room, its lines
  counted in `spool_dropped_lines` and logged as an error: for a deployment that prefers
  fresh data in the database to an unbounded broker backlog and can replay the gap from
  the raw archive.

Memory is bounded by `max_queue_bytes` of line protocol plus, per writer and for the
drainer, one batch being sent (raw and gzip, each <= `batch_max_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import logging
import os
import random
import struct
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from groundstation.storage.influx.backends import WriteBackend, WriteResult

log = logging.getLogger("groundstation.influx_sink")

T = TypeVar("T")

__all__ = [
    "InfluxSink",
    "SinkClosedError",
    "SinkConfig",
    "SinkStats",
    "Spool",
    "SpoolRecord",
    "iter_segment",
]


class SinkClosedError(RuntimeError):
    """The sink closed before these lines were durable: do not acknowledge them."""


# --------------------------------------------------------------------------------------
# The on-disk spool
# --------------------------------------------------------------------------------------

MAGIC = b"GSP1"
_HEADER = struct.Struct("<4sIII")  # magic, payload length, line count, crc32
HEADER_SIZE = _HEADER.size
_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".spool"


def _crc(payload: bytes, nlines: int) -> int:
    # The crc covers the length and line count too, so a header torn into plausible-looking
    # numbers is caught as well as a torn payload.
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", len(payload), nlines)))


def encode_record(payload: bytes, nlines: int) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), nlines, _crc(payload, nlines)) + payload


@dataclass(frozen=True)
class SpoolRecord:
    segment: int  # segment sequence number
    offset: int  # where the record starts in the segment
    end: int  # where the next one starts
    nlines: int
    payload: bytes  # the gzip-compressed line protocol, as POSTed


def iter_segment(path: str | os.PathLike[str]) -> Iterator[SpoolRecord | tuple[int, str]]:
    """Read a segment file: its records, then `(offset, problem)` if it ends in a bad one.

    For inspection tools and tests; the spool itself reads incrementally.
    """
    seq = _seg_seq(Path(path))
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        rec, problem = _parse_record(data, off, seq)
        if rec is None:
            yield off, problem
            return
        yield rec
        off = rec.end


def _parse_record(data: bytes, off: int, seq: int) -> tuple[SpoolRecord | None, str]:
    if len(data) - off < HEADER_SIZE:
        return None, f"torn header ({len(data) - off} of {HEADER_SIZE} bytes)"
    magic, length, nlines, crc = _HEADER.unpack_from(data, off)
    if magic != MAGIC:
        return None, f"bad magic {magic!r}"
    end = off + HEADER_SIZE + length
    if end > len(data):
        return None, f"torn payload ({len(data) - off - HEADER_SIZE} of {length} bytes)"
    payload = bytes(data[off + HEADER_SIZE:end])
    if _crc(payload, nlines) != crc:
        return None, "crc32 mismatch"
    return SpoolRecord(seq, off, end, nlines, payload), ""


def _seg_seq(path: Path) -> int:
    return int(path.name[len(_SEG_PREFIX):-len(_SEG_SUFFIX)])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes in the file
    valid_end: int  # end of the last good record (== size unless the tail is torn)
    pending_records: int
    pending_lines: int


class Spool:
    """Append-only, crash-safe, bounded spool of write payloads. Thread-safe; blocking I/O.

    The sink calls it from one worker thread, so appends keep their order; the lock makes
    the stats readable from anywhere.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int,
                 segment_bytes: int, fsync: bool = True,
                 on_full: Literal["block", "drop_oldest"] = "block") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.on_full = on_full
        self._lock = threading.Lock()
        # Two sinks appending to one spool would interleave records and drain each
        # other's data: the lock file makes the second one fail loudly instead.
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise RuntimeError(f"spool directory {self.directory} is in use by another "
                               f"process or sink") from None
        self._segs: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._active_fd: int | None = None
        self._read_fd: tuple[int, int] | None = None  # (seq, fd) of the oldest segment
        self._head = (0, 0)  # (segment, offset) of the next record to send
        self.bytes = 0
        self.peak_bytes = 0
        self.full = False
        self.full_events = 0
        self.torn_records = 0
        self.torn_bytes = 0
        self.dropped_records = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.appended_records = 0
        self.appended_lines = 0
        # Unsent records and lines, kept as plain ints so the event loop can read them
        # without taking the lock (which an fsync may hold for a while).
        self.pending_records = 0
        self.pending_lines = 0
        self._next_seq = 1
        self._recover()

    # -- startup -------------------------------------------------------------------

    def _recover(self) -> None:
        paths = sorted(self.directory.glob(f"{_SEG_PREFIX}*{_SEG_SUFFIX}"), key=_seg_seq)
        cursor = self._read_cursor()
        for path in paths:
            seq = _seg_seq(path)
            if cursor is not None and seq < cursor[0]:
                # Fully sent before the restart; its deletion did not happen.
                path.unlink(missing_ok=True)
                continue
            starts: list[int] = []
            lines_from: list[int] = []
            valid_end = 0
            problem = ""
            for item in iter_segment(path):
                if isinstance(item, tuple):
                    problem = item[1]
                    break
                starts.append(item.offset)
                lines_from.append(item.nlines)
                valid_end = item.end
            size = path.stat().st_size
            skip = 0
            if cursor is not None and seq == cursor[0]:
                # The cursor must be a record boundary we found; anything else (a stale
                # file) restarts the segment: re-sending is idempotent, skipping is not.
                if cursor[1] in starts or cursor[1] == valid_end:
                    skip = starts.index(cursor[1]) if cursor[1] in starts else len(starts)
                else:
                    log.warning("spool cursor %s does not point at a record; re-sending "
                                "segment %s from its start", cursor, path.name)
                self._head = (seq, cursor[1] if skip else 0)
            seg = _Segment(seq, path, size, valid_end, len(starts) - skip,
                           sum(lines_from[skip:]))
            self._segs[seq] = seg
            self.bytes += size
            self.pending_records += seg.pending_records
            self.pending_lines += seg.pending_lines
            if problem:
                self._keep_torn(seg, valid_end, problem)
        if self._segs and self._head[0] not in self._segs:
            self._head = (min(self._segs), 0)
        # Never reuse a number: a cursor left by a crash must not make a new segment look
        # already sent.
        self._next_seq = max([*self._segs, cursor[0] if cursor else 0]) + 1
        self.peak_bytes = self.bytes
        if self._segs:
            log.info("spool %s: %d segment(s), %d bytes, %d lines to send", self.directory,
                     len(self._segs), self.bytes, self.pending_lines)

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            seq, off = (self.directory / "cursor").read_text().split()
            return int(seq), int(off)
        except (OSError, ValueError):
            return None

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{self._head[0]} {self._head[1]}\n")
        os.replace(tmp, self.directory / "cursor")

    # -- state ---------------------------------------------------------------------

    @property
    def segments(self) -> int:
        return len(self._segs)

    def empty(self) -> bool:
        return self.pending_records == 0

    # -- appending -----------------------------------------------------------------

    def append(self, payload: bytes, nlines: int) -> bool:
        """Append one record durably; False if it does not fit (the bound, or a full disk)."""
        rec = encode_record(payload, nlines)
        with self._lock:
            if self.bytes + len(rec) > self.max_bytes and self.on_full == "drop_oldest":
                self._drop_oldest_until(len(rec))
            if self.bytes + len(rec) > self.max_bytes:
                return self._refuse(f"bound of {self.max_bytes} bytes reached")
            if self._active is None or self._active.size >= self.segment_bytes:
                try:
                    self._open_segment()
                except OSError as exc:
                    return self._refuse(f"cannot create a segment: {exc}")
            seg, fd = self._active, self._active_fd
            assert seg is not None and fd is not None
            try:
                view = memoryview(rec)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fdatasync(fd)
            except OSError as exc:
                # Disk full or failing: take the partial record back out, so the segment
                # stays a clean run of records, and report it as a full spool.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, seg.size)
                return self._refuse(f"cannot write {seg.path}: {exc}")
            seg.size += len(rec)
            seg.valid_end = seg.size
            seg.pending_records += 1
            seg.pending_lines += nlines
            self.pending_records += 1
            self.pending_lines += nlines
            self.bytes += len(rec)
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self.appended_records += 1
            self.appended_lines += nlines
            self.full = False
            if seg.size >= self.segment_bytes:
                self._close_active()
            return True

    def _refuse(self, why: str) -> bool:
        if not self.full:
            self.full = True
            self.full_events += 1
            log.error("InfluxDB spool %s is full (%s): holding data in memory; the ingest "
                      "is backpressured", self.directory, why)
        return False

    def _open_segment(self) -> None:
        self._close_active()
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{_SEG_PREFIX}{seq:012d}{_SEG_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        if self.fsync:
            # The new name must survive power loss along with the data fsynced into it.
            _fsync_dir(self.directory)
        seg = _Segment(seq, path, 0, 0, 0, 0)
        self._segs[seq] = seg
        if len(self._segs) == 1:
            self._head = (seq, 0)
        self._active, self._active_fd = seg, fd

    def _close_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active, self._active_fd = None, None

    def _drop_oldest_until(self, need: int) -> None:
        while self._segs and self.bytes + need > self.max_bytes:
            seg = self._segs[min(self._segs)]
            if seg is self._active:
                self._close_active()
            self.dropped_records += seg.pending_records
            self.dropped_lines += seg.pending_lines
            self.dropped_bytes += seg.size
            self.pending_records -= seg.pending_records
            self.pending_lines -= seg.pending_lines
            log.error("InfluxDB spool full: dropped the oldest segment %s (%d lines never "
                      "written; replay them from the raw archive)", seg.path.name,
                      seg.pending_lines)
            self._delete(seg)

    # -- draining ------------------------------------------------------------------

    def peek(self, max_records: int = 64, max_bytes: int = 1 << 20,
             max_lines: int = 1 << 30) -> list[SpoolRecord]:
        """The oldest unsent records, in order (at least one if any), without removing them."""
        out: list[SpoolRecord] = []
        size = lines = 0
        with self._lock:
            seq, off = self._head
            while self._segs and len(out) < max_records:
                seg = self._segs.get(seq)
                if seg is None:
                    later = [s for s in self._segs if s > seq]
                    if not later:
                        break
                    seq, off = min(later), 0
                    continue
                if off >= seg.valid_end:
                    if seg is self._active:
                        break  # caught up with the writer
                    if out:
                        # Carry on into the next segment; this one is deleted when the
                        # records just read are committed.
                        later = [s for s in self._segs if s > seq]
                        if not later:
                            break
                        seq, off = min(later), 0
                        continue
                    self._finish_segment(seg)
                    seq, off = self._head
                    continue
                rec, problem = self._read_record(seg, off)
                if rec is None:
                    self._skip_torn(seg, off, problem)
                    continue
                if out and (size + len(rec.payload) > max_bytes
                            or lines + rec.nlines > max_lines):
                    break
                out.append(rec)
                size += len(rec.payload)
                lines += rec.nlines
                off = rec.end
        return out

    def _read_record(self, seg: _Segment, off: int) -> tuple[SpoolRecord | None, str]:
        if self._read_fd is None or self._read_fd[0] != seg.seq:
            self._close_reader()
            self._read_fd = (seg.seq, os.open(seg.path, os.O_RDONLY))
        fd = self._read_fd[1]
        header = os.pread(fd, HEADER_SIZE, off)
        if len(header) < HEADER_SIZE:
            return None, "torn header"
        magic, length, _, _ = _HEADER.unpack(header)
        if magic != MAGIC:
            return None, f"bad magic {magic!r}"
        if off + HEADER_SIZE + length > seg.valid_end:
            return None, "torn payload"
        data = header + os.pread(fd, length, off + HEADER_SIZE)
        rec, problem = _parse_record(data, 0, seg.seq)
        if rec is None:
            return None, problem
        return SpoolRecord(seg.seq, off, off + len(data), rec.nlines, rec.payload), ""

    def _keep_torn(self, seg: _Segment, off: int, problem: str) -> None:
        # Keep the unreadable bytes for forensics rather than silently discarding them; a
        # torn last record was never acknowledged (see the module docstring).
        torn = self.directory / "torn"
        torn.mkdir(exist_ok=True)
        with open(seg.path, "rb") as f:
            f.seek(off)
            data = f.read()
        (torn / f"{seg.path.stem}-at-{off}.bin").write_bytes(data)
        self.torn_records += 1
        self.torn_bytes += len(data)
        log.error("InfluxDB spool: %s has an unreadable record at byte %d (%s): skipped the "
                  "remaining %d bytes of the segment (kept in %s)", seg.path.name, off,
                  problem, len(data), torn)

    def _skip_torn(self, seg: _Segment, off: int, problem: str) -> None:
        # Found while reading (corruption after startup): nothing after it can be trusted.
        self._keep_torn(seg, off, problem)
        self.pending_records -= seg.pending_records
        self.pending_lines -= seg.pending_lines
        seg.valid_end = off
        seg.pending_records = seg.pending_lines = 0
        if seg is self._active:
            self._close_active()  # appends go to a fresh segment, never after bad bytes
        self._head = (seg.seq, off)

    def commit(self, records: Sequence[SpoolRecord]) -> None:
        """Mark `records` (from `peek`, in order) as sent; delete segments fully sent."""
        with self._lock:
            done_records = done_lines = 0
            for rec in records:
                seg = self._segs.get(rec.segment)
                if seg is None:
                    continue  # dropped (drop_oldest) while it was being sent
                seg.pending_records -= 1
                seg.pending_lines -= rec.nlines
                done_records += 1
                done_lines += rec.nlines
                self._head = (rec.segment, rec.end)
                if rec.end >= seg.valid_end and (seg is not self._active
                                                 or rec.end == seg.size):
                    self._finish_segment(seg)
            self._write_cursor()
            # Last, so that a lock-free reader seeing "nothing pending" also sees the
            # segments gone.
            self.pending_lines -= done_lines
            self.pending_records -= done_records

    def _finish_segment(self, seg: _Segment) -> None:
        if seg is self._active:
            self._close_active()
        self._delete(seg)
        nxt = min(self._segs, default=None)
        self._head = (nxt, 0) if nxt is not None else (seg.seq, 0)
        if self.full and self.bytes < self.max_bytes:
            self.full = False

    def _delete(self, seg: _Segment) -> None:
        if self._read_fd is not None and self._read_fd[0] == seg.seq:
            self._close_reader()
        seg.path.unlink(missing_ok=True)
        self.bytes -= seg.size
        del self._segs[seg.seq]
        if self._head[0] == seg.seq:
            nxt = min(self._segs, default=None)
            self._head = (nxt, 0) if nxt is not None else self._head

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd[1])
            self._read_fd = None

    def close(self) -> None:
        with self._lock:
            self._close_active()
            self._close_reader()
            if self._segs:
                self._write_cursor()
            else:
                (self.directory / "cursor").unlink(missing_ok=True)
            os.close(self._lock_fd)


# --------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------


@dataclass
class SinkConfig:
    batch_max_lines: int = 5000  # ~what InfluxDB recommends per request
    batch_max_bytes: int = 1 << 20  # uncompressed line protocol per request
    flush_interval_s: float = 0.1  # the longest a line waits for companions
    max_queue_bytes: int = 16 << 20  # in-memory bound; submit blocks beyond it
    concurrency: int = 1  # live writes in flight (more than 1 relaxes spool order)
    gzip_level: int = 1  # fast: most of the gain, little CPU
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0  # backoff cap; also how long the DB may stay undetected as up
    retry_after_max_s: float = 300.0  # never honour a Retry-After longer than this
    spool_after_s: float = 1.0  # how long a live batch is retried in memory before spooling
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 8 << 20  # at most spool_max_bytes / 8 (see segment_bytes)
    on_spool_full: Literal["block", "drop_oldest"] = "block"
    fsync: bool = True
    drain_max_records: int = 256  # spool records per drain request
    bisect_max_requests: int = 64  # per rejected batch, to isolate bad lines
    deadletter_path: str | None = None  # default: <spool_dir>/deadletter.lp
    latency_window: int = 1024  # successful writes the latency percentiles cover

    def validate(self) -> None:
        problems = []
        if self.batch_max_lines < 1 or self.batch_max_bytes < 1024:
            problems.append("batch_max_lines must be >= 1 and batch_max_bytes >= 1024")
        if self.max_queue_bytes < self.batch_max_bytes:
            problems.append("max_queue_bytes must be >= batch_max_bytes")
        if self.spool_segment_bytes < 4096:
            problems.append("spool_segment_bytes must be >= 4096")
        if self.spool_max_bytes < 2 * self.batch_max_bytes:
            problems.append("spool_max_bytes must be >= 2 x batch_max_bytes "
                            "(a batch must always fit)")
        if self.on_spool_full not in ("block", "drop_oldest"):
            problems.append("on_spool_full must be 'block' or 'drop_oldest'")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if problems:
            raise ValueError("bad InfluxDB sink configuration: " + "; ".join(problems))

    @property
    def segment_bytes(self) -> int:
        """The segment size used: at most 1/8 of the bound, so that space is given back in
        small steps as the spool drains (a segment is deleted only once fully sent)."""
        return max(4096, min(self.spool_segment_bytes, self.spool_max_bytes // 8))


@dataclass
class SinkStats:
    """A snapshot for self-telemetry. Counters are totals since the sink started."""

    api: str
    db_up: bool
    lines_submitted: int
    lines_written: int  # accepted by InfluxDB (live and drained)
    batches_written: int  # successful write requests
    bytes_sent: int  # compressed bytes of successful requests
    retries: int  # re-attempts of the same data
    failures: dict[str, int]  # failed requests by kind: connection, http_503, http_400...
    write_latency_last_s: float | None
    write_latency_p50_s: float | None
    write_latency_p99_s: float | None
    queue_bytes: int  # in memory, submitted and not yet durable
    queue_bytes_peak: int
    queue_bytes_max: int  # the bound
    queue_chunks: int
    submit_blocked: int  # submit calls that had to wait for room
    submit_blocked_s: float
    lines_spooled: int
    lines_drained: int
    spool_bytes: int
    spool_bytes_peak: int
    spool_bytes_max: int
    spool_segments: int
    spool_pending_lines: int
    spool_full: bool
    spool_full_events: int
    spool_torn_records: int
    spool_dropped_lines: int  # drop_oldest only
    dead_letter_lines: int
    dead_letter_entries: int
    lines_failed: int  # futures failed (SinkClosedError): not durable, not acknowledged

    def fields(self) -> dict[str, int | float | bool]:
        """Flat numeric fields, e.g. for a line of self-telemetry."""
        out: dict[str, int | float | bool] = {}
        for k, v in asdict(self).items():
            if k == "failures":
                out.update({f"failures_{kind}": n for kind, n in v.items()})
            elif isinstance(v, int | float | bool):
                out[k] = v
        return out


@dataclass(eq=False)
class _Ticket:
    future: asyncio.Future[None]
    pending: int
    nlines: int


@dataclass(eq=False)
class _Chunk:
    body: bytes  # line protocol, newline-terminated
    nlines: int
    ticket: _Ticket
    enqueued: float


def _backoff(attempt: int, initial: float, cap: float) -> float:
    # "Equal jitter": half the exponential delay, plus up to as much again at random, so
    # many clients (or our writer and drainer) do not retry in lockstep.
    delay = min(cap, initial * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class InfluxSink:
    """Batches, compresses, retries, spools and dead-letters writes to one InfluxDB."""

    def __init__(self, backend: WriteBackend, spool_dir: str | os.PathLike[str],
                 config: SinkConfig | None = None) -> None:
        self.backend = backend
        self.config = cfg = config or SinkConfig()
        cfg.validate()
        self.spool_dir = Path(spool_dir)
        self.deadletter_path = (Path(cfg.deadletter_path) if cfg.deadletter_path
                                else self.spool_dir / "deadletter.lp")
        self._spool: Spool | None = None
        self._queue: deque[_Chunk] = deque()
        self._queue_bytes = 0  # queued + in flight, until durable
        self._queue_peak = 0
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._changed = asyncio.Event()  # DB came up, or spool space was freed
        self._spooled = asyncio.Event()  # something was appended to the spool
        self._admit: asyncio.Lock | None = None
        self._outstanding: set[asyncio.Future[None]] = set()
        self._inflight: set[_Chunk] = set()
        self._db_down = False
        self._not_before = 0.0  # monotonic time before which no request is sent (429)
        self._closing = False
        self._started = False
        self._writers: list[asyncio.Task[None]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._http: ThreadPoolExecutor | None = None
        self._disk: ThreadPoolExecutor | None = None
        self._latency: deque[float] = deque(maxlen=cfg.latency_window)
        self._failures: Counter[str] = Counter()
        self._n: Counter[str] = Counter()
        self._blocked_s = 0.0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        if self._started:
            return self
        cfg = self.config
        self._http = ThreadPoolExecutor(cfg.concurrency + 1, thread_name_prefix="influx-http")
        # One thread for all disk writes: spool appends then happen in submission order.
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="influx-spool")
        try:
            self._spool = await self._on_disk(
                Spool, self.spool_dir, max_bytes=cfg.spool_max_bytes,
                segment_bytes=cfg.segment_bytes,
                fsync=cfg.fsync, on_full=cfg.on_spool_full)
        except BaseException:
            self._disk.shutdown()
            self._http.shutdown()
            raise
        self._admit = asyncio.Lock()
        self._writers = [asyncio.create_task(self._writer(), name=f"influx-writer-{i}")
                         for i in range(cfg.concurrency)]
        self._drainer = asyncio.create_task(self._drain_loop(), name="influx-drainer")
        self._started = True
        log.info("InfluxDB sink to %s, spool %s", self.backend.target, self.spool_dir)
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; make everything in memory durable (InfluxDB or spool); stop.

        What cannot be made durable within `timeout` (database down and spool full) has its
        future failed with SinkClosedError, so the ingest does not acknowledge it and the
        broker delivers it again after the restart. The spool is left for the next start.
        """
        if not self._started or self._closing:
            return
        self._closing = True
        self._items.set()
        self._room.set()
        self._changed.set()
        _, pending = await asyncio.wait(self._writers, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        leftovers = list(self._inflight) + list(self._queue)
        self._queue.clear()
        self._inflight.clear()
        for chunk in leftovers:
            self._settle(chunk, SinkClosedError("InfluxDB sink closed before these lines were "
                                                "written or spooled"))
        if leftovers:
            log.error("InfluxDB sink closed with %d line(s) neither written nor spooled; they "
                      "were not acknowledged", sum(c.nlines for c in leftovers))
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        assert self._spool is not None and self._disk is not None and self._http is not None
        await self._on_disk(self._spool.close)
        self._disk.shutdown(wait=True)
        # Not waiting: a cancelled drain request may still be running in its thread, and
        # its outcome no longer matters (it is re-sent from the spool next time).
        self._http.shutdown(wait=False, cancel_futures=True)
        self.backend.close()

    # -- the ingest's side ---------------------------------------------------------

    async def submit(self, lines: Sequence[str]) -> asyncio.Future[None]:
        """Queue `lines`; return a future that completes once they are durable.

        Awaiting `submit` itself waits only while the in-memory queue is full
        (backpressure). The future's result is None when every line is in InfluxDB, in
        the spool or in the dead-letter file; it fails with SinkClosedError if the sink
        closed first. Lines must be newline-free line protocol with ns timestamps.
        """
        if not self._started or self._closing:
            raise SinkClosedError("InfluxDB sink is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        chunks = list(self._encode(lines))
        self._n["lines_submitted"] += len(lines)
        if not chunks:
            future.set_result(None)
            return future
        ticket = _Ticket(future, len(chunks), len(lines))
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        assert self._admit is not None
        admitted = 0
        try:
            # FIFO admission: a large submit is not starved by small ones slipping past.
            async with self._admit:
                for body, nlines in chunks:
                    await self._wait_room(len(body))
                    self._queue.append(_Chunk(body, nlines, ticket, time.monotonic()))
                    self._queue_bytes += len(body)
                    self._queue_peak = max(self._queue_peak, self._queue_bytes)
                    admitted += 1
                    self._items.set()
        except BaseException:
            # Cancelled (or closed) while waiting for room: the chunks already queued will
            # still be written, but the caller has no future to ack on, so cancel it.
            ticket.pending -= len(chunks) - admitted
            if not future.done():
                future.cancel()
            raise
        return future

    async def write(self, lines: Sequence[str]) -> None:
        """Submit and wait until durable."""
        await (await self.submit(lines))

    # Drop-in for InfluxV1.awrite_lines where the caller simply awaits each write.
    awrite_lines = write

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable (or failed)."""
        if self._outstanding:
            # asyncio.wait, not gather: cancelling flush() must not cancel the futures
            # the ingest is waiting on to acknowledge.
            await asyncio.wait(list(self._outstanding))

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until the memory queue and the spool are empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            await self.flush()
            assert self._spool is not None
            if not self._queue and not self._inflight and self._spool.empty():
                await self._on_disk(lambda: None)  # let a commit in progress finish
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    def _encode(self, lines: Sequence[str]) -> Iterator[tuple[bytes, int]]:
        cfg = self.config
        total = sum(map(len, lines)) + len(lines)
        if total <= cfg.batch_max_bytes and len(lines) <= cfg.batch_max_lines:
            if lines:
                yield ("\n".join(lines) + "\n").encode(), len(lines)
            return
        # Bigger than one batch: split, so that the queue bound holds for every chunk.
        part: list[str] = []
        size = 0
        for line in lines:
            if part and (size + len(line) + 1 > cfg.batch_max_bytes
                         or len(part) >= cfg.batch_max_lines):
                yield ("\n".join(part) + "\n").encode(), len(part)
                part, size = [], 0
            part.append(line)
            size += len(line) + 1
        if part:
            yield ("\n".join(part) + "\n").encode(), len(part)

    async def _wait_room(self, size: int) -> None:
        bound = self.config.max_queue_bytes
        # An empty queue always admits one chunk, so a line bigger than the bound (a
        # misconfiguration) slows things down instead of deadlocking.
        if self._queue_bytes + size <= bound or self._queue_bytes == 0:
            return
        self._n["submit_blocked"] += 1
        started = time.monotonic()
        try:
            while self._queue_bytes + size > bound and self._queue_bytes > 0:
                if self._closing:
                    raise SinkClosedError("InfluxDB sink closed while waiting for room")
                self._room.clear()
                await self._room.wait()
        finally:
            self._blocked_s += time.monotonic() - started

    def _settle(self, chunk: _Chunk, error: BaseException | None = None) -> None:
        """A chunk is durable (or failed): release its memory and maybe its ticket."""
        self._inflight.discard(chunk)
        self._queue_bytes -= len(chunk.body)
        self._room.set()
        ticket = chunk.ticket
        ticket.pending -= 1
        if ticket.future.done():
            return
        if error is not None:
            self._n["lines_failed"] += ticket.nlines
            ticket.future.set_exception(error)
        elif ticket.pending == 0:
            ticket.future.set_result(None)

    # -- writers -------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            self._inflight.update(batch)
            error: Exception | None = None
            try:
                await self._deliver(batch)
            except Exception as exc:
                # E.g. the spool or dead-letter file cannot be written. The lines are not
                # durable: fail their futures (the ingest does not ack, the broker
                # redelivers) and keep the writer alive for the next batch.
                log.exception("InfluxDB sink could not make a batch durable")
                self._failures[f"internal_{type(exc).__name__}"] += 1
                error = exc
            for chunk in batch:
                self._settle(chunk, error)

    async def _next_batch(self) -> list[_Chunk] | None:
        cfg = self.config
        while not self._queue:
            if self._closing:
                return None
            self._items.clear()
            await self._items.wait()
        batch = [self._queue.popleft()]
        size, nlines = len(batch[0].body), batch[0].nlines
        deadline = batch[0].enqueued + cfg.flush_interval_s
        while True:
            while self._queue:
                nxt = self._queue[0]
                if (size + len(nxt.body) > cfg.batch_max_bytes
                        or nlines + nxt.nlines > cfg.batch_max_lines):
                    return batch
                batch.append(self._queue.popleft())
                size += len(nxt.body)
                nlines += nxt.nlines
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return batch
            self._items.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._items.wait(), remaining)

    async def _deliver(self, batch: list[_Chunk]) -> None:
        """Make one batch durable: written, dead-lettered, or spooled. Returns when it is."""
        cfg = self.config
        raw = b"".join(c.body for c in batch)
        nlines = sum(c.nlines for c in batch)
        gz: bytes | None = None
        deadline = time.monotonic() + cfg.spool_after_s
        attempt = 0
        probe = not self._db_down
        while True:
            if probe:
                wait = self._not_before - time.monotonic()
                if wait > 0 and time.monotonic() + wait < deadline:
                    await asyncio.sleep(wait)
                if self._not_before <= time.monotonic():
                    gz, res = await self._post(raw, gz)
                    if res.ok:
                        self._written(nlines, len(gz))
                        return
                    if not res.retryable:
                        await self._rejected(raw, res, "live")
                        return
                    attempt += 1
                    delay = self._retry_delay(attempt, res)
                    if time.monotonic() + delay < deadline and not self._closing:
                        self._n["retries"] += 1
                        await asyncio.sleep(delay)
                        continue
                    self._mark_down(res)
            # The database is down (or has not answered for spool_after_s): to disk.
            if gz is None:
                gz = await self._compress(raw)
            if await self._spool_append(gz, nlines):
                return
            # Spool full and policy "block": keep the batch, wait for room or the DB.
            attempt += 1
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(),
                                       _backoff(attempt, cfg.retry_initial_s, cfg.retry_max_s))
            probe = True
            deadline = 0.0  # one try per wakeup, then back to the spool

    async def _spool_append(self, gz: bytes, nlines: int) -> bool:
        assert self._spool is not None
        if not await self._on_disk(self._spool.append, gz, nlines):
            return False
        self._n["lines_spooled"] += nlines
        self._spooled.set()
        return True

    def _retry_delay(self, attempt: int, res: WriteResult) -> float:
        cfg = self.config
        delay = _backoff(attempt, cfg.retry_initial_s, cfg.retry_max_s)
        if res.retry_after is not None:
            honoured = min(res.retry_after, cfg.retry_after_max_s)
            # The server asked everybody (the drainer too) to stay away that long.
            self._not_before = max(self._not_before, time.monotonic() + honoured)
            delay = max(delay, honoured)
        return delay

    def _mark_down(self, res: WriteResult) -> None:
        if not self._db_down:
            self._db_down = True
            log.warning("InfluxDB %s unavailable (%s: %s): spooling to %s",
                        self.backend.target, res.kind, res.error, self.spool_dir)

    def _mark_up(self) -> None:
        if self._db_down:
            self._db_down = False
            assert self._spool is not None
            log.info("InfluxDB %s is back: writing live data, draining %d spooled lines",
                     self.backend.target, self._spool.pending_lines)
        self._changed.set()

    def _written(self, nlines: int, nbytes: int) -> None:
        self._n["lines_written"] += nlines
        self._n["batches_written"] += 1
        self._n["bytes_sent"] += nbytes
        self._mark_up()

    # -- HTTP ----------------------------------------------------------------------

    async def _compress(self, raw: bytes) -> bytes:
        assert self._http is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._http, gzip.compress, raw, self.config.gzip_level)

    async def _rejoin(self, records: Sequence[SpoolRecord]) -> bytes:
        # Concatenated gzip members are a valid gzip stream, and Go's reader (InfluxDB
        # 1.x/2.x) reads them all; but a server or proxy that stops after the first
        # member would answer 204 having dropped the rest. One recompression per drain
        # request is cheap insurance against that silent loss.
        assert self._http is not None
        level = self.config.gzip_level
        payloads = [r.payload for r in records]
        return await asyncio.get_running_loop().run_in_executor(
            self._http,
            lambda: gzip.compress(b"".join(gzip.decompress(p) for p in payloads), level))

    async def _post(self, raw: bytes, gz: bytes | None) -> tuple[bytes, WriteResult]:
        """Compress (unless `gz` is given) and send; in a worker thread."""
        assert self._http is not None
        level = self.config.gzip_level
        backend = self.backend

        def work() -> tuple[bytes, WriteResult, float]:
            body = gz if gz is not None else gzip.compress(raw, level)
            t0 = time.perf_counter()
            res = backend.post_gzip(body)
            return body, res, time.perf_counter() - t0

        body, res, latency = await asyncio.get_running_loop().run_in_executor(self._http, work)
        if res.ok:
            self._latency.append(latency)
        else:
            self._failures[res.kind] += 1
            log.debug("InfluxDB write failed: %s %s", res.kind, res.error)
        return body, res

    # -- rejected batches ----------------------------------------------------------

    async def _rejected(self, raw: bytes, res: WriteResult, origin: str) -> None:
        """A 4xx other than 429: isolate the bad lines by bisection, dead-letter them."""
        cfg = self.config
        lines = [ln for ln in raw.split(b"\n") if ln]
        log.error("InfluxDB refused a %s batch of %d lines (%s): %s", origin, len(lines),
                  res.kind, res.error)
        if res.status not in (400, 413, 422):
            # Auth, missing database...: no line is to blame; keep them all, with why.
            await self._dead_letter(lines, res, "whole batch")
            return
        budget = cfg.bisect_max_requests
        work: deque[tuple[list[bytes], WriteResult]] = deque([(lines, res)])
        while work:
            part, why = work.popleft()
            if len(part) == 1:
                await self._dead_letter(part, why, "isolated")
                continue
            if budget <= 0:
                await self._dead_letter(part, why, "not isolated: split budget spent")
                continue
            mid = len(part) // 2
            for half in (part[:mid], part[mid:]):
                budget -= 1
                body = b"\n".join(half) + b"\n"
                gz, r = await self._post(body, None)
                if r.ok:
                    self._written(len(half), len(gz))
                elif not r.retryable:
                    work.append((half, r))
                elif not await self._spool_append(gz, len(half)):
                    # The database went away mid-split and the spool is full: the
                    # dead-letter file is still durable, and says why.
                    await self._dead_letter(half, r, f"unsent during split ({why.error})")

    async def _dead_letter(self, lines: list[bytes], res: WriteResult, note: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        reason = " ".join(res.error.split())  # one comment line, whatever InfluxDB sent
        # Line-protocol comments: the file can be fixed up and re-imported as it is.
        entry = (f"# {stamp} {self.backend.target} {res.kind} ({note}, {len(lines)} lines): "
                 f"{reason}\n").encode() + b"\n".join(lines) + b"\n"
        await self._on_disk(self._append_dead_letter, entry)
        self._n["dead_letter_lines"] += len(lines)
        self._n["dead_letter_entries"] += 1
        log.error("InfluxDB rejected %d line(s) (%s, %s): %s; kept in %s", len(lines),
                  res.kind, note, reason, self.deadletter_path)

    def _append_dead_letter(self, entry: bytes) -> None:
        self.deadletter_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.deadletter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view):]
            if self.config.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)

    # -- draining the spool ----------------------------------------------------------

    async def _drain_loop(self) -> None:
        cfg = self.config
        spool = self._spool
        assert spool is not None
        attempt = 0
        while True:
            try:
                attempt = await self._drain_once(spool, attempt)
            except Exception as exc:
                # Nothing is committed, so the records are sent again on the next round.
                log.exception("InfluxDB sink: draining the spool failed")
                self._failures[f"internal_{type(exc).__name__}"] += 1
                await asyncio.sleep(cfg.retry_max_s)

    async def _drain_once(self, spool: Spool, attempt: int) -> int:
        """One round of the drainer; returns the retry attempt count for the next round."""
        cfg = self.config
        # Cleared before looking, so an append finishing meanwhile is not missed.
        self._spooled.clear()
        # Bounded like a live batch: by lines, and by compressed bytes (a quarter of the
        # raw bound: line protocol compresses at least that well).
        records = await self._on_disk(spool.peek, cfg.drain_max_records,
                                      cfg.batch_max_bytes // 4, cfg.batch_max_lines)
        if not records:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), 1.0)
            return attempt
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        gz = records[0].payload if len(records) == 1 else await self._rejoin(records)
        nlines = sum(r.nlines for r in records)
        _, res = await self._post(b"", gz)
        if res.retryable:
            # The drainer is the sink's probe while the database is down.
            self._mark_down(res)
            self._n["retries"] += 1
            await asyncio.sleep(self._retry_delay(attempt + 1, res))
            return attempt + 1
        if res.ok:
            self._written(nlines, len(gz))
            self._n["lines_drained"] += nlines
        else:
            await self._rejected(gzip.decompress(gz), res, "spooled")
        await self._on_disk(spool.commit, records)
        self._changed.set()  # space may have been freed for a blocked writer
        return 0

    # -- helpers -------------------------------------------------------------------

    async def _on_disk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._disk is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._disk, lambda: fn(*args, **kwargs))

    def stats(self) -> SinkStats:
        spool = self._spool
        lat = sorted(self._latency)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return SinkStats(
            api=self.backend.api,
            db_up=not self._db_down,
            lines_submitted=self._n["lines_submitted"],
            lines_written=self._n["lines_written"],
            batches_written=self._n["batches_written"],
            bytes_sent=self._n["bytes_sent"],
            retries=self._n["retries"],
            failures=dict(self._failures),
            write_latency_last_s=self._latency[-1] if self._latency else None,
            write_latency_p50_s=pct(0.5),
            write_latency_p99_s=pct(0.99),
            queue_bytes=self._queue_bytes,
            queue_bytes_peak=self._queue_peak,
            queue_bytes_max=self.config.max_queue_bytes,
            queue_chunks=len(self._queue),
            submit_blocked=self._n["submit_blocked"],
            submit_blocked_s=self._blocked_s,
            lines_spooled=self._n["lines_spooled"],
            lines_drained=self._n["lines_drained"],
            spool_bytes=spool.bytes if spool else 0,
            spool_bytes_peak=spool.peak_bytes if spool else 0,
            spool_bytes_max=self.config.spool_max_bytes,
            spool_segments=spool.segments if spool else 0,
            spool_pending_lines=spool.pending_lines if spool else 0,
            spool_full=spool.full if spool else False,
            spool_full_events=spool.full_events if spool else 0,
            spool_torn_records=spool.torn_records if spool else 0,
            spool_dropped_lines=spool.dropped_lines if spool else 0,
            dead_letter_lines=self._n["dead_letter_lines"],
            dead_letter_entries=self._n["dead_letter_entries"],
            lines_failed=self._n["lines_failed"],
        )
