"""Mission clock: ground elapsed time (GET) from Apollo liftoff, UTC, and frame numbering.

GET 000:00:00 is the Apollo liftoff, 1975-07-15 19:50:01 UTC. Negative GET is before it
(Soyuz 19 launched at GET -007:30:01). Times are kept as float seconds of GET inside the
models and as integer nanoseconds of UTC on the wire.

Every frame of a stream has a fixed index k counted from FRAME_EPOCH (1975-07-15 00:00:00
UTC, before either launch), so frame k is always at FRAME_EPOCH + k * period, its sequence
number is k and its counter is first + k % modulus: a frame keeps its number and time
whether it is sent live, recorded and played back later, or regenerated from the same seed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

NS = 1_000_000_000
LIFTOFF_UTC = datetime(1975, 7, 15, 19, 50, 1, tzinfo=UTC)
LIFTOFF_NS = int(LIFTOFF_UTC.timestamp()) * NS
FRAME_EPOCH_UTC = datetime(1975, 7, 15, 0, 0, 0, tzinfo=UTC)
FRAME_EPOCH_NS = int(FRAME_EPOCH_UTC.timestamp()) * NS
# The earliest GET a simulation may start at: both ships on their pads, before Soyuz
# crew ingress (Soyuz launched at -007:30:01).
EARLIEST_GET = -10 * 3600.0

_GET_RE = re.compile(r"^\s*(?P<sign>[-+])?(?P<h>\d{1,3}):(?P<m>\d{1,2})"
                     r"(?::(?P<s>\d{1,2}(?:\.\d*)?))?\s*$")
_DUR_RE = re.compile(r"(?P<n>\d+(?:\.\d*)?)\s*(?P<u>h|m|s|d)", re.IGNORECASE)


def get_to_utc_ns(get_s: float) -> int:
    """UTC nanoseconds of a GET (rounded to the nanosecond)."""
    return LIFTOFF_NS + round(get_s * NS)


def utc_ns_to_get(t_ns: int) -> float:
    return (t_ns - LIFTOFF_NS) / NS


def utc_text(get_s: float) -> str:
    t = datetime.fromtimestamp(get_to_utc_ns(get_s) / NS, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_get(get_s: float) -> str:
    """GET as the flight controllers wrote it: HHH:MM:SS, with a minus sign before liftoff."""
    sign = "-" if get_s < 0 else ""
    s = int(abs(get_s) + 1e-9)
    return f"{sign}{s // 3600:03d}:{s // 60 % 60:02d}:{s % 60:02d}"


def parse_get(text: str) -> float:
    """'044:19:08', '44:19', '-007:30:01' -> seconds of GET. Raises ValueError."""
    m = _GET_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a GET (write HHH:MM[:SS], e.g. 044:19:08 or "
                         "-007:30:01)")
    minutes, seconds = int(m["m"]), float(m["s"] or 0)
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"{text!r}: minutes and seconds must be below 60")
    value = int(m["h"]) * 3600 + minutes * 60 + seconds
    return -value if m["sign"] == "-" else value


def parse_duration(text: str) -> float:
    """'30m', '1h30m', '90s', '2d', or plain seconds '45' -> seconds. Raises ValueError."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    pos, total = 0, 0.0
    scale = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    for m in _DUR_RE.finditer(t):
        if t[pos:m.start()].strip():
            break
        total += float(m["n"]) * scale[m["u"].lower()]
        pos = m.end()
    if pos == 0 or t[pos:].strip():
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 1h30m, 2d)")
    return total


def frame_index(get_s: float, rate_hz: float) -> int:
    """Index of the first frame at or after a GET."""
    period_ns = round(NS / rate_hz)
    t = get_to_utc_ns(get_s) - FRAME_EPOCH_NS
    return -(-t // period_ns)


def frame_time_ns(k: int, period_ns: int) -> int:
    return FRAME_EPOCH_NS + k * period_ns
