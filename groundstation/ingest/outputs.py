"""What the ingest publishes for consoles besides alarms: processed parameters at the
display rate, its own health, and each stream's link quality; and the outbox they all go
through to the broker.

The outbox is bounded: when it is full the oldest console update is the one to lose, never
telemetry or storage (those do not go through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import numpy as np

from groundstation.core import messages, topics
from groundstation.ingest.stream import Stream
from groundstation.storage.influx.lineprotocol import link_line, self_line

log = logging.getLogger("groundstation.ingest")

OUTBOX_MAX = 10_000


class Outbox:
    """Messages for the broker, in order; `rejected` counts the ones dropped for room."""

    def __init__(self, rejected: Counter[str], maxsize: int = OUTBOX_MAX) -> None:
        self._queue: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue(maxsize=maxsize)
        self._rejected = rejected

    def publish(self, topic: str, payload: messages.Message, retain: bool = False) -> None:
        self._put(topic, payload.to_json(), retain, count=True)

    def clear_retained(self, topic: str) -> None:
        self._put(topic, b"", True, count=False)

    def _put(self, topic: str, data: bytes, retain: bool, count: bool) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            if count:
                self._rejected["outbox_overflow"] += 1
        self._queue.put_nowait((topic, data, retain))

    async def get(self) -> tuple[str, bytes, bool]:
        return await self._queue.get()

    def qsize(self) -> int:
        return self._queue.qsize()


# --- display -------------------------------------------------------------------------------


def display_updates(streams: Iterable[Stream]) -> Iterator[tuple[str, messages.ParamsUpdate]]:
    """The newest values of each stream that has new ones since the last call."""
    for s in list(streams):
        if s.latest_dirty:
            s.latest_dirty = False
            yield topics.parameters(s.vehicle, s.source), messages.ParamsUpdate(
                vehicle=s.vehicle, source=topics.Source.parse(s.source),
                time_ns=s.last_frame_ns,
                values={k: (t, v if np.isfinite(v) else None, lim)
                        for k, (t, v, lim) in s.latest.items()})


# --- link quality --------------------------------------------------------------------------


def link_stats(s: Stream) -> messages.LinkStats:
    d = s.decoder
    lat = sorted(s.latency_ns)
    return messages.LinkStats(
        vehicle=s.vehicle, source=topics.Source.parse(s.source),
        frames_good=d.frames_good, sync_errors=d.frames_bad_sync,
        counter_errors=d.frames_bad_counter, frames_missing=d.frames_missing,
        frames_duplicate=d.frames_duplicate, frames_recovered=d.frames_recovered,
        seq_jumps=d.seq_jumps, last_frame_ns=s.last_frame_ns,
        latency_ms_p50=lat[len(lat) // 2] / 1e6 if lat else None,
        latency_ms_max=lat[-1] / 1e6 if lat else None)


# A frame stamped within this of its receive time comes from a real-time clock.
REALTIME_NS = 300 * 10**9
# The ship's own clock is modelled by the promptest frame of this last stretch ...
CLOCK_WINDOW_NS = 60 * 10**9
# ... and set again after a silence this long (loss of signal, a pause, a seek).
CLOCK_RESET_NS = 2 * 10**9


def note_latency(s: Stream, frame_ns: int, received_ns: int) -> None:
    """A live batch arrived: how late its newest frame was received.

    A sender stamping frames with a real-time clock (the frame time within REALTIME_NS of
    the receive time): the delay is the receive time minus the frame time, the whole
    link's delay. A sender on mission time (the simulators, replay and drills fly 1975)
    has a clock of its own, whose offset from ours is not a delay: the delay is measured
    against that clock, modelled as the smallest offset (receive - frame time) of the
    last CLOCK_WINDOW_NS, i.e. how much later than the promptest recent frame this one
    came (queueing anywhere between the ship's clock and the ingest). Set again after a
    silence. At speeds over 1x the ship's clock runs ahead of ours, and the figure reads
    low by up to (speed - 1) x the time since the promptest frame.
    """
    offset = received_ns - frame_ns
    if -REALTIME_NS <= offset <= REALTIME_NS:
        s.latency_ns.append(offset)
        return
    base = s.latency_base
    if base and received_ns - base[-1][0] > CLOCK_RESET_NS:
        base.clear()
    while base and base[0][0] < received_ns - CLOCK_WINDOW_NS:
        base.popleft()
    while base and base[-1][1] >= offset:
        base.pop()
    base.append((received_ns, offset))
    s.latency_ns.append(offset - base[0][1])


def health(stats: messages.IngestStats, streams: Iterable[Stream]
           ) -> tuple[list[tuple[str, messages.Message]], list[str]]:
    """The ingest's health and each stream's link quality: the retained messages to
    publish, and the lines to store."""
    published: list[tuple[str, messages.Message]] = [(topics.ingest_stats(), stats)]
    lines = [self_line(stats)]
    by_vehicle: dict[tuple[str, str], list[Stream]] = {}
    for s in streams:
        by_vehicle.setdefault((s.source, s.vehicle), []).append(s)
    for (source, vehicle), group in by_vehicle.items():
        link = vehicle_link_stats(group)
        published.append((topics.ingest_link(vehicle, source), link))
        lines.append(link_line(source, vehicle, link))
    return published, lines


def vehicle_link_stats(group: list[Stream]) -> messages.LinkStats:
    """One vehicle's link quality over the formats its downlink came in (Apollo's high
    and low bit rate): the counters added up, the time and latency of the newest stream,
    which `stream` names."""
    newest = max(group, key=lambda s: s.last_frame_ns)
    link = link_stats(newest)
    if len(group) == 1:
        return link.model_copy(update={"stream": newest.definition.stream})
    counters = ("frames_good", "sync_errors", "counter_errors", "frames_missing",
                "frames_duplicate", "frames_recovered", "seq_jumps")
    totals = {k: sum(getattr(link_stats(s), k) for s in group) for k in counters}
    return link.model_copy(update={**totals, "stream": newest.definition.stream})


# --- the ingest's own health ---------------------------------------------------------------


def stats_message(*, counters: dict[str, int], rejected: Counter[str],
                  decode_seconds: Iterable[float], sink: Any,
                  pending_frames: int, outbox: int, instance: str | None = None
                  ) -> messages.IngestStats:
    decode = sorted(decode_seconds)
    sink_stats = getattr(sink, "stats", None)
    sink_fields = sink_stats() if callable(sink_stats) else None
    if sink_fields is not None and hasattr(sink_fields, "fields"):
        sink_fields = sink_fields.fields()
    return messages.IngestStats(
        time_ns=time.time_ns(), **counters, pending_frames=pending_frames, outbox=outbox,
        rejected=dict(rejected), rejected_total=sum(rejected.values()),
        decode_ms_p50=1000 * decode[len(decode) // 2] if decode else None,
        decode_ms_max=1000 * decode[-1] if decode else None,
        sink=sink_fields, instance=instance)


# --- the loops -----------------------------------------------------------------------------


async def every(period: float, step: Callable[[], Awaitable[None] | None], what: str,
                stop: asyncio.Event) -> None:
    """Run `step` every `period` seconds until stop is set; a failed step is logged and
    the next one runs on time (a console update must never stop the service)."""
    while not stop.is_set():
        await asyncio.sleep(period)
        try:
            result = step()
            if result is not None:
                await result
        except Exception:
            log.exception("%s failed; next in %.1f s", what, period)
