"""A durable queue on disk: append-only, crash-safe, bounded segments of CRC-framed records.

Payloads (bytes, each with the number of lines it carries) are appended in order,
fdatasync'ed before ``append`` returns, read back oldest first with ``peek`` and removed
with ``commit`` once delivered; a segment file is deleted when all its records are. A
restart finds what was not yet delivered, from a cursor written after each commit (being
behind only re-delivers, never skips); a record torn by a crash is skipped, counted and its
bytes kept under ``torn/``. At the bound it refuses appends, or drops the oldest segment.
The InfluxDB sink spools its write payloads here while the database is away.

The on-disk format and the fsync policy: ``docs/spool-format.md``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from groundstation.storage.durable import (
    GOOD,
    Damage,
    ExclusiveLock,
    FileRegion,
    LockedError,
    RecordFraming,
    append_whole,
    atomic_write,
    fsync_dir,
    open_fd,
)

log = logging.getLogger("groundstation.spool")

__all__ = ["HEADER_SIZE", "MAGIC", "Spool", "SpoolRecord", "encode_record", "iter_segment"]

MAGIC = b"GSP1"
# magic | u32 payload length | u32 line count | u32 crc32 (of length, count and payload)
FRAMING = RecordFraming(MAGIC, extra_fields=1)
HEADER_SIZE = FRAMING.header_size
_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".spool"


def encode_record(payload: bytes, nlines: int) -> bytes:
    return FRAMING.encode(payload, nlines)


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
    damage: list[Damage] = []
    with open_fd(path) as fd:
        region = FileRegion(fd, 0, os.fstat(fd).st_size)
        # No resync: a restart never appends to an old segment, so bad bytes can only be
        # a torn last record, and nothing after them is trusted.
        for off, payload, (nlines,) in FRAMING.scan(region, 0, damage.append, resync=False):
            yield SpoolRecord(seq, off, off + HEADER_SIZE + len(payload), nlines, payload)
    if damage:
        yield damage[0].offset, damage[0].detail


def _seg_seq(path: Path) -> int:
    return int(path.name[len(_SEG_PREFIX):-len(_SEG_SUFFIX)])



@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes in the file
    valid_end: int  # end of the last good record (== size unless the tail is torn)
    pending_records: int
    pending_lines: int


class Spool:
    """Append-only, crash-safe, bounded queue of payloads. Thread-safe; blocking I/O.

    The owner calls it from one worker thread, so appends keep their order; the lock makes
    the stats readable from anywhere. ``name`` says whose spool it is in log messages.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int,
                 segment_bytes: int, fsync: bool = True,
                 on_full: Literal["block", "drop_oldest"] = "block",
                 name: str = "spool") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.on_full = on_full
        self.name = name
        self._lock = threading.Lock()
        # Two owners appending to one spool would interleave records and deliver each
        # other's data: the lock file makes the second one fail loudly instead.
        try:
            self._dir_lock = ExclusiveLock(self.directory / "lock")
        except LockedError as exc:
            raise RuntimeError(f"spool directory {self.directory} is in use by another "
                               f"process or sink: {exc}") from None
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
                    log.warning("%s cursor %s does not point at a record; re-sending "
                                "segment %s from its start", self.name, cursor, path.name)
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
            log.info("%s %s: %d segment(s), %d bytes, %d lines to send", self.name,
                     self.directory, len(self._segs), self.bytes, self.pending_lines)

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            seq, off = (self.directory / "cursor").read_text().split()
            return int(seq), int(off)
        except (OSError, ValueError):
            return None

    def _write_cursor(self) -> None:
        # Without fsync: a cursor behind after a crash only means re-sending, which is
        # idempotent; one fsync per commit would double the drain's disk writes.
        atomic_write(self.directory / "cursor", f"{self._head[0]} {self._head[1]}\n".encode(),
                     sync=False)

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
                append_whole(fd, seg.size, rec, sync=self.fsync)
            except OSError as exc:
                # Disk full or failing: the partial record was taken back out, so the
                # segment stays a clean run of records; report it as a full spool.
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
            log.error("%s %s is full (%s): appends are refused until there is room",
                      self.name, self.directory, why)
        return False

    def _open_segment(self) -> None:
        self._close_active()
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{_SEG_PREFIX}{seq:012d}{_SEG_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        if self.fsync:
            # The new name must survive power loss along with the data fsynced into it.
            try:
                fsync_dir(self.directory)
            except OSError:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
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
            log.error("%s full: dropped the oldest segment %s (%d lines never delivered)",
                      self.name, seg.path.name, seg.pending_lines)
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
        # chunk=0: exactly the header, then the payload (peek reads a few records at a time).
        region = FileRegion(self._read_fd[1], off, seg.valid_end, chunk=0)
        status, payload, extra, why = FRAMING.parse(region, off)
        if status != GOOD:
            return None, why
        return SpoolRecord(seg.seq, off, off + HEADER_SIZE + len(payload), extra[0],
                           payload), ""

    def _keep_torn(self, seg: _Segment, off: int, problem: str) -> None:
        # Keep the unreadable bytes for forensics rather than silently discarding them; with
        # fsync on, a torn last record's append never returned, so it was never
        # acknowledged (docs/spool-format.md).
        torn = self.directory / "torn"
        torn.mkdir(exist_ok=True)
        with open(seg.path, "rb") as f:
            f.seek(off)
            data = f.read()
        (torn / f"{seg.path.stem}-at-{off}.bin").write_bytes(data)
        self.torn_records += 1
        self.torn_bytes += len(data)
        log.error("%s: %s has an unreadable record at byte %d (%s): skipped the remaining "
                  "%d bytes of the segment (kept in %s)", self.name, seg.path.name, off,
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
            self._dir_lock.release()


