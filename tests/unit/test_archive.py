"""The raw frame archive: round trips, rotation, seeking, crash damage, recovery, quarantine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundstation.storage.archive import (
    DATA_SUFFIX,
    INDEX_SUFFIX,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    QuarantineReader,
    QuarantineWriter,
    Record,
    StreamKey,
    hash_definition,
)

# Apollo-Soyuz docking, 17 July 1975 16:09:09 UTC, in nanoseconds since the epoch.
DOCKING_NS = int(datetime(1975, 7, 17, 16, 9, 9, tzinfo=UTC).timestamp()) * 10**9
PERIOD = 20_000_000  # Apollo high bit rate: 50 frames a second
HOUR = 3600 * 10**9


@dataclass
class Sent:
    seq: int
    t_ns: int
    frames: np.ndarray
    received_ns: int


def make_frames(n: int, width: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)


def write_stream(root: Path, count: int, *, frames_per_record: int = 5, width: int = 128,
                 start_ns: int = DOCKING_NS, source: str = "live", **kwargs: object) -> list[Sent]:
    """A healthy live stream: consecutive messages of frames_per_record frames."""
    sent = []
    with ArchiveWriter(root, "apollo_csm", "hbr", source, frame_period_ns=PERIOD,
                       **kwargs) as w:  # type: ignore[arg-type]
        for i in range(count):
            seq = i * frames_per_record
            t = start_ns + seq * PERIOD
            s = Sent(seq, t, make_frames(frames_per_record, width, i), t + 3_000_000)
            w.append(s.seq, s.t_ns, s.frames, s.received_ns)
            sent.append(s)
    return sent


def assert_same(records: list[Record], sent: list[Sent]) -> None:
    assert len(records) == len(sent)
    for rec, s in zip(records, sent, strict=True):
        assert (rec.seq, rec.t_ns, rec.received_ns) == (s.seq, s.t_ns, s.received_ns)
        assert rec.frames.dtype == np.uint8
        np.testing.assert_array_equal(rec.frames, s.frames)


def only_file(root: Path) -> Path:
    files = sorted(root.rglob(f"*{DATA_SUFFIX}"))
    assert len(files) == 1, files
    return files[0]


def record_offsets(root: Path) -> list[int]:
    """Start offset of every record of the (single) stream, plus the file end, by index."""
    reader = ArchiveReader(root)
    (f,) = reader.files("apollo_csm", "hbr")
    offsets = [f.header.header_len]
    for rec in reader.iter_records("apollo_csm", "hbr"):
        offsets.append(offsets[-1] + 12 + 32 + rec.frames.size)
    assert offsets[-1] == f.size
    return offsets


# -- round trips -------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 10)
    reader = ArchiveReader(tmp_path)
    assert reader.streams() == [StreamKey("live", "apollo_csm", "hbr")]
    (f,) = reader.files("apollo_csm", "hbr")
    assert f.path.name == "00000001_19750717T160909.000000000Z.gsa"
    assert f.header.vehicle == "apollo_csm" and f.header.source == "live"
    assert f.header.frame_period_ns == PERIOD and f.header.first_t_ns == DOCKING_NS
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    assert reader.problems == []
    # A cleanly closed file is fully indexed: nothing left to scan.
    assert all(b.indexed for b in reader.blocks("apollo_csm", "hbr"))


def test_many_records_and_frame_level_read(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 3000, frames_per_record=3, index_every_records=64)
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    chunks = list(reader.read_frames("apollo_csm", "hbr", chunk_frames=1000))
    assert [len(c.frames) for c in chunks] == [1000] * 9
    frames = np.concatenate([c.frames for c in chunks])
    np.testing.assert_array_equal(frames, np.concatenate([s.frames for s in sent]))
    seq = np.concatenate([c.seq for c in chunks])
    np.testing.assert_array_equal(seq, np.arange(9000))
    times = np.concatenate([c.times_ns for c in chunks])
    np.testing.assert_array_equal(times, DOCKING_NS + np.arange(9000) * PERIOD)
    received = np.concatenate([c.received_ns for c in chunks])
    assert received[4] == sent[1].received_ns  # frame 4 is in the second message
    blocks = list(reader.blocks("apollo_csm", "hbr"))
    assert sum(b.n_frames for b in blocks) == 9000
    assert [b.n_records for b in blocks[:2]] == [64, 64]


def test_read_frames_trims_to_the_interval(tmp_path: Path) -> None:
    write_stream(tmp_path, 100, frames_per_record=10)
    start = DOCKING_NS + 123 * PERIOD
    end = DOCKING_NS + 457 * PERIOD
    reader = ArchiveReader(tmp_path)
    chunks = list(reader.read_frames("apollo_csm", "hbr", "live", start, end, chunk_frames=100))
    seq = np.concatenate([c.seq for c in chunks])
    np.testing.assert_array_equal(seq, np.arange(123, 457))
    assert max(len(c.frames) for c in chunks) <= 100
    # Whole records from iter_records: the ones holding frames 123 and 456 included.
    recs = list(reader.iter_records("apollo_csm", "hbr", "live", start, end))
    assert [r.seq for r in recs] == list(range(120, 460, 10))


def test_rotation_by_hour_and_size(tmp_path: Path) -> None:
    # Two and a half hours at one message a minute, 5 kB files.
    sent = []
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       max_file_bytes=5_000) as w:
        for i in range(150):
            s = Sent(i, DOCKING_NS + i * 60 * 10**9, make_frames(1, 128, i), i)
            w.append(s.seq, s.t_ns, s.frames, s.received_ns)
            sent.append(s)
    reader = ArchiveReader(tmp_path)
    files = reader.files("apollo_csm", "hbr")
    names = [f.path.name for f in files]
    assert names == sorted(names) and len(names) >= 4
    assert all(f.size <= 5_000 for f in files)
    for f in files:  # no file spans two UTC hours
        recs = list(reader._file_records(f, None, None))
        assert len({r.t_ns // HOUR for r in recs}) == 1
        assert recs[0].t_ns == f.header.first_t_ns
    hours = {f.header.first_t_ns // HOUR for f in files}
    assert len(hours) == 3  # 16:09 .. 18:38
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    assert sorted(tmp_path.rglob(f"*{INDEX_SUFFIX}")) == [f.index_path for f in files]


def test_seek_by_time_reads_a_small_part(tmp_path: Path) -> None:
    # An hour of Apollo high bit rate in one-frame messages: 180,000 records, ~31 MB.
    n = 180_000
    frames = make_frames(n, 128)
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       max_file_bytes=1 << 30, fsync_interval=None) as w:
        for i in range(n):
            w.append(i, DOCKING_NS + i * PERIOD, frames[i:i + 1], 0)
    # 16:09:09 + 1 h crosses 17:00: two files, both consulted (header and index).
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.gs?"))
    start = DOCKING_NS + 90_000 * PERIOD
    reader = ArchiveReader(tmp_path)
    chunk = next(reader.read_frames("apollo_csm", "hbr", start_ns=start,
                                    end_ns=start + 50 * PERIOD))
    np.testing.assert_array_equal(chunk.seq, np.arange(90_000, 90_050))
    np.testing.assert_array_equal(chunk.frames, frames[90_000:90_050])
    # The header, the index (703 blocks x 76 bytes) and one or two 256-record blocks.
    assert reader.stats.bytes_read < total / 100, (reader.stats, total)
    assert reader.stats.records <= 2 * 256
    assert reader.stats.index_bytes_read < 60_000


def test_gaps_fall_between_blocks(tmp_path: Path) -> None:
    """A catalogue of passes can be made from the index alone."""
    passes = [(DOCKING_NS, 400), (DOCKING_NS + 600 * 10**9, 700), (DOCKING_NS + HOUR, 50)]
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       block_gap_ns=10**9) as w:
        seq = 0
        for t0, count in passes:
            for i in range(count):
                w.append(seq, t0 + i * PERIOD, make_frames(1, 128, seq), 0)
                seq += 1
    reader = ArchiveReader(tmp_path)
    blocks = list(reader.blocks("apollo_csm", "hbr"))
    found: list[list[int]] = []
    for b in blocks:
        if found and b.t_min - found[-1][1] <= 10**9:
            found[-1][1] = b.t_max
            found[-1][2] += b.n_frames
        else:
            found.append([b.t_min, b.t_max, b.n_frames])
    assert found == [[t0, t0 + (c - 1) * PERIOD, c] for t0, c in passes]
    assert reader.stats.bytes_read < 4000  # headers and indexes only, no frames


def test_live_and_replay_never_mix(tmp_path: Path) -> None:
    live = write_stream(tmp_path, 5)
    replay = write_stream(tmp_path, 7, source="replay/s1", start_ns=DOCKING_NS + 10)
    reader = ArchiveReader(tmp_path)
    assert reader.streams() == [StreamKey("live", "apollo_csm", "hbr"),
                                StreamKey("replay/s1", "apollo_csm", "hbr")]
    assert_same(list(reader.iter_records("apollo_csm", "hbr", "live")), live)
    assert_same(list(reader.iter_records("apollo_csm", "hbr", "replay/s1")), replay)
    # A replay file copied into the live tree is refused, not read as live data.
    (rfile,) = (tmp_path / "replay" / "s1").rglob(f"*{DATA_SUFFIX}")
    live_dir = only_file(tmp_path / "live").parent
    (live_dir / "00000099_19750717T160909.000000010Z.gsa").write_bytes(rfile.read_bytes())
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr", "live")), live)
    assert [p.kind for p in reader.problems] == ["bad_header"]


def test_names_that_could_escape_the_root_are_refused(tmp_path: Path) -> None:
    for vehicle, source in [("../etc", "live"), ("a/b", "live"), ("", "live"),
                            ("apollo_csm", "replay/../../x"), ("apollo_csm", "other"),
                            (".hidden", "live")]:
        with pytest.raises(ArchiveError):
            ArchiveWriter(tmp_path, vehicle, "hbr", source, frame_period_ns=PERIOD)


def test_one_writer_per_stream(tmp_path: Path) -> None:
    with ArchiveWriter(tmp_path, "soyuz", "tm", frame_period_ns=PERIOD):
        with pytest.raises(ArchiveError, match="another writer"):
            ArchiveWriter(tmp_path, "soyuz", "tm", frame_period_ns=PERIOD)
        # Other streams and sources are independent.
        ArchiveWriter(tmp_path, "soyuz", "tm", "replay/x", frame_period_ns=PERIOD).close()
    ArchiveWriter(tmp_path, "soyuz", "tm", frame_period_ns=PERIOD).close()


def test_definition_is_stored_and_a_change_starts_a_new_file(tmp_path: Path) -> None:
    v1, v2 = "schema: 1\nvehicle: apollo_csm\n", "schema: 1\nvehicle: apollo_csm\n# new\n"
    for text, t in [(v1, DOCKING_NS), (v1, DOCKING_NS + PERIOD), (v2, DOCKING_NS + 2 * PERIOD)]:
        with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                           definition_text=text) as w:
            w.append(t // PERIOD, t, make_frames(1), 0)
    reader = ArchiveReader(tmp_path)
    files = reader.files("apollo_csm", "hbr")
    assert [f.header.definition_sha256 for f in files] == [hash_definition(v1),
                                                           hash_definition(v2)]
    assert reader.definition_text(hash_definition(v2)) == v2
    assert len(list(reader.iter_records("apollo_csm", "hbr"))) == 3


def test_for_definition_uses_the_vehicle_file() -> None:
    from groundstation.core.definitions import load_all

    defs = load_all()
    csm = defs["apollo_csm"]
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        with ArchiveWriter.for_definition(root, csm) as w:
            assert w.frame_period_ns == PERIOD
            assert w.definition_sha256 == hash_definition(Path(csm.path).read_bytes())
        reader = ArchiveReader(root)
        assert reader.definition_text(w.definition_sha256) == Path(csm.path).read_text()


def test_bad_arguments(tmp_path: Path) -> None:
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD) as w:
        with pytest.raises(TypeError):
            w.append(0, DOCKING_NS, make_frames(2).astype(np.int16), 0)
        with pytest.raises(TypeError):
            w.append(0, DOCKING_NS, make_frames(2)[0], 0)
        with pytest.raises(ValueError):
            w.append(-1, DOCKING_NS, make_frames(2), 0)
        with pytest.raises(ValueError):
            w.append(0, 2**63, make_frames(2), 0)
        with pytest.raises(ValueError):
            w.append(2**63 - 1, DOCKING_NS, make_frames(2), 0)  # the second frame's seq
        with pytest.raises(ValueError):
            w.append(0, DOCKING_NS, np.zeros((0, 128), np.uint8), 0)
    with pytest.raises(ArchiveError, match="closed"):
        w.append(0, DOCKING_NS, make_frames(1), 0)


# -- crash damage ------------------------------------------------------------------------------


def test_truncated_mid_record_reads_everything_before_the_tear(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 1000, index_every_records=64)
    offsets = record_offsets(tmp_path)
    path = only_file(tmp_path)
    cut = offsets[700] + 100  # 100 bytes into record 700, inside an indexed block
    os.truncate(path, cut)
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:700])
    (torn,) = reader.torn
    assert (torn.path, torn.offset, torn.length, torn.kind) == (path, offsets[700], 100, "torn")
    # The index entries past the cut are ignored, and said to be.
    assert {p.kind for p in reader.problems} == {"torn", "index"}
    # Seeking still works on the damaged file.
    recs = list(ArchiveReader(tmp_path).iter_records(
        "apollo_csm", "hbr", start_ns=sent[650].t_ns, end_ns=sent[651].t_ns))
    assert [r.seq for r in recs] == [sent[650].seq]


@pytest.mark.parametrize("cut_into", [1, 11, 12, 43, 44, 300])
def test_every_kind_of_tear_is_detected(tmp_path: Path, cut_into: int) -> None:
    # Inside the marker, the length, the CRC, the fixed fields, the frames.
    sent = write_stream(tmp_path, 20)
    offsets = record_offsets(tmp_path)
    os.truncate(only_file(tmp_path), offsets[19] + cut_into)
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:19])
    assert [(p.kind, p.offset, p.length) for p in reader.torn] == [
        ("torn", offsets[19], cut_into)]


def test_zero_filled_tail_is_a_tear(tmp_path: Path) -> None:
    # After a power failure some filesystems show the unwritten end of a file as zeros.
    sent = write_stream(tmp_path, 20)
    with only_file(tmp_path).open("ab") as f:
        f.write(bytes(4096))
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    assert [(p.kind, p.length) for p in reader.torn] == [("torn", 4096)]


def test_torn_file_in_the_middle_of_a_stream(tmp_path: Path) -> None:
    # A crash, then a writer that started a new file (here: the next hour).
    first = write_stream(tmp_path, 10)
    offsets = record_offsets(tmp_path)
    os.truncate(only_file(tmp_path), offsets[-1] - 5)
    later = write_stream(tmp_path, 10, start_ns=DOCKING_NS + HOUR)
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), first[:9] + later)
    assert [p.kind for p in reader.torn] == []  # the writer cut the tear off on reopening
    assert len(reader.files("apollo_csm", "hbr")) == 2


def test_writer_reopening_after_a_tear_cuts_it_and_continues(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 300, index_every_records=64)
    offsets = record_offsets(tmp_path)
    path = only_file(tmp_path)
    os.truncate(path, offsets[250] + 50)
    more = []
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       index_every_records=64) as w:
        assert [(p.kind, p.offset) for p in w.recovered] == [("torn", offsets[250])]
        for i in range(250, 400):  # the records lost in the crash are sent again
            t = DOCKING_NS + i * 5 * PERIOD
            s = Sent(i * 5, t, make_frames(5, 128, 10_000 + i), t)
            w.append(s.seq, s.t_ns, s.frames, s.received_ns)
            more.append(s)
        assert w.path == path  # continued the same file
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:250] + more)
    assert reader.problems == []
    blocks = list(reader.blocks("apollo_csm", "hbr"))
    assert all(b.indexed for b in blocks)  # the tail was re-indexed
    assert sum(b.n_records for b in blocks) == 400
    assert only_file(tmp_path) == path


def test_writer_reopening_a_cleanly_closed_file_continues_it(tmp_path: Path) -> None:
    a = write_stream(tmp_path, 10)
    b = write_stream(tmp_path, 10, start_ns=DOCKING_NS + 50 * 5 * PERIOD)
    reader = ArchiveReader(tmp_path)
    only_file(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), a + b)


def test_corrupt_crc_in_the_middle_is_reported_and_skipped(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 200, index_every_records=64)
    offsets = record_offsets(tmp_path)
    path = only_file(tmp_path)
    with path.open("r+b") as f:  # flip one bit in a frame of record 100
        f.seek(offsets[100] + 200)
        byte = f.read(1)[0]
        f.seek(offsets[100] + 200)
        f.write(bytes([byte ^ 0x10]))
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:100] + sent[101:])
    (bad,) = reader.problems
    assert (bad.kind, bad.offset, bad.length) == ("corrupt", offsets[100],
                                                  offsets[101] - offsets[100])
    assert "CRC" in bad.detail


def test_corrupt_length_field_resyncs_at_the_next_record(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 50)
    offsets = record_offsets(tmp_path)
    path = only_file(tmp_path)
    with path.open("r+b") as f:
        f.seek(offsets[10] + 4)
        f.write((10**6).to_bytes(4, "little"))  # claims a megabyte
    # And the index gone, so the whole file is scanned record by record.
    path.with_suffix(INDEX_SUFFIX).unlink()
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:10] + sent[11:])
    assert [(p.kind, p.offset) for p in reader.problems if p.kind != "index"] == [
        ("corrupt", offsets[10])]


def test_writer_leaves_a_file_with_damage_before_good_records_alone(tmp_path: Path) -> None:
    # The writer checks the part of the newest file its index does not cover (damage in
    # indexed blocks is the readers' to find): here the whole file, its index lost.
    sent = write_stream(tmp_path, 20)
    offsets = record_offsets(tmp_path)
    path = only_file(tmp_path)
    path.with_suffix(INDEX_SUFFIX).unlink()
    with path.open("r+b") as f:
        f.seek(offsets[5] + 100)
        f.write(b"\xff\xff")
    before = path.read_bytes()
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD) as w:
        assert [p.kind for p in w.recovered] == ["corrupt"]
        w.append(100, sent[-1].t_ns + PERIOD * 5, make_frames(1), 0)
        assert w.path != path
    assert path.read_bytes() == before
    recs = list(ArchiveReader(tmp_path).iter_records("apollo_csm", "hbr"))
    assert [r.seq for r in recs] == [s.seq for s in sent if s.seq != 25] + [100]


def test_file_with_a_torn_header_is_skipped(tmp_path: Path) -> None:
    sent = write_stream(tmp_path, 5)
    stream = only_file(tmp_path).parent
    (stream / "00000002_19750717T170000.000000000Z.gsa").write_bytes(b"\x89GSA\r\n\x1a\n\x01")
    reader = ArchiveReader(tmp_path)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    assert [p.kind for p in reader.problems] == ["bad_header"]
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD) as w:
        assert [p.kind for p in w.recovered] == ["bad_header"]
        w.append(25, DOCKING_NS + 25 * PERIOD, make_frames(1), 0)
        assert w.path is not None and w.path.name.startswith("00000003_")


def test_sigkilled_writer_loses_nothing_append_returned(tmp_path: Path) -> None:
    """A real process killed mid-stream: every append it reported is readable."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from groundstation.storage.archive import ArchiveWriter
        w = ArchiveWriter({str(tmp_path)!r}, "apollo_csm", "hbr", frame_period_ns={PERIOD})
        frames = np.arange(128 * 50, dtype=np.uint8).reshape(50, 128)
        i = 0
        while True:
            w.append(i * 50, {DOCKING_NS} + i * 50 * {PERIOD}, frames, 0)
            i += 1
            sys.stdout.write(f"{{i}}\\n"); sys.stdout.flush()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = 0
    deadline = time.monotonic() + 30
    while done < 3000 and time.monotonic() < deadline:
        done = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader = ArchiveReader(tmp_path)
    seqs = [r.seq for r in reader.iter_records("apollo_csm", "hbr")]
    assert len(seqs) >= done >= 3000
    assert seqs == list(range(0, len(seqs) * 50, 50))
    assert all(p.kind in ("torn", "index") for p in reader.problems)
    # And the next writer picks up from there.
    with ArchiveWriter(tmp_path, "apollo_csm", "hbr", frame_period_ns=PERIOD) as w:
        w.append(len(seqs) * 50, DOCKING_NS + len(seqs) * 50 * PERIOD, make_frames(50), 0)
    assert len(list(ArchiveReader(tmp_path).iter_records("apollo_csm", "hbr"))) == len(seqs) + 1


