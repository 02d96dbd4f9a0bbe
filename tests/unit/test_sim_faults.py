"""Each fault drives the parameters a flight controller would watch past their limits, and
clearing it brings them back; all judged on frames through the real decoder."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.envelope import decode_envelope
from groundstation.core.mission_time import EARLIEST_GET, LIFTOFF_NS, parse_get
from simulators import orbit
from simulators.apollo import dm_stage
from simulators.checks import Report, check_blocks
from simulators.faults import DM_SEALED, FaultError, FaultManager, dm_sealed
from simulators.link import Transmitter
from simulators.mission import Mission
from simulators.telemetry import TelemetryStream

APOLLO, SOYUZ = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture(scope="module")
def base(defs: dict[str, VehicleDefinition]) -> Mission:
    """Day two in orbit, both ships nominal; each drill flies its own copy."""
    return Mission(parse_get("030:00:00"), seed=7, definitions=defs, historical=False)


def _check(m: Mission, d: VehicleDefinition, s: TelemetryStream, until: float) -> Report:
    block = s.frames_until(until)
    assert block is not None
    return check_blocks(m, d, [block], StreamDecoder(d))


def drill(base: Mission, vehicle: str, fault: str, params: dict[str, Any], *,
          start: float | None = None, on_s: float = 600.0, recover_s: float = 3600.0,
          window_s: float = 120.0, **inject: Any) -> tuple[Report, Report, Report]:
    """Nominal frames for a minute, the fault's last window_s of on_s, and window_s of
    frames recover_s after it is cleared (the hours between flown fast, without frames)."""
    m = copy.deepcopy(base)
    if start is not None:
        m.fast_forward(start)
    d = m.definitions[vehicle]
    s = TelemetryStream(m, d)
    t_fault = m.t + 60.0
    f = m.inject(vehicle, fault, params, at=t_fault, **inject)
    before = _check(m, d, s, t_fault)
    m.fast_forward(t_fault + on_s - window_s)
    s.skip_to(m.t)
    during = _check(m, d, s, m.t + window_s)
    m.clear(vehicle, fault_id=f.id)
    m.fast_forward(m.t + recover_s)
    s.skip_to(m.t)
    after = _check(m, d, s, m.t + window_s)
    return before, during, after


def series(m: Mission, s: TelemetryStream, pid: str, until: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """(GET, value) of one parameter over the stream's next frames, decoded."""
    got: list[tuple[np.ndarray, np.ndarray]] = []
    block = s.frames_until(until)
    assert block is not None
    check_blocks(m, s.definition, [block], StreamDecoder(s.definition),
                 on_batch=lambda b, _: got.append(b.series(pid)[:2]))
    t = np.concatenate([g[0] for g in got])
    return (t - LIFTOFF_NS) / 1e9, np.concatenate([g[1] for g in got])


def _assert_drill(result: tuple[Report, Report, Report],
                  expect: dict[str, int | tuple[int, ...]]) -> None:
    """expect: parameter -> the limit state it must reach (-2 red low .. 2 red high), or
    the states any of which will do."""
    before, during, after = result
    assert before.violations == {}, f"not nominal before the fault: {before.violations}"
    for pid, worst in expect.items():
        got = during.violations.get(pid)
        assert got is not None, f"{pid} stayed in limits; out were {sorted(during.violations)}"
        allowed = worst if isinstance(worst, tuple) else (worst,)
        assert got.worst in allowed, f"{pid}: limit state {got.worst}, expected {worst}"
    assert after.violations == {}, f"not recovered after clearing: {after.violations}"


# --- Apollo system faults ---------------------------------------------------------------------

def test_cabin_leak_beyond_the_regulators(base: Mission) -> None:
    # 80 lb/h is more than the main (1.4 lb/h) and emergency (40 lb/h) regulators supply:
    # O2 flow pegs high (the O2 FLOW HI alarm), cabin and suit pressure fall through red, the
    # DM (open to the CM) with them, and the cryo O2 tanks sag under a 40 lb/h draw.
    r = drill(base, APOLLO, "cabin_leak", {"rate_lb_h": 80.0}, on_s=600, recover_s=5400)
    _assert_drill(r, {"cabin_press": -2, "suit_press": -2, "o2_flow": 2, "dm_press": -2,
                      "o2_tank1_press": -2, "o2_tank2_press": -2})


