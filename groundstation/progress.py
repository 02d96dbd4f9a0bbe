"""A small terminal progress bar (stdlib only): done/total, rate, time remaining.

On a terminal it redraws one line at most ``refresh_s`` apart; elsewhere (a log file, CI)
it prints a plain line every ``log_every_s`` seconds, and always a last line at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int | None, *, desc: str = "", unit: str = "frames",
                 stream: TextIO | None = None, enabled: bool = True, width: int = 24,
                 refresh_s: float = 0.1, log_every_s: float = 5.0) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.refresh_s = refresh_s
        self.log_every_s = log_every_s
        self.done = 0
        self.note = ""
        self.remaining_s: float | None = None  # set by the caller to override the estimate
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False
        # Rate over a recent window, so a pause or a speed change shows within seconds.
        self._window: list[tuple[float, int]] = [(self._start, 0)]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def rate(self) -> float:
        now = time.monotonic()
        self._window.append((now, self.done))
        while len(self._window) > 2 and now - self._window[1][0] > 5.0:
            self._window.pop(0)
        t0, d0 = self._window[0]
        return (self.done - d0) / (now - t0) if now > t0 else 0.0

    def update(self, n: int = 0, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= (self.refresh_s if self._tty else self.log_every_s):
            self._draw(now)

    def line(self) -> str:
        rate = self.rate()
        if self.remaining_s is not None:
            eta = self.remaining_s
        elif self.total is not None and rate > 0:
            eta = (self.total - self.done) / rate
        else:
            eta = None
        if self.total:
            frac = min(1.0, self.done / self.total)
            fill = int(frac * self.width)
            bar = f"{frac * 100:5.1f}% |{'#' * fill}{' ' * (self.width - fill)}| " \
                  f"{self.done:,}/{self.total:,} {self.unit}"
        else:
            bar = f"{self.done:,} {self.unit}"
        text = f"{self.desc} {bar}  {rate:,.0f} {self.unit}/s  " \
               f"elapsed {_clock(self.elapsed)}  left {_clock(eta)}"
        return f"{text}  {self.note}".rstrip() if self.note else text

    def _draw(self, now: float) -> None:
        self._last_draw = now
        text = self.line()
        if self._tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, note: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if note is not None:
            self.note = note
        if self.enabled:
            self.remaining_s = 0.0
            self._draw(time.monotonic())
            if self._tty:
                self.stream.write("\n")
                self.stream.flush()
