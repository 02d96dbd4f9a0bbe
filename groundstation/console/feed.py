"""The console's MQTT side and its data model.

`ConsoleFeed.run()` (the console's Textual worker) keeps one MQTT connection up through
groundstation.mqtt for as long as the console runs: it subscribes to what the ingest
publishes for consoles (processed parameters, alarm events, the retained active-alarm
lists, link quality, and this operator's replies), for every source (live, replay sessions,
training drills), and files each message into a `ConsoleModel`. When the broker goes away
it says so in the model, with the reason (the status line shows it), and reconnects forever
with the adapter's backoff; since every subscription is made again on each connection and
the ingest's summaries are retained, the console is whole again as soon as the broker is
back.

The model only stores: the Textual app reads it a few times a second (never per message),
using `version` to know whether anything changed.

Times: the data carry mission time (1975), so whether a ship is in AOS is judged from when
its data last *arrived* (wall clock), never from the data's own time.

Commands: the feed also files the command path's traffic (the retained history and each
stage event of every command, by source and ship, and the commanding service's replies to
this operator) and sends the operator's command requests (`command`) and, in a drill, the
operator's calls (`call`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from groundstation.config import MqttConfig
from groundstation.core import messages, topics
from groundstation.mqtt import MqttClient, Received, unique_id

log = logging.getLogger("groundstation.console")

# No new frame from a ship for this long (wall time) is loss of signal. The ingest publishes
# parameters at 2 Hz while frames arrive, so three seconds is several missed updates.
LOS_AFTER_S = 3.0
# A value this much older (in mission time) than the ship's newest is stale: a parameter
# the downlink no longer carries (Apollo's low bit rate carries fewer than its high).
STALE_AFTER_NS = 10 * 10**9
HISTORY = 240  # trend samples kept per parameter (two minutes at the ingest's 2 Hz)
SHELVE_S = 600.0  # how long the shelve key shelves an alarm (mission time, as the ingest)
EVENTS = 200  # alarm events kept per source
LINK_WINDOW_S = 5.0  # link quality and frame rate are taken over this window

# What the ingest publishes for consoles, from every source.
SUBSCRIPTIONS = (*topics.PARAMS_SUBSCRIPTIONS, *topics.ALARMS_SUBSCRIPTIONS,
                 *topics.LINK_SUBSCRIPTIONS, *topics.ACTIVE_ALARMS_SUBSCRIPTIONS)
# ... and what the commanding service publishes: every command's stages and the history.
COMMAND_SUBSCRIPTIONS = (*topics.COMMAND_EVENTS_SUBSCRIPTIONS,
                         *topics.COMMAND_HISTORY_SUBSCRIPTIONS)
COMMANDS_KEPT = 50  # commands kept per ship and source

ConsoleTopic = (topics.ParamsTopic | topics.AlarmsTopic | topics.ActiveAlarmsTopic
                | topics.LinkTopic)
_KINDS: dict[type, str] = {topics.ParamsTopic: "params", topics.AlarmsTopic: "alarms",
                           topics.ActiveAlarmsTopic: "active", topics.LinkTopic: "link"}


def console_topic(topic: str) -> ConsoleTopic | None:
    """The topic if it is one the console files by source and vehicle; None otherwise."""
    try:
        where = topics.parse(topic)
    except ValueError:
        return None
    match where:
        case (topics.ParamsTopic() | topics.AlarmsTopic() | topics.ActiveAlarmsTopic()
              | topics.LinkTopic()):
            return where
    return None


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(kind, source, vehicle) of a console topic, kind being params, alarms, active or
    link; None for anything else."""
    where = console_topic(topic)
    if where is None:
        return None
    return _KINDS[type(where)], str(where.source), where.vehicle