def test_small_cabin_leak_shows_as_o2_flow_only(base: Mission) -> None:
    # 1 lb/h is within what the main regulator makes up: pressure holds, flow rises.
    r = drill(base, APOLLO, "cabin_leak", {"rate_lb_h": 1.0}, on_s=900, recover_s=2400)
    assert set(r[1].violations) == {"o2_flow"}
    assert r[1].violations["o2_flow"].worst == 2
    assert r[2].violations == {}


def test_fuel_cell_loss(base: Mission) -> None:
    r = drill(base, APOLLO, "fuel_cell_loss", {"cell": 2}, on_s=1800, recover_s=3600)
    _assert_drill(r, {"fc2_volts": -2, "fc2_skin_temp": -2})
    # The other two cells carry the load: their current rises, still in limits.
    assert not {"fc1_amps", "fc3_amps", "main_bus_a_volts"} & set(r[1].violations)


def test_bus_undervolt(base: Mission) -> None:
    r = drill(base, APOLLO, "bus_undervolt", {"bus": "B", "amps": 40.0}, on_s=120,
              recover_s=60)
    # The window starts at the short: the master alarm is on until the crew resets it.
    _assert_drill(r, {"main_bus_b_volts": -2, "master_alarm": 1})


def test_o2_tank_heater_pressure_spike(base: Mission) -> None:
    r = drill(base, APOLLO, "o2_tank_heater", {"tank": 2, "rate_psi_min": 60.0}, on_s=300,
              recover_s=5400)
    _assert_drill(r, {"o2_tank2_press": 2})


def test_apollo_13_pattern(base: Mission) -> None:
    r = drill(base, APOLLO, "o2_tank_heater", {"tank": 2, "rupture": True}, on_s=900,
              recover_s=3600, window_s=300)
    # Fuel cell 2 survives, as on Apollo 13, carrying the whole load (amps high).
    _assert_drill(r, {"o2_tank2_press": -2, "o2_tank1_press": -2, "main_bus_b_volts": -2,
                      "main_bus_a_volts": -2, "fc1_volts": -2, "fc3_volts": -2,
                      "fc2_amps": (1, 2)})


def test_apollo_13_dropout_and_bus_b(base: Mission) -> None:
    """The tank lets go: a 1.8 s telemetry dropout; bus B collapses toward 14 V."""
    m = copy.deepcopy(base)
    d = m.definitions[APOLLO]
    s = TelemetryStream(m, d)
    m.inject(APOLLO, "o2_tank_heater", {"tank": 2, "rupture": True}, at=m.t + 30)
    bus_b: list[np.ndarray] = []
    report = check_blocks(m, d, [s.frames_until(m.t + 420)], StreamDecoder(d),
                          on_batch=lambda b, _: bus_b.append(b.series("main_bus_b_volts")[1]))
    assert report.bad_frames == 90  # 1.8 s of 50 frames a second without sync
    assert np.concatenate(bus_b)[-50:].max() < 17.0


def test_glycol_loop_failure(base: Mission) -> None:
    # Start so that the ship passes into darkness while the loop is failed: the stagnant
    # radiators freeze (GLYCOL TEMP LOW) while the evaporator outlet and inverters heat.
    t = np.arange(base.t + 3000, base.t + 3000 + orbit.PERIOD_S, 30.0)
    sun = orbit.geometry(APOLLO, t).sunlit
    dusk = float(t[np.flatnonzero((sun[:-1] > 0.5) & (sun[1:] <= 0.5))[0]])
    r = drill(base, APOLLO, "glycol_loop", {}, start=dusk - 46 * 60, on_s=3600,
              recover_s=5400)
    _assert_drill(r, {"glycol_evap_out_temp": 2, "glycol_rad_out_temp": -2,
                      "inv1_temp": 2, "inv2_temp": 2})


