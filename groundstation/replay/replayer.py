"""Replay of recorded passes: `groundstation replay PASS | --from T --to T [--vehicle V]`.

The recorded frames go back through the broker under ``telemetry/replay/<session>/<vehicle>
/<stream>`` (never the live subtree: the broker's ACL lets the ``replay`` account publish
nothing else), with their original spacecraft times and sequence numbers, in time order
across streams, and with their original timing at the chosen speed (1, 10, 100, any
positive factor, or ``max``: as fast as the broker takes them). The ingest processes a
session like live data, into InfluxDB under ``source=replay/<session>`` and alarms on
``alarms/replay/<session>/...``, which no live console subscribes to.

Messages: at a finite speed each message carries a tenth of a second of wall time of
frames (5 Apollo frames at speed 1, as the live downlink sends them; 500 at speed 100);
at ``max`` up to ``max_frames_per_message`` (2048). A message never spans a discontinuity
(sequence number or time not one frame period on) nor a change of definitions. A frame
whose time is not after the last one sent for its stream (the same message received twice
around a reconnect, archived twice) is skipped, so the replay is what the spacecraft sent,
in order.

Limits at the time: before its first frame the tool announces the session on
``replay/session/<session>`` (retained) with the definition files the frames were recorded
with (``--limits recorded``, the default; the archive keeps each by SHA-256), or none
(``--limits current``: the ingest's own). See groundstation/replay/session.py for the
handshake, the control topic and the status topic.

Reading seeks by the archive's index: a replay of ten minutes out of a day's recording
reads those ten minutes.

Commands: the command history recorded with the span (every stage of every command the
commanding service handled, groundstation/replay/commands.py) is republished on the
session's own cmd/events and cmd/history topics as the replay reaches each command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.config import MqttConfig
from groundstation.core import flightplan as tl
from groundstation.core import messages, topics
from groundstation.core.envelope import MAX_FRAMES, encode_envelope
from groundstation.core.mission_time import (
    format_get_ns,
    format_utc_ns,
    parse_time_ns,
    utc_ns_to_get,
)
from groundstation.mqtt import BrokerError, Connection, MqttClient, Will, broker_error_of
from groundstation.progress import Progress
from groundstation.replay import session as rs
from groundstation.replay.commands import CommandReplay
from groundstation.storage.archive import LIVE, ArchiveReader, FrameChunk, StreamKey
from groundstation.storage.passes import Catalogue, drop_repeats
from groundstation.tasks import TaskGroup

__all__ = ["ReplayControl", "ReplayPlan", "ReplayResult", "Replayer", "parse_speed",
           "plan_replay"]

log = logging.getLogger("groundstation.replay")

MAX_FRAMES_PER_MESSAGE = 2048
_WALL_PER_MESSAGE_S = 0.1  # at a finite speed, a message carries this much wall time
_STATUS_EVERY_S = 1.0
# A definition file that is another format of its vehicle's downlink (top-level subset_of).
_SUBSET_OF = re.compile(r"^subset_of:[ \t]*\S", re.M)


# One definition of a speed for the command line and the control topic.
parse_speed = messages.parse_replay_speed


def speed_text(speed: float | None) -> str:
    return "max" if speed is None else f"{speed:g}x"


def new_session_id() -> str:
    return time.strftime("r%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


# -- what to replay --------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """From ``start_ns`` on, a stream's files were written with this definition."""

    start_ns: int
    sha256: str
    period_ns: int


@dataclass
class ReplayPlan:
    streams: list[StreamKey]
    start_ns: int
    end_ns: int  # exclusive
    total_frames: int  # from the index (an estimate where a block is cut by the range)
    pass_id: str | None = None
    segments: dict[StreamKey, list[Segment]] = field(default_factory=dict)

    def describe(self) -> str:
        what = self.pass_id or ", ".join(f"{k.vehicle}/{k.stream}" for k in self.streams)
        return (f"{what}: {format_utc_ns(self.start_ns)} .. {format_utc_ns(self.end_ns - 1)} "
                f"(GET {format_get_ns(self.start_ns)} .. {format_get_ns(self.end_ns - 1)}), "
                f"~{self.total_frames:,} frames")


