"""The decommutator against frames built by the encoder and by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundstation.decom import Decommutator, StreamDecoder
from groundstation.definitions import VehicleDefinition, load_definition
from groundstation.encoder import FrameEncoder
from groundstation.limits import LimitState

MINI = Path(__file__).parent / "data" / "mini.yaml"


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