@pytest.fixture(scope="module")
def descent(defs: dict[str, VehicleDefinition]) -> Mission:
    """The CM on its parachutes' way down, heard again after the blackout, five minutes
    before the cabin relief valve would open."""
    return Mission(tl.event("cabin-repress").get - 300, seed=7, definitions=defs,
                   historical=False)


def test_entry_rcs_fumes(descent: Mission) -> None:
    # ASTP, Jul 24 1975: the CM RCS fires on unchecked (CM RCS 1 and 2 PRESS through the
    # 260 psia C&W line, the master alarm with them) while the relief valve is open early.
    m = copy.deepcopy(descent)
    d = m.definitions[APOLLO]
    s = TelemetryStream(m, d)
    assert m.env(APOLLO, m.t).aos and m.phase(APOLLO) == "entry"
    t_fault = m.t + 60.0
    f = m.inject(APOLLO, "entry_rcs_fumes", {}, at=t_fault)
    before = _check(m, d, s, t_fault)
    during = _check(m, d, s, t_fault + 90)
    m.clear(APOLLO, fault_id=f.id)
    m.fast_forward(m.t + 60)
    s.skip_to(m.t)
    after = _check(m, d, s, m.t + 60)
    _assert_drill((before, during, after), {"cm_rcs1_press": -2, "cm_rcs2_press": -2,
                                            "master_alarm": 1})
    assert set(during.violations) == {"cm_rcs1_press", "cm_rcs2_press", "master_alarm"}
    # Red within the first minute (1 s samples): ~35 s for system 1, ~40 s for system 2.
    red = {}
    for pid in ("cm_rcs1_press", "cm_rcs2_press"):
        m2 = copy.deepcopy(descent)
        s2 = TelemetryStream(m2, d)
        m2.inject(APOLLO, "entry_rcs_fumes", {}, at=t_fault)
        t, p = series(m2, s2, pid, t_fault + 90)
        red[pid] = float(t[np.flatnonzero(p < 260.0)[0]] - t_fault)
        assert p[t < t_fault].min() > 285.0
    assert 25 < red["cm_rcs1_press"] < red["cm_rcs2_press"] < 60, red


def test_entry_rcs_fumes_cabin_climbs_early(descent: Mission) -> None:
    m = copy.deepcopy(descent)
    s = TelemetryStream(m, m.definitions[APOLLO])
    t_fault = m.t + 30.0
    m.inject(APOLLO, "entry_rcs_fumes", {}, at=t_fault)
    t, p = series(m, s, "cabin_press", t_fault + 150)
    assert 4.8 < p[t < t_fault].mean() < 5.2
    assert p[-50:].mean() > 7.0  # ~1.1 psi a minute toward sea level, 4 min early
    assert t[-1] < tl.CABIN_REPRESS


