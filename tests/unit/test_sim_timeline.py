"""The mission clock and the ASTP timeline: times, phases, and events that fire at their GET
(seen both as the simulator's events and in the decoded telemetry)."""

from __future__ import annotations

import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import (
    LIFTOFF_NS,
    format_get,
    format_utc,
    frame_index,
    frame_time_ns,
    parse_duration,
    parse_get,
)
from simulators.checks import check_blocks
from simulators.mission import Mission
from simulators.telemetry import TelemetryStream

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_get_is_utc_from_the_apollo_liftoff() -> None:
    assert format_utc(0) == "1975-07-15T19:50:01Z"
    assert format_utc(tl.SOYUZ_LAUNCH) == "1975-07-15T12:20:00Z"
    assert format_utc(tl.DOCKING_1) == "1975-07-17T16:09:09Z"
    assert format_utc(tl.UNDOCKING_2) == "1975-07-19T15:26:12Z"
    assert format_utc(tl.SOYUZ_LANDING) == "1975-07-21T10:50:54Z"
    assert format_utc(tl.SPLASHDOWN) == "1975-07-24T21:18:24Z"
    assert format_get(tl.SOYUZ_LAUNCH) == "-007:30:01"
    assert parse_get("044:19:08") == tl.DOCKING_1
    assert parse_get("-007:30:01") == tl.SOYUZ_LAUNCH


def test_frame_numbering_is_fixed_to_mission_time() -> None:
    k = frame_index(tl.DOCKING_1, 50.0)
    assert frame_time_ns(k, 20_000_000) == LIFTOFF_NS + round(tl.DOCKING_1 * 1e9)
    assert frame_index(tl.DOCKING_1 + 0.001, 50.0) == k + 1


@pytest.mark.parametrize(("spec", "get"), [
    ("044:00:00", tl.hms(44)),
    ("docking-30m", tl.DOCKING_1 - 1800),
    ("splashdown+5m", tl.SPLASHDOWN + 300),
    ("tpi-1h30m", tl.TPI - 5400),
    ("transfer-1-10m", tl.DM_CYCLES[0].start - 600),
    ("liftoff", 0.0),
])
def test_start_specs(spec: str, get: float) -> None:
    assert tl.parse_time(spec) == get


@pytest.mark.parametrize(("spec", "message"), [
    ("warp-9", "neither a GET"), ("-012:00:00", "earliest"), ("044:61:00", "below 60"),
])
def test_bad_start_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tl.parse_time(spec)


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


@pytest.mark.parametrize(("vehicle", "get", "phase"), [
    (A, -60, "prelaunch"), (A, 30, "ascent"), (A, tl.hms(20), "orbit"),
    (A, tl.hms(42), "rendezvous"), (A, tl.DOCKING_1 + 60, "docked"),
    (A, tl.HANDSHAKE + 60, "transfer"), (A, tl.hms(55), "docked"),
    (A, tl.UNDOCKING_1 + 60, "undocked"), (A, tl.DOCKING_2 + 60, "docked"),
    (A, tl.SEPARATION + 60, "orbit"), (A, tl.APOLLO_DEORBIT + 1, "entry"),
    (S, tl.SOYUZ_LAUNCH - 1, "prelaunch"), (S, tl.SOYUZ_LAUNCH + 1, "ascent"),
    (S, -60, "orbit"), (S, tl.HANDSHAKE + 60, "transfer"), (S, tl.hms(100), "orbit"),
    (S, tl.SOYUZ_DEORBIT + 1, "entry"),
])
def test_phases(vehicle: str, get: float, phase: str) -> None:
    assert tl.phase_at(vehicle, get) == phase


def test_crossings_move_the_crews() -> None:
    assert (tl.crew_aboard(A, tl.hms(40)), tl.crew_aboard(S, tl.hms(40))) == (3, 2)
    assert (tl.crew_aboard(A, tl.HANDSHAKE + 60), tl.crew_aboard(S, tl.HANDSHAKE + 60)) == (1, 4)
    assert tl.crew_aboard(A, tl.hms(68)) == 3  # Leonov visiting, Brand in Soyuz
    assert tl.crew_aboard(A, tl.hms(72)) == 3  # Kubasov visiting, Brand back, Stafford away
    assert tl.crew_aboard(S, tl.hms(72)) == 2  # Leonov and Stafford
    assert (tl.crew_aboard(A, tl.hms(100)), tl.crew_aboard(S, tl.hms(100))) == (3, 2)


def _fly(defs: dict[str, VehicleDefinition], start: float, end: float,
         vehicle: str, pids: list[str]) -> tuple[Mission, dict[str, tuple[np.ndarray, ...]]]:
    m = Mission(start, seed=4, definitions=defs, historical=False)
    s = TelemetryStream(m, defs[vehicle])
    got: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in pids}

    def keep(batch: object, _ctx: object) -> None:
        for p in pids:
            got[p].append(batch.series(p)[:2])  # type: ignore[attr-defined]

    report = check_blocks(m, defs[vehicle], [s.frames_until(end)], StreamDecoder(defs[vehicle]),
                          on_batch=keep)
    assert report.violations == {}
    out = {p: ((np.concatenate([g[0] for g in v]) - LIFTOFF_NS) / 1e9,
               np.concatenate([g[1] for g in v])) for p, v in got.items()}
    return m, out


