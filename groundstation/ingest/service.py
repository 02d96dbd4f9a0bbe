"""The ingest service: telemetry from MQTT to InfluxDB, consoles and the raw archive.

Per message: validate the envelope (untrusted input: a bad message is counted by reason,
quarantined and acknowledged, and never stops the service), archive the frames as they
arrived, and queue them on their stream. Per stream, frames are decoded in batches (by size
or after a short delay), limit-checked, turned into alarm events, and fanned out:

    InfluxDB   engineering values (`tm`), alarm events (`alarms`), link quality (`link`),
               the service's own health (`ingest`)
    MQTT       processed parameters at a display rate, alarm events, a retained summary of
               active alarms, link quality and self-telemetry
    archive    every good message's frames, append-only, per vehicle, stream and source

Delivery: the broker keeps our session (fixed client id, clean_session off) and we
acknowledge a QoS 1 message only once its values are durable (written to InfluxDB or
spooled to disk). If the process dies, the broker sends the unacknowledged messages again;
since a frame's values are one point keyed by (measurement, tags, time), a second write
overwrites the first, so at-least-once delivery gives exactly-once storage.

Backpressure: messages received but not yet acknowledged are bounded
(`queue_max_messages`); at the bound the service stops reading from the broker, which
holds the rest (and, with its in-flight window full, stops sending).

Alarm state across restarts: the alarm engines of live and training streams (latched,
acknowledged and shelved alarms, streaks, the event seq) are saved to
`alarm_state_dir/alarms.json` and restored at start-up, before the first message, and the
restored active lists are published again (retained). What is saved for a stream is its
engine's state after the last batch whose messages were acknowledged to the broker: the
messages after it are the ones the broker sends again after a restart, and replaying
them on that state gives the same events with the same seq at the same times, which
overwrite themselves in InfluxDB. A snapshot is taken per batch (a few small dicts) and
the file is written, atomically (temporary file, fsync, rename) and off the event loop,
once such a batch had alarm events or an operator acted, at most every
ALARM_STATE_MIN_INTERVAL_S, and at a clean shutdown. Replay sessions are not saved: their
alarm state ends with the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import numpy as np

from groundstation.config import Config
from groundstation.core import messages, topics
from groundstation.core.alarms import AlarmEngine, AlarmError, AlarmEvent
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.envelope import Envelope, EnvelopeError, decode_envelope
from groundstation.replay import session as replay_session
from groundstation.storage.durable import atomic_write
from groundstation.storage.influx.lineprotocol import batch_lines, escape_tag

log = logging.getLogger("groundstation.ingest")

ALARM_STATE_FILE = "alarms.json"
ALARM_STATE_FORMAT = "groundstation-alarm-state"
ALARM_STATE_VERSION = 1
ALARM_STATE_MIN_INTERVAL_S = 0.2  # the state file is written at most this often
# An alarm published right after a batch of PUBACKs must not wait for the broker's delayed
# ACK (Nagle): measured, that was the whole 40 ms tail of alarm latency.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class Sink(Protocol):
    """Where line protocol goes. submit() may wait (backpressure) and returns an awaitable
    that completes once the lines are durable (in the database, or spooled to disk)."""

    async def submit(self, lines: list[str]) -> Awaitable[Any]: ...


class ArchiveLike(Protocol):
    def append(self, seq: int, t_ns: int, frames: np.ndarray, received_ns: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Quarantined:
    topic: str
    reason: str
    detail: str
    payload: bytes
    received_ns: int


@dataclass
class _Received:
    env: Envelope
    mid: int
    qos: int
    generation: int
    received_ns: int


@dataclass(slots=True)
class _Checkpoint:
    snapshot: dict[str, Any]
    changed: bool  # the batch had alarm events (or an operator acted)
    done: bool = False


@dataclass
class _Stream:
    source: str
    definition: VehicleDefinition
    decoder: StreamDecoder
    alarms: AlarmEngine
    archive: ArchiveLike | None
    pending: list[_Received] = field(default_factory=list)
    pending_frames: int = 0
    oldest: float = 0.0  # monotonic time the oldest pending message arrived
    latest: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    latest_dirty: bool = False
    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=512))
    last_frame_ns: int = 0
    last_data_mono: float = 0.0  # when the last good frame arrived (monotonic)
    last_data_wall_ns: int = 0  # ... and on the wall clock (saved: see the module docstring)
    persist: bool = False  # its alarm state is saved across restarts (live and training)
    archive_pending: bool = False  # restored at start-up: its archive opens with its data
    # Alarm snapshots after each batch, waiting for the batch's messages to be
    # acknowledged; `saveable` is the newest one all of whose batches are.
    checkpoints: deque[_Checkpoint] = field(default_factory=deque)
    saveable: dict[str, Any] | None = None

    @property
    def vehicle(self) -> str:
        return self.definition.vehicle


ArchiveFactory = Callable[[VehicleDefinition, str], ArchiveLike]


class IngestService:
    def __init__(self, config: Config, definitions: dict[str, VehicleDefinition], sink: Sink,
                 *, archive: ArchiveFactory | None = None, quarantine_keep: int = 200,
                 quarantine_sink: Callable[[Quarantined], None] | None = None):
        self.config = config
        self.definitions = definitions
        self.sink = sink
        self._archive_factory = archive
        self._quarantine_sink = quarantine_sink
        self.streams: dict[tuple[str, str, str], _Stream] = {}
        self.rejected: Counter[str] = Counter()
        self.quarantine: deque[Quarantined] = deque(maxlen=quarantine_keep)
        self.messages_in = 0
        self.frames_in = 0
        self.frames_stored = 0
        self.lines_submitted = 0
        self.acked = 0
        self.alarm_events = 0
        self.decode_seconds: deque[float] = deque(maxlen=512)
        # (source, vehicle) -> mission phase: the live ships' and a drill's from their
        # simulator's state, a replay session's from the replay tool (the phase at the
        # recording's time); a session that announces none borrows the live phase.
        self.phase: dict[tuple[str, str], str] = {}
        self._context_values: dict[str, dict[str, Any]] = {}  # source -> {veh.param: value}
        self._context_params = self._referenced_context_parameters()
        self._inflight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._generation = 0
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue(maxsize=10_000)
        self._durable_tasks: set[asyncio.Task[None]] = set()
        # Storage submissions in arrival order; their number is bounded by the in-flight
        # message bound, since each holds unacknowledged messages (or none, for alarms
        # and self-telemetry, which are few).
        # With each, the stream's alarm checkpoint (see _checkpoint), if it keeps one.
        self._submissions: asyncio.Queue[tuple[list[str], list[_Received],
                                               Callable[[bool], None] | None]] = asyncio.Queue()
        self.connected = asyncio.Event()
        # Replay sessions' own definitions (see groundstation/replay/session.py).
        self.replay_sessions: dict[str, replay_session.SessionInfo] = {}
        # Alarm state across restarts (see the module docstring).
        state_dir = config.ingest.alarm_state_dir or config.ingest.archive_dir / "state"
        self.alarm_state_path = Path(state_dir) / ALARM_STATE_FILE
        self.alarm_state_saves = 0
        self.alarm_state_errors = 0
        self.alarm_state_restored: list[tuple[str, str, str]] = []
        self._state_dirty = asyncio.Event()
        self._state_lock = threading.Lock()
        self._state_generation = 0  # of the documents built ...
        self._state_written = 0  # ... and of the last one written
        self._stop: asyncio.Event | None = None

    # --- the service loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run until stop is set, reconnecting to the broker whenever the link drops."""
        cfg = self.config.mqtt
        backoff = 0.2
        self._stop = stop
        self.restore_alarm_state()
        workers = [asyncio.create_task(self._flusher(stop)),
                   asyncio.create_task(self._submitter()),
                   asyncio.create_task(self._display_publisher(stop)),
                   asyncio.create_task(self._stats_publisher(stop)),
                   asyncio.create_task(self._alarm_state_saver())]
        try:
            while not stop.is_set():
                try:
                    await self._session(stop, ready)
                    backoff = 0.2
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    log.warning("broker %s:%s unreachable (%s); retrying in %.1f s",
                                cfg.host, cfg.port, exc, backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, cfg.reconnect_max_s)
        finally:
            await _cancel_all(workers)
            await self._flush_all()
            await self._drain_submissions()
            if self._durable_tasks:
                await asyncio.gather(*self._durable_tasks, return_exceptions=True)
            self.save_alarm_state()
            for s in self.streams.values():
                if s.archive is not None:
                    s.archive.close()
            # The quarantine's writer holds a lock on its directory: a new ingest on the
            # same archive (a restart in the same process) must be able to take it.
            close = getattr(self._quarantine_sink, "close", None)
            if close is not None:
                close()

    async def _session(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        cfg = self.config.mqtt
        client = aiomqtt.Client(cfg.host, cfg.port, username=cfg.username,
                                password=cfg.password, identifier=cfg.client_id,
                                clean_session=False, keepalive=cfg.keepalive_s,
                                socket_options=NODELAY)
        # Acknowledge only once the data is durable: paho's manual ack (aiomqtt has no
        # option of its own for it), set before connecting.
        client._client.manual_ack_set(True)
        async with client:
            self._generation += 1
            # Messages of the previous connection can no longer be acknowledged: the
            # broker sends them again, so they no longer count against the bound.
            self._inflight = 0
            self._room.set()
            self._client = client
            for sub in (*topics.TELEMETRY_SUBSCRIPTIONS, topics.ACK_SUBSCRIPTION,
                        *topics.SIM_STATE_SUBSCRIPTIONS, topics.REPLAY_SESSION_SUBSCRIPTION):
                await client.subscribe(sub, qos=1)
            self.connected.set()
            if ready is not None:
                ready.set()
            tasks = [asyncio.create_task(self._receive(client)),
                     asyncio.create_task(self._send(client)),
                     asyncio.create_task(stop.wait())]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                self._client = None
                await _cancel_all(tasks)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            topic = str(message.topic)
            if topics.is_telemetry(topic):
                await self._room.wait()
                try:
                    self._on_telemetry(topic, bytes(payload), message.mid, message.qos)
                except Exception as exc:
                    # A bug must cost one message, never the service: it is quarantined
                    # with the traceback's gist and counted.
                    log.exception("internal error on a message on %s", topic)
                    self._reject(topic, "internal_error", f"{type(exc).__name__}: {exc}",
                                 bytes(payload), time.time_ns(), message.mid, message.qos)
                continue
            try:
                where = topics.parse(topic)
            except ValueError:
                where = None
            match where:
                case topics.AckTopic():
                    self._on_operator(where, bytes(payload))
                case topics.SimStateTopic():
                    self._on_sim_state(where, bytes(payload))
                case topics.ReplaySessionTopic():
                    self._on_replay_session(topic, bytes(payload))
                case _:
                    self.rejected["bad_topic"] += 1
                    log.warning("ignored a message on %s: not a topic the ingest reads", topic)
            self._ack(message.mid, message.qos, self._generation)

    async def _send(self, client: aiomqtt.Client) -> None:
        me = asyncio.current_task()
        while True:
            topic, payload, retain = await self._outbox.get()
            await client.publish(topic, payload, qos=1, retain=retain)
            if me is not None and me.cancelling():
                # Python 3.11's wait_for (inside aiomqtt's publish) drops a cancellation
                # that arrives as the PUBACK does: honour it here, or shutdown hangs.
                raise asyncio.CancelledError

    def publish(self, topic: str, payload: messages.Message, retain: bool = False) -> None:
        """Queue a message for the broker; when the queue is full the oldest console
        update is the one to lose, never telemetry or storage."""
        data = payload.to_json()
        if self._outbox.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._outbox.get_nowait()
            self.rejected["outbox_overflow"] += 1
        self._outbox.put_nowait((topic, data, retain))

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        if qos > 0 and generation == self._generation and self._client is not None:
            self._client._client.ack(mid, qos)

    # --- telemetry -----------------------------------------------------------------------

    def _on_telemetry(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self.messages_in += 1
        now = time.time_ns()
        try:
            where = topics.parse_telemetry(topic)
        except ValueError as exc:
            self._reject(topic, "bad_topic", str(exc), payload, now, mid, qos)
            return
        source = str(where.source)
        defn = self._definition(source, where.vehicle)
        if defn is None or defn.stream != where.stream:
            self._reject(topic, "unknown_stream", f"no telemetry definition for "
                         f"{where.vehicle}/{where.stream}", payload, now, mid, qos)
            return
        try:
            env = decode_envelope(payload, vehicle=where.vehicle, stream=where.stream,
                                  frame_bytes=defn.frame.bytes_per_frame)
        except EnvelopeError as exc:
            self._reject(topic, exc.reason, str(exc), payload, now, mid, qos)
            return
        stream = self._stream(source, defn)
        if stream.archive is not None:
            stream.archive.append(env.seq, env.t_ns, env.frames, now)
        if not stream.pending:
            stream.oldest = time.monotonic()
        stream.pending.append(_Received(env, mid, qos, self._generation, now))
        stream.pending_frames += env.frames.shape[0]
        self.frames_in += env.frames.shape[0]
        self._inflight += 1
        if self._inflight >= self.config.ingest.queue_max_messages:
            self._room.clear()
        if stream.pending_frames >= self.config.ingest.batch_max_frames:
            self._process(stream)

    def _reject(self, topic: str, reason: str, detail: str, payload: bytes, now: int,
                mid: int, qos: int) -> None:
        self.rejected[reason] += 1
        q = Quarantined(topic, reason, detail, payload[:65536], now)
        self.quarantine.append(q)
        if self._quarantine_sink is not None:
            self._quarantine_sink(q)
        log.warning("quarantined a message on %s: %s (%s)", topic, detail, reason)
        # Kept in the quarantine, so done with: acknowledging it stops the broker from
        # sending garbage again after every reconnect.
        self._ack(mid, qos, self._generation)

    def _stream(self, source: str, defn: VehicleDefinition) -> _Stream:
        key = (source, defn.vehicle, defn.stream)
        s = self.streams.get(key)
        if s is None:
            archive = self._archive_factory(defn, source) if self._archive_factory else None
            s = self.streams[key] = _Stream(source, defn, StreamDecoder(defn),
                                            AlarmEngine(defn, source), archive,
                                            persist=_persists(source))
        elif s.archive_pending:  # restored at start-up, before any frame
            s.archive_pending = False
            s.archive = self._archive_factory(defn, source) if self._archive_factory else None
        return s

    async def _flusher(self, stop: asyncio.Event) -> None:
        delay = self.config.ingest.batch_max_delay_ms / 1000
        tick = max(0.002, min(delay / 2, 0.05))
        while not stop.is_set():
            await asyncio.sleep(tick)
            now = time.monotonic()
            for s in list(self.streams.values()):
                if s.pending and now - s.oldest >= delay:
                    self._process(s)

    async def _flush_all(self) -> None:
        for s in list(self.streams.values()):
            if s.pending:
                self._process(s)

    def _process(self, s: _Stream) -> None:
        received, s.pending, s.pending_frames = s.pending, [], 0
        try:
            self._decode_and_submit(s, received)
        except Exception:
            # The frames are already in the archive; a bug here must not stop the service
            # nor make the broker resend the same messages for ever.
            log.exception("internal error processing %d messages of %s/%s", len(received),
                          s.source, s.vehicle)
            self.rejected["internal_error"] += len(received)
            for r in received:
                self._ack(r.mid, r.qos, r.generation)
                if r.generation == self._generation:
                    self._inflight -= 1

    def _decode_and_submit(self, s: _Stream, received: list[_Received]) -> None:
        """Decode a stream's pending frames, check alarms, submit the values for storage,
        and acknowledge the messages once the storage says they are durable."""
        t0 = time.perf_counter()
        seq: int | np.ndarray
        if len(received) == 1:
            frames = received[0].env.frames
            times = received[0].env.times_ns(s.decoder.decom.period_ns)
            seq = received[0].env.seq
        else:
            frames = np.concatenate([r.env.frames for r in received])
            times = np.concatenate([r.env.times_ns(s.decoder.decom.period_ns)
                                    for r in received])
            seq = np.concatenate([r.env.seq + np.arange(r.env.frames.shape[0], dtype=np.int64)
                                  for r in received])
        context = self._context(s)
        # By sequence number, frames already decoded (a QoS 1 message delivered again) and
        # frames older than the newest (a recorder's playback) are told from the live
        # stream: all are stored (a rewrite overwrites itself), but only the live ones
        # (batch.live()) feed alarms, displays, the limit context and the latency.
        batch = s.decoder.decode(frames, times, context, seq=seq)
        live = batch.live()
        if batch.n_good < batch.n_frames:
            self._quarantine_frames(s, batch, frames, times)
        events = s.alarms.process(live, context)
        lines = batch_lines(batch, s.source, s.decoder.decom)
        self.decode_seconds.append(time.perf_counter() - t0)
        if events:
            self._on_alarm_events(s, events, lines)
        if live.n_good:
            s.latest.update(live.latest())
            s.latest_dirty = True
            self._update_context(s, live)
            s.last_frame_ns = int(live.times_ns[-1])
            s.last_data_mono = time.monotonic()
            now = s.last_data_wall_ns = time.time_ns()
            s.latency_ns.append(now - int(live.times_ns[-1]))
        self.frames_stored += batch.n_good
        # No archive flush here: each append is already one write() (it survives a crash of
        # this process) and the archive fsyncs every second; an fsync per batch on the event
        # loop cost alarms up to 25 ms at p99.
        self.lines_submitted += len(lines)
        self._submissions.put_nowait((lines, received, self._checkpoint(s, bool(events))
                                      if s.persist else None))

    def store(self, lines: list[str], stream: _Stream | None = None) -> None:
        """Storage for lines that acknowledge no message (alarm events, self-telemetry);
        `stream`: the one whose alarm state they change."""
        self._submissions.put_nowait((lines, [], self._checkpoint(stream, True)
                                      if stream is not None and stream.persist else None))

    async def _submitter(self) -> None:
        while True:
            await self._submit(*await self._submissions.get())

    async def _drain_submissions(self) -> None:
        while not self._submissions.empty():
            await self._submit(*self._submissions.get_nowait())

    async def _submit(self, lines: list[str], received: list[_Received],
                      checkpoint: Callable[[bool], None] | None) -> None:
        try:
            done = await self.sink.submit(lines)
        except Exception:
            log.exception("storage refused %d lines; %d messages stay unacknowledged",
                          len(lines), len(received))
            if checkpoint is not None:
                checkpoint(False)
            return
        task = asyncio.ensure_future(self._ack_when_durable(done, received, checkpoint))
        self._durable_tasks.add(task)
        task.add_done_callback(self._durable_tasks.discard)

    def _quarantine_frames(self, s: _Stream, batch: Any, frames: np.ndarray,
                           times: np.ndarray) -> None:
        """Frames that failed the sync or counter check: counted and kept, never decoded."""
        sync_ok, _, _ = s.decoder.decom.check_frames(frames[~batch.good])
        topic = topics.telemetry(s.vehicle, s.definition.stream, source=s.source)
        now = time.time_ns()
        for i, ok in zip(np.flatnonzero(~batch.good), sync_ok, strict=True):
            reason = "bad_counter" if ok else "bad_sync"
            self.rejected[reason] += 1
            q = Quarantined(topic, reason, f"frame at {int(times[i])} ns, counter "
                            f"{int(batch.counter[i])}: {reason.replace('_', ' ')}",
                            bytes(frames[i]), now)
            self.quarantine.append(q)
            if self._quarantine_sink is not None:
                self._quarantine_sink(q)

    async def _ack_when_durable(self, done: Awaitable[Any], received: list[_Received],
                                checkpoint: Callable[[bool], None] | None = None) -> None:
        try:
            await done
        except Exception:
            # Not durable: leave the messages unacknowledged so the broker sends them
            # again after a reconnect.
            log.exception("storage failed; %d messages stay unacknowledged", len(received))
            if checkpoint is not None:
                checkpoint(False)
            return
        if checkpoint is not None:
            checkpoint(not received or (self._client is not None and all(
                r.generation == self._generation for r in received)))
        for r in received:
            self._ack(r.mid, r.qos, r.generation)
            if r.generation == self._generation:
                self._inflight -= 1
        self.acked += len(received)
        if self._inflight < self.config.ingest.queue_max_messages:
            self._room.set()

    # --- replay sessions: their definitions and their end (groundstation/replay/session.py)

    def _definition(self, source: str, vehicle: str) -> VehicleDefinition | None:
        """A replay session's own definitions (by default those in force when its frames
        were recorded), else the ones the ingest runs with."""
        session = self.replay_sessions.get(source)
        if session is not None and vehicle in session.definitions:
            return session.definitions[vehicle]
        return self.definitions.get(vehicle)

    def _on_replay_session(self, topic: str, payload: bytes) -> None:
        try:
            info = replay_session.parse_session_message(topic, payload, self.definitions)
        except ValueError as exc:
            self.rejected["bad_replay_session"] += 1
            log.error("refused the replay session message on %s (its frames get the current "
                      "definitions): %s", topic, exc)
            return
        source = topics.replay(topics.parse_replay_session(topic).session)
        if info is None:  # the session ended (or its replay tool died: its MQTT will)
            # Its frames still queued here are processed first, in the session's context
            # (its definitions, phase and context values), then that context is freed.
            for key, s in list(self.streams.items()):
                if s.source == source:
                    self._drop_stream(key)
                    for t in (topics.active_alarms(s.vehicle, source),
                              topics.ingest_link(s.vehicle, source)):
                        self._clear_retained(t)
            self.replay_sessions.pop(source, None)
            self._context_values.pop(source, None)
            for key in [k for k in self.phase if k[0] == source]:
                del self.phase[key]
            return
        self.replay_sessions[source] = info
        for key, s in list(self.streams.items()):
            if s.source == source and self._definition(source, s.vehicle) is not s.definition:
                self._drop_stream(key)  # new definitions: the stream starts anew with them

    def _drop_stream(self, key: tuple[str, str, str]) -> None:
        s = self.streams.pop(key)
        if s.pending:
            self._process(s)
        if s.archive is not None:
            s.archive.close()

    def _clear_retained(self, topic: str) -> None:
        if self._outbox.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._outbox.get_nowait()
        self._outbox.put_nowait((topic, b"", True))

    # --- limit context -------------------------------------------------------------------

    def _referenced_context_parameters(self) -> dict[str, set[str]]:
        """vehicle -> parameters some limit context looks at (e.g. a hatch's state)."""
        wanted: dict[str, set[str]] = {}
        for d in self.definitions.values():
            for e in [*d.parameters, *d.derived]:
                for c in (e.limits.contexts if e.limits else []):
                    name = c.when.parameter
                    if name:
                        veh, pid = name.split(".", 1) if "." in name else (d.vehicle, name)
                        wanted.setdefault(veh, set()).add(pid)
        return wanted

    def _context(self, s: _Stream) -> dict[str, Any]:
        ctx: dict[str, Any] = dict(self._context_values.get(s.source, {}))
        phase = self.phase.get((s.source, s.vehicle))
        if phase is None and not _persists(s.source):  # a replay session
            phase = self.phase.get((topics.LIVE, s.vehicle))
        if phase is not None:
            ctx["phase"] = phase
        return ctx

    def _update_context(self, s: _Stream, batch: Any) -> None:
        wanted = self._context_params.get(s.vehicle)
        if not wanted:
            return
        values = self._context_values.setdefault(s.source, {})
        for pid in wanted:
            if pid in s.latest:
                v = s.latest[pid][1]
                p = s.definition._by_id.get(pid)
                if p is not None and p.calibration is not None and p.calibration.states:
                    values[f"{s.vehicle}.{pid}"] = p.calibration.states.get(int(v), v)
                else:
                    values[f"{s.vehicle}.{pid}"] = v

    def _on_sim_state(self, where: topics.SimStateTopic, payload: bytes) -> None:
        if not payload:
            # A drill's ships (or a replay tool) stopped and cleared their retained
            # state. Their last frames may still be queued here and keep the last
            # phase; a replay session's context is freed when the session ends.
            return
        try:
            state = messages.SimState.from_json(payload)
        except messages.MessageError as exc:
            self.rejected["bad_sim_state"] += 1
            log.warning("ignored the simulator state on %s: %s", where, exc)
            return
        self.phase[(str(where.source), where.vehicle)] = state.phase

    # --- alarms --------------------------------------------------------------------------

    def _on_alarm_events(self, s: _Stream, events: list[AlarmEvent], lines: list[str]) -> None:
        self.alarm_events += len(events)
        for ev in events:
            msg = messages.AlarmEvent.from_event(ev)
            self.publish(topics.alarms(s.vehicle, s.source), msg)
            lines.append(alarm_line(msg))
        self._publish_active(s)

    def _publish_active(self, s: _Stream) -> None:
        self.publish(topics.active_alarms(s.vehicle, s.source),
                     messages.ActiveAlarms.from_data(s.alarms.active()), retain=True)

    def _on_operator(self, where: topics.AckTopic, payload: bytes) -> None:
        """An operator's request: the operator is the topic's user level, as the broker's
        ACL only lets a user publish under their own name. Every request gets one reply,
        naming its request_id."""
        operator, vehicle = where.operator, where.vehicle
        reply_topic = topics.alarm_replies(operator)
        try:
            req = messages.OperatorRequest.from_json(payload)
        except messages.MessageError as exc:
            self.rejected["bad_ack"] += 1
            self.publish(reply_topic, messages.OperatorReply.refused(
                exc.request_id, f"bad request: {exc}; send {messages.OPERATOR_REQUEST_FORM}",
                reason="bad_request"))
            return
        source = str(req.source)
        stream = next((s for s in self.streams.values()
                       if s.vehicle == vehicle and s.source == source), None)
        if stream is None:
            self.publish(reply_topic, messages.OperatorReply.refused(
                req.request_id, f"no {source} data from {vehicle!r} yet", reason="no_data",
                parameter=req.parameter))
            return
        engine = stream.alarms
        try:
            if req.action == "acknowledge":
                ev = engine.acknowledge(req.parameter, operator)
            elif req.action == "shelve":
                assert req.duration_s is not None  # the message requires it
                ev = engine.shelve(req.parameter, operator, req.duration_s)
            else:
                ev = engine.unshelve(req.parameter, operator)
        except AlarmError as exc:
            self.publish(reply_topic, messages.OperatorReply.refused(
                req.request_id, str(exc), reason=exc.reason, parameter=req.parameter))
            return
        msg = messages.AlarmEvent.from_event(ev)
        self.alarm_events += 1
        self.publish(topics.alarms(vehicle, source), msg)
        self._publish_active(stream)
        self.publish(reply_topic, messages.OperatorReply.done(req.request_id, msg))
        self.store([alarm_line(msg)], stream)

    # --- alarm state across restarts (see the module docstring) ----------------------------

    def _checkpoint(self, s: _Stream, changed: bool) -> Callable[[bool], None]:
        """Snapshot a stream's alarm state after a batch (or an operator's action); the
        returned callback says whether the batch's messages were acknowledged."""
        cp = _Checkpoint(s.alarms.snapshot(), changed)
        s.checkpoints.append(cp)
        return lambda acked: self._checkpoint_done(s, cp, acked)

    def _checkpoint_done(self, s: _Stream, cp: _Checkpoint, acked: bool) -> None:
        if not acked and self._stop is not None and self._stop.is_set():
            # Stopping, with the messages unacknowledged: the broker sends them again to
            # the next ingest, which replays them on the state saved before them.
            return
        # Otherwise an unacknowledged batch was cut off by a reconnect, whose redelivered
        # copies are duplicates here (acknowledged without reaching the alarms), or its
        # storage failed (logged): either way the state moves on.
        cp.done = True
        changed = False
        while s.checkpoints and s.checkpoints[0].done:
            head = s.checkpoints.popleft()
            s.saveable = head.snapshot
            changed |= head.changed
        if changed:
            self._state_dirty.set()

    async def _alarm_state_saver(self) -> None:
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            self._state_generation += 1
            doc = self._alarm_state_doc(final=False)
            await asyncio.to_thread(self._write_alarm_state, doc, self._state_generation)
            await asyncio.sleep(ALARM_STATE_MIN_INTERVAL_S)

    def save_alarm_state(self) -> None:
        """Write the alarm state file now (at shutdown, once storage has settled)."""
        self._state_generation += 1
        self._write_alarm_state(self._alarm_state_doc(final=True), self._state_generation)

    def _alarm_state_doc(self, final: bool) -> dict[str, Any]:
        streams = []
        for (source, vehicle, stream), s in self.streams.items():
            if not s.persist:
                continue
            # At the end, a stream with no batch waiting is saved as it is now (streaks
            # of the last batches included).
            snap = s.alarms.snapshot() if final and not s.checkpoints else s.saveable
            if snap is None:
                continue  # nothing acknowledged yet: the broker has all of it
            streams.append({"source": source, "vehicle": vehicle, "stream": stream,
                            "last_frame_ns": s.last_frame_ns,
                            "last_data_wall_ns": s.last_data_wall_ns, "alarms": snap})
        return {"format": ALARM_STATE_FORMAT, "version": ALARM_STATE_VERSION,
                "saved_ns": time.time_ns(), "streams": streams}

    def _write_alarm_state(self, doc: dict[str, Any], generation: int) -> None:
        """Atomically replace the state file (temporary file, fsync, rename, fsync of the
        directory). Runs in a thread; a newer document never loses to an older one."""
        path = self.alarm_state_path
        with self._state_lock:
            if generation <= self._state_written:
                return
            try:
                data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
            except (OSError, ValueError) as exc:
                self.alarm_state_errors += 1
                log.error("could not save the alarm state to %s: %s; the alarms stay in "
                          "memory and the next change tries again", path, exc)
                return
            self._state_written = generation
            self.alarm_state_saves += 1

    def restore_alarm_state(self) -> None:
        """Restore the saved alarm state (before the first message) and publish the
        restored active lists. A file that cannot be read or parsed is kept aside and the
        ingest starts with no alarms; a part that no longer fits the definitions is
        dropped with a warning and the rest restored."""
        path = self.alarm_state_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("cannot read the alarm state file %s (%s): starting with no alarms",
                      path, exc)
            self._keep_bad_state_file(path)
            return
        try:
            doc = json.loads(data)
            if not (isinstance(doc, dict) and doc.get("format") == ALARM_STATE_FORMAT):
                raise ValueError("not an alarm state file")
            if doc.get("version") != ALARM_STATE_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, this ingest reads "
                                 f"{ALARM_STATE_VERSION}")
            entries = doc["streams"]
            if not isinstance(entries, list):
                raise ValueError("'streams' is not a list")
        except (ValueError, KeyError) as exc:  # JSONDecodeError and UnicodeError included
            log.error("the alarm state file %s is unreadable (%s): starting with no alarms",
                      path, exc)
            self._keep_bad_state_file(path)
            return
        bad = False
        now_mono, now_wall = time.monotonic(), time.time_ns()
        for e in entries:
            try:
                key = (e["source"], e["vehicle"], e["stream"])
                if not all(isinstance(x, str) for x in key):
                    raise TypeError("source, vehicle and stream must be strings")
                source, vehicle, stream = key
                topics.check_source(source)
                defn = self.definitions.get(vehicle)
                if not _persists(source) or defn is None or defn.stream != stream:
                    log.warning("alarm state of %s/%s/%s dropped: no such live or training "
                                "stream in the definitions", source, vehicle, stream)
                    continue
                engine = AlarmEngine(defn, source)
                for warning in engine.restore(e["alarms"]):
                    log.warning("alarm state restored with a change: %s", warning)
                last_frame_ns = int(e.get("last_frame_ns") or 0)
                last_wall_ns = int(e.get("last_data_wall_ns") or 0)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("alarm state file %s: a stream's state is malformed (%s); dropped",
                          path, exc)
                bad = True
                continue
            if key in self.streams:
                continue
            s = self.streams[key] = _Stream(
                source, defn, StreamDecoder(defn), engine, None, persist=True,
                archive_pending=self._archive_factory is not None,
                last_frame_ns=last_frame_ns, last_data_wall_ns=last_wall_ns,
                saveable=engine.snapshot())
            if last_wall_ns:
                # Shelves keep expiring during the gap in the data, downtime included.
                s.last_data_mono = now_mono - max(0, now_wall - last_wall_ns) / 1e9 or 1e-9
            self.alarm_state_restored.append(key)
            summary = messages.ActiveAlarms.from_data(engine.active())
            log.info("restored the alarm state of %s/%s: %d alarms listed or shelved, "
                     "event seq %d", source, vehicle, len(summary.alarms),
                     engine.snapshot()["seq"])
            self.publish(topics.active_alarms(vehicle, source), summary, retain=True)
        if bad:
            self._keep_bad_state_file(path)

    def _keep_bad_state_file(self, path: Path) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        keep = path.with_name(f"{path.name}.bad-{stamp}")
        try:
            shutil.copy2(path, keep)
        except OSError as exc:
            log.error("could not keep a copy of the bad alarm state file %s: %s", path, exc)
            return
        log.error("kept a copy of the bad alarm state file as %s", keep)

    # --- consoles and self-telemetry -----------------------------------------------------

    async def _display_publisher(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.config.ingest.display_rate_hz
        while not stop.is_set():
            await asyncio.sleep(period)
            try:
                self._publish_display()
            except Exception:
                log.exception("console update failed; next one in %.1f s", period)

    def _publish_display(self) -> None:
        for s in list(self.streams.values()):
            if s.latest_dirty:
                s.latest_dirty = False
                self.publish(topics.parameters(s.vehicle, s.source), messages.ParamsUpdate(
                    vehicle=s.vehicle, source=topics.Source.parse(s.source),
                    time_ns=s.last_frame_ns,
                    values={k: (t, v if np.isfinite(v) else None, lim)
                            for k, (t, v, lim) in s.latest.items()}))

    async def _stats_publisher(self, stop: asyncio.Event) -> None:
        period = self.config.ingest.stats_interval_s
        while not stop.is_set():
            await asyncio.sleep(period)
            try:
                self._publish_stats()
            except Exception:
                log.exception("self-telemetry failed; next in %.1f s", period)

    def _publish_stats(self) -> None:
        self._tick_alarm_clocks()
        stats = self.stats_message()
        self.publish(topics.ingest_stats(), stats, retain=True)
        lines = [self_line(stats)]
        for s in self.streams.values():
            link = link_stats(s)
            self.publish(topics.ingest_link(s.vehicle, s.source), link, retain=True)
            lines.append(link_line(s.source, s.vehicle, link))
        self.store(lines)

    def _tick_alarm_clocks(self) -> None:
        """Alarm engines run on data time, which stops at loss of signal: advance it by the
        wall time since the last frame, so shelves still expire during a pass gap."""
        now = time.monotonic()
        for s in self.streams.values():
            if s.last_data_mono and now - s.last_data_mono > 1.0:
                events = s.alarms.tick(s.last_frame_ns + int((now - s.last_data_mono) * 1e9))
                if events:
                    lines: list[str] = []
                    self._on_alarm_events(s, events, lines)
                    self.store(lines, s)

    def stats(self) -> dict[str, Any]:
        """The service's own health as plain data (what ingest/stats carries)."""
        return self.stats_message().to_dict()

    def stats_message(self) -> messages.IngestStats:
        decode = sorted(self.decode_seconds)
        sink_stats = getattr(self.sink, "stats", None)
        sink = sink_stats() if callable(sink_stats) else None
        if sink is not None and hasattr(sink, "fields"):
            sink = sink.fields()
        return messages.IngestStats(
            time_ns=time.time_ns(),
            messages_in=self.messages_in, frames_in=self.frames_in,
            frames_stored=self.frames_stored, lines_submitted=self.lines_submitted,
            messages_acked=self.acked, inflight_messages=self._inflight,
            pending_frames=sum(s.pending_frames for s in self.streams.values()),
            outbox=self._outbox.qsize(), alarm_events=self.alarm_events,
            alarm_state_saves=self.alarm_state_saves,
            alarm_state_errors=self.alarm_state_errors,
            rejected=dict(self.rejected), rejected_total=sum(self.rejected.values()),
            decode_ms_p50=1000 * decode[len(decode) // 2] if decode else None,
            decode_ms_max=1000 * decode[-1] if decode else None,
            sink=sink)


def _persists(source: str) -> bool:
    """Live and training streams keep their alarm state across restarts; a replay
    session's ends with the session (its source disappears with it)."""
    return topics.Source.parse(source).kind is not topics.SourceKind.REPLAY


def link_stats(s: _Stream) -> messages.LinkStats:
    d = s.decoder
    lat = sorted(s.latency_ns)
    return messages.LinkStats(
        vehicle=s.vehicle, source=topics.Source.parse(s.source),
        frames_good=d.frames_good, sync_errors=d.frames_bad_sync,
        counter_errors=d.frames_bad_counter, frames_missing=d.frames_missing,
        frames_duplicate=d.frames_duplicate, frames_recovered=d.frames_recovered,
        last_frame_ns=s.last_frame_ns,
        latency_ms_p50=lat[len(lat) // 2] / 1e6 if lat else None,
        latency_ms_max=lat[-1] / 1e6 if lat else None)


def _fields(values: Mapping[str, object]) -> str:
    out = []
    for k, v in values.items():
        if v is None or isinstance(v, dict):
            continue
        if isinstance(v, bool):
            out.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int):
            out.append(f"{k}={v}i")
        elif isinstance(v, float):
            if np.isfinite(v):
                out.append(f"{k}={v!r}")
        else:
            text = str(v).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{k}="{text}"')
    return ",".join(out)


def alarm_line(ev: messages.AlarmEvent) -> str:
    """An alarm event as line protocol: measurement `alarms`, one point per event (its
    engine sequence number is a tag so two events in the same nanosecond stay apart)."""
    tags = (f"alarms,parameter={escape_tag(ev.parameter)},seq={ev.seq},"
            f"source={escape_tag(str(ev.source))},transition={escape_tag(ev.transition.value)},"
            f"vehicle={escape_tag(ev.vehicle)}")
    fields = {"state": ev.state.value, "severity": ev.severity, "side": ev.side,
              "value": ev.value, "value_text": ev.value_text, "limit": ev.limit,
              "operator": ev.operator, "label": ev.label, "unit": ev.unit,
              "console": ev.console}
    return f"{tags} {_fields(fields)} {ev.time_ns}"


def link_line(source: str, vehicle: str, link: messages.LinkStats) -> str:
    return (f"link,source={escape_tag(source)},vehicle={escape_tag(vehicle)} "
            f"{_fields(link.counters())} {time.time_ns()}")


def self_line(stats: messages.IngestStats) -> str:
    flat: dict[str, object] = stats.model_dump(exclude={"time_ns", "rejected", "sink"})
    for reason, n in stats.rejected.items():
        flat[f"rejected_{reason}"] = n
    for k, v in (stats.sink or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            flat[f"sink_{k}"] = v
    return f"ingest,service=ingest {_fields(flat)} {stats.time_ns}"


def archive_factory(root: Path) -> ArchiveFactory:
    from groundstation.storage.archive import ArchiveWriter

    def make(defn: VehicleDefinition, source: str) -> ArchiveLike:
        # The definition's text goes in the file header, so a replay can check limits
        # with the definitions in force at recording time.
        text = Path(defn.path).read_bytes() if defn.path and Path(defn.path).exists() else None
        return ArchiveWriter(root, defn.vehicle, defn.stream,  # type: ignore[return-value]
                             source, frame_period_ns=round(1e9 / defn.frame.rate_hz),
                             definition_text=text)

    return make


def sink_config(config: Config) -> Any:
    from groundstation.storage.influx.sink import SinkConfig

    c = config.influx
    return SinkConfig(batch_max_lines=c.batch_lines, flush_interval_s=c.flush_interval_ms / 1000,
                      concurrency=c.write_concurrency,
                      batch_max_bytes=int(c.batch_max_mb * (1 << 20)),
                      max_queue_bytes=int(c.queue_max_mb * (1 << 20)),
                      spool_max_bytes=int(c.spool_max_mb * (1 << 20)))


async def _cancel_all(tasks: list[asyncio.Task[Any]], timeout: float = 10.0) -> None:
    """Cancel tasks and wait for them, at most `timeout` seconds: a task that swallowed its
    cancellation must not hang the service's shutdown (it is logged and left)."""
    for t in tasks:
        t.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=timeout)
    for t in stuck:
        log.error("task %s did not stop within %.0f s of being cancelled; left behind",
                  t.get_name(), timeout)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None and \
                not isinstance(t.exception(), aiomqtt.MqttError):
            log.error("task %s ended with %r", t.get_name(), t.exception())


class NullSink:
    """No database: values count as stored at once (consoles, alarms and the archive still
    work). For `groundstation demo` on a machine without InfluxDB."""

    lines = 0

    async def start(self) -> NullSink:
        return self

    async def submit(self, lines: list[str]) -> asyncio.Future[None]:
        self.lines += len(lines)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def close(self, timeout: float = 30.0) -> None:
        return None


def make_sink(config: Config) -> Any:
    """The InfluxDB sink the configuration describes (the API is asked of the server when
    `api` is auto, so the server must answer /ping)."""
    from groundstation.storage.influx.backends import make_backend
    from groundstation.storage.influx.sink import InfluxSink

    c = config.influx
    if c.api == "none":
        return NullSink()
    backend = make_backend(c.url, c.api, database=c.database,
                           retention_policy=c.retention_policy, username=c.username,
                           password=c.password, token=c.token, org=c.org, bucket=c.bucket)
    return InfluxSink(backend, c.spool_dir, sink_config(config))


async def serve(config: Config, definitions: dict[str, VehicleDefinition], stop: asyncio.Event,
                ready: asyncio.Event | None = None) -> IngestService:
    """Run the ingest with its sink and archive until stop is set; returns the service (for
    its counters)."""
    sink = make_sink(config)
    await sink.start()
    service = IngestService(config, definitions, sink,
                            archive=archive_factory(config.ingest.archive_dir),
                            quarantine_sink=quarantine_writer(config.ingest.archive_dir))
    try:
        await service.run(stop, ready)
    finally:
        await sink.close()
    return service


class QuarantineSink:
    """Rejected messages and frames, kept on disk with their reason (bounded in size). Holds
    the quarantine directory's lock until closed."""

    def __init__(self, root: Path) -> None:
        from groundstation.storage.archive import QuarantineWriter

        self._writer = QuarantineWriter(root)

    def __call__(self, q: Quarantined) -> None:
        self._writer.append(q.topic, q.reason, q.detail, q.payload)

    def close(self) -> None:
        self._writer.close()


def quarantine_writer(root: Path) -> QuarantineSink:
    return QuarantineSink(root)