def test_entry_rcs_fumes_only_in_the_descent(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    with pytest.raises(FaultError, match="outside the CM's descent"):
        m.inject(APOLLO, "entry_rcs_fumes")
    with pytest.raises(FaultError, match="outside the CM's descent"):
        m.inject(APOLLO, "entry_rcs_fumes", at="splashdown+1m")
    f = m.inject(APOLLO, "entry_rcs_fumes", at="cabin-repress-3m")
    assert f.start == tl.CABIN_REPRESS - 180 and f.params == {"rate_psi_s": 0.9}


@pytest.fixture(scope="module")
def docked_again(defs: dict[str, VehicleDefinition]) -> Mission:
    """The second docking: the tunnel is closed, the DM sealed between its hatches."""
    return Mission(tl.event("docking-2").get + 1800 - 60, seed=7, definitions=defs,
                   historical=False)


def test_dm_trapped_gas_looks_like_a_leak(docked_again: Mission) -> None:
    # The false DM leak: the trapped gas cools, DM PRESS falls below its 230 mm Hg yellow
    # line (a DM leak to EECOM) within two minutes; no gas is lost, so clearing brings it back.
    m = copy.deepcopy(docked_again)
    assert m.phase(APOLLO) == "docked" and m.env(APOLLO, m.t + 60).aos
    gas = m.apollo.dm.total
    r = drill(m, APOLLO, "dm_trapped_gas", {}, on_s=300, recover_s=600, window_s=240)
    _assert_drill(r, {"dm_press": -1})
    assert set(r[1].violations) == {"dm_press"}
    m2 = copy.deepcopy(docked_again)
    s = TelemetryStream(m2, m2.definitions[APOLLO])
    t_fault = m2.t + 60.0
    m2.inject(APOLLO, "dm_trapped_gas", {}, at=t_fault)
    t, p = series(m2, s, "dm_press", t_fault + 180)
    assert 250 < p[t < t_fault].mean() < 265
    low = float(t[np.flatnonzero(p < 230.0)[0]] - t_fault)
    assert 45 < low < 120, low
    assert p[-50:].mean() > 200.0  # yellow, not red
    assert m2.apollo.dm.total == pytest.approx(gas, rel=1e-9)  # nothing leaked


def test_dm_trapped_gas_only_while_the_dm_is_sealed(defs: dict[str, VehicleDefinition]
                                                    ) -> None:
    for get in np.arange(0, tl.DM_JETTISON + 3600, 60.0):
        inside = any(a <= get < b for a, b in DM_SEALED)
        assert dm_sealed(get) == inside == (dm_stage(get) == "isolated"), get
    m = Mission(tl.hms(50), seed=1, definitions=defs)
    with pytest.raises(FaultError, match="the DM is not sealed at 050:00:00"):
        m.inject(APOLLO, "dm_trapped_gas")
    with pytest.raises(FaultError, match=r"delta_k 500\.0 is above 100"):
        m.inject(APOLLO, "dm_trapped_gas", {"delta_k": 500}, at="docking-2+30m")
    with pytest.raises(FaultError, match="unknown parameter 'kelvin'"):
        m.inject(APOLLO, "dm_trapped_gas", {"kelvin": -5}, at="docking-2+30m")
    assert m.faults.faults == []
    f = m.inject(APOLLO, "dm_trapped_gas", at="docking-2+30m")
    assert f.params == {"delta_k": -50.0}


# --- Soyuz system faults ----------------------------------------------------------------------

def test_soyuz_cabin_leak(base: Mission) -> None:
    r = drill(base, SOYUZ, "cabin_leak", {"rate_kg_h": 20.0, "module": "bo"}, on_s=600,
              recover_s=2400)
    _assert_drill(r, {"sa_press": -2, "bo_press": -2, "sa_po2": (-1, -2), "bo_po2": (-1, -2)})


def test_soyuz_depressurisation(base: Mission) -> None:
    # The hatch between the modules is open: both fall, and pO2 with them although the
    # regenerators and the O2 reserve try to hold it.
    r = drill(base, SOYUZ, "cabin_depress", {"hole_mm": 10.0, "module": "sa"}, on_s=300,
              recover_s=2400, window_s=60)
    _assert_drill(r, {"sa_press": -2, "bo_press": -2, "sa_po2": (-1, -2)})


def test_soyuz_11_rate(defs: dict[str, VehicleDefinition]) -> None:
    """A Soyuz 11-sized opening into the sealed descent module empties it in minutes."""
    m = Mission(parse_get("134:05:00"), seed=11, definitions=defs, historical=False)
    s = TelemetryStream(m, defs[SOYUZ])
    hole = m.t + 10
    m.inject(SOYUZ, "cabin_depress", {"hole_mm": 28.0, "module": "sa"}, at=hole)
    t, p = series(m, s, "sa_press", hole + 120)
    assert p[t < hole].min() > 495
    assert p[-1] < 50  # Soyuz 11: 915 to 50 mm Hg in 115 s


def test_soyuz_bus_undervolt(base: Mission) -> None:
    r = drill(base, SOYUZ, "bus_undervolt", {"amps": 40.0}, on_s=120, recover_s=60)
    _assert_drill(r, {"bus_volts": -2, "load_current": 2})


def test_soyuz_coolant_loop(base: Mission) -> None:
    r = drill(base, SOYUZ, "coolant_loop", {}, on_s=3000, recover_s=3600)
    _assert_drill(r, {"coolant_temp": 2, "coolant_pump": 1})


# --- sensor faults -------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "params", "expect"), [
    ("sensor_bias", {"parameter": "cabin_press", "offset": -1.0}, {"cabin_press": -2}),
    ("sensor_drift", {"parameter": "cabin_press", "rate_per_h": 2.0}, {"cabin_press": 1}),
    ("sensor_noisy", {"parameter": "cabin_press", "sigma": 1.0}, {"cabin_press": (-2, 2)}),
    ("sensor_stuck", {"parameter": "cabin_temp", "value": 100.0}, {"cabin_temp": 2}),
    ("sensor_dropout", {"parameter": "co2_pp", "to": "high"}, {"co2_pp": 2}),
    ("sensor_dropout", {"parameter": "dock_ring_latch", "to": "high"}, {}),
])
def test_sensor_faults(base: Mission, fault: str, params: dict[str, Any],
                       expect: dict[str, Any]) -> None:
    r = drill(base, APOLLO, fault, params, on_s=900, recover_s=60)
    _assert_drill(r, expect)
    assert set(r[1].violations) == set(expect)  # only the sensor: the ship is fine


