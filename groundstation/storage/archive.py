"""The raw frame archive: every received minor frame, as it arrived, in append-only files.

The ingest appends each accepted message's frames here (rejected messages go to the
quarantine, below, never here). Recorded passes are catalogued, replayed and exported from
these files, so the format is built for three things besides appending: reading back after
a crash, seeking to a time without scanning a long recording, and summarising a recording
(passes, gaps, frame counts) from a small index.

Layout
------

::

    <root>/live/<vehicle>/<stream>/00000001_19750717T160909.000000000Z.gsa   data
    <root>/live/<vehicle>/<stream>/00000001_19750717T160909.000000000Z.gsi   its index
    <root>/replay/<session>/<vehicle>/<stream>/...                           replay sessions
    <root>/definitions/<sha256>.yaml        the telemetry definitions the files were made with
    <root>/quarantine/<writer>/00000001_20250101T000000.000000000Z.gsq  rejected messages

Live data and each replay session have separate directory trees, so they can never mix.
A file name is an 8-digit file number, counting up per stream in the order files were
written, then the time (UTC, ns) of the file's first frame. Names therefore sort in
arrival order, which for a stream whose frame times never go back (every healthy stream)
is also time order. A new file is started when the frame time enters a new rotation
interval (default: the UTC hour), when the file would pass ``max_file_bytes`` (default
64 MiB), when the writer's definitions or frame period differ from the last file's, and
never inside a record.

Data file (``.gsa``), all integers little-endian
------------------------------------------------

File header::

    magic      8 bytes   89 47 53 41 0D 0A 1A 0A   ("\\x89GSA\\r\\n\\x1a\\n": catches text-mode
                                                   copies and truncation to 7 bits)
    version    u16       1
    flags      u16       0 (reserved)
    json_len   u32       length of the JSON metadata that follows
    json       json_len  UTF-8 JSON object: vehicle, stream, source (live, replay/<s>
                         or training/<d>), definition_sha256 (hex, "" if unknown),
                         frame_period_ns, first_t_ns, created_ns (writer's wall clock)
    crc32      u32       CRC-32 (zlib) of every header byte before it

Records follow the header back to back, one per received message::

    marker     4 bytes   D7 47 53 52 ("\\xd7GSR"): lets a reader find the next record
                         after a damaged one
    body_len   u32       bytes in the body (32 + n_frames * frame_bytes)
    crc32      u32       CRC-32 (zlib) of the 4 body_len bytes followed by the body
    body:
      seq          u64   sequence number of the first frame (seq + n_frames <= 2**63)
      t_ns         i64   spacecraft time of the first frame, ns since 1970 (UTC)
      received_ns  i64   ground receive time (wall clock), ns since 1970
      n_frames     u32   frames in this record (>= 1)
      frame_bytes  u32   bytes per frame (>= 1)
      frames       n_frames * frame_bytes bytes, the minor frames exactly as received

Frame i of a record has sequence number seq + i and time t_ns + i * frame_period_ns (the
header's period), the same rule the wire envelope uses, so replay reproduces the times the
live ingest computed.

Index file (``.gsi``)
---------------------

A sparse index of the data file in blocks of consecutive records. A block ends after
``index_every_records`` records (default 256) or ``index_every_bytes`` (default 1 MiB), and
whenever the next record does not carry on the block's frames: its first frame is not the
next one in sequence (seq = the block's end_seq) and in time (t = the block's last frame
time + the frame period), or it is more than ``block_gap_ns`` (default 1 s) later. So every
block is one *run* of consecutive frames (frame i has seq first_seq + i and time t_min +
i * period; n_frames = end_seq - first_seq): a repeated frame (a QoS 1 redelivery), older
frames (a recorder's playback), a dropout, however short, and every gap lie *between*
blocks. A catalogue of passes (acquisition to loss of signal) with exact counts of
distinct, repeated and missing frames is built from the index alone, and reading in time
order is a sort of the blocks. Header::

    magic 8 bytes "\\x89GSI\\r\\n\\x1a\\n", version u16 = 2, reserved u16,
    data_header_crc u32 (the data file header's crc32, tying the index to its data file)

then one 76-byte entry per block, appended when the block ends::

    offset u64, length u64          the block's byte range in the data file
    n_records u32, n_frames u32
    first_seq u64, end_seq u64      first frame's seq; last frame's seq + 1
    t_min i64, t_max i64            first frame's time; last frame's time
    recv_min i64, recv_max i64      receive times of the first and last record
    crc32 u32                       of the 72 bytes before it

Index version 1 (written before 2) has the same header and entries, but its blocks were
cut only where time went back (a record starting before the previous one) or paused: a
block may hold a dropout shorter than ``block_gap_ns`` and a message received twice in a
row. Readers still use version-1 indexes: an entry whose numbers fit one run (n_frames =
end_seq - first_seq and t_max - t_min = (n_frames - 1) * period, every healthy block) is
taken as one; any other is scanned and cut into runs (``ArchiveReader.runs``). (The one
case this gets wrong: a repeat and a dropout of exactly as many frames in one v1 block.)
A writer never appends to a file with a version-1 index: it starts a new file. Readers
from before version 2 reject a version-2 index and scan the data instead (slower, and
correct).

The index is only a hint. A reader uses the longest prefix of entries that have a good
CRC, are contiguous (each block starts where the previous one ended, the first right
after the header) and lie inside the data file; everything after that prefix (the
block being written, or a block whose entry was lost in a crash) is scanned record by
record. Seeking to a time therefore reads the file header, the index (76 bytes per block)
and only the blocks whose time range meets the wanted interval, plus that unindexed tail,
which is at most one block long in a healthy file.

Crashes and damage
------------------

Every record is checked (marker, length, CRC) when read. Bytes that do not form a good
record are reported as an ``ArchiveProblem`` and skipped: the reader searches forward for
the next marker that starts a good record and resumes there (kind ``corrupt``); if no good
record follows before the end of the file, the damaged bytes are a torn tail (kind
``torn``), what a crash in the middle of a write leaves. Problems are never fatal: the
reader returns every good record and lists what it skipped in ``ArchiveReader.problems``.
A file whose header is unreadable is reported (``bad_header``) and skipped; it holds no
record a writer ever finished.

When a writer opens a stream it checks the newest file. A torn tail is cut off (the
record was never completely written, so nothing that was kept is lost) and reported in
``ArchiveWriter.recovered``, index entries past the cut are dropped, the unindexed tail is
re-indexed, and appending continues in that file if the next record belongs to it. If
that unindexed part has damage *before* good records (kind ``corrupt``), the file is left
untouched and a new file is started. (The writer checks only what the index does not
cover, so reopening a healthy file reads at most one block; damage inside indexed
blocks is for readers to find and skip.)

Durability (the fsync policy)
-----------------------------

``append`` hands the whole record to the operating system in one ``write`` before it
returns, so a crash of the ingest process (even SIGKILL) loses nothing that ``append``
returned. A crash of the machine can lose what the OS had not yet put on disk: the writer
calls ``fsync`` (data file first, then index) when an append finds ``fsync_interval``
seconds (default 1) have passed since the last one, and on ``flush``, on rotation and on
``close``. ``fsync_interval=0`` syncs after every append; ``None`` leaves it to the OS
until ``flush``/``close``. With the default, a power failure loses at most about the last
second (plus any quiet time since the last append; call ``flush`` from a timer to bound
that too). Appends are small writes into the page cache (microseconds); an ``fsync`` can
take milliseconds on a busy disk, so a latency-sensitive caller runs the writer off its
event loop.

One writer per stream: a writer holds an exclusive ``flock`` on ``<stream dir>/.lock``
and a second writer on the same stream fails at once with ``ArchiveError``. Readers take
no lock; reading a file while it is written may report the record in flight as torn.

Quarantine (``.gsq``)
---------------------

``QuarantineWriter`` keeps messages the ingest rejected, with the topic, the reason code,
the human-readable detail and the payload (cut to ``max_payload_bytes``, default 64 KiB,
since rejected input can be arbitrarily large and hostile; the original length is kept).
Same file header (magic ``"\\x89GSQ\\r\\n\\x1a\\n"``, JSON: kind, writer, created_ns) and
record framing as the data files; the body is::

    received_ns i64, payload_len u32 (original), topic_len u16, reason_len u16,
    detail_len u32, then topic, reason, detail (UTF-8) and the stored payload bytes

Files rotate hourly by receive time and at ``max_file_bytes`` (16 MiB); the oldest files
are deleted when the quarantine passes ``max_total_bytes`` (1 GiB), so a flood of garbage
cannot fill the disk the archive needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import numpy as np
from numpy.typing import NDArray

from groundstation.core.topics import LIVE, Source, SourceKind

if TYPE_CHECKING:
    from groundstation.core.definitions import VehicleDefinition

__all__ = [
    "LIVE",
    "ArchiveError",
    "ArchiveFile",
    "ArchiveProblem",
    "ArchiveReader",
    "ArchiveWriter",
    "Block",
    "FileHeader",
    "FrameChunk",
    "QuarantineReader",
    "QuarantineWriter",
    "QuarantinedMessage",
    "ReaderStats",
    "Record",
    "StreamKey",
    "hash_definition",
]

log = logging.getLogger("groundstation.archive")

VERSION = 1  # data and quarantine files
# Index files: 1 cut blocks only where time went back or paused; 2 also wherever the next
# record does not carry on the previous one's frames (seq and time one frame on), so every
# version-2 block is one run of consecutive frames.
INDEX_VERSION = 2
HOUR_NS = 3600 * 10**9

DATA_MAGIC = b"\x89GSA\r\n\x1a\n"
INDEX_MAGIC = b"\x89GSI\r\n\x1a\n"
QUARANTINE_MAGIC = b"\x89GSQ\r\n\x1a\n"
RECORD_MARKER = b"\xd7GSR"
DATA_SUFFIX = ".gsa"
INDEX_SUFFIX = ".gsi"
QUARANTINE_SUFFIX = ".gsq"

# A record bigger than this cannot be real (the envelope allows 4 MiB payloads); a length
# field above it is damage, and refusing it stops a reader allocating gigabytes.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_MAX_HEADER_JSON = 64 * 1024
_INT63 = 2**63

_FILE_HEAD = struct.Struct("<8sHHI")  # magic, version, flags, json_len
_REC_HEAD = struct.Struct("<4sII")  # marker, body_len, crc32
_REC_BODY = struct.Struct("<QqqII")  # seq, t_ns, received_ns, n_frames, frame_bytes
_IDX_HEAD = struct.Struct("<8sHHI")  # magic, version, reserved, data header crc
_IDX_ENTRY = struct.Struct("<QQIIQQqqqqI")
_Q_BODY = struct.Struct("<qIHHI")  # received_ns, payload_len, topic_len, reason_len, detail_len
_U32 = struct.Struct("<I")

# Reads go through pread in pieces of this size (or one record, if larger): memory stays
# bounded however long the file, and a seek reads little more than the blocks it needs.
_READ_CHUNK = 1024 * 1024

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FILE_RE = re.compile(r"^(\d{8,})_(\d{8}T\d{6})\.(\d{9})Z\.(gsa|gsq)$")


class ArchiveError(RuntimeError):
    """The archive cannot be used as asked (bad name, locked stream, unwritable root...)."""


# -- names and paths ------------------------------------------------------------------------


def _check_name(kind: str, name: str) -> str:
    # Names become directory names: anything else could escape the archive root.
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ArchiveError(f"{kind} {name!r} is not a usable archive name (letters, digits, "
                           "'_', '.', '-'; not starting with '.' or '-'; at most 128)")
    return name


def _source_parts(source: str) -> tuple[str, ...]:
    try:
        parsed = Source.parse(source)
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    if parsed.name is not None:
        _check_name("replay session" if parsed.kind is SourceKind.REPLAY else "drill",
                    parsed.name)
    return parsed.levels


def stream_dir(root: str | os.PathLike[str], vehicle: str, stream: str,
               source: str = LIVE) -> Path:
    """The directory holding one stream's files."""
    return Path(root).joinpath(*_source_parts(source), _check_name("vehicle", vehicle),
                               _check_name("stream", stream))


