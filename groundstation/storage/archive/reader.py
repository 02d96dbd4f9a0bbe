"""Reading the raw frame archive: streams, files, blocks, records and frames by time.

Reading never fails on damage: what is skipped is reported (``ArchiveProblem``). The format
is in ``docs/archive-format.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from groundstation.core.topics import Source, SourceKind
from groundstation.storage.archive.format import (
    _NAME_RE,
    _REC_BODY,
    DATA_MAGIC,
    DATA_RECORDS,
    DATA_SUFFIX,
    LIVE,
    RECORD_HEADER_SIZE,
    ArchiveFile,
    ArchiveProblem,
    Block,
    FrameChunk,
    ReaderStats,
    Record,
    StreamKey,
    _BlockAcc,
    _data_header,
    _decode_record,
    _load_index,
    _numbered_files,
    _read_header,
    _scan,
    stream_dir,
)
from groundstation.storage.durable import FileRegion, open_fd

log = logging.getLogger("groundstation.archive")


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
            with open_fd(data.path) as fd:
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
            with open_fd(data.path) as fd:
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
        region = FileRegion(fd, start, end, self.stats)
        period = data.header.frame_period_ns
        acc: _BlockAcc | None = None
        for off, body, _ in _scan(DATA_RECORDS, region, data.path, start, self._report,
                                  at_eof=at_eof):
            seq, t_ns, recv, n, _w = _REC_BODY.unpack_from(body, 0)
            if acc is not None and (acc.breaks_before(seq, t_ns, gap_ns, period)
                                    or off != acc.offset + acc.length):
                yield acc.block(data.path, indexed=False)
                acc = None
            if acc is None:
                acc = _BlockAcc(off)
            acc.add(RECORD_HEADER_SIZE + len(body), seq, t_ns, n, period, recv)
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
        with open_fd(data.path) as fd:
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
                region = FileRegion(fd, start, end, self.stats)
                for _off, body, _ in _scan(DATA_RECORDS, region, data.path, start,
                                           self._report, at_eof=end == data.size):
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
            region: FileRegion | None = None
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
                    region = FileRegion(fd, off, stop, self.stats)
                for roff, body, _ in _scan(DATA_RECORDS, region, path, off, self._report,
                                           at_eof=region.end >= data.size):
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
