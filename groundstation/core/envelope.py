"""The wire envelope: one MQTT message carrying one or more minor frames of one stream.

    {"v": 1, "vehicle": "apollo_csm", "stream": "hbr", "seq": 1234,
     "t": 1437162549000000000, "frames": [b"...", b"..."]}

seq is the sequence number of the first frame and t its time (ns since the Unix epoch);
the frames of one message are consecutive, one frame period apart. Everything that arrives
is untrusted: decode_envelope says exactly what is wrong, and the ingest counts and
quarantines the message by that reason. The protocol in full: docs/wire-protocol.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack
import numpy as np
from numpy.typing import NDArray

VERSION = 1
MAX_PAYLOAD = 4 * 1024 * 1024
MAX_FRAMES = 16384
# The latest time InfluxDB can store (its MaxNanoTime, 2**63 - 2 ns: 2262-04-11T23:47:16Z):
# every frame's time must be at or before it, or its values could not be written.
MAX_TIME_NS = 2**63 - 2


class EnvelopeError(ValueError):
    """reason is a short stable code for counting; the message says what was wrong."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass
class Envelope:
    vehicle: str
    stream: str
    seq: int
    t_ns: int
    frames: NDArray[np.uint8]  # (N, frame bytes)
    playback: bool = False  # the sender's optional "playback": true, a recorder's dump

    def times_ns(self, period_ns: int) -> NDArray[np.int64]:
        return self.t_ns + np.arange(self.frames.shape[0], dtype=np.int64) * period_ns


def encode_envelope(vehicle: str, stream: str, seq: int, t_ns: int,
                    frames: NDArray[np.uint8] | list[bytes]) -> bytes:
    if isinstance(frames, np.ndarray):
        frames = [bytes(row) for row in np.ascontiguousarray(frames, dtype=np.uint8)]
    return msgpack.packb({"v": VERSION, "vehicle": vehicle, "stream": stream, "seq": int(seq),
                          "t": int(t_ns), "frames": frames}, use_bin_type=True)


def decode_envelope(payload: bytes, *, vehicle: str, stream: str, frame_bytes: int,
                    period_ns: int | None = None, t_min_ns: int | None = None,
                    t_max_ns: int | None = None) -> Envelope:
    """Check a message against the topic it came on and the stream's frame length.

    period_ns: the stream's frame period; with it, every frame's time (not only the
    first's) is checked: at most MAX_TIME_NS, and within [t_min_ns, t_max_ns] when given
    (the ingest's sanity window), else the message is rejected as `time_range`."""
    if len(payload) > MAX_PAYLOAD:
        raise EnvelopeError("oversize", f"{len(payload)} bytes is over the {MAX_PAYLOAD}-byte "
                                        "limit")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=MAX_PAYLOAD)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        raise EnvelopeError("not_msgpack", f"not a msgpack message: {exc}") from None
    if not isinstance(msg, dict):
        raise EnvelopeError("not_a_map", f"expected a msgpack map, got {type(msg).__name__}")
    expected = {"v": int, "vehicle": str, "stream": str, "seq": int, "t": int, "frames": list}
    for key, typ in expected.items():
        if key not in msg:
            raise EnvelopeError("missing_field", f"field {key!r} is missing")
        if not isinstance(msg[key], typ) or isinstance(msg[key], bool):
            raise EnvelopeError("bad_type", f"field {key!r} must be {typ.__name__}, got "
                                            f"{type(msg[key]).__name__}")
    if msg["v"] != VERSION:
        raise EnvelopeError("bad_version", f"schema version {msg['v']} is not {VERSION}")
    if msg["vehicle"] != vehicle or msg["stream"] != stream:
        raise EnvelopeError("topic_mismatch", f"message says {msg['vehicle']}/{msg['stream']} "
                                              f"but came on the topic of {vehicle}/{stream}")
    if msg["seq"] < 0 or not 0 <= msg["t"] < 2**63:
        raise EnvelopeError("bad_value", "seq and t must be non-negative 64-bit integers")
    frames = msg["frames"]
    if not frames or len(frames) > MAX_FRAMES:
        raise EnvelopeError("frame_count", f"{len(frames)} frames; a message carries 1.."
                                           f"{MAX_FRAMES}")
    if msg["seq"] + len(frames) > 2**63:
        # Every frame's sequence number must fit a signed 64-bit integer (the archive's).
        raise EnvelopeError("bad_value", f"seq {msg['seq']} + {len(frames)} frames "
                                          "overflows 2**63")
    for i, f in enumerate(frames):
        if not isinstance(f, bytes):
            raise EnvelopeError("bad_type", f"frame {i} is {type(f).__name__}, not bytes")
        if len(f) != frame_bytes:
            raise EnvelopeError("frame_length", f"frame {i} is {len(f)} bytes; {vehicle}/"
                                                f"{stream} frames are {frame_bytes}")
    if period_ns is not None:
        _check_times(msg["t"], msg["t"] + (len(frames) - 1) * period_ns, t_min_ns, t_max_ns)
    data = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(len(frames), frame_bytes)
    return Envelope(msg["vehicle"], msg["stream"], msg["seq"], msg["t"], data,
                    msg.get("playback") is True)


def _check_times(first: int, last: int, t_min_ns: int | None, t_max_ns: int | None) -> None:
    if last > MAX_TIME_NS:
        raise EnvelopeError("time_range", f"frame times {first}..{last} ns pass {MAX_TIME_NS} "
                                          "ns (2262-04-11), the latest InfluxDB can store")
    if t_min_ns is not None and first < t_min_ns:
        raise EnvelopeError("time_range", f"frame time {first} ns ({_utc(first)}) is before "
                                          f"the accepted window, from {_utc(t_min_ns)}")
    if t_max_ns is not None and last > t_max_ns:
        raise EnvelopeError("time_range", f"frame time {last} ns ({_utc(last)}) is after "
                                          f"the accepted window, up to {_utc(t_max_ns)}")


def _utc(t_ns: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns // 1_000_000_000))
    except (OverflowError, OSError, ValueError):
        return "out of range"