@dataclass
class LinkView:
    """One ship's downlink as the console judges it."""

    stats: messages.LinkStats | None = None
    arrived: float = 0.0  # monotonic time of the last link message
    quality: float | None = None  # good frames / all frames over the last few seconds, %
    frames_per_s: float | None = None
    # (monotonic, good, bad) of recent messages: figures are taken over a window of a few
    # seconds, since messages can arrive in bursts (queued while the broker was away).
    _samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=64))

    def update(self, stats: messages.LinkStats, now: float) -> None:
        good = stats.frames_good
        bad = stats.sync_errors + stats.counter_errors + stats.frames_missing
        samples = self._samples
        if samples and (good < samples[-1][1] or bad < samples[-1][2]):
            samples.clear()  # the ingest restarted: its counters began again
        samples.append((now, good, bad))
        while len(samples) > 2 and now - samples[1][0] >= LINK_WINDOW_S:
            samples.popleft()
        t0, g0, b0 = samples[0]
        if len(samples) == 1:
            if good:
                self.quality = 100.0 * good / (good + bad)
        elif now - t0 >= 0.5:
            dg, db_ = good - g0, bad - b0
            if dg + db_ > 0:
                self.quality = 100.0 * dg / (dg + db_)
            self.frames_per_s = dg / (now - t0)
        self.stats = stats
        self.arrived = now


@dataclass
class VehicleView:
    values: dict[str, tuple[int, float | None, int]] = field(default_factory=dict)
    time_ns: int | None = None  # data time of the newest frame
    arrived: float = 0.0  # monotonic time new data last arrived
    active: messages.ActiveAlarms | None = None  # the retained active list
    link: LinkView = field(default_factory=LinkView)
    # (value, limit state) of recent updates of the trended parameters: the trend colours
    # each bar by the state the ingest judged, not by a second reading of the limits here.
    history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def stale(self, pid: str) -> bool:
        """The parameter's value is older than the ship's newest by STALE_AFTER_NS: the
        downlink stopped carrying it (a change of format)."""
        item = self.values.get(pid)
        return (item is not None and self.time_ns is not None
                and self.time_ns - item[0] > STALE_AFTER_NS)

    def aos(self, now: float) -> bool | None:
        """True in AOS, False in LOS, None before any data."""
        if not self.arrived:
            return None
        return now - self.arrived <= LOS_AFTER_S


@dataclass
class SourceView:
    vehicles: dict[str, VehicleView] = field(default_factory=dict)
    events: deque[messages.AlarmEvent] = field(default_factory=lambda: deque(maxlen=EVENTS))
    # Each ship's commands, newest last: command id -> its newest stage event.
    commands: dict[str, dict[str, messages.CommandEvent]] = field(default_factory=dict)

    def command_list(self, vehicle: str) -> list[messages.CommandEvent]:
        """A ship's commands, newest first."""
        return list(reversed(self.commands.get(vehicle, {}).values()))

    def file_command(self, ev: messages.CommandEvent) -> None:
        cmds = self.commands.setdefault(ev.vehicle, {})
        old = cmds.get(ev.command_id)
        if old is not None and old.seq > ev.seq:
            return  # an older stage arriving late (the history and the events cross)
        cmds.pop(ev.command_id, None)
        cmds[ev.command_id] = ev
        while len(cmds) > COMMANDS_KEPT:
            cmds.pop(next(iter(cmds)))

    def vehicle(self, vid: str) -> VehicleView:
        v = self.vehicles.get(vid)
        if v is None:
            v = self.vehicles[vid] = VehicleView()
        return v

    def newest_ns(self) -> int | None:
        times = [v.time_ns for v in self.vehicles.values() if v.time_ns is not None]
        return max(times) if times else None

    def master_alarm(self) -> bool:
        return any(v.active is not None and v.active.master_alarm
                   for v in self.vehicles.values())


