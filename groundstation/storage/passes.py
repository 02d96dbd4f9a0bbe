"""Recorded passes: the archive catalogue (`groundstation archive ls` and `archive show`).

A *pass* is one stream's recording from acquisition of signal (AOS, its first frame) to
loss of signal (LOS, its last frame): a run of frames in which no silence lasts longer than
``los_gap_s`` (default 60 s). Silences shorter than that are *gaps* inside the pass (a
dropout, a handover between ground stations); frames missing without a silence (a few lost
frames) show in the ``missing`` count.

Everything comes from the archive's index (``ArchiveReader.runs``): every index block is
one run of consecutive frames (seq and time one frame on each), so passes, gaps and frame
counts are found without reading a single frame; only a file's unindexed tail (at most one
block in a healthy file) is scanned. The runs, sorted by time, are swept once:

* ``frames`` counts distinct frames: a frame archived more than once (a QoS 1 message
  delivered again after a broker or ingest restart) counts once, its further copies in
  ``duplicates`` (a frame is known by its time: frames lie on the frame period's grid);
* frames archived after later ones (Apollo's recorder playing back what was not heard
  live) count where they belong in time, in ``late`` too: a silence a playback filled is
  no gap, and its frames are not missing;
* ``missing``: across a gap (a silence over ``gap_s``) the frames the rate would have
  carried; across a shorter dropout, from the sequence numbers. Both exact.
* a vehicle whose downlink changes format (Apollo's high and low bit rate, one stream
  each): a silence of one stream that another stream of the vehicle fills is a change of
  format (``formats``), not a loss of signal, a gap nor missing frames; the other format's
  frames are that stream's own passes.

Memory is a few numbers per run; nothing depends on the frames.

Rejected input is attributed from the quarantine: a frame that failed its sync or counter
check names its own frame time; a message that failed the envelope check is matched by its
topic (vehicle, stream, source) and its receive time. What matches no pass is counted as
unattributed, never silently dropped.

Pass ids are typable and stable: ``<vehicle>/<stream>/<AOS to the minute>`` in UTC, e.g.
``apollo_csm/hbr/1975-07-17T16:09Z`` (to the second where two passes of a stream start in
the same minute), prefixed with ``replay/<session>/`` for replay recordings. ``ls`` also
numbers the passes 1, 2, ... in AOS order, and ``show 3`` takes that number;
``apollo_csm/hbr/<time>`` also finds the pass of that stream containing the time, given in
UTC or GET.

GET (ground elapsed time) counts from the Apollo liftoff; times are written and read by
groundstation.core.mission_time.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from groundstation.core import topics
from groundstation.core.mission_time import (
    Precision,
    format_get_ns,
    format_utc_ns,
    parse_time_ns,
)
from groundstation.storage.archive import (
    LIVE,
    ArchiveProblem,
    ArchiveReader,
    Block,
    FrameChunk,
    QuarantineReader,
    StreamKey,
)

__all__ = [
    "Catalogue",
    "Gap",
    "Pass",
    "Rejected",
    "drop_repeats",
    "find_pass",
]

DEFAULT_LOS_GAP_S = 60.0
DEFAULT_GAP_S = 1.0  # the archive writer's block gap: silences longer than this are listed
# A rejected message is matched to a pass whose receive times it falls within, give or
# take this much (receive times of a pass's first and last records bound it).
_RECV_MARGIN_NS = 5 * 10**9


def drop_repeats(chunk: FrameChunk, last_t: int) -> tuple[FrameChunk, int, int]:
    """(frames later than every frame before them, the new last time, frames dropped).

    A message received twice (redelivered around a reconnect) is archived twice.
    ``ArchiveReader.read_frames`` already gives each frame once, in time order (and counts
    what it left out in ``stats.repeats``); replay and export keep this as a guard, which
    drops nothing from a version-2 index.
    """
    t = chunk.times_ns
    if not len(t):
        return chunk, last_t, 0
    before = np.maximum.accumulate(np.concatenate(([last_t], t[:-1])))
    keep = t > before
    dropped = int(keep.size - np.count_nonzero(keep))
    if dropped:
        chunk = FrameChunk(chunk.frames[keep], chunk.times_ns[keep], chunk.seq[keep],
                           chunk.received_ns[keep])
    return chunk, max(last_t, int(t.max())), dropped


# -- the catalogue ---------------------------------------------------------------------------


def _frames_upto(b: Block, period: int, t: int) -> int:
    """How many frames of the run b are at or before time t."""
    if t < b.t_min:
        return 0
    if period <= 0:
        return b.n_frames
    return min(b.n_frames, (t - b.t_min) // period + 1)


@dataclass(frozen=True)
class Gap:
    """A silence inside a pass: no frame after ``start_ns`` until ``end_ns``."""

    start_ns: int  # the last frame before the gap
    end_ns: int  # the first frame after it
    missing: int  # frames the stream's rate would have carried

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class FormatSpan:
    """Inside a pass, the vehicle's downlink in another format (another stream)."""

    start_ns: int  # the last frame before the change
    end_ns: int  # the first frame after the change back
    stream: str  # the format it was in meanwhile


