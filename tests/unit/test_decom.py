"""The decommutator against frames built by the encoder and by hand."""

from __future__ import annotations

import functools
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from groundstation.core import decom as decom_module
from groundstation.core.decom import Decommutator, StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.limits import LimitState
from groundstation.paths import defs_dir
from tests.paths import MINI


@pytest.fixture(scope="module")
def mini() -> VehicleDefinition:
    return load_definition(MINI)


def test_every_frame_values_come_back(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    ranges = np.linspace(0, 400, 30)
    frames = enc.encode({"cabin_press": 5.0, "hatch": "CLOSED", "range": ranges}, 30)
    batch = dec.decode(frames)
    assert batch.n_good == 30 and batch.bad_sync == 0 and batch.gaps == []
    _, press, state = dec.decode(frames).series("cabin_press")
    np.testing.assert_allclose(press, 5.0)
    assert (state == LimitState.NOMINAL).all()
    _, hatch, _ = batch.series("hatch")
    assert (hatch == mini.parameter("hatch").state_code("CLOSED")).all()
    _, rng, _ = batch.series("range")
    # 16 bits over 0..400 km: one count is 400/65535 km.
    np.testing.assert_allclose(rng, ranges, atol=400 / 65535)


def test_sync_core_is_complemented_on_odd_frames(mini: VehicleDefinition) -> None:
    frames = FrameEncoder(mini).encode({}, 4, start_counter=1)
    sync = [int.from_bytes(bytes(f[:4]), "big") for f in frames]
    core = 0x07FFF000
    assert sync[0] & core == (0xF9AE3B00 ^ core) & core  # counter 1 is odd
    assert sync[1] & core == 0xF9AE3B00 & core
    assert [s & 0x3F for s in sync] == [1, 2, 3, 4]


def test_bad_sync_frames_are_rejected_and_counted_not_decoded(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    frames = enc.encode({"cabin_press": 5.0}, 10)
    frames[3, 0] ^= 0x80  # a bit error in the A field
    frames[6, 1] ^= 0x01  # and one in the core
    frames[7, 4] = 255  # garbage in a data word of a good frame stays a good frame
    batch = dec.decode(frames)
    assert batch.bad_sync == 2
    assert list(batch.rows) == [0, 1, 2, 4, 5, 7, 8, 9]
    _, press, state = batch.series("cabin_press")
    assert press.size == 8
    assert press[5] == pytest.approx(17.0) and state[5] == LimitState.RED_HIGH
    # A rejected frame is a lost frame: the gap detector says so.
    assert [(g.after_row, g.missing) for g in batch.gaps] == [(2, 1), (5, 1)]


def test_an_uncomplemented_odd_frame_fails_sync(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    frames = enc.encode({}, 2, start_counter=1)
    frames[0, :4] = frames[1, :4]
    frames[0, 3] = (frames[0, 3] & 0xC0) | 1  # counter 1 but the even-frame pattern
    assert dec.decode(frames).bad_sync == 1


def test_counter_out_of_range_is_rejected(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    frames = enc.encode({}, 3, start_counter=2)
    # Frame IDs run 1..50, so 60 is impossible. Frame 0 has the even counter 2, so its
    # sync stays right for the even 60: only the counter check can catch it.
    frames[0, 3] = (frames[0, 3] & 0xC0) | 60
    batch = dec.decode(frames)
    assert batch.bad_sync == 0
    assert batch.bad_counter == 1 and list(batch.rows) == [1, 2]


def test_gaps_within_a_batch_across_batches_and_at_wrap(mini: VehicleDefinition) -> None:
    enc = FrameEncoder(mini)
    frames = enc.encode({}, 60, start_counter=45)  # 45..50, 1..50, 1..4
    stream = StreamDecoder(mini)
    first = stream.decode(np.delete(frames[:30], [10, 11, 12], axis=0))
    assert [(g.after_row, g.missing) for g in first.gaps] == [(9, 3)]
    second = stream.decode(frames[35:])  # frames 30..34 lost between the batches
    assert [(g.after_row, g.missing) for g in second.gaps] == [(-1, 5)]
    third = stream.decode(FrameEncoder(mini).encode({}, 1, start_counter=int(
        enc.counters(45, 61)[-1])))
    assert third.gaps == []  # counter wrapped 50 -> 1 with nothing lost
    assert stream.frames_missing == 8


def test_subcommutated_values_land_in_their_minor_frames(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    # temp is sampled in minor frames 1 and 6 (every 5, offset 1); t10 only in frame 3.
    temps = np.linspace(50, 120, 20)
    frames = enc.encode({"temp": temps, "t10": 42.0}, 20, start_counter=1)
    times = 1_000_000_000 + np.arange(20, dtype=np.int64) * 20_000_000
    batch = dec.decode(frames, times)
    t, temp, _ = batch.series("temp")
    frame_no = (t - times[0]) // 20_000_000
    assert list(frame_no) == [1, 6, 11, 16]
    # The table calibration is 40..70 over counts 0..128 then 70..125 up to 255.
    np.testing.assert_allclose(temp, temps[frame_no], atol=0.45)
    t10_t, t10, _ = batch.series("t10")
    assert list((t10_t - times[0]) // 20_000_000) == [3, 13]
    np.testing.assert_allclose(t10, 42.0, atol=0.05)
    assert list(batch.raw_series("t10")) == [520, 520]  # (42 + 10) / 0.1


def test_wide_counter_over_three_words(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    up = np.array([0.0, 0.5, 1_000_000.0, 8_388_607.5])
    _, got, _ = dec.decode(enc.encode({"uptime": up}, 4)).series("uptime")
    np.testing.assert_array_equal(got, up)


def test_limit_states_and_context_limit_sets(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    frames = enc.encode({"cabin_press": [4.0, 4.7, 5.0, 5.3, 6.0], "temp": 90.0,
                         "hatch": ["OPEN", "CLOSED", "ON", "OFF", "CLOSED"]}, 5, start_counter=1)
    batch = dec.decode(frames)
    _, _, press = batch.series("cabin_press")
    assert list(press) == [LimitState.RED_LOW, LimitState.YELLOW_LOW, LimitState.NOMINAL,
                           LimitState.YELLOW_HIGH, LimitState.RED_HIGH]
    _, _, hatch = batch.series("hatch")
    assert list(hatch) == [LimitState.RED_HIGH, 0, 0, 0, 0]  # OPEN is a red state
    _, temp, normal = batch.series("temp")
    assert temp[0] == pytest.approx(90, abs=0.5) and normal[0] == LimitState.NOMINAL
    _, _, docked = dec.decode(frames, context={"phase": "docked"}).series("temp")
    assert docked[0] == LimitState.RED_HIGH  # the docked set's red high is 80


def test_derived_values_use_the_latest_sample_of_each_input(mini: VehicleDefinition) -> None:
    enc = FrameEncoder(mini)
    stream = StreamDecoder(mini)
    mmhg_per_psi = 51.71493
    # dm_press (mm Hg) only arrives in minor frames 1 and 6: before frame 1 of the first
    # batch there is none yet, so cm_dm_dp (psid) starts at frame 1.
    b1 = stream.decode(enc.encode({"cabin_press": 5.0, "dm_press": 200.0}, 10, start_counter=1))
    t, dp, _ = b1.derived["cm_dm_dp"]
    assert t.size == 9
    dm = b1.series("dm_press")[1]
    np.testing.assert_allclose(dp, 5.0 - dm[0] / mmhg_per_psi, rtol=1e-6)
    # The next batch starts before its first dm_press sample: the held value carries over.
    b2 = stream.decode(enc.encode({"cabin_press": 6.0, "dm_press": 490.0}, 10,
                                  start_counter=11))
    t2, dp2, lim2 = b2.derived["cm_dm_dp"]
    assert t2.size == 10
    assert dp2[0] == pytest.approx(6.0 - dm[-1] / mmhg_per_psi, rel=1e-6)
    dm2 = b2.series("dm_press")[1]
    assert dp2[-1] == pytest.approx(6.0 - dm2[-1] / mmhg_per_psi, rel=1e-6)
    # 6 psia against 490 mm Hg (9.5 psia) is below the red low of -1 psid.
    assert lim2[-1] == LimitState.RED_LOW and lim2[0] == LimitState.NOMINAL


def test_frames_of_the_wrong_shape_are_refused(mini: VehicleDefinition) -> None:
    dec = Decommutator(mini)
    with pytest.raises(ValueError, match="16"):
        dec.decode(np.zeros((4, 15), dtype=np.uint8))
    with pytest.raises(ValueError, match="whole number"):
        dec.decode(b"\x00" * 33)


def test_latest_gives_each_parameters_last_sample(mini: VehicleDefinition) -> None:
    enc, dec = FrameEncoder(mini), Decommutator(mini)
    press = np.linspace(4.0, 6.0, 23)
    temps = np.linspace(50.0, 120.0, 23)
    times = np.arange(23, dtype=np.int64) * 20_000_000
    batch = dec.decode(enc.encode({"cabin_press": press, "temp": temps, "dm_press": 300.0},
                                  23, start_counter=1), times)
    latest = batch.latest()
    assert latest["cabin_press"][0] == times[-1]
    assert latest["cabin_press"][1] == pytest.approx(press[-1], abs=17 / 255)
    # temp is sampled in minor frames 1 and 6 of each 10: the last one is frame 21.
    t, v, _ = latest["temp"]
    assert t == times[21] and v == pytest.approx(temps[21], abs=0.5)
    assert latest["t10"][0] == times[13]  # frame 3 of the second cycle
    assert latest["cm_dm_dp"][0] == times[-1]
    assert set(latest) == {*(p.id for p in mini.parameters), "cm_dm_dp"}


@pytest.mark.parametrize("path", [*sorted(defs_dir().glob("*.yaml")), MINI],
                         ids=lambda p: p.stem)
@pytest.mark.parametrize("n", [1, 7, 130])
def test_latest_is_each_parameters_last_sample_one_by_one(path: Any, n: int) -> None:
    defn = load_definition(path)
    rng = np.random.default_rng(n)
    values = {p.id: rng.uniform(*p.eng_range(), n) for p in defn.parameters
              if p.type == "analog"}
    frames = FrameEncoder(defn).encode(values, n, start_counter=defn.frame.counter.first)
    if n > 3:
        frames = np.delete(frames, [1], axis=0)  # a gap
        frames[-2, 0] ^= 0xFF  # a bad frame
    batch = Decommutator(defn).decode(frames, np.arange(frames.shape[0]) * 10**7 + 5)
    # What latest() says, parameter by parameter (the loop it replaced).
    expected: dict[str, tuple[int, float, int]] = {}
    mf = defn.frame.minor_frames
    tail = slice(max(0, batch.rows.size - mf), None)
    minor = batch.minor[tail]
    t, eng, lim = batch.times_ns[tail], batch.eng[tail], batch.limit[tail]
    for pid, (column, by_minor) in batch._columns.items():
        cols = np.full(len(minor), column) if by_minor is None else by_minor[minor]
        hits = np.flatnonzero(cols >= 0)
        if hits.size:
            r = int(hits[-1])
            expected[pid] = (int(t[r]), float(eng[r, cols[r]]), int(lim[r, cols[r]]))
    for pid, (times, vals, limits) in batch.derived.items():
        if vals.size:
            expected[pid] = (int(times[-1]), float(vals[-1]), int(limits[-1]))
    got = batch.latest()
    assert list(got) == list(expected)
    assert got == expected
    assert all(type(x) is type(y) for a, b in zip(got.values(), expected.values(), strict=True)
               for x, y in zip(a, b, strict=True))


# --- duplicates, overlaps and late frames (by the envelope's sequence number) -----------


@pytest.fixture(scope="module")
def soyuz() -> VehicleDefinition:
    return load_definition(defs_dir() / "soyuz.yaml")


def _messages(stream: StreamDecoder, frames: np.ndarray, times: np.ndarray,
              spans: list[tuple[int, int]]) -> list[Any]:
    """Each (first, stop) span decoded as one envelope whose seq is its first frame."""
    return [stream.decode(frames[a:b], times[a:b], seq=a) for a, b in spans]


def _frames(defn: VehicleDefinition, n: int) -> tuple[np.ndarray, np.ndarray]:
    enc = FrameEncoder(defn)
    period = round(1e9 / defn.frame.rate_hz)
    frames = enc.encode({}, n, start_counter=defn.frame.counter.first)
    return frames, 1_000_000_000 + np.arange(n, dtype=np.int64) * period


def test_a_redelivered_message_counts_as_duplicates_not_as_a_counter_wrap(
        soyuz: VehicleDefinition) -> None:
    # Soyuz's 8-bit counter: frames 90..99 again after 99 read as 246 frames lost.
    frames, times = _frames(soyuz, 150)
    stream = StreamDecoder(soyuz)
    _messages(stream, frames, times, [(a, a + 5) for a in range(0, 100, 5)])
    held = dict(stream.held)
    again = stream.decode(frames[90:95], times[90:95], seq=90)
    again2 = stream.decode(frames[95:100], times[95:100], seq=95)
    for b in (again, again2):
        assert b.gaps == [] and b.n_good == 5 and b.n_duplicate == 5 and b.n_old == 5
        assert b.live().n_good == 0  # stored, but nothing moves on
    np.testing.assert_array_equal(again.times_ns, times[90:95])
    assert stream.held == held
    assert stream.last_seq == 99 and stream.last_counter == 99
    _messages(stream, frames, times, [(a, a + 5) for a in range(100, 150, 5)])
    assert stream.frames_missing == 0 and stream.frames_duplicate == 10
    assert stream.frames_good == 150 and stream.frames_recovered == 0


def test_a_partly_overlapping_message_decodes_its_new_frames_as_live(
        soyuz: VehicleDefinition) -> None:
    frames, times = _frames(soyuz, 150)
    stream = StreamDecoder(soyuz)
    _messages(stream, frames, times, [(0, 100)])
    batch = stream.decode(frames[95:105], times[95:105], seq=95)
    assert (batch.n_good, batch.n_duplicate, batch.n_late) == (10, 5, 0)
    live = batch.live()
    np.testing.assert_array_equal(live.times_ns, times[100:105])
    assert list(live.rows) == [5, 6, 7, 8, 9] and live.gaps == []
    # The old rows come first, so a batch's last rows are its newest live frames.
    np.testing.assert_array_equal(batch.times_ns, times[95:105])
    assert max(t for t, _, _ in batch.latest().values()) == times[104]
    # A loss after the overlap is still counted exactly.
    stream.decode(frames[112:150], times[112:150], seq=112)
    assert stream.frames_missing == 7 and stream.frames_duplicate == 5
    assert stream.frames_good == 143


def test_duplicates_within_one_batch(mini: VehicleDefinition) -> None:
    # The ingest concatenates the messages pending on a stream: a message and its
    # redelivery may land in the same batch.
    frames, times = _frames(mini, 20)
    stream = StreamDecoder(mini)
    order = np.r_[0:5, 0:5, 5:10, 3:8, 10:20]
    batch = stream.decode(frames[order], times[order], seq=order)
    assert batch.n_frames == 30 and batch.n_good == 30 and batch.n_duplicate == 10
    assert batch.gaps == [] and batch.live().n_good == 20
    np.testing.assert_array_equal(batch.live().times_ns, times)
    assert stream.frames_missing == 0 and stream.frames_good == 20
    assert stream.frames_duplicate == 10


def test_missing_frames_are_exact_beyond_the_counter_range(mini: VehicleDefinition) -> None:
    # mini's counter runs 1..50: losing 60 frames looks like 10 from the counter alone.
    frames, times = _frames(mini, 200)
    stream = StreamDecoder(mini)
    stream.decode(frames[:20], times[:20], seq=0)
    batch = stream.decode(frames[80:100], times[80:100], seq=80)
    assert [(g.after_row, g.missing) for g in batch.gaps] == [(-1, 60)]
    kept = np.r_[100:110, 113:130]
    batch = stream.decode(frames[kept], times[kept], seq=kept)
    assert [(g.after_row, g.missing) for g in batch.gaps] == [(9, 3)]
    assert stream.frames_missing == 63 and stream.frames_duplicate == 0


def test_bad_frames_in_a_redelivery_are_not_counted_twice(mini: VehicleDefinition) -> None:
    frames, times = _frames(mini, 20)
    frames[3, 0] ^= 0x80  # a sync error
    stream = StreamDecoder(mini)
    stream.decode(frames[:10], times[:10], seq=0)
    assert (stream.frames_bad_sync, stream.frames_missing) == (1, 1)
    stream.decode(frames[:10], times[:10], seq=0)
    stream.decode(frames[10:], times[10:], seq=10)
    assert (stream.frames_bad_sync, stream.frames_missing) == (1, 1)
    assert stream.frames_good == 19 and stream.frames_duplicate == 10


def test_a_recorder_dump_after_newer_frames_fills_its_gap(soyuz: VehicleDefinition) -> None:
    # Heard 0..49, then LOS; live again from 100 while the recorder plays 50..99 back.
    frames, times = _frames(soyuz, 200)
    stream = StreamDecoder(soyuz)
    _messages(stream, frames, times, [(0, 50), (100, 120)])
    assert stream.frames_missing == 50
    live_before = (stream.last_seq, stream.last_good_seq, stream.last_counter)
    dump = stream.decode(frames[50:75], times[50:75], seq=50)
    assert (dump.n_good, dump.n_late, dump.n_duplicate, dump.gaps) == (25, 25, 0, [])
    assert dump.live().n_good == 0
    assert (stream.last_seq, stream.last_good_seq, stream.last_counter) == live_before
    # Live and playback in one batch: the live part's gaps are the live stream's own.
    mixed = np.r_[120:130, 75:100, 130:135]
    batch = stream.decode(frames[mixed], times[mixed], seq=mixed)
    assert batch.gaps == [] and batch.n_late == 25
    np.testing.assert_array_equal(batch.live().times_ns, times[np.r_[120:130, 130:135]])
    # The dump again is a duplicate; the stream goes on without a gap.
    stream.decode(frames[50:100], times[50:100], seq=50)
    _messages(stream, frames, times, [(135, 200)])
    assert stream.frames_missing == 50 and stream.frames_recovered == 50
    assert stream.frames_duplicate == 50 and stream.frames_good == 200


def test_derived_values_of_old_frames_leave_the_held_values_alone(
        mini: VehicleDefinition) -> None:
    enc = FrameEncoder(mini)
    stream = StreamDecoder(mini)
    first = enc.encode({"cabin_press": 5.0, "dm_press": 200.0}, 10, start_counter=1)
    second = enc.encode({"cabin_press": 5.0, "dm_press": 400.0}, 10, start_counter=11)
    times = np.arange(20, dtype=np.int64) * 20_000_000
    stream.decode(first, times[:10], seq=0)
    stream.decode(second, times[10:], seq=10)
    held = dict(stream.held)
    again = stream.decode(first, times[:10], seq=0)
    assert stream.held == held
    # The old frames' derived values are their own (dm_press at 200 mm Hg), in order.
    t, dp, _ = again.derived["cm_dm_dp"]
    assert list(t) == list(times[1:10])
    np.testing.assert_allclose(dp, 5.0 - 200.0 / 51.71493, atol=0.1)


def test_a_source_starting_again_earlier_is_followed_after_a_while(
        mini: VehicleDefinition) -> None:
    # A replay seeking back sends only old frames: the stream restarts from them.
    now = [0.0]
    frames, times = _frames(mini, 200)
    stream = StreamDecoder(mini, rewind_after_s=3.0, clock=lambda: now[0])
    stream.decode(frames[100:200], times[100:200], seq=100)
    for a in range(0, 30, 10):
        batch = stream.decode(frames[a:a + 10], times[a:a + 10], seq=a)
        assert batch.live().n_good == 0
        now[0] += 1.0
    assert stream.rewinds == 0 and stream.frames_recovered == 0
    now[0] += 1.0
    batch = stream.decode(frames[30:40], times[30:40], seq=30)
    assert stream.rewinds == 1 and batch.live().n_good == 10
    assert stream.last_seq == 39 and stream.frames_missing == 0
    stream.decode(frames[45:50], times[45:50], seq=45)
    assert stream.last_seq == 49 and stream.frames_missing == 5


def test_memory_of_received_frames_is_bounded(mini: VehicleDefinition) -> None:
    # Every lost frame splits the received ones into one more interval; only the newest
    # are kept, and a frame older than those counts as received (never as new data).
    frames, times = _frames(mini, 100)
    stream = StreamDecoder(mini, seen_intervals=8)
    kept = np.arange(0, 100, 2)  # every other frame lost: 50 intervals
    stream.decode(frames[kept], times[kept], seq=kept)
    assert len(stream._seen) <= 8 and stream.frames_missing == 49
    stream.decode(frames[95:96], times[95:96], seq=95)  # within memory: late
    stream.decode(frames[5:6], times[5:6], seq=5)  # forgotten: taken as a duplicate
    assert (stream.frames_recovered, stream.frames_duplicate) == (1, 1)
    assert stream.frames_good == 51


DEFS_WITH_DERIVED = [p for p in [*sorted(defs_dir().glob("*.yaml")), MINI]
                     if load_definition(p).derived]


@functools.cache
def _random_frames(path: Any) -> tuple[VehicleDefinition, np.ndarray, np.ndarray]:
    defn = load_definition(path)
    rng = np.random.default_rng(11)
    values = {p.id: rng.uniform(*p.eng_range(), 96) for p in defn.parameters
              if p.type == "analog"}
    frames = FrameEncoder(defn).encode(values, 96, start_counter=defn.frame.counter.first)
    return defn, frames, np.arange(96, dtype=np.int64) * 10**7 + 5


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(DEFS_WITH_DERIVED),
       sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8),
       drop=st.sets(st.integers(0, 95), max_size=6))
def test_small_batches_gather_derived_inputs_at_once_with_the_same_result(
        path: Any, sizes: list[int], drop: set[int]) -> None:
    """A small batch's derived inputs, gathered at once by cells kept per minor-frame
    sequence (Decommutator._prefetch), give the series and derived values that reading
    them one by one gives: for runs of batches of any size, with frames missing."""
    defn, frames, times = _random_frames(path)
    keep = np.array([i for i in range(96) if i not in drop])
    fast, plain = StreamDecoder(defn), StreamDecoder(defn)
    at = 0
    for size in sizes * 4:
        idx = keep[at:at + size]
        if idx.size == 0:
            break
        at += size
        got = fast.decode(frames[idx], times[idx], seq=idx)
        with patch.object(decom_module, "PREFETCH_MAX_ROWS", 0):
            want = plain.decode(frames[idx], times[idx], seq=idx)
        assert got._series.keys() >= set(fast.decom._derived_inputs) or got.n_good == 0
        for pid in fast.decom._derived_inputs:
            for a, b in zip(got.series(pid), want.series(pid), strict=True):
                np.testing.assert_array_equal(a, b)
        assert got.derived.keys() == want.derived.keys()
        for pid in want.derived:
            for a, b in zip(got.derived[pid], want.derived[pid], strict=True):
                np.testing.assert_array_equal(a, b)


CONTEXT_VALUES = {
    "phase": [None, "entry", "docked", "transfer", "orbit", "prelaunch"],
    "apollo_csm.dm_attached": [None, "NO", "YES"],
    "dm_attached": [None, "NO", "YES"],
    "apollo_csm.dock_ring_latch": [None, "UNLATCHED", "LATCHED"],
    "apollo_csm.uplink_lock": [None, "NOLOCK", "LOCK", ["NOLOCK"]],  # a list: unhashable
    "apollo_csm.dm_hatch_soyuz": [None, "OPEN", "CLOSED"],
    "soyuz.cabin_press_mode": [None, 0, 1, 2],
    "cabin_press_mode": [None, 0, 1],
}


@functools.cache
def _context_frames(name: str) -> tuple[VehicleDefinition, np.ndarray]:
    defn = load_definition(defs_dir() / f"{name}.yaml")
    # Each analog value over its whole range, so that every limit set's bounds show.
    n = 40
    values = {p.id: np.roll(np.linspace(*p.eng_range(), n), i) for i, p in
              enumerate(defn.parameters) if p.type == "analog"}
    return defn, FrameEncoder(defn).encode(values, n, start_counter=defn.frame.counter.first)


@settings(max_examples=20, deadline=None)
@example(name="apollo_csm", contexts=[{"dm_attached": "NO"}, {"dm_attached": "YES"}])
@example(name="soyuz", contexts=[{"cabin_press_mode": 0}, {"cabin_press_mode": 1}, {}])
@example(name="apollo_csm", contexts=[{"phase": "entry"}, {"phase": "orbit"}])
@given(name=st.sampled_from(["apollo_csm", "soyuz"]),
       contexts=st.lists(st.fixed_dictionaries(
           {}, optional={k: st.sampled_from(v) for k, v in CONTEXT_VALUES.items()}),
           min_size=1, max_size=12))
def test_limit_sets_chosen_for_a_context_are_the_same_when_it_comes_again(
        name: str, contexts: list[dict[str, Any]]) -> None:
    """One decommutator judging context after context (a choice kept by the entries
    the limit sets read) gives the limit states a fresh one gives for each context."""
    defn, frames = _context_frames(name)
    long_lived = Decommutator(defn)
    fresh: dict[str, np.ndarray] = {}
    for context in contexts * 2:  # each context again, after others
        seen = repr(sorted(context.items()))
        if seen not in fresh:
            fresh[seen] = Decommutator(defn).decode(frames, context=context).limit
        np.testing.assert_array_equal(long_lived.decode(frames, context=context).limit,
                                      fresh[seen])
