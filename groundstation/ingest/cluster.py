"""A clustered ingest instance: the partitions it owns, the alarm state that moves with
them, and how the instances share the partitions out (docs/cluster.md;
groundstation/core/partitions.py for the topology).

Each instance consumes every partition's queue as one of its single-active consumers: the
broker delivers a partition to one instance at a time and, when that instance's connection
(or the channel it consumes the partition on) closes, to the next one waiting. So:

* **Taking over.** An instance owns a partition from its first delivery (a frame, an
  acknowledgement, or another instance's tick). Before it handles that delivery, it loads
  the partition's alarm state from `gs.state.pNN`: latched, acknowledged and shelved alarms,
  streaks, the event seq, and each stream's decoder position. Messages the last owner had
  handled but not acknowledged come again; at or before the position they are duplicates:
  stored again (a rewrite of the same point) but not alarmed again.
* **Handing over.** Before a batch's messages are acknowledged, the state after it is
  published to `gs.state.pNN` with a publisher confirm (the InFlight gate): what the broker
  still holds is never older than the state there.
* **Sharing out.** Every instance ticks into every partition each `tick_s`, so an owner
  knows who is alive. One that owns more than its fair share (partitions / instances,
  rounded up) lets the extra go: it stops taking from the partition, settles what it took
  (stored, state handed over, acknowledged), then closes the partition's channel; the
  broker gives the rest, in order, to the next instance waiting, and this one queues again.
* **Context across partitions.** The values another vehicle's limits look at go out on
  `ingest/context/<source>/<vehicle>` from the owner of that vehicle; every instance takes
  those of the vehicles it does not own. The mission phase (sim/state) every instance
  reads itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundstation.amqp import (
    LOST,
    AmqpClient,
    AmqpConnection,
    AmqpError,
    Delivery,
    sleep_or_stop,
)
from groundstation.config import ClusterConfig
from groundstation.core import messages, partitions, topics
from groundstation.core.definitions import VehicleDefinition
from groundstation.ingest import formats
from groundstation.ingest.alarm_state import FORMAT, VERSION, AlarmStateStore, restore_entries
from groundstation.ingest.stream import Stream
from groundstation.tasks import TaskGroup

if TYPE_CHECKING:
    from groundstation.ingest.service import IngestService

log = logging.getLogger("groundstation.ingest.cluster")

CONTEXT_MIN_INTERVAL_S = 0.1  # a vehicle's context values go out at most this often
MEMBER_TIMEOUT_TICKS = 3.5  # an instance not heard from for this many ticks has gone
SETTLE_TICKS = 3
HANDOVER_TIMEOUT_S = 30.0  # after letting partitions go, wait this long before judging again

Key = tuple[str, str, str]


class PartitionStates(AlarmStateStore):
    """The alarm state of each partition, handed over through the broker (no file)."""

    def __init__(self, count: int, streams: Any, stopping: Any) -> None:
        super().__init__(Path("/dev/null"), stopping)
        self.count = count
        self._streams = streams  # () -> the service's streams, by key
        self.dirty_partitions: set[int] = set()
        self.conn: AmqpConnection | None = None
        self.published = 0
        self._handing = asyncio.Lock()

    def advanced(self, s: Stream, changed: bool) -> None:
        self.dirty_partitions.add(partitions.partition_of(s.vehicle, self.count))

    async def saver(self, streams: Any) -> None:  # the broker keeps it: nothing to write
        await asyncio.Event().wait()

    def save(self, streams: Any) -> None:
        pass  # handed over batch by batch (gate)

    def restore(self, definitions: dict[str, VehicleDefinition], *, with_archive: bool,
                skip: Iterable[Key] = ()) -> list[Stream]:
        return []  # partitions are taken over one by one, as they come

    def document_of(self, p: int) -> bytes:
        doc = self.document(((k, s) for k, s in self._streams()
                             if partitions.partition_of(s.vehicle, self.count) == p),
                            final=False)
        doc["partition"] = p
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()

    async def gate(self) -> None:
        """Publish the state of every partition that moved on, each confirmed by the
        broker; raises (the messages then wait) if it cannot."""
        async with self._handing:
            dirty, self.dirty_partitions = self.dirty_partitions, set()
            try:
                if dirty and self.conn is None:
                    raise ConnectionError("no AMQP connection")
                for p in sorted(dirty):
                    assert self.conn is not None
                    await self.conn.put(partitions.state_queue(p), self.document_of(p))
                    self.published += 1
            except BaseException:
                self.dirty_partitions |= dirty
                raise

    def load(self, p: int, body: bytes | None, definitions: dict[str, VehicleDefinition],
             with_archive: bool) -> list[Stream]:
        """The streams a partition's handed-over state gives (none: a fresh partition)."""
        if body is None:
            return []
        where = f"the handed-over state of partition {p}"
        try:
            doc = json.loads(body)
            if not (isinstance(doc, dict) and doc.get("format") == FORMAT
                    and doc.get("version") == VERSION and isinstance(doc.get("streams"), list)):
                raise ValueError("not an alarm state this ingest reads")
        except ValueError as exc:
            log.error("%s is unreadable (%s): its alarms start afresh", where, exc)
            return []
        streams, _ = restore_entries(doc["streams"], definitions, with_archive=with_archive,
                                     where=where, resume=True)
        return streams


