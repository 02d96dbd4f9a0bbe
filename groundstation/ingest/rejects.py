"""Rejected input: counted by reason, kept in the quarantine (the last few in memory, the
rest on disk through the quarantine sink), and logged.

Whole messages are rejected by the envelope's reason (core/envelope.py); single frames by
the sync or counter check, without costing their neighbours.
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


class Rejects:
    def __init__(self, keep: int = 200,
                 sink: Callable[[Quarantined], None] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[Quarantined] = deque(maxlen=keep)
        self.sink = sink

    def message(self, topic: str, reason: str, detail: str, payload: bytes, now: int) -> None:
        """A whole message rejected."""
        self.counts[reason] += 1
        self._keep(Quarantined(topic, reason, detail, payload[:PAYLOAD_KEPT], now))
        log.warning("quarantined a message on %s: %s (%s)", topic, detail, reason)

    def frames(self, s: Stream, batch: DecodedBatch, frames: np.ndarray,
               times: np.ndarray) -> None:
        """Frames of a batch that failed the sync or counter check: counted and kept,
        never decoded."""
        sync_ok, _, _ = s.decoder.decom.check_frames(frames[~batch.good])
        topic = topics.telemetry(s.vehicle, s.definition.stream, source=s.source)
        now = time.time_ns()
        for i, ok in zip(np.flatnonzero(~batch.good), sync_ok, strict=True):
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
        # The quarantine's writer holds a lock on its directory: a new ingest on the
        # same archive (a restart in the same process) must be able to take it.
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