def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    with ArchiveWriter(tmp_path, "a", "s", frame_period_ns=PERIOD, fsync_interval=0) as w:
        w.append(0, DOCKING_NS, make_frames(1), 0)  # creates the file (and syncs its dir)
        calls.clear()
        w.append(1, DOCKING_NS + PERIOD, make_frames(1), 0)
        assert len(calls) == 2  # data, then index
    with ArchiveWriter(tmp_path, "b", "s", frame_period_ns=PERIOD, fsync_interval=3600) as w:
        w.append(0, DOCKING_NS, make_frames(1), 0)
        calls.clear()
        for i in range(1, 100):
            w.append(i, DOCKING_NS + i * PERIOD, make_frames(1), 0)
        assert calls == []  # fsync is rate-limited ...
        w.flush()
        assert len(calls) == 2  # ... and forced by flush
        calls.clear()
    assert len(calls) == 2  # and by close


# -- property ----------------------------------------------------------------------------------


appends = st.lists(
    st.tuples(
        st.integers(0, 2**63 - 6),  # seq: every frame's seq fits an int64
        st.integers(0, 3 * HOUR),  # time offset: in any order, across hours
        st.integers(1, 6),  # frames
        st.sampled_from([1, 7, 64]),  # frame bytes
        st.integers(-(2**63), 2**63 - 1),  # received
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(appends, st.integers(1, 8), st.integers(200, 3000))
def test_random_appends_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                   ops: list[tuple[int, int, int, int, int]], every: int,
                                   max_bytes: int) -> None:
    root = tmp_path_factory.mktemp("prop")
    sent = []
    with ArchiveWriter(root, "apollo_csm", "hbr", frame_period_ns=PERIOD, max_file_bytes=max_bytes,
                       index_every_records=every, block_gap_ns=PERIOD * 3) as w:
        for i, (seq, dt, n, width, recv) in enumerate(ops):
            s = Sent(seq, DOCKING_NS + dt, make_frames(n, width, i), recv)
            w.append(s.seq, s.t_ns, s.frames, s.received_ns)
            sent.append(s)
    reader = ArchiveReader(root)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent)
    assert reader.problems == []
    # Any time window gives exactly the records with a frame inside it, in written order.
    if sent:
        lo = sorted(s.t_ns for s in sent)[len(sent) // 3]
        hi = lo + HOUR // 2
        want = [s for s in sent if s.t_ns < hi and s.t_ns + (len(s.frames) - 1) * PERIOD >= lo]
        assert_same(list(reader.iter_records("apollo_csm", "hbr", "live", lo, hi)), want)
        # And frame by frame, trimmed to the window, in chunks of at most 5.
        frames = [(s.seq + i, s.t_ns + i * PERIOD, s.received_ns, bytes(s.frames[i]))
                  for s in sent for i in range(len(s.frames))
                  if lo <= s.t_ns + i * PERIOD < hi]
        def read(**kw: bool) -> list[tuple[int, int, int, bytes]]:
            got = []
            for c in reader.read_frames("apollo_csm", "hbr", "live", lo, hi, chunk_frames=5,
                                        **kw):
                assert 0 < len(c.frames) <= 5
                got += [(int(q), int(t), int(r), bytes(f))
                        for q, t, r, f in zip(c.seq, c.times_ns, c.received_ns, c.frames,
                                              strict=True)]
            return got

        assert read(as_written=True) == frames
        # By default: in time order, each time once; what is left out is counted.
        before = reader.stats.repeats
        ordered = read()
        times = [t for _, t, _, _ in ordered]
        assert times == sorted(set(times)) and set(ordered) <= set(frames)
        assert set(times) <= {t for _, t, _, _ in frames}
        assert len(ordered) + reader.stats.repeats - before == len(frames)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=30), st.floats(0, 1), st.integers(1, 5))
