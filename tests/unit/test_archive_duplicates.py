"""Frames archived more than once or out of time order: QoS 1 redeliveries after a broker or
ingest restart, and Apollo's recorder playing back old frames later. The catalogue counts
each frame once (duplicates apart), missing frames and gaps are exact (a gap a dump filled
is no gap), and export and read_frames give each frame once, in time order."""

from __future__ import annotations

import csv
import itertools
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundstation.cli import main
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.mission_time import parse_time_ns
from groundstation.storage import export
from groundstation.storage.archive import INDEX_SUFFIX, ArchiveReader, ArchiveWriter
from groundstation.storage.passes import Catalogue
from tests.paths import MINI

T0 = parse_time_ns("1975-07-17T16:09:09Z")
P = 20_000_000  # mini: 50 frames a second
FPM = 5
DEFN = load_definition(MINI)
ENC = FrameEncoder(DEFN)


def frames_of(seq: int, n: int) -> np.ndarray:
    """The frames seq .. seq+n-1, the same bytes every time they are sent."""
    return ENC.encode({"cabin_press": 5.0, "hatch": "CLOSED",
                       "range": (seq + np.arange(n)) * 0.01}, n, start_counter=1 + seq % 50)


def write(root: Path, runs: list[tuple[int, int]], *, per: int = FPM, **kw: object) -> None:
    """Append (first seq, frames) runs in this order, `per` frames a message, frame seq s at
    T0 + s * P: a redelivery or a playback is a run of seqs already passed."""
    with ArchiveWriter.for_definition(root, DEFN, **kw) as w:  # type: ignore[arg-type]
        for first, n in runs:
            for s in range(first, first + n, per):
                k = min(per, first + n - s)
                w.append(s, T0 + s * P, frames_of(s, k), T0 + s * P + 5_000_000)


def numbers(root: Path, **kw: object) -> list[tuple[int, int, int, int]]:
    """(distinct frames, duplicates, missing, late) of each pass."""
    cat = Catalogue(root, **kw)  # type: ignore[arg-type]
    assert cat.reader.stats.records == 0  # from the index alone
    return [(p.frames, p.duplicates, p.missing, p.late) for p in cat.passes]


