"""Reproducibility, coverage, Apollo's recorder and playback, message batching and the
backlog bound, offline (the broker tests are in test_sim_broker.py)."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.envelope import decode_envelope
from groundstation.core.mission_time import FRAME_EPOCH_NS, LIFTOFF_NS
from simulators.link import Message, Transmitter, auto_frames_per_message
from simulators.mission import Mission
from simulators.runner import Publisher, RunnerOptions
from simulators.telemetry import TelemetryStream

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def _frames(defs: dict[str, VehicleDefinition], seed: int, chunks: list[float],
            faults: bool = False) -> dict[str, bytes]:
    m = Mission(tl.hms(55), seed=seed, definitions=defs)
    if faults:
        m.inject(A, "sensor_noisy", {"parameter": "cabin_press", "sigma": 0.3}, at=m.t + 10)
        m.inject(A, "sync_loss", {"fraction": 0.2}, at=m.t + 20, duration_s=10)
        m.inject(S, "cabin_leak", {"rate_kg_h": 5.0}, at=m.t + 30, ramp_s=20)
    streams = [TelemetryStream(m, defs[v]) for v in (A, S)]
    out: dict[str, list[bytes]] = {A: [], S: []}
    end = m.t + 120
    for c in chunks * 1000:
        if all(s.next_get >= end for s in streams):
            break
        for s in streams:
            b = s.frames_until(min(end, s.next_get + c))
            if b is not None:
                out[s.vehicle].append(b.frames.tobytes())
    return {v: b"".join(x) for v, x in out.items()}


def test_same_seed_same_frames_however_they_are_cut(defs: dict[str, VehicleDefinition]
                                                     ) -> None:
    one = _frames(defs, 42, [120.0], faults=True)
    many = _frames(defs, 42, [3.3, 17.0, 0.7, 40.0], faults=True)
    assert one == many
    assert len(one[A]) == 120 * 50 * 128 and len(one[S]) == 120 * 10 * 64


def test_another_seed_other_frames(defs: dict[str, VehicleDefinition]) -> None:
    a, b = _frames(defs, 1, [60.0]), _frames(defs, 2, [60.0])
    assert a[A] != b[A] and a[S] != b[S]
    # ... but only in the noise: the same ship underneath (same sync, counters, layout).
    fa = np.frombuffer(a[A], np.uint8).reshape(-1, 128)
    fb = np.frombuffer(b[A], np.uint8).reshape(-1, 128)
    assert np.array_equal(fa[:, :4], fb[:, :4])


def test_frames_stay_inside_their_sensors_ranges(defs: dict[str, VehicleDefinition]) -> None:
    # A sensor dropout to full scale and a reading far beyond its range are both clamped
    # to the sensor's own limits by the encoder's counts.
    m = Mission(tl.hms(30), seed=3, definitions=defs)
    m.inject(A, "sensor_bias", {"parameter": "cabin_press", "offset": 50.0}, at=m.t)
    m.inject(A, "sensor_bias", {"parameter": "co2_pp", "offset": -50.0}, at=m.t)
    s = TelemetryStream(m, defs[A])
    batch = StreamDecoder(defs[A]).decode(s.frames_until(m.t + 10).frames)
    assert batch.series("cabin_press")[1].max() == 17.0
    assert batch.series("co2_pp")[1].min() == 0.0
    for p in defs[A].parameters:
        if p.type == "analog":
            lo, hi = p.eng_range()
            v = batch.series(p.id)[1]
            assert lo <= v.min() and v.max() <= hi, p.id


def _gap(m: Mission, vehicle: str, shortest: float, longest: float) -> tuple[float, float]:
    """(LOS, AOS) of an out-of-contact stretch between shortest and longest seconds long
    that follows a pass (to 10 s)."""
    t = m.t
    while True:
        heard = m.find_coverage(vehicle, t, 60, aos=True)
        los = m.find_coverage(vehicle, heard, shortest, aos=False)
        aos = m.find_coverage(vehicle, los, 60, aos=True)
        if aos - los <= longest:
            return los, aos
        t = aos


def test_apollo_records_out_of_contact_and_dumps_at_aos(defs: dict[str, VehicleDefinition]
                                                        ) -> None:
    probe = Mission(tl.hms(30), seed=5, definitions=defs)
    los, aos = _gap(probe, A, 300, 900)
    m = Mission(los - 120, seed=5, definitions=defs)
    d = defs[A]
    s = TelemetryStream(m, d)
    tx = Transmitter(d, m.faults, m.seed, frames_per_message=25, recorder_frames=10**6,
                     playback_rate=10.0)
    k0 = s.k
    blocks, heard = [], []
    sent: list[tuple[float, Message]] = []  # (GET when the message was produced, message)
    while s.next_get < aos + (aos - los) / 10 + 120:
        block = s.frames_until(s.next_get + 5.0)
        blocks.append(block.frames.copy())
        heard.append(block.aos)
        sent += [(float(block.get[-1]), msg) for msg in tx.feed(block)]
    sent += [(s.next_get, msg) for msg in tx.flush()]
    generated = np.concatenate(blocks)
    aos_mask = np.concatenate(heard)
    unheard = set((k0 + np.flatnonzero(~aos_mask)).tolist())
    # GET of the first frame heard again after the gap.
    k_back = k0 + np.flatnonzero(aos_mask & (np.arange(aos_mask.size) > min(unheard) - k0))[0]
    back = (FRAME_EPOCH_NS + int(k_back) * 20_000_000 - LIFTOFF_NS) / 1e9
    live: set[int] = set()
    played: set[int] = set()
    for t, msg in sent:
        raw = msgpack.unpackb(msg.payload)
        env = decode_envelope(msg.payload, vehicle=A, stream=d.stream, frame_bytes=128)
        seqs = range(env.seq, env.seq + env.frames.shape[0])
        # Original sequence numbers and times, and the very bytes the PCM made.
        assert env.t_ns == FRAME_EPOCH_NS + env.seq * 20_000_000
        assert np.array_equal(generated[env.seq - k0:env.seq - k0 + len(seqs)], env.frames)
        if msg.kind == "playback":
            assert raw["playback"] is True
            assert t >= back  # dumped only once the ground hears the ship again
            played.update(seqs)
        else:
            assert "playback" not in raw
            live.update(seqs)
    assert len(unheard) > 300 * 50
    assert played == unheard and not live & played  # the whole gap, once, as playback
    assert live | played == set(range(k0, k0 + len(generated)))
    assert tx.recorded == 0


def test_soyuz_frames_out_of_contact_are_lost(defs: dict[str, VehicleDefinition]) -> None:
    probe = Mission(tl.hms(30), seed=6, definitions=defs)
    los, _ = _gap(probe, S, 300, 3 * 3600)
    m = Mission(los - 60, seed=6, definitions=defs)
    s = TelemetryStream(m, defs[S])
    tx = Transmitter(defs[S], m.faults, m.seed, frames_per_message=10)
    msgs = tx.feed(s.frames_until(los + 120)) + tx.flush()
    assert msgs and all(msg.kind == "live" for msg in msgs)
    # About two minutes at 10 frames a second never reach the ground (LOS is known to 10 s).
    assert 1100 <= tx.stats.lost_out_of_coverage <= 1300
    assert max(msg.seq + msg.frames for msg in msgs) == s.k - tx.stats.lost_out_of_coverage


def test_recorder_keeps_the_newest_when_full(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(tl.hms(30), seed=8, definitions=defs)
    s = TelemetryStream(m, defs[A])
    tx = Transmitter(defs[A], m.faults, m.seed, recorder_frames=1000)
    m.inject(A, "los", at=m.t)
    tx.feed(s.frames_until(m.t + 60))
    assert tx.recorded == 1000 and tx.stats.recorder_overwritten == 2000
    assert tx.recorder[0].seq == s.k - 1000


def test_messages_carry_consecutive_frames(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(tl.hms(30), seed=8, definitions=defs)
    start = m.find_coverage(A, m.t, 120)
    m = Mission(start, seed=8, definitions=defs)
    s = TelemetryStream(m, defs[A])
    tx = Transmitter(defs[A], m.faults, m.seed, frames_per_message=40)
    m.inject(A, "frame_loss", {"probability": 0.05}, at=m.t)
    msgs = tx.feed(s.frames_until(m.t + 60)) + tx.flush()
    assert max(msg.frames for msg in msgs) == 40
    for msg in msgs:  # a lost frame ends a message: each one's frames are consecutive
        env = decode_envelope(msg.payload, vehicle=A, stream="hbr", frame_bytes=128)
        counters = env.frames[:, 3] & 0x3F
        expect = 1 + (env.seq + np.arange(env.frames.shape[0])) % 50
        assert np.array_equal(counters, expect)


def test_auto_batching() -> None:
    assert auto_frames_per_message(50, 1) == 5
    assert auto_frames_per_message(50, 100) == 500
    assert auto_frames_per_message(10, 1000) == 1000


def test_backlog_is_bounded_and_counted() -> None:
    pub = Publisher(RunnerOptions(backlog_frames=1000), [], lambda t, p: None)
    for k in range(30):
        pub.put(Message("telemetry/live/x/y", b"", 100, "live", k * 100, 0))
    assert pub.queued_frames == 1000
    assert pub.dropped_frames == 2000 and pub.dropped_messages == 20
    assert pub.queue[0].seq == 2000  # the oldest went first


def test_both_ships_at_100x_on_one_core(defs: dict[str, VehicleDefinition]) -> None:
    """The generation side of the runner (physics, frames, batching) well above 100x."""
    m = Mission(tl.hms(55), seed=9, definitions=defs)
    streams = [TelemetryStream(m, defs[v]) for v in (A, S)]
    txs = [Transmitter(defs[v], m.faults, m.seed, frames_per_message=500,
                       recorder_frames=10**6) for v in (A, S)]
    t0 = time.process_time()
    for _ in range(30):  # 300 s of mission in 10 s steps, as the runner does at 100x
        for s, tx in zip(streams, txs, strict=True):
            tx.feed(s.frames_until(s.next_get + 10.0))
    speed = 300.0 / (time.process_time() - t0)
    assert speed > 100.0, f"only {speed:.0f}x"
