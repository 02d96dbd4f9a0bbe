"""The ingest's background tasks: one that dies stops the service with an error naming it,
through the real broker and InfluxDB, instead of leaving it half-alive (receiving, with
nothing left to store and acknowledge); and what it had not acknowledged is not lost: the
next ingest gets it from the broker and stores every frame once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from groundstation.core.definitions import load_definition
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.ingest.service import IngestService
from groundstation.ingest.tasks import WorkerDied
from groundstation.ingest.wiring import archive_factory, make_sink, quarantine_writer
from groundstation.storage.influx.backends import InfluxV1
from tests.harness import ingest_config, rows, running_ingest, wait_for
from tests.integration.test_link_quality import message, send
from tests.paths import MINI


async def test_a_dead_worker_stops_the_service_and_loses_nothing(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    defs = {"mini": load_definition(MINI)}
    config = ingest_config(mosquitto, influxdb, tmp_path, "tasks")
    influx = InfluxV1(influxdb.url, "tasks")
    influx.create_database()
    sink = make_sink(config)
    await sink.start()
    service = IngestService(config, defs, sink,
                            archive=archive_factory(config.ingest.archive_dir),
                            quarantine_sink=quarantine_writer(config.ingest.archive_dir))
    stop, ready = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(service.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 15)
    await send(mosquitto, [message(seq) for seq in range(0, 50, 5)])
    await wait_for(lambda: service.acked == 10, what="the first 10 messages stored")

    # The task that hands batches to storage dies of a bug: here, a malformed submission.
    with caplog.at_level(logging.ERROR, logger="groundstation.ingest"):
        service.inflight._submissions.put_nowait(None)  # type: ignore[arg-type]
        with pytest.raises(WorkerDied) as died:
            await asyncio.wait_for(run, 15)  # stops by itself: nobody set `stop`
    assert not stop.is_set()
    assert died.value.name == "submitter"
    assert "TypeError" in str(died.value)
    assert "ingest task 'submitter' died" in caplog.text
    assert service.acked == 10
    await sink.close()
    # Sent while no ingest runs: the broker keeps them for the ingest's session.
    await send(mosquitto, [message(seq) for seq in range(50, 100, 5)])

    # The next ingest (same client id, persistent session) gets the rest from the broker.
    async with running_ingest(mosquitto, influxdb, tmp_path / "second", defs, "tasks"):
        def stored() -> int:
            got = rows(influx, "SELECT count(cabin_press) FROM tm")
            return int(got[0]["count"]) if got else 0

        await wait_for(lambda: stored() == 100, what="all 100 frames in InfluxDB")
    got = rows(influx, "SELECT cabin_press FROM tm")
    assert len(got) == 100 and len({r["time"] for r in got}) == 100
