"""Messages in flight: received from the broker and not yet acknowledged.

Ack-after-durable: a QoS 1 message is acknowledged only once the values it carried are
durable (the sink's future for them completed: written to InfluxDB, or spooled to disk).
Storage submissions go to the sink one at a time, in arrival order, from one task.

Backpressure: their number is bounded (`queue_max_messages`); at the bound `room` is
cleared and the service stops reading from the broker, which holds the rest (and, with its
in-flight window full, stops sending).

A message can be acknowledged only on the connection it came on: after a reconnect (a new
`generation`) the broker sends the unacknowledged ones again, so those of the previous
connection no longer count against the bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from groundstation.ingest.stream import Held, Sink
from groundstation.storage.influx.lineprotocol import EncodedLines, line_count

log = logging.getLogger("groundstation.ingest")

# Whether the messages of a submission were acknowledged (the alarm state's checkpoint).
Checkpoint = Callable[[bool], None] | None
Submission = tuple[Sequence[str | EncodedLines], Sequence[Held], Checkpoint]
# Run before durable messages are acknowledged (a clustered ingest hands its partitions'
# alarm state to the broker first: ingest/cluster.py).
Gate = Callable[[], Awaitable[None]]
GATE_RETRY_S = 0.5


class Connection(Protocol):
    """Where messages are acknowledged: an MQTT connection, or an AMQP one."""

    def acknowledge(self, mid: int, qos: int) -> bool: ...


class InFlight:
    def __init__(self, sink: Sink, limit: int,
                 on_bug: Callable[[str, BaseException], None], gate: Gate | None = None
                 ) -> None:
        self.sink = sink
        self.gate = gate
        self._gated: deque[Sequence[Held]] = deque()
        self._gate_wanted = asyncio.Event()
        self._gate_queued = self._gate_done = 0
        self._enqueued = self._submitted = 0  # submissions queued, and taken to the sink
        self.limit = limit
        self._on_bug = on_bug
        self.count = 0  # messages of this connection not yet acknowledged
        self.acked = 0
        self.generation = 0
        self.room = asyncio.Event()
        self.room.set()
        self.conn: Connection | None = None
        self._submissions: asyncio.Queue[Submission] = asyncio.Queue()
        self._durable: set[asyncio.Future[Any]] = set()  # storage not yet settled

    # -- the connection -------------------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        self.generation += 1
        self.count = 0
        self.room.set()
        self.conn = conn

    def detach(self) -> None:
        self.conn = None

    def ack(self, mid: int, qos: int, generation: int) -> None:
        if generation == self.generation and self.conn is not None:
            self.conn.acknowledge(mid, qos)

    def ack_now(self, mid: int, qos: int) -> None:
        """A message that is done with as it arrives (a control message, a rejected one)."""
        self.ack(mid, qos, self.generation)

    # -- received, stored, acknowledged ---------------------------------------------------

    def received(self) -> None:
        self.count += 1
        if self.count >= self.limit:
            self.room.clear()

    def settle(self, received: Sequence[Held]) -> None:
        """Acknowledge messages whose values will never be stored (their batch failed)."""
        for r in received:
            self.ack(r.mid, r.qos, r.generation)
            if r.generation == self.generation:
                self.count -= 1

    def submit(self, lines: Sequence[str | EncodedLines], received: Sequence[Held],
               checkpoint: Checkpoint) -> None:
        """Queue lines for storage; `received`: the messages they acknowledge once durable."""
        self._enqueued += 1
        self._submissions.put_nowait((lines, received, checkpoint))

    async def submitter(self) -> None:
        while True:
            item = await self._submissions.get()
            try:
                await self._submit(*item)
            finally:
                self._submitted += 1

    async def drain(self) -> None:
        """At shutdown: submit what is queued, and wait for storage to settle."""
        while not self._submissions.empty():
            await self._submit(*self._submissions.get_nowait())
            self._submitted += 1
        if self._durable:
            await asyncio.wait(list(self._durable))
        if self._gated:
            await self._pass_gate()

    async def barrier(self) -> None:
        """Returns once everything submitted before is durable and acknowledged (or
        could not be), however much is submitted meanwhile: while the submitter and the
        gatekeeper run."""
        target = self._enqueued
        while self._submitted < target:
            await asyncio.sleep(0.005)
        if self._durable:
            await asyncio.wait(list(self._durable))
        target = self._gate_queued
        while self._gate_done < target:
            await asyncio.sleep(0.005)

    async def gatekeeper(self) -> None:
        """Acknowledges durable messages once the gate is passed (the gate's turn for each
        round of them: one hand-over of the state covers all)."""
        while True:
            await self._gate_wanted.wait()
            self._gate_wanted.clear()
            await self._pass_gate()

    async def _pass_gate(self) -> None:
        assert self.gate is not None
        rounds = list(self._gated)
        self._gated.clear()
        try:
            await self.gate()
        except Exception as exc:
            # Not handed over: not acknowledged. Tried again shortly; after a reconnect
            # (a new generation) settle() leaves them to the broker, which sends them again.
            log.warning("could not hand the alarm state over (%s); %d rounds of messages "
                        "wait to be acknowledged", exc, len(rounds))
            self._gated.extendleft(reversed(rounds))
            await asyncio.sleep(GATE_RETRY_S)
            self._gate_wanted.set()
            return
        for received in rounds:
            self._settled(received)
        self._gate_done += len(rounds)

    async def _submit(self, lines: Sequence[str | EncodedLines], received: Sequence[Held],
                      checkpoint: Checkpoint) -> None:
        try:
            done = await self.sink.submit(lines)
        except Exception:
            log.exception("storage refused %d lines; %d messages stay unacknowledged",
                          line_count(lines), len(received))
            if checkpoint is not None:
                checkpoint(False)
            return
        fut = asyncio.ensure_future(done)
        self._durable.add(fut)
        fut.add_done_callback(lambda f: self._durable_done(f, received, checkpoint))

    def _durable_done(self, fut: asyncio.Future[Any], received: Sequence[Held],
                      checkpoint: Checkpoint) -> None:
        self._durable.discard(fut)
        try:
            self._acknowledge(fut, received, checkpoint)
        except Exception as exc:  # a bug: acknowledgements would stop for good
            self._on_bug("acknowledge", exc)

    def _acknowledge(self, fut: asyncio.Future[Any], received: Sequence[Held],
                     checkpoint: Checkpoint) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            # Not durable: leave the messages unacknowledged so the broker sends them
            # again after a reconnect.
            log.error("storage failed (%s); %d messages stay unacknowledged",
                      fut.exception(), len(received))
            if checkpoint is not None:
                checkpoint(False)
            return
        if checkpoint is not None:
            checkpoint(not received or (self.conn is not None and all(
                r.generation == self.generation for r in received)))
        if self.gate is not None:
            self._gated.append(received)
            self._gate_queued += 1
            self._gate_wanted.set()
            return
        self._settled(received)

    def _settled(self, received: Sequence[Held]) -> None:
        self.settle(received)
        self.acked += len(received)
        if self.count < self.limit:
            self.room.set()
