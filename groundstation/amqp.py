"""The station's AMQP client (aio-pika), the clustered ingest's way to its partitions'
queues (groundstation/core/partitions.py): the only module that imports aio_pika.

    client = AmqpClient(config.cluster, name="ingest")
    await client.run(session, stop=stop)   # session(conn) once per connection

As for MQTT (groundstation/mqtt.py, whose backoff policy this shares): one reconnect loop,
moving along the list of nodes on each failed attempt or lost connection, and a session
run once per connection that ends with it. One channel per connection, with publisher
confirms (a publish returns once the broker has it, replicated: quorum queues) and manual
acknowledgement of what is consumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from groundstation.config import ClusterConfig, reveal
from groundstation.core import partitions
from groundstation.mqtt import STABLE_S, Backoff
from groundstation.tasks import TaskGroup

log = logging.getLogger("groundstation.amqp")

CONNECT_TIMEOUT_S = 10.0


class AmqpError(ConnectionError):
    """The broker went away, or refused what was asked (its message says which)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    queue: str
    topic: str  # the MQTT topic it was published on (its routing key, swapped back)
    payload: bytes
    tag: int  # the delivery tag: acknowledged on the connection it came on
    kind: str | None  # the AMQP type (a tick: partitions.TICK_TYPE)


Session = Callable[["AmqpConnection"], Coroutine[Any, Any, None]]
_TAG_BITS = 40  # a delivery's mid: its consumer's slot, then its delivery tag
_TAG_MASK = (1 << _TAG_BITS) - 1


class Consumer:
    """What one queue delivers, in order, on its own channel (AmqpConnection.consume)."""

    def __init__(self, conn: AmqpConnection, slot: int, queue: str,
                 channel: AbstractChannel) -> None:
        self.slot = slot
        self.queue = queue
        self.channel = channel
        self.acks: list[int] = []
        self._buffer: deque[Delivery] = deque()
        self._arrived = asyncio.Event()

    async def _on_message(self, m: AbstractIncomingMessage) -> None:
        assert m.delivery_tag is not None
        self._buffer.append(Delivery(self.queue, partitions.topic_of(m.routing_key or ""),
                                     m.body, (self.slot << _TAG_BITS) | m.delivery_tag,
                                     m.type))
        self._arrived.set()

    async def next(self, wake: asyncio.Event | None = None) -> Delivery | None:
        """The next delivery; None as soon as `wake` is set (the caller lets go: what is
        still buffered here goes back to the broker with the channel, in order)."""
        while wake is None or not wake.is_set():
            if self._buffer:
                return self._buffer.popleft()
            self._arrived.clear()
            if wake is None:
                await self._arrived.wait()
            else:
                await _either(self._arrived, wake)
            if self.channel.is_closed:
                raise AmqpError(f"the channel of {self.queue} closed")
        return None


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    ta, tb = asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())
    try:
        await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ta.cancel()
        tb.cancel()
# What ends a connection (then the client reconnects), as opposed to a bug.
LOST: tuple[type[BaseException], ...] = (aiormq.exceptions.AMQPError, ConnectionError,
                                         asyncio.TimeoutError,
                                         aiormq.exceptions.ChannelInvalidStateError)