class ConsoleModel:
    """Everything the console knows, by source then vehicle. Fed by ConsoleFeed."""

    def __init__(self, trend_keys: list[tuple[str, str]] | None = None):
        self.sources: dict[str, SourceView] = {}
        self.trend_keys = set(trend_keys or ())
        self.connected = False
        self.ever_connected = False
        self.broker_error: str | None = None
        self.lost_at: float | None = None  # monotonic time the broker went away
        self.attempts = 0  # failed connection attempts since the last success
        self.connections = 0
        self.replies: deque[messages.OperatorReply] = deque(maxlen=50)
        self.reply_count = 0
        self.command_replies: deque[messages.CommandReply] = deque(maxlen=50)
        self.command_reply_count = 0
        self.command_version = 0  # bumped when a command's stage changes
        self.messages = 0
        self.bad_messages = 0
        self.version = 0  # bumped on every change, so the UI redraws only when needed
        self.alarm_version = 0  # bumped when an alarm list or event changes

    def source(self, name: str) -> SourceView:
        s = self.sources.get(name)
        if s is None:
            s = self.sources[name] = SourceView()
        return s

    def source_names(self) -> list[str]:
        """live first, then replay sessions, then drills, each by name."""
        order = {topics.SourceKind.LIVE: 0, topics.SourceKind.REPLAY: 1,
                 topics.SourceKind.TRAINING: 2}
        return sorted(self.sources, key=lambda s: (order[topics.Source.parse(s).kind], s))

    # --- the broker's state ------------------------------------------------------------

    def on_connected(self) -> None:
        self.connected = True
        self.ever_connected = True
        self.broker_error = None
        self.lost_at = None
        self.attempts = 0
        self.connections += 1
        self.version += 1

    def on_disconnected(self, error: str) -> None:
        if self.connected or self.lost_at is None:
            self.lost_at = time.monotonic()
        self.connected = False
        self.broker_error = error
        self.attempts += 1
        self.version += 1

    # --- messages ----------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """File one message; a malformed one is counted and dropped (never raises)."""
        now = time.monotonic() if now is None else now
        self.messages += 1
        try:
            self._on_message(topic, payload, now)
        except ValueError as exc:  # MessageError: a payload that is not what its topic says
            self.bad_messages += 1
            log.warning("ignored a malformed message on %s: %s", topic, exc)

    def _on_message(self, topic: str, payload: bytes, now: float) -> None:
        try:
            where = topics.parse(topic)
        except ValueError:
            return
        if isinstance(where, topics.AlarmRepliesTopic):
            self.replies.append(messages.OperatorReply.from_json(payload))
            self.reply_count += 1
            self.version += 1
            return
        if isinstance(where, topics.CommandRepliesTopic):
            self.command_replies.append(messages.CommandReply.from_json(payload))
            self.command_reply_count += 1
            self.version += 1
            return
        if isinstance(where, topics.CommandEventsTopic):
            self.source(str(where.source)).file_command(messages.CommandEvent.from_json(payload))
            self.command_version += 1
            self.version += 1
            return
        if isinstance(where, topics.CommandHistoryTopic):
            view = self.source(str(where.source))
            if not payload:  # a replay session's history cleared at its end
                view.commands.pop(where.vehicle, None)
            else:
                history = messages.CommandHistory.from_json(payload)
                for ev in reversed(history.commands):
                    view.file_command(ev)
            self.command_version += 1
            self.version += 1
            return
        if not isinstance(where, ConsoleTopic):
            return
        veh = self.source(str(where.source)).vehicle(where.vehicle)
        if not payload:
            # A retained summary cleared: the replay session ended.
            if isinstance(where, topics.ActiveAlarmsTopic):
                veh.active = None
                self.alarm_version += 1
                self.version += 1
            return
        match where:
            case topics.ParamsTopic():
                self._on_params(veh, where.vehicle, messages.ParamsUpdate.from_json(payload),
                                now)
            case topics.ActiveAlarmsTopic():
                veh.active = messages.ActiveAlarms.from_json(payload)
                self.alarm_version += 1
            case topics.AlarmsTopic():
                self.source(str(where.source)).events.appendleft(
                    messages.AlarmEvent.from_json(payload))
                self.alarm_version += 1
            case topics.LinkTopic():
                stats = messages.LinkStats.from_json(payload)
                last = veh.link.stats.last_frame_ns if veh.link.stats else 0
                veh.link.update(stats, now)
                # The link message is retained and published every second: a frame time
                # that moved on means frames are still arriving.
                if stats.last_frame_ns and stats.last_frame_ns != last and last:
                    veh.arrived = now
        self.version += 1

    def _on_params(self, veh: VehicleView, vid: str, update: messages.ParamsUpdate,
                   now: float) -> None:
        for pid, (ts, value, state) in update.values.items():
            veh.values[pid] = (ts, value, state)
            if (vid, pid) in self.trend_keys and value is not None:
                veh.history.setdefault(pid, deque(maxlen=HISTORY)).append((value, state))
        t = update.time_ns
        if veh.time_ns is None or t != veh.time_ns:
            veh.time_ns = t
            veh.arrived = now