def test_stuck_sensor_holds_its_reading(base: Mission) -> None:
    m = copy.deepcopy(base)
    s = TelemetryStream(m, m.definitions[APOLLO])
    m.inject(APOLLO, "sensor_stuck", {"parameter": "glycol_rad_out_temp"}, at=m.t + 60)
    _, free = series(m, s, "glycol_rad_out_temp", m.t + 60)
    m.fast_forward(m.t + 1200)
    s.skip_to(m.t)
    _, stuck = series(m, s, "glycol_rad_out_temp", m.t + 120)
    assert np.ptp(free) > 0.0  # a live sensor dithers between counts
    assert np.ptp(stuck) == 0.0


def test_ramped_bias_grows_linearly(base: Mission) -> None:
    m = copy.deepcopy(base)
    s = TelemetryStream(m, m.definitions[APOLLO])
    t0 = m.t + 60
    m.inject(APOLLO, "sensor_bias", {"parameter": "main_bus_a_volts", "offset": -6.0},
             at=t0, ramp_s=600.0)
    levels = []
    for at in (t0 - 60, t0 + 270, t0 + 700):
        m.fast_forward(at)
        s.skip_to(m.t)
        _, v = series(m, s, "main_bus_a_volts", m.t + 60)
        levels.append(v.mean() - m.apollo.bus["A"])
    # No bias, then half of it (the middle of the ramp's minute), then all of it.
    assert levels == pytest.approx([0.0, -3.0, -6.0], abs=0.3)


# --- link faults ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def in_contact(base: Mission) -> Mission:
    """Apollo at the start of 5 minutes heard by a ground station."""
    m = copy.deepcopy(base)
    m.fast_forward(m.find_coverage(APOLLO, m.t, 300))
    return m


def _downlink(in_contact: Mission, fault: str, params: dict[str, Any]
              ) -> tuple[StreamDecoder, StreamDecoder, int]:
    """Frames through the transmitter with the fault on for 2 min, then off for 2 min."""
    m = copy.deepcopy(in_contact)
    d = m.definitions[APOLLO]
    s = TelemetryStream(m, d)
    tx = Transmitter(d, m.faults, m.seed, frames_per_message=50, recorder_frames=10**6)
    f = m.inject(APOLLO, fault, params, at=m.t)
    on, off = StreamDecoder(d), StreamDecoder(d)
    for dec, until in ((on, m.t + 120), (off, m.t + 240)):
        if dec is off:
            m.clear(APOLLO, fault_id=f.id)
            s.skip_to(m.t)
        for msg in tx.feed(s.frames_until(until)) + tx.flush():
            env = decode_envelope(msg.payload, vehicle=APOLLO, stream=d.stream,
                                  frame_bytes=d.frame.bytes_per_frame)
            dec.decode(env.frames, env.times_ns(s.period_ns))
    assert tx.recorded == 0  # heard throughout: nothing went to the recorder
    return on, off, tx.stats.lost_link


