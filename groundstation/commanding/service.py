"""The commanding service: `groundstation commanding serve`.

MQTT in:  cmd/request/+/+                  operators' requests (the ACL binds the operator)
          cmd/ack/<source>/+               the ships' answers
          params/<source>/+                the ingest's processed parameters (verification)
MQTT out: cmd/replies/<operator>           the answer to each request
          cmd/uplink/<source>/<vehicle>    stamped commands (only this service may publish)
          cmd/events/<source>/<vehicle>    every stage of every command
          cmd/history/<source>/<vehicle>   retained: the recent commands

What it decides is groundstation/commanding/engine.py. Every stage event is made durable in
the command history beside the raw archive (groundstation/storage/command_log.py) before it
is published, and goes to InfluxDB's `commands` measurement through the storage layer's
sink (its own spool, so an InfluxDB outage loses nothing). At start the live history is read
back: the retained history is published again, and a command the previous run left
undecided is failed, saying so.

The broker connection is the station's MQTT adapter (groundstation.mqtt): its reconnect
policy, TLS and credentials; each connection's receiving and ticking run in a named task
group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from groundstation.commanding.engine import CommandEngine, Settings
from groundstation.commanding.operators import Operators
from groundstation.config import Config
from groundstation.core import messages, topics
from groundstation.core.commanddefs import VehicleCommands
from groundstation.core.definitions import VehicleDefinition
from groundstation.mqtt import BrokerError, Connection, MqttClient
from groundstation.storage.command_log import CommandLogWriter, read_events
from groundstation.storage.influx.command_lines import command_line
from groundstation.storage.influx.sink_config import LineSink
from groundstation.tasks import TaskGroup

log = logging.getLogger("groundstation.commanding")

TICK_S = 0.2
SUBSCRIPTIONS = (topics.COMMAND_REQUEST_SUBSCRIPTION, *topics.COMMAND_ACK_SUBSCRIPTIONS,
                 *topics.PARAMS_SUBSCRIPTIONS)


class CommandingService:
    def __init__(self, config: Config, definitions: Mapping[str, VehicleDefinition],
                 commands: Mapping[str, VehicleCommands], operators: Operators, sink: LineSink,
                 history_root: Path):
        self.config = config
        c = config.commanding
        self.engine = CommandEngine(commands, definitions, operators,
                                    Settings(arm_timeout_s=c.arm_timeout_s,
                                             ack_timeout_s=c.ack_timeout_s,
                                             verify_grace_s=c.verify_grace_s))
        self.sink = sink
        self.history_root = history_root
        self._logs: dict[str, CommandLogWriter] = {}
        self._pending: list[tuple[str, bytes, bool]] = []
        self.connected = asyncio.Event()
        self._flushing = asyncio.Lock()  # one publisher at a time: the order is the events'
        self.stored = 0
        self.published = 0

    # --- storage ----------------------------------------------------------------------------

    def _log(self, source: str) -> CommandLogWriter:
        w = self._logs.get(source)
        if w is None:
            w = self._logs[source] = CommandLogWriter(self.history_root, source)
        return w

    def restore(self) -> None:
        """The live history read back: retained again, undecided commands failed."""
        last: dict[str, messages.CommandEvent] = {}
        writer = self._log(topics.LIVE)
        for ev in read_events(writer.path):
            self.engine.file(ev)
            last[ev.command_id] = ev
        for ev in last.values():
            if ev.stage not in messages.FINAL_STAGES:
                self.engine.interrupted(ev, "the commanding service stopped before it was "
                                            "decided")
        for source, vehicle in list(self.engine.history):
            self._pending.append(self.engine.history_message(source, vehicle))

    async def _store(self, events: list[messages.CommandEvent]) -> None:
        for ev in events:
            self._log(str(ev.source)).append(ev)  # durable before it is published
        if events:
            # Not awaited to durability: the sink retries and spools on its own.
            await self.sink.submit([command_line(ev) for ev in events])
            self.stored += len(events)

    async def _flush(self, client: Connection | None) -> None:
        async with self._flushing:
            out, events = self.engine.drain()
            await self._store(events)
            self._pending += out
            if client is None:
                return
            while self._pending:
                topic, payload, retain = self._pending[0]
                await client.publish(topic, payload, qos=1, retain=retain)
                self._pending.pop(0)
                self.published += 1

    # --- MQTT -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        self.restore()
        await self._flush(None)
        client = MqttClient(self.config.mqtt, name="commanding",
                            client_id=self.config.commanding.client_id,
                            subscriptions=SUBSCRIPTIONS,
                            on_disconnect=lambda _: self.connected.clear())
        try:
            await client.run(lambda conn: self._session(conn, ready), stop=stop)
        finally:
            for w in self._logs.values():
                w.close()
            self._logs.clear()

    async def _session(self, conn: Connection, ready: asyncio.Event | None) -> None:
        self.connected.set()
        log.info("commanding: subscribed to %s", ", ".join(SUBSCRIPTIONS))
        await self._flush(conn)  # what waited for the broker
        if ready is not None:
            ready.set()
        async with TaskGroup("commanding", expected=(BrokerError,)) as tasks:
            tasks.create_task(self._receive(conn), name="receive")
            tasks.create_task(self._tick(conn), name="tick")

    async def _receive(self, conn: Connection) -> None:
        async for message in conn.messages():
            try:
                self.handle(message.topic, message.payload)
            except Exception:  # one bad message must not stop the service
                log.exception("commanding: a message on %s", message.topic)
            await self._flush(conn)

    async def _tick(self, conn: Connection) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.engine.tick()
            await self._flush(conn)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            where = topics.parse(topic)
        except ValueError:
            return
        match where:
            case topics.CommandRequestTopic(operator=operator, vehicle=vehicle):
                self.engine.on_request(operator, vehicle, payload)
            case topics.CommandAckTopic(source=source, vehicle=vehicle):
                self.engine.on_ack(source, vehicle, payload)
            case topics.ParamsTopic(source=source, vehicle=vehicle):
                if source.kind is topics.SourceKind.REPLAY:
                    return  # a replay is never commanded
                try:
                    update = messages.ParamsUpdate.from_json(payload)
                except messages.MessageError as exc:
                    log.warning("commanding: ignored parameters on %s: %s", topic, exc)
                    return
                self.engine.on_params(source, vehicle, update)


async def serve(config: Config, definitions: Mapping[str, VehicleDefinition],
                commands: Mapping[str, VehicleCommands], operators: Operators, sink: LineSink,
                stop: asyncio.Event, ready: asyncio.Event | None = None) -> CommandingService:
    """Run the commanding service until stop is set; its command events go to `sink` (the
    ingest's kind of InfluxDB sink with its own spool, groundstation.ingest.wiring's
    make_sink, or a NullSink without a database)."""
    await sink.start()
    root = config.commanding.history_dir or config.ingest.archive_dir
    service = CommandingService(config, definitions, commands, operators, sink, Path(root))
    try:
        await service.run(stop, ready)
    finally:
        await sink.close()
    return service