def test_any_cut_keeps_the_records_before_it(tmp_path_factory: pytest.TempPathFactory,
                                             sizes: list[int], where: float, every: int) -> None:
    root = tmp_path_factory.mktemp("cut")
    sent = []
    with ArchiveWriter(root, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       index_every_records=every) as w:
        seq = 0
        for i, n in enumerate(sizes):
            s = Sent(seq, DOCKING_NS + seq * PERIOD, make_frames(n, 32, i), i)
            w.append(s.seq, s.t_ns, s.frames, s.received_ns)
            sent.append(s)
            seq += n
    offsets = record_offsets(root)
    cut = offsets[0] + int(where * (offsets[-1] - offsets[0]))
    os.truncate(only_file(root), cut)
    kept = sum(1 for end in offsets[1:] if end <= cut)
    reader = ArchiveReader(root)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), sent[:kept])
    tears = [(p.offset, p.length) for p in reader.torn]
    assert tears == ([] if cut == offsets[kept] else [(offsets[kept], cut - offsets[kept])])
    # Reopen, append one more: the stream is the kept records plus the new one.
    extra = Sent(10**6, DOCKING_NS + 10**6 * PERIOD, make_frames(2, 32, 99), 0)
    with ArchiveWriter(root, "apollo_csm", "hbr", frame_period_ns=PERIOD,
                       index_every_records=every) as w:
        w.append(extra.seq, extra.t_ns, extra.frames, extra.received_ns)
    reader = ArchiveReader(root)
    assert_same(list(reader.iter_records("apollo_csm", "hbr")), [*sent[:kept], extra])
    assert reader.problems == []


