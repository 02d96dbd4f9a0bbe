"""Mission clock: the one epoch, and every way the ground station writes and reads a time.

GET 000:00:00 is the Apollo liftoff, 1975-07-15 19:50:01 UTC. Negative GET is before it
(Soyuz 19 launched at GET -007:30:01). Moscow time (MSK) was UTC+3 all year in 1975.

Times come in two units, and every name here says which one it takes:

* GET seconds (float, ``get_s``): what the mission models, the flight plan and the drills
  count in. ``format_get``, ``format_utc`` (the UTC of a GET), ``parse_get``.
* UTC nanoseconds since 1970 (int, ``t_ns``): what frames carry on the wire and in the
  archive. Every function taking or giving one ends in ``_ns``: ``format_get_ns`` (the GET
  of a UTC time), ``format_utc_ns``, ``format_gmt_ns``, ``format_msk_ns``,
  ``parse_time_ns``.

``get_to_utc_ns`` and ``utc_ns_to_get`` convert between the two. Durations are seconds:
``format_duration`` writes what ``parse_duration`` reads.

Every frame of a stream has a fixed index k counted from FRAME_EPOCH (1975-07-15 00:00:00
UTC, before either launch), so frame k is always at FRAME_EPOCH + k * period, its sequence
number is k and its counter is first + k % modulus: a frame keeps its number and time
whether it is sent live, recorded and played back later, or regenerated from the same seed.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

__all__ = [
    "EARLIEST_GET",
    "FRAME_EPOCH_NS",
    "FRAME_EPOCH_UTC",
    "LIFTOFF_NS",
    "LIFTOFF_UTC",
    "MSK",
    "MSK_OFFSET_S",
    "NS",
    "Precision",
    "format_duration",
    "format_get",
    "format_get_ns",
    "format_gmt_ns",
    "format_msk_ns",
    "format_utc",
    "format_utc_ns",
    "frame_index",
    "frame_time_ns",
    "get_to_utc_ns",
    "parse_duration",
    "parse_get",
    "parse_time_ns",
    "utc_ns_to_get",
]

NS = 1_000_000_000
LIFTOFF_UTC = datetime(1975, 7, 15, 19, 50, 1, tzinfo=UTC)
LIFTOFF_NS = int(LIFTOFF_UTC.timestamp()) * NS
FRAME_EPOCH_UTC = LIFTOFF_UTC.replace(hour=0, minute=0, second=0)
FRAME_EPOCH_NS = int(FRAME_EPOCH_UTC.timestamp()) * NS
# The earliest GET a simulation may start at: both ships on their pads, before Soyuz
# crew ingress (Soyuz launched at -007:30:01).
EARLIEST_GET = -10 * 3600.0
# Moscow kept UTC+3 all year in 1975 (summer time came in 1981), as it does today, so a
# fixed offset is right where a zone database would be one more dependency.
MSK_OFFSET_S = 3 * 3600
MSK = timezone(timedelta(seconds=MSK_OFFSET_S), "MSK")

Precision = Literal["m", "s", "ms"]
"""How much of a clock to write: to the minute, the second, or the millisecond."""

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# One GET grammar for every input (command line, scenarios, replay seek, pass ids):
# [GET] [-|+]HHH:MM[:SS[.fff]].
_GET_RE = re.compile(r"^\s*(?:GET\s*)?(?P<sign>[-+])?(?P<h>\d{1,3}):(?P<m>\d{1,2})"
                     r"(?::(?P<s>\d{1,2})(?:\.(?P<frac>\d*))?)?\s*$", re.IGNORECASE)
_DUR_RE = re.compile(r"(?P<n>\d+(?:\.\d*)?)\s*(?P<u>h|m|s|d)", re.IGNORECASE)


# --- GET and UTC -----------------------------------------------------------------------------


def get_to_utc_ns(get_s: float) -> int:
    """UTC nanoseconds of a GET (rounded to the nanosecond)."""
    return LIFTOFF_NS + round(get_s * NS)


def utc_ns_to_get(t_ns: int) -> float:
    """GET seconds of a UTC nanosecond time."""
    return (t_ns - LIFTOFF_NS) / NS


# --- writing ---------------------------------------------------------------------------------


def _get_text(delta_ns: int, precision: Precision) -> str:
    # Integer arithmetic, so that a frame time writes the same GET on every path (float
    # seconds near 1.6e5 would smear the milliseconds).
    sign = "-" if delta_ns < 0 else ""
    secs, ns = divmod(abs(delta_ns), NS)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if precision == "m":
        return f"{sign}{h:03d}:{m:02d}"
    text = f"{sign}{h:03d}:{m:02d}:{s:02d}"
    return text + f".{ns // 1_000_000:03d}" if precision == "ms" else text


def format_get(get_s: float, precision: Precision = "s") -> str:
    """GET as the flight controllers wrote it: HHH:MM:SS, with a minus sign before liftoff.

    ``format_get(159548.0) == "044:19:08"``. Truncates towards zero, as a clock does."""
    return _get_text(round(get_s * NS), precision)


def format_get_ns(t_ns: int, precision: Precision = "s") -> str:
    """The GET of a UTC nanosecond time, written as ``format_get`` writes it."""
    return _get_text(int(t_ns) - LIFTOFF_NS, precision)


def _utc(t_ns: int) -> datetime:
    # Exact for any nanosecond count (datetime.fromtimestamp goes through a float).
    return _UNIX_EPOCH + timedelta(microseconds=int(t_ns) // 1000)


def format_utc(get_s: float, precision: Precision = "s") -> str:
    """The UTC of a GET, written as ``format_utc_ns`` writes it."""
    return format_utc_ns(get_to_utc_ns(get_s), precision)


def format_utc_ns(t_ns: int, precision: Precision = "s") -> str:
    """ISO 8601 UTC: 1975-07-17T16:09:09Z (1975-07-17T16:09Z, 1975-07-17T16:09:09.250Z)."""
    t = _utc(t_ns)
    if precision == "m":
        return t.strftime("%Y-%m-%dT%H:%MZ")
    if precision == "ms":
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_gmt_ns(t_ns: int) -> str:
    """GMT as NASA wrote it: day of year, then the time (198:16:09:09)."""
    return _utc(t_ns).strftime("%j:%H:%M:%S")


def format_msk_ns(t_ns: int, with_date: bool = True) -> str:
    """Moscow time as the ЦУП wrote it: 17.07.1975 19:09:09 (or only 19:09:09)."""
    t = _utc(t_ns).astimezone(MSK)
    return t.strftime("%d.%m.%Y %H:%M:%S" if with_date else "%H:%M:%S")


def format_duration(seconds: float) -> str:
    """12.5 s, 4m05s, 1h02m03s: short enough for a table column, and ``parse_duration``
    reads it back."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --- reading ---------------------------------------------------------------------------------


