"""The durable-file primitives: framed records, the lock, atomic replace, whole appends."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from groundstation.storage.durable import (
    BAD,
    GOOD,
    SHORT,
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

MARKER = b"\xd7GSR"
PLAIN = RecordFraming(MARKER)
COUNTED = RecordFraming(b"GSP1", extra_fields=1)


def _write(path: Path, framing: RecordFraming, bodies: list[bytes]) -> list[int]:
    """Write the framed bodies; return each record's offset."""
    offsets, data = [], b""
    for i, body in enumerate(bodies):
        offsets.append(len(data))
        extra = (i,) if framing.extra_fields else ()
        data += framing.encode(body, *extra)
    path.write_bytes(data)
    return offsets


def _scan(path: Path, framing: RecordFraming, *, chunk: int = 1 << 20,
          resync: bool = True) -> tuple[list[tuple[int, bytes, tuple[int, ...]]], list[Damage]]:
    damage: list[Damage] = []
    with open_fd(path) as fd:
        region = FileRegion(fd, 0, os.fstat(fd).st_size, chunk=chunk)
        records = list(framing.scan(region, 0, damage.append, resync=resync))
    return records, damage


BODIES = [bytes([i]) * (10 + 7 * i) for i in range(12)]


# -- framed records ---------------------------------------------------------------------------


def test_the_framing_is_the_archives_and_the_spools_format_byte_for_byte() -> None:
    # What the archive and the spool wrote before they shared the framing: existing files
    # must still read, so the bytes may not change.
    body = b"frames" * 20
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<I", len(body))))
    assert PLAIN.encode(body) == struct.pack("<4sII", MARKER, len(body), crc) + body
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<II", len(body), 7)))
    assert COUNTED.encode(body, 7) == struct.pack("<4sIII", b"GSP1", len(body), 7, crc) + body


@pytest.mark.parametrize("framing", [PLAIN, COUNTED])
@pytest.mark.parametrize("chunk", [1 << 20, 0, 5])
def test_records_round_trip(tmp_path: Path, framing: RecordFraming, chunk: int) -> None:
    path = tmp_path / "f"
    offsets = _write(path, framing, BODIES)
    records, damage = _scan(path, framing, chunk=chunk)
    assert damage == []
    assert [r[0] for r in records] == offsets
    assert [r[1] for r in records] == BODIES
    assert [r[2] for r in records] == ([(i,) for i in range(12)] if framing.extra_fields
                                       else [()] * 12)


def test_a_torn_tail_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "f"
    offsets = _write(path, PLAIN, BODIES)
    size = path.stat().st_size
    for cut in (size - 1, offsets[-1] + PLAIN.header_size + 1, offsets[-1] + 3):  # shrinking
        os.truncate(path, cut)
        records, damage = _scan(path, PLAIN)
        assert [r[1] for r in records] == BODIES[:-1]
        assert damage == [Damage(offsets[-1], cut - offsets[-1], damage[0].detail, True)]
        assert "the file ends" in damage[0].detail


def test_a_corrupt_record_in_the_middle_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    offsets = _write(path, PLAIN, BODIES)
    raw = bytearray(path.read_bytes())
    raw[offsets[4] + PLAIN.header_size + 2] ^= 0xFF  # a bit flip in record 4's body
    raw[offsets[7]:offsets[7] + 4] = b"XXXX"  # record 7's marker gone
    path.write_bytes(bytes(raw))
    records, damage = _scan(path, PLAIN, chunk=16)
    assert [r[1] for r in records] == BODIES[:4] + BODIES[5:7] + BODIES[8:]
    assert [(d.offset, d.length, d.runs_to_end) for d in damage] == [
        (offsets[4], offsets[5] - offsets[4], False), (offsets[7], offsets[8] - offsets[7], False)]
    assert [d.detail for d in damage] == ["CRC mismatch", "no record marker"]


def test_the_crc_covers_the_extra_header_fields(tmp_path: Path) -> None:
    path = tmp_path / "f"
    offsets = _write(path, COUNTED, BODIES[:3])
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, offsets[1] + 8, 999)  # record 1's line count
    path.write_bytes(bytes(raw))
    records, damage = _scan(path, COUNTED)
    assert [r[2] for r in records] == [(0,), (2,)]
    assert [(d.offset, d.detail) for d in damage] == [(offsets[1], "CRC mismatch")]