class Cluster:
    def __init__(self, service: IngestService, config: ClusterConfig) -> None:
        self.service = service
        self.config = config
        self.count = partitions.check_count(config.partitions)
        self.instance = config.instance
        self.vehicles = sorted(service.definitions)
        for v in self.vehicles:
            partitions.check_vehicle(v)
        self.client = AmqpClient(config, name="ingest")
        self.states = PartitionStates(self.count, lambda: list(service.streams.items()),
                                      service._halt.is_set)
        self.owned: dict[int | None, float] = {}  # partition (None: unrouted) -> since
        self.members: dict[str, float] = {}  # instance -> when last heard (monotonic)
        self.taken_over = 0
        self.released = 0
        self.rerouted = 0  # messages that came before their vehicle's bindings
        self._let_go: dict[int | None, asyncio.Event] = {}
        self._context_sent: dict[tuple[str, str], float] = {}
        self.finished = asyncio.Event()
        service.contexts.on_values = self._send_context

    def partition_of(self, vehicle: str) -> int:
        return partitions.partition_of(vehicle, self.count)

    def owns(self, vehicle: str) -> bool:
        return self.partition_of(vehicle) in self.owned

    # -- the connection -------------------------------------------------------------------

    async def run(self, halt: asyncio.Event) -> None:
        try:
            await self.client.run(lambda conn: self._session(conn, halt), stop=halt)
        finally:
            self.finished.set()

    async def stopped(self, timeout: float = HANDOVER_TIMEOUT_S) -> None:
        """Wait for the partitions to be handed over, once the service is stopping."""
        try:
            await asyncio.wait_for(self.finished.wait(), timeout)
        except TimeoutError:
            log.error("ingest %s: partitions not handed over within %.0f s; the broker "
                      "gives what was not acknowledged to the next instance", self.instance,
                      timeout)

    async def _session(self, conn: AmqpConnection, halt: asyncio.Event) -> None:
        await conn.declare(self.vehicles, self.count)
        # What this instance held before the connection dropped is the broker's again
        # (unacknowledged, it goes to whoever owns the partition now): start afresh.
        for p in list(self.owned):
            self._drop_partition(p)
        self.owned.clear()
        self.service.inflight.attach(conn)
        self.states.conn = conn
        log.info("ingest %s: in the cluster through %s, %d partitions", self.instance,
                 conn.address, self.count)
        try:
            async with TaskGroup("cluster", expected=LOST) as tasks:
                for p in [*range(self.count), None]:
                    tasks.create_task(self._partition(conn, p, halt),
                                      name=f"partition-{'unrouted' if p is None else p}")
                tasks.create_task(self._ticker(conn, halt), name="ticker")
                tasks.create_task(self._balancer(halt), name="balancer")
        except BaseExceptionGroup as group:
            lost, rest = group.split(LOST)
            if rest is not None or lost is None:
                raise
            raise AmqpError(f"lost: {lost.exceptions[0]}") from None
        finally:
            self.states.conn = None
            self.service.inflight.detach()

    # -- a partition ----------------------------------------------------------------------

    async def _partition(self, conn: AmqpConnection, p: int | None,
                         halt: asyncio.Event) -> None:
        name = partitions.UNROUTED_QUEUE if p is None else partitions.queue(p)
        while not halt.is_set():
            let_go = self._let_go[p] = asyncio.Event()
            if halt.is_set():
                break
            async with conn.consume(name, f"{self.instance}/{name}",
                                    self.config.prefetch) as consumer:
                while (d := await consumer.next(let_go)) is not None:
                    if p not in self.owned:
                        await self._take_over(conn, p, halt)
                    await self._handle(conn, d, p)
                if p in self.owned:
                    await self._hand_over(p)
            # The channel is closed: the broker has given the rest to the next instance.
            if p in self.owned:
                del self.owned[p]
                if not halt.is_set():
                    self.released += 1
                    log.info("ingest %s: let partition %s go", self.instance, name)
                self.publish_status()

    async def _handle(self, conn: AmqpConnection, d: Delivery, p: int | None) -> None:
        if d.kind == partitions.TICK_TYPE:
            self.members[d.payload.decode(errors="replace")] = time.monotonic()
            conn.acknowledge(d.tag)
            return
        if p is None and self._vehicle_of(d.topic) in self.vehicles:
            # Published before its vehicle's bindings existed (the ships flew before any
            # instance had declared them): to its partition now, as a late message.
            await conn.route(d.topic, d.payload)
            conn.acknowledge(d.tag)
            self.rerouted += 1
            return
        await self.service.take(d.topic, d.payload, d.tag, 1)

    @staticmethod
    def _vehicle_of(topic: str) -> str | None:
        try:
            where = topics.parse(topic)
        except ValueError:
            return None
        return where.vehicle if isinstance(where, topics.TelemetryTopic | topics.AckTopic) \
            else None

    async def _take_over(self, conn: AmqpConnection, p: int | None,
                         halt: asyncio.Event) -> None:
        self.owned[p] = time.monotonic()
        if p is None:
            return
        self._drop_partition(p)  # nothing should be left; never trust it
        body = await conn.last(partitions.state_queue(p), halt)
        svc = self.service
        streams = self.states.load(p, body, svc.definitions,
                                   with_archive=svc._archive_factory is not None)
        formats.share_restored(streams, svc.streams.values())
        for s in streams:
            key = (s.source, s.vehicle, s.definition.stream)
            if key in svc.streams:
                svc.drop_stream(key)
            svc.streams[key] = s
            svc._publish_active(s)
        self.taken_over += 1
        log.info("ingest %s: took partition %d (%s) with the alarm state of %d streams",
                 self.instance, p, ", ".join(self._vehicles_of([p])) or "no known vehicle",
                 len(streams))
        self.publish_status()

    async def _hand_over(self, p: int | None) -> None:
        """Settle what this instance took from a partition: its batches decoded, stored,
        their state handed over and their messages acknowledged; then forget it."""
        svc = self.service
        for s in list(svc.streams.values()):
            if s.pending and (p is None or self.partition_of(s.vehicle) == p):
                svc._process(s)
        await svc.inflight.barrier()
        if p is not None:
            self._drop_partition(p)

    def _drop_partition(self, p: int | None) -> None:
        if p is None:
            return
        svc = self.service
        for key, s in list(svc.streams.items()):
            if self.partition_of(s.vehicle) == p:
                del svc.streams[key]
                if s.archive is not None:
                    s.archive.close()

    # -- the instances --------------------------------------------------------------------

    async def _ticker(self, conn: AmqpConnection, halt: asyncio.Event) -> None:
        me = self.instance.encode()
        while not halt.is_set():
            self.members[self.instance] = time.monotonic()
            for p in [*range(self.count), None]:
                name = partitions.UNROUTED_QUEUE if p is None else partitions.queue(p)
                try:
                    await conn.put(name, me, kind=partitions.TICK_TYPE)
                except AmqpError as exc:  # its queue between leaders: the next tick
                    log.debug("no tick into %s: %s", name, exc)
            self.publish_status()
            await sleep_or_stop(self.config.tick_s, halt)
        for ev in self._let_go.values():  # stopping: every partition is handed over
            ev.set()

    def alive(self) -> list[str]:
        horizon = time.monotonic() - MEMBER_TIMEOUT_TICKS * self.config.tick_s
        return sorted(m for m, t in self.members.items()
                      if t >= horizon or m == self.instance)

    async def _balancer(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            await sleep_or_stop(SETTLE_TICKS * self.config.tick_s, halt)
            owned = sorted(p for p in self.owned if p is not None)
            fair = partitions.fair_share(self.count, len(self.alive()))
            for p in owned[fair:]:  # the extra ones, highest first to go
                self._let_go[p].set()

    # -- what the instance tells the others -----------------------------------------------

    def _vehicles_of(self, owned: Iterable[int | None]) -> list[str]:
        ps = set(owned)
        return [v for v in self.vehicles if self.partition_of(v) in ps]

    def status(self) -> messages.IngestInstance:
        owned = sorted(p for p in self.owned if p is not None)
        conn = self.client.connection
        return messages.IngestInstance(
            instance=self.instance, time_ns=time.time_ns(), partitions=owned,
            partition_count=self.count, vehicles=self._vehicles_of(owned),
            members=self.alive(), taken_over=self.taken_over, released=self.released,
            amqp_node=conn.address if conn is not None else None)

    def publish_status(self) -> None:
        self.service.publish(topics.ingest_instance(self.instance), self.status(),
                             retain=True)

    def _send_context(self, source: str, vehicle: str, values: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._context_sent.get((source, vehicle), 0.0) < CONTEXT_MIN_INTERVAL_S:
            return
        self._context_sent[(source, vehicle)] = now
        self.service.publish(topics.ingest_context(vehicle, source), messages.ContextValues(
            source=source, vehicle=vehicle, values=values))  # type: ignore[arg-type]

    def on_context(self, where: topics.ContextTopic, payload: bytes) -> None:
        """Another instance's vehicle's context values (ours we know first-hand)."""
        if self.owns(where.vehicle):
            return
        try:
            msg = messages.ContextValues.from_json(payload)
        except messages.MessageError as exc:
            self.service.rejected["bad_context"] += 1
            log.warning("ignored the context values on %s: %s", where, exc)
            return
        self.service.contexts.values.setdefault(str(msg.source), {}).update(msg.values)