def _stamp(t_ns: int) -> str:
    secs, ns = divmod(t_ns, 10**9)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs)) + f".{ns:09d}Z"


def _file_name(number: int, t_ns: int, suffix: str) -> str:
    return f"{number:08d}_{_stamp(t_ns)}{suffix}"


def _numbered_files(directory: Path, suffix: str) -> list[tuple[int, Path]]:
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for p in entries:
        m = _FILE_RE.match(p.name)
        if m and p.name.endswith(suffix) and p.is_file():
            found.append((int(m.group(1)), p))
    found.sort()
    return found


def hash_definition(text: str | bytes) -> str:
    """SHA-256 (hex) of a telemetry definition file's exact bytes."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


# -- small file helpers ----------------------------------------------------------------------


def _append_whole(fd: int, size: int, record: bytes) -> None:
    """Append a record to a file of `size` bytes, or leave the file as it was: a short write
    (disk full) would leave a torn record that later appends would bury mid-file, so it is
    cut off again before the error is reported."""
    try:
        _write_all(fd, record)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    # A new file's directory entry is only durable once the directory itself is synced.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode_header(magic: bytes, meta: dict[str, Any]) -> bytes:
    js = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head = _FILE_HEAD.pack(magic, VERSION, 0, len(js)) + js
    return head + _U32.pack(zlib.crc32(head))


def _record_crc(body_len: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(_U32.pack(body_len)))


def _frame_record(body: bytes) -> bytes:
    return _REC_HEAD.pack(RECORD_MARKER, len(body), _record_crc(len(body), body)) + body


class _Lock:
    """An exclusive, non-blocking flock on a file: one writer per stream, across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ArchiveError(f"another writer holds {path}; one writer per stream "
                                   "(per-stream state must stay in one process)") from None
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


# -- reading records -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveProblem:
    """Bytes a reader (or a recovering writer) skipped, and why.

    kind: ``torn`` (damaged bytes running to the end of the file: an interrupted write),
    ``corrupt`` (damaged bytes followed by good records), ``bad_header`` (file skipped),
    ``index`` (index entries ignored; the data was scanned instead, nothing lost).
    """

    path: Path
    offset: int
    length: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} at byte {self.offset} ({self.length} bytes): " \
               f"{self.detail}"


@dataclass
class ReaderStats:
    """What a reader has read so far; tests use it to prove a seek did not scan."""

    files_opened: int = 0
    bytes_read: int = 0  # every byte read from data, index and quarantine files
    index_bytes_read: int = 0  # the part of bytes_read that came from index files
    records: int = 0  # good records decoded
    repeats: int = 0  # frames read_frames left out: a time it had already given (duplicates)


class _Region:
    """Reads bytes [start, end) of an open file on demand, through a sliding buffer.

    Only moves forward; bytes before the last requested offset are dropped, so memory is
    bounded by one read chunk or one record.
    """

    def __init__(self, fd: int, start: int, end: int, stats: ReaderStats) -> None:
        self.fd = fd
        self.end = end
        self.base = start
        self.buf = bytearray()
        self.stats = stats

    def _load(self, off: int, n: int) -> None:
        """Make the buffer hold [off, off + n) (as far as the region goes)."""
        if off < self.base:
            raise AssertionError("archive region read went backwards")
        want_end = min(off + n, self.end)
        if want_end <= self.base + len(self.buf):
            return  # already buffered: the common case, one record after another
        # About to read: first drop what lies before off, so memory stays bounded.
        drop = min(off - self.base, len(self.buf))
        del self.buf[:drop]  # cheap: CPython trims a bytearray's front in place
        self.base += drop
        if not self.buf:  # everything buffered lay before off
            self.base = off
        have_end = self.base + len(self.buf)
        size = max(want_end - have_end, min(_READ_CHUNK, self.end - have_end))
        data = os.pread(self.fd, size, have_end)
        self.stats.bytes_read += len(data)
        self.buf += data
        if len(data) < size:  # the file shrank under us: what is there is all there is
            self.end = have_end + len(data)

    def get(self, off: int, n: int) -> bytes:
        """Up to n bytes at off (fewer where the region ends)."""
        self._load(off, n)
        i = off - self.base
        return bytes(memoryview(self.buf)[i:i + n])

    def find(self, pattern: bytes, off: int) -> int:
        """Absolute offset of the next pattern at or after off, or -1 before the region end."""
        while off < self.end:
            self._load(off, _READ_CHUNK)
            i = self.buf.find(pattern, off - self.base)
            if i >= 0 and self.base + i + len(pattern) <= self.end:
                return self.base + i
            have_end = self.base + len(self.buf)
            if have_end >= self.end:
                return -1
            off = max(off + 1, have_end - len(pattern) + 1)
        return -1