def _segments(reader: ArchiveReader, key: StreamKey) -> list[Segment]:
    # By time, not by writing order: a recorder's playback may sit in a file written after
    # files of later frames.
    out: list[Segment] = []
    for f in sorted(reader.files(key.vehicle, key.stream, key.source),
                    key=lambda f: (f.header.first_t_ns, f.number)):
        h = f.header
        if not out or (out[-1].sha256, out[-1].period_ns) != (h.definition_sha256,
                                                               h.frame_period_ns):
            out.append(Segment(h.first_t_ns, h.definition_sha256, h.frame_period_ns))
    return out


def plan_replay(root: str | Path, *, pass_spec: str | None = None, start: str | int | None = None,
                end: str | int | None = None, vehicle: str | None = None,
                los_gap_s: float = 60.0) -> ReplayPlan:
    """A pass (by id, number or time) or a time range [start, end] of the live recordings
    (optionally one vehicle's); LookupError if there is nothing to replay."""
    reader = ArchiveReader(root)
    if pass_spec is not None:
        # Numbers as `archive ls` gives them (live passes); replay recordings by their id.
        cat = Catalogue(root, los_gap_s=los_gap_s, quarantine=False,
                        sources=None if pass_spec.split("/", 1)[0] in (topics.REPLAY,
                                                                        topics.TRAINING)
                        else LIVE)
        p = cat.find(pass_spec)
        plan = ReplayPlan([p.key], p.aos_ns, p.los_ns + 1, p.frames, p.id)
    else:
        if start is None or end is None:
            raise LookupError("give a PASS, or --from and --to")
        t0, t1 = parse_time_ns(start), parse_time_ns(end)
        if t1 < t0:
            raise LookupError(f"--to {end} is before --from {start}")
        keys = [k for k in reader.streams() if k.source == LIVE
                and vehicle in (None, k.vehicle)]
        total = 0
        chosen = []
        for k in keys:
            n = 0
            for b in reader.blocks(k.vehicle, k.stream, k.source):
                if b.t_max < t0 or b.t_min > t1:
                    continue
                span = max(b.t_max - b.t_min, 1)
                inside = min(b.t_max, t1) - max(b.t_min, t0)
                n += b.n_frames if b.t_min >= t0 and b.t_max <= t1 else \
                    max(1, round(b.n_frames * max(inside, 0) / span))
            if n:
                chosen.append(k)
                total += n
        if not chosen:
            who = f" of {vehicle}" if vehicle else ""
            raise LookupError(f"no recorded frames{who} between {format_utc_ns(t0)} and "
                              f"{format_utc_ns(t1)} (`groundstation archive ls` lists passes)")
        plan = ReplayPlan(chosen, t0, t1 + 1, total)
    plan.segments = {k: _segments(reader, k) for k in plan.streams}
    return plan


# -- reading frames --------------------------------------------------------------------------


