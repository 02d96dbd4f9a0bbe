"""The quarantine: messages the ingest rejected, kept with why, bounded in size.

Same file header and record framing as the archive's data files (``docs/archive-format.md``,
"Quarantine"); the body is::

    received_ns i64, payload_len u32 (original), topic_len u16, reason_len u16,
    detail_len u32, then topic, reason, detail (UTF-8) and the stored payload bytes
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from groundstation.storage.archive.format import (
    _NAME_RE,
    HOUR_NS,
    MAX_RECORD_BYTES,
    QUARANTINE_MAGIC,
    QUARANTINE_SUFFIX,
    RECORD_MARKER,
    ArchiveProblem,
    ReaderStats,
    _check_name,
    _encode_header,
    _file_name,
    _numbered_files,
    _read_header,
    _scan,
)
from groundstation.storage.archive.writer import _DurableWriter
from groundstation.storage.durable import (
    FileRegion,
    RecordFraming,
    append_whole,
    fsync_dir,
    fsync_file,
    open_fd,
    write_all,
)

log = logging.getLogger("groundstation.archive")

_Q_BODY = struct.Struct("<qIHHI")  # received_ns, payload_len, topic_len, reason_len, detail_len


def _check_quarantine_body(body: bytes) -> str | None:
    _recv, _plen, tlen, rlen, dlen = _Q_BODY.unpack_from(body, 0)
    if _Q_BODY.size + tlen + rlen + dlen > len(body):
        return "quarantine record's text fields run past its end"
    return None


QUARANTINE_RECORDS = RecordFraming(RECORD_MARKER, min_body=_Q_BODY.size,
                                   max_body=MAX_RECORD_BYTES, check=_check_quarantine_body)


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


class QuarantineWriter(_DurableWriter):
    """Keeps rejected messages with their reason, bounded in size (docs/archive-format.md).

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
        self.recovered: list[ArchiveProblem] = []
        self.messages_written = 0
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._first_ns = 0
        super().__init__(self.dir, "quarantine writer", fsync_interval)
        files = _numbered_files(self.dir, QUARANTINE_SUFFIX)
        self._last_number = files[-1][0] if files else 0
        if files:
            self._recover(files[-1][1])

    def append(self, topic: str, reason: str, detail: str, payload: bytes,
               received_ns: int | None = None) -> None:
        self._check_open()
        if received_ns is None:
            received_ns = time.time_ns()
        t = topic.encode("utf-8", "replace")[:0xFFFF]
        r = reason.encode("utf-8", "replace")[:0xFFFF]
        d = detail.encode("utf-8", "replace")[:self.max_detail_bytes]
        p = bytes(payload[:self.max_payload_bytes])
        body = _Q_BODY.pack(int(received_ns), min(len(payload), 0xFFFFFFFF), len(t), len(r),
                            len(d)) + t + r + d + p
        record = QUARANTINE_RECORDS.encode(body)
        if self._fd < 0 or received_ns // self.rotate_ns != self._first_ns // self.rotate_ns \
                or self._size + len(record) > self.max_file_bytes:
            self._rotate(int(received_ns))
        append_whole(self._fd, self._size, record)
        self._size += len(record)
        self.messages_written += 1
        self._appended()

    def _sync_files(self) -> None:
        if self._fd >= 0:
            fsync_file(self._fd)

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
        write_all(self._fd, header)
        fsync_dir(self.dir, strict=False)  # as the archive's (writer.py): best effort
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
        with open_fd(path) as fd:
            size = os.fstat(fd).st_size
            try:
                _meta, hlen, _crc = _read_header(fd, path, QUARANTINE_MAGIC, stats)
            except ValueError as exc:
                self.recovered.append(ArchiveProblem(path, 0, size, "bad_header", str(exc)))
                return
            for _ in _scan(QUARANTINE_RECORDS, FileRegion(fd, hlen, size, stats), path, hlen,
                           problems.append, at_eof=True):
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
        with open_fd(path) as fd:
            self.stats.files_opened += 1
            size = os.fstat(fd).st_size
            try:
                _meta, hlen, _crc = _read_header(fd, path, QUARANTINE_MAGIC, self.stats)
            except ValueError as exc:
                self.problems.append(ArchiveProblem(path, 0, size, "bad_header", str(exc)))
                return
            for _off, body, _ in _scan(QUARANTINE_RECORDS, FileRegion(fd, hlen, size, self.stats),
                                       path, hlen, self.problems.append, at_eof=True):
                recv, plen, tlen, rlen, dlen = _Q_BODY.unpack_from(body, 0)
                pos = _Q_BODY.size
                fields = []
                for n in (tlen, rlen, dlen):
                    fields.append(body[pos:pos + n].decode("utf-8", "replace"))
                    pos += n
                self.stats.records += 1
                yield QuarantinedMessage(recv, fields[0], fields[1], fields[2], body[pos:], plen)