def default_client_id(operator: str) -> str:
    # Never the ingest's fixed id (MqttConfig's default): a second client with that id
    # would throw the ingest off the broker. Clean sessions, so random is fine.
    return unique_id(f"console-{operator}")


class ConsoleFeed:
    """The console's MQTT connection (groundstation.mqtt), kept up for as long as run()
    runs: every console topic and this operator's replies, made again on each connection."""

    def __init__(self, mqtt: MqttConfig, operator: str, model: ConsoleModel,
                 client_id: str | None = None):
        self.mqtt = mqtt
        self.operator = operator
        self.model = model
        self._requests = 0
        self._request_prefix = secrets.token_hex(4)
        self.client = MqttClient(
            mqtt, name="console", client_id=client_id or default_client_id(operator),
            subscriptions=[*SUBSCRIPTIONS, self.reply_topic, *COMMAND_SUBSCRIPTIONS,
                           self.command_reply_topic],
            on_message=self._on_message,
            on_connect=lambda _: model.on_connected(),
            on_disconnect=lambda error: model.on_disconnected(str(error)),
            # The console shows the broker's state on screen; a log line would tear it.
            log_level=logging.INFO)
        self.client_id = self.client.client_id

    @property
    def reply_topic(self) -> str:
        return topics.alarm_replies(self.operator)

    @property
    def command_reply_topic(self) -> str:
        return topics.command_replies(self.operator)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, subscribe and file messages; reconnect with backoff forever (or until
        stop is set)."""
        await self.client.run(stop=stop)

    def _on_message(self, message: Received) -> None:
        self.model.on_message(message.topic, message.payload)

    def new_request_id(self) -> str:
        """Unique to this console: the operator's other consoles see the same replies."""
        self._requests += 1
        return f"{self._request_prefix}-{self._requests}"

    async def request(self, vehicle: str, parameter: str, source: str,
                      action: messages.OperatorAction = "acknowledge",
                      duration_s: float | None = None, request_id: str | None = None) -> str:
        """Ask the ingest to acknowledge, shelve or unshelve an alarm; its answer comes on
        alarms/replies/<operator> with the request id returned here. Raises
        ConnectionError while the broker is away."""
        if not self.client.connected:
            raise ConnectionError("no broker connection; try again once it is back")
        request = messages.OperatorRequest(
            request_id=request_id or self.new_request_id(), parameter=parameter,
            action=action, source=topics.Source.parse(source), duration_s=duration_s)
        await self.client.publish(topics.acknowledgements(self.operator, vehicle),
                                  request.to_json(), qos=1)
        return request.request_id

    async def acknowledge(self, vehicle: str, parameter: str, source: str) -> str:
        return await self.request(vehicle, parameter, source, "acknowledge")

    async def shelve(self, vehicle: str, parameter: str, source: str,
                     duration_s: float = SHELVE_S) -> str:
        return await self.request(vehicle, parameter, source, "shelve", duration_s)

    async def unshelve(self, vehicle: str, parameter: str, source: str) -> str:
        return await self.request(vehicle, parameter, source, "unshelve")

    async def call(self, drill: str, text: str, position: str | None = None,
                   request_id: str | None = None) -> messages.DrillCall:
        """Make a call in a drill under this operator's name (calls/<operator>/<drill>):
        the drill runner hears it, stamps it with the mission clock and its debrief scores
        it. Raises MessageError for an empty or too long call, ConnectionError while the
        broker is away."""
        call = messages.DrillCall.from_data({
            "request_id": request_id or self.new_request_id(), "text": text,
            "position": position, "time_ns": time.time_ns()})
        if not self.client.connected:
            raise ConnectionError("no broker connection; try again once it is back")
        await self.client.publish(topics.drill_calls(self.operator, drill), call.to_json(),
                                  qos=1)
        return call

    async def command(self, vehicle: str, request: messages.CommandRequest) -> str:
        """Send a command request (send, arm, execute, disarm) under this operator's name;
        the commanding service answers on cmd/replies/<operator> naming its request_id.
        Raises ConnectionError while the broker is away."""
        if not self.client.connected:
            raise ConnectionError("no broker connection; try again once it is back")
        await self.client.publish(topics.command_requests(self.operator, vehicle),
                                  request.to_json(), qos=1)
        return request.request_id
