"""The ingest: MQTT telemetry in, decoded engineering values out to InfluxDB.

Walking-skeleton scope: validate each envelope, decode it with the stream's decoder and
write its values. Every rejected message is counted by reason and kept (in memory, the
last few per reason) with what was wrong, and never stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from groundstation import topics
from groundstation.decom import DecodedBatch, StreamDecoder
from groundstation.definitions import VehicleDefinition
from groundstation.envelope import EnvelopeError, decode_envelope
from groundstation.influx_writer import InfluxV1
from groundstation.lineprotocol import batch_lines

log = logging.getLogger("groundstation.ingest")


@dataclass
class Quarantined:
    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass
class Ingest:
    definitions: dict[str, VehicleDefinition]
    influx: InfluxV1
    quarantine_keep: int = 100
    decoders: dict[tuple[str, str, str], StreamDecoder] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    quarantine: deque[Quarantined] = field(default_factory=deque)
    frames_in: int = 0
    messages_in: int = 0
    lines_written: int = 0

    def handle(self, topic: str, payload: bytes) -> list[str]:
        """Decode one message into line protocol; a bad message is quarantined, not raised."""
        self.messages_in += 1
        try:
            batch, source = self._decode(topic, payload)
        except EnvelopeError as exc:
            self._reject(topic, exc.reason, str(exc), payload)
            return []
        self.frames_in += batch.n_frames
        if batch.bad_sync or batch.bad_counter:
            self.rejected["bad_sync"] += batch.bad_sync
            self.rejected["bad_counter"] += batch.bad_counter
        return batch_lines(batch, source)

    def _decode(self, topic: str, payload: bytes) -> tuple[DecodedBatch, str]:
        try:
            where = topics.parse_telemetry(topic)
        except ValueError as exc:
            raise EnvelopeError("bad_topic", str(exc)) from None
        defn = self.definitions.get(where.vehicle)
        if defn is None or defn.stream != where.stream:
            raise EnvelopeError("unknown_stream", f"no telemetry definition for "
                                                  f"{where.vehicle}/{where.stream}")
        env = decode_envelope(payload, vehicle=where.vehicle, stream=where.stream,
                              frame_bytes=defn.frame.bytes_per_frame)
        key = (where.source, where.vehicle, where.stream)
        decoder = self.decoders.get(key)
        if decoder is None:
            decoder = self.decoders[key] = StreamDecoder(defn)
        batch = decoder.decode(env.frames, env.times_ns(decoder.decom.period_ns))
        return batch, where.source

    def _reject(self, topic: str, reason: str, detail: str, payload: bytes) -> None:
        self.rejected[reason] += 1
        self.quarantine.append(Quarantined(topic, reason, detail, payload[:4096]))
        while len(self.quarantine) > self.quarantine_keep:
            self.quarantine.popleft()
        log.warning("quarantined a message on %s: %s (%s)", topic, detail, reason)

    async def run(self, host: str, port: int, stop: asyncio.Event,
                  ready: asyncio.Event | None = None, **client_args: Any) -> None:
        async with aiomqtt.Client(host, port, identifier="groundstation-ingest",
                                  **client_args) as client:
            for sub in topics.TELEMETRY_SUBSCRIPTIONS:
                await client.subscribe(sub, qos=1)
            if ready is not None:
                ready.set()
            consumer = asyncio.create_task(self._consume(client))
            try:
                await stop.wait()
            finally:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            lines = self.handle(str(message.topic), bytes(payload))
            if lines:
                await self.influx.awrite_lines(lines)
                self.lines_written += len(lines)
