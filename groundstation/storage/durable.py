"""Durable files: the fsync, atomic-replace, lock and record-framing primitives of storage.

What the raw archive, the quarantine, the InfluxDB spool and the ingest's alarm-state file
each need from the file system, written once:

- ``fsync_file``, ``fsync_dir``: data on disk, and a new or renamed file's directory entry
  with it (a file is only durable once its directory is synced too).
- ``write_all``, ``append_whole``: an append that lands whole or leaves the file as it was.
- ``atomic_write``: replace a small file so that readers, and the disk after a crash, see
  the old contents or the new, never a mix (temporary file, fsync, rename, directory fsync).
- ``ExclusiveLock``: one writer per directory, across processes (non-blocking ``flock``).
- ``RecordFraming``, ``FileRegion``, ``Damage``: CRC-framed records
  (``marker | u32 body length | u32 extra fields | u32 CRC-32 | body``) and a scanner that
  yields the good ones, reports a torn or corrupt stretch and resumes at the next marker.

The formats built on these: ``docs/archive-format.md`` and ``docs/spool-format.md``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

__all__ = [
    "BAD",
    "GOOD",
    "READ_CHUNK",
    "SHORT",
    "ByteCounter",
    "Damage",
    "ExclusiveLock",
    "FileRegion",
    "LockedError",
    "RecordFraming",
    "append_whole",
    "atomic_write",
    "fsync_dir",
    "fsync_file",
    "open_fd",
    "write_all",
]

_U32 = struct.Struct("<I")

# Reads go through pread in pieces of this size (or one record, if larger): memory stays
# bounded however long the file, and a seek reads little more than the blocks it needs.
READ_CHUNK = 1024 * 1024


# -- fsync and writing -----------------------------------------------------------------------


def fsync_file(fd: int, *, data_only: bool = False) -> None:
    """Put a file's data on disk. ``data_only``: fdatasync where the OS has it (data and
    size, not the times: one disk write fewer per append), fsync elsewhere (macOS)."""
    if data_only and hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def fsync_dir(path: str | os.PathLike[str], *, strict: bool = True) -> None:
    """Sync a directory, so that a file created or renamed in it survives power loss.

    ``strict=False`` ignores a failure: for callers whose data are already synced file by
    file and who would rather carry on than stop on a file system that refuses to sync a
    directory (some network and FUSE file systems answer EINVAL).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_whole(fd: int, size: int, data: bytes, *, sync: bool = False) -> None:
    """Append ``data`` to a file of ``size`` bytes (opened with O_APPEND), or leave it as it was.

    A short write (disk full) would leave a torn record that later appends would bury
    mid-file, so it is cut off again before the error is raised. With ``sync`` the data are
    fdatasync'ed before returning, and a failed sync cuts the record off too: the caller
    reports it as not durable, so it must not turn up later.
    """
    try:
        write_all(fd, data)
        if sync:
            fsync_file(fd, data_only=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                 sync: bool = True) -> None:
    """Replace ``path`` with ``data``: readers, and the disk after a crash, see the old
    contents or the new, never a mix.

    The temporary file sits beside the target (a rename is atomic only within one file
    system) and is named for this process, so two processes never write the same one.
    ``sync`` fsyncs the data before the rename and the directory after it; without it a
    crash of the process is survived, a crash of the machine may leave the old file. ``mode``
    (0o600 for a secret) is set exactly, whatever the umask; by default the file is created
    as ``open`` creates one. On failure the temporary file is removed and the error raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o666 if mode is None else mode)
        try:
            write_all(fd, data)
            if mode is not None:
                os.fchmod(fd, mode)  # the umask may have narrowed it further than asked
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        fsync_dir(path.parent)


@contextlib.contextmanager
def open_fd(path: str | os.PathLike[str]) -> Iterator[int]:
    """A read-only file descriptor, closed on leaving the block."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


# -- the lock --------------------------------------------------------------------------------


class LockedError(RuntimeError):
    """Another writer holds the lock; ``path`` is the lock file, ``holder`` its process id
    as it wrote it (None if unknown)."""

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        by = f" (process {holder})" if holder is not None else ""
        super().__init__(f"{path} is locked by another writer{by}")


