"""Alarm state across ingest restarts, with the real broker, database and ingest: a latched
alarm nobody acknowledged, an acknowledged one still out of limits and a shelved one
survive a clean stop and a SIGKILL; the event seq goes on; a corrupt state file is kept
aside and costs nothing but the state."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from groundstation.core import topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.storage.influx.backends import InfluxV1
from tests.harness import rows, running_ingest, start_ingest_process, wait_for
from tests.paths import MINI

T0 = 174_845_349_000_000_000
PERIOD = 20_000_000  # mini: 50 frames/s
ACTIVE = topics.alarms("mini") + "/active"
NOMINAL = {"cabin_press": 5.0, "hatch": "CLOSED", "temp": 66.0}


class Console:
    """An operator's console on the (anonymous) broker: what it receives, and its requests."""

    def __init__(self, broker: MosquittoServer, user: str = "flight"):
        self.broker, self.user = broker, user
        self.client = aiomqtt.Client(broker.host, broker.port, identifier=f"console-{user}")
        self.messages: list[tuple[str, Any]] = []
        self.requests = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Console:
        await self.client.__aenter__()
        await self.client.subscribe("alarms/#", qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self.client.messages:
            raw = bytes(m.payload)  # type: ignore[arg-type]
            self.messages.append((str(m.topic), json.loads(raw) if raw else None))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.client.__aexit__(None, None, None)

    def events(self, transition: str | None = None, parameter: str | None = None
               ) -> list[dict[str, Any]]:
        return [p for t, p in self.messages if t == topics.alarms("mini")
                and transition in (None, p["transition"])
                and parameter in (None, p["parameter"])]

    def active(self) -> dict[str, dict[str, Any]] | None:
        """The latest active list, by parameter (None before any)."""
        lists = [p for t, p in self.messages if t == ACTIVE and p is not None]
        return {a["parameter"]: a for a in lists[-1]["alarms"]} if lists else None

    async def request(self, parameter: str, action: str = "acknowledge", **extra: Any) -> None:
        self.requests += 1
        await self.client.publish(topics.acknowledgements(self.user, "mini"), json.dumps(
            {"request_id": f"{self.user}-{self.requests}", "parameter": parameter,
             "action": action, **extra}), qos=1)


async def send(broker: MosquittoServer, first: int, n: int, **values: Any) -> None:
    """Frames first .. first+n-1 of mini, 10 a message, with the given values."""
    enc = FrameEncoder(load_definition(MINI))
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for seq in range(first, first + n, 10):
            frames = enc.encode({**NOMINAL, **values}, 10, start_counter=1 + seq % 50)
            await client.publish(topics.telemetry("mini", "hbr"), encode_envelope(
                "mini", "hbr", seq, T0 + seq * PERIOD, frames), qos=1)


async def clear_retained_active(broker: MosquittoServer) -> None:
    """Forget the old ingest's retained active list: what a console sees next is the new
    ingest's."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(ACTIVE, b"", qos=1, retain=True)


def saved_tracks(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return next((s["alarms"]["tracks"] for s in doc["streams"]
                 if (s["source"], s["vehicle"]) == ("live", "mini")), {})


async def three_alarms(broker: MosquittoServer, console: Console) -> int:
    """hatch opens and closes again, unacknowledged (latched); cabin pressure goes red and
    flight acknowledges it; temperature goes red and flight shelves it for 10 s. Returns
    the highest event seq."""
    await send(broker, 0, 10)
    await send(broker, 10, 10, hatch="OPEN", cabin_press=6.0, temp=110.0)
    await send(broker, 20, 10, cabin_press=6.0, temp=110.0)
    await wait_for(lambda: console.events("returned_to_normal", "hatch")
                   and console.events("raised", "cabin_press")
                   and console.events("raised", "temp"), what="three alarms")
    await console.request("cabin_press")
    await console.request("temp", "shelve", duration_s=10)
    await wait_for(lambda: console.events("acknowledged") and console.events("shelved"))
    await wait_for(lambda: (a := console.active()) is not None and a["temp"]["state"] ==
                   "shelved", what="the active list")
    active = console.active()
    assert active is not None
    assert {p: a["state"] for p, a in active.items()} == {
        "hatch": "normal_unacked", "cabin_press": "active_acked", "temp": "shelved"}
    return max(e["seq"] for e in console.events())


def check_restored(active: dict[str, dict[str, Any]], shelved_until: int) -> None:
    assert {p: a["state"] for p, a in active.items()} == {
        "hatch": "normal_unacked", "cabin_press": "active_acked", "temp": "shelved"}
    assert active["cabin_press"]["acked_by"] == "flight"
    assert active["cabin_press"]["severity"] == "red"
    assert active["temp"]["shelved_by"] == "flight"
    assert active["temp"]["shelved_until_ns"] == shelved_until


async def test_a_clean_restart_keeps_latched_acknowledged_and_shelved_alarms(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    defs = {"mini": load_definition(MINI)}
    # The two runs share the alarm state directory (the harness's quarantine writer keeps
    # its lock on the first run's archive till the end of the test, so each run has its own).
    state_dir = tmp_path / "alarm-state"
    async with Console(mosquitto) as console:
        async with running_ingest(mosquitto, influxdb, tmp_path / "first", defs, "persist",
                                  alarm_state_dir=state_dir) as first:
            last_seq = await three_alarms(mosquitto, console)
            until = console.events("shelved")[0]["until_ns"]
        assert first.alarm_state_saves >= 1 and first.alarm_state_errors == 0
    assert saved_tracks(state_dir / "alarms.json")["cabin_press"]["acked_by"] == "flight"
    await clear_retained_active(mosquitto)

    async with Console(mosquitto) as console, \
            running_ingest(mosquitto, influxdb, tmp_path / "second", defs, "persist",
                           alarm_state_dir=state_dir) as second:
        # Restored before any data, and on the consoles at once.
        assert second.alarm_state_restored == [("live", "mini", "hbr")]
        await wait_for(lambda: console.active() is not None, what="the active list")
        active = console.active()
        assert active is not None
        check_restored(active, until)
        # Cabin pressure and temperature stay out of limits: no new alarm for either.
        await send(mosquitto, 30, 100, cabin_press=6.0, temp=110.0)
        await wait_for(lambda: second.frames_stored >= 100)
        # The latched hatch alarm is acknowledged now, and leaves the list; its seq
        # goes on from the first ingest's.
        await console.request("hatch")
        await wait_for(lambda: console.events("acknowledged", "hatch"))
        ack = console.events("acknowledged", "hatch")[0]
        assert ack["seq"] == last_seq + 1 and ack["state"] == "normal"
        await wait_for(lambda: "hatch" not in (console.active() or {"hatch": 0}))
        assert not console.events("raised")
        # The shelf expires on its data time, the condition still there: a new alarm.
        await send(mosquitto, 130, (until - T0) // PERIOD - 120, cabin_press=6.0,
                   temp=110.0)
        await wait_for(lambda: console.events("unshelved"), what="the shelf's expiry")
        unshelved = console.events("unshelved")[0]
        assert (unshelved["parameter"], unshelved["time_ns"], unshelved["state"],
                unshelved["seq"]) == ("temp", until, "active_unacked", last_seq + 2)
        assert [e["transition"] for e in console.events()] == ["acknowledged", "unshelved"]

    influx = InfluxV1(influxdb.url, "persist")
    stored = rows(influx, "SELECT * FROM alarms")
    assert sorted(int(r["seq"]) for r in stored) == list(range(1, last_seq + 3))
    assert [r["transition"] for r in stored if r["parameter"] == "cabin_press"] == [
        "raised", "acknowledged"]


def _start_ingest(mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp: Path
                  ) -> subprocess.Popen[str]:
    defs = tmp / "defs"
    defs.mkdir(exist_ok=True)
    (defs / "mini.yaml").write_text(MINI.read_text())
    return start_ingest_process(
        mosquitto, influxdb, defs, "killed", "--influx-flush-interval-ms", "20",
        "--influx-spool-dir", str(tmp / "spool"), "--ingest-archive-dir", str(tmp / "arch"),
        "--ingest-alarm-state-dir", str(tmp / "alarm-state"))


async def test_a_sigkilled_ingest_keeps_the_alarm_state_it_had_saved(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    InfluxV1(influxdb.url, "killed").create_database()
    state_file = tmp_path / "alarm-state" / "alarms.json"
    proc = _start_ingest(mosquitto, influxdb, tmp_path)
    try:
        async with Console(mosquitto) as console:
            last_seq = await three_alarms(mosquitto, console)
            until = console.events("shelved")[0]["until_ns"]
            # Saved on the transitions (shortly after each, once their data are durable).
            await wait_for(lambda: saved_tracks(state_file).get("temp", {}).get(
                "shelved_by") == "flight", timeout=5, what="the state file")
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: nothing saved at the end
        proc.wait(10)
        await clear_retained_active(mosquitto)
        async with Console(mosquitto) as console:
            proc = _start_ingest(mosquitto, influxdb, tmp_path)
            await wait_for(lambda: console.active() is not None, what="the active list")
            active = console.active()
            assert active is not None
            check_restored(active, until)
            await send(mosquitto, 30, 50, cabin_press=6.0, temp=110.0)
            await console.request("hatch")
            await wait_for(lambda: console.events("acknowledged", "hatch"))
            assert console.events("acknowledged", "hatch")[0]["seq"] == last_seq + 1
            await asyncio.sleep(0.3)
            assert [e["transition"] for e in console.events()] == ["acknowledged"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


async def test_a_corrupt_state_file_is_kept_aside_and_the_ingest_starts_empty(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    state_dir = tmp_path / "archive" / "state"
    state_dir.mkdir(parents=True)
    (state_dir / "alarms.json").write_bytes(b'{"format": "groundstation-alarm-st\x00\xff')
    defs = {"mini": load_definition(MINI)}
    caplog.set_level(logging.INFO, "groundstation.ingest")
    async with Console(mosquitto) as console, \
            running_ingest(mosquitto, influxdb, tmp_path, defs, "corrupt") as ingest:
        assert ingest.alarm_state_restored == []
        await send(mosquitto, 0, 10, hatch="OPEN")
        await wait_for(lambda: console.events("raised"))
        assert console.events("raised")[0]["seq"] == 1
        # Saved once the broker has been acknowledged for the message (before that, the
        # broker would send it again to the next ingest, which would raise it again).
        await wait_for(lambda: ingest.acked >= 1)
    assert "alarm state file" in caplog.text and "unreadable" in caplog.text
    kept = list(state_dir.glob("alarms.json.bad-*"))
    assert len(kept) == 1 and kept[0].read_bytes().endswith(b"\x00\xff")
    assert saved_tracks(state_dir / "alarms.json")["hatch"]["listed"] is True


async def test_a_state_file_from_other_definitions_restores_what_still_applies(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    mini = load_definition(MINI)
    engine = AlarmEngine(mini, "live")
    engine.shelve("hatch", "flight", 60.0, T0)
    snap = engine.snapshot()
    snap["tracks"]["gone"] = dict(snap["tracks"]["hatch"])
    streams = [{"source": "live", "vehicle": "mini", "stream": "hbr", "alarms": snap},
               {"source": "live", "vehicle": "soyuz", "stream": "tm", "alarms": snap},
               {"source": "live", "vehicle": "mini"}]
    state_dir = tmp_path / "archive" / "state"
    state_dir.mkdir(parents=True)
    (state_dir / "alarms.json").write_text(json.dumps(
        {"format": "groundstation-alarm-state", "version": 1, "streams": streams}))
    caplog.set_level(logging.INFO, "groundstation.ingest")
    async with Console(mosquitto) as console, \
            running_ingest(mosquitto, influxdb, tmp_path, {"mini": mini}, "other"):
        await wait_for(lambda: console.active() is not None)
        active = console.active()
        assert active is not None and active["hatch"]["state"] == "shelved"
        assert list(active) == ["hatch"]
    assert "gone: it is no longer in the definition" in caplog.text
    assert "live/soyuz/tm dropped" in caplog.text
    assert "malformed" in caplog.text  # the third entry; the file is kept aside for it
    assert len(list(state_dir.glob("alarms.json.bad-*"))) == 1
