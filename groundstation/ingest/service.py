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

Delivery: a QoS 1 message is acknowledged only once its values are durable (written to
InfluxDB or spooled to disk); the broker keeps the rest (our persistent session) and sends
them again if the process dies. A frame's values are one point keyed by (measurement,
tags, time): a second write overwrites the first, so storage is exactly once.

This module keeps the session, the routing and the batching; each other part is a module
of this package (README, "Layout"): a clustered instance's partitions are cluster.py's
(docs/cluster.md); line protocol is storage/influx/lineprotocol.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundstation.config import Config
from groundstation.core import messages, topics
from groundstation.core.alarms import AlarmEvent
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.envelope import EnvelopeError, decode_envelope
from groundstation.core.replay_session import SessionInfo
from groundstation.ingest import formats, mqtt_session, operator, outputs, replay_sessions
from groundstation.ingest.alarm_state import FILE as ALARM_STATE_FILE
from groundstation.ingest.alarm_state import AlarmStateStore
from groundstation.ingest.batching import Flusher
from groundstation.ingest.cluster import Cluster
from groundstation.ingest.context import LimitContexts
from groundstation.ingest.inflight import InFlight
from groundstation.ingest.memory import Memory
from groundstation.ingest.rejects import Rejects
from groundstation.ingest.replay_sessions import ReplaySessions
from groundstation.ingest.stream import (
    ArchiveFactory,
    Held,
    Quarantined,
    Received,
    Sink,
    Stream,
    persists,
)
from groundstation.ingest.tasks import Workers, relay
from groundstation.storage.influx.lineprotocol import (
    EncodedLines,
    alarm_line,
    encoded_lines,
    line_count,
)
from groundstation.tasks import TaskGroup

log = logging.getLogger("groundstation.ingest")