def test_first_docking_fires_at_its_get(defs: dict[str, VehicleDefinition]) -> None:
    m, a = _fly(defs, tl.DOCKING_1 - 60, tl.DOCKING_1 + 60, A, ["dock_capture_latch"])
    fired = {e.name: t for e, t in m.fired}
    assert fired["docking"] == pytest.approx(tl.DOCKING_1, abs=1.0)
    t, latch = a["dock_capture_latch"]
    captured = t[latch == defs[A].parameter("dock_capture_latch").state_code("CAPTURED")]
    assert captured[0] == pytest.approx(tl.DOCKING_1, abs=1.0)
    assert m.phase(A) == "docked" and m.phase(S) == "docked" and m.docked()


def test_soyuz_sees_the_same_docking(defs: dict[str, VehicleDefinition]) -> None:
    _, s = _fly(defs, tl.DOCKING_1 - 30, tl.DOCKING_1 + 400, S, ["dock_capture", "dock_hooks"])
    t, cap = s["dock_capture"]
    assert t[cap == 1][0] == pytest.approx(tl.DOCKING_1, abs=1.0)
    t, hooks = s["dock_hooks"]
    assert t[hooks == 1][0] == pytest.approx(tl.DOCKING_1 + 300, abs=1.0)  # then the hooks


def test_vhf_ranging_acquires_at_222_km(defs: dict[str, VehicleDefinition]) -> None:
    _, a = _fly(defs, tl.VHF_RANGING - 30, tl.VHF_RANGING + 30, A,
                ["vhf_range", "vhf_range_rate"])
    t, r = a["vhf_range"]
    assert r[t < tl.VHF_RANGING - 1].max() == 0.0
    assert r[t > tl.VHF_RANGING + 1][0] == pytest.approx(222.0, abs=0.1)
    rate = a["vhf_range_rate"][1][t > tl.VHF_RANGING + 1]
    assert -40 < rate.mean() < -25  # closing at ~34 m/s toward the coelliptic burn


def test_terminal_phase_burn(defs: dict[str, VehicleDefinition]) -> None:
    m, a = _fly(defs, tl.TPI - 20, tl.TPI + 20, A, ["sps_chamber_press"])
    before = m.apollo.sps_prop
    t, pc = a["sps_chamber_press"]
    firing = t[pc > 50]
    assert firing[0] == pytest.approx(tl.TPI, abs=0.1)
    assert firing[-1] - firing[0] == pytest.approx(0.9, abs=0.1)
    assert pc.max() == pytest.approx(97.0, abs=1.5)
    assert before == m.apollo.sps_prop  # already burned when the frames were made
    assert ("tpi", pytest.approx(tl.TPI, abs=1)) in [(e.name, t) for e, t in m.fired]


def test_transfer_raises_the_dm_and_lowers_it_again(defs: dict[str, VehicleDefinition]
                                                    ) -> None:
    """The DM goes from the CM's ~255 mm Hg to ~490 for a crossing and back (1 sample/min)."""
    c = tl.DM_CYCLES[0]
    m = Mission(c.start - 120, seed=4, definitions=defs, historical=False)
    press = []
    while m.t < c.end + 120:
        m.fast_forward(m.t + 60)
        press.append(m.history[A].value("dm_press", m.step_index))
    p = np.array(press)
    assert 245 < p[0] < 265 and 245 < p[-1] < 265
    assert 480 < p.max() < 510
    assert m.apollo.cm.po2 / 51.715 > 4.2  # the DM was flushed with O2, not N2, coming back


def test_event_list_is_ordered_and_named() -> None:
    names = [e.name for e in tl.EVENTS]
    assert len(names) == len(set(names))
    assert [e.get for e in tl.EVENTS] == sorted(e.get for e in tl.EVENTS)
    assert tl.event("first-docking").get == tl.DOCKING_1


def test_historical_anomalies_can_be_left_out(defs: dict[str, VehicleDefinition]) -> None:
    """The real minor anomalies: Soyuz's TV failed before launch; a false guidance alarm woke
    the Apollo crew on Jul 17 (the master alarm). --no-historical flies without them."""
    for historical, tv, alarm in ((True, "FAIL", "ON"), (False, "OFF", "OFF")):
        m = Mission(tl.FALSE_GNC_ALARM - 5, seed=1, definitions=defs, historical=historical)
        m.advance_to(tl.FALSE_GNC_ALARM + 5)
        assert m.history[A].value("master_alarm", m.step_index) == alarm
        early = Mission(tl.hms(10), seed=1, definitions=defs, historical=historical)
        assert early.history[S].value("tv_status", 0) == tv
