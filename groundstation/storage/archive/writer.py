"""Writing the raw frame archive: one stream's received frames, appended, indexed, synced.

The format and the fsync policy are in ``docs/archive-format.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from groundstation.storage.archive.format import (
    _IDX_ENTRY,
    _IDX_HEAD,
    _INT63,
    _REC_BODY,
    _U32,
    DATA_MAGIC,
    DATA_RECORDS,
    DATA_SUFFIX,
    HOUR_NS,
    INDEX_MAGIC,
    INDEX_SUFFIX,
    INDEX_VERSION,
    LIVE,
    MAX_RECORD_BYTES,
    RECORD_HEADER_SIZE,
    ArchiveError,
    ArchiveFile,
    ArchiveProblem,
    ReaderStats,
    _BlockAcc,
    _data_header,
    _encode_header,
    _file_name,
    _load_index,
    _numbered_files,
    _read_header,
    _scan,
    hash_definition,
    stream_dir,
)
from groundstation.storage.durable import (
    ExclusiveLock,
    FileRegion,
    LockedError,
    append_whole,
    atomic_write,
    fsync_dir,
    fsync_file,
    open_fd,
    write_all,
)

if TYPE_CHECKING:
    from groundstation.core.definitions import VehicleDefinition

log = logging.getLogger("groundstation.archive")


@dataclass
class _OpenFile:
    path: Path
    number: int
    first_t_ns: int
    header_len: int
    size: int
    fd: int
    idx_fd: int


class _DurableWriter:
    """What the archive's writers share: an exclusive lock on their directory, held while
    the writer is open and released by close() (or leaving a with block) after the file is
    closed; and the fsync policy: an append that finds ``fsync_interval`` seconds passed
    since the last sync syncs (0: every append; None: only flush and close)."""

    def __init__(self, directory: Path, what: str, fsync_interval: float | None) -> None:
        self.what = what
        self.fsync_interval = fsync_interval
        self._dirty = False
        self._last_sync = time.monotonic()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = ExclusiveLock(directory / ".lock")
        except LockedError as exc:
            raise ArchiveError(f"{exc}; one writer per stream (per-stream state must stay in "
                               "one process)") from None

    def _check_open(self) -> None:
        if not self._lock.held:
            raise ArchiveError(f"the {self.what} is closed")

    def _appended(self) -> None:
        self._dirty = True
        if self.fsync_interval is not None \
                and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.flush()

    def flush(self) -> None:
        """Make everything appended so far durable."""
        if self._dirty:
            self._sync_files()
        self._dirty = False
        self._last_sync = time.monotonic()

    def _sync_files(self) -> None:
        raise NotImplementedError

    def _close_file(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the file (indexed and synced) and release the lock; idempotent."""
        if not self._lock.held:
            return
        try:
            self._close_file()
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArchiveWriter(_DurableWriter):
    """Appends one stream's received frames (the format: ``docs/archive-format.md``).

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
        super().__init__(self.dir, "writer", fsync_interval)
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
        self._check_open()
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
        record = DATA_RECORDS.encode(body)

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
        append_whole(f.fd, f.size, record)
        f.size += len(record)
        block.add(len(record), seq, t_ns, n, self.frame_period_ns, received_ns)
        self.records_written += 1
        self.frames_written += n
        self._appended()

    # -- internals --

    def _store_definition(self, sha: str, text: str | bytes) -> None:
        d = self.root / "definitions"
        target = d / f"{sha}.yaml"
        if target.exists():
            return
        d.mkdir(parents=True, exist_ok=True)
        # Atomic: readers see the whole file or none.
        atomic_write(target, text.encode("utf-8") if isinstance(text, str) else text)

    def _must_rotate(self, f: _OpenFile, t_ns: int, size: int) -> bool:
        if t_ns // self.rotate_ns != f.first_t_ns // self.rotate_ns:
            return True
        # A record bigger than max_file_bytes still goes somewhere: alone in its file.
        return f.size + size > self.max_file_bytes and f.size > f.header_len

    def _meta(self, first_t_ns: int) -> dict[str, str | int]:
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
            write_all(fd, header)
            idx_fd = os.open(path.with_suffix(INDEX_SUFFIX),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            (crc,) = _U32.unpack_from(header, len(header) - 4)
            write_all(idx_fd, _IDX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, 0, crc))
        except BaseException:
            os.close(fd)
            if idx_fd >= 0:
                os.close(idx_fd)
            raise
        # The data and index are synced by the fsync policy; a file system that will not
        # sync a directory must not stop the archive.
        fsync_dir(self.dir, strict=False)
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
        write_all(f.idx_fd, block.entry())
        self._block = _BlockAcc(block.offset + block.length)
        self._dirty = True

    def _sync_files(self) -> None:
        f = self._file
        if f is not None:
            fsync_file(f.fd)  # data first: the index must never point at bytes not on disk
            fsync_file(f.idx_fd)

    def _close_file(self) -> None:
        f = self._file
        if f is None:
            return
        try:
            self._end_block()
            self.flush()
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
        with open_fd(path) as rfd:
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
            region = FileRegion(rfd, start, size, stats)
            scanned: list[tuple[int, bytes]] = []
            for off, body, _ in _scan(DATA_RECORDS, region, path, start, problems.append,
                                      at_eof=True):
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
                write_all(idx_fd, _IDX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, 0, crc))
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
            size_rec = RECORD_HEADER_SIZE + body_len
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
        self.flush()

    def _note(self, problem: ArchiveProblem) -> None:
        self.recovered.append(problem)
        log.warning("archive writer: %s", problem)
