"""The station's one way to talk to the broker: connection settings from the configuration
schema (`MqttConfig`: host, port, credentials, TLS), one reconnect loop with one backoff
policy, subscriptions made again on every connection, will messages, clean or persistent
sessions, manual acknowledgement, and errors said in words.

Every MQTT client of the station goes through here: the console's feed, the simulators, the
replay tool, the drill runner, the demo (and the ingest, next). This is the only module that
imports the MQTT client library (aiomqtt, over paho-mqtt) and the only one that reaches into
its internals (for the manual acknowledgement and its PUBACKs sent together, to see a
connection closed before the broker answered, to take queued messages without a task each,
and to read the socket ahead), so a new major version of it is a change to this file alone.

    client = MqttClient(config.mqtt, name="console", subscriptions=[...],
                        on_message=handle)            # handle(Received) -> None | awaitable
    await client.run(stop=stop)                       # connect, reconnect, until stop
    await client.publish(topic, payload)              # on the current connection

    async def session(conn: Connection) -> None:      # once per connection: publish and
        ...                                           # read (conn.messages()) as it likes
    await client.run(session, stop=stop)

    async with client.connect() as conn:              # one connection, no reconnecting
        await conn.publish(...)                       # (the replay tool)

Several brokers (`hosts`, a cluster's nodes): the client connects to the first, and after
each failed attempt or lost connection moves to the next in the list (round and round),
saying which in the log; it waits only a short moment (`Backoff.first`, jittered) between
brokers, and the backoff below between rounds. A clean-session client presents a new client
id on each attempt there (`identifier()`: RabbitMQ would hold the old id's subscription
queue on a dead node). `connect()` (one connection, no reconnecting) tries each once, in
turn. With one broker (host and port) everything is as below:

Retained messages on every broker (`retain_on_all_hosts`, with several): RabbitMQ 3.10
keeps a retained message on the node it was published on only. With the setting on, each
retained message the client publishes (a clear too) is copied to every other broker of the
list by a side connection of its own (one a broker, in the client's task group, on this
module's reconnect loop; a broker that is down is retried in the background and never
holds the client up), and the client remembers the latest value of each topic so that a
broker it (or a side connection) connects to gets all of them again: a node that was down
while they changed comes back with the current state, not a stale one. Publishers change
nothing; `retained_everywhere()` waits until every broker has them.

Reconnecting: after a failed attempt or a lost connection the client waits, then tries
again: 0.2 s doubling to `reconnect_max_s` (10 s), each wait drawn between half and one and a
half times that (so a hundred consoles do not come back in step after a broker restart); the
wait starts again from 0.2 s once a connection has lasted `STABLE_S`. Subscriptions are made
on every connection (a clean session has none; a persistent one keeps them, and making them
again costs nothing). With `fail_fast`, a refusal on the very first attempt (credentials,
authorisation, an untrusted certificate, TLS against a plain port or the reverse) ends
`run()` with a `BrokerRefused` instead of waiting for a fix that will not come by itself;
once connected, every loss is retried.

Manual acknowledgement (`manual_ack=True`, with a persistent session): a QoS 1 message is
acknowledged only when its owner says so (`Received.ack()`, or `client.ack(mid, qos,
generation)` when it kept those), so the broker sends again what was not acknowledged
before the connection dropped. An acknowledgement for a message of an earlier connection
does nothing (its message id means nothing on the new one): the broker sends it again.

The ingest, when it moves here, passes its [mqtt] section as it is and keeps its persistent
session, acknowledging once the data are durable:

    client = MqttClient(config.mqtt, name="ingest", client_id=config.mqtt.client_id,
                        clean_session=False, manual_ack=True, subscriptions=[...],
                        on_disconnect=lambda _: connected.clear())
    async def session(conn):                 # what IngestService._session does now
        ...                                  # conn.generation: the new connection's
        async with TaskGroup("ingest") as t:  # receive: async for m in conn.messages()
            ...                              # send: await conn.publish(...)
    await client.run(session, stop=stop)     # stop cancels the session
    client.ack(m.mid, m.qos, m.generation)   # IngestService._ack, once durable

Every connection sets TCP_NODELAY: the station's messages are small (an alarm, an operator
request, a PUBACK), and an alarm published right after a batch of PUBACKs must not wait for
Nagle's algorithm to coalesce it with them.

Tasks: a connection's receiving loop and the owner's session run in a named task group
(groundstation.tasks): a task that dies of anything but the broker going away is logged by
name ("task console/session died: ...") and ends `run()` with its exception.

Client ids under the account's name: a client that logs in as a user presents
`<user>.<client id>` (`account_client_id`; the cluster's user names have no '.'), so the
cluster can give each account its own subscription queues
(`mqtt-subscription-<client id>qos<n>`) and no other's (groundstation.deploy.rabbitmq_auth).
Mosquitto does not care.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiomqtt

from groundstation.config import ConfigError, MqttConfig, env_name, reveal
from groundstation.tasks import TaskGroup

__all__ = ["ACCOUNT_SEPARATOR", "NODELAY", "STABLE_S", "Backoff", "BrokerError", "BrokerRefused",
           "Connection", "MqttClient", "NotConnected", "Received", "Will", "account_client_id",
           "broker_error_of", "tls_context", "unique_id"]

log = logging.getLogger("groundstation.mqtt")

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
STABLE_S = 5.0  # a connection that lasted this long starts the backoff again from the start
FIRST_DELAY_S = 0.2
TIMEOUT_S = 10.0  # connecting (up to CONNACK), subscribing, a QoS 1 publish's PUBACK
FLUSH_S = 3.0  # at the end, longest wait for the retained copies still on their way

_PUBACK = 0x40  # MQTT packet type, and the PUBACK of message id H: type, length 2, H
_PUBACK_PACKET = struct.Struct("!BBH")
# CONNACK refusals worth trying again: the broker is there but busy or going away.
_TRANSIENT_CONNACK = {3, 136, 137, 151, 159}  # server unavailable/busy, quota, rate
_CREDENTIALS_CONNACK = {4, 5, 134, 135}  # bad user name or password, not authorised


class BrokerError(ConnectionError):
    """The broker could not be reached, refused the connection, or the connection was lost.
    str() says which in words, naming the broker."""


class BrokerRefused(BrokerError):
    """The broker (or the TLS handshake) refused this client: retrying will not help until a
    setting changes (credentials, certificates, tls on or off)."""


class NotConnected(BrokerError):
    """No connection to the broker at the moment (the client is reconnecting)."""


@dataclass(frozen=True)
class Will:
    """What the broker publishes for this client when its connection is lost uncleanly."""

    topic: str
    payload: bytes = b""
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Received:
    """One message from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int  # which connection it came on (MqttClient.generation)
    _ack: Callable[[int, int, int], bool] = field(repr=False, compare=False)

    def ack(self) -> bool:
        """Acknowledge it (manual_ack clients): True if sent, False if its connection is
        gone (the broker sends the message again) or there was nothing to acknowledge."""
        return self._ack(self.mid, self.qos, self.generation)


