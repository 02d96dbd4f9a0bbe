"""Giving memory back once a burst is over.

The ingest keeps freed large buffers for reuse (groundstation/malloc_tuning.py: glibc's
trim threshold raised to 256 MB, which keeps batch decoding fast), so after a burst (a
flood of messages, a replay at max speed) the heap it grew to stays allocated. Once the
ingest has been idle for IDLE_S after such a burst, a full garbage collection (the cycles
a flood of rejected messages leaves, exceptions and their tracebacks) and `malloc_trim(0)`
return the free pages to the kernel, once per burst. Measured with benchmarks/flood.py:
see the README ("The ingest service", Memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("groundstation.ingest")

IDLE_S = 5.0


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class Memory:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = _malloc_trim()
        self._clock = clock
        self._seen = 0  # messages counted at the last tick
        self._busy_since_trim = False
        self._last_busy = clock()
        self.trims = 0

    def tick(self, messages_in: int) -> None:
        """Called periodically with the count of messages received so far."""
        now = self._clock()
        if messages_in != self._seen:
            self._seen = messages_in
            self._busy_since_trim = True
            self._last_busy = now
            return
        if self._busy_since_trim and now - self._last_busy >= IDLE_S:
            self._busy_since_trim = False
            gc.collect()
            if self._trim is not None:
                self._trim()
                self.trims += 1
