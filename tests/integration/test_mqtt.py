"""groundstation.mqtt against a real Mosquitto: reconnecting through a broker restart with
backoff, subscriptions made again, manual acknowledgement (what is not acknowledged comes
again after a reconnect, what is does not), TCP_NODELAY, refusals in words, and a dead task
reported by name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from groundstation.config import MqttConfig
from groundstation.deploy.servers import MosquittoServer
from groundstation.mqtt import (
    Backoff,
    BrokerRefused,
    Connection,
    MqttClient,
    Received,
)
from groundstation.tasks import TaskGroup
from tests.harness import ACL_USERS, secure_mosquitto, wait_for


def _config(broker: MosquittoServer, **kw: object) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, **kw)  # type: ignore[arg-type]


class RecordingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(first=0.2, maximum=2.0)
        self.delays: list[float] = []

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay


@contextlib.asynccontextmanager
async def running(client: MqttClient, session: object = None,
                  stop: asyncio.Event | None = None) -> AsyncIterator[asyncio.Task[None]]:
    stop = stop or asyncio.Event()
    task = asyncio.create_task(client.run(session, stop=stop))  # type: ignore[arg-type]
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _publish(broker: MosquittoServer, *messages: tuple[str, bytes]) -> None:
    async with MqttClient(_config(broker), name="test-pub").connect() as conn:
        for topic, payload in messages:
            await conn.publish(topic, payload, qos=1)


async def test_reconnects_through_a_broker_restart_with_backoff_and_subscribes_again(
        mosquitto: MosquittoServer) -> None:
    got: list[Received] = []
    lost: list[str] = []
    backoff = RecordingBackoff()
    client = MqttClient(_config(mosquitto), name="probe", subscriptions=["probe/#"],
                        on_message=got.append, on_disconnect=lambda e: lost.append(str(e)),
                        backoff=backoff)
    async with running(client):
        await wait_for(lambda: client.connected, 10, "the first connection")
        await _publish(mosquitto, ("probe/1", b"before"))
        await wait_for(lambda: [m.payload for m in got] == [b"before"], 5, "a message")
        mosquitto.stop()
        await wait_for(lambda: not client.connected, 10, "the loss seen")
        await wait_for(lambda: len(backoff.delays) >= 3, 10, "a few attempts")
        mosquitto.start()
        await wait_for(lambda: client.connected and client.connections == 2, 15,
                       "the reconnection")
        # A clean session: the broker forgot the subscription; the client made it again.
        await _publish(mosquitto, ("probe/2", b"after"))
        await wait_for(lambda: [m.payload for m in got] == [b"before", b"after"], 5,
                       "a message after the restart")
    assert client.generation == 2 and got[1].generation == 2
    # Waits grew (jittered around 0.2, 0.4, 0.8 ... s, capped at 2 s) while it was away.
    assert 0.1 <= backoff.delays[0] <= 0.3 and backoff.delays[2] > backoff.delays[0]
    assert all(d <= 2.0 for d in backoff.delays)
    assert lost and all(f"{mosquitto.host}:{mosquitto.port}" in e for e in lost)
    assert any("connection refused" in e for e in lost)


async def test_manual_ack_acknowledges_only_what_it_is_told(mosquitto: MosquittoServer
                                                            ) -> None:
    def persistent(got: list[Received]) -> MqttClient:
        return MqttClient(_config(mosquitto), name="acker", client_id="test-acker",
                          clean_session=False, manual_ack=True, subscriptions=["q/#"],
                          on_message=got.append)

    first: list[Received] = []
    client = persistent(first)
    async with running(client):
        await wait_for(lambda: client.connected, 10)
        await _publish(mosquitto, ("q/1", b"one"), ("q/2", b"two"), ("q/3", b"three"))
        await wait_for(lambda: len(first) == 3, 5, "three messages")
        assert first[0].ack() and client.ack(first[2].mid, first[2].qos, first[2].generation)
        # "two" is left unacknowledged.
        await asyncio.sleep(0.3)
    assert not first[1].ack()  # its connection is gone: nothing to send it on

    again: list[Received] = []
    client = persistent(again)
    async with running(client):
        await wait_for(lambda: bool(again), 5, "the redelivery")
        await asyncio.sleep(0.5)
        assert [m.payload for m in again] == [b"two"]
        assert again[0].ack()
    # Acknowledged now: a third session gets nothing.
    last: list[Received] = []
    client = persistent(last)
    async with running(client):
        await wait_for(lambda: client.connected, 10)
        await asyncio.sleep(0.5)
    assert last == []


async def test_every_connection_sets_tcp_nodelay(mosquitto: MosquittoServer) -> None:
    client = MqttClient(_config(mosquitto), name="nodelay")
    async with client.connect():
        sock = client._paho.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_dead_task_is_reported_by_name(mosquitto: MosquittoServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async def session(conn: Connection) -> None:
        async def boom() -> None:
            await asyncio.sleep(0.05)
            raise ValueError("bad frame count")

        async with TaskGroup("probe-session") as tasks:
            tasks.create_task(asyncio.sleep(30), name="idle")
            tasks.create_task(boom(), name="boom")

    client = MqttClient(_config(mosquitto), name="probe", subscriptions=["x/#"],
                        on_message=lambda m: None)
    with caplog.at_level(logging.ERROR), pytest.raises(BaseExceptionGroup) as err:
        await asyncio.wait_for(client.run(session), 15)
    assert err.group_contains(ValueError, match="bad frame count")  # type: ignore[attr-defined]
    assert "task probe-session/boom died: ValueError: bad frame count" in caplog.text
    assert not client.connected


async def test_a_refusal_is_said_in_words_and_ends_a_fail_fast_client(tmp_path: Path) -> None:
    with secure_mosquitto(tmp_path, ACL_USERS) as broker:
        config = _config(broker, username="flight", password="not-the-password")
        client = MqttClient(config, name="probe", fail_fast=True)
        with pytest.raises(BrokerRefused) as err:
            await asyncio.wait_for(client.run(), 15)
        text = str(err.value)
        assert f"broker mqtt://{broker.host}:{broker.port}: refused the connection" in text
        assert "user 'flight'" in text and "GS_MQTT_PASSWORD" in text
        assert "not-the-password" not in text
        # Without fail_fast it keeps trying, and says why.
        lost: list[str] = []
        patient = MqttClient(config, name="probe", on_disconnect=lambda e: lost.append(str(e)))
        async with running(patient):
            await wait_for(lambda: len(lost) >= 2, 10, "two refusals")
        assert not patient.connected