_OK, _SHORT, _BAD = 0, 1, 2


def _try_record(region: _Region, pos: int, min_body: int,
                check: Callable[[bytes], str | None]) -> tuple[int, bytes, str]:
    """Parse the record at pos: (_OK, body, "") or (_SHORT|_BAD, b"", why)."""
    # The hot path of every read: unpack straight from the region's buffer and copy the
    # body once. Loading from pos (not from the body's start) keeps the record's first
    # byte buffered, where a resync after a bad record starts searching.
    hsize = _REC_HEAD.size
    region._load(pos, hsize)
    i = pos - region.base
    avail = len(region.buf) - i
    if avail < hsize:
        return _SHORT, b"", f"the file ends {avail} bytes into a record header"
    marker, body_len, crc = _REC_HEAD.unpack_from(region.buf, i)
    if marker != RECORD_MARKER:
        return _BAD, b"", "no record marker"
    if not min_body <= body_len <= MAX_RECORD_BYTES:
        return _BAD, b"", f"impossible record length {body_len}"
    if avail < hsize + body_len:
        region._load(pos, hsize + body_len)
        i = pos - region.base
        avail = len(region.buf) - i
        if avail < hsize + body_len:
            return _SHORT, b"", (f"the file ends {avail - hsize} bytes into a "
                                 f"{body_len}-byte record")
    body = bytes(memoryview(region.buf)[i + hsize:i + hsize + body_len])
    if _record_crc(body_len, body) != crc:
        return _BAD, b"", "CRC mismatch"
    why = check(body)
    if why:
        return _BAD, b"", why
    return _OK, body, ""


def _scan(region: _Region, path: Path, start: int, min_body: int,
          check: Callable[[bytes], str | None],
          report: Callable[[ArchiveProblem], None], at_eof: bool) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, body) of each good record in the region; report and skip damage."""
    pos = start
    while pos < region.end:
        status, body, why = _try_record(region, pos, min_body, check)
        if status == _OK:
            yield pos, body
            pos += _REC_HEAD.size + len(body)
            continue
        # Resynchronise: the next marker that starts a good record. The CRC makes a
        # marker that merely occurs inside frame data (1 in 2**32 per place) harmless.
        cand = pos + 1
        while True:
            cand = region.find(RECORD_MARKER, cand)
            if cand < 0 or _try_record(region, cand, min_body, check)[0] == _OK:
                break
            cand += 1
        if cand < 0:
            if at_eof:
                report(ArchiveProblem(path, pos, region.end - pos, "torn", why))
            else:
                report(ArchiveProblem(path, pos, region.end - pos, "corrupt",
                                      f"{why} (the damage runs to the end of an index block)"))
            return
        report(ArchiveProblem(path, pos, cand - pos, "corrupt",
                              f"{why}; resumed at the next good record"))
        pos = cand


def _check_frames_body(body: bytes) -> str | None:
    seq, t_ns, _recv, n, width = _REC_BODY.unpack_from(body, 0)
    if n < 1 or width < 1 or _REC_BODY.size + n * width != len(body):
        return f"record claims {n} frames of {width} bytes in a {len(body)}-byte body"
    if seq > _INT63 - n or t_ns < 0:
        return "record has an impossible seq or time"
    return None


def _check_quarantine_body(body: bytes) -> str | None:
    _recv, _plen, tlen, rlen, dlen = _Q_BODY.unpack_from(body, 0)
    if _Q_BODY.size + tlen + rlen + dlen > len(body):
        return "quarantine record's text fields run past its end"
    return None


# -- public read types -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamKey:
    source: str  # the source's text: live, replay/<session> or training/<drill>
    vehicle: str
    stream: str


@dataclass(frozen=True)
class FileHeader:
    vehicle: str
    stream: str
    source: str
    definition_sha256: str
    frame_period_ns: int
    first_t_ns: int
    created_ns: int
    header_len: int
    crc: int


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    number: int
    header: FileHeader
    size: int

    @property
    def index_path(self) -> Path:
        return self.path.with_suffix(INDEX_SUFFIX)


@dataclass(frozen=True)
class Block:
    """A run of consecutive records in time order; the unit of the index and of seeking."""

    path: Path
    offset: int
    length: int
    n_records: int
    n_frames: int
    first_seq: int
    end_seq: int  # last frame's seq + 1
    t_min: int  # first frame's time
    t_max: int  # last frame's time
    recv_min: int
    recv_max: int
    indexed: bool  # False: summarised by scanning (the tail the index does not cover yet)
    # True: known to be one run of consecutive frames (frame i: first_seq + i, at t_min +
    # i * period), as every block of a version-2 index or of a scan is; False: a version-1
    # index entry, which may hold repeats and holes (see ArchiveReader.runs).
    run: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length

    def looks_like_run(self, period_ns: int) -> bool:
        """Do the summary's numbers fit one run? (Always, for a run.)"""
        n = self.n_frames
        return n == self.end_seq - self.first_seq and self.t_max - self.t_min == (n - 1) * period_ns


class Record(NamedTuple):
    seq: int
    t_ns: int
    frames: NDArray[np.uint8]  # (n_frames, frame_bytes), read-only
    received_ns: int


class FrameChunk(NamedTuple):
    """Consecutive frames of one stream, each with its own time, seq and receive time."""

    frames: NDArray[np.uint8]  # (n, frame_bytes)
    times_ns: NDArray[np.int64]
    seq: NDArray[np.int64]
    received_ns: NDArray[np.int64]


def _decode_record(body: bytes) -> Record:
    seq, t_ns, recv, n, width = _REC_BODY.unpack_from(body, 0)
    frames = np.frombuffer(body, np.uint8, n * width, _REC_BODY.size).reshape(n, width)
    return Record(seq, t_ns, frames, recv)