def _get_delta_ns(text: str) -> int | None:
    """Nanoseconds from liftoff of a GET, None when the text is not shaped like one."""
    m = _GET_RE.match(text)
    if not m:
        return None
    minutes, seconds = int(m["m"]), int(m["s"] or 0)
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"{text!r}: minutes and seconds must be below 60")
    frac = ((m["frac"] or "") + "000000000")[:9]
    ns = (int(m["h"]) * 3600 + minutes * 60 + seconds) * NS + int(frac)
    return -ns if m["sign"] == "-" else ns


def parse_get(text: str) -> float:
    """'044:19:08', '44:19', '-007:30:01', 'GET 044:19:08' -> seconds of GET.

    Raises ValueError."""
    ns = _get_delta_ns(text)
    if ns is None:
        raise ValueError(f"{text!r} is not a GET (write HHH:MM[:SS], e.g. 044:19:08 or "
                         "-007:30:01)")
    return ns / NS


def parse_time_ns(text: str | int) -> int:
    """A time as UTC nanoseconds since 1970, from UTC ISO 8601 (``1975-07-17T16:09Z``; no
    zone means UTC), a GET (``GET 044:19:08`` or ``044:19:08``), or integer nanoseconds.

    Raises ValueError."""
    if isinstance(text, int):
        return text
    s = text.strip()
    if re.fullmatch(r"\d{12,}", s):
        return int(s)
    delta = _get_delta_ns(s)
    if delta is not None:
        return LIFTOFF_NS + delta
    try:
        dt = datetime.fromisoformat(s.replace(" ", "T", 1) if " " in s else s)
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: give UTC like 1975-07-17T16:09:30Z, "
                         "GET like 'GET 049:19:29', or nanoseconds since 1970") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    whole = calendar.timegm(dt.utctimetuple())
    return whole * NS + dt.microsecond * 1000


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


# --- frames ----------------------------------------------------------------------------------


def frame_index(get_s: float, rate_hz: float) -> int:
    """Index of the first frame at or after a GET."""
    period_ns = round(NS / rate_hz)
    t = get_to_utc_ns(get_s) - FRAME_EPOCH_NS
    return -(-t // period_ns)


def frame_time_ns(k: int, period_ns: int) -> int:
    """UTC nanoseconds of frame k of a stream with this frame period."""
    return FRAME_EPOCH_NS + k * period_ns
