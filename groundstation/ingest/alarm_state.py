"""Alarm state across restarts.

The alarm engines of live and training streams (latched, acknowledged and shelved alarms,
streaks, the event seq) are saved to `alarm_state_dir/alarms.json` and restored at
start-up, before the first message. What is saved for a stream is its engine's state after
the last batch whose messages were acknowledged to the broker: the messages after it are
the ones the broker sends again after a restart, and replaying them on that state gives the
same events with the same seq at the same times, which overwrite themselves in InfluxDB. A
snapshot is taken per batch (a few small dicts, `checkpoint`) and the file is written,
atomically (storage/durable.py: temporary file, fsync, rename) and off the event loop,
once such a batch had alarm events or an operator acted, at most every MIN_INTERVAL_S, and
at a clean shutdown. Replay sessions are not saved: their alarm state ends with the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from groundstation.core import topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition
from groundstation.ingest.stream import Checkpoint, Stream, persists
from groundstation.storage.durable import atomic_write

log = logging.getLogger("groundstation.ingest")

FILE = "alarms.json"
FORMAT = "groundstation-alarm-state"
VERSION = 1
MIN_INTERVAL_S = 0.2  # the state file is written at most this often


class AlarmStateStore:
    """The alarm state file of one ingest. `stopping()` says whether the service is
    shutting down (then an unacknowledged batch is left for the next ingest to replay)."""

    def __init__(self, path: Path, stopping: Callable[[], bool] = lambda: False) -> None:
        self.path = path
        self.stopping = stopping
        self.saves = 0
        self.errors = 0
        self.restored: list[tuple[str, str, str]] = []
        self.dirty = asyncio.Event()
        self._lock = threading.Lock()
        self._generation = 0  # of the documents built ...
        self._written = 0  # ... and of the last one written

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, s: Stream, changed: bool) -> Callable[[bool], None]:
        """Snapshot a stream's alarm state after a batch (or an operator's action); the
        returned callback says whether the batch's messages were acknowledged."""
        cp = Checkpoint(s.alarms.snapshot(), changed, s.decoder.position())
        s.checkpoints.append(cp)
        return lambda acked: self._done(s, cp, acked)

    def _done(self, s: Stream, cp: Checkpoint, acked: bool) -> None:
        if not acked and self.stopping():
            # Stopping, with the messages unacknowledged: the broker sends them again to
            # the next ingest, which replays them on the state saved before them.
            return
        # Otherwise an unacknowledged batch was cut off by a reconnect, whose redelivered
        # copies are duplicates here (acknowledged without reaching the alarms), or its
        # storage failed (logged): either way the state moves on.
        cp.done = True
        changed = False
        moved = False
        while s.checkpoints and s.checkpoints[0].done:
            head = s.checkpoints.popleft()
            s.saveable, s.saveable_position = head.snapshot, head.position
            changed |= head.changed
            moved = True
        if moved:
            self.advanced(s, changed)

    def advanced(self, s: Stream, changed: bool) -> None:
        """A stream's saveable state moved on; changed: its alarms did (written soon)."""
        if changed:
            self.dirty.set()

    # -- writing --------------------------------------------------------------------------

    async def saver(self, streams: Callable[[], Iterable[tuple[tuple[str, str, str], Stream]]]
                    ) -> None:
        """The background writer: the file after each change, at most every MIN_INTERVAL_S."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            self._generation += 1
            doc = self.document(streams(), final=False)
            await asyncio.to_thread(self.write, doc, self._generation)
            await asyncio.sleep(MIN_INTERVAL_S)

    def save(self, streams: Iterable[tuple[tuple[str, str, str], Stream]]) -> None:
        """Write the file now (at shutdown, once storage has settled)."""
        self._generation += 1
        self.write(self.document(streams, final=True), self._generation)

    @staticmethod
    def document(streams: Iterable[tuple[tuple[str, str, str], Stream]], final: bool
                 ) -> dict[str, Any]:
        entries = []
        for (source, vehicle, stream), s in streams:
            if not s.persist:
                continue
            # At the end, a stream with no batch waiting is saved as it is now (streaks
            # of the last batches included).
            now = final and not s.checkpoints
            snap = s.alarms.snapshot() if now else s.saveable
            if snap is None:
                continue  # nothing acknowledged yet: the broker has all of it
            entries.append({"source": source, "vehicle": vehicle, "stream": stream,
                            "last_frame_ns": s.last_frame_ns,
                            "last_data_wall_ns": s.last_data_wall_ns, "alarms": snap,
                            "decoder": s.decoder.position() if now
                            else s.saveable_position})
        return {"format": FORMAT, "version": VERSION, "saved_ns": time.time_ns(),
                "streams": entries}

    def write(self, doc: dict[str, Any], generation: int) -> None:
        """Atomically replace the state file (temporary file, fsync, rename, fsync of the
        directory). Runs in a thread; a newer document never loses to an older one."""
        path = self.path
        with self._lock:
            if generation <= self._written:
                return
            try:
                data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
            except (OSError, ValueError) as exc:
                self.errors += 1
                log.error("could not save the alarm state to %s: %s; the alarms stay in "
                          "memory and the next change tries again", path, exc)
                return
            self._written = generation
            self.saves += 1

    # -- restoring ------------------------------------------------------------------------

    def restore(self, definitions: dict[str, VehicleDefinition], *, with_archive: bool,
                skip: Iterable[tuple[str, str, str]] = ()) -> list[Stream]:
        """The streams the saved alarm state restores (before the first message). A file
        that cannot be read or parsed is kept aside and the ingest starts with no alarms;
        a part that no longer fits the definitions is dropped with a warning and the rest
        restored. with_archive: each restored stream opens its archive with its data;
        skip: streams the service already has."""
        path = self.path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read the alarm state file %s (%s): starting with no alarms",
                      path, exc)
            self._keep_bad_file()
            return []
        try:
            doc = json.loads(data)
            if not (isinstance(doc, dict) and doc.get("format") == FORMAT):
                raise ValueError("not an alarm state file")
            if doc.get("version") != VERSION:
                raise ValueError(f"version {doc.get('version')!r}, this ingest reads "
                                 f"{VERSION}")
            entries = doc["streams"]
            if not isinstance(entries, list):
                raise ValueError("'streams' is not a list")
        except (ValueError, KeyError) as exc:  # JSONDecodeError and UnicodeError included
            log.error("the alarm state file %s is unreadable (%s): starting with no alarms",
                      path, exc)
            self._keep_bad_file()
            return []
        out, bad = restore_entries(entries, definitions, with_archive=with_archive,
                                   skip=skip, where=f"alarm state file {path}")
        self.restored.extend(key for key in ((x.source, x.vehicle, x.definition.stream)
                                             for x in out))
        if bad:
            self._keep_bad_file()
        return out

    def _keep_bad_file(self) -> None:
        path = self.path
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        keep = path.with_name(f"{path.name}.bad-{stamp}")
        try:
            shutil.copy2(path, keep)
        except OSError as exc:
            log.error("could not keep a copy of the bad alarm state file %s: %s", path, exc)
            return
        log.error("kept a copy of the bad alarm state file as %s", keep)


def restore_entries(entries: list[Any], definitions: dict[str, VehicleDefinition], *,
                    with_archive: bool, skip: Iterable[tuple[str, str, str]] = (),
                    where: str, resume: bool = False) -> tuple[list[Stream], bool]:
    """Streams from saved entries (AlarmStateStore.document's), and whether any was
    malformed (dropped, logged). resume: their decoders go on from the saved position
    (a partition taken over from another instance, whose last frames may come again)."""
    bad = False
    out: list[Stream] = []
    seen: set[tuple[str, str, str]] = set(skip)
    now_mono, now_wall = time.monotonic(), time.time_ns()
    for e in entries:
        try:
            key = (e["source"], e["vehicle"], e["stream"])
            if not all(isinstance(x, str) for x in key):
                raise TypeError("source, vehicle and stream must be strings")
            source, vehicle, stream = key
            topics.check_source(source)
            main = definitions.get(vehicle)
            defn = main.stream_definition(stream) if main is not None else None
            if not persists(source) or main is None or defn is None:
                log.warning("alarm state of %s/%s/%s dropped: no such live or training "
                            "stream in the definitions", source, vehicle, stream)
                continue
            engine = AlarmEngine(main, source)  # a vehicle's streams share its alarms
            for warning in engine.restore(e["alarms"]):
                log.warning("alarm state restored with a change: %s", warning)
            last_frame_ns = int(e.get("last_frame_ns") or 0)
            last_wall_ns = int(e.get("last_data_wall_ns") or 0)
            decoder = StreamDecoder(defn)
            if resume and e.get("decoder") is not None:
                decoder.resume(e["decoder"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("%s: a stream's state is malformed (%s); dropped", where, exc)
            bad = True
            continue
        if key in seen:
            continue
        seen.add(key)
        s = Stream(source, defn, decoder, engine, None, persist=True,
                   archive_pending=with_archive, last_frame_ns=last_frame_ns,
                   last_data_wall_ns=last_wall_ns, saveable=engine.snapshot(),
                   saveable_position=decoder.position())
        if last_wall_ns:
            # Shelves keep expiring during the gap in the data, downtime included.
            s.last_data_mono = now_mono - max(0, now_wall - last_wall_ns) / 1e9 or 1e-9
        log.info("restored the alarm state of %s/%s: %d alarms listed or shelved, "
                 "event seq %d", source, vehicle, len(engine.active()["alarms"]),
                 engine.snapshot()["seq"])
        out.append(s)
    return out, bad
