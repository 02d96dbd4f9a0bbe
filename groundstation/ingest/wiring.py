"""The ingest wired to its outputs: the InfluxDB sink (or none), the raw archive and the
quarantine on disk, and `serve`, which runs the whole until it is told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundstation.config import Config, ConfigError
from groundstation.core.definitions import VehicleDefinition
from groundstation.ingest.service import IngestService
from groundstation.ingest.stream import ArchiveFactory, ArchiveLike, Quarantined
from groundstation.storage.influx.lineprotocol import EncodedLines, line_count
from groundstation.storage.influx.sink_config import LineSink, SinkConfig

log = logging.getLogger("groundstation.ingest")


class DatabaseMissing(ConfigError):
    """The ingest refuses to start: its database (or bucket) does not exist and it may not
    create it. The message says what to run."""


def archive_factory(root: Path) -> ArchiveFactory:
    from groundstation.storage.archive import ArchiveWriter

    def make(defn: VehicleDefinition, source: str) -> ArchiveLike:
        # The definition's text goes in the file header, so a replay can check limits
        # with the definitions in force at recording time.
        text = Path(defn.path).read_bytes() if defn.path and Path(defn.path).exists() else None
        return ArchiveWriter(root, defn.vehicle, defn.stream,
                             source, frame_period_ns=round(1e9 / defn.frame.rate_hz),
                             definition_text=text)

    return make


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


def sink_config(config: Config) -> SinkConfig:
    c = config.influx
    return SinkConfig(batch_max_lines=c.batch_lines, flush_interval_s=c.flush_interval_ms / 1000,
                      concurrency=c.write_concurrency, create_missing=c.create_database,
                      compress=c.compress_writes(),
                      batch_max_bytes=int(c.batch_max_mb * (1 << 20)),
                      max_queue_bytes=int(c.queue_max_mb * (1 << 20)),
                      spool_max_bytes=int(c.spool_max_mb * (1 << 20)))


class NullSink:
    """No database: values count as stored at once (consoles, alarms and the archive still
    work). For `groundstation demo` on a machine without InfluxDB."""

    lines = 0

    async def start(self) -> NullSink:
        return self

    async def submit(self, lines: Sequence[str | EncodedLines]) -> asyncio.Future[None]:
        self.lines += line_count(lines)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def close(self, timeout: float = 30.0) -> None:
        return None


def make_sink(config: Config, spool_dir: Path | None = None) -> LineSink:
    """The InfluxDB sink the configuration describes (the API is asked of the server when
    `api` is auto, so the server must answer /ping), spooling to `spool_dir` (default:
    `[influx] spool_dir`; the commanding service has its own)."""
    from groundstation.config import reveal
    from groundstation.storage.influx.backends import make_backend
    from groundstation.storage.influx.sink import InfluxSink

    c = config.influx
    if c.api == "none":
        return NullSink()
    backend = make_backend(c.url, c.api, database=c.database,
                           retention_policy=c.retention_policy, username=c.username,
                           password=reveal(c.password), token=reveal(c.token), org=c.org,
                           bucket=c.bucket)
    return InfluxSink(backend, spool_dir or c.spool_dir, sink_config(config))


async def check_database(sink: Any, create: bool) -> None:
    """Before the first message: the database (or bucket) exists, or is created when the
    configuration allows; else DatabaseMissing. A server that cannot be asked is an outage,
    not a reason to refuse: the sink spools until it answers."""
    from groundstation.storage.influx.backends import (
        DatabaseMissingError,
        InfluxError,
        ensure_target,
    )

    backend = getattr(sink, "backend", None)
    if backend is None or not hasattr(backend, "target_exists"):
        return  # no database (NullSink)
    try:
        if await asyncio.to_thread(ensure_target, backend, create):
            log.warning("InfluxDB %s: created %s", backend.target, backend.target_name)
    except DatabaseMissingError as exc:
        raise DatabaseMissing(str(exc)) from None
    except InfluxError as exc:
        log.warning("could not check that %s exists (%s); starting: until InfluxDB answers, "
                    "values are spooled", backend.target_name, exc)


async def serve(config: Config, definitions: dict[str, VehicleDefinition], stop: asyncio.Event,
                ready: asyncio.Event | None = None) -> IngestService:
    """Run the ingest with its sink and archive until stop is set; returns the service (for
    its counters). Raises DatabaseMissing before subscribing if the database is missing and
    may not be created, tasks.WorkerDied if a part of the service failed."""
    sink = make_sink(config)
    await check_database(sink, config.influx.create_database)
    await sink.start()
    service = IngestService(config, definitions, sink,
                            archive=archive_factory(config.ingest.archive_dir),
                            quarantine_sink=quarantine_writer(config.ingest.archive_dir))
    try:
        await service.run(stop, ready)
    finally:
        await sink.close()
    return service
