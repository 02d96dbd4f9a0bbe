"""The command history: every stage of every command, in an append-only file per source
beside the raw archive.

    <archive_dir>/commands/live/commands.gsc
    <archive_dir>/commands/training/<drill>/commands.gsc

Each record is one `messages.CommandEvent` as JSON, framed by `durable.RecordFraming`
(``marker "GSC1" | u32 length | u32 CRC-32 | body``) and appended whole with fdatasync
before the event is published, so what the consoles saw is on disk. The first record of a
file is a header (``{"format": "groundstation command history", "version": 1, "source":
...}``). A torn last record (a crash mid-append) or a corrupt one is skipped with a report,
never fatal, as in the raw archive. One writer per file (an exclusive lock beside it).

The commanding service writes it (groundstation/commanding/); the replay tool reads the span
it replays and republishes it on the session's topics (groundstation/replay/commands.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from groundstation.core import messages
from groundstation.core.topics import Source
from groundstation.storage.durable import (
    Damage,
    ExclusiveLock,
    FileRegion,
    RecordFraming,
    append_whole,
    fsync_dir,
)

log = logging.getLogger(__name__)

FORMAT = "groundstation command history"
VERSION = 1
DIRECTORY = "commands"
FILE_NAME = "commands.gsc"
MAX_RECORD = 1 << 20
FRAMING = RecordFraming(b"GSC1", max_body=MAX_RECORD)


def log_path(root: str | os.PathLike[str], source: str | Source) -> Path:
    """The history file of a source under an archive root."""
    return Path(root, DIRECTORY, *Source.parse(source).levels, FILE_NAME)


class CommandLogWriter:
    """Appends a source's command events durably. Holds the file's lock until closed."""

    def __init__(self, root: str | os.PathLike[str], source: str | Source):
        self.source = str(Source.parse(source))
        self.path = log_path(root, self.source)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = ExclusiveLock(self.path.with_name(FILE_NAME + ".lock"))
        new = not self.path.exists()
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            self.lock.release()
            raise
        self.size = os.fstat(self.fd).st_size
        if new or self.size == 0:
            head = {"format": FORMAT, "version": VERSION, "source": self.source}
            self._append(json.dumps(head).encode())
            fsync_dir(self.path.parent, strict=False)

    def append(self, event: messages.CommandEvent) -> None:
        """On disk (fdatasync) before returning; a failed write leaves the file as it was."""
        self._append(event.to_json())

    def _append(self, body: bytes) -> None:
        record = FRAMING.encode(body)
        append_whole(self.fd, self.size, record, sync=True)
        self.size += len(record)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.lock.release()


def read_events(path: str | os.PathLike[str],
                report: Callable[[Damage], None] | None = None
                ) -> Iterator[messages.CommandEvent]:
    """Every event in one history file, in the order written; damage and records that are
    not events are skipped (and reported)."""
    def damaged(d: Damage) -> None:
        log.warning("%s: %d bytes skipped at %d: %s", path, d.length, d.offset, d.detail)
        if report is not None:
            report(d)

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        region = FileRegion(fd, 0, os.fstat(fd).st_size)
        for _, body, _ in FRAMING.scan(region, 0, damaged):
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("format") == FORMAT:
                continue  # the header
            try:
                yield messages.CommandEvent.from_data(data)
            except messages.MessageError as exc:
                log.warning("%s: a record that is no command event: %s", path, exc)
    finally:
        os.close(fd)


def read_span(root: str | os.PathLike[str], source: str | Source, *,
              vehicles: set[str] | None = None, start_ns: int | None = None,
              end_ns: int | None = None) -> list[messages.CommandEvent]:
    """A source's events of these vehicles whose data time lies in [start_ns, end_ns), in
    data-time order (events with no data time are left out: they cannot be placed)."""
    out = [e for e in read_events(log_path(root, source))
           if e.data_time_ns is not None
           and (vehicles is None or e.vehicle in vehicles)
           and (start_ns is None or e.data_time_ns >= start_ns)
           and (end_ns is None or e.data_time_ns < end_ns)]
    out.sort(key=lambda e: (e.data_time_ns or 0, e.seq))
    return out
