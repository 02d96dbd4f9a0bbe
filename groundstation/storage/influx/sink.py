"""The InfluxDB sink: batched, compressed, retried writes that lose nothing in an outage.

The ingest hands line-protocol lines to `InfluxSink.submit`, which returns a future that
completes once the lines are *durable*: accepted by InfluxDB, or appended (and fsynced) to
the on-disk spool, or, for lines InfluxDB refuses as malformed, written to the dead-letter
file. The ingest acknowledges its MQTT messages only then, so a crash at any moment loses
nothing the broker does not still hold.

    sink = InfluxSink(make_backend(url, database="groundstation"), "/var/spool/gs-influx")
    await sink.start()
    fut = await sink.submit(lines)      # waits only while the in-memory queue is full
    fut.add_done_callback(lambda f: ack(message) if f.exception() is None else None)
    ...
    await sink.close()                  # flushes memory to InfluxDB, or to the spool

Path of a batch
  Submitted lines are encoded once into chunks (bytes) and queued in memory; the queue is
  bounded in bytes (`max_queue_bytes`, counting chunks until they are durable, in-flight
  ones included), and `submit` waits while it is full: backpressure. A writer task takes
  chunks up to `batch_max_lines` / `batch_max_bytes`, or what arrived within
  `flush_interval_s` of the oldest one (at once when they already make
  `batch_ready_bytes`: no idle database while lines wait), gzips them (unless
  `compress` is off) and POSTs them.
  - 2xx: durable.
  - No answer, 5xx, 429, and 404 (the database or bucket does not exist: dropped while
    running, say; an outage until it exists again, never a fault of the lines): retried
    with exponential backoff and jitter (at least Retry-After)
    for up to `spool_after_s`; after that the batch goes to the spool and the sink counts
    the database as down: later batches are spooled at once, without waiting on a dead
    server, until a write succeeds again.
  - Any other 4xx (malformed line, field type conflict, too large): never retried as is.
    400/413/422 batches are split in halves, recursively, to isolate the bad lines (good
    halves are written; a v1 "partial write" already stored the good points, and a rewrite
    of them is idempotent); each isolated bad line, or what is left when the split budget
    is spent, goes to the dead-letter file with InfluxDB's error text, is counted and
    logged. 401/403 (a configuration problem) go there whole. Nothing blocks the queue.

While the database is away, batches go to the spool (`groundstation.storage.spool.Spool`
in `spool_dir`): the gzip body (gzip'd then, whatever `compress` says), fdatasync'ed before the
batch's future completes. A drainer task sends it back oldest first, several records per
request, once the database answers; live data goes straight to InfluxDB meanwhile, so the
consoles see current values at once. At `spool_max_bytes`, `on_spool_full="block"` (the
default) drops nothing: the writer holds the batch in memory, `submit` blocks, the ingest
stops acknowledging and the broker keeps the backlog; `"drop_oldest"` deletes the oldest
segment instead. The spool's format, the fsync policy and both policies in full:
docs/spool-format.md.

Memory is bounded by `max_queue_bytes` of line protocol plus, per writer and for the
drainer, one batch being sent (raw and gzip, each <= `batch_max_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

from groundstation.storage.durable import fsync_file, write_all
from groundstation.storage.influx.backends import WriteBackend, WriteResult
from groundstation.storage.influx.lineprotocol import EncodedLines, line_count
from groundstation.storage.influx.sink_config import SinkConfig, SinkStats
from groundstation.storage.spool import Spool, SpoolRecord, iter_segment

log = logging.getLogger("groundstation.influx_sink")

T = TypeVar("T")
P = ParamSpec("P")

__all__ = [
    "EncodedLines",
    "InfluxSink",
    "SinkClosedError",
    "SinkConfig",
    "SinkStats",
    # The spool's names, for the callers from before it had its own module.
    "Spool",
    "SpoolRecord",
    "iter_segment",
]


class SinkClosedError(RuntimeError):
    """The sink closed before these lines were durable: do not acknowledge them."""


# --------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Ticket:
    future: asyncio.Future[None]
    pending: int
    nlines: int


@dataclass(eq=False)
class _Chunk:
    body: bytes  # line protocol, newline-terminated
    nlines: int
    ticket: _Ticket
    enqueued: float


def _split_encoded(data: bytes, count: int, max_bytes: int, max_lines: int
                   ) -> Iterator[tuple[bytes, int]]:
    """Newline-terminated line protocol in pieces of at most `max_bytes` (a longer line
    alone) and `max_lines`: (piece, its line count). Cut at newlines, found in C."""
    if not data:
        return
    if len(data) <= max_bytes and count <= max_lines:
        yield data, count
        return
    start, end_all = 0, len(data)
    while start < end_all:
        end = end_all
        if end - start > max_bytes:
            cut = data.rfind(b"\n", start, start + max_bytes)
            if cut < start:  # one line longer than max_bytes: alone
                cut = data.find(b"\n", start + max_bytes)
            end = end_all if cut < 0 else cut + 1
        n = data.count(b"\n", start, end)
        if n > max_lines:
            end = start
            for _ in range(max_lines):
                end = data.find(b"\n", end) + 1
            n = max_lines
        yield data[start:end], n
        start = end


def _backoff(attempt: int, initial: float, cap: float) -> float:
    # "Equal jitter": half the exponential delay, plus up to as much again at random, so
    # many clients (or our writer and drainer) do not retry in lockstep.
    delay = min(cap, initial * 2.0 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class InfluxSink:
    """Batches, compresses, retries, spools and dead-letters writes to one InfluxDB."""

    def __init__(self, backend: WriteBackend, spool_dir: str | os.PathLike[str],
                 config: SinkConfig | None = None) -> None:
        self.backend = backend
        self.config = cfg = config or SinkConfig()
        cfg.validate()
        self.spool_dir = Path(spool_dir)
        self.deadletter_path = (Path(cfg.deadletter_path) if cfg.deadletter_path
                                else self.spool_dir / "deadletter.lp")
        self._spool: Spool | None = None
        self._queue: deque[_Chunk] = deque()
        self._queue_bytes = 0  # queued + in flight, until durable
        self._queue_peak = 0
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._changed = asyncio.Event()  # DB came up, or spool space was freed
        self._spooled = asyncio.Event()  # something was appended to the spool
        self._admit: asyncio.Lock | None = None
        self._outstanding: set[asyncio.Future[None]] = set()
        self._inflight: set[_Chunk] = set()
        self._db_down = False
        self._not_before = 0.0  # monotonic time before which no request is sent (429)
        self._closing = False
        self._started = False
        self._writers: list[asyncio.Task[None]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._http: ThreadPoolExecutor | None = None
        self._disk: ThreadPoolExecutor | None = None
        self._latency: deque[float] = deque(maxlen=cfg.latency_window)
        self._failures: Counter[str] = Counter()
        self._n: Counter[str] = Counter()
        self._blocked_s = 0.0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> Self:
        if self._started:
            return self
        cfg = self.config
        self._http = ThreadPoolExecutor(cfg.concurrency + 1, thread_name_prefix="influx-http")
        # One thread for all disk writes: spool appends then happen in submission order.
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="influx-spool")
        try:
            self._spool = await self._on_disk(
                Spool, self.spool_dir, max_bytes=cfg.spool_max_bytes,
                segment_bytes=cfg.segment_bytes,
                fsync=cfg.fsync, on_full=cfg.on_spool_full, name="InfluxDB spool")
        except BaseException:
            self._disk.shutdown()
            self._http.shutdown()
            raise
        self._admit = asyncio.Lock()
        self._writers = [asyncio.create_task(self._writer(), name=f"influx-writer-{i}")
                         for i in range(cfg.concurrency)]
        self._drainer = asyncio.create_task(self._drain_loop(), name="influx-drainer")
        self._started = True
        log.info("InfluxDB sink to %s, spool %s", self.backend.target, self.spool_dir)
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; make everything in memory durable (InfluxDB or spool); stop.

        What cannot be made durable within `timeout` (database down and spool full) has its
        future failed with SinkClosedError, so the ingest does not acknowledge it and the
        broker delivers it again after the restart. The spool is left for the next start.
        """
        if not self._started or self._closing:
            return
        self._closing = True
        self._items.set()
        self._room.set()
        self._changed.set()
        _, pending = await asyncio.wait(self._writers, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        leftovers = list(self._inflight) + list(self._queue)
        self._queue.clear()
        self._inflight.clear()
        for chunk in leftovers:
            self._settle(chunk, SinkClosedError("InfluxDB sink closed before these lines were "
                                                "written or spooled"))
        if leftovers:
            log.error("InfluxDB sink closed with %d line(s) neither written nor spooled; they "
                      "were not acknowledged", sum(c.nlines for c in leftovers))
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        assert self._spool is not None and self._disk is not None and self._http is not None
        await self._on_disk(self._spool.close)
        self._disk.shutdown(wait=True)
        # Not waiting: a cancelled drain request may still be running in its thread, and
        # its outcome no longer matters (it is re-sent from the spool next time).
        self._http.shutdown(wait=False, cancel_futures=True)
        self.backend.close()

    # -- the ingest's side ---------------------------------------------------------

    async def submit(self, lines: Sequence[str | EncodedLines]) -> asyncio.Future[None]:
        """Queue `lines`; return a future that completes once they are durable.

        Awaiting `submit` itself waits only while the in-memory queue is full
        (backpressure). The future's result is None when every line is in InfluxDB, in
        the spool or in the dead-letter file; it fails with SinkClosedError if the sink
        closed first. Lines must be newline-free line protocol with ns timestamps; an
        `EncodedLines` item is many lines already joined and encoded (what the ingest
        submits for a batch of frames: no per-line work here).
        """
        if not self._started or self._closing:
            raise SinkClosedError("InfluxDB sink is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        chunks = list(self._encode(lines))
        nlines = line_count(lines)
        self._n["lines_submitted"] += nlines
        if not chunks:
            future.set_result(None)
            return future
        ticket = _Ticket(future, len(chunks), nlines)
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        assert self._admit is not None
        admitted = 0
        try:
            # FIFO admission: a large submit is not starved by small ones slipping past.
            async with self._admit:
                for body, nlines in chunks:
                    await self._wait_room(len(body))
                    self._queue.append(_Chunk(body, nlines, ticket, time.monotonic()))
                    self._queue_bytes += len(body)
                    self._queue_peak = max(self._queue_peak, self._queue_bytes)
                    admitted += 1
                    self._items.set()
        except BaseException:
            # Cancelled (or closed) while waiting for room: the chunks already queued will
            # still be written, but the caller has no future to ack on, so cancel it.
            ticket.pending -= len(chunks) - admitted
            if not future.done():
                future.cancel()
            raise
        return future

    async def write(self, lines: Sequence[str | EncodedLines]) -> None:
        """Submit and wait until durable."""
        await (await self.submit(lines))

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable (or failed)."""
        if self._outstanding:
            # asyncio.wait, not gather: cancelling flush() must not cancel the futures
            # the ingest is waiting on to acknowledge.
            await asyncio.wait(list(self._outstanding))

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until the memory queue and the spool are empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            await self.flush()
            assert self._spool is not None
            if not self._queue and not self._inflight and self._spool.empty():
                await self._on_disk(lambda: None)  # let a commit in progress finish
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    def _encode(self, lines: Sequence[str | EncodedLines]) -> Iterator[tuple[bytes, int]]:
        """Chunks of at most one batch each (so that the queue bound holds for every
        chunk): (newline-terminated line protocol, its line count)."""
        cfg = self.config
        if not any(isinstance(x, EncodedLines) for x in lines):
            yield from self._encode_str(lines)  # type: ignore[arg-type]
            return
        run: list[str] = []
        for item in lines:
            if isinstance(item, EncodedLines):
                yield from self._encode_str(run)
                run = []
                yield from _split_encoded(item.data, item.count, cfg.batch_max_bytes,
                                          cfg.batch_max_lines)
            else:
                run.append(item)
        yield from self._encode_str(run)

    def _encode_str(self, lines: Sequence[str]) -> Iterator[tuple[bytes, int]]:
        cfg = self.config
        total = sum(map(len, lines)) + len(lines)
        if total <= cfg.batch_max_bytes and len(lines) <= cfg.batch_max_lines:
            if lines:
                yield ("\n".join(lines) + "\n").encode(), len(lines)
            return
        # Bigger than one batch: split, so that the queue bound holds for every chunk.
        part: list[str] = []
        size = 0
        for line in lines:
            if part and (size + len(line) + 1 > cfg.batch_max_bytes
                         or len(part) >= cfg.batch_max_lines):
                yield ("\n".join(part) + "\n").encode(), len(part)
                part, size = [], 0
            part.append(line)
            size += len(line) + 1
        if part:
            yield ("\n".join(part) + "\n").encode(), len(part)

    async def _wait_room(self, size: int) -> None:
        bound = self.config.max_queue_bytes
        # An empty queue always admits one chunk, so a line bigger than the bound (a
        # misconfiguration) slows things down instead of deadlocking.
        if self._queue_bytes + size <= bound or self._queue_bytes == 0:
            return
        self._n["submit_blocked"] += 1
        started = time.monotonic()
        try:
            while self._queue_bytes + size > bound and self._queue_bytes > 0:
                if self._closing:
                    raise SinkClosedError("InfluxDB sink closed while waiting for room")
                self._room.clear()
                await self._room.wait()
        finally:
            self._blocked_s += time.monotonic() - started

    def _settle(self, chunk: _Chunk, error: BaseException | None = None) -> None:
        """A chunk is durable (or failed): release its memory and maybe its ticket."""
        self._inflight.discard(chunk)
        self._queue_bytes -= len(chunk.body)
        self._room.set()
        ticket = chunk.ticket
        ticket.pending -= 1
        if ticket.future.done():
            return
        if error is not None:
            self._n["lines_failed"] += ticket.nlines
            ticket.future.set_exception(error)
        elif ticket.pending == 0:
            ticket.future.set_result(None)

    # -- writers -------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            self._inflight.update(batch)
            error: Exception | None = None
            try:
                await self._deliver(batch)
            except Exception as exc:
                # E.g. the spool or dead-letter file cannot be written. The lines are not
                # durable: fail their futures (the ingest does not ack, the broker
                # redelivers) and keep the writer alive for the next batch.
                log.exception("InfluxDB sink could not make a batch durable")
                self._failures[f"internal_{type(exc).__name__}"] += 1
                error = exc
            for chunk in batch:
                self._settle(chunk, error)

    async def _next_batch(self) -> list[_Chunk] | None:
        cfg = self.config
        while not self._queue:
            if self._closing:
                return None
            self._items.clear()
            await self._items.wait()
        batch = [self._queue.popleft()]
        size, nlines = len(batch[0].body), batch[0].nlines
        deadline = batch[0].enqueued + cfg.flush_interval_s
        while True:
            while self._queue:
                nxt = self._queue[0]
                if (size + len(nxt.body) > cfg.batch_max_bytes
                        or nlines + nxt.nlines > cfg.batch_max_lines):
                    return batch
                batch.append(self._queue.popleft())
                size += len(nxt.body)
                nlines += nxt.nlines
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing or size >= cfg.batch_ready_bytes:
                return batch
            self._items.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._items.wait(), remaining)

    async def _deliver(self, batch: list[_Chunk]) -> None:
        """Make one batch durable: written, dead-lettered, or spooled. Returns when it is."""
        cfg = self.config
        raw = b"".join(c.body for c in batch)
        nlines = sum(c.nlines for c in batch)
        gz: bytes | None = None
        deadline = time.monotonic() + cfg.spool_after_s
        attempt = 0
        probe = not self._db_down
        while True:
            if probe:
                wait = self._not_before - time.monotonic()
                if wait > 0 and time.monotonic() + wait < deadline:
                    await asyncio.sleep(wait)
                if self._not_before <= time.monotonic():
                    gz, res, sent = await self._post(raw, gz)
                    if res.ok:
                        self._written(nlines, sent)
                        return
                    if not res.retryable:
                        await self._rejected(raw, res, "live")
                        return
                    attempt += 1
                    delay = self._retry_delay(attempt, res)
                    if time.monotonic() + delay < deadline and not self._closing:
                        self._n["retries"] += 1
                        await asyncio.sleep(delay)
                        continue
                    self._mark_down(res)
            # The database is down (or has not answered for spool_after_s): to disk.
            if gz is None:
                gz = await self._compress(raw)
            if await self._spool_append(gz, nlines):
                return
            # Spool full and policy "block": keep the batch, wait for room or the DB.
            attempt += 1
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(),
                                       _backoff(attempt, cfg.retry_initial_s, cfg.retry_max_s))
            probe = True
            deadline = 0.0  # one try per wakeup, then back to the spool

    async def _spool_append(self, gz: bytes, nlines: int) -> bool:
        spool = self._spool
        assert spool is not None
        full_events, dropped = spool.full_events, spool.dropped_lines
        if not await self._on_disk(spool.append, gz, nlines):
            if spool.full_events > full_events:
                log.error("InfluxDB sink: the spool is full: holding data in memory; the "
                          "ingest is backpressured")
            return False
        if spool.dropped_lines > dropped:
            log.error("InfluxDB sink: %d spooled lines dropped to make room were never "
                      "written; replay them from the raw archive", spool.dropped_lines - dropped)
        self._n["lines_spooled"] += nlines
        self._spooled.set()
        return True

    def _retry_delay(self, attempt: int, res: WriteResult) -> float:
        cfg = self.config
        delay = _backoff(attempt, cfg.retry_initial_s, cfg.retry_max_s)
        if res.retry_after is not None:
            honoured = min(res.retry_after, cfg.retry_after_max_s)
            # The server asked everybody (the drainer too) to stay away that long.
            self._not_before = max(self._not_before, time.monotonic() + honoured)
            delay = max(delay, honoured)
        return delay

    def _mark_down(self, res: WriteResult) -> None:
        if not self._db_down:
            self._db_down = True
            if res.missing_target:
                log.error("InfluxDB %s: the database (or bucket) is missing (%s: %s): "
                          "spooling to %s until it exists%s", self.backend.target, res.kind,
                          res.error, self.spool_dir,
                          "; creating it again" if self.config.create_missing else
                          "; create it again")
            else:
                log.warning("InfluxDB %s unavailable (%s: %s): spooling to %s",
                            self.backend.target, res.kind, res.error, self.spool_dir)

    def _mark_up(self) -> None:
        if self._db_down:
            self._db_down = False
            assert self._spool is not None
            log.info("InfluxDB %s is back: writing live data, draining %d spooled lines",
                     self.backend.target, self._spool.pending_lines)
        self._changed.set()

    def _written(self, nlines: int, nbytes: int) -> None:
        self._n["lines_written"] += nlines
        self._n["batches_written"] += 1
        self._n["bytes_sent"] += nbytes
        self._mark_up()

    # -- HTTP ----------------------------------------------------------------------

    async def _compress(self, raw: bytes) -> bytes:
        assert self._http is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._http, gzip.compress, raw, self.config.gzip_level)

    async def _rejoin(self, records: Sequence[SpoolRecord]) -> bytes:
        # Concatenated gzip members are a valid gzip stream, and Go's reader (InfluxDB
        # 1.x/2.x) reads them all; but a server or proxy that stops after the first
        # member would answer 204 having dropped the rest. One recompression per drain
        # request is cheap insurance against that silent loss.
        assert self._http is not None
        level = self.config.gzip_level
        payloads = [r.payload for r in records]
        return await asyncio.get_running_loop().run_in_executor(
            self._http,
            lambda: gzip.compress(b"".join(gzip.decompress(p) for p in payloads), level))

    async def _post(self, raw: bytes, gz: bytes | None
                    ) -> tuple[bytes | None, WriteResult, int]:
        """Send `gz` if given, else `raw`, gzip'd first when `compress` is on; in a worker
        thread. Returns the gzip body if there is one (what the spool takes), the outcome,
        and the bytes sent."""
        assert self._http is not None
        level = self.config.gzip_level
        compress = self.config.compress
        backend = self.backend

        def work() -> tuple[bytes | None, WriteResult, int, float]:
            body = gz if gz is not None else gzip.compress(raw, level) if compress else None
            t0 = time.perf_counter()
            if body is None:
                res = backend.post(raw, compressed=False)
            else:
                res = backend.post(body, compressed=True)
            return body, res, len(raw if body is None else body), time.perf_counter() - t0

        body, res, sent, latency = await asyncio.get_running_loop().run_in_executor(
            self._http, work)
        if res.ok:
            self._latency.append(latency)
        else:
            self._failures[res.kind] += 1
            log.debug("InfluxDB write failed: %s %s", res.kind, res.error)
        return body, res, sent

    # -- rejected batches ----------------------------------------------------------

    async def _rejected(self, raw: bytes, res: WriteResult, origin: str) -> None:
        """A 4xx other than 429: isolate the bad lines by bisection, dead-letter them."""
        cfg = self.config
        lines = [ln for ln in raw.split(b"\n") if ln]
        log.error("InfluxDB refused a %s batch of %d lines (%s): %s", origin, len(lines),
                  res.kind, res.error)
        if res.status not in (400, 413, 422):
            # Auth, missing database...: no line is to blame; keep them all, with why.
            await self._dead_letter(lines, res, "whole batch")
            return
        budget = cfg.bisect_max_requests
        work: deque[tuple[list[bytes], WriteResult]] = deque([(lines, res)])
        while work:
            part, why = work.popleft()
            if len(part) == 1:
                await self._dead_letter(part, why, "isolated")
                continue
            if budget <= 0:
                await self._dead_letter(part, why, "not isolated: split budget spent")
                continue
            mid = len(part) // 2
            for half in (part[:mid], part[mid:]):
                budget -= 1
                body = b"\n".join(half) + b"\n"
                gz, r, sent = await self._post(body, None)
                if r.ok:
                    self._written(len(half), sent)
                elif not r.retryable:
                    work.append((half, r))
                elif not await self._spool_append(
                        gz if gz is not None else await self._compress(body), len(half)):
                    # The database went away mid-split and the spool is full: the
                    # dead-letter file is still durable, and says why.
                    await self._dead_letter(half, r, f"unsent during split ({why.error})")

    async def _dead_letter(self, lines: list[bytes], res: WriteResult, note: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        reason = " ".join(res.error.split())  # one comment line, whatever InfluxDB sent
        # Line-protocol comments: the file can be fixed up and re-imported as it is.
        entry = (f"# {stamp} {self.backend.target} {res.kind} ({note}, {len(lines)} lines): "
                 f"{reason}\n").encode() + b"\n".join(lines) + b"\n"
        await self._on_disk(self._append_dead_letter, entry)
        self._n["dead_letter_lines"] += len(lines)
        self._n["dead_letter_entries"] += 1
        log.error("InfluxDB rejected %d line(s) (%s, %s): %s; kept in %s", len(lines),
                  res.kind, note, reason, self.deadletter_path)

    def _append_dead_letter(self, entry: bytes) -> None:
        self.deadletter_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.deadletter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            write_all(fd, entry)
            if self.config.fsync:
                fsync_file(fd, data_only=True)
        finally:
            os.close(fd)

    # -- draining the spool ----------------------------------------------------------

    async def _drain_loop(self) -> None:
        cfg = self.config
        spool = self._spool
        assert spool is not None
        attempt = 0
        while True:
            try:
                attempt = await self._drain_once(spool, attempt)
            except Exception as exc:
                # Nothing is committed, so the records are sent again on the next round.
                log.exception("InfluxDB sink: draining the spool failed")
                self._failures[f"internal_{type(exc).__name__}"] += 1
                await asyncio.sleep(cfg.retry_max_s)

    async def _drain_once(self, spool: Spool, attempt: int) -> int:
        """One round of the drainer; returns the retry attempt count for the next round."""
        cfg = self.config
        # Cleared before looking, so an append finishing meanwhile is not missed.
        self._spooled.clear()
        # Bounded like a live batch: by lines, and by compressed bytes (a quarter of the
        # raw bound: line protocol compresses at least that well).
        records = await self._on_disk(spool.peek, cfg.drain_max_records,
                                      cfg.batch_max_bytes // 4, cfg.batch_max_lines)
        if not records:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), 1.0)
            return attempt
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        gz = records[0].payload if len(records) == 1 else await self._rejoin(records)
        nlines = sum(r.nlines for r in records)
        _, res, _ = await self._post(b"", gz)
        if res.retryable:
            # The drainer is the sink's probe while the database is down.
            self._mark_down(res)
            if res.missing_target and self.config.create_missing:
                await self._create_target()
            self._n["retries"] += 1
            await asyncio.sleep(self._retry_delay(attempt + 1, res))
            return attempt + 1
        if res.ok:
            self._written(nlines, len(gz))
            self._n["lines_drained"] += nlines
        else:
            await self._rejected(gzip.decompress(gz), res, "spooled")
        await self._on_disk(spool.commit, records)
        self._changed.set()  # space may have been freed for a blocked writer
        return 0

    async def _create_target(self) -> None:
        create = getattr(self.backend, "create_target", None)
        if create is None:
            return
        assert self._http is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._http, create)
        except Exception as exc:
            log.error("InfluxDB %s: could not create the missing database: %s",
                      self.backend.target, exc)
            return
        log.warning("InfluxDB %s: created the missing database again", self.backend.target)

    # -- helpers -------------------------------------------------------------------

    async def _on_disk(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        assert self._disk is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._disk, lambda: fn(*args, **kwargs))

    def stats(self) -> SinkStats:
        spool = self._spool
        lat = sorted(self._latency)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return SinkStats(
            api=self.backend.api,
            db_up=not self._db_down,
            lines_submitted=self._n["lines_submitted"],
            lines_written=self._n["lines_written"],
            batches_written=self._n["batches_written"],
            bytes_sent=self._n["bytes_sent"],
            retries=self._n["retries"],
            failures=dict(self._failures),
            write_latency_last_s=self._latency[-1] if self._latency else None,
            write_latency_p50_s=pct(0.5),
            write_latency_p99_s=pct(0.99),
            queue_bytes=self._queue_bytes,
            queue_bytes_peak=self._queue_peak,
            queue_bytes_max=self.config.max_queue_bytes,
            queue_chunks=len(self._queue),
            submit_blocked=self._n["submit_blocked"],
            submit_blocked_s=self._blocked_s,
            lines_spooled=self._n["lines_spooled"],
            lines_drained=self._n["lines_drained"],
            spool_bytes=spool.bytes if spool else 0,
            spool_bytes_peak=spool.peak_bytes if spool else 0,
            spool_bytes_max=self.config.spool_max_bytes,
            spool_segments=spool.segments if spool else 0,
            spool_pending_lines=spool.pending_lines if spool else 0,
            spool_full=spool.full if spool else False,
            spool_full_events=spool.full_events if spool else 0,
            spool_torn_records=spool.torn_records if spool else 0,
            spool_dropped_lines=spool.dropped_lines if spool else 0,
            dead_letter_lines=self._n["dead_letter_lines"],
            dead_letter_entries=self._n["dead_letter_entries"],
            lines_failed=self._n["lines_failed"],
        )