class _ReadAhead:
    """paho's socket, read in large chunks. paho reads each packet in several recv()s (its
    type, its length a byte at a time, then the rest), and aiomqtt's reader takes one packet
    each time the socket is readable, unless the socket says more bytes are pending (as a
    TLS socket does): with the bytes read ahead here, and counted by pending(), one
    readable socket is one recv() and every packet it brought. (At 100-frame messages the
    four recv()s and the event-loop turn of each message cost the ingest ~8 % of its CPU.)
    Everything else goes to the socket as it is."""

    __slots__ = ("_buf", "_sock")
    CHUNK = 1 << 16

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = memoryview(b"")

    def recv(self, n: int) -> bytes:
        if not self._buf:
            data = self._sock.recv(max(n, self.CHUNK))  # BlockingIOError etc. as they are
            if len(data) <= n:
                return cast(bytes, data)
            self._buf = memoryview(data)
        out, self._buf = self._buf[:n].tobytes(), self._buf[n:]
        return out

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)  # a TLS socket's decrypted bytes
        return len(self._buf) + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Backoff:
    """The reconnect policy: waits from `first` doubling to `maximum`, each drawn between
    (1 - jitter) and (1 + jitter) times that, never above `maximum`."""

    def __init__(self, first: float = FIRST_DELAY_S, maximum: float = 10.0,
                 factor: float = 2.0, jitter: float = 0.5,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < first <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff: 0 < first <= maximum, factor >= 1, 0 <= jitter < 1")
        self.first, self.maximum, self.factor, self.jitter = first, maximum, factor, jitter
        self._rand = rand
        self._base = first

    def next(self) -> float:
        delay = self._base * (1 - self.jitter + 2 * self.jitter * self._rand())
        self._base = min(self._base * self.factor, self.maximum)
        return min(delay, self.maximum)

    def reset(self) -> None:
        self._base = self.first

    def fresh(self) -> Backoff:
        """The same policy, with waits of its own (for another connection)."""
        return Backoff(self.first, self.maximum, self.factor, self.jitter, self._rand)

    def short(self) -> float:
        """A wait of about `first` (jittered), the policy unchanged: between one broker of
        a list and the next."""
        return self.first * (1 - self.jitter + 2 * self.jitter * self._rand())


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS settings of `config` as an SSLContext (None without tls). Verification of the
    broker's certificate and host name is on unless tls_verify is off. A file that cannot
    be loaded is a ConfigError naming it."""
    if not config.tls:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(config.ca_file) if config.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[mqtt] ca_file {config.ca_file}: cannot load it: "
                          f"{_ssl_reason(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.cert_file is not None:
        try:
            ctx.load_cert_chain(str(config.cert_file),
                                str(config.key_file) if config.key_file else None,
                                password=reveal(config.key_password))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[mqtt] cert_file {config.cert_file}"
                              f"{f' / key_file {config.key_file}' if config.key_file else ''}:"
                              f" cannot load the client certificate: {_ssl_reason(exc)}"
                              ) from None
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


ACCOUNT_SEPARATOR = "."  # in no user name (a RabbitMQ routing-key level), so never ambiguous


def account_client_id(username: str | None, client_id: str) -> str:
    """The client id ``username`` presents: ``<username>.<client_id>``, once. The cluster's
    rights let an account subscribe only under its own prefix (no other account's queues),
    so every station client takes it; an anonymous one keeps the id it was given."""
    if not username or client_id.startswith(username + ACCOUNT_SEPARATOR):
        return client_id
    return username + ACCOUNT_SEPARATOR + client_id


def unique_id(name: str) -> str:
    """A client id of its own for a client that keeps no session: never the ingest's fixed
    one (a second client with that id would throw the ingest off the broker)."""
    return f"gs-{name}-{os.getpid()}-{random.randrange(1 << 32):08x}"[:64]


class _LibraryLog(logging.LoggerAdapter):
    """The client library's own log, at debug level: what it reports as an error (a socket
    reset, say) this module reports in words, once."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


_LIBRARY_LOG = _LibraryLog(logging.getLogger("groundstation.mqtt.library"), {})


def _failed(granted: object) -> bool:
    """A SUBACK's answer for one topic: a reason code (MQTT 5 style) or a granted QoS."""
    failure = getattr(granted, "is_failure", None)
    if failure is not None:
        return bool(failure)
    return isinstance(granted, int) and granted >= 0x80


def _payload(raw: object) -> bytes:
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    return b"" if raw is None else str(raw).encode()


class Connection:
    """One connection to the broker, as its owner's session sees it. Unusable once the
    connection is gone (its calls raise BrokerError)."""

    def __init__(self, owner: MqttClient, client: aiomqtt.Client, generation: int,
                 node: int = 0) -> None:
        self._owner = owner
        self._client = client
        self.generation = generation
        self.node = node  # which of the owner's brokers it is connected to

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                      retain: bool = False, timeout: float | None = None) -> None:
        """Publish; with QoS 1, return once the broker has acknowledged it. With
        retain_on_all_hosts, a retained message is then copied to the other brokers."""
        await self._send(topic, payload, qos=qos, retain=retain, timeout=timeout, copy=True)

    async def _send(self, topic: str, payload: bytes | str, *, qos: int, retain: bool,
                    timeout: float | None = None, copy: bool) -> None:
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain,
                                       timeout=timeout)
        except aiomqtt.MqttError as exc:
            raise self._owner._lost(exc, f"publishing on {topic}") from None
        copies = self._owner._copies
        if copy and retain and copies is not None:
            # Only once this broker has taken it: a value it refused (the ACL) would
            # otherwise be sent again on every connection, and refused each time.
            copies.record(topic, _payload(payload), qos, self.node)
        if task is not None and task.cancelling() > cancels:
            # Python 3.11's wait_for (inside the library's publish) drops a cancellation
            # that arrives as the PUBACK does: honour it here, or a shutdown hangs.
            raise asyncio.CancelledError

    async def subscribe(self, topics: Iterable[str], qos: int = 1) -> list[str]:
        """Subscribe to more topics on this connection only (run()'s `subscriptions` are
        the ones made again on every connection). Returns the topics the broker refused."""
        wanted = list(topics)
        if not wanted:
            return []
        try:
            granted = await self._client.subscribe([(t, qos) for t in wanted])
        except aiomqtt.MqttError as exc:
            raise self._owner._lost(exc, "subscribing") from None
        refused = [t for t, g in zip(wanted, granted, strict=False) if _failed(g)]
        for t in refused:
            log.warning("[%s] the broker refused the subscription to %s (the ACL?)",
                        self._owner.name, t)
        return refused

    async def messages(self) -> AsyncIterator[Received]:
        """The messages of this connection, until it is lost (BrokerError). One reader
        only: a client given on_message reads them itself."""
        # aiomqtt's iterator makes a task and waits on it for every message; messages
        # already queued are taken straight from its queue instead (the library's
        # internals, a third use; the iterator still waits when there is none, and says
        # when the connection is lost). A burst of 100-frame messages spent ~5 % of the
        # ingest's CPU on those tasks.
        # Every few queued messages the loop is let run (other tasks, and reading more).
        queue: asyncio.Queue[aiomqtt.Message] | None = getattr(self._client, "_queue", None)
        iterator = self._client.messages
        in_a_row = 0
        try:
            while True:
                try:
                    if queue is None or in_a_row >= 8:
                        raise asyncio.QueueEmpty
                    m = queue.get_nowait()
                    in_a_row += 1
                except asyncio.QueueEmpty:
                    in_a_row = 0
                    m = await iterator.__anext__()
                yield Received(str(m.topic), _payload(m.payload), m.qos, bool(m.retain),
                               m.mid, self.generation, self._owner.ack)
        except aiomqtt.MqttError as exc:
            raise self._owner._lost(exc, "receiving") from None

    def ack(self, message: Received) -> bool:
        return self._owner.ack(message.mid, message.qos, message.generation)

    def acknowledge(self, mid: int, qos: int) -> bool:
        """Acknowledge message `mid` of this connection (for an owner that kept only its
        id and QoS until the data were durable)."""
        return self._owner.ack(mid, qos, self.generation)


