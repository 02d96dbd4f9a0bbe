"""The command history file (groundstation/storage/command_log.py) and the `commands`
measurement's line protocol: events go in whole and come back in order, a torn tail is
skipped with a report, a span is read by data time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from groundstation.core import messages
from groundstation.core.topics import Source
from groundstation.storage.command_log import (
    CommandLogWriter,
    log_path,
    read_events,
    read_span,
)
from groundstation.storage.durable import Damage, LockedError
from groundstation.storage.influx.command_lines import command_line


def event(n: int, stage: str = "sent", data_time: int | None = 1000, vehicle: str = "soyuz",
          **kw: object) -> messages.CommandEvent:
    return messages.CommandEvent.from_data({
        "command_id": f"c-{n}", "seq": n, "vehicle": vehicle, "source": "live",
        "command": "tv_power", "kind": "realtime", "args": {"state": "ON"},
        "operator": "rts", "position": "РТС", "stage": stage, "time_ns": 5000 + n,
        "data_time_ns": data_time, **kw})


def test_events_round_trip_and_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    w = CommandLogWriter(tmp_path, "live")
    assert w.path == log_path(tmp_path, "live") == tmp_path / "commands/live/commands.gsc"
    with pytest.raises(LockedError):
        CommandLogWriter(tmp_path, "live")  # one writer
    events = [event(i, data_time=1000 + i) for i in range(5)]
    for e in events:
        w.append(e)
    w.close()
    assert list(read_events(w.path)) == events
    # A crash mid-append: the last record torn.
    with open(w.path, "ab") as f:
        f.write(b"GSC1\x40\x00\x00\x00garbage")
    damage: list[Damage] = []
    assert list(read_events(w.path, damage.append)) == events
    assert damage and damage[0].runs_to_end
    # Appending after a restart keeps the file one history.
    w = CommandLogWriter(tmp_path, "live")
    w.append(event(9, data_time=5000, vehicle="apollo_csm"))
    w.close()
    got = list(read_events(w.path))
    assert got[-1].command_id == "c-9" and len(got) == 6
    drill = CommandLogWriter(tmp_path, Source.training("d1"))
    assert drill.path == tmp_path / "commands/training/d1/commands.gsc"
    drill.close()
    assert read_span(tmp_path, "live", vehicles={"soyuz"}, start_ns=1002, end_ns=1004) == \
        events[2:4]
    assert [e.command_id for e in read_span(tmp_path, "live")] == [
        "c-0", "c-1", "c-2", "c-3", "c-4", "c-9"]
    assert list(read_events(tmp_path / "nothing.gsc")) == []
    assert os.path.exists(w.path.with_name("commands.gsc.lock"))


def test_the_commands_measurement() -> None:
    line = command_line(event(3, "failed", reason='no "answer"', code=None,
                              verify=[{"condition": "tv_status ON within 15 s",
                                       "parameter": "tv_status", "ok": False}]))
    head, fields, t = line.split(" ", 1)[0], line.split(" ", 1)[1].rsplit(" ", 1)[0], \
        line.rsplit(" ", 1)[1]
    assert head == ("commands,command=tv_power,command_id=c-3,source=live,stage=failed,"
                    "vehicle=soyuz")
    assert t == "1000"  # the data time: it plots with the telemetry
    assert 'reason="no \\"answer\\""' in fields and "seq=3i" in fields
    assert 'args="{\\"state\\": \\"ON\\"}"' in fields and "hazardous=false" in fields
    assert '"ok\\": false' in fields
    assert command_line(event(4, data_time=None)).endswith(" 5004")  # wall time: no data yet