class _Feed:
    """One stream's frames from a time on, cut into runs a message may carry."""

    def __init__(self, reader: ArchiveReader, key: StreamKey, start_ns: int, end_ns: int,
                 segments: list[Segment], chunk_frames: int = 16384) -> None:
        self.key = key
        self.segments = segments
        self._seg_starts = np.array([s.start_ns for s in segments] or [0], dtype=np.int64)
        self._it: Iterator[FrameChunk] = reader.read_frames(
            key.vehicle, key.stream, key.source, start_ns, end_ns, chunk_frames=chunk_frames)
        self.last_t = -1  # time of the last frame taken (or skipped as a repeat)
        self.skipped = 0  # repeated frames skipped
        self._chunk: FrameChunk | None = None
        self._seg: NDArray[np.int64] = np.empty(0, np.int64)
        self._breaks: NDArray[np.int64] = np.empty(0, np.int64)
        self._pos = 0
        self._bi = 0
        self._done = False

    def _load(self) -> bool:
        while self._chunk is None or self._pos >= len(self._chunk.times_ns):
            if self._done:
                return False
            chunk = next(self._it, None)
            if chunk is None:
                self._done = True
                self._chunk = None
                return False
            chunk, self.last_t, dropped = drop_repeats(chunk, self.last_t)
            self.skipped += dropped
            if not len(chunk.times_ns):
                continue
            seg = np.searchsorted(self._seg_starts, chunk.times_ns, side="right") - 1
            seg = np.maximum(seg, 0)
            periods = np.array([s.period_ns for s in self.segments] or [0],
                               dtype=np.int64)[seg]
            cont = ((np.diff(chunk.seq) == 1) & (np.diff(chunk.times_ns) == periods[1:])
                    & (seg[1:] == seg[:-1]))
            self._breaks = np.concatenate((np.flatnonzero(~cont) + 1, [len(chunk.times_ns)]))
            self._chunk, self._seg, self._pos, self._bi = chunk, seg, 0, 0
        return True

    def next_t(self) -> int | None:
        if not self._load():
            return None
        assert self._chunk is not None
        return int(self._chunk.times_ns[self._pos])

    def segment(self) -> Segment:
        return self.segments[int(self._seg[self._pos])] if self.segments else Segment(0, "", 0)

    def take(self, max_frames: int) -> tuple[int, int, NDArray[np.uint8]]:
        """(seq, time, frames) of the next consecutive frames, at most max_frames."""
        if not self._load():
            raise StopIteration
        chunk = self._chunk
        assert chunk is not None
        while self._breaks[self._bi] <= self._pos:
            self._bi += 1
        stop = min(int(self._breaks[self._bi]), self._pos + max_frames)
        i = self._pos
        self._pos = stop
        return int(chunk.seq[i]), int(chunk.times_ns[i]), chunk.frames[i:stop]


# -- control -----------------------------------------------------------------------------------


class ReplayControl:
    """The state the control topic changes: paused, speed, a pending seek, stop."""

    def __init__(self, speed: float | None, start_ns: int, end_ns: int) -> None:
        self.speed = speed
        self.paused = False
        self.stopped = False
        self.seek_to: int | None = None
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.position_ns = start_ns
        self.changed = asyncio.Event()
        self.last: messages.ReplayControlReply | None = None  # the answer to the last one

    def handle(self, command: bytes | messages.ReplayControl) -> messages.ReplayControlReply:
        """Apply one control message (JSON or text, see messages.ReplayControl); the answer
        is also kept in ``last`` for the status."""
        try:
            cmd = command if isinstance(command, messages.ReplayControl) else \
                messages.ReplayControl.from_json(command)
            self._do(cmd)
            answer = messages.ReplayControlReply(
                ok=True, command=cmd.command, speed=speed_text(self.speed),
                paused=self.paused, time_ns=time.time_ns())
        except ValueError as exc:  # MessageError included
            answer = messages.ReplayControlReply(ok=False, error=str(exc),
                                                 time_ns=time.time_ns())
        self.last = answer
        self.changed.set()
        return answer

    def apply(self, payload: bytes) -> dict[str, Any]:
        """handle(), the answer as plain data."""
        return self.handle(payload).to_dict()

    def _do(self, cmd: messages.ReplayControl) -> None:
        if cmd.command == "pause":
            self.paused = True
        elif cmd.command == "resume":
            self.paused = False
        elif cmd.command == "stop":
            self.stopped = True
        elif cmd.command == "speed":
            self.speed = cmd.factor
        elif cmd.command == "seek":
            if cmd.by_s is not None:
                to = self.position_ns + int(cmd.by_s * 1e9)
            else:
                assert cmd.to is not None  # the message requires one of the two
                to = parse_time_ns(cmd.to)
            self.seek_to = min(max(to, self.start_ns), self.end_ns - 1)


# -- the replay ------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    session: str
    state: str  # "finished" or "stopped"
    frames_sent: int
    messages_sent: int
    repeats_skipped: int
    seconds: float
    definitions: dict[str, str]  # vehicle -> definition SHA-256 announced ("" = current)


