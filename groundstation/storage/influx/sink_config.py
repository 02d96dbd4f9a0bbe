"""What the InfluxDB sink is given and what it reports: ``SinkConfig``, its settings (the
ingest fills them from the service configuration), and ``SinkStats``, a snapshot of its
counters for self-telemetry. The sink itself: ``groundstation.storage.influx.sink``."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from groundstation.storage.influx.lineprotocol import EncodedLines

__all__ = ["LineSink", "SinkConfig", "SinkStats"]


class LineSink(Protocol):
    """Where line protocol goes: the InfluxDB sink, or a stand-in without a database.
    submit() may wait (backpressure) and returns an awaitable that completes once the
    lines are durable (in the database, or spooled to disk)."""

    async def start(self) -> Any: ...

    async def submit(self, lines: Sequence[str | EncodedLines]) -> Awaitable[Any]: ...

    async def close(self, timeout: float = 30.0) -> None: ...


@dataclass
class SinkConfig:
    batch_max_lines: int = 5000  # ~what InfluxDB recommends per request
    batch_max_bytes: int = 1 << 20  # uncompressed line protocol per request
    flush_interval_s: float = 0.1  # the longest a line waits for companions
    # A batch this large goes as soon as a writer is free, without waiting out
    # flush_interval_s: a database left idle while lines wait is throughput lost. Only a
    # burst (over ~10 MB/s) fills it within the interval; at InfluxDB 1.6, requests of
    # ~1,000 Apollo lines (1.1 MB) cost no more a line than of 5,000, within the noise.
    batch_ready_bytes: int = 1 << 20
    max_queue_bytes: int = 16 << 20  # in-memory bound; submit blocks beyond it
    concurrency: int = 1  # live writes in flight (more than 1 relaxes spool order)
    # gzip live write requests: off costs no CPU on either side (the right choice when the
    # database is on this host or a fast network); on sends ~8x fewer bytes.
    compress: bool = True
    gzip_level: int = 1  # fast: most of the gain, little CPU
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0  # backoff cap; also how long the DB may stay undetected as up
    retry_after_max_s: float = 300.0  # never honour a Retry-After longer than this
    spool_after_s: float = 1.0  # how long a live batch is retried in memory before spooling
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 8 << 20  # at most spool_max_bytes / 8 (see segment_bytes)
    on_spool_full: Literal["block", "drop_oldest"] = "block"
    fsync: bool = True
    drain_max_records: int = 256  # spool records per drain request
    bisect_max_requests: int = 64  # per rejected batch, to isolate bad lines
    deadletter_path: str | None = None  # default: <spool_dir>/deadletter.lp
    latency_window: int = 1024  # successful writes the latency percentiles cover
    # When the database (or bucket) is missing while running: create it again (else the
    # data wait in the spool until someone does).
    create_missing: bool = False

    def validate(self) -> None:
        problems = []
        if self.batch_max_lines < 1 or self.batch_max_bytes < 1024:
            problems.append("batch_max_lines must be >= 1 and batch_max_bytes >= 1024")
        if self.max_queue_bytes < self.batch_max_bytes:
            problems.append("max_queue_bytes must be >= batch_max_bytes")
        if self.spool_segment_bytes < 4096:
            problems.append("spool_segment_bytes must be >= 4096")
        if self.spool_max_bytes < 2 * self.batch_max_bytes:
            problems.append("spool_max_bytes must be >= 2 x batch_max_bytes "
                            "(a batch must always fit)")
        if self.on_spool_full not in ("block", "drop_oldest"):
            problems.append("on_spool_full must be 'block' or 'drop_oldest'")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if problems:
            raise ValueError("bad InfluxDB sink configuration: " + "; ".join(problems))

    @property
    def segment_bytes(self) -> int:
        """The segment size used: at most 1/8 of the bound, so that space is given back in
        small steps as the spool drains (a segment is deleted only once fully sent)."""
        return max(4096, min(self.spool_segment_bytes, self.spool_max_bytes // 8))


@dataclass
class SinkStats:
    """A snapshot for self-telemetry. Counters are totals since the sink started."""

    api: str
    db_up: bool
    lines_submitted: int
    lines_written: int  # accepted by InfluxDB (live and drained)
    batches_written: int  # successful write requests
    bytes_sent: int  # bytes of successful requests, as sent (gzip'd or plain)
    retries: int  # re-attempts of the same data
    failures: dict[str, int]  # failed requests by kind: connection, http_503, http_400...
    write_latency_last_s: float | None
    write_latency_p50_s: float | None
    write_latency_p99_s: float | None
    queue_bytes: int  # in memory, submitted and not yet durable
    queue_bytes_peak: int
    queue_bytes_max: int  # the bound
    queue_chunks: int
    submit_blocked: int  # submit calls that had to wait for room
    submit_blocked_s: float
    lines_spooled: int
    lines_drained: int
    spool_bytes: int
    spool_bytes_peak: int
    spool_bytes_max: int
    spool_segments: int
    spool_pending_lines: int
    spool_full: bool
    spool_full_events: int
    spool_torn_records: int
    spool_dropped_lines: int  # drop_oldest only
    dead_letter_lines: int
    dead_letter_entries: int
    lines_failed: int  # futures failed (SinkClosedError): not durable, not acknowledged

    def fields(self) -> dict[str, int | float | bool]:
        """Flat numeric fields, e.g. for a line of self-telemetry."""
        out: dict[str, int | float | bool] = {}
        for k, v in asdict(self).items():
            if k == "failures":
                out.update({f"failures_{kind}": n for kind, n in v.items()})
            elif isinstance(v, int | float | bool):
                out[k] = v
        return out
