"""Runs the real ingest service against the test fixtures' real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from groundstation.config import (
    Config,
    InfluxConfig,
    IngestConfig,
    MqttConfig,
)
from groundstation.core.definitions import VehicleDefinition
from groundstation.deploy.broker_auth import secure_broker_config
from groundstation.deploy.rabbitmq import RabbitMQCluster, RabbitMQNode
from groundstation.deploy.servers import BinaryNotFoundError, InfluxDBServer, MosquittoServer
from groundstation.ingest.service import IngestService
from groundstation.ingest.wiring import archive_factory, make_sink, quarantine_writer
from groundstation.storage.influx.backends import InfluxV1
from simulators.runner import SimRunner


def start_or_skip(server: MosquittoServer | InfluxDBServer | RabbitMQCluster) -> None:
    """Start a real server; without its binary, skip, except under CI, where a green run
    must mean the real servers ran, so there it is a failure."""
    try:
        server.start()
    except BinaryNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(str(exc))


def ingest_config(mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp: Path,
                  database: str = "e2e", mqtt_user: tuple[str, str] | None = None,
                  mqtt: MqttConfig | None = None, **ingest: Any) -> Config:
    user, password = mqtt_user or (None, None)
    return Config(
        mqtt=mqtt or MqttConfig(host=mosquitto.host, port=mosquitto.port,  # type: ignore[call-arg]
                                username=user, password=password),
        influx=InfluxConfig(api="v1", url=influxdb.url, database=database,  # type: ignore[call-arg]
                            spool_dir=tmp / "spool", flush_interval_ms=20),
        ingest=IngestConfig(archive_dir=tmp / "archive",  # type: ignore[call-arg]
                            **{"batch_max_delay_ms": 10, "stats_interval_s": 0.5, **ingest}))


@asynccontextmanager
async def running_ingest(mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp: Path,
                         definitions: dict[str, VehicleDefinition], database: str = "e2e",
                         mqtt_user: tuple[str, str] | None = None,
                         mqtt: MqttConfig | None = None,
                         **ingest: Any) -> AsyncIterator[IngestService]:
    """The real ingest, connected to the fixtures' servers (as mqtt_user, if given; with
    `mqtt`, as that configuration says: TLS, say)."""
    config = ingest_config(mosquitto, influxdb, tmp, database, mqtt_user, mqtt, **ingest)
    InfluxV1(influxdb.url, database).create_database()
    sink = make_sink(config)
    await sink.start()
    service = IngestService(config, definitions, sink,
                            archive=archive_factory(config.ingest.archive_dir),
                            quarantine_sink=quarantine_writer(config.ingest.archive_dir))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield service
    finally:
        stop.set()
        await task
        await sink.close()


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the ingest'}")
        await asyncio.sleep(0.02)


def rows(influx: InfluxV1, q: str) -> list[dict[str, Any]]:
    res = influx.query(q)["results"][0]
    out = []
    for s in res.get("series", []):
        out += [dict(zip(s["columns"], v, strict=True)) for v in s["values"]]
    return out


def start_ingest_process(mosquitto: MosquittoServer, influxdb: InfluxDBServer, defs_dir: Path,
                         database: str, *flags: str) -> subprocess.Popen[str]:
    """`groundstation ingest` as its own process (to be killed), once it has subscribed."""
    cmd = [sys.executable, "-m", "groundstation", "ingest",
           "--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port),
           "--influx-api", "v1", "--influx-url", influxdb.url, "--influx-database", database,
           "--defs-dir", str(defs_dir), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if "ingest: subscribed" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"the ingest did not start: {proc.stdout.read()}")


@contextmanager
def secure_mosquitto(tmp: Path, users: Mapping[str, str],
                     fleet_setting: Mapping[str, int] | None = None
                     ) -> Iterator[MosquittoServer]:
    """A real Mosquitto with the repository's ACL (and a fleet's members' blocks, with
    `fleet_setting`) and these users' passwords."""
    try:
        extra = secure_broker_config(tmp / "auth", users, fleet_setting=fleet_setting)
    except BinaryNotFoundError as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(str(exc))
    server = MosquittoServer(tmp / "broker", allow_anonymous=False, extra_config=extra)
    start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


# -- MQTT clients -------------------------------------------------------------------------

ACL_USERS = {
    "apollo_csm": "csm-pw-1975",
    "soyuz": "soyuz-pw-19",
    "ingest": "ingest-pw",
    "flight": "flight-pw",
    "eecom": "eecom-pw",
    "instructor": "instructor-pw",
    "replay": "replay-pw",
}
# The cluster's accounts (the conftest's rabbitmq_secure): the same, and the commanding
# service's.
CLUSTER_USERS = {**ACL_USERS, "commanding": "commanding-pw"}


MARK = b"MARK"


_client_numbers = itertools.count()


@asynccontextmanager
async def login(broker: MosquittoServer | RabbitMQNode, user: str, *subscriptions: str,
                password: str | None = None, identifier: str | None = None
                ) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT client logged in as ``user``, subscribed; its client id under the account's
    name (groundstation.mqtt.account_client_id: the cluster's rights need it)."""
    if identifier is None:
        identifier = f"{user}.test-{os.getpid()}-{next(_client_numbers)}"
    async with aiomqtt.Client(broker.host, broker.port, username=user,
                              password=ACL_USERS[user] if password is None else password,
                              identifier=identifier, timeout=5) as client:
        for sub in subscriptions:
            await client.subscribe(sub, qos=1)
        yield client


async def received_until_mark(client: aiomqtt.Client, marks: int = 1,
                              timeout: float = 5.0) -> list[tuple[str, bytes]]:
    """Every message up to and including the marks-th marker."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout):
        async for msg in client.messages:
            assert isinstance(msg.payload, bytes)
            got.append((msg.topic.value, msg.payload))
            if msg.payload == MARK:
                marks -= 1
                if marks == 0:
                    return got
    return got


class Listener:
    """A subscriber that keeps reconnecting (the broker may be restarted under it)."""

    def __init__(self, broker: MosquittoServer, topics: list[str], client_id: str | None = None):
        self.broker, self.topics, self.client_id = broker, topics, client_id
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port,
                                          identifier=self.client_id,
                                          clean_session=self.client_id is None) as c:
                    for t in self.topics:
                        await c.subscribe(t, qos=1)
                    self.connected.set()
                    async for msg in c.messages:
                        self.queue.put_nowait((str(msg.topic), bytes(msg.payload)))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Listener:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def next(self, topic: str, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            t, payload = await asyncio.wait_for(self.queue.get(),
                                                max(deadline - time.monotonic(), 0.01))
            if t == topic:
                return payload


@contextlib.asynccontextmanager
async def flying(runner: SimRunner) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