Session = Callable[[Connection], Coroutine[Any, Any, None]]
Handler = Callable[[Received], Awaitable[None] | None]


class MqttClient:
    """A client of the broker with one name, one configuration and one reconnect policy.

    config        the [mqtt] section: host, port, credentials, TLS, keepalive, the longest
                  reconnect wait; the ingest passes its own as it is
    name          for the log, task names and the default client id
    client_id     default: config.client_id if it was given (file, environment, flag),
                  else a unique one (unique_id); presented under the account's name
                  (identifier())
    clean_session False for a persistent session (a fixed client_id; the broker keeps
                  subscriptions and queues QoS 1 messages while the client is away)
    subscriptions made on every connection, at subscribe_qos
    will          published by the broker if the connection is lost uncleanly
    manual_ack    acknowledge QoS 1 messages only when told (Received.ack, ack())
    on_message    called for every message (a coroutine function or a plain one); an
                  exception in it is logged and costs that message only
    on_connect    called with each new connection, after the subscriptions
    on_disconnect called with the BrokerError of each failed attempt and lost connection
    fail_fast     a refusal on the first attempt ends run() with BrokerRefused
    connect_first any failure of the first attempt ends run() with its BrokerError (a tool
                  that cannot start without the broker says so at once); later losses
                  are retried
    log_level     of the reports of lost connections and failed attempts (a console that
                  shows the broker's state on screen keeps them out of the terminal: INFO)
    """

    def __init__(self, config: MqttConfig, *, name: str, client_id: str | None = None,
                 clean_session: bool = True, subscriptions: Sequence[str] = (),
                 subscribe_qos: int = 1, will: Will | None = None, manual_ack: bool = False,
                 on_message: Handler | None = None,
                 on_connect: Callable[[Connection], None] | None = None,
                 on_disconnect: Callable[[BrokerError], None] | None = None,
                 fail_fast: bool = False, connect_first: bool = False,
                 timeout_s: float = TIMEOUT_S,
                 backoff: Backoff | None = None, log_level: int = logging.WARNING) -> None:
        self.config = config
        self.name = name
        if client_id is None:
            client_id = config.client_id if "client_id" in config.model_fields_set \
                else unique_id(name)
        self.client_id = client_id
        self.clean_session = clean_session
        self.subscriptions = list(subscriptions)
        self.subscribe_qos = subscribe_qos
        self.will = will
        self.manual_ack = manual_ack
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.fail_fast = fail_fast
        self.connect_first = connect_first
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff(first=min(FIRST_DELAY_S, config.reconnect_max_s),
                                          maximum=config.reconnect_max_s)
        self.log_level = log_level
        self._tls = tls_context(config)  # a bad certificate file fails here, not later
        self._connection: Connection | None = None
        self._paho: Any = None  # the library's own client under the current connection
        self._acks: list[int] = []  # message ids to acknowledge (see _send_acks) ...
        self._acks_generation = 0  # ... of this connection
        self.generation = 0  # bumped on every connection
        self.connections = 0
        self.failures = 0  # failed attempts and lost connections, in all
        self.last_error: BrokerError | None = None
        self.brokers = config.brokers  # [(host, port)]: hosts, or host and port
        self.current = 0  # index in brokers of the one connected to, or tried next
        self._attempts = 0  # connection attempts made
        self._copies = _RetainedCopies(self) \
            if config.retain_on_all_hosts and len(self.brokers) > 1 else None

    # --- state -----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The current broker (connected to, or tried next)."""
        return self._address(self.current)

    @property
    def destination(self) -> str:
        """Where the client connects, in words: its broker, or its list of brokers."""
        if len(self.brokers) == 1:
            return self.address
        return "the first that answers of " + ", ".join(
            self._address(i) for i in range(len(self.brokers)))

    def _address(self, index: int) -> str:
        host, port = self.brokers[index]
        host = f"[{host}]" if ":" in host else host
        return f"{'mqtts' if self.config.tls else 'mqtt'}://{host}:{port}"

    def identifier(self) -> str:
        """The client id the current (or next) connection presents. With several brokers
        (a cluster), a client without a session (clean_session) takes a new one for each
        attempt, client_id-<n>: RabbitMQ keeps a clean session's subscription queue on the
        node it was made on, and a node that dies takes that queue with it until it comes
        back, so a new subscription under the same id would hang on every other node.
        Under the account's name (account_client_id)."""
        client_id = self.client_id
        if self.clean_session and len(self.brokers) > 1:
            client_id = f"{client_id[:54]}-{self._attempts:x}"
        return account_client_id(self.config.username, client_id)

    def _move_on(self) -> str:
        """Make the next broker of the list the current one; its address."""
        self.current = (self.current + 1) % len(self.brokers)
        return self.address

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> Connection | None:
        return self._connection

    # --- using the current connection ---------------------------------------------------

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                      retain: bool = False, timeout: float | None = None) -> None:
        """Publish on the current connection; NotConnected while there is none."""
        conn = self._connection
        if conn is None:
            raise NotConnected(f"not connected to the broker at {self.address}"
                               + (f" ({self.last_error})" if self.last_error else "")
                               + "; reconnecting")
        await conn.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)

    async def retained_everywhere(self) -> None:
        """Wait until every broker of `hosts` holds the retained messages this client
        published (retain_on_all_hosts): at once when the setting is off or there is one
        broker. A node that is down is waited for: give this a timeout."""
        if self._copies is not None:
            await self._copies.everywhere()

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """Acknowledge message `mid` of connection `generation` (manual_ack): True if the
        acknowledgement goes out, with the others of this turn of the event loop; False
        for QoS 0, or when that connection is gone."""
        if not self.manual_ack or qos <= 0 or self._connection is None \
                or generation != self.generation or self._paho is None:
            return False
        if qos == 2:
            # paho's manual acknowledgement: a use of the library's internals, as are
            # seeing a connection closed early (see _open) and _send_acks. aiomqtt 2 has no
            # API for it.
            return int(self._paho.ack(mid, qos)) == 0  # MQTT_ERR_SUCCESS: queued to send
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._send_acks)
            self._acks_generation = generation
        self._acks.append(mid)
        return True

    def _send_acks(self) -> None:
        """The PUBACKs of this turn of the event loop in one packet of paho's outgoing
        queue: one write for a batch made durable (~30 messages at full rate), where a
        write each cost the ingest 3 % of its CPU."""
        mids, self._acks = self._acks, []
        if not mids or self._acks_generation != self.generation or self._paho is None:
            return  # that connection is gone: the broker sends those messages again
        self._paho._packet_queue(_PUBACK, b"".join(
            [_PUBACK_PACKET.pack(_PUBACK, 2, mid) for mid in mids]), 0, 1)

    # --- one connection -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        """One connection, subscribed, for as long as the block runs; no reconnecting.
        With several brokers, each is tried once in turn from the current one. Raises
        BrokerError (the last broker's) when none answers, BrokerRefused at once for a
        refusal."""
        async with self._copying():
            for tried in range(1, len(self.brokers) + 1):
                try:
                    client = await self._open()
                    break
                except BrokerRefused:
                    raise
                except BrokerError as exc:
                    if tried == len(self.brokers):
                        raise
                    log.log(self.log_level, "[%s] %s; trying %s", self.name, exc,
                            self._move_on())
            async with self._connected(client) as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _connect_current(self) -> AsyncIterator[Connection]:
        async with self._connected(await self._open()) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _connected(self, client: aiomqtt.Client) -> AsyncIterator[Connection]:
        self.generation += 1
        conn = Connection(self, client, self.generation, self.current)
        try:
            await conn.subscribe(self.subscriptions, self.subscribe_qos)
            if self._copies is not None:
                # Before the session publishes anything newer: this broker may be one
                # that was down (and kept stale values) while the others got new ones.
                await self._copies.replay(conn)
                self._copies.main_on(conn.node)
            self._connection = conn
            self.connections += 1
            self.last_error = None
            if self.on_connect is not None:
                self.on_connect(conn)
            yield conn
        finally:
            self._send_acks()  # what the session acknowledged last
            self._connection = None
            if self._copies is not None:
                self._copies.main_off()
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await client.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def _copying(self) -> AsyncIterator[None]:
        """The side connections of retain_on_all_hosts, in this client's task group, for
        as long as the block runs; nothing without the setting."""
        copies = self._copies
        if copies is None:
            yield
            return
        error: Exception | None = None
        async with TaskGroup(self.name, expected=(BrokerError,)) as tasks:
            copies.begin(self.current)
            for node in range(len(self.brokers)):
                tasks.create_task(copies.keep(node), name=f"retain-{node}")
            try:
                yield
                await copies.flush()
            except Exception as exc:
                # The owner's (a BrokerError, say): raised as it is, not in the exception
                # group a task group would make of it.
                error = exc
            finally:
                for t in tasks.tasks:
                    t.cancel()
        if error is not None:
            raise error

    async def _open(self) -> aiomqtt.Client:
        c = self.config
        host, port = self.brokers[self.current]
        will = aiomqtt.Will(self.will.topic, self.will.payload, self.will.qos,
                            self.will.retain) if self.will else None
        self._attempts += 1
        client = aiomqtt.Client(
            host, port, username=c.username, password=reveal(c.password),
            identifier=self.identifier(), clean_session=self.clean_session,
            keepalive=c.keepalive_s, timeout=self.timeout_s, will=will,
            tls_context=self._tls, socket_options=[NODELAY],
            logger=cast(logging.Logger, _LIBRARY_LOG))
        paho = client._client  # the library's internals (see the module's docstring)
        if self.manual_ack:
            paho.manual_ack_set(True)  # before connecting: it applies from the first message
        # A broker that closes the connection before it answers CONNECT (a TLS listener
        # reached in plain TCP, a client certificate refused) would otherwise cost the whole
        # connect timeout and end in "timed out": see it close, and say so at once.
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        library_on_disconnect = paho.on_disconnect

        def on_disconnect(*args: Any) -> None:
            loop.call_soon_threadsafe(closed.set)
            if library_on_disconnect is not None:
                library_on_disconnect(*args)

        paho.on_disconnect = on_disconnect
        entering = asyncio.ensure_future(client.__aenter__())
        closing = asyncio.ensure_future(closed.wait())
        try:
            done, _ = await asyncio.wait({entering, closing},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not entering.done():
                entering.cancel()
                with contextlib.suppress(BaseException):
                    await entering
        if entering not in done:
            raise BrokerRefused(self._closed_early())
        exc = entering.exception()
        if exc is not None:
            raise self._refusal(exc) from None
        self._paho = paho
        if paho._sock is not None:
            paho._sock = _ReadAhead(paho._sock)
        return client

    def _closed_early(self) -> str:
        if self.config.tls:
            hint = ("does it want a client certificate (cert_file, key_file), or refuse "
                    "this one? Its log says")
        else:
            hint = (f"a TLS listener? then turn tls on ({env_name('mqtt', 'tls')}=true or "
                    "--mqtt-tls)")
        return (f"broker {self.address}: it closed the connection before answering CONNECT "
                f"({hint})")

    def _refusal(self, exc: BaseException) -> BrokerError:
        """A failed connection attempt, in words; BrokerRefused when retrying is no use."""
        where = f"broker {self.address}"
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, aiomqtt.MqttCodeError):  # entering: the CONNACK's refusal
            code = int(cast(int, getattr(exc.rc, "value", exc.rc) or 0))
            reason = str(exc.rc) if exc.rc is not None else str(exc)
            if code in _TRANSIENT_CONNACK:
                return BrokerError(f"{where}: busy or going away ({reason})")
            if code in _CREDENTIALS_CONNACK:
                who = f"user {self.config.username!r}" if self.config.username \
                    else "no user name"
                return BrokerRefused(
                    f"{where}: refused the connection: {reason} ({who}; the password comes "
                    f"from {env_name('mqtt', 'password')} or "
                    f"{env_name('mqtt', 'password_file')})")
            return BrokerRefused(f"{where}: refused the connection: {reason}")
        if isinstance(cause, ssl.SSLCertVerificationError):
            trusted = f"CA file {self.config.ca_file}" if self.config.ca_file \
                else "the system's trusted CAs"
            return BrokerRefused(
                f"{where}: TLS: its certificate is not trusted: {_ssl_reason(cause)} "
                f"(checked against {trusted}; {env_name('mqtt', 'ca_file')} or "
                "--mqtt-ca-file names the CA that signed it)")
        if isinstance(cause, ssl.SSLError) or (
                self.config.tls and isinstance(cause, ConnectionResetError | BrokenPipeError)):
            # (A plain MQTT listener drops the TLS hello at once: a reset, mid-handshake.)
            return BrokerRefused(
                f"{where}: TLS handshake failed ({_ssl_reason(cause)}): is this port the "
                "broker's TLS listener?")
        if isinstance(cause, ConnectionRefusedError):
            return BrokerError(f"{where}: nothing is listening there (connection refused)")
        if isinstance(cause, socket.gaierror):
            return BrokerError(f"{where}: cannot resolve {self.brokers[self.current][0]!r} "
                               f"({cause.strerror})")
        if isinstance(cause, OSError) and cause.strerror:
            return BrokerError(f"{where}: {cause.strerror}")
        text = str(exc)
        if text == "Operation timed out":
            text = f"no answer within {self.timeout_s:g} s"
        return BrokerError(f"{where}: {text}")

    def _lost(self, exc: BaseException, doing: str) -> BrokerError:
        if isinstance(exc, BrokerError):
            return exc
        cause = exc.__cause__ or exc.__context__
        detail = str(cause) if cause is not None and str(cause) else str(exc)
        if detail == "Operation timed out":
            detail = f"no answer within {self.timeout_s:g} s"
        return BrokerError(f"broker {self.address}: connection lost while {doing} "
                           f"({detail})")

    # --- the reconnect loop --------------------------------------------------------------

    async def run(self, session: Session | None = None, *, stop: asyncio.Event | None = None,
                  drain: bool = False) -> None:
        """Connect, and again whenever the connection is lost, until `session` (called with
        each connection) returns or `stop` is set.

        When stop is set the session is cancelled, unless `drain`: then the session is left
        to finish what it has (it watches stop itself), and if the broker is unreachable at
        that moment, one more attempt is made before giving up. Without a session the client
        receives (on_message) until stop is set, or for ever. Raises BrokerRefused (with
        fail_fast, on the first attempt), the first attempt's BrokerError (connect_first),
        or the exception of a task that died of something else than the broker going
        away."""
        async with self._copying():
            await self._reconnecting(session, stop if stop is not None else asyncio.Event(),
                                     drain)

    async def _reconnecting(self, session: Session | None, stop: asyncio.Event,
                            drain: bool) -> None:
        loop = asyncio.get_running_loop()
        ever = False
        last_text = ""
        tried = 0  # brokers tried since the last connection (a round: all of them)
        while True:
            began = loop.time()
            try:
                async with self._connect_current() as conn:
                    if ever or self.failures:
                        log.info("[%s] connected to %s again", self.name, self.address)
                    else:
                        log.debug("[%s] connected to %s", self.name, self.address)
                    ever = True
                    last_text = ""
                    tried = 0
                    await self._serve(conn, session, stop, drain)
                return
            except BrokerError as exc:
                error = exc
            except BaseExceptionGroup as group:
                error = broker_error_of(group)
            self.failures += 1
            self.last_error = error
            tried += 1
            if self.on_disconnect is not None:
                self.on_disconnect(error)
            if not ever and ((self.connect_first and tried >= len(self.brokers))
                             or (self.fail_fast and isinstance(error, BrokerRefused))):
                raise error
            if stop.is_set():
                log.log(self.log_level, "[%s] %s; stopping without it", self.name, error)
                return
            if loop.time() - began >= STABLE_S:
                self.backoff.reset()
            text = str(error)
            level = self.log_level if text != last_text else logging.INFO
            if len(self.brokers) == 1:
                delay = self.backoff.next()
                log.log(level, "[%s] %s; trying again in %.1f s", self.name, text, delay)
            else:
                # The next broker at once (almost); the backoff once all have failed.
                if tried >= len(self.brokers):
                    delay, tried = self.backoff.next(), 0
                else:
                    delay = self.backoff.short()
                log.log(level, "[%s] %s; trying %s in %.1f s", self.name, text,
                        self._move_on(), delay)
            last_text = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set() and not drain:
                return

    async def _serve(self, conn: Connection, session: Session | None, stop: asyncio.Event,
                     drain: bool) -> None:
        async with TaskGroup(self.name, expected=(BrokerError,)) as tasks:
            waiting: list[asyncio.Task[Any]] = []
            if self.on_message is not None:
                tasks.create_task(self._dispatch(conn), name="receive")
            if session is not None:
                waiting.append(tasks.create_task(session(conn), name="session"))
            if session is None or not drain:
                waiting.append(tasks.create_task(stop.wait(), name="stop"))
            # A task that fails (the connection lost) cancels this wait and ends the group.
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks.tasks:
                t.cancel()

    async def _dispatch(self, conn: Connection) -> None:
        assert self.on_message is not None
        async for message in conn.messages():
            try:
                result = self.on_message(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a bug in handling one message must not drop the link
                log.exception("[%s] handling a message on %s", self.name, message.topic)


@dataclass(eq=False)
class _Retained:
    """A topic's latest retained payload (b"": cleared) and the brokers known to hold it."""

    payload: bytes
    qos: int
    nodes: set[int]


class _RetainedCopies:
    """retain_on_all_hosts: RabbitMQ 3.10 keeps a retained message on the node it was
    published on only, so every retained message the owner's connection publishes is also
    sent, by a side connection of its own, to every other broker of its list; and every
    connection (a side one, or the owner's) that reaches a broker first sends it all the
    current values, so a node that was down while they changed does not keep stale ones.

    One side connection a broker, each an MqttClient of its own on that broker alone (its
    own client id, clean session, the owner's credentials, TLS and backoff policy): the
    reconnect loop, its backoff and its log (a failed attempt said once, again at INFO at
    most once a backoff wait) are the one of this module. The side connection of the
    broker the owner is connected to is closed (the owner sends there itself); a side
    connection's failures never reach the owner.

    Each side connection sends the topics marked for it, taking the value current when it
    sends, so a value that changes while one is on its way is sent again, never an older
    one after a newer. A cleared topic (an empty payload) is forgotten once every broker
    has taken the clear."""

    def __init__(self, owner: MqttClient) -> None:
        self.values: dict[str, _Retained] = {}
        self.nodes = range(len(owner.brokers))
        base = owner.config
        self.sides = [
            MqttClient(base.model_copy(update={"hosts": [base.hosts[n]],
                                               "retain_on_all_hosts": False}),
                       name=f"{owner.name}/retain-{n}",
                       client_id=unique_id(f"{owner.name}-retain-{n}"),
                       timeout_s=owner.timeout_s, backoff=owner.backoff.fresh(),
                       log_level=owner.log_level,
                       on_connect=lambda _: self.progress.set(),
                       on_disconnect=lambda _: self.progress.set())
            for n in self.nodes]
        self.pending: list[dict[str, None]] = [{} for _ in self.nodes]  # topics to send
        self.synced = [False for _ in self.nodes]  # a side connection has sent all
        self.last: int | None = None  # the broker the owner is (or was last) on: it has all
        self.begin(0)

    # --- the owner's connection --------------------------------------------------------

    def begin(self, first: int) -> None:
        """A run of the owner (run() or connect()), about to try broker `first`."""
        # New events each run: an asyncio event belongs to the loop it was first used in.
        self.wake = [asyncio.Event() for _ in self.nodes]  # something for it to send
        self.leave: list[asyncio.Event | None] = [None for _ in self.nodes]
        self.progress = asyncio.Event()  # something above or a side connection changed
        # The owner's broker has no side connection: the one the owner is about to try
        # counts as its own until another answers (main_on).
        self.free = [asyncio.Event() for _ in self.nodes]  # the owner is not there
        for n in self.nodes:
            if n != first:
                self.free[n].set()

    def record(self, topic: str, payload: bytes, qos: int, node: int) -> None:
        """The owner's connection to broker `node` published a retained message."""
        self.values[topic] = _Retained(payload, qos, {node})
        for n in self.nodes:
            if n != node:
                self.pending[n][topic] = None
                self.synced[n] = False
                self.wake[n].set()

    async def replay(self, conn: Connection) -> None:
        for topic, value in list(self.values.items()):
            await conn._send(topic, value.payload, qos=value.qos, retain=True, copy=False)
            self._delivered(topic, value, conn.node)

    def main_on(self, node: int) -> None:
        self.last = node
        self.free[node].clear()
        self.pending[node].clear()
        leave = self.leave[node]
        if leave is not None:
            leave.set()
        for n in self.nodes:
            if n != node:
                self.free[n].set()
        self.progress.set()

    def main_off(self) -> None:
        # The broker it was on keeps its side connection closed: it holds everything the
        # owner published, and the owner publishes nothing more until it connects again.
        self.progress.set()

    # --- the side connections ----------------------------------------------------------

    async def keep(self, node: int) -> None:
        """Broker `node`'s side connection, whenever the owner is not connected there."""
        side = self.sides[node]

        async def session(conn: Connection) -> None:
            await self._deliver(node, conn)

        while True:
            await self.free[node].wait()
            leave = self.leave[node] = asyncio.Event()
            if not self.free[node].is_set():  # the owner took this broker meanwhile
                continue
            await side.run(session, stop=leave)

    async def _deliver(self, node: int, conn: Connection) -> None:
        pending = self.pending[node]
        pending.clear()
        pending.update(dict.fromkeys(self.values))
        try:
            while True:
                while pending:
                    topic = next(iter(pending))
                    del pending[topic]  # before sending: a newer value marks it again
                    value = self.values.get(topic)
                    if value is None:
                        continue
                    await conn.publish(topic, value.payload, qos=value.qos, retain=True)
                    self._delivered(topic, value, node)
                self.synced[node] = True
                self.progress.set()
                self.wake[node].clear()
                await self.wake[node].wait()
        finally:
            self.synced[node] = False
            self.progress.set()

    def _delivered(self, topic: str, value: _Retained, node: int) -> None:
        value.nodes.add(node)
        if not value.payload and len(value.nodes) == len(self.nodes) \
                and self.values.get(topic) is value:
            del self.values[topic]

    # --- waiting ------------------------------------------------------------------------

    async def everywhere(self) -> None:
        await self._until(lambda: all(self.synced[n] or n == self.last
                                      for n in self.nodes))

    async def flush(self) -> None:
        """At the end, a moment for what the side connections that are up still have to
        send (the owner's last clears, say); a broker that is down is not waited for."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_S):
                await self._until(lambda: all(
                    self.synced[n] or n == self.last or not self.sides[n].connected
                    for n in self.nodes))

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.progress.clear()
            await self.progress.wait()


def broker_error_of(group: BaseExceptionGroup[BaseException]) -> BrokerError:
    """The BrokerError that ended a task group's tasks; the group itself is raised if
    anything else did (a task's bug, never to be taken for a lost connection)."""
    match, rest = group.split(BrokerError)
    if rest is not None or match is None:
        raise group
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, BrokerError)
    return leaf