def test_bit_errors(in_contact: Mission) -> None:
    on, off, _ = _downlink(in_contact, "bit_errors", {"ber": 1e-3})
    # 1024 bits a frame at 1e-3: most frames take a hit, 3 % of them in the sync word.
    assert on.frames_bad_sync > 100
    assert off.frames_bad_sync == 0 and off.frames_missing == 0


def test_frame_loss(in_contact: Mission) -> None:
    on, off, lost = _downlink(in_contact, "frame_loss", {"probability": 0.2})
    # Every lost frame is a gap the decoder counts (bar a last frame of the window).
    assert lost - 1 <= on.frames_missing <= lost
    assert 0.15 < lost / 6000 < 0.25
    assert off.frames_missing == 0


def test_sync_loss_bursts_garble_frames(in_contact: Mission) -> None:
    on, off, _ = _downlink(in_contact, "sync_loss", {"fraction": 0.5})
    assert 0.4 < on.frames_bad_sync / 6000 < 0.6
    assert off.frames_bad_sync == 0


def test_pcm_sync_reads_nosync_during_a_sync_loss(base: Mission) -> None:
    r = drill(base, APOLLO, "sync_loss", {"fraction": 0.3}, on_s=120, recover_s=10)
    assert r[1].violations["pcm_sync"].worst == 2
    assert r[1].bad_frames > 0 and r[2].bad_frames == 0


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("vehicle", "fault", "params", "message"), [
    (APOLLO, "warp_drive", {}, "no fault 'warp_drive'"),
    (APOLLO, "cabin_leak", {"rate_lb_h": "fast"}, "must be a number"),
    (APOLLO, "cabin_leak", {"rate_lb_h": -1.0}, "below"),
    (APOLLO, "cabin_leak", {"rate_kg_h": 1.0}, "takes rate_lb_h"),
    (APOLLO, "fuel_cell_loss", {"cell": 4}, "must be one of 1, 2, 3"),
    (APOLLO, "fuel_cell_loss", {"cell": True}, "got a boolean"),
    (APOLLO, "fuel_cell_loss", {}, "cell is required"),
    (APOLLO, "fuel_cell_loss", {"cell": 1, "colour": "red"}, "unknown parameter 'colour'"),
    (APOLLO, "cabin_depress", {}, "soyuz fault"),
    (APOLLO, "sensor_bias", {"parameter": "no_such", "offset": 1.0}, "no parameter"),
    (APOLLO, "sensor_bias", {"parameter": "master_alarm", "offset": 1.0}, "is a discrete"),
    (APOLLO, "sensor_stuck", {"parameter": "cabin_press", "value": 99.0}, "outside"),
    (SOYUZ, "bit_errors", {"ber": 0.5}, "above"),
    (APOLLO, "entry_rcs_fumes", {"rate_psi_s": "fast"}, "must be a number"),
    (APOLLO, "entry_rcs_fumes", {"rate_psi_s": 0.0}, "below"),
    (SOYUZ, "entry_rcs_fumes", {}, "apollo_csm fault"),
    (APOLLO, "dm_trapped_gas", {"delta_k": True}, "got a boolean"),
    (SOYUZ, "dm_trapped_gas", {}, "apollo_csm fault"),
])
def test_bad_requests_change_nothing(defs: dict[str, VehicleDefinition], vehicle: str,
                                     fault: str, params: dict[str, Any], message: str) -> None:
    m = Mission(EARLIEST_GET, seed=1, definitions=defs)
    with pytest.raises(FaultError, match=message):
        m.inject(vehicle, fault, params)
    assert m.faults.faults == []


def test_at_in_the_past_is_refused() -> None:
    fm = FaultManager()
    with pytest.raises(FaultError, match="in the past"):
        fm.inject(APOLLO, "los", now=tl.DOCKING_1, at="docking-1m")
    f = fm.inject(APOLLO, "los", now=tl.DOCKING_1, at="docking+10m", duration_s=60)
    assert f.start == tl.DOCKING_1 + 600 and f.end == tl.DOCKING_1 + 660
    assert fm.clear(tl.DOCKING_1, fault_id=f.id) == [f]
    with pytest.raises(FaultError, match="no active or scheduled fault"):
        fm.clear(tl.DOCKING_1, fault_id="F99")
