"""Runs the real ingest service against the test fixtures' real broker and database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from groundstation.broker_auth import secure_broker_config
from groundstation.config import Config, InfluxConfig, IngestConfig, MqttConfig
from groundstation.definitions import VehicleDefinition
from groundstation.influx_writer import InfluxV1
from groundstation.ingest import IngestService, archive_factory, make_sink, quarantine_writer
from groundstation.servers import BinaryNotFoundError, InfluxDBServer, MosquittoServer


def start_or_skip(server: MosquittoServer | InfluxDBServer) -> None:
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
                  **ingest: Any) -> Config:
    user, password = mqtt_user or (None, None)
    return Config(
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port,  # type: ignore[call-arg]
                        username=user, password=password),
        influx=InfluxConfig(api="v1", url=influxdb.url, database=database,  # type: ignore[call-arg]
                            spool_dir=tmp / "spool", flush_interval_ms=20),
        ingest=IngestConfig(archive_dir=tmp / "archive",  # type: ignore[call-arg]
                            **{"batch_max_delay_ms": 10, "stats_interval_s": 0.5, **ingest}))


@asynccontextmanager
async def running_ingest(mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp: Path,
                         definitions: dict[str, VehicleDefinition], database: str = "e2e",
                         mqtt_user: tuple[str, str] | None = None,
                         **ingest: Any) -> AsyncIterator[IngestService]:
    """The real ingest, connected to the fixtures' servers (as mqtt_user, if given)."""
    config = ingest_config(mosquitto, influxdb, tmp, database, mqtt_user, **ingest)
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
           "--ingest-defs-dir", str(defs_dir), *flags]
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
def secure_mosquitto(tmp: Path, users: Mapping[str, str]) -> Iterator[MosquittoServer]:
    """A real Mosquitto with the repository's ACL and these users' passwords."""
    try:
        extra = secure_broker_config(tmp / "auth", users)
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