# -- quarantine ----------------------------------------------------------------------------------


def quarantined(root: Path) -> Iterator[tuple[str, str, str, bytes, int]]:
    for m in QuarantineReader(root).iter_messages():
        yield m.topic, m.reason, m.detail, m.payload, m.payload_len


def test_quarantine_round_trip_and_bounds(tmp_path: Path) -> None:
    with QuarantineWriter(tmp_path, max_payload_bytes=100) as q:
        q.append("telemetry/live/apollo_csm/hbr", "not_msgpack", "not a msgpack message: x",
                 b"\xc1garbage", received_ns=DOCKING_NS)
        q.append("telemetry/live/soyuz/tm", "oversize", "5000000 bytes", b"x" * 5000,
                 received_ns=DOCKING_NS + 1)
    got = list(quarantined(tmp_path))
    assert got == [
        ("telemetry/live/apollo_csm/hbr", "not_msgpack", "not a msgpack message: x",
         b"\xc1garbage", 8),
        ("telemetry/live/soyuz/tm", "oversize", "5000000 bytes", b"x" * 100, 5000),
    ]


def test_quarantine_torn_tail_and_reopen(tmp_path: Path) -> None:
    with QuarantineWriter(tmp_path) as q:
        for i in range(5):
            q.append(f"t/{i}", "bad_type", "d", bytes([i]) * 10, received_ns=DOCKING_NS + i)
    (path,) = (tmp_path / "quarantine" / "ingest").glob("*.gsq")
    os.truncate(path, path.stat().st_size - 3)
    reader = QuarantineReader(tmp_path)
    assert [m.topic for m in reader.iter_messages()] == [f"t/{i}" for i in range(4)]
    assert [p.kind for p in reader.problems] == ["torn"]
    with QuarantineWriter(tmp_path) as q:
        assert [p.kind for p in q.recovered] == ["torn"]
        q.append("t/5", "bad_type", "d", b"", received_ns=DOCKING_NS + 5)
    reader = QuarantineReader(tmp_path)
    assert [m.topic for m in reader.iter_messages()] == ["t/0", "t/1", "t/2", "t/3", "t/5"]
    assert reader.problems == []


def test_quarantine_is_bounded_on_disk(tmp_path: Path) -> None:
    with QuarantineWriter(tmp_path, max_file_bytes=10_000, max_total_bytes=50_000) as q:
        for i in range(1000):
            q.append("t", "random_bytes", "", os.urandom(500), received_ns=DOCKING_NS + i)
    files = list((tmp_path / "quarantine" / "ingest").glob("*.gsq"))
    assert sum(f.stat().st_size for f in files) <= 60_000
    msgs = list(QuarantineReader(tmp_path).iter_messages())
    assert msgs[-1].received_ns == DOCKING_NS + 999  # the newest are kept
    assert 50 < len(msgs) < 120
