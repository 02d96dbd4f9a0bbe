"""Runs the real commanding service against the test fixtures' real broker and database,
and an operator that sends commands and follows them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from groundstation.commanding.operators import Operators
from groundstation.commanding.service import CommandingService
from groundstation.config import CommandingConfig, Config, InfluxConfig, IngestConfig, MqttConfig
from groundstation.core import messages, topics
from groundstation.core.commanddefs import load_all_commands
from groundstation.core.definitions import VehicleDefinition
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.ingest.wiring import make_sink

# Every account of the repository's ACL, and the operators the tests' operators file knows.
USERS = {"apollo_csm": "csm-pw", "soyuz": "soyuz-pw", "ingest": "ingest-pw",
         "commanding": "commanding-pw", "instructor": "instructor-pw", "replay": "replay-pw",
         "flight": "flight-pw", "eecom": "eecom-pw", "inco": "inco-pw", "gnc": "gnc-pw",
         "sozh": "sozh-pw", "rts": "rts-pw", "intruder": "intruder-pw"}
OPERATORS = Operators({"flight": ("FLIGHT",), "eecom": ("EECOM",), "inco": ("INCO",),
                       "gnc": ("GNC",), "sozh": ("СОЖ",), "rts": ("РТС",)})


def commanding_config(broker: MosquittoServer, influxdb: InfluxDBServer | None, tmp: Path,
                      user: tuple[str, str] | None = ("commanding", USERS["commanding"]),
                      database: str = "e2e", **settings: Any) -> Config:
    username, password = user or (None, None)
    influx = InfluxConfig(api="v1", url=influxdb.url, database=database,  # type: ignore[call-arg]
                          flush_interval_ms=20) if influxdb is not None \
        else InfluxConfig(api="none")  # type: ignore[call-arg]
    return Config(
        mqtt=MqttConfig(host=broker.host, port=broker.port,  # type: ignore[call-arg]
                        username=username, password=password),
        influx=influx,
        ingest=IngestConfig(archive_dir=tmp / "archive"),  # type: ignore[call-arg]
        commanding=CommandingConfig(spool_dir=tmp / "cmd-spool",  # type: ignore[call-arg]
                                    client_id=f"commanding-{secrets.token_hex(3)}",
                                    **settings))


@asynccontextmanager
async def running_commanding(broker: MosquittoServer, influxdb: InfluxDBServer | None,
                             tmp: Path, definitions: Mapping[str, VehicleDefinition],
                             operators: Operators = OPERATORS, **kw: Any
                             ) -> AsyncIterator[CommandingService]:
    config = commanding_config(broker, influxdb, tmp, **kw)
    sink = make_sink(config, config.commanding.spool_dir)
    await sink.start()
    service = CommandingService(config, definitions, load_all_commands(definitions),
                                operators, sink, config.ingest.archive_dir)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield service
    finally:
        stop.set()
        await task
        await sink.close()


class Operator:
    """A person at a console: sends requests under their own name and follows the stages."""

    def __init__(self, client: aiomqtt.Client, name: str, source: str = topics.LIVE):
        self.client, self.name, self.source = client, name, source
        self.replies: list[messages.CommandReply] = []
        self.events: list[messages.CommandEvent] = []
        self.histories: list[messages.CommandHistory] = []
        self.alarms: list[messages.AlarmEvent] = []  # of any extra alarm subscription
        self._n = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def login(cls, broker: MosquittoServer, name: str, source: str = topics.LIVE,
                    password: str | None = None, *, alarms: bool = False
                    ) -> AsyncIterator[Operator]:
        async with aiomqtt.Client(broker.host, broker.port, username=name,
                                  password=USERS.get(name, "") if password is None
                                  else password,
                                  identifier=f"op-{name}-{os.getpid()}-{secrets.token_hex(3)}",
                                  timeout=5) as client:
            op = cls(client, name, source)
            await client.subscribe(topics.command_replies(name), qos=1)
            await client.subscribe(topics.command_events_subscription(source), qos=1)
            await client.subscribe(topics.command_history_subscription(source), qos=1)
            if alarms:
                await client.subscribe(topics.alarms_subscription(source), qos=1)
            op._task = asyncio.create_task(op._listen())
            try:
                yield op
            finally:
                op._task.cancel()

    async def _listen(self) -> None:
        async for m in self.client.messages:
            payload = bytes(m.payload)  # type: ignore[arg-type]
            where = topics.parse(str(m.topic))
            if isinstance(where, topics.CommandRepliesTopic):
                self.replies.append(messages.CommandReply.from_json(payload))
            elif isinstance(where, topics.CommandEventsTopic):
                self.events.append(messages.CommandEvent.from_json(payload))
            elif isinstance(where, topics.CommandHistoryTopic) and payload:
                self.histories.append(messages.CommandHistory.from_json(payload))
            elif isinstance(where, topics.AlarmsTopic):
                self.alarms.append(messages.AlarmEvent.from_json(payload))

    def raised(self, parameter: str) -> bool:
        return any(a.parameter == parameter and a.transition.value in ("raised", "escalated")
                   for a in self.alarms)

    async def send(self, vehicle: str, line: str | None = None, *, as_user: str | None = None,
                   raw: bytes | None = None, position: str | None = None,
                   timeout: float = 10.0) -> messages.CommandReply:
        """A command line (as the console's), or raw bytes; the service's reply."""
        self._n += 1
        rid = f"{self.name}-{self._n}"
        payload = raw if raw is not None else messages.CommandRequest.parse_line(
            line or "", rid, source=self.source, position=position).to_json()
        if raw is not None:
            try:
                rid = json.loads(raw).get("request_id")
            except (ValueError, AttributeError):
                rid = None
        await self.client.publish(topics.command_requests(as_user or self.name, vehicle),
                                  payload, qos=1)
        async with asyncio.timeout(timeout):
            while True:
                hit = [r for r in self.replies if r.request_id == rid] if rid is not None \
                    else self.replies[-1:]
                if hit:
                    return hit[0]
                await asyncio.sleep(0.02)

    def stages(self, command_id: str | None) -> list[str]:
        return [e.stage for e in self.events if e.command_id == command_id]

    async def final(self, command_id: str | None, timeout: float = 60.0
                    ) -> messages.CommandEvent:
        async with asyncio.timeout(timeout):
            while True:
                done = [e for e in self.events if e.command_id == command_id
                        and e.stage in messages.FINAL_STAGES]
                if done:
                    return done[0]
                await asyncio.sleep(0.05)