@dataclass
class Rejected:
    """Quarantined input attributed to a pass."""

    frames: int = 0  # frames known to be rejected (bad sync/counter, or inside a bad message)
    messages: int = 0  # messages rejected whole (envelope checks)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Pass:
    id: str
    index: int
    key: StreamKey
    aos_ns: int
    los_ns: int
    period_ns: int
    frames: int  # distinct frames recorded (a frame archived twice counts once)
    missing: int  # frames the rate says should be there and are not
    gaps: list[Gap]
    blocks: list[Block]  # the runs of consecutive frames the pass is made of, in time order
    out_of_order: int  # runs overlapping frames already counted (repeated data)
    definitions: list[str]  # definition SHA-256s of the files the pass is in, in order
    files: list[Path]
    recv_min: int
    recv_max: int
    rejected: Rejected | None = None  # None: no quarantine to look in
    problems: list[ArchiveProblem] = field(default_factory=list)
    duplicates: int = 0  # further copies of frames archived more than once (redeliveries)
    late: int = 0  # frames archived after later ones (recorder playback), in their place
    formats: list[FormatSpan] = field(default_factory=list)  # the downlink in another format

    @property
    def archived(self) -> int:
        """Frames in the archive files, copies included."""
        return self.frames + self.duplicates

    @property
    def vehicle(self) -> str:
        return self.key.vehicle

    @property
    def stream(self) -> str:
        return self.key.stream

    @property
    def source(self) -> str:
        return self.key.source

    @property
    def duration_ns(self) -> int:
        return self.los_ns - self.aos_ns

    @property
    def expected(self) -> int:
        if not self.period_ns:
            return self.frames
        other = sum(max(0, (f.end_ns - f.start_ns) // self.period_ns - 1)
                    for f in self.formats)
        return self.duration_ns // self.period_ns + 1 - other

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (``archive ls --json``, ``archive show --json``)."""
        rej = self.rejected
        return {
            "id": self.id, "index": self.index, "source": self.source,
            "vehicle": self.vehicle, "stream": self.stream,
            "aos_ns": self.aos_ns, "los_ns": self.los_ns,
            "aos_utc": format_utc_ns(self.aos_ns, "ms"),
            "los_utc": format_utc_ns(self.los_ns, "ms"),
            "aos_get": format_get_ns(self.aos_ns, "ms"),
            "los_get": format_get_ns(self.los_ns, "ms"),
            "duration_s": self.duration_ns / 1e9, "frames": self.frames,
            "duplicates": self.duplicates, "archived_frames": self.archived,
            "late_frames": self.late,
            "expected_frames": self.expected, "missing_frames": self.missing,
            "gaps": [{"start_utc": format_utc_ns(g.start_ns, "ms"),
                      "end_utc": format_utc_ns(g.end_ns, "ms"),
                      "duration_s": g.duration_ns / 1e9,
                      "missing_frames": g.missing} for g in self.gaps],
            "formats": [{"stream": f.stream, "start_utc": format_utc_ns(f.start_ns, "ms"),
                         "end_utc": format_utc_ns(f.end_ns, "ms"),
                         "duration_s": (f.end_ns - f.start_ns) / 1e9} for f in self.formats],
            "out_of_order_blocks": self.out_of_order,
            "rejected": None if rej is None else {
                "frames": rej.frames, "messages": rej.messages, "reasons": dict(rej.reasons)},
            "definitions": self.definitions, "files": [str(f) for f in self.files],
            "problems": [str(p) for p in self.problems],
        }


@dataclass
class _QItem:
    key: StreamKey | None  # None: the topic names no stream
    frame_ns: int | None  # a rejected frame's own time
    received_ns: int
    reason: str
    frames: int  # frames in it (0 when they cannot be counted)


class Catalogue:
    """The passes of an archive, built from its index (see the module docstring)."""

    def __init__(self, root: str | Path, *, los_gap_s: float = DEFAULT_LOS_GAP_S,
                 gap_s: float = DEFAULT_GAP_S, sources: str | list[str] | None = LIVE,
                 quarantine: bool = True) -> None:
        """sources: "live" (the default), a list, or None for live and every replay session."""
        self.root = Path(root)
        self.reader = ArchiveReader(self.root)
        self.los_gap_ns = int(los_gap_s * 1e9)
        self.gap_ns = int(gap_s * 1e9)
        keys = self.reader.streams()
        if sources is not None:
            wanted = {sources} if isinstance(sources, str) else set(sources)
            keys = [k for k in keys if k.source in wanted]
        self.passes: list[Pass] = []
        for key in keys:
            self.passes += self._stream_passes(key)
        self.passes.sort(key=lambda p: (p.aos_ns, p.source, p.vehicle, p.stream))
        self._name()
        self.quarantine_found = False
        self.unattributed = Rejected()
        if quarantine:
            self._attribute_rejects()

    @property
    def problems(self) -> list[ArchiveProblem]:
        """Damage the reader skipped (torn tails, corrupt records, unreadable headers)."""
        return self.reader.torn

    # -- building --

    def _stream_passes(self, key: StreamKey) -> list[Pass]:
        files = {f.path: f for f in self.reader.files(key.vehicle, key.stream, key.source)}
        # Runs of consecutive frames, as written (the index: see ArchiveReader.runs).
        runs = [b for b in self.reader.runs(key.vehicle, key.stream, key.source)
                if b.path in files]
        if not runs:
            return []
        # Frames that came late: at or before a time written earlier (a recorder's playback
        # or a redelivery). Each run's frames after the latest time written before it were
        # live when they came; those stretches never overlap.
        live: dict[int, int] = {}
        newest: int | None = None
        for b in runs:  # in the order written
            period = files[b.path].header.frame_period_ns
            live[id(b)] = b.n_frames - (0 if newest is None else
                                        _frames_upto(b, period, newest))
            newest = b.t_max if newest is None else max(newest, b.t_max)
        runs.sort(key=lambda b: (b.t_min, -b.t_max))
        others = self._other_formats(key)
        groups: list[list[Block]] = []
        end = None
        for b in runs:
            if end is None or (b.t_min - end > self.los_gap_ns
                               and _filled(others, end, b.t_min, self.los_gap_ns) is None):
                groups.append([b])
                end = b.t_max
            else:
                groups[-1].append(b)
                end = max(end, b.t_max)
        out = []
        for group in groups:
            period = files[group[0].path].header.frame_period_ns
            gaps: list[Gap] = []
            missing = distinct = overlapping = 0
            # One sweep in time order: the frames up to `covered` are counted; a run adds
            # its frames after it (the rest are frames counted already), and the silence
            # before it, if any, is missing frames (a gap when over gap_s).
            covered = group[0].t_min - 1
            next_seq: int | None = None  # seq of the frame after the one at `covered`
            formats: list[FormatSpan] = []
            for b in group:
                p_b = files[b.path].header.frame_period_ns
                other = (_filled(others, covered, b.t_min, max(self.gap_ns, 2 * p_b))
                         if b.t_min > covered and next_seq is not None else None)
                if other is not None:
                    formats.append(FormatSpan(covered, b.t_min, other))
                elif b.t_min > covered and next_seq is not None:
                    silence = b.t_min - covered
                    by_time = max(0, silence // p_b - 1) if p_b else 0
                    if silence > self.gap_ns:
                        gaps.append(Gap(covered, b.t_min, by_time))
                        missing += by_time
                    else:  # a short dropout: exact from the sequence numbers
                        by_seq = b.first_seq - next_seq
                        missing += by_seq if by_seq >= 0 else by_time
                elif next_seq is not None:
                    overlapping += 1
                new = b.n_frames - _frames_upto(b, p_b, covered)
                distinct += new
                if new:
                    covered = b.t_max
                    next_seq = b.end_seq
            archived = sum(b.n_frames for b in group)
            paths = list(dict.fromkeys(b.path for b in group))
            shas = list(dict.fromkeys(files[p].header.definition_sha256 for p in paths))
            problems = [p for p in self.reader.torn if p.path in paths]
            out.append(Pass(
                id="", index=0, key=key, aos_ns=group[0].t_min,
                los_ns=max(b.t_max for b in group), period_ns=period,
                frames=distinct, missing=missing, gaps=gaps,
                blocks=group, out_of_order=overlapping, definitions=shas, files=paths,
                recv_min=min(b.recv_min for b in group),
                recv_max=max(b.recv_max for b in group), problems=problems,
                duplicates=archived - distinct,
                late=max(0, distinct - sum(live[id(b)] for b in group)), formats=formats))
        return out

    def _other_formats(self, key: StreamKey) -> list[tuple[int, int, str]]:
        """When the vehicle's other streams (its downlink's other formats) have frames from
        the same source: [first, last] stretches, joined across silences up to gap_s."""
        spans: list[tuple[int, int, str]] = []
        for k in self.reader.streams():
            if k.vehicle != key.vehicle or k.source != key.source or k.stream == key.stream:
                continue
            for b in sorted(self.reader.runs(k.vehicle, k.stream, k.source),
                            key=lambda b: b.t_min):
                if spans and spans[-1][2] == k.stream and \
                        b.t_min - spans[-1][1] <= self.gap_ns:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], b.t_max), k.stream)
                else:
                    spans.append((b.t_min, b.t_max, k.stream))
        return spans

    def _name(self) -> None:
        by_stream: dict[StreamKey, list[Pass]] = {}
        for i, p in enumerate(self.passes, 1):
            p.index = i
            by_stream.setdefault(p.key, []).append(p)
        for key, passes in by_stream.items():
            prefix = "" if key.source == LIVE else f"{key.source}/"
            precisions: tuple[Precision, ...] = ("m", "s", "ms")
            for precision in precisions:
                names = [format_utc_ns(p.aos_ns, precision) for p in passes]
                if len(set(names)) == len(names):
                    break
            counts = Counter(names)
            for p, name in zip(passes, names, strict=True):
                if counts[name] > 1:  # same millisecond: number them
                    name = f"{name}.{p.index}"
                p.id = f"{prefix}{key.vehicle}/{key.stream}/{name}"

    def _attribute_rejects(self) -> None:
        qdir = self.root / "quarantine"
        if not qdir.is_dir():
            for p in self.passes:
                p.rejected = None
            return
        self.quarantine_found = True
        for p in self.passes:
            p.rejected = Rejected()
        by_stream: dict[StreamKey, list[Pass]] = {}
        for p in self.passes:
            by_stream.setdefault(p.key, []).append(p)
        qr = QuarantineReader(self.root)
        for m in qr.iter_messages():
            item = _quarantine_item(m.topic, m.reason, m.detail, m.payload, m.received_ns)
            target = None
            candidates = by_stream.get(item.key, []) if item.key is not None else []
            if item.frame_ns is not None:
                target = next((p for p in candidates
                               if p.aos_ns <= item.frame_ns <= p.los_ns), None)
            else:
                # Received during a pass, else the nearest pass within the margin.
                def distance(p: Pass, r: int = item.received_ns) -> int:
                    return max(p.recv_min - r, r - p.recv_max, 0)

                near = [p for p in candidates if distance(p) <= _RECV_MARGIN_NS]
                target = min(near, key=distance) if near else None
            rej = target.rejected if target is not None else self.unattributed
            assert rej is not None
            rej.reasons[item.reason] += 1
            rej.frames += item.frames
            if item.frame_ns is None:
                rej.messages += 1

    # -- lookup --

    def find(self, spec: str) -> Pass:
        return find_pass(self.passes, spec)


_FRAME_AT = re.compile(r"^frame at (\d+) ns")


def _quarantine_item(topic: str, reason: str, detail: str, payload: bytes,
                     received_ns: int) -> _QItem:
    try:
        t = topics.parse_telemetry(topic)
        key: StreamKey | None = StreamKey(str(t.source), t.vehicle, t.stream)
    except ValueError:
        key = None
    m = _FRAME_AT.match(detail)
    if m and reason in ("bad_sync", "bad_counter"):
        return _QItem(key, int(m.group(1)), received_ns, reason, 1)
    frames = 0
    # A message rejected whole: count its frames where the payload still says.
    with contextlib.suppress(Exception):
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if isinstance(msg, dict) and isinstance(msg.get("frames"), list):
            frames = len(msg["frames"])
    return _QItem(key, None, received_ns, reason, frames)


def _filled(others: list[tuple[int, int, str]], start: int, end: int, slack: int
            ) -> str | None:
    """The other format that fills the silence (start, end) of a stream, to within
    `slack` at either end, or None."""
    for a, z, stream in others:
        if start < a and a - start <= slack and z < end and end - z <= slack:
            return stream
    return None


def find_pass(passes: list[Pass], spec: str) -> Pass:
    """A pass by id, by its number in ``ls`` (``3`` or ``#3``), or by
    ``[replay/<session>/]<vehicle>/<stream>/<time>`` with a time inside it (UTC or GET)."""
    s = spec.strip()
    for p in passes:
        if p.id == s:
            return p
    m = re.fullmatch(r"#?(\d{1,6})", s)
    if m:
        n = int(m.group(1))
        for p in passes:
            if p.index == n:
                return p
        raise LookupError(f"no pass #{n}: the archive has {len(passes)} "
                          f"(`groundstation archive ls` lists them)")
    parts = s.split("/")
    source = LIVE
    if parts[0] in (topics.REPLAY, topics.TRAINING) and len(parts) >= 3:
        try:
            source = topics.check_source(f"{parts[0]}/{parts[1]}")
        except ValueError as exc:
            raise LookupError(f"no pass {spec!r}: {exc}") from None
        parts = parts[2:]
    if len(parts) >= 3:
        vehicle, stream, when = parts[0], parts[1], "/".join(parts[2:])
        try:
            t = parse_time_ns(when)
        except ValueError as exc:
            raise LookupError(f"no pass {spec!r}: {exc}") from None
        hits = [p for p in passes if (p.source, p.vehicle, p.stream) == (source, vehicle, stream)
                and p.aos_ns - 60 * 10**9 < t <= p.los_ns]
        # AOS to the minute: the pass starting in that minute comes first.
        hits.sort(key=lambda p: (not p.aos_ns <= t + 60 * 10**9, abs(p.aos_ns - t)))
        if hits:
            return hits[0]
    raise LookupError(f"no pass {spec!r}; give an id or number from "
                      "`groundstation archive ls`, or <vehicle>/<stream>/<UTC or GET time>")

