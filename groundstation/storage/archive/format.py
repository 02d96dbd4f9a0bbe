"""The raw frame archive's on-disk format: layout, names, file headers, records, the index.

Every received minor frame, as it arrived, in append-only files per stream::

    <root>/live/<vehicle>/<stream>/00000001_19750717T160909.000000000Z.gsa   data
    <root>/live/<vehicle>/<stream>/00000001_19750717T160909.000000000Z.gsi   its index
    <root>/replay/<session>/..., <root>/training/<drill>/...   other sources, never mixed
    <root>/definitions/<sha256>.yaml        the telemetry definitions the files were made with
    <root>/quarantine/<writer>/00000001_20250101T000000.000000000Z.gsq  rejected messages

A data file is a header (magic, version, JSON metadata, CRC) and CRC-framed records (see
``groundstation.storage.durable.RecordFraming``), one per message: seq, t_ns, received_ns,
n_frames, frame_bytes, then the frames. The index lists blocks of records, each one run of
consecutive frames, so seeking and cataloguing read the index, not the data. The full
specification, with the crash and fsync rules: ``docs/archive-format.md``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from groundstation.core.definitions import hash_definition as hash_definition  # re-exported
from groundstation.core.topics import LIVE, Source, SourceKind
from groundstation.storage.durable import Damage, FileRegion, RecordFraming

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
_REC_BODY = struct.Struct("<QqqII")  # seq, t_ns, received_ns, n_frames, frame_bytes
_IDX_HEAD = struct.Struct("<8sHHI")  # magic, version, reserved, data header crc
_IDX_ENTRY = struct.Struct("<QQIIQQqqqqI")
_U32 = struct.Struct("<I")

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


# -- records ---------------------------------------------------------------------------------


def _check_frames_body(body: bytes) -> str | None:
    seq, t_ns, _recv, n, width = _REC_BODY.unpack_from(body, 0)
    if n < 1 or width < 1 or _REC_BODY.size + n * width != len(body):
        return f"record claims {n} frames of {width} bytes in a {len(body)}-byte body"
    if seq > _INT63 - n or t_ns < 0:
        return "record has an impossible seq or time"
    return None


DATA_RECORDS = RecordFraming(RECORD_MARKER, min_body=_REC_BODY.size, max_body=MAX_RECORD_BYTES,
                             check=_check_frames_body)
RECORD_HEADER_SIZE = DATA_RECORDS.header_size  # marker, body_len, crc32


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


def _scan(framing: RecordFraming, region: FileRegion, path: Path, start: int,
          report: Callable[[ArchiveProblem], None],
          at_eof: bool) -> Iterator[tuple[int, bytes, tuple[int, ...]]]:
    """(offset, body, extra) of each good record in the region; damage is reported as an
    ArchiveProblem and skipped (the kinds: see ArchiveProblem)."""
    def damage(d: Damage) -> None:
        if not d.runs_to_end:
            report(ArchiveProblem(path, d.offset, d.length, "corrupt",
                                  f"{d.detail}; resumed at the next good record"))
        elif at_eof:
            report(ArchiveProblem(path, d.offset, d.length, "torn", d.detail))
        else:
            report(ArchiveProblem(path, d.offset, d.length, "corrupt",
                                  f"{d.detail} (the damage runs to the end of an index block)"))

    return framing.scan(region, start, damage)


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


# -- file headers ----------------------------------------------------------------------------


def _encode_header(magic: bytes, meta: dict[str, str | int]) -> bytes:
    js = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head = _FILE_HEAD.pack(magic, VERSION, 0, len(js)) + js
    return head + _U32.pack(zlib.crc32(head))


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


# -- the index -------------------------------------------------------------------------------


def _block_from_entry(path: Path, raw: bytes, pos: int, run: bool) -> Block | None:
    (offset, length, n_records, n_frames, first_seq, end_seq, t_min, t_max, recv_min,
     recv_max, crc) = _IDX_ENTRY.unpack_from(raw, pos)
    if zlib.crc32(raw[pos:pos + _IDX_ENTRY.size - 4]) != crc:
        return None
    return Block(path, offset, length, n_records, n_frames, first_seq, end_seq, t_min, t_max,
                 recv_min, recv_max, indexed=True, run=run)


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
    """The trustworthy prefix of a data file's index (docs/archive-format.md, "Index file")."""
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