class IngestService:
    def __init__(self, config: Config, definitions: dict[str, VehicleDefinition], sink: Sink,
                 *, archive: ArchiveFactory | None = None, quarantine_keep: int = 200,
                 quarantine_sink: Callable[[Quarantined], None] | None = None):
        self.config = config
        self.definitions = definitions
        self.sink = sink
        self._archive_factory = archive
        self.streams: dict[tuple[str, str, str], Stream] = {}
        self.rejects = Rejects(quarantine_keep, quarantine_sink)
        self.rejected: Counter[str] = self.rejects.counts
        self.quarantine: deque[Quarantined] = self.rejects.recent
        self.messages_in = 0
        self.frames_in = 0
        self.frames_stored = 0
        self.lines_submitted = 0
        self.alarm_events = 0
        self.decode_seconds: deque[float] = deque(maxlen=512)
        self._t_min_ns = int(config.ingest.frame_time_min.timestamp()) * 10**9  # aware: UTC
        self.memory = Memory()
        self._ahead_ns = int(config.ingest.frame_time_max_ahead_s * 1e9)
        self.contexts = LimitContexts(definitions)
        self.outbox = outputs.Outbox(self.rejected)
        self.connected = asyncio.Event()
        self.replays = ReplaySessions(definitions)
        self.replay_sessions: dict[str, SessionInfo] = self.replays.sessions
        state_dir = config.ingest.alarm_state_dir or config.ingest.archive_dir / "state"
        self._halt = asyncio.Event()  # set to stop: by the caller's stop, or a failure
        self.flusher = Flusher(config.ingest.batch_max_delay_ms / 1000,
                               lambda: self.streams.values(), self._process)
        self.workers = Workers(lambda failure: self._halt.set())
        # Clustered (docs/cluster.md): telemetry from the partitions this instance owns,
        # their alarm state handed over through the broker before an acknowledgement.
        self.cluster = c = Cluster(self, config.cluster.with_credentials_of(config.mqtt)) \
            if config.cluster.enabled else None
        self.alarm_state = c.states if c else AlarmStateStore(
            Path(state_dir) / ALARM_STATE_FILE, stopping=self._halt.is_set)
        self.inflight = InFlight(sink, config.ingest.queue_max_messages, self.workers.fail,
                                 gate=c.states.gate if c else None)

    # What the tests and the stats read, kept where they were before the parts.
    acked = property(lambda self: self.inflight.acked)  # messages acknowledged once durable
    _generation = property(lambda self: self.inflight.generation)  # of the connection
    phase = property(lambda self: self.contexts.phase)  # (source, vehicle) -> phase
    alarm_state_saves = property(lambda self: self.alarm_state.saves)
    alarm_state_errors = property(lambda self: self.alarm_state.errors)
    alarm_state_restored = property(lambda self: self.alarm_state.restored)

    # --- the service loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run until stop is set, reconnecting to the broker whenever the link drops.
        Raises tasks.WorkerDied, after a clean shutdown, if a part of the service failed."""
        halt = self._halt
        self.restore_alarm_state()
        w = self.workers
        w.start("stop-watch", lambda: relay(stop, halt))
        w.start("flusher", lambda: self.flusher.run(halt), restart=True)
        w.start("submitter", self.inflight.submitter)
        w.start("display", lambda: outputs.every(
            1.0 / self.config.ingest.display_rate_hz, self._publish_display,
            "console update", halt), restart=True)
        w.start("stats", lambda: outputs.every(
            self.config.ingest.stats_interval_s, self._publish_stats, "self-telemetry",
            halt), restart=True)
        w.start("alarm-state", lambda: self.alarm_state.saver(self.streams.items),
                restart=True)
        if (cluster := self.cluster) is not None:
            w.start("cluster", lambda: cluster.run(halt))
            w.start("gatekeeper", self.inflight.gatekeeper)
        client = mqtt_session.client(self.config.mqtt, lambda _: self.connected.clear(),
                                     cluster=self.config.cluster if cluster else None)
        try:
            # The adapter's reconnect loop: the session runs once per connection, and is
            # cancelled when halt is set.
            await client.run(lambda conn: self._session(conn, ready), stop=halt)
        except Exception as exc:  # a bug in the session or the routing
            self.workers.fail("session", exc)
        finally:
            halt.set()
            if cluster is not None:  # its partitions handed over, before anything stops
                await cluster.stopped()
            await w.stop()
            await self._flush_all()
            await self.inflight.drain()
            self.save_alarm_state()
            for s in self.streams.values():
                if s.archive is not None:
                    s.archive.close()
            self.rejects.close()
        if w.failure is not None:
            raise w.failure from w.failure.error

    async def _session(self, conn: mqtt_session.Connection,
                       ready: asyncio.Event | None) -> None:
        if self.cluster is None:  # else acknowledgements go to the partitions' queues
            self.inflight.attach(conn)
        self.connected.set()
        if ready is not None:
            ready.set()
        try:
            async with TaskGroup("ingest", expected=(mqtt_session.BrokerError,)) as tasks:
                tasks.create_task(self._receive(conn), name="receive")
                tasks.create_task(self._send(conn), name="send")
        finally:
            if self.cluster is None:
                self.inflight.detach()

    async def _receive(self, conn: mqtt_session.Connection) -> None:
        clustered = self.cluster is not None  # then nothing over MQTT is acknowledged
        async for m in conn.messages():
            await self.take(m.topic, m.payload, m.mid, 0 if clustered else m.qos)

    async def take(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """A message from the broker: over MQTT, or from a partition's queue (clustered)."""
        if topics.is_telemetry(topic):
            await self.inflight.room.wait()
            try:
                self._on_telemetry(topic, payload, mid, qos)
            except Exception as exc:
                # A bug must cost one message, never the service: it is quarantined with
                # the traceback's gist and counted.
                log.exception("internal error on a message on %s", topic)
                self._reject(topic, "internal_error", f"{type(exc).__name__}: {exc}",
                             payload, time.time_ns(), mid, qos)
            return
        try:
            where = topics.parse(topic)
        except ValueError:
            where = None
        match where:
            case topics.AckTopic():
                if self._on_operator(where, payload, Held(mid, qos, self.inflight.generation)):
                    return  # acknowledged with the event it caused
            case topics.SimStateTopic():
                self._on_sim_state(where, payload)
            case topics.ReplaySessionTopic():
                replay_sessions.on_message(self, topic, payload)
            case topics.ContextTopic() if self.cluster is not None:
                self.cluster.on_context(where, payload)
            case _:
                self.rejected["bad_topic"] += 1
                log.warning("ignored a message on %s: not a topic the ingest reads", topic)
        self.inflight.ack_now(mid, qos)

    async def _send(self, conn: mqtt_session.Connection) -> None:
        while True:
            topic, payload, retain = await self.outbox.get()
            await conn.publish(topic, payload, retain=retain)

    def publish(self, topic: str, payload: messages.Message, retain: bool = False) -> None:
        """Queue a message for the broker (full: the oldest console update is lost)."""
        self.outbox.publish(topic, payload, retain)

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
        defn = self.replays.definition(source, where.vehicle, where.stream)
        if defn is None:
            self._reject(topic, "unknown_stream", f"no telemetry definition for "
                         f"{where.vehicle}/{where.stream}", payload, now, mid, qos)
            return
        try:
            # Every frame's time within the sanity window (and InfluxDB's range).
            env = decode_envelope(payload, vehicle=where.vehicle, stream=where.stream,
                                  frame_bytes=defn.frame.bytes_per_frame,
                                  period_ns=round(1e9 / defn.frame.rate_hz),
                                  t_min_ns=self._t_min_ns, t_max_ns=now + self._ahead_ns)
        except EnvelopeError as exc:
            self._reject(topic, exc.reason, str(exc), payload, now, mid, qos)
            return
        stream = self._stream(source, defn)
        main = self.definitions.get(where.vehicle)
        if main is not None and len(main.streams) > 1:
            # A vehicle with several formats (Apollo's HBR and LBR): what came before in
            # another format goes first, so no batch spans a change of format.
            for o in list(self.streams.values()):
                if o.pending and o is not stream and o.vehicle == stream.vehicle \
                        and o.source == stream.source:
                    self._process(o)
        if stream.archive is not None:
            stream.archive.append(env.seq, env.t_ns, env.frames, now)
        if not stream.pending:
            self.flusher.queued(stream)
        stream.pending.append(Received(mid, qos, self.inflight.generation, env, now))
        stream.pending_frames += env.frames.shape[0]
        self.frames_in += env.frames.shape[0]
        self.inflight.received()
        if stream.pending_frames >= self.config.ingest.batch_max_frames:
            self._process(stream)

    def _reject(self, topic: str, reason: str, detail: str, payload: bytes, now: int,
                mid: int, qos: int) -> None:
        self.rejects.message(topic, reason, detail, payload, now)
        # Kept in the quarantine, so done with: acknowledging it stops the broker from
        # sending garbage again after every reconnect.
        self.inflight.ack_now(mid, qos)

    def _stream(self, source: str, defn: VehicleDefinition) -> Stream:
        key = (source, defn.vehicle, defn.stream)
        s = self.streams.get(key)
        if s is None:
            archive = self._archive_factory(defn, source) if self._archive_factory else None
            s = self.streams[key] = Stream(source, defn, StreamDecoder(defn),
                                           formats.shared_engine(
                                               self.streams.values(), source, defn,
                                               self.replays.main_definition(source,
                                                                            defn.vehicle)),
                                           archive,
                                           persist=persists(source))
        elif s.archive_pending:  # restored at start-up, before any frame
            s.archive_pending = False
            s.archive = self._archive_factory(defn, source) if self._archive_factory else None
        return s

    async def _flush_all(self) -> None:
        for s in list(self.streams.values()):
            if s.pending:
                self._process(s)

    def _process(self, s: Stream) -> None:
        received, s.pending, s.pending_frames = s.pending, [], 0
        try:
            self._decode_and_submit(s, received)
        except Exception:
            # The frames are already in the archive; a bug here must not stop the service
            # nor make the broker resend the same messages for ever.
            log.exception("internal error processing %d messages of %s/%s", len(received),
                          s.source, s.vehicle)
            self.rejected["internal_error"] += len(received)
            self.inflight.settle(received)

    def _decode_and_submit(self, s: Stream, received: list[Received]) -> None:
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
        context = self.contexts.for_stream(s)
        # By sequence number, frames already decoded (a QoS 1 message delivered again) and
        # frames older than the newest (a recorder's playback) are told from the live
        # stream: all are stored (a rewrite overwrites itself), but only the live ones
        # (batch.live()) feed alarms, displays, the limit context and the latency.
        batch = s.decoder.decode(frames, times, context, seq=seq)
        live = batch.live()
        if batch.n_good < batch.n_frames:
            self.rejects.frames(s, batch, frames, times)
        # A recorder's dump in another format than the live stream's (Apollo's LBR
        # recording dumped while HBR comes down live) is a playback too, though newer than
        # anything its own stream had: the sender says so (the envelope's `playback`).
        fresh = bool(live.n_good) and not all(r.env.playback for r in received)
        events = s.alarms.process(live, context) if fresh or not live.n_good else []
        # The batch's lines, joined and encoded in one go (no per-line work anywhere).
        lines: list[str | EncodedLines] = [encoded_lines(batch, s.source, s.decoder.decom)]
        self.decode_seconds.append(time.perf_counter() - t0)
        if events:
            self._on_alarm_events(s, events, lines)
        if fresh:
            formats.switched(self.streams.values(), s, int(live.times_ns[0]))
            s.latest.update(live.latest())
            s.latest_dirty = True
            self.contexts.update(s, live)
            s.last_frame_ns = int(live.times_ns[-1])
            s.last_data_mono = time.monotonic()
            s.last_data_wall_ns = time.time_ns()
            outputs.note_latency(s, int(live.times_ns[-1]), received[-1].received_ns)
        self.frames_stored += batch.n_good
        # No archive flush here: each append is already one write() (it survives a crash of
        # this process) and the archive fsyncs every second; an fsync per batch on the event
        # loop cost alarms up to 25 ms at p99.
        self.lines_submitted += line_count(lines)
        self.inflight.submit(lines, received, self.alarm_state.checkpoint(s, bool(events))
                             if s.persist else None)

    # --- storage and acknowledgement -----------------------------------------------------

    def store(self, lines: Sequence[str | EncodedLines], stream: Stream | None = None,
              held: Held | None = None) -> None:
        """Storage for lines that are not frames (alarm events, self-telemetry); `stream`:
        the one whose alarm state they change; `held`: the request they answer, to be
        acknowledged once they are durable (and, clustered, the state handed over)."""
        if held is not None:
            self.inflight.received()
        self.inflight.submit(lines, [held] if held else [], self.alarm_state.checkpoint(
            stream, True) if stream is not None and stream.persist else None)

    # --- replay sessions: their definitions and their end (ingest/replay_sessions.py) ---

    def drop_stream(self, key: tuple[str, str, str]) -> None:
        """Free a stream, its queued frames processed first."""
        s = self.streams.pop(key)
        if s.pending:
            self._process(s)
        if s.archive is not None:
            s.archive.close()

    def _on_sim_state(self, where: topics.SimStateTopic, payload: bytes) -> None:
        try:
            self.contexts.on_sim_state(where, payload)
        except messages.MessageError as exc:
            self.rejected["bad_sim_state"] += 1
            log.warning("ignored the simulator state on %s: %s", where, exc)

    # --- alarms and operators ------------------------------------------------------------

    def _on_alarm_events(self, s: Stream, events: list[AlarmEvent],
                         lines: list[str | EncodedLines]) -> None:
        self.alarm_events += len(events)
        for ev in events:
            msg = messages.AlarmEvent.from_event(ev)
            self.publish(topics.alarms(s.vehicle, s.source), msg)
            lines.append(alarm_line(msg))
        self._publish_active(s)

    def _publish_active(self, s: Stream) -> None:
        self.publish(topics.active_alarms(s.vehicle, s.source),
                     messages.ActiveAlarms.from_data(s.alarms.active()), retain=True)

    def _on_operator(self, where: topics.AckTopic, payload: bytes, held: Held) -> bool:
        """An operator's request (ingest/operator.py): every request gets one reply, naming
        its request_id; an event it causes is published and stored like any other, and the
        request acknowledged with it (True)."""
        reply_topic = topics.alarm_replies(where.operator)
        req = operator.parse(payload)
        if isinstance(req, operator.Outcome):
            self.rejected["bad_ack"] += 1
            self.publish(reply_topic, req.reply)
            return False
        source = str(req.source)
        stream = next((s for s in self.streams.values()
                       if s.vehicle == where.vehicle and s.source == source), None)
        out = operator.handle(req, where.operator, where.vehicle,
                              stream.alarms if stream is not None else None)
        if out.event is not None and stream is not None:
            self.alarm_events += 1
            self.publish(topics.alarms(where.vehicle, source), out.event)
            self._publish_active(stream)
        self.publish(reply_topic, out.reply)
        if out.event is None or stream is None:
            return False
        self.store([alarm_line(out.event)], stream, held)
        return True

    def _tick_alarm_clocks(self) -> None:
        """Alarm engines run on data time, which stops at loss of signal: advance it by the
        wall time since the last frame (shelves still expire during a pass gap)."""
        now = time.monotonic()
        for s in self.streams.values():
            if s.last_data_mono and now - s.last_data_mono > 1.0:
                events = s.alarms.tick(s.last_frame_ns + int((now - s.last_data_mono) * 1e9))
                if events:
                    lines: list[str | EncodedLines] = []
                    self._on_alarm_events(s, events, lines)
                    self.store(lines, s)

    # --- alarm state across restarts (ingest/alarm_state.py) -----------------------------

    def save_alarm_state(self) -> None:
        """Write the alarm state file now (at shutdown, once storage has settled)."""
        self.alarm_state.save(self.streams.items())

    def restore_alarm_state(self) -> None:
        """Restore the saved alarm state (before the first message) and publish the
        restored active lists."""
        restored = self.alarm_state.restore(self.definitions, skip=self.streams,
                                            with_archive=self._archive_factory is not None)
        formats.share_restored(restored, self.streams.values())
        for s in restored:
            self.streams[(s.source, s.vehicle, s.definition.stream)] = s
            self._publish_active(s)

    # --- consoles and self-telemetry (ingest/outputs.py) ---------------------------------

    def _publish_display(self) -> None:
        for topic, update in outputs.display_updates(self.streams.values()):
            self.publish(topic, update)

    def _publish_stats(self) -> None:
        self._tick_alarm_clocks()
        self.rejects.flush_log()
        self.memory.tick(self.messages_in)
        published, lines = outputs.health(self.stats_message(), self.streams.values())
        for topic, msg in published:
            self.publish(topic, msg, retain=True)
        self.store(lines)

    def stats(self) -> dict[str, Any]:
        """The service's own health as plain data (what ingest/stats carries)."""
        return self.stats_message().to_dict()

    def stats_message(self) -> messages.IngestStats:
        return outputs.stats_message(
            counters={"messages_in": self.messages_in, "frames_in": self.frames_in,
                      "frames_stored": self.frames_stored,
                      "lines_submitted": self.lines_submitted, "messages_acked": self.acked,
                      "inflight_messages": self.inflight.count, "alarm_events": self.alarm_events,
                      "alarm_state_saves": self.alarm_state.saves,
                      "alarm_state_errors": self.alarm_state.errors},
            rejected=self.rejected, decode_seconds=self.decode_seconds, sink=self.sink,
            pending_frames=sum(s.pending_frames for s in self.streams.values()),
            outbox=self.outbox.qsize(), instance=self.cluster.instance if self.cluster else None)