class Replayer:
    """One replay session over one connection (groundstation.mqtt): a broker lost midway
    ends the replay with BrokerError (the ingest finishes the session by the will)."""

    def __init__(self, root: str | Path, plan: ReplayPlan, *, mqtt: MqttConfig | None = None,
                 host: str = "127.0.0.1", port: int = 1883, username: str | None = None,
                 password: str | None = None,
                 session: str | None = None, speed: float | None = None,
                 limits: messages.ReplayLimits = "recorded", progress: bool = True,
                 max_frames_per_message: int = MAX_FRAMES_PER_MESSAGE,
                 progress_stream: Any = None) -> None:
        if limits not in rs.LIMITS:
            raise ValueError(f"limits must be one of {rs.LIMITS}")
        if not 1 <= max_frames_per_message <= MAX_FRAMES:
            raise ValueError(f"max_frames_per_message must be 1..{MAX_FRAMES}")
        self.root = Path(root)
        self.reader = ArchiveReader(self.root)
        self.plan = plan
        # The broker: the [mqtt] section, or a plain one from host, port, username, password.
        self.mqtt = mqtt or MqttConfig(host=host, port=port, username=username,  # type: ignore[call-arg]
                                       password=password)  # type: ignore[arg-type]
        self.session = rs.check_session(session or new_session_id())
        self.source = topics.replay(self.session)
        self.limits = limits
        self.max_fpm = max_frames_per_message
        self.control = ReplayControl(speed, plan.start_ns, plan.end_ns)
        self.progress = Progress(plan.total_frames, desc=f"replay {self.session}",
                                 enabled=progress, stream=progress_stream)
        self.frames_sent = 0
        self.messages_sent = 0
        self.state: messages.ReplayState = "starting"
        self.warnings: list[str] = []
        self._announced: dict[str, str] = {}  # vehicle -> sha256 in the session message
        self._phases: dict[str, str] = {}  # vehicle -> mission phase announced
        self._texts: dict[str, str] = {}
        self._last_status = 0.0
        self._feeds: dict[StreamKey, _Feed] = {}
        # The commands recorded with the span, republished as the replay reaches them.
        sources = {k.source for k in plan.streams} or {LIVE}
        self.commands = CommandReplay(self.root, sorted(sources)[0],
                                      {k.vehicle for k in plan.streams}, plan.start_ns,
                                      plan.end_ns, self.source)

    # -- definitions --

    def _definition_text(self, sha: str) -> str | None:
        if sha not in self._texts:
            path = self.root / "definitions" / f"{sha}.yaml"
            try:
                # Bytes, not read_text: its newline translation would change the SHA-256.
                self._texts[sha] = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                return None
        return self._texts[sha]

    def _session_payload(self, wanted: dict[str, tuple[str, str]]) -> bytes:
        defs: dict[str, tuple[str, str, str]] = {}
        announced: dict[str, str] = {}
        for vehicle, (stream, sha) in wanted.items():
            text = self._definition_text(sha) if sha and self.limits == "recorded" else None
            if self.limits == "recorded" and text is None:
                msg = (f"{vehicle}: the definitions it was recorded with "
                       f"({sha[:12] or 'unknown'}) are not in the archive; the ingest "
                       "checks its limits with the current ones")
                if msg not in self.warnings:
                    self.warnings.append(msg)
                    log.warning("%s", msg)
            if text is not None:
                defs[vehicle] = (stream, sha, text)
            announced[vehicle] = sha if text is not None else ""
        self._announced = announced
        return rs.session_message(
            self.session, self.limits, defs, **{
                "pass": self.plan.pass_id, "from_ns": self.plan.start_ns,
                "to_ns": self.plan.end_ns - 1, "started_ns": time.time_ns()})

    # -- status --

    def status(self) -> messages.ReplayStatus:
        c = self.control
        return messages.ReplayStatus(
            session=self.session, state=self.state,
            speed=speed_text(c.speed), position_ns=c.position_ns,
            position_utc=format_utc_ns(c.position_ns, "ms"),
            position_get=format_get_ns(c.position_ns), frames_sent=self.frames_sent,
            frames_total=self.plan.total_frames, pass_id=self.plan.pass_id,
            from_utc=format_utc_ns(self.plan.start_ns),
            to_utc=format_utc_ns(self.plan.end_ns - 1),
            limits=self.limits, last_command=c.last,
            time_ns=time.time_ns())

    async def _publish_status(self, client: Connection, retain: bool = True) -> None:
        self._last_status = time.monotonic()
        await client.publish(topics.replay_status(self.session), self.status().to_json(),
                             qos=1, retain=retain)

    # -- running --

    async def run(self) -> ReplayResult:
        """Replay the plan; returns when it is done or stopped through the control topic.
        Raises BrokerError (BrokerRefused for a refusal) when the broker cannot be reached
        or goes away."""
        started = time.monotonic()
        client = MqttClient(
            self.mqtt, name="replay", client_id=f"replay-{self.session}",
            subscriptions=[topics.replay_control(self.session)],
            # Should the tool die, the broker ends the session for it.
            will=Will(topics.replay_session(self.session), b"", qos=1, retain=True))
        try:
            async with client.connect() as conn:
                try:
                    async with TaskGroup("replay", expected=(BrokerError,)) as tasks:
                        listener = tasks.create_task(self._listen(conn), name="control")
                        start = self.control.start_ns
                        await conn.publish(topics.replay_session(self.session),
                                           self._session_payload(self._wanted_at(start)),
                                           qos=1, retain=True)
                        self.state = "running"
                        await self._publish_status(conn)
                        await self._loop(conn)
                        listener.cancel()
                finally:
                    with contextlib.suppress(BrokerError):
                        await self._finish(conn)
                    self.progress.close(note=self.state)
        except BaseExceptionGroup as group:
            raise broker_error_of(group) from None
        return ReplayResult(self.session, self.state, self.frames_sent, self.messages_sent,
                            # copies the reader left out, and any drop_repeats caught
                            self.reader.stats.repeats
                            + sum(f.skipped for f in self._feeds.values()),
                            time.monotonic() - started, dict(self._announced))

    async def _finish(self, conn: Connection) -> None:
        # The end of the session: the ingest finishes it and drops its state.
        await conn.publish(topics.replay_session(self.session), b"", qos=1, retain=True)
        for vehicle in self._phases:
            await conn.publish(topics.sim_state(vehicle, self.source), b"", qos=1,
                               retain=True)
        for topic, payload, retain in self.commands.end():
            await conn.publish(topic, payload, qos=1, retain=retain)
        if self.state in ("running", "paused", "starting"):
            self.state = "stopped"
        await self._publish_status(conn, retain=False)
        await conn.publish(topics.replay_status(self.session), b"", qos=1, retain=True)

    async def _announce_phase(self, client: Connection, vehicle: str, t_ns: int) -> None:
        """The mission phase at the recording's time, before the frames that enter it: the
        ingest checks a session's frames against the limits of their own phase (an entry
        pass replayed while the ships are docked is judged as entry). The phase comes from
        the ASTP flight plan (groundstation/core/flightplan.py), the same one the live ships fly."""
        if vehicle not in tl.VEHICLES:
            return
        phase = tl.phase_at(vehicle, utc_ns_to_get(t_ns))
        if self._phases.get(vehicle) == phase:
            return
        self._phases[vehicle] = phase
        state = messages.SimState(vehicle=vehicle, phase=phase, get=utc_ns_to_get(t_ns),
                                  source=topics.Source.parse(self.source),
                                  origin="flight plan at the recording's time")
        await client.publish(topics.sim_state(vehicle, self.source), state.to_json(),
                             qos=1, retain=True)

    def _wanted_at(self, t_ns: int) -> dict[str, tuple[str, str]]:
        """The definitions to announce per vehicle: its main stream's, where the plan has
        it (a session names one per vehicle; the ingest decodes the vehicle's other formats,
        Apollo's low bit rate, with its own definitions of them)."""
        out: dict[str, tuple[str, str]] = {}
        for k in self.plan.streams:
            segs = [s for s in self.plan.segments.get(k, []) if s.start_ns <= t_ns] \
                or self.plan.segments.get(k, [])[:1]
            sha = segs[-1].sha256 if segs else ""
            if k.vehicle in out and self._subset(sha) and \
                    not self._subset(out[k.vehicle][1]):
                continue
            out[k.vehicle] = (k.stream, sha)
        return out

    def _subset(self, sha: str) -> bool:
        """The recorded definition is another format of its vehicle (`subset_of`)."""
        text = self._definition_text(sha) if sha else None
        return text is not None and _SUBSET_OF.search(text) is not None

    def _open_feeds(self, at_ns: int) -> None:
        self._feeds = {k: _Feed(self.reader, k, at_ns, self.plan.end_ns,
                                self.plan.segments.get(k, [])) for k in self.plan.streams}

    def _frames_per_message(self, feed: _Feed, speed: float | None) -> int:
        if speed is None:
            return self.max_fpm
        period = feed.segment().period_ns or 1
        per_wall_s = 1e9 / period * speed
        return max(1, min(self.max_fpm, int(per_wall_s * _WALL_PER_MESSAGE_S)))

    async def _listen(self, client: Connection) -> None:
        async for message in client.messages():
            answer = self.control.handle(message.payload)
            log.info("control: %s", answer.to_dict())
            await self._publish_status(client)

    async def _loop(self, client: Connection) -> None:
        c = self.control
        self._open_feeds(c.start_ns)
        anchor_wall, anchor_t = time.monotonic(), c.start_ns
        speed = c.speed
        while True:
            if c.stopped:
                self.state = "stopped"
                return
            if c.seek_to is not None:
                to, c.seek_to = c.seek_to, None
                self._open_feeds(to)
                c.position_ns = to
                anchor_wall, anchor_t = time.monotonic(), to
                for topic, payload, retain in self.commands.seek(to):
                    await client.publish(topic, payload, qos=1, retain=retain)
                self.progress.update(note=f"seek to {format_utc_ns(to)}")
                continue
            if c.paused:
                if self.state != "paused":
                    self.state = "paused"
                    self.progress.update(note="PAUSED")
                    await self._publish_status(client)
                c.changed.clear()
                if c.paused and not c.stopped and c.seek_to is None:
                    await c.changed.wait()
                continue
            if self.state == "paused":
                self.state = "running"
                self.progress.update(note="")
                anchor_wall, anchor_t = time.monotonic(), c.position_ns
            if c.speed != speed:
                speed = c.speed
                anchor_wall, anchor_t = time.monotonic(), c.position_ns
            live = [(t, k) for k, f in self._feeds.items() if (t := f.next_t()) is not None]
            if not live:
                for topic, payload, retain in self.commands.due(c.end_ns):
                    await client.publish(topic, payload, qos=1, retain=retain)
                self.state = "finished"
                return
            t0, key = min(live, key=lambda x: (x[0], x[1].vehicle, x[1].stream))
            if speed is not None:
                delay = anchor_wall + (t0 - anchor_t) / speed / 1e9 - time.monotonic()
                if delay > 0:
                    c.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(c.changed.wait(), delay)
                    if c.changed.is_set():
                        continue  # a command arrived: look again before sending
            feed = self._feeds[key]
            seg = feed.segment()
            if self.limits == "recorded" and seg.sha256 and \
                    self._announced.get(key.vehicle) not in (seg.sha256, None) and \
                    self._definition_text(seg.sha256) is not None and \
                    not self._subset(seg.sha256):
                # The recording's definitions change here: tell the ingest first.
                wanted = self._wanted_at(t0)
                wanted[key.vehicle] = (key.stream, seg.sha256)
                await client.publish(topics.replay_session(self.session),
                                     self._session_payload(wanted), qos=1, retain=True)
            seq, t_first, frames = feed.take(self._frames_per_message(feed, speed))
            await self._announce_phase(client, key.vehicle, t_first)
            for topic, payload, retain in self.commands.due(t_first):
                await client.publish(topic, payload, qos=1, retain=retain)
            topic = topics.telemetry(key.vehicle, key.stream, source=self.source)
            await client.publish(topic, encode_envelope(key.vehicle, key.stream, seq, t_first,
                                                        frames), qos=1)
            n = int(frames.shape[0])
            self.frames_sent += n
            self.messages_sent += 1
            c.position_ns = t_first + (n - 1) * (seg.period_ns or 0)
            if speed is not None:
                self.progress.remaining_s = max(0.0, (c.end_ns - c.position_ns) / speed / 1e9)
            else:
                self.progress.remaining_s = None
            self.progress.update(n)
            if time.monotonic() - self._last_status >= _STATUS_EVERY_S:
                await self._publish_status(client)