def _read_header(fd: int, path: Path, magic: bytes, stats: ReaderStats) -> tuple[dict[str, Any],
                                                                                 int, int]:
    """(metadata, header_len, crc) of a data or quarantine file; ValueError says what is wrong."""
    head = os.pread(fd, 512, 0)  # headers are ~250 bytes: one small read usually does
    stats.bytes_read += len(head)
    if len(head) < _FILE_HEAD.size:
        raise ValueError(f"only {len(head)} bytes: the header was never completely written")
    got_magic, version, _flags, js_len = _FILE_HEAD.unpack_from(head, 0)
    if got_magic != magic:
        raise ValueError("not an archive file of this kind (bad magic)")
    if version != VERSION:
        raise ValueError(f"format version {version}; this reader knows {VERSION}")
    if js_len > _MAX_HEADER_JSON:
        raise ValueError(f"impossible header length {js_len}")
    total = _FILE_HEAD.size + js_len + 4
    if len(head) < total:
        more = os.pread(fd, total - len(head), len(head))
        stats.bytes_read += len(more)
        head += more
    if len(head) < total:
        raise ValueError("the header was never completely written")
    (crc,) = _U32.unpack_from(head, total - 4)
    if zlib.crc32(head[:total - 4]) != crc:
        raise ValueError("header CRC mismatch")
    try:
        meta = json.loads(head[_FILE_HEAD.size:total - 4])
    except ValueError as exc:
        raise ValueError(f"header metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError("header metadata is not a JSON object")
    return meta, total, crc


def _data_header(meta: dict[str, Any], header_len: int, crc: int) -> FileHeader:
    try:
        return FileHeader(
            vehicle=str(meta["vehicle"]), stream=str(meta["stream"]),
            source=str(meta["source"]), definition_sha256=str(meta["definition_sha256"]),
            frame_period_ns=int(meta["frame_period_ns"]), first_t_ns=int(meta["first_t_ns"]),
            created_ns=int(meta["created_ns"]), header_len=header_len, crc=crc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"header metadata lacks or garbles {exc}") from None


def _block_from_entry(path: Path, raw: bytes, pos: int, run: bool) -> Block | None:
    fields = _IDX_ENTRY.unpack_from(raw, pos)
    if zlib.crc32(raw[pos:pos + _IDX_ENTRY.size - 4]) != fields[-1]:
        return None
    return Block(path, *fields[:-1], indexed=True, run=run)


class _BlockAcc:
    """Accumulates a block's summary as records are appended (or rescanned)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.length = 0
        self.n_records = 0
        self.n_frames = 0
        self.first_seq = self.end_seq = 0
        self.t_min = self.t_max = self.last_t = 0
        self.recv_min = self.recv_max = 0

    def breaks_before(self, seq: int, t_ns: int, gap_ns: int, period: int) -> bool:
        """Must a record (seq, t_ns) start a new block? Yes unless it carries on this
        block's frames: its first frame is the next one in sequence and in time (so a
        repeat, a dump of older frames, a dropout or a gap always starts a new block)."""
        return self.n_records > 0 and (seq != self.end_seq or t_ns != self.t_max + period
                                       or t_ns - self.t_max > gap_ns)

    def add(self, size: int, seq: int, t_ns: int, n: int, period: int, recv: int) -> None:
        last_t = t_ns + (n - 1) * period
        if self.n_records == 0:
            self.first_seq, self.t_min, self.recv_min = seq, t_ns, recv
        self.n_records += 1
        self.n_frames += n
        self.length += size
        self.end_seq = seq + n
        self.last_t = t_ns
        # The block's latest frame, not its last record's: a short record may follow a
        # longer one that started at the same time.
        self.t_max = last_t if self.n_records == 1 else max(self.t_max, last_t)
        self.recv_max = recv

    def block(self, path: Path, indexed: bool) -> Block:
        return Block(path, self.offset, self.length, self.n_records, self.n_frames,
                     self.first_seq, self.end_seq, self.t_min, self.t_max, self.recv_min,
                     self.recv_max, indexed, run=True)

    def entry(self) -> bytes:
        raw = _IDX_ENTRY.pack(self.offset, self.length, self.n_records, self.n_frames,
                              self.first_seq, self.end_seq, self.t_min, self.t_max,
                              self.recv_min, self.recv_max, 0)[:-4]
        return raw + _U32.pack(zlib.crc32(raw))


def _load_index(data: ArchiveFile, stats: ReaderStats,
                report: Callable[[ArchiveProblem], None]) -> list[Block]:
    """The trustworthy prefix of a data file's index (see the module docstring)."""
    idx_path = data.index_path
    try:
        raw = idx_path.read_bytes()
    except FileNotFoundError:
        if data.size > data.header.header_len:
            report(ArchiveProblem(idx_path, 0, 0, "index", "no index file; scanning the data"))
        return []
    stats.bytes_read += len(raw)
    stats.index_bytes_read += len(raw)
    if len(raw) < _IDX_HEAD.size:
        if data.size > data.header.header_len:
            report(ArchiveProblem(idx_path, 0, len(raw), "index", "index header incomplete"))
        return []
    magic, version, _res, data_crc = _IDX_HEAD.unpack_from(raw, 0)
    if magic != INDEX_MAGIC or data_crc != data.header.crc:
        report(ArchiveProblem(idx_path, 0, len(raw), "index",
                              "index header does not belong to this data file"))
        return []
    if version not in (1, INDEX_VERSION):
        report(ArchiveProblem(idx_path, 0, len(raw), "index",
                              f"index format version {version}; this reader knows 1 and "
                              f"{INDEX_VERSION}: scanning the data"))
        return []
    blocks: list[Block] = []
    expect = data.header.header_len
    pos = _IDX_HEAD.size
    while pos + _IDX_ENTRY.size <= len(raw):
        b = _block_from_entry(data.path, raw, pos, run=version >= 2)
        why = ""
        if b is None:
            why = "index entry CRC mismatch"
        elif b.offset != expect or b.length <= 0 or b.n_records <= 0:
            why = "index entry does not follow the previous block"
        elif b.end > data.size:
            why = "index entry points past the end of the data file (data cut short?)"
        if why:
            report(ArchiveProblem(idx_path, pos, len(raw) - pos, "index",
                                  f"{why}; scanning the data from byte {expect}"))
            return blocks
        assert b is not None
        blocks.append(b)
        expect = b.end
        pos += _IDX_ENTRY.size
    # A partial entry at the end is an index write cut short: the data scan covers it.
    return blocks


