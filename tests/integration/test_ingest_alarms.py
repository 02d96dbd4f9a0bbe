"""Alarms and console data through the secure broker, as consoles and operators see them:
a limit violation arrives as an alarm event on MQTT and in InfluxDB, an operator
acknowledges it under the name the broker authenticated, and nobody can ack for another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from groundstation.core import messages, topics
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.ingest.service import IngestService
from groundstation.storage.influx.backends import InfluxV1
from tests.harness import rows, running_ingest, secure_mosquitto, wait_for
from tests.paths import MINI

USERS = {"ingest": "ingest-pw", "flight": "flight-pw", "eecom": "eecom-pw",
         "mini": "mini-pw"}
T0 = 174_845_349_000_000_000


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


def ingest_as_user(broker: MosquittoServer, influxdb: InfluxDBServer, tmp: Path
                   ) -> AbstractAsyncContextManager[IngestService]:
    return running_ingest(broker, influxdb, tmp, {"mini": load_definition(MINI)}, "alarms",
                          ("ingest", USERS["ingest"]), batch_max_delay_ms=5,
                          display_rate_hz=10, stats_interval_s=0.3)


class Listener:
    """An operator's console: everything it receives, by topic."""

    def __init__(self, broker: MosquittoServer, user: str):
        self.client = aiomqtt.Client(broker.host, broker.port, username=user,
                                     password=USERS[user], identifier=f"console-{user}")
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        await self.client.__aenter__()
        for sub in ("alarms/#", "params/#", "ingest/#"):
            await self.client.subscribe(sub, qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self.client.messages:
            self.messages.append((str(m.topic), json.loads(bytes(m.payload))))  # type: ignore[arg-type]

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.client.__aexit__(None, None, None)

    def events(self, transition: str | None = None) -> list[dict[str, Any]]:
        return [p for t, p in self.messages if t == topics.alarms("mini")
                and (transition is None or p["transition"] == transition)]

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [p for t, p in self.messages if t == topic]


async def _downlink(broker: MosquittoServer, press: np.ndarray, start: int = 0) -> None:
    """Frames from the vehicle's own account; cabin pressure as given, one per frame."""
    mini = load_definition(MINI)
    enc = FrameEncoder(mini)
    async with aiomqtt.Client(broker.host, broker.port, username="mini",
                              password=USERS["mini"]) as client:
        for k in range(0, press.size, 5):
            seq = start + k
            frames = enc.encode({"cabin_press": press[k:k + 5], "hatch": "CLOSED"}, 5,
                                start_counter=1 + seq % 50)
            await client.publish(topics.telemetry("mini", "hbr"),
                                 encode_envelope("mini", "hbr", seq, T0 + seq * 20_000_000,
                                                 frames), qos=1)


async def test_alarm_raise_ack_and_return_arrive_on_mqtt_and_in_influxdb(
        secure_broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    async with ingest_as_user(secure_broker, influxdb, tmp_path) as ingest, \
            Listener(secure_broker, "flight") as flight:
        # 10 nominal frames, then 10 at 6.0 psia (red high 5.4, persistence 2).
        await _downlink(secure_broker, np.r_[np.full(10, 5.0), np.full(10, 6.0)])
        await wait_for(lambda: flight.events("raised"), what="the alarm on MQTT")
        raised = flight.events("raised")[0]
        assert raised["parameter"] == "cabin_press" and raised["severity"] == "red"
        assert raised["side"] == "high" and raised["limit"] == 5.4
        assert raised["time_ns"] == T0 + 11 * 20_000_000  # the second red sample
        await wait_for(lambda: any(p["master_alarm"] for p in
                                   flight.on(topics.alarms("mini") + "/active")))

        # eecom tries to acknowledge in flight's name: the broker drops it.
        async with aiomqtt.Client(secure_broker.host, secure_broker.port, username="eecom",
                                  password=USERS["eecom"]) as eecom:
            await eecom.publish(topics.acknowledgements("flight", "mini"), messages.OperatorRequest(
                request_id="spoof-1", parameter="cabin_press").to_json(), qos=1)
            await eecom.publish(topics.acknowledgements("eecom", "mini"), messages.OperatorRequest(
                request_id="eecom-1", parameter="cabin_press").to_json(), qos=1)
        await wait_for(lambda: flight.events("acknowledged"), what="the acknowledgement")
        await asyncio.sleep(0.3)
        acks = flight.events("acknowledged")
        assert [a["operator"] for a in acks] == ["eecom"]
        (reply,) = flight.on(topics.alarm_replies("eecom"))
        assert reply["ok"] is True and reply["request_id"] == "eecom-1"
        assert reply["event"]["transition"] == "acknowledged"
        assert reply["event"]["seq"] == acks[0]["seq"]
        assert not flight.on(topics.alarm_replies("flight"))

        # Back to 5.0 psia: returned to normal, and acknowledged already, so it is gone.
        await _downlink(secure_broker, np.full(10, 5.0), start=20)
        await wait_for(lambda: flight.events("returned_to_normal"))
        assert flight.events("returned_to_normal")[0]["state"] == "normal"
        await wait_for(lambda: flight.on(topics.parameters("mini")), what="console values")
        await wait_for(lambda: flight.on("ingest/stats"), what="self-telemetry")
        await asyncio.sleep(0.4)
        assert ingest.rejected.total() == 0

    last = flight.on(topics.parameters("mini"))[-1]
    assert last["values"]["cabin_press"][1] == pytest.approx(5.0, abs=17 / 255)
    assert last["values"]["cabin_press"][2] == 0  # nominal
    stats = flight.on("ingest/stats")[-1]
    assert stats["frames_stored"] == 30 and stats["rejected_total"] == 0
    link = flight.on("ingest/link/live/mini")[-1]
    assert link["frames_good"] == 30 and link["frames_missing"] == 0

    influx = InfluxV1(influxdb.url, "alarms")
    stored = rows(influx, "SELECT transition, operator, severity FROM alarms WHERE "
                          "parameter='cabin_press'")
    assert [r["transition"] for r in stored] == ["raised", "acknowledged", "returned_to_normal"]
    assert stored[1]["operator"] == "eecom"
    assert rows(influx, "SELECT frames_good FROM link WHERE vehicle='mini'")
    assert rows(influx, "SELECT frames_stored FROM ingest")


async def test_a_bad_operator_request_is_answered_and_changes_nothing(
        secure_broker: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    async with ingest_as_user(secure_broker, influxdb, tmp_path), \
            Listener(secure_broker, "flight") as flight:
        await _downlink(secure_broker, np.full(5, 5.0))
        async with aiomqtt.Client(secure_broker.host, secure_broker.port, username="flight",
                                  password=USERS["flight"]) as client:
            for req in (b"not json",
                        json.dumps({"request_id": "r1", "parameter": "cabin_press"}).encode(),
                        json.dumps({"request_id": "r2", "parameter": "no_such",
                                    "action": "shelve", "duration_s": 60}).encode(),
                        json.dumps({"request_id": "r3", "parameter": "cabin_press",
                                    "action": "explode"}).encode(),
                        json.dumps({"parameter": "cabin_press"}).encode(),
                        json.dumps({"request_id": "r5", "parameter": "cabin_press",
                                    "action": "shelve"}).encode()):
                await client.publish(topics.acknowledgements("flight", "mini"), req, qos=1)
        await wait_for(lambda: len(flight.on(topics.alarm_replies("flight"))) >= 6)
        replies = flight.on(topics.alarm_replies("flight"))
        assert [r["ok"] for r in replies] == [False] * 6
        # Each reply names its request; one too malformed to have an id gets null.
        assert [r["request_id"] for r in replies] == [None, "r1", "r2", "r3", None, "r5"]
        assert "bad request" in replies[0]["error"]
        assert "no alarm to acknowledge" in replies[1]["error"]
        assert replies[1]["reason"] == "no_alarm"
        assert "no parameter 'no_such'" in replies[2]["error"]
        assert "action: unknown action 'explode'" in replies[3]["error"]
        assert "request_id: required" in replies[4]["error"]
        assert "duration_s: required to shelve" in replies[5]["error"]
        assert not flight.events()