class AmqpConnection:
    """One connection to one node, with its channel; `generation` counts connections."""

    def __init__(self, conn: AbstractConnection, channel: AbstractChannel, generation: int,
                 address: str,
                 open_reader: Callable[[], Coroutine[Any, Any, AbstractConnection]]) -> None:
        self.conn = conn
        self.channel = channel
        self.generation = generation
        self.address = address
        self._ack_wanted = asyncio.Event()
        self._open_reader = open_reader
        self._reader: AbstractConnection | None = None
        self._direct: AbstractExchange | None = None
        self._telemetry: AbstractExchange | None = None
        self._consumers: dict[int, Consumer] = {}
        self._slot = 0

    # -- topology -------------------------------------------------------------------------

    async def declare(self, vehicles: Iterable[str], count: int) -> None:
        """The partitions' exchanges, queues and bindings (idempotent: every instance
        declares them, with the same arguments, whenever it connects)."""
        ch = self.channel
        direct = await ch.declare_exchange(partitions.DIRECT_EXCHANGE,
                                           aio_pika.ExchangeType.DIRECT, durable=True)
        self._direct = direct
        self._telemetry = await ch.declare_exchange(
            partitions.EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True,
            arguments={"alternate-exchange": partitions.UNROUTED_EXCHANGE})
        unrouted = await ch.declare_exchange(partitions.UNROUTED_EXCHANGE,
                                             aio_pika.ExchangeType.FANOUT, durable=True)
        exchange = self._telemetry
        for key in partitions.ENTRY_KEYS:
            await exchange.bind(partitions.MQTT_EXCHANGE, routing_key=key)
        q = await ch.declare_queue(partitions.UNROUTED_QUEUE, durable=True,
                                   arguments=dict(partitions.PARTITION_ARGUMENTS))
        await q.bind(unrouted)
        await q.bind(direct, routing_key=q.name)
        by_partition = partitions.assignment(list(vehicles), count)
        for p in range(count):
            q = await ch.declare_queue(partitions.queue(p), durable=True,
                                       arguments=dict(partitions.PARTITION_ARGUMENTS))
            for key in partitions.broadcast_keys():
                await q.bind(exchange, routing_key=key)
            for vehicle in by_partition[p]:
                for key in partitions.binding_keys(vehicle):
                    await q.bind(exchange, routing_key=key)
            await q.bind(direct, routing_key=q.name)
            state = await ch.declare_queue(partitions.state_queue(p), durable=True,
                                           arguments=dict(partitions.STATE_ARGUMENTS))
            await state.bind(direct, routing_key=state.name)

    # -- consuming ------------------------------------------------------------------------

    @asynccontextmanager
    async def consume(self, queue: str, tag: str, prefetch: int
                      ) -> AsyncIterator[Consumer]:
        """Consume a queue, as one of its single-active consumers, on a channel of its own,
        until the block ends. Closing the channel is how the queue is let go: the broker
        takes back what was delivered and not acknowledged, in order, before the next
        consumer starts (a basic.cancel would let the next one start first)."""
        channel = await self.conn.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=prefetch)
            self._slot += 1
            consumer = Consumer(self, self._slot, queue, channel)
            self._consumers[self._slot] = consumer
            q = await channel.get_queue(queue, ensure=False)
            await q.consume(consumer._on_message, consumer_tag=tag)
            yield consumer
        finally:
            self._consumers.pop(self._slot, None)
            if not channel.is_closed:
                await channel.close()

    def acknowledge(self, mid: int, qos: int = 1) -> bool:
        """Acknowledge a delivery (sent by `acker`, in order, on its consumer's channel)."""
        consumer = self._consumers.get(mid >> _TAG_BITS)
        if qos == 0 or consumer is None or consumer.channel.is_closed:
            return False
        consumer.acks.append(mid & _TAG_MASK)
        self._ack_wanted.set()
        return True

    async def acker(self) -> None:
        while True:
            await self._ack_wanted.wait()
            await self.flush_acks()

    async def flush_acks(self) -> None:
        self._ack_wanted.clear()
        for consumer in list(self._consumers.values()):
            tags, consumer.acks = consumer.acks, []
            if tags and not consumer.channel.is_closed:
                try:
                    ch = await consumer.channel.get_underlay_channel()
                    for tag in tags:
                        await ch.basic_ack(tag, wait=False)
                except aiormq.exceptions.ChannelInvalidStateError:
                    # Closed under us (its queue let go, or the node gone): the broker
                    # gives what these would have acknowledged to the next owner.
                    log.debug("acknowledgements of %s dropped: its channel closed",
                              consumer.queue)

    # -- the state queues -----------------------------------------------------------------

    async def last(self, queue: str, stop: asyncio.Event) -> bytes | None:
        """The message a one-message queue holds (left there), or None.

        Read over a connection of its own: a quorum queue whose leader's node has just died
        answers a basic.get with a connection error (541, nodedown) until it has a new
        leader, and that must cost this read a retry, not every partition of this
        connection. Tried until it succeeds or `stop` is set (then AmqpError)."""
        backoff = Backoff(maximum=2.0)
        while not stop.is_set():
            try:
                if self._reader is None or self._reader.is_closed:
                    self._reader = await asyncio.wait_for(self._open_reader(),
                                                          CONNECT_TIMEOUT_S)
                ch = await self._reader.channel()
                try:
                    q = await ch.get_queue(queue, ensure=False)
                    m = await q.get(no_ack=False, fail=False)
                    body = None if m is None else m.body
                    if m is not None:
                        await m.nack(requeue=True)
                    return body
                finally:
                    if not ch.is_closed:
                        await ch.close()
            except LOST as exc:
                log.warning("reading %s: %s; trying again (a queue between leaders)", queue,
                            exc or type(exc).__name__)
                await self.close_reader()
                await sleep_or_stop(backoff.next(), stop)
        raise AmqpError(f"stopped before {queue} could be read")

    async def close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await _close_quietly(reader)

    async def put(self, queue: str, body: bytes, *, kind: str | None = None) -> None:
        """Publish to one of the ingest's queues, returning once the broker confirms;
        AmqpError if it refuses (a quorum queue without a leader, for a while)."""
        await self._publish(self._direct, queue, body, kind)

    async def route(self, topic: str, body: bytes) -> None:
        """Publish as if on an MQTT topic, through the partitions' exchange."""
        await self._publish(self._telemetry, partitions.routing_key(topic), body, None)

    @staticmethod
    async def _publish(exchange: AbstractExchange | None, key: str, body: bytes,
                       kind: str | None) -> None:
        if exchange is None:
            raise AmqpError("the topology is not declared on this connection")
        try:
            await exchange.publish(aio_pika.Message(
                body, type=kind, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=key)
        except aiormq.exceptions.DeliveryError as exc:
            raise AmqpError(f"the broker refused a message for {key}: {exc}") from None


class AmqpClient:
    def __init__(self, config: ClusterConfig, *, name: str) -> None:
        self.config = config
        self.name = name
        self.generation = 0
        self._index = 0
        self.connection: AmqpConnection | None = None

    def _url(self, host: str, port: int) -> str:
        return str(aio_pika.connection.make_url(
            host=host, port=port, login=self.config.username or "guest",
            password=reveal(self.config.password) or "guest",
            virtualhost=self.config.vhost))

    async def run(self, session: Session, *, stop: asyncio.Event) -> None:
        """Connect, run the session, and reconnect (to the next node) until stop is set.
        A refused login is not retried: AmqpError saying so."""
        backoff = Backoff(maximum=self.config.reconnect_max_s)
        nodes = self.config.nodes
        while not stop.is_set():
            host, port = nodes[self._index % len(nodes)]
            address = f"{host}:{port}"
            started = asyncio.get_running_loop().time()
            try:
                conn = await asyncio.wait_for(
                    aio_pika.connect(self._url(host, port), client_properties={
                        "connection_name": f"{self.name}@{self.config.instance}"}),
                    CONNECT_TIMEOUT_S)
            except aiormq.exceptions.ProbableAuthenticationError as exc:
                raise AmqpError(f"AMQP at {address} refused the login of "
                                f"{self.config.username!r}: {exc}; check [cluster] "
                                "username and password") from None
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("%s: cannot reach AMQP at %s (%s); trying the next node",
                            self.name, address, exc or type(exc).__name__)
                self._index += 1
                await sleep_or_stop(backoff.next(), stop)
                continue
            self.generation += 1
            try:
                await self._serve(conn, address, session, stop)
            except LOST as exc:
                log.warning("%s: AMQP connection to %s lost (%s); reconnecting", self.name,
                            address, exc or type(exc).__name__)
                self._index += 1
            except BaseExceptionGroup as group:
                lost, rest = group.split(LOST)
                if rest is not None or lost is None:
                    raise
                log.warning("%s: AMQP connection to %s lost (%s); reconnecting", self.name,
                            address, lost.exceptions[0])
                self._index += 1
            finally:
                if self.connection is not None:
                    await self.connection.close_reader()
                self.connection = None
                await _close_quietly(conn)
            if asyncio.get_running_loop().time() - started >= STABLE_S:
                backoff.reset()
            if not stop.is_set():
                await sleep_or_stop(backoff.short(), stop)

    async def _serve(self, conn: AbstractConnection, address: str, session: Session,
                     stop: asyncio.Event) -> None:
        channel = await conn.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.config.prefetch)
        c = AmqpConnection(conn, channel, self.generation, address,
                           lambda: aio_pika.connect(self._url(*self.config.nodes[
                               self._index % len(self.config.nodes)])))
        self.connection = c
        log.info("%s: AMQP connected to %s", self.name, address)
        lost = asyncio.get_running_loop().create_future()

        def on_close(_: Any, exc: BaseException | None = None) -> None:
            if not lost.done():
                lost.set_result(exc)
        conn.close_callbacks.add(on_close)
        channel.close_callbacks.add(on_close)
        async with TaskGroup("amqp", expected=LOST) as tasks:
            # The session ends itself when stop is set (it has work to hand over first).
            work = tasks.create_task(session(c), name="session")
            acker = tasks.create_task(c.acker(), name="acker")
            done, _ = await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
            if work in done and not work.cancelled() and work.exception() is None:
                await c.flush_acks()
            work.cancel()
            acker.cancel()
        if lost.done() and not stop.is_set():
            raise AmqpError(f"closed by the broker: {lost.result() or 'connection lost'}")


async def sleep_or_stop(delay: float, stop: asyncio.Event) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


async def _close_quietly(conn: AbstractConnection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception as exc:  # the connection is gone already: nothing to keep
        log.debug("closing the AMQP connection: %s", exc)
