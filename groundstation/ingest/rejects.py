"""Rejected input: counted by reason, kept in the quarantine (the last few in memory, the
rest on disk through the quarantine sink), and logged.

Whole messages are rejected by the envelope's reason (core/envelope.py); single frames by
the sync or counter check, without costing their neighbours. A bad frame the broker sends
again (a QoS 1 redelivery) counts once: the second time it is only a duplicate.

The log is bounded under a flood: per reason, the first rejection of a LOG_INTERVAL_S
window is logged with its detail, the rest of the window are summed up in one line when the
window closes (at the next rejection of that reason, or by `flush_log`, which the service
calls with its self-telemetry). At most two lines per reason per window, whatever the rate.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from groundstation.core import topics
from groundstation.core.decom import DecodedBatch
from groundstation.ingest.stream import Quarantined, Stream

log = logging.getLogger("groundstation.ingest")

PAYLOAD_KEPT = 65536  # bytes of a rejected message kept in the quarantine
LOG_INTERVAL_S = 10.0
DETAIL_LOGGED = 300  # characters of a rejection's detail in the log


class _Window:
    __slots__ = ("detail", "more", "start", "topic")

    def __init__(self, start: float, topic: str, detail: str) -> None:
        self.start, self.topic, self.detail, self.more = start, topic, detail, 0


class Rejects:
    def __init__(self, keep: int = 200,
                 sink: Callable[[Quarantined], None] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[Quarantined] = deque(maxlen=keep)
        self.sink = sink
        self._windows: dict[str, _Window] = {}
        self.clock: Callable[[], float] = time.monotonic

    def message(self, topic: str, reason: str, detail: str, payload: bytes, now: int) -> None:
        """A whole message rejected."""
        self.counts[reason] += 1
        self._keep(Quarantined(topic, reason, detail, payload[:PAYLOAD_KEPT], now))
        self._log(reason, topic, detail)

    def _log(self, reason: str, topic: str, detail: str) -> None:
        t = self.clock()
        w = self._windows.get(reason)
        if w is not None and t - w.start < LOG_INTERVAL_S:
            w.more += 1
            w.topic, w.detail = topic, detail
            return
        if w is not None:
            self._summary(reason, w)
        self._windows[reason] = _Window(t, topic, detail)
        log.warning("quarantined a message on %s: %s (%s)", topic, detail[:DETAIL_LOGGED],
                    reason)

    def _summary(self, reason: str, w: _Window) -> None:
        if w.more:
            log.warning("quarantined %d more messages as %s in %.0f s (%d in all); the last "
                        "on %s: %s", w.more, reason, LOG_INTERVAL_S, self.counts[reason],
                        w.topic, w.detail[:DETAIL_LOGGED])

    def flush_log(self, final: bool = False) -> None:
        """Sum up the windows that have closed (final: all of them, at shutdown)."""
        t = self.clock()
        for reason, w in list(self._windows.items()):
            if final or t - w.start >= LOG_INTERVAL_S:
                self._summary(reason, w)
                del self._windows[reason]

    def frames(self, s: Stream, batch: DecodedBatch, frames: np.ndarray,
               times: np.ndarray) -> None:
        """Frames of a batch that failed the sync or counter check: counted and kept,
        never decoded."""
        bad = ~batch.good
        if batch.duplicate is not None:
            bad &= ~batch.duplicate  # received before: counted and kept then
        if not bad.any():
            return
        sync_ok, _, _ = s.decoder.decom.check_frames(frames[bad])
        topic = topics.telemetry(s.vehicle, s.definition.stream, source=s.source)
        now = time.time_ns()
        for i, ok in zip(np.flatnonzero(bad), sync_ok, strict=True):
            reason = "bad_counter" if ok else "bad_sync"
            self.counts[reason] += 1
            self._keep(Quarantined(topic, reason, f"frame at {int(times[i])} ns, counter "
                                   f"{int(batch.counter[i])}: {reason.replace('_', ' ')}",
                                   bytes(frames[i]), now))

    def _keep(self, q: Quarantined) -> None:
        self.recent.append(q)
        if self.sink is not None:
            self.sink(q)

    def close(self) -> None:
        self.flush_log(final=True)
        # The quarantine's writer holds a lock on its directory: a new ingest on the
        # same archive (a restart in the same process) must be able to take it.
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
