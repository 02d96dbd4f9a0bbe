"""Running the simulators against a broker: pacing, publishing, reconnecting, control.

The runner keeps mission time at `speed` times real time (1x real time; at 100x, 100 s of
frames go out every second, batched into large messages), hands each ship's frames to its
downlink, and publishes the messages. If the broker goes away, the ships keep flying: the
messages that could not be sent wait in a backlog bounded in frames (the oldest are dropped
past the bound, and the count is reported in the state message and the log), and the
publisher reconnects through groundstation.mqtt (its one backoff policy: 0.2 s doubling to
reconnect_max_s, with jitter). With
QoS 1 a message is only dropped from the backlog once the broker has acknowledged it, so a
broker restart costs nothing that fits in the backlog (the ingest stores a frame twice as
one point).

Control requests arrive on the vehicle's control topic and are answered on its reply topic;
the retained state message says where the mission is (see control.py; the topics are in
groundstation/core/topics.py).

A drill's ships fly with source training/<drill>: their frames and their state go out
under that source's topics, so the ingest keeps their data and their mission phase apart
from the live ships'. They listen to no control topic (the drill drives its mission
in-process), and a clean stop clears their retained state so the ingest forgets the phase.

pause() freezes the mission clock (no frames, the state says "paused": true); resume()
flies on from the same GET at the same speed, without catching up the time it was paused.

Commands: every ship, live or a drill's, listens to its own uplink (cmd/uplink/<source>/
<vehicle>) and answers on cmd/ack/<source>/<vehicle> when it hears the command
(simulators/commands.py); the effect goes into the physics, so it shows in the frames.

A fleet (groundstation/core/fleet.py): `members` are more ships with a base ship's
definitions under their own vehicle ids (apollo_csm-3). Each flies its base ship's mission:
the base's frames are made once, by the one encoder, and every member's own transmitter
sends them under the member's id, topics and seq, through the member's own coverage,
recorder and batching. So a member costs its envelopes and its publishing, not a second
simulation: many fly on a small machine. Each member logs in as itself (the broker's user
name is its vehicle id, as for the base ships, with the configuration's password), so the
broker lets it publish its own telemetry and state only. Members hear no control and no
uplink: they fly what their base flies (a pause pauses them too; a fault injected on the
base shows in their frames, a link fault of the base does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from groundstation.config import MqttConfig
from groundstation.core import fleet, messages, topics
from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.mission_time import format_get
from groundstation.mqtt import BrokerError, Connection, MqttClient, broker_error_of
from groundstation.tasks import TaskGroup
from simulators import control
from simulators.commands import ShipCommands
from simulators.link import Message, Transmitter, auto_frames_per_message
from simulators.mission import Mission
from simulators.recorder import HBR_CAPACITY_S, HBR_DUMP_RATE
from simulators.telemetry import ShipDownlink

log = logging.getLogger(__name__)

MAX_CHUNK_S = 30.0  # mission seconds generated per ship in one go, at most


@dataclass
class RunnerOptions:
    # The broker: the [mqtt] section of the configuration (groundstation.config), as every
    # client of the station takes it. Without one, host, port, username and password make
    # a plain one (tests and in-process callers).
    mqtt: MqttConfig | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    speed: float = 1.0
    frames_per_message: int | None = None  # None: about ten messages a second per ship
    qos: int = 1
    backlog_frames: int = 500_000
    recorder_s: float = HBR_CAPACITY_S  # Apollo's DSE: ~30 min of HBR (simulators/recorder.py)
    playback_rate: float = HBR_DUMP_RATE  # recorded frames dumped per live frame sent (8x)
    until: float | None = None  # GET to stop at (default: the end of the ships' missions)
    state_interval_s: float = 1.0  # real seconds between state messages
    client_id: str | None = None  # default: groundstation.mqtt's (a unique one)
    source: str = topics.LIVE  # or a drill's source (training/<drill>), never a replay
    # A refusal on the first connection (credentials, certificates) ends run() with the
    # reason, instead of flying on to a broker that will never take the frames.
    fail_fast: bool = False

    def broker(self) -> MqttConfig:
        if self.mqtt is not None:
            return self.mqtt
        return MqttConfig(host=self.host, port=self.port, username=self.username,  # type: ignore[call-arg]
                          password=self.password)  # type: ignore[arg-type]


class Publisher:
    """One MQTT connection, kept up by groundstation.mqtt: a bounded telemetry backlog,
    replies and state first."""

    def __init__(self, options: RunnerOptions, subscriptions: list[str],
                 on_message: Callable[[str, bytes], None]):
        self.o = options
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.client = MqttClient(options.broker(), name="sim", client_id=options.client_id,
                                 subscriptions=subscriptions, fail_fast=options.fail_fast,
                                 on_message=lambda m: on_message(m.topic, m.payload))
        self.queue: deque[Message] = deque()
        self.queued_frames = 0
        self.max_queued_frames = 0  # the deepest the backlog got (e.g. while the broker was away)
        self.control: deque[tuple[str, bytes, bool]] = deque()
        # Sent once everything else has gone, as the publisher stops.
        self.final: deque[tuple[str, bytes, bool]] = deque()
        self.dropped_frames = 0
        self.dropped_messages = 0
        self.sent_messages = 0
        self.sent_frames = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._warned_at = 0.0

    def put(self, m: Message) -> None:
        self.queue.append(m)
        self.queued_frames += m.frames
        self.max_queued_frames = max(self.max_queued_frames, self.queued_frames)
        while self.queued_frames > self.o.backlog_frames and len(self.queue) > 1:
            old = self.queue.popleft()
            self.queued_frames -= old.frames
            self.dropped_frames += old.frames
            self.dropped_messages += 1
            now = time.monotonic()
            if now - self._warned_at > 5.0:
                self._warned_at = now
                log.warning("backlog over %d frames: dropped the oldest (%d frames dropped so "
                            "far)", self.o.backlog_frames, self.dropped_frames)
        self._wake.set()

    def put_control(self, topic: str, payload: messages.Message, retain: bool = False) -> None:
        data = payload.to_json()
        if retain:
            # Only the newest state per topic matters (changed in place: the sender holds
            # no reference into the queue, see _send).
            for c in [c for c in self.control if c[2] and c[0] == topic]:
                self.control.remove(c)
        self.control.append((topic, data, retain))
        self._wake.set()

    def put_final(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """A message for the very end: after every frame and state message queued."""
        self.final.append((topic, payload, retain))
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self.queue and not self.control

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def connections(self) -> int:
        return self.client.connections

    async def run(self, stop: asyncio.Event) -> None:
        """Until stop is set and everything queued has been sent (or the broker is gone
        when stop is set: then give up). Raises BrokerRefused with fail_fast."""
        self._stop = stop
        await self.client.run(self._send, stop=stop, drain=True)
        if self.queue or self.control or self.final:
            log.warning("broker unavailable at shutdown; %d frames unsent", self.queued_frames)

    async def _send(self, conn: Connection) -> None:
        stop = self._stop
        while True:
            if self.control:
                item = self.control.popleft()
                try:
                    await conn.publish(item[0], item[1], qos=1, retain=item[2], timeout=30)
                except BaseException:
                    self.control.appendleft(item)  # not acknowledged: it goes again
                    raise
                continue
            if self.queue:
                m = self.queue.popleft()
                try:
                    await conn.publish(m.topic, m.payload, qos=self.o.qos, timeout=30)
                except BaseException:
                    self.queue.appendleft(m)  # not acknowledged: it goes again
                    raise
                self.queued_frames -= m.frames
                self.sent_messages += 1
                self.sent_frames += m.frames
                continue
            if stop.is_set():
                if self.final:
                    item = self.final[0]
                    await conn.publish(item[0], item[1], qos=1, retain=item[2], timeout=30)
                    self.final.popleft()
                    continue
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class _ShipState:
    last: tuple[Any, ...] = ()
    events: list[str] = field(default_factory=list)


class SimRunner:
    """The mission's ships on a broker, at a speed factor: `definitions`' ships on one
    connection, and the fleet's `members` (each on its own, as itself)."""

    def __init__(self, mission: Mission, definitions: list[VehicleDefinition],
                 options: RunnerOptions, members: Sequence[VehicleDefinition] = ()):
        if not definitions and not members:
            raise ValueError("no ships to fly")
        source = topics.Source.parse(options.source)
        if source.kind is topics.SourceKind.REPLAY:
            raise ValueError(f"source {str(source)!r}: a simulator flies live or "
                             f"{topics.training('<drill>')} ships; replays come from the "
                             "archive")
        self.source = str(source)
        self.training = not source.is_live
        self.mission = mission
        self.o = options
        self.vehicles = [d.vehicle for d in definitions]  # on the one connection
        self.members = [d.vehicle for d in members]
        # Every transmitting ship's base: the ship whose frames it sends.
        self.base = {v: v for v in self.vehicles}
        for d in members:
            base = fleet.base_of(d.vehicle)
            if base is None or base not in mission.models:
                raise fleet.FleetError(f"fleet member {d.vehicle!r}: no simulated ship to fly it "
                                 f"as (ships: {', '.join(mission.models)})")
            self.base[d.vehicle] = base
        # One downlink (the frames, made once) per base ship, whether it transmits or only
        # its members do.
        self.streams: dict[str, ShipDownlink] = {}
        for d in [*definitions, *members]:
            base = self.base[d.vehicle]
            if base not in self.streams:
                self.streams[base] = ShipDownlink(
                    mission, d if d.vehicle == base else mission.definitions[base])
        self.tx: dict[str, Transmitter] = {}
        for d in [*definitions, *members]:
            fpm = options.frames_per_message or auto_frames_per_message(d.frame.rate_hz,
                                                                        options.speed)
            rec = int(options.recorder_s * d.frame.rate_hz) \
                if self.base[d.vehicle] == tl.APOLLO else 0
            self.tx[d.vehicle] = Transmitter(d, mission.faults, mission.seed,
                                             frames_per_message=fpm, recorder_frames=rec,
                                             playback_rate=options.playback_rate,
                                             source=self.source)
        listen = [] if self.training else [topics.sim_control(v) for v in self.vehicles]
        # Every ship hears its own uplink, a drill's ships under the drill's source.
        listen += [topics.command_uplink_subscription(v, self.source) for v in self.vehicles]
        self.commands = ShipCommands(mission)
        self.publisher = Publisher(options, listen, self._on_control)
        self.publishers = {v: self.publisher for v in self.vehicles}
        for v in self.members:
            self.publishers[v] = Publisher(self._member_options(v), [], lambda t, p: None)
        # Which transmitters each base ship's frames go to.
        self.feeds: dict[str, list[str]] = {b: [] for b in self.streams}
        for v in [*self.vehicles, *self.members]:
            self.feeds[self.base[v]].append(v)
        self._ships = {v: _ShipState() for v in self.base}
        mission.listeners.append(self._on_event)
        self.started_get = mission.t
        self.achieved_speed = 0.0
        self.running = False
        self.paused = False
        self._frozen = False  # the flying loop has seen the pause (and flushed)
        self._position = mission.t  # mission time the frames have been generated to
        self._t0 = 0.0  # loop time of _sim0: pacing is _sim0 + speed x (now - _t0)
        self._sim0 = mission.t

    # --- pause ---------------------------------------------------------------------------

    def pause(self) -> None:
        """Freeze the mission clock; frames already made still go down. Idempotent."""
        if not self.paused:
            self.paused = True
            log.info("paused at %s", format_get(self.get))

    def resume(self) -> None:
        """Fly on from the GET of the pause at the same speed. Idempotent."""
        if self.paused:
            self.paused = False
            log.info("resumed at %s", format_get(self.get))

    def _member_options(self, member: str) -> RunnerOptions:
        # The member logs in as itself: the ACL ties telemetry/live/<user>/# to the user.
        return replace(self.o, mqtt=self.o.broker().model_copy(update={"username": member}),
                       client_id=None)

    @property
    def get(self) -> float:
        """GET of the newest frame generated (of the ship furthest behind)."""
        return min(min(s.next_get for s in self.streams.values()), self.mission.t)

    @property
    def sent_frames(self) -> int:
        """Frames the broker has acknowledged, every ship's."""
        return sum(p.sent_frames for p in self._connections())

    @property
    def backlog_frames(self) -> int:
        """Frames waiting for the broker, every ship's."""
        return sum(p.queued_frames for p in self._connections())

    def _connections(self) -> list[Publisher]:
        """Each connection once: the ships' one (if any of `definitions` flies) and each
        member's."""
        return list({id(p): p for p in self.publishers.values()}.values())

    def _on_pause(self, pause: bool) -> tuple[bool, float]:
        if pause:
            self.pause()
        else:
            self.resume()
        return self.paused, self.get

    # --- control ------------------------------------------------------------------------

    def _on_control(self, topic: str, payload: bytes) -> None:
        if topic.startswith(topics.CMD + "/"):
            self._on_uplink(topic, payload)
            return
        try:
            vehicle = topics.parse_sim_control(topic).vehicle
        except ValueError:
            return
        if vehicle not in self.vehicles:
            return
        reply = control.reply(self.mission, vehicle, payload, self._on_pause)
        if reply.ok:
            log.info("%s: %s %s", vehicle, reply.cmd, reply.fault_id or "")
        else:
            log.warning("%s: rejected control request: %s", vehicle, reply.error)
        self.publisher.put_control(topics.sim_reply(vehicle), reply)
        # A pause stops every ship of the mission; any other request concerns one.
        for v in (self.vehicles if reply.cmd in ("pause", "resume") else [vehicle]):
            self._publish_state(v)

    def _on_uplink(self, topic: str, payload: bytes) -> None:
        try:
            where = topics.parse_command_uplink(topic)
        except ValueError:
            return
        if where.vehicle not in self.vehicles or str(where.source) != self.source:
            return
        # The ship's time is its newest frame's: what the ground is receiving now.
        ack = self.commands.receive(where.vehicle, payload, self.get)
        if ack is not None:
            self.publisher.put_control(topics.command_acks(where.vehicle, self.source), ack)

    def _on_event(self, event: tl.Event, get: float) -> None:
        for v in event.vehicles:
            for t in self.feeds.get(v, []):  # the ship and its members
                self._ships[t].events.append(event.name)
        log.info("%s %s", format_get(event.get), event.name)

    # --- state ---------------------------------------------------------------------------

    def state(self, vehicle: str) -> messages.SimState:
        # As of the newest frame generated: what the ingest is receiving now.
        base = self.base[vehicle]
        s = self.mission.state(base, min(self.streams[base].next_get, self.mission.t))
        tx = self.tx[vehicle]
        ship = self._ships[vehicle]
        publisher = self.publishers[vehicle]
        events, ship.events = ship.events or None, []
        # The mission's part of the state, and the runner's; validated again as a whole.
        return messages.SimState.from_data(s.to_dict() | messages.SimState(
            vehicle=vehicle, phase=s.phase, t=self.streams[base].next_time_ns,
            source=topics.Source.parse(self.source), running=self.running,
            paused=self.paused, seed=self.mission.seed, speed=self.o.speed,
            achieved_speed=round(self.achieved_speed, 2),
            started=format_get(self.started_get), recorder_frames=tx.recorded,
            recorder_overwritten=tx.stats.recorder_overwritten,
            live_frames=tx.stats.live_frames, playback_frames=tx.stats.playback_frames,
            backlog_frames=publisher.queued_frames, backlog_limit=self.o.backlog_frames,
            dropped_frames=publisher.dropped_frames,
            max_backlog_frames=publisher.max_queued_frames,
            connected=publisher.connected, events=events).to_dict(compact=True))

    def _publish_state(self, vehicle: str) -> None:
        self.publishers[vehicle].put_control(topics.sim_state(vehicle, self.source),
                                             self.state(vehicle), retain=True)

    # --- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Fly until stop is set (or the end), then send what is left. The publisher and
        the flying are one task group: if the publisher dies (BrokerRefused with
        fail_fast, or a bug), the flying stops and its exception is raised here."""
        stop = stop or asyncio.Event()
        done = asyncio.Event()
        self.running = True
        try:
            async with TaskGroup("sim", expected=(BrokerError,)) as tasks:
                publishing = [tasks.create_task(p.run(done), name="publish")
                              for p in self._connections()]
                try:
                    await self._fly(stop)
                finally:
                    self.running = False
                    for v in self.base:
                        for m in self.tx[v].flush():
                            self.publishers[v].put(m)
                        self._publish_state(v)
                        if self.training:
                            # After the last frame: an empty retained message deletes the
                            # drill's state, and the ingest forgets the drill's phase.
                            self.publishers[v].put_final(topics.sim_state(v, self.source),
                                                         b"", retain=True)
                    done.set()
                try:
                    await asyncio.wait_for(asyncio.shield(asyncio.gather(*publishing)), 15)
                except TimeoutError:
                    log.warning("gave up waiting for the broker; %d frames unsent",
                                self.backlog_frames)
                    for task in publishing:
                        task.cancel()
        except BaseExceptionGroup as group:
            raise broker_error_of(group) from None

    async def _fly(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._t0, self._sim0 = loop.time(), self._position
        end = max(tl.MISSION_END[v] for v in self.streams)
        if self.o.until is not None:
            end = min(end, self.o.until)
        last_state = -1e9
        tick = 0.05
        while not stop.is_set():
            if self.paused:
                now = loop.time()
                if not self._frozen:
                    self._frozen = True
                    self.achieved_speed = 0.0
                    last_state = -1e9  # say so at once
                    for v in self.base:
                        for m in self.tx[v].flush():  # what was made before the pause
                            self.publishers[v].put(m)
                if now - last_state >= self.o.state_interval_s:
                    last_state = now
                    for v in self.base:
                        self._publish_state(v)
                await _sleep_or(stop, tick)
                continue
            if self._frozen:
                # Resumed: pace from here, so the paused time is not caught up.
                self._frozen = False
                self._t0, self._sim0 = loop.time(), self._position
            t0, sim0 = self._t0, self._sim0
            elapsed = loop.time() - t0
            target = min(sim0 + self.o.speed * elapsed, end)
            for v, stream in self.streams.items():
                while True:
                    step_to = min(target, stream.next_get + MAX_CHUNK_S)
                    blocks = stream.frames_until(step_to)
                    if not blocks:
                        break
                    for block in blocks:
                        for ship in self.feeds[v]:
                            for m in self.tx[ship].feed(block):
                                self.publishers[ship].put(m)
                    if step_to >= target or stop.is_set():
                        break
                    await asyncio.sleep(0)  # let the publisher and control in
            self._position = max(self._position, target)
            now = loop.time()
            if now > t0:
                # What was really flown per real second so far (below `speed` when the
                # machine cannot keep up).
                self.achieved_speed = (min(self.mission.t, target) - sim0) / (now - t0)
            for b in self.streams:
                t = min(self.streams[b].next_get, self.mission.t)
                key = (self.mission.phase(b, t), self.mission.docked(t),
                       self.mission.env(b, t).aos)
                for v in self.feeds[b]:
                    if (key != self._ships[v].last or self._ships[v].events
                            or now - last_state >= self.o.state_interval_s):
                        self._ships[v].last = key
                        self._publish_state(v)
            if now - last_state >= self.o.state_interval_s:
                last_state = now
            if target >= end:
                log.info("reached %s; stopping", format_get(end))
                return
            await _sleep_or(stop, tick)