class ExclusiveLock:
    """An exclusive, non-blocking ``flock`` on a lock file: one writer at a time, across
    processes. A second locker gets ``LockedError`` at once, never waits.

    The kernel drops a ``flock`` when its holder's file is closed, including by a crash or
    SIGKILL, so a lock is never left stale. The lock file is never deleted: a locker could
    still hold the old inode while a newcomer locks a new file of the same name.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(self.path, _holder(self.path)) from None
            raise
        self.fd = fd
        # Only for the refused locker's message: who to look for.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        """Drop the lock; idempotent."""
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


# -- CRC-framed records ----------------------------------------------------------------------


class ByteCounter(Protocol):
    """Where a FileRegion counts the bytes it reads (a reader's statistics)."""

    bytes_read: int


class FileRegion:
    """Reads bytes [start, end) of an open file on demand, through a sliding buffer.

    Only moves forward; bytes before the last requested offset are dropped, so memory is
    bounded by one read chunk or one record. ``chunk=0`` reads exactly what is asked (one
    record at a time, for a caller that reads few).
    """

    def __init__(self, fd: int, start: int, end: int, counter: ByteCounter | None = None,
                 *, chunk: int = READ_CHUNK) -> None:
        self.fd = fd
        self.end = end
        self.base = start
        self.buf = bytearray()
        self.counter = counter
        self.chunk = chunk

    def load(self, off: int, n: int) -> None:
        """Make the buffer hold [off, off + n) (as far as the region goes)."""
        if off < self.base:
            raise AssertionError("file region read went backwards")
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
        size = max(want_end - have_end, min(self.chunk, self.end - have_end))
        data = os.pread(self.fd, size, have_end)
        if self.counter is not None:
            self.counter.bytes_read += len(data)
        self.buf += data
        if len(data) < size:  # the file shrank under us: what is there is all there is
            self.end = have_end + len(data)

    def find(self, pattern: bytes, off: int) -> int:
        """Absolute offset of the next pattern at or after off, or -1 before the region end."""
        while off < self.end:
            self.load(off, READ_CHUNK)  # searching wants big reads, whatever the chunk
            i = self.buf.find(pattern, off - self.base)
            if i >= 0 and self.base + i + len(pattern) <= self.end:
                return self.base + i
            have_end = self.base + len(self.buf)
            if have_end >= self.end:
                return -1
            off = max(off + 1, have_end - len(pattern) + 1)
        return -1


@dataclass(frozen=True)
class Damage:
    """Bytes a scan skipped: [offset, offset + length), and why the first record there was
    not good. ``runs_to_end``: no good record follows before the region's end (at the end of
    a file: a torn tail, what a crash in the middle of a write leaves)."""

    offset: int
    length: int
    detail: str
    runs_to_end: bool


# What parse finds at an offset: a good record, the region ending inside one, or bytes that
# are no record.
GOOD, SHORT, BAD = 0, 1, 2

Parsed = tuple[int, bytes, tuple[int, ...], str]  # status, body, extra fields, why not good


class RecordFraming:
    """One kind of framed record, as it lies on disk::

        marker     4 bytes   finds the next record after a damaged one
        body_len   u32       little-endian, like every field here
        extra      u32 each  ``extra_fields`` of them (the spool's line count; the archive
                             has none)
        crc32      u32       CRC-32 (zlib) of body_len, the extra fields and the body
        body       body_len bytes

    The CRC covers the header's numbers too, so a header torn into plausible-looking
    numbers is caught as well as a torn body. A body is good when its length is within
    [min_body, max_body] (a bigger length field is damage, and refusing it stops a reader
    allocating gigabytes), its CRC matches and ``check`` (the format's own test of the
    body's fields) finds nothing wrong.
    """

    def __init__(self, marker: bytes, *, extra_fields: int = 0, min_body: int = 0,
                 max_body: int = 0xFFFFFFFF,
                 check: Callable[[bytes], str | None] | None = None) -> None:
        if len(marker) != 4:
            raise ValueError("a record marker is 4 bytes")
        self.marker = marker
        self.extra_fields = extra_fields
        self.min_body = min_body
        self.max_body = max_body
        self.check = check
        self._covered = struct.Struct("<I" + "I" * extra_fields)  # body_len and extras
        self._head = struct.Struct("<4s" + self._covered.format[1:] + "I")
        self.header_size = self._head.size

    def encode(self, body: bytes, *extra: int) -> bytes:
        """The framed record: header, then body."""
        covered = self._covered.pack(len(body), *extra)
        return self.marker + covered + _U32.pack(zlib.crc32(body, zlib.crc32(covered))) + body

    def parse(self, region: FileRegion, pos: int) -> Parsed:
        """The record at pos: (GOOD, body, extra, "") or (SHORT or BAD, b"", (), why)."""
        # The hot path of every archive read: unpack straight from the region's buffer and
        # copy the body once. Loading from pos (not from the body's start) keeps the
        # record's first byte buffered, where a resync after a bad record starts searching.
        hsize = self.header_size
        region.load(pos, hsize)
        i = pos - region.base
        avail = len(region.buf) - i
        if avail < hsize:
            return SHORT, b"", (), f"the file ends {avail} bytes into a record header"
        fields = self._head.unpack_from(region.buf, i)
        if fields[0] != self.marker:
            return BAD, b"", (), "no record marker"
        body_len = fields[1]
        if not self.min_body <= body_len <= self.max_body:
            return BAD, b"", (), f"impossible record length {body_len}"
        if avail < hsize + body_len:
            region.load(pos, hsize + body_len)
            i = pos - region.base
            avail = len(region.buf) - i
            if avail < hsize + body_len:
                return SHORT, b"", (), (f"the file ends {avail - hsize} bytes into a "
                                        f"{body_len}-byte record")
        buf = region.buf
        body = bytes(memoryview(buf)[i + hsize:i + hsize + body_len])
        if zlib.crc32(body, zlib.crc32(buf[i + 4:i + hsize - 4])) != fields[-1]:
            return BAD, b"", (), "CRC mismatch"
        if self.check is not None:
            why = self.check(body)
            if why:
                return BAD, b"", (), why
        return GOOD, body, fields[2:-1], ""

    def scan(self, region: FileRegion, start: int, report: Callable[[Damage], None], *,
             resync: bool = True) -> Iterator[tuple[int, bytes, tuple[int, ...]]]:
        """Yield (offset, body, extra) of each good record from start to the region's end.

        Bytes that are no good record are reported and skipped: the scan resumes at the
        next marker that starts a good record. The CRC makes a marker that merely occurs
        inside a body (1 in 2**32 per place) harmless. ``resync=False`` stops at the first
        damage instead, reporting it as running to the end.
        """
        pos = start
        while pos < region.end:
            status, body, extra, why = self.parse(region, pos)
            if status == GOOD:
                yield pos, body, extra
                pos += self.header_size + len(body)
                continue
            cand = -1
            if resync:
                cand = pos + 1
                while True:
                    cand = region.find(self.marker, cand)
                    if cand < 0 or self.parse(region, cand)[0] == GOOD:
                        break
                    cand += 1
            if cand < 0:
                report(Damage(pos, region.end - pos, why, runs_to_end=True))
                return
            report(Damage(pos, cand - pos, why, runs_to_end=False))
            pos = cand
