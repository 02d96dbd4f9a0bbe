"""The ingest's one connection to the broker, and the only ingest module that touches the
MQTT client library: a persistent session (fixed client id, clean_session off) with
manual acknowledgement, its subscriptions, a stream of received messages, and publishing.

Kept small and on its own so that it can be replaced by the project's shared MQTT adapter
(`groundstation/mqtt.py`) without touching the service.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiomqtt

from groundstation.config import MqttConfig
from groundstation.core import topics

# An alarm published right after a batch of PUBACKs must not wait for the broker's delayed
# ACK (Nagle): measured, that was the whole 40 ms tail of alarm latency.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

SUBSCRIPTIONS = (*topics.TELEMETRY_SUBSCRIPTIONS, topics.ACK_SUBSCRIPTION,
                 *topics.SIM_STATE_SUBSCRIPTIONS, topics.REPLAY_SESSION_SUBSCRIPTION)

# Raised when the link to the broker fails (the service reconnects).
SessionError = aiomqtt.MqttError


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


class Connection:
    """One connected session: what the service receives, acknowledges and publishes."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def messages(self) -> AsyncIterator[Incoming]:
        async for message in self._client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            yield Incoming(str(message.topic), bytes(payload), message.mid, message.qos)

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client._client.ack(mid, qos)

    async def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        me = asyncio.current_task()
        await self._client.publish(topic, payload, qos=1, retain=retain)
        if me is not None and me.cancelling():
            # Python 3.11's wait_for (inside aiomqtt's publish) drops a cancellation
            # that arrives as the PUBACK does: honour it here, or shutdown hangs.
            raise asyncio.CancelledError


@asynccontextmanager
async def connect(cfg: MqttConfig) -> AsyncIterator[Connection]:
    """Connect, with manual acknowledgement, and subscribe to everything the ingest reads."""
    client = aiomqtt.Client(cfg.host, cfg.port, username=cfg.username,
                            password=cfg.password, identifier=cfg.client_id,
                            clean_session=False, keepalive=cfg.keepalive_s,
                            socket_options=NODELAY)
    # Acknowledge only once the data is durable: paho's manual ack (aiomqtt has no
    # option of its own for it), set before connecting.
    client._client.manual_ack_set(True)
    async with client:
        for sub in SUBSCRIPTIONS:
            await client.subscribe(sub, qos=1)
        yield Connection(client)
