"""The archive catalogue and export, and everything after a crash: an archive file cut off
mid-record still lists, exports and replays everything before the tear."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiomqtt
import msgpack
import numpy as np

from groundstation.deploy.servers import MosquittoServer
from groundstation.replay.replayer import Replayer, plan_replay
from groundstation.storage import export
from groundstation.storage.archive import DATA_SUFFIX
from groundstation.storage.passes import (
    Catalogue,
)
from tests.archive_helpers import FPM, PERIOD, T0, record
from tests.harness import wait_for

# -- after a crash -------------------------------------------------------------------------


async def test_a_torn_archive_still_lists_exports_and_replays_up_to_the_tear(
        mosquitto: MosquittoServer, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    record(root, [(T0, 500)], index_every_records=16)
    data = next((root / "live" / "mini" / "hbr").glob(f"*{DATA_SUFFIX}"))
    # Cut the file in the middle of record 71 (of 100): a crash mid-write.
    header_and_records = data.stat().st_size
    record_size = (header_and_records - _header_len(data)) // 100
    cut = _header_len(data) + 70 * record_size + record_size // 2
    os.truncate(data, cut)
    kept = 70 * FPM

    cat = Catalogue(root)
    (p,) = cat.passes
    assert p.frames == kept and p.los_ns == T0 + (kept - 1) * PERIOD
    assert [x.kind for x in p.problems] == ["torn"]

    r = export.export_pass(root, p, tmp_path / "t.csv", progress=False)
    assert r.rows == kept

    plan = plan_replay(root, pass_spec=p.id)
    got: list[int] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("telemetry/replay/torn/#", qos=1)

        async def listen() -> None:
            async for m in client.messages:
                msg = msgpack.unpackb(m.payload)
                got.extend(range(msg["seq"], msg["seq"] + len(msg["frames"])))

        task = asyncio.create_task(listen())
        result = await Replayer(root, plan, host=mosquitto.host, port=mosquitto.port,
                                session="torn", speed=None, progress=False,
                                max_frames_per_message=64).run()
        await wait_for(lambda: len(got) >= kept)
        await asyncio.sleep(0.2)
        task.cancel()
    assert result.frames_sent == kept and got == list(range(kept))

    # And the writer, reopening the stream after the crash, cuts the tear and goes on.
    record(root, [(T0 + kept * PERIOD, 50)], start_seq=kept)
    (p,) = Catalogue(root).passes
    assert p.frames == kept + 50 and not p.problems


def _header_len(path: Path) -> int:
    raw = path.read_bytes()[:16]
    (json_len,) = np.frombuffer(raw[12:16], "<u4")
    return 16 + int(json_len) + 4