def exported_seqs(root: Path, tmp_path: Path) -> tuple[list[int], export.ExportResult]:
    (p,) = Catalogue(root).passes
    r = export.export_pass(root, p, tmp_path / "x.csv", progress=False, chunk_frames=64)
    with (tmp_path / "x.csv").open() as f:
        rows = list(csv.DictReader(f))
    times = [int(x["time_ns"]) for x in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    return [int(x["seq"]) for x in rows], r


# -- redeliveries ----------------------------------------------------------------------------


def test_a_redelivered_block_counts_once(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # 0..999, an ingest restart: the broker sends 900..999 again, then the stream goes on.
    write(root, [(0, 1000), (900, 100), (1000, 500)])
    assert numbers(root) == [(1500, 100, 0, 0)]
    (p,) = Catalogue(root).passes
    assert (p.aos_ns, p.los_ns, p.gaps, p.expected) == (T0, T0 + 1499 * P, [], 1500)
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == list(range(1500)) and (r.rows, r.repeats) == (1500, 100)


def test_an_old_redelivery_does_not_make_frames_missing(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # Messages unacknowledged for long (the database was down) come again after a restart:
    # 100..199 arrive again after 0..1279, then the stream goes on from 1280.
    write(root, [(0, 1280), (100, 100), (1280, 720)])
    assert numbers(root) == [(2000, 100, 0, 0)]
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == list(range(2000)) and r.repeats == 100


def test_a_redelivered_message_inside_a_block_hides_no_missing_frames(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # 0..49, a short dropout (50..54 lost, 0.1 s: no gap), 55..99, and the message 95..99
    # delivered twice in a row (one unacknowledged message sent again).
    write(root, [(0, 50), (55, 45), (95, 5), (100, 50)])
    assert numbers(root) == [(145, 5, 5, 0)]
    seqs, _ = exported_seqs(root, tmp_path)
    assert seqs == [*range(50), *range(55, 150)]


def test_a_partial_overlap_counts_only_the_overlap(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # Messages cut differently the second time: 0..99 in fives, then 97..196 in sevens
    # (97..99 a second time), then on.
    with ArchiveWriter.for_definition(root, DEFN) as w:
        for s in range(0, 100, 5):
            w.append(s, T0 + s * P, frames_of(s, 5), 0)
        for s in range(97, 197, 7):
            k = min(7, 197 - s)
            w.append(s, T0 + s * P, frames_of(s, k), 0)
    assert numbers(root) == [(197, 3, 0, 0)]
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == list(range(197)) and r.repeats == 3


# -- recorder playback ---------------------------------------------------------------------


def test_a_playback_dump_fills_its_gap(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # 0..499, 10 s not heard (500..999), 1000..1499; then the recorder plays 500..999 back
    # (written after 1499), and the live stream goes on.
    write(root, [(0, 500), (1000, 500)])
    (p,) = Catalogue(root).passes
    assert (p.frames, p.missing, len(p.gaps)) == (1000, 500, 1)
    write(root, [(500, 500), (1500, 500)])
    assert numbers(root) == [(2000, 0, 0, 500)]
    (p,) = Catalogue(root).passes
    assert p.gaps == [] and p.expected == 2000
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == list(range(2000)) and r.repeats == 0
    summary = p.summary()
    assert (summary["frames"], summary["duplicates"], summary["late_frames"],
            summary["missing_frames"]) == (2000, 0, 500, 0)


def test_a_partial_dump_leaves_the_rest_of_the_gap(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # The dump 450..749 repeats 450..499 and fills 500..749 of the 500..999 gap.
    write(root, [(0, 500), (1000, 500), (450, 300)])
    assert numbers(root) == [(1250, 50, 250, 250)]
    (p,) = Catalogue(root).passes
    assert [(g.start_ns, g.end_ns, g.missing) for g in p.gaps] == [
        (T0 + 749 * P, T0 + 1000 * P, 250)]
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == [*range(750), *range(1000, 1500)] and r.repeats == 50


def test_a_dump_joins_two_passes_and_may_be_in_an_older_hour(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # Two minutes not heard split the recording in two passes; the dump of those two
    # minutes (written last, into a file of its own) makes it one.
    write(root, [(0, 3000), (9000, 3000)])
    assert [p.frames for p in Catalogue(root).passes] == [3000, 3000]
    write(root, [(3000, 6000)], rotate_ns=60 * 10**9)
    assert numbers(root) == [(12000, 0, 0, 6000)]
    seqs, _ = exported_seqs(root, tmp_path)
    assert seqs == list(range(12000))


def test_cli_reports_duplicates_and_late_frames(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "a"
    write(root, [(0, 500), (1000, 500), (500, 500), (900, 200), (1500, 100)])
    assert main(["archive", "show", "1", "--archive-dir", str(root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["frames"], s["duplicates"], s["late_frames"], s["missing_frames"],
            s["gaps"]) == (1600, 200, 500, 0, [])
    assert s["archived_frames"] == 1800
    assert main(["archive", "show", "1", "--archive-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "1,600 distinct" in out and "200 duplicates" in out and "500 late" in out
    assert main(["archive", "ls", "--archive-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "dups" in out and " 1,600 " in out


# -- read_frames ------------------------------------------------------------------------------


def test_read_frames_as_written_keeps_the_arrival_order(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write(root, [(0, 10), (20, 10), (5, 20)])
    reader = ArchiveReader(root)
    raw = np.concatenate([c.seq for c in reader.read_frames("mini", "hbr", as_written=True)])
    assert raw.tolist() == [*range(10), *range(20, 30), *range(5, 25)]
    ordered = np.concatenate([c.seq for c in reader.read_frames("mini", "hbr")])
    assert ordered.tolist() == list(range(30)) and reader.stats.repeats == 10
    # A window: each frame in it once, in order.
    win = np.concatenate([c.seq for c in reader.read_frames(
        "mini", "hbr", start_ns=T0 + 8 * P, end_ns=T0 + 22 * P, chunk_frames=3)])
    assert win.tolist() == list(range(8, 22))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 40), st.integers(1, 7)),
                min_size=1, max_size=25),
       st.integers(1, 6), st.integers(0, 300), st.integers(1, 200))
def test_any_arrival_order_reads_back_each_frame_once_in_time_order(
        tmp_path_factory: pytest.TempPathFactory, runs: list[tuple[int, int, int]],
        every: int, lo: int, width: int) -> None:
    root = tmp_path_factory.mktemp("dup")
    with ArchiveWriter.for_definition(root, DEFN, index_every_records=every) as w:
        for first, n, per in runs:
            for s in range(first, first + n, per):
                k = min(per, first + n - s)
                w.append(s, T0 + s * P, frames_of(s, k), 0)
    sent = sorted({s for first, n, _ in runs for s in range(first, first + n)})
    archived = sum(n for _, n, _ in runs)
    reader = ArchiveReader(root)
    got = [c for c in reader.read_frames("mini", "hbr", chunk_frames=7)]
    seq = np.concatenate([c.seq for c in got]).tolist()
    assert seq == sent and reader.stats.repeats == archived - len(sent)
    t = np.concatenate([c.times_ns for c in got])
    np.testing.assert_array_equal(t, T0 + np.array(sent) * P)
    np.testing.assert_array_equal(np.concatenate([c.frames for c in got]),
                                  np.concatenate([frames_of(s, 1) for s in sent]))
    window = [s for s in sent if lo <= s < lo + width]
    part = [c.seq for c in ArchiveReader(root).read_frames(
        "mini", "hbr", start_ns=T0 + lo * P, end_ns=T0 + (lo + width) * P, chunk_frames=5)]
    assert (np.concatenate(part).tolist() if part else []) == window
    # The catalogue, from the index alone: distinct frames, duplicates, exact missing.
    cat = Catalogue(root, los_gap_s=10**6)
    (p,) = cat.passes
    assert cat.reader.stats.records == 0
    assert (p.frames, p.duplicates) == (len(sent), archived - len(sent))
    assert p.missing == (sent[-1] - sent[0] + 1) - len(sent) == p.expected - p.frames
    holes = [(a, b) for a, b in itertools.pairwise(sent) if (b - a) * P > 10**9]
    assert [(g.start_ns, g.end_ns, g.missing) for g in p.gaps] == [
        (T0 + a * P, T0 + b * P, b - a - 1) for a, b in holes]


# -- the index format --------------------------------------------------------------------------


def _to_v1_index(path: Path) -> None:
    """Rewrite a version-2 index as the version-1 writer would have: same entries, v1."""
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, 1)
    path.write_bytes(bytes(raw))


def _v1_writer_blocks(root: Path) -> None:
    """Re-index a stream as the version-1 writer cut it (blocks break only on time), so the
    catalogue meets v1 blocks holding duplicates and holes."""
    from groundstation.storage.archive import format as a

    reader = ArchiveReader(root)
    for f in reader.files("mini", "hbr"):
        entries = []
        acc = None
        offset = f.header.header_len
        for rec in reader._file_records(f, None, None):
            n = rec.frames.shape[0]
            size = a.RECORD_HEADER_SIZE + a._REC_BODY.size + rec.frames.size
            if acc is not None and (rec.t_ns < acc.last_t or rec.t_ns - acc.t_max > 10**9):
                entries.append(acc.entry())
                acc = None
            if acc is None:
                acc = a._BlockAcc(offset)
            acc.add(size, rec.seq, rec.t_ns, n, f.header.frame_period_ns, rec.received_ns)
            offset += size
        if acc is not None:
            entries.append(acc.entry())
        head = a._IDX_HEAD.pack(a.INDEX_MAGIC, 1, 0, f.header.crc)
        f.index_path.write_bytes(head + b"".join(entries))


def test_version_1_index_files_are_still_read(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # A dropout (50..54), the message 95..99 three times, an old redelivery (200..299).
    write(root, [(0, 50), (55, 45), (95, 5), (95, 5), (100, 400), (200, 100)])
    assert numbers(root) == [(495, 110, 5, 0)]
    (idx,) = (root / "live" / "mini" / "hbr").glob(f"*{INDEX_SUFFIX}")
    assert struct.unpack_from("<H", idx.read_bytes(), 8) == (2,)
    _v1_writer_blocks(root)
    assert struct.unpack_from("<H", idx.read_bytes(), 8) == (1,)
    cat = Catalogue(root)
    assert [(p.frames, p.duplicates, p.missing) for p in cat.passes] == [(495, 110, 5)]
    assert not any(p.kind == "index" for p in cat.reader.problems)  # the index was used
    reader = ArchiveReader(root)
    seqs = np.concatenate([c.seq for c in reader.read_frames("mini", "hbr")]).tolist()
    assert seqs == [*range(50), *range(55, 500)] and reader.stats.repeats == 110
    # A writer continuing the stream starts a new file rather than append v2 blocks to a
    # v1 index; both read together.
    write(root, [(500, 100)])
    assert numbers(root)[0][:3] == (595, 110, 5)
    idx_files = sorted((root / "live" / "mini" / "hbr").glob(f"*{INDEX_SUFFIX}"))
    assert [struct.unpack_from("<H", p.read_bytes(), 8)[0] for p in idx_files] == [1, 2]
    # Healthy v1 entries (one run each) are taken as they are, without reading records.
    _to_v1_index(idx_files[1])
    cat = Catalogue(root)
    assert [(p.frames, p.duplicates, p.missing) for p in cat.passes] == [(595, 110, 5)]


def test_the_limit_of_version_1_index_entries(tmp_path: Path) -> None:
    """A v1 entry whose numbers fit one run is taken as one without reading it: wrong only
    when one v1 block holds a message received twice in a row and a dropout of exactly as
    many frames. Version-2 indexes cannot have it."""
    root = tmp_path / "a"
    write(root, [(0, 50), (55, 45), (95, 5), (100, 50)])
    assert numbers(root) == [(145, 5, 5, 0)]
    _v1_writer_blocks(root)
    assert numbers(root) == [(150, 0, 0, 0)]  # the repeat hides the dropout
    # Reading frames still gives each once, in order, thanks to drop_repeats downstream.
    seqs, r = exported_seqs(root, tmp_path)
    assert seqs == [*range(50), *range(55, 150)] and r.repeats == 5


def test_index_entries_stay_76_bytes_with_a_good_crc(tmp_path: Path) -> None:
    root = tmp_path / "a"
    write(root, [(0, 100), (50, 100)])
    (idx,) = (root / "live" / "mini" / "hbr").glob(f"*{INDEX_SUFFIX}")
    raw = idx.read_bytes()
    assert len(raw) == 16 + 2 * 76  # the header, then one entry per run
    for pos in range(16, len(raw), 76):
        (crc,) = struct.unpack_from("<I", raw, pos + 72)
        assert zlib.crc32(raw[pos:pos + 72]) == crc
