"""The wire envelope: one MQTT message carrying one or more minor frames of one stream.

    {"v": 1, "vehicle": "apollo_csm", "stream": "hbr", "seq": 1234,
     "t": 1437162549000000000, "frames": [b"...", b"..."]}

seq is the sequence number of the first frame and t its time (ns since the Unix epoch);
the frames of one message are consecutive, one frame period apart. Everything that arrives
is untrusted: decode_envelope says exactly what is wrong, and the ingest counts and
quarantines the message by that reason. The protocol in full: docs/wire-protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import numpy as np
from numpy.typing import NDArray

VERSION = 1
MAX_PAYLOAD = 4 * 1024 * 1024
MAX_FRAMES = 16384


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

    def times_ns(self, period_ns: int) -> NDArray[np.int64]:
        return self.t_ns + np.arange(self.frames.shape[0], dtype=np.int64) * period_ns


def encode_envelope(vehicle: str, stream: str, seq: int, t_ns: int,
                    frames: NDArray[np.uint8] | list[bytes]) -> bytes:
    if isinstance(frames, np.ndarray):
        frames = [bytes(row) for row in np.ascontiguousarray(frames, dtype=np.uint8)]
    return msgpack.packb({"v": VERSION, "vehicle": vehicle, "stream": stream, "seq": int(seq),
                          "t": int(t_ns), "frames": frames}, use_bin_type=True)


def decode_envelope(payload: bytes, *, vehicle: str, stream: str, frame_bytes: int) -> Envelope:
    """Check a message against the topic it came on and the stream's frame length."""
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
    data = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(len(frames), frame_bytes)
    return Envelope(msg["vehicle"], msg["stream"], msg["seq"], msg["t"], data)