def test_without_resync_the_first_damage_ends_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "f"
    offsets = _write(path, COUNTED, BODIES)
    raw = bytearray(path.read_bytes())
    raw[offsets[3] + COUNTED.header_size] ^= 1
    path.write_bytes(bytes(raw))
    records, damage = _scan(path, COUNTED, resync=False)
    assert len(records) == 3
    assert damage == [Damage(offsets[3], len(raw) - offsets[3], "CRC mismatch", True)]


def test_a_marker_inside_a_body_and_an_impossible_length_do_not_fool_the_scan(
        tmp_path: Path) -> None:
    bodies = [MARKER + b"\xff\xff\xff\x7f" + MARKER * 3, b"next"]
    path = tmp_path / "f"
    offsets = _write(path, PLAIN, bodies)
    raw = bytearray(path.read_bytes())
    raw[offsets[0] + 4:offsets[0] + 8] = struct.pack("<I", 2**31)  # record 0's length
    path.write_bytes(bytes(raw))
    bounded = RecordFraming(MARKER, max_body=1 << 20)
    records, damage = _scan(path, bounded)
    assert [r[1] for r in records] == [b"next"]
    assert damage[0].offset == 0 and damage[0].detail == f"impossible record length {2**31}"
    assert not damage[0].runs_to_end


def test_parse_says_short_bad_or_good_and_check_judges_the_body(tmp_path: Path) -> None:
    framing = RecordFraming(MARKER, min_body=2,
                            check=lambda body: "odd" if len(body) % 2 else None)
    path = tmp_path / "f"
    path.write_bytes(framing.encode(b"ab") + framing.encode(b"abc") + framing.encode(b"abcd")[:9])
    with open_fd(path) as fd:
        region = FileRegion(fd, 0, path.stat().st_size)
        assert framing.parse(region, 0) == (GOOD, b"ab", (), "")
        assert framing.parse(region, 14) == (BAD, b"", (), "odd")
        assert framing.parse(region, 29)[0] == SHORT


# -- the lock --------------------------------------------------------------------------------


def test_a_second_locker_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with ExclusiveLock(path) as first:
        assert first.held
        with pytest.raises(LockedError) as refused:
            ExclusiveLock(path)
        assert refused.value.path == path and refused.value.holder == os.getpid()
        assert str(path) in str(refused.value) and str(os.getpid()) in str(refused.value)
    assert not first.held
    ExclusiveLock(path).release()


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from groundstation.storage.durable import ExclusiveLock
            lock = ExclusiveLock({str(path)!r})
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"process {holder.pid}"):
            ExclusiveLock(path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    ExclusiveLock(path).release()  # no stale lock after a crash


# -- atomic replace --------------------------------------------------------------------------


def test_atomic_write_replaces_and_sets_the_mode_exactly(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old")
    old_umask = os.umask(0o077)
    try:
        atomic_write(path, b"new", mode=0o640)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_killed_at_any_moment_leaves_the_old_or_the_new_file(
        tmp_path: Path) -> None:
    path = tmp_path / "state"
    versions = [bytes([65 + i]) * (200_000 + i) for i in range(4)]
    atomic_write(path, versions[0])
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            from groundstation.storage.durable import atomic_write
            versions = [bytes([65 + i]) * (200_000 + i) for i in range(4)]
            i = 0
            print("go", flush=True)
            while True:
                i += 1
                atomic_write({str(path)!r}, versions[i % 4], sync=i % 2 == 0)
        """)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "go"
    time.sleep(0.3)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert path.read_bytes() in versions


# -- appends and fsync -----------------------------------------------------------------------


def test_a_short_append_is_cut_off_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"kept")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        with monkeypatch.context() as patch, pytest.raises(OSError):
            patch.setattr(os, "write", half_then_full)
            append_whole(fd, 4, b"a record of some length")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"kept"


def test_fsync_dir_strict_or_best_effort(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing", strict=False)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
