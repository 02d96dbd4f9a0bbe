"""The msgpack wire envelope: a round trip, every rejection with its reason code, and
untrusted input never escaping as anything but EnvelopeError."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundstation.core.envelope import (
    MAX_FRAMES,
    MAX_PAYLOAD,
    VERSION,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
)

VEHICLE, STREAM, FRAME_BYTES = "apollo_csm", "hbr", 128
# Apollo-Soyuz docking, 17 July 1975 16:09:09 UTC, in nanoseconds since the epoch.
DOCKING_NS = int(datetime(1975, 7, 17, 16, 9, 9, tzinfo=UTC).timestamp()) * 10**9


def frames_array(n: int = 3, size: int = FRAME_BYTES) -> np.ndarray:
    return (np.arange(n * size, dtype=np.int64) * 7 % 256).astype(np.uint8).reshape(n, size)


def good_message() -> dict[str, Any]:
    return {"v": VERSION, "vehicle": VEHICLE, "stream": STREAM, "seq": 1234, "t": DOCKING_NS,
            "frames": [bytes(row) for row in frames_array()]}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(payload: bytes) -> Envelope:
    return decode_envelope(payload, vehicle=VEHICLE, stream=STREAM, frame_bytes=FRAME_BYTES)


def reason_for(payload: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode(payload)
    assert str(info.value), "an EnvelopeError must say what is wrong"
    return info.value.reason


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_from_an_array() -> None:
    frames = frames_array(5)
    env = decode(encode_envelope(VEHICLE, STREAM, 1234, DOCKING_NS, frames))
    assert (env.vehicle, env.stream, env.seq, env.t_ns) == (VEHICLE, STREAM, 1234, DOCKING_NS)
    assert env.frames.dtype == np.uint8
    assert env.frames.shape == (5, FRAME_BYTES)
    np.testing.assert_array_equal(env.frames, frames)
    np.testing.assert_array_equal(env.times_ns(20_000_000),
                                  DOCKING_NS + 20_000_000 * np.arange(5))


def test_round_trip_from_a_list_of_bytes() -> None:
    rows = [bytes([i]) * FRAME_BYTES for i in (0, 1, 255)]
    env = decode(encode_envelope(VEHICLE, STREAM, 0, 0, rows))
    assert env.seq == 0 and env.t_ns == 0
    assert [bytes(r) for r in env.frames] == rows


def test_round_trip_at_the_edges_of_the_value_ranges() -> None:
    env = decode(encode_envelope(VEHICLE, STREAM, 2**63 - 2, 2**63 - 1, frames_array(2)))
    assert (env.seq, env.t_ns) == (2**63 - 2, 2**63 - 1)
    # One frame more and the last frame's sequence number would not fit 64 signed bits.
    with pytest.raises(EnvelopeError) as err:
        decode(encode_envelope(VEHICLE, STREAM, 2**63 - 2, 0, frames_array(3)))
    assert err.value.reason == "bad_value"
    env = decode(encode_envelope(VEHICLE, STREAM, 0, 0, frames_array(1)))
    assert (env.seq, env.t_ns, env.frames.shape) == (0, 0, (1, FRAME_BYTES))


def test_a_message_of_max_frames_is_accepted() -> None:
    payload = encode_envelope(VEHICLE, STREAM, 7, 0, frames_array(MAX_FRAMES, 4))
    env = decode_envelope(payload, vehicle=VEHICLE, stream=STREAM, frame_bytes=4)
    assert env.frames.shape == (MAX_FRAMES, 4)


def test_encoded_envelope_is_the_documented_map() -> None:
    payload = encode_envelope(VEHICLE, STREAM, 9, 10, frames_array(2))
    msg = msgpack.unpackb(payload, raw=False)
    assert msg == {"v": 1, "vehicle": VEHICLE, "stream": STREAM, "seq": 9, "t": 10,
                   "frames": [bytes(r) for r in frames_array(2)]}


# --- rejections ----------------------------------------------------------------------------


def with_fields(**changes: Any) -> bytes:
    msg = good_message()
    for key, value in changes.items():
        if value is _DROP:
            del msg[key]
        else:
            msg[key] = value
    return pack(msg)


_DROP = object()


def test_good_message_is_accepted() -> None:
    # The baseline every rejection below mutates.
    assert decode(pack(good_message())).seq == 1234


def test_oversize() -> None:
    assert reason_for(b"\x00" * (MAX_PAYLOAD + 1)) == "oversize"


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", b"\x92\x01", b"\xdd\xff\xff\xff\xff",
    pack(good_message()) + b"\x00",               # trailing data
    b"\xa2\xff\xfe",                              # str that is not UTF-8
    pack({1: "integer key"}),                     # strict_map_key refuses non-string keys
    b"\x91" * 100_000 + b"\xc0",                  # nested deeper than the unpacker's stack
    b"\xc7\x03\xff\x00\x00\x00",                   # timestamp extension of a bad length
], ids=["empty", "reserved-byte", "truncated-array", "huge-array-header", "trailing-bytes",
        "bad-utf8", "int-map-key", "deep-nesting", "bad-timestamp"])
def test_not_msgpack(payload: bytes) -> None:
    assert reason_for(payload) == "not_msgpack"


@pytest.mark.parametrize("obj", [[1, 2, 3], "hbr", 5, None, b"\x00" * 128, 1.5, True],
                         ids=["list", "str", "int", "nil", "bin", "float", "bool"])
def test_not_a_map(obj: Any) -> None:
    assert reason_for(pack(obj)) == "not_a_map"


@pytest.mark.parametrize("field", ["v", "vehicle", "stream", "seq", "t", "frames"])
def test_missing_field(field: str) -> None:
    with pytest.raises(EnvelopeError, match=repr(field)) as info:
        decode(with_fields(**{field: _DROP}))
    assert info.value.reason == "missing_field"


@pytest.mark.parametrize(("field", "value"), [
    ("v", "1"), ("v", 1.0), ("v", True),
    ("vehicle", b"apollo_csm"), ("vehicle", None),
    ("stream", 1),
    ("seq", 1234.0), ("seq", "1234"), ("seq", True), ("seq", False),
    ("t", None), ("t", False),
    ("frames", b"\x00" * 128), ("frames", {"0": b"\x00" * 128}),
])
def test_bad_type(field: str, value: Any) -> None:
    with pytest.raises(EnvelopeError, match=repr(field)) as info:
        decode(with_fields(**{field: value}))
    assert info.value.reason == "bad_type"


@pytest.mark.parametrize("frame", ["x" * 128, 0, None, [0] * 128],
                         ids=["str", "int", "nil", "list"])
def test_non_bytes_frame_is_bad_type(frame: Any) -> None:
    frames = [bytes(FRAME_BYTES), frame]
    with pytest.raises(EnvelopeError, match="frame 1") as info:
        decode(with_fields(frames=frames))
    assert info.value.reason == "bad_type"


@pytest.mark.parametrize("v", [0, 2, -1])
def test_bad_version(v: int) -> None:
    assert reason_for(with_fields(v=v)) == "bad_version"


@pytest.mark.parametrize("fields", [{"vehicle": "soyuz"}, {"stream": "lbr"},
                                    {"vehicle": "soyuz", "stream": "tm"}])
def test_topic_mismatch(fields: dict[str, str]) -> None:
    assert reason_for(with_fields(**fields)) == "topic_mismatch"


@pytest.mark.parametrize("fields", [{"seq": -1}, {"t": -1}, {"t": 2**63}, {"t": 2**64 - 1},
                                    {"seq": -(2**63)}])
def test_bad_value(fields: dict[str, int]) -> None:
    assert reason_for(with_fields(**fields)) == "bad_value"


@pytest.mark.parametrize("n", [0, MAX_FRAMES + 1])
def test_frame_count(n: int) -> None:
    assert reason_for(with_fields(frames=[bytes(1)] * n)) == "frame_count"


@pytest.mark.parametrize("length", [0, FRAME_BYTES - 1, FRAME_BYTES + 1])
def test_frame_length(length: int) -> None:
    frames = [bytes(FRAME_BYTES), bytes(FRAME_BYTES), bytes(length)]
    with pytest.raises(EnvelopeError, match=f"frame 2 is {length} bytes") as info:
        decode(with_fields(frames=frames))
    assert info.value.reason == "frame_length"


def test_the_first_problem_found_is_reported_in_a_stable_order() -> None:
    # Wrong version and wrong topic: the version is checked first.
    assert reason_for(with_fields(v=2, vehicle="soyuz")) == "bad_version"
    # A missing field is reported before a badly typed one later in the order.
    assert reason_for(with_fields(v=_DROP, t="now")) == "missing_field"


# --- untrusted input never escapes as another exception ------------------------------------

REASONS = {"oversize", "not_msgpack", "not_a_map", "missing_field", "bad_type", "bad_version",
           "topic_mismatch", "bad_value", "frame_count", "frame_length"}

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=40)
           | st.builds(msgpack.ExtType, st.integers(min_value=0, max_value=127),
                       st.binary(max_size=8))
           | st.builds(msgpack.Timestamp, st.integers(min_value=0, max_value=2**34 - 1),
                       st.integers(min_value=0, max_value=999_999_999)))
structures = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10) | st.binary(max_size=10), children, max_size=5),
    max_leaves=30,
)

# Messages that are nearly right: a good message with one or two fields replaced by a
# plausible wrong value or any structure, or dropped, so the property also reaches the checks
# after the type checks (value ranges, frame count, frame types and lengths).
good_frame = st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES)
wrong_values: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([0, 2, True, 1.0]),
    "vehicle": st.sampled_from(["soyuz", b"apollo_csm"]),
    "stream": st.sampled_from(["lbr", ""]),
    "seq": st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "t": st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "frames": st.lists(good_frame | st.binary(max_size=4) | structures, max_size=4),
}


def _near_miss(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    def apply(changes: dict[str, Any]) -> dict[str, Any]:
        msg = good_message()
        for key, value in changes.items():
            if value is _DROP:
                del msg[key]
            else:
                msg[key] = value
        return msg

    return st.fixed_dictionaries(
        {k: wrong_values[k] | structures | st.just(_DROP) for k in keys}).map(apply)


near_misses = st.lists(st.sampled_from(sorted(wrong_values)), min_size=1, max_size=2,
                       unique=True).flatmap(_near_miss)


def assert_decodes_or_rejects(payload: bytes) -> None:
    try:
        env = decode(payload)
    except EnvelopeError as exc:
        assert exc.reason in REASONS
        return
    # Anything accepted is a well-formed envelope for this topic.
    assert isinstance(env, Envelope)
    assert (env.vehicle, env.stream) == (VEHICLE, STREAM)
    assert type(env.seq) is int and env.seq >= 0
    assert type(env.t_ns) is int and 0 <= env.t_ns < 2**63
    assert env.frames.dtype == np.uint8
    assert env.frames.ndim == 2 and env.frames.shape[1] == FRAME_BYTES
    assert 0 < env.frames.shape[0] <= MAX_FRAMES


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_envelope_error(payload: bytes) -> None:
    assert_decodes_or_rejects(payload)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(structures)
def test_arbitrary_msgpack_structures_decode_or_raise_envelope_error(obj: Any) -> None:
    assert_decodes_or_rejects(pack(obj))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(near_misses)
def test_near_miss_messages_decode_or_raise_envelope_error(msg: dict[str, Any]) -> None:
    assert_decodes_or_rejects(pack(msg))


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=60), st.data())
def test_corrupted_good_messages_decode_or_raise_envelope_error(noise: bytes,
                                                                data: st.DataObject) -> None:
    payload = bytearray(pack(good_message()))
    at = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[at:at + len(noise)] = noise
    assert_decodes_or_rejects(bytes(payload))