def _frames_between(t0: int, n: int, period: int, a: int, b: int) -> int:
    """How many of the frames t0 + i * period (0 <= i < n) lie in [a, b]."""
    if b < a:
        return 0
    if period <= 0:
        return n if a <= t0 <= b else 0
    first = max(0, -((t0 - a) // period))
    last = min(n - 1, (b - t0) // period)
    return max(0, last - first + 1)


class _Chunker:
    """Gathers frames of record bodies into FrameChunks of at most ``size`` frames.

    Per-record work stays in plain Python ints and byte slices (a one-frame record would
    otherwise pay numpy's per-call overhead several times); arrays are built once per chunk.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.pieces: list[memoryview] = []
        self.runs: list[tuple[int, int, int, int, int]] = []  # count, t0, seq0, recv, period
        self.count = 0
        self.width = -1
        self.ready: list[FrameChunk] = []

    def add(self, body: bytes, seq: int, t_ns: int, recv: int, width: int, period: int,
            lo: int, hi: int) -> None:
        """Frames lo..hi-1 of a record."""
        if width != self.width and self.count:
            self._emit()
        self.width = width
        view = memoryview(body)
        hsize = _REC_BODY.size
        while lo < hi:
            take = min(hi - lo, self.size - self.count)
            self.pieces.append(view[hsize + lo * width:hsize + (lo + take) * width])
            self.runs.append((take, t_ns + lo * period, seq + lo, recv, period))
            self.count += take
            lo += take
            if self.count >= self.size:
                self._emit()

    def finish(self) -> None:
        if self.count:
            self._emit()

    def take(self) -> list[FrameChunk]:
        ready, self.ready = self.ready, []
        return ready

    def _emit(self) -> None:
        count, runs = self.count, self.runs
        frames = np.frombuffer(b"".join(self.pieces), np.uint8).reshape(count, self.width)
        counts = np.array([r[0] for r in runs], dtype=np.int64)
        firsts = np.repeat(np.cumsum(counts) - counts, counts)
        within = np.arange(count, dtype=np.int64) - firsts
        col = np.array([r[1:] for r in runs], dtype=np.int64).reshape(-1, 4)
        t0, seq0, recv, period = (np.repeat(col[:, i], counts) for i in range(4))
        self.ready.append(FrameChunk(frames, t0 + within * period, seq0 + within, recv))
        self.pieces, self.runs, self.count = [], [], 0


# -- the reader ------------------------------------------------------------------------------


class ArchiveReader:
    """Reads an archive: lists streams and files, seeks by time, reports damage.

    Reading never fails on damage: ``problems`` collects everything skipped (each problem
    once, in the order found), ``stats`` counts what was read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.problems: list[ArchiveProblem] = []
        self._seen: set[tuple[Path, int, str]] = set()
        self.stats = ReaderStats()

    def _report(self, problem: ArchiveProblem) -> None:
        key = (problem.path, problem.offset, problem.kind)
        if key in self._seen:
            return
        self._seen.add(key)
        self.problems.append(problem)
        if problem.kind != "index":
            log.warning("archive: %s", problem)

    @property
    def torn(self) -> list[ArchiveProblem]:
        """The damage found so far that cost records (torn tails and corrupt stretches)."""
        return [p for p in self.problems if p.kind in ("torn", "corrupt", "bad_header")]

    # -- listing --

    def streams(self) -> list[StreamKey]:
        """Every stream with at least one data file: live first, then replay sessions, then
        drills."""
        keys: list[StreamKey] = []
        bases: list[tuple[str, Path]] = [(LIVE, self.root / LIVE)]
        for kind in (SourceKind.REPLAY, SourceKind.TRAINING):
            folder = self.root / kind.value
            if folder.is_dir():
                bases += [(str(Source(kind, d.name)), d) for d in sorted(folder.iterdir())
                          if d.is_dir() and _NAME_RE.fullmatch(d.name)]
        for source, base in bases:
            if not base.is_dir():
                continue
            for vdir in sorted(base.iterdir()):
                if not vdir.is_dir() or not _NAME_RE.fullmatch(vdir.name):
                    continue
                for sdir in sorted(vdir.iterdir()):
                    if sdir.is_dir() and _numbered_files(sdir, DATA_SUFFIX):
                        keys.append(StreamKey(source, vdir.name, sdir.name))
        return keys

    def files(self, vehicle: str, stream: str, source: str = LIVE) -> list[ArchiveFile]:
        """A stream's data files in the order they were written (bad headers reported)."""
        out = []
        for number, path in _numbered_files(stream_dir(self.root, vehicle, stream, source),
                                            DATA_SUFFIX):
            info = self._open_info(path, number, (vehicle, stream, source))
            if info is not None:
                out.append(info)
        return out

    def _open_info(self, path: Path, number: int,
                   expect: tuple[str, str, str]) -> ArchiveFile | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            self._report(ArchiveProblem(path, 0, 0, "bad_header", f"cannot open: {exc}"))
            return None
        try:
            self.stats.files_opened += 1
            size = os.fstat(fd).st_size
            meta, hlen, crc = _read_header(fd, path, DATA_MAGIC, self.stats)
            header = _data_header(meta, hlen, crc)
        except ValueError as exc:
            self._report(ArchiveProblem(path, 0, path.stat().st_size, "bad_header", str(exc)))
            return None
        finally:
            os.close(fd)
        got = (header.vehicle, header.stream, header.source)
        if got != expect:
            # A file copied into the wrong directory must not leak into another stream
            # (above all: replay data into live).
            self._report(ArchiveProblem(path, 0, size, "bad_header",
                                        f"file is for {got}, found under {expect}"))
            return None
        return ArchiveFile(path, number, header, size)

    def definition_text(self, sha256: str) -> str | None:
        """The telemetry definition file a stream was recorded with, if the writer stored it."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return None
        try:
            return (self.root / "definitions" / f"{sha256}.yaml").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    # -- blocks (index level) --

    def _tail_blocks(self, data: ArchiveFile, fd: int, start: int,
                     gap_ns: int) -> Iterator[Block]:
        """Scan the unindexed tail, cutting it into blocks by the writer's rules (runs)."""
        return self._scan_runs(data, fd, start, data.size, gap_ns, at_eof=True)

    def blocks(self, vehicle: str, stream: str, source: str = LIVE, *,
               gap_ns: int = 10**9) -> Iterator[Block]:
        """Every block of a stream, in order: from the index, plus the scanned tail.

        Enough for a catalogue of passes without reading the frames: gaps longer than the
        writer's ``block_gap_ns`` fall between blocks (``gap_ns`` splits the unindexed
        tail the same way).
        """
        for data in self.files(vehicle, stream, source):
            with _open_fd(data.path) as fd:
                indexed = _load_index(data, self.stats, self._report)
                yield from indexed
                start = indexed[-1].end if indexed else data.header.header_len
                if start < data.size:
                    yield from self._tail_blocks(data, fd, start, gap_ns)

    def runs(self, vehicle: str, stream: str, source: str = LIVE, *,
             start_ns: int | None = None, end_ns: int | None = None) -> Iterator[Block]:
        """Every block of a stream as runs of consecutive frames (``Block.run`` true), in
        the order they were written.

        A version-2 index and the scanned tail give runs as they are. A version-1 index
        entry is taken as it is when its numbers fit one run (a healthy block); one that
        does not (it holds a repeat, a dropout or both) is scanned and cut into runs: exact,
        at the cost of reading those blocks' records. With start_ns/end_ns, only the runs
        with a frame time in [start_ns, end_ns) (others are not scanned).
        """
        for data in self.files(vehicle, stream, source):
            period = data.header.frame_period_ns
            with _open_fd(data.path) as fd:
                indexed = _load_index(data, self.stats, self._report)
                for b in indexed:
                    if (start_ns is not None and b.t_max < start_ns) \
                            or (end_ns is not None and b.t_min >= end_ns):
                        continue
                    if b.run:
                        yield b
                    elif b.looks_like_run(period):
                        yield dataclasses.replace(b, run=True)
                    else:
                        yield from self._scan_runs(data, fd, b.offset, b.end, 10**9,
                                                   at_eof=False)
                start = indexed[-1].end if indexed else data.header.header_len
                if start < data.size:
                    for b in self._tail_blocks(data, fd, start, 10**9):
                        if (start_ns is None or b.t_max >= start_ns) \
                                and (end_ns is None or b.t_min < end_ns):
                            yield b

    def _scan_runs(self, data: ArchiveFile, fd: int, start: int, end: int, gap_ns: int,
                   at_eof: bool) -> Iterator[Block]:
        region = _Region(fd, start, end, self.stats)
        period = data.header.frame_period_ns
        acc: _BlockAcc | None = None
        for off, body in _scan(region, data.path, start, _REC_BODY.size, _check_frames_body,
                               self._report, at_eof=at_eof):
            seq, t_ns, recv, n, _w = _REC_BODY.unpack_from(body, 0)
            if acc is not None and (acc.breaks_before(seq, t_ns, gap_ns, period)
                                    or off != acc.offset + acc.length):
                yield acc.block(data.path, indexed=False)
                acc = None
            if acc is None:
                acc = _BlockAcc(off)
            acc.add(_REC_HEAD.size + len(body), seq, t_ns, n, period, recv)
        if acc is not None:
            yield acc.block(data.path, indexed=False)

    # -- records --

    def _file_bodies(self, data: ArchiveFile, start_ns: int | None,
                     end_ns: int | None) -> Iterator[bytes]:
        """Bodies of the file's good records with a frame in [start_ns, end_ns)."""
        def wanted(t_min: int, t_max: int) -> bool:
            return (start_ns is None or t_max >= start_ns) and (end_ns is None or t_min < end_ns)

        period = data.header.frame_period_ns
        unpack = _REC_BODY.unpack_from
        with _open_fd(data.path) as fd:
            indexed = _load_index(data, self.stats, self._report)
            # Merge adjacent wanted blocks into one read: fewer syscalls, same bytes.
            runs: list[list[int]] = []
            for b in indexed:
                if not wanted(b.t_min, b.t_max):
                    continue
                if runs and runs[-1][1] == b.offset:
                    runs[-1][1] = b.end
                else:
                    runs.append([b.offset, b.end])
            tail = indexed[-1].end if indexed else data.header.header_len
            if tail < data.size:
                runs.append([tail, data.size])
            for start, end in runs:
                region = _Region(fd, start, end, self.stats)
                for _off, body in _scan(region, data.path, start, _REC_BODY.size,
                                        _check_frames_body, self._report,
                                        at_eof=end == data.size):
                    self.stats.records += 1
                    _seq, t_ns, _recv, n, _w = unpack(body, 0)
                    if wanted(t_ns, t_ns + (n - 1) * period):
                        yield body

    def _file_records(self, data: ArchiveFile, start_ns: int | None,
                      end_ns: int | None) -> Iterator[Record]:
        for body in self._file_bodies(data, start_ns, end_ns):
            yield _decode_record(body)

    def iter_records(self, vehicle: str, stream: str, source: str = LIVE,
                     start_ns: int | None = None, end_ns: int | None = None) -> Iterator[Record]:
        """Records (seq, t_ns, frames, received_ns) in the order they were written.

        With start_ns/end_ns, only records with a frame in [start_ns, end_ns); whole
        records, so the first and last may carry frames outside it (read_frames trims).
        """
        for data in self.files(vehicle, stream, source):
            yield from self._file_records(data, start_ns, end_ns)

    def read_frames(self, vehicle: str, stream: str, source: str = LIVE,
                    start_ns: int | None = None, end_ns: int | None = None, *,
                    chunk_frames: int = 65536, as_written: bool = False) -> Iterator[FrameChunk]:
        """Frames with start_ns <= time < end_ns, in chunks of at most chunk_frames.

        By default each frame once, in time order: a frame archived twice (a QoS 1
        redelivery) is given once, and frames archived late (a recorder's playback) in
        their place in time. A frame whose time is at or before one already given is left
        out and counted in ``stats.repeats`` (with the archive's frames on their period's
        grid, exactly the copies of a frame already given). The order comes from the
        index (runs sorted by time), so it costs no more reading than the arrival order.
        ``as_written=True`` gives every archived frame in the order written, repeats and
        all.

        Memory stays bounded by one chunk plus one read buffer however long the recording
        (and the window's index entries). A chunk never mixes frame lengths (a definition
        change starts a new chunk).
        """
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be at least 1")
        out = _Chunker(chunk_frames)
        unpack = _REC_BODY.unpack_from
        if as_written:
            for data in self.files(vehicle, stream, source):
                period = data.header.frame_period_ns
                for body in self._file_bodies(data, start_ns, end_ns):
                    seq, t_ns, recv, n, w = unpack(body, 0)
                    lo, hi = 0, n
                    if start_ns is not None and t_ns < start_ns:
                        lo = n if period == 0 else min(n, -((t_ns - start_ns) // period))
                    if end_ns is not None and t_ns + (n - 1) * period >= end_ns:
                        hi = 0 if period == 0 else max(0, min(n, -((t_ns - end_ns) // period)))
                    out.add(body, seq, t_ns, recv, w, period, lo, hi)
                    if out.ready:
                        yield from out.take()
        else:
            yield from self._frames_in_time_order(vehicle, stream, source, start_ns, end_ns,
                                                  out)
        out.finish()
        yield from out.take()

    def _frames_in_time_order(self, vehicle: str, stream: str, source: str,
                              start_ns: int | None, end_ns: int | None,
                              out: _Chunker) -> Iterator[FrameChunk]:
        """The frames to give (see read_frames), in time order, through ``out``.

        The runs in the window, sorted by first frame time, are swept once: of each run
        only the frames after the latest time already given are read. Runs being runs of
        consecutive frames, what is left of each is one stretch, and the stretches follow
        each other in time.
        """
        files = {f.path: f for f in self.files(vehicle, stream, source)}
        runs = [(b.t_min, -b.t_max, i, b) for i, b in enumerate(
            self.runs(vehicle, stream, source, start_ns=start_ns, end_ns=end_ns))
            if b.path in files]
        runs.sort(key=lambda r: r[:3])
        last = end_ns - 1 if end_ns is not None else None
        given: int | None = start_ns - 1 if start_ns is not None else None
        jobs: list[tuple[Path, int, int, int, int]] = []  # path, start, end, t from, t to
        for _t, _m, _i, b in runs:
            period = files[b.path].header.frame_period_ns
            hi_t = b.t_max if last is None else min(b.t_max, last)
            in_window = _frames_between(b.t_min, b.n_frames, period,
                                        b.t_min if start_ns is None else start_ns, hi_t)
            lo_t = b.t_min if given is None else max(b.t_min, given + 1)
            take = _frames_between(b.t_min, b.n_frames, period, lo_t, hi_t)
            self.stats.repeats += in_window - take
            if take:
                jobs.append((b.path, b.offset, b.end, lo_t, hi_t))
                k = 0 if period == 0 else min(b.n_frames - 1, (hi_t - b.t_min) // period)
                given = b.t_min + k * period
        # Read: a region per stretch of adjacent blocks (one read buffer for a healthy
        # stream's consecutive blocks), a few files open at a time.
        fds: dict[Path, int] = {}
        unpack = _REC_BODY.unpack_from
        try:
            region: _Region | None = None
            for i, (path, off, end, lo_t, hi_t) in enumerate(jobs):
                data = files[path]
                period = data.header.frame_period_ns
                fd = fds.get(path)
                if fd is None:
                    if len(fds) >= 8:
                        os.close(fds.pop(next(iter(fds))))
                    fd = fds[path] = os.open(path, os.O_RDONLY)
                    region = None
                follows = i > 0 and jobs[i - 1][0] == path and jobs[i - 1][2] == off
                if region is None or not follows or region.base > off:
                    stop = end
                    for p2, o2, e2, _a, _b in jobs[i + 1:]:
                        if p2 != path or o2 != stop:
                            break
                        stop = e2
                    region = _Region(fd, off, stop, self.stats)
                for roff, body in _scan(region, path, off, _REC_BODY.size, _check_frames_body,
                                        self._report, at_eof=region.end >= data.size):
                    if roff >= end:
                        break
                    self.stats.records += 1
                    seq, t_ns, recv, n, w = unpack(body, 0)
                    if lo_t <= t_ns and t_ns + (n - 1) * period <= hi_t:
                        lo, hi = 0, n  # the usual case: the whole record
                    elif period == 0:
                        lo, hi = (0, n) if lo_t <= t_ns <= hi_t else (0, 0)
                    else:
                        lo = max(0, -((t_ns - lo_t) // period))
                        hi = min(n, (hi_t - t_ns) // period + 1)
                    if lo < hi:
                        out.add(body, seq, t_ns, recv, w, period, lo, hi)
                        if out.ready:
                            yield from out.take()
        finally:
            for fd in fds.values():
                os.close(fd)

    def verify(self, vehicle: str, stream: str, source: str = LIVE) -> list[ArchiveProblem]:
        """Read every record of a stream; return the problems found in it."""
        before = len(self.problems)
        for _ in self.iter_records(vehicle, stream, source):
            pass
        return self.problems[before:]


@contextlib.contextmanager
def _open_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


# -- the writer ------------------------------------------------------------------------------


@dataclass
class _OpenFile:
    path: Path
    number: int
    first_t_ns: int
    header_len: int
    size: int
    fd: int
    idx_fd: int


class _LockedWriter:
    """What the archive's writers share: an exclusive lock held while the writer is open,
    released by close() (or leaving a with block) after the file is closed."""

    _lock: _Lock

    def _close_file(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the file (indexed and synced) and release the lock; idempotent."""
        if self._lock.fd < 0:
            return
        try:
            self._close_file()
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArchiveWriter(_LockedWriter):
    """Appends one stream's received frames (see the module docstring for the format).

    Not thread-safe: one writer per (source, vehicle, stream), used from one thread at a
    time; a second writer on the same stream, in any process, raises ArchiveError.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        vehicle: str,
        stream: str,
        source: str = LIVE,
        *,
        frame_period_ns: int,
        definition_text: str | bytes | None = None,
        definition_sha256: str = "",
        rotate_ns: int = HOUR_NS,
        max_file_bytes: int = 64 * 1024 * 1024,
        index_every_records: int = 256,
        index_every_bytes: int = 1024 * 1024,
        block_gap_ns: int = 10**9,
        fsync_interval: float | None = 1.0,
    ) -> None:
        if frame_period_ns < 0 or rotate_ns <= 0 or max_file_bytes <= 0:
            raise ValueError("frame_period_ns must be >= 0; rotate_ns, max_file_bytes > 0")
        if index_every_records < 1 or index_every_bytes < 1 or block_gap_ns < 0:
            raise ValueError("index_every_* must be >= 1 and block_gap_ns >= 0")
        self.root = Path(root)
        self.vehicle = vehicle
        self.stream = stream
        self.source = source
        self.dir = stream_dir(root, vehicle, stream, source)
        self.frame_period_ns = frame_period_ns
        self.rotate_ns = rotate_ns
        self.max_file_bytes = max_file_bytes
        self.index_every_records = index_every_records
        self.index_every_bytes = index_every_bytes
        self.block_gap_ns = block_gap_ns
        self.fsync_interval = fsync_interval
        if definition_text is not None:
            definition_sha256 = hash_definition(definition_text)
            self._store_definition(definition_sha256, definition_text)
        if definition_sha256 and not re.fullmatch(r"[0-9a-f]{64}", definition_sha256):
            raise ValueError("definition_sha256 must be 64 lower-case hex digits")
        self.definition_sha256 = definition_sha256
        self.recovered: list[ArchiveProblem] = []
        self.records_written = 0
        self.frames_written = 0
        self._file: _OpenFile | None = None
        self._block: _BlockAcc | None = None
        self._last_number = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.dir / ".lock")
        try:
            self._recover()
        except BaseException:
            self._lock.release()
            raise

    @classmethod
    def for_definition(cls, root: str | os.PathLike[str], definition: VehicleDefinition,
                       source: str = LIVE, **kwargs: Any) -> ArchiveWriter:
        """A writer for a vehicle's stream, with its frame period and definition file."""
        text: bytes | None = None
        if definition.path:
            with contextlib.suppress(OSError):
                text = Path(definition.path).read_bytes()
        return cls(root, definition.vehicle, definition.stream, source,
                   frame_period_ns=round(1e9 / definition.frame.rate_hz),
                   definition_text=text, **kwargs)

    # -- public --

    @property
    def path(self) -> Path | None:
        """The data file being appended to (None before the first append)."""
        return self._file.path if self._file is not None else None

    def append(self, seq: int, t_ns: int, frames: NDArray[np.uint8],
               received_ns: int | None = None) -> None:
        """Archive one message's frames; on return they are in the OS (see Durability)."""
        if self._lock.fd < 0:
            raise ArchiveError("the writer is closed")
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 2:
            raise TypeError("frames must be a 2-D uint8 array (n_frames, frame_bytes)")
        n, width = frames.shape
        if n < 1 or width < 1:
            raise ValueError("a record needs at least one frame of at least one byte")
        if received_ns is None:
            received_ns = time.time_ns()
        seq, t_ns, received_ns = int(seq), int(t_ns), int(received_ns)
        # Every frame's seq and time must fit an int64 (the readers' numpy arrays).
        if not 0 <= seq <= _INT63 - n or not 0 <= t_ns < _INT63 - (n - 1) * \
                self.frame_period_ns or not -_INT63 <= received_ns < _INT63:
            raise ValueError("every frame's seq and time must be in [0, 2**63), received_ns "
                             "an int64")
        body_len = _REC_BODY.size + n * width
        if body_len > MAX_RECORD_BYTES:
            raise ValueError(f"{body_len}-byte record is over the {MAX_RECORD_BYTES} limit")
        body = _REC_BODY.pack(seq, t_ns, received_ns, n, width) \
            + np.ascontiguousarray(frames).tobytes()
        record = _frame_record(body)

        f = self._file
        if f is None or self._must_rotate(f, t_ns, len(record)):
            f = self._rotate(t_ns)
        block = self._block
        assert block is not None
        if block.n_records and (block.breaks_before(seq, t_ns, self.block_gap_ns,
                                                    self.frame_period_ns)
                                or block.n_records >= self.index_every_records
                                or block.length >= self.index_every_bytes):
            self._end_block()
            block = self._block = _BlockAcc(f.size)
        _append_whole(f.fd, f.size, record)
        f.size += len(record)
        block.add(len(record), seq, t_ns, n, self.frame_period_ns, received_ns)
        self.records_written += 1
        self.frames_written += n
        self._dirty = True
        if self.fsync_interval is not None \
                and time.monotonic() - self._last_sync >= self.fsync_interval:
            self._sync()

    def flush(self) -> None:
        """Make everything appended so far durable (fsync data, then index)."""
        self._sync()

    # -- internals --

    def _store_definition(self, sha: str, text: str | bytes) -> None:
        d = self.root / "definitions"
        target = d / f"{sha}.yaml"
        if target.exists():
            return
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{sha}.{os.getpid()}.tmp"
        tmp.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, target)  # atomic: readers see the whole file or none

    def _must_rotate(self, f: _OpenFile, t_ns: int, size: int) -> bool:
        if t_ns // self.rotate_ns != f.first_t_ns // self.rotate_ns:
            return True
        # A record bigger than max_file_bytes still goes somewhere: alone in its file.
        return f.size + size > self.max_file_bytes and f.size > f.header_len

    def _meta(self, first_t_ns: int) -> dict[str, Any]:
        return {"vehicle": self.vehicle, "stream": self.stream, "source": self.source,
                "definition_sha256": self.definition_sha256,
                "frame_period_ns": self.frame_period_ns, "first_t_ns": first_t_ns,
                "created_ns": time.time_ns(), "format": "groundstation raw frame archive"}

    def _rotate(self, t_ns: int) -> _OpenFile:
        self._close_file()
        number = self._last_number + 1
        path = self.dir / _file_name(number, t_ns, DATA_SUFFIX)
        header = _encode_header(DATA_MAGIC, self._meta(t_ns))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        idx_fd = -1
        try:
            _write_all(fd, header)
            idx_fd = os.open(path.with_suffix(INDEX_SUFFIX),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            (crc,) = _U32.unpack_from(header, len(header) - 4)
            _write_all(idx_fd, _IDX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, 0, crc))
        except BaseException:
            os.close(fd)
            if idx_fd >= 0:
                os.close(idx_fd)
            raise
        _fsync_dir(self.dir)
        self._last_number = number
        f = _OpenFile(path, number, t_ns, len(header), len(header), fd, idx_fd)
        self._file = f
        self._block = _BlockAcc(f.size)
        self._dirty = True
        return f

    def _end_block(self) -> None:
        f, block = self._file, self._block
        if f is None or block is None or block.n_records == 0:
            return
        _write_all(f.idx_fd, block.entry())
        self._block = _BlockAcc(block.offset + block.length)
        self._dirty = True

    def _sync(self) -> None:
        f = self._file
        if f is not None and self._dirty:
            os.fsync(f.fd)  # data first: the index must never point at bytes not on disk
            os.fsync(f.idx_fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _close_file(self) -> None:
        f = self._file
        if f is None:
            return
        try:
            self._end_block()
            self._sync()
        finally:
            os.close(f.fd)
            os.close(f.idx_fd)
            self._file = None
            self._block = None

    def _recover(self) -> None:
        """Check the newest file; cut a torn tail, rebuild its index tail, maybe continue it."""
        files = _numbered_files(self.dir, DATA_SUFFIX)
        if not files:
            return
        self._last_number = files[-1][0]
        number, path = files[-1]
        stats = ReaderStats()
        problems: list[ArchiveProblem] = []
        with _open_fd(path) as rfd:
            size = os.fstat(rfd).st_size
            try:
                meta, hlen, crc = _read_header(rfd, path, DATA_MAGIC, stats)
                header = _data_header(meta, hlen, crc)
            except ValueError as exc:
                # Never had a complete record (its header is incomplete); left for
                # inspection, and the next append starts a new file.
                self._note(ArchiveProblem(path, 0, size, "bad_header", str(exc)))
                return
            info = ArchiveFile(path, number, header, size)
            blocks = _load_index(info, stats, problems.append)
            start = blocks[-1].end if blocks else hlen
            region = _Region(rfd, start, size, stats)
            scanned: list[tuple[int, bytes]] = []
            for off, body in _scan(region, path, start, _REC_BODY.size, _check_frames_body,
                                   problems.append, at_eof=True):
                # Keep only the fixed part: the frames are not needed to rebuild the index.
                scanned.append((off, body[:_REC_BODY.size] + _U32.pack(len(body))))
        damage = [p for p in problems if p.kind in ("torn", "corrupt")]
        if any(p.kind == "corrupt" for p in damage):
            for p in damage:
                self._note(p)
            return  # good records after damage: leave the file exactly as it is
        same = ((header.vehicle, header.stream, header.source, header.definition_sha256,
                 header.frame_period_ns) == (self.vehicle, self.stream, self.source,
                                             self.definition_sha256, self.frame_period_ns))
        if damage:
            torn = damage[0]
            os.truncate(path, torn.offset)
            self._note(ArchiveProblem(path, torn.offset, torn.length, "torn",
                                      f"{torn.detail}; cut off by the writer on reopening"))
            size = torn.offset
        if not same or (blocks and not blocks[0].run):
            # Another stream configuration, or a version-1 index (whose blocks a version-2
            # index must not follow): new records go to a new file.
            return
        # Continue this file: open it, trim the index to its good entries, re-index the tail.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        idx_path = path.with_suffix(INDEX_SUFFIX)
        idx_fd = os.open(idx_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(idx_fd, 0 if not blocks else _IDX_HEAD.size
                         + len(blocks) * _IDX_ENTRY.size)
            os.close(idx_fd)
            idx_fd = os.open(idx_path, os.O_WRONLY | os.O_APPEND)
            if not blocks:
                _write_all(idx_fd, _IDX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, 0, crc))
        except BaseException:
            os.close(fd)
            os.close(idx_fd)
            raise
        f = _OpenFile(path, number, header.first_t_ns, hlen, size, fd, idx_fd)
        self._file = f
        self._block = _BlockAcc(start)
        for off, fixed in scanned:
            seq, t_ns, recv, n, _w = _REC_BODY.unpack_from(fixed, 0)
            (body_len,) = _U32.unpack_from(fixed, _REC_BODY.size)
            size_rec = _REC_HEAD.size + body_len
            b = self._block
            if b.n_records and (b.breaks_before(seq, t_ns, self.block_gap_ns,
                                                self.frame_period_ns)
                                or b.n_records >= self.index_every_records
                                or b.length >= self.index_every_bytes):
                self._end_block()
                b = self._block
            assert b.offset + b.length == off
            b.add(size_rec, seq, t_ns, n, self.frame_period_ns, recv)
        self._dirty = True
        self._sync()

    def _note(self, problem: ArchiveProblem) -> None:
        self.recovered.append(problem)
        log.warning("archive writer: %s", problem)


# -- quarantine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedMessage:
    received_ns: int
    topic: str
    reason: str
    detail: str
    payload: bytes  # at most the writer's max_payload_bytes
    payload_len: int  # the original length

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.payload_len


class QuarantineWriter(_LockedWriter):
    """Keeps rejected messages with their reason, bounded in size (see the module docstring).

    One writer per ``name`` (e.g. one per ingest process), enforced with a lock.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str = "ingest",
        *,
        max_payload_bytes: int = 64 * 1024,
        max_detail_bytes: int = 4096,
        rotate_ns: int = HOUR_NS,
        max_file_bytes: int = 16 * 1024 * 1024,
        max_total_bytes: int = 1024 * 1024 * 1024,
        fsync_interval: float | None = 1.0,
    ) -> None:
        self.dir = Path(root) / "quarantine" / _check_name("quarantine writer", name)
        self.name = name
        self.max_payload_bytes = max_payload_bytes
        self.max_detail_bytes = max_detail_bytes
        self.rotate_ns = rotate_ns
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.fsync_interval = fsync_interval
        self.recovered: list[ArchiveProblem] = []
        self.messages_written = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.dir / ".lock")
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._first_ns = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        files = _numbered_files(self.dir, QUARANTINE_SUFFIX)
        self._last_number = files[-1][0] if files else 0
        if files:
            self._recover(files[-1][1])

    def append(self, topic: str, reason: str, detail: str, payload: bytes,
               received_ns: int | None = None) -> None:
        if self._lock.fd < 0:
            raise ArchiveError("the quarantine writer is closed")
        if received_ns is None:
            received_ns = time.time_ns()
        t = topic.encode("utf-8", "replace")[:0xFFFF]
        r = reason.encode("utf-8", "replace")[:0xFFFF]
        d = detail.encode("utf-8", "replace")[:self.max_detail_bytes]
        p = bytes(payload[:self.max_payload_bytes])
        body = _Q_BODY.pack(int(received_ns), min(len(payload), 0xFFFFFFFF), len(t), len(r),
                            len(d)) + t + r + d + p
        record = _frame_record(body)
        if self._fd < 0 or received_ns // self.rotate_ns != self._first_ns // self.rotate_ns \
                or self._size + len(record) > self.max_file_bytes:
            self._rotate(int(received_ns))
        _append_whole(self._fd, self._size, record)
        self._size += len(record)
        self.messages_written += 1
        self._dirty = True
        if self.fsync_interval is not None \
                and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.flush()

    def flush(self) -> None:
        if self._fd >= 0 and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _close_file(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1

    def _rotate(self, received_ns: int) -> None:
        self._close_file()
        self._last_number += 1
        path = self.dir / _file_name(self._last_number, received_ns, QUARANTINE_SUFFIX)
        header = _encode_header(QUARANTINE_MAGIC, {
            "kind": "quarantine", "writer": self.name, "created_ns": time.time_ns(),
            "first_received_ns": received_ns})
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _write_all(self._fd, header)
        _fsync_dir(self.dir)
        self._path, self._size, self._first_ns = path, len(header), received_ns
        self._prune()

    def _prune(self) -> None:
        # Oldest first, never the file being written.
        files = _numbered_files(self.dir, QUARANTINE_SUFFIX)
        sizes = [(p, p.stat().st_size) for _, p in files]
        total = sum(s for _, s in sizes)
        for p, s in sizes:
            if total <= self.max_total_bytes or p == self._path:
                break
            p.unlink(missing_ok=True)
            total -= s
            log.warning("quarantine over %d bytes: deleted %s", self.max_total_bytes, p)

    def _recover(self, path: Path) -> None:
        # Only cut a torn tail; a new file is started for new messages either way.
        stats = ReaderStats()
        problems: list[ArchiveProblem] = []
        with _open_fd(path) as fd:
            size = os.fstat(fd).st_size
            try:
                _meta, hlen, _crc = _read_header(fd, path, QUARANTINE_MAGIC, stats)
            except ValueError as exc:
                self.recovered.append(ArchiveProblem(path, 0, size, "bad_header", str(exc)))
                return
            for _ in _scan(_Region(fd, hlen, size, stats), path, hlen, _Q_BODY.size,
                           _check_quarantine_body, problems.append, at_eof=True):
                pass
        if problems and all(p.kind == "torn" for p in problems):
            os.truncate(path, problems[-1].offset)
        self.recovered.extend(problems)


class QuarantineReader:
    """Reads back quarantined messages, oldest first; damage is reported, never fatal."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.problems: list[ArchiveProblem] = []
        self.stats = ReaderStats()

    def writers(self) -> list[str]:
        base = self.root / "quarantine"
        if not base.is_dir():
            return []
        return sorted(d.name for d in base.iterdir() if d.is_dir() and _NAME_RE.fullmatch(d.name))

    def iter_messages(self, name: str | None = None) -> Iterator[QuarantinedMessage]:
        """Messages of one writer (or of every writer, one after the other)."""
        for writer in [name] if name is not None else self.writers():
            d = self.root / "quarantine" / _check_name("quarantine writer", writer)
            for _number, path in _numbered_files(d, QUARANTINE_SUFFIX):
                yield from self._file_messages(path)

    def _file_messages(self, path: Path) -> Iterator[QuarantinedMessage]:
        with _open_fd(path) as fd:
            self.stats.files_opened += 1
            size = os.fstat(fd).st_size
            try:
                _meta, hlen, _crc = _read_header(fd, path, QUARANTINE_MAGIC, self.stats)
            except ValueError as exc:
                self.problems.append(ArchiveProblem(path, 0, size, "bad_header", str(exc)))
                return
            for _off, body in _scan(_Region(fd, hlen, size, self.stats), path, hlen,
                                    _Q_BODY.size, _check_quarantine_body,
                                    self.problems.append, at_eof=True):
                recv, plen, tlen, rlen, dlen = _Q_BODY.unpack_from(body, 0)
                pos = _Q_BODY.size
                fields = []
                for n in (tlen, rlen, dlen):
                    fields.append(body[pos:pos + n].decode("utf-8", "replace"))
                    pos += n
                self.stats.records += 1
                yield QuarantinedMessage(recv, fields[0], fields[1], fields[2], body[pos:], plen)
