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
from simulators.apollo import dm_stage, tunnel_stage
from simulators.checks import Report, check_blocks
from simulators.faults import TUNNEL_SEALED, FaultError, FaultManager, tunnel_sealed
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
    """The CM out of the blackout, heard through Hawaii, before the ELS is armed."""
    return Mission(tl.BLACKOUT[1] + 60, seed=7, definitions=defs, historical=False)


def _entry_series(m: Mission, pids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each parameter's (GET, value) from now to splashdown, through the real decoder."""
    d = m.definitions[APOLLO]
    s = TelemetryStream(m, d)
    got: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in pids}

    def keep(batch: Any, _ctx: Any) -> None:
        for p in pids:
            got[p].append(batch.series(p)[:2])

    report = check_blocks(m, d, [s.frames_until(tl.SPLASHDOWN)], StreamDecoder(d),
                          on_batch=keep)
    assert report.violations == {}  # no alarm, nominal or not: the cues are not alarms
    return {p: ((np.concatenate([g[0] for g in v]) - LIFTOFF_NS) / 1e9,
                np.concatenate([g[1] for g in v])) for p, v in got.items()}


ENTRY_CUES = ["els_logic", "els_auto", "els_activate", "apex_cover", "drogue_chutes",
              "main_chutes", "cm_rcs_active", "cm_rcs_jets", "cm_altitude", "cabin_press",
              "cm_rcs1_press", "cm_rcs2_press", "master_alarm"]


def _first(t: np.ndarray, mask: np.ndarray) -> float:
    return float(t[np.flatnonzero(mask)[0]])


def test_nominal_entry_landing_system(descent: Mission) -> None:
    # An armed ELS (JSC-10638): at the 24,000 ft baroswitches the RCS is disabled and the
    # apex cover and drogues go; the mains at 10,000 ft; the cabin takes in outside air from
    # ~27,000 ft until the crew closes the relief valve under the mains.
    m = copy.deepcopy(descent)
    d = m.definitions[APOLLO]
    x = _entry_series(m, ENTRY_CUES)
    code = {p: d.parameter(p).state_code for p in ENTRY_CUES if d.parameter(p).type ==
            "discrete"}
    t, v = x["els_activate"]
    assert _first(t, v == code["els_activate"]("ON")) == pytest.approx(tl.BAROSWITCH, abs=2)
    t, v = x["cm_rcs_active"]
    assert _first(t, v == code["cm_rcs_active"]("OFF")) == pytest.approx(tl.BAROSWITCH, abs=2)
    t, v = x["drogue_chutes"]
    assert _first(t, v == code["drogue_chutes"]("DEPLOYED")) == pytest.approx(
        tl.BAROSWITCH + 2, abs=2)
    t, v = x["main_chutes"]
    assert _first(t, v == code["main_chutes"]("DEPLOYED")) == pytest.approx(tl.MAIN_CHUTES,
                                                                            abs=2)
    t, jets = x["cm_rcs_jets"]
    assert not (jets[t > tl.BAROSWITCH + 2] == code["cm_rcs_jets"]("FIRING")).any()
    t, p = x["cabin_press"]
    assert 4.8 < p[t < tl.CABIN_REPRESS - 5].mean() < 5.2
    assert 9.5 < p[-50:].mean() < 10.6  # outside air to ~10,000 ft, then the valve closed


def test_entry_rcs_fumes_is_the_astp_sequence(descent: Mission) -> None:
    # ASTP (JSC-10638): the ELS AUTO switch missed at 30,000 ft. Nothing at 24,000 ft; the
    # drogues by hand at 18,550 ft with the CM RCS firing while the cabin climbs from 5 psia
    # through the relief valve; the RCS disabled by hand at 9,600 ft (~21:15 UTC). No
    # caution and warning light, no alarm, the CM RCS pressures regulated throughout.
    m = copy.deepcopy(descent)
    d = m.definitions[APOLLO]
    m.inject(APOLLO, "entry_rcs_fumes", at="els-arm-4m")
    x = _entry_series(m, ENTRY_CUES)
    code = {p: d.parameter(p).state_code for p in ENTRY_CUES if d.parameter(p).type ==
            "discrete"}
    t, auto = x["els_auto"]
    assert (auto == code["els_auto"]("MAN")).all()
    t, act = x["els_activate"]
    assert (act == code["els_activate"]("OFF")).all()  # no landing-system events at all
    t, apex = x["apex_cover"]
    assert (apex[t < tl.entry_time_at_ft(tl.ASTP_DROGUES_FT)] == code["apex_cover"]("ON")).all()
    t, drogues = x["drogue_chutes"]
    deployed = _first(t, drogues == code["drogue_chutes"]("DEPLOYED"))
    assert deployed == pytest.approx(tl.entry_time_at_ft(tl.ASTP_DROGUES_FT), abs=2)
    t_alt, alt = x["cm_altitude"]
    assert float(np.interp(deployed, t_alt, alt)) == pytest.approx(18_550, abs=800)
    t, active = x["cm_rcs_active"]
    off = _first(t, active == code["cm_rcs_active"]("OFF"))
    assert off == pytest.approx(tl.entry_time_at_ft(tl.ASTP_RCS_OFF_FT), abs=2)
    assert parse_get("217:24:50") < off < parse_get("217:25:20")  # ~21:15 UTC, GET ~217:25
    t, jets = x["cm_rcs_jets"]
    under = (t >= deployed) & (t < off)
    assert (jets[under] == code["cm_rcs_jets"]("FIRING")).mean() > 0.5  # still firing
    t, p = x["cabin_press"]
    assert p[(t >= deployed) & (t < off)].min() > 6.5  # the cabin taking in outside air
    assert p[np.flatnonzero(t < deployed)[-1]] > p[t < tl.CABIN_REPRESS - 5].mean() + 1.0
    for k in (1, 2):
        t, rcs = x[f"cm_rcs{k}_press"]
        assert rcs.min() > 285 and rcs.max() < 297  # regulated: no pressure cue
    t, ma = x["master_alarm"]
    assert (ma == code["master_alarm"]("OFF")).all()


def test_entry_rcs_fumes_cleared_is_els_auto_late(descent: Mission) -> None:
    """Clearing the fault is the crew throwing ELS AUTO: below 24,000 ft the ELS fires at
    once (RCS disabled, apex cover, drogues)."""
    m = copy.deepcopy(descent)
    f = m.inject(APOLLO, "entry_rcs_fumes", at="els-arm-1m")
    m.fast_forward(tl.BAROSWITCH + 5)
    assert not m.apollo.els_active and m.apollo.drogues == "STOWED" and m.apollo.cm_rcs_active
    m.clear(APOLLO, fault_id=f.id)
    m.advance_to(m.t + 5)
    assert m.apollo.els_active and not m.apollo.cm_rcs_active
    assert m.apollo.drogues == "DEPLOYED" and m.apollo.apex_jett


def test_entry_rcs_fumes_only_before_the_els_is_armed(defs: dict[str, VehicleDefinition]
                                                      ) -> None:
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    with pytest.raises(FaultError, match="before the ELS is armed"):
        m.inject(APOLLO, "entry_rcs_fumes")
    with pytest.raises(FaultError, match="before the ELS is armed"):
        m.inject(APOLLO, "entry_rcs_fumes", at="baroswitch")
    with pytest.raises(FaultError, match="unknown parameter 'rate_psi_s'"):
        m.inject(APOLLO, "entry_rcs_fumes", {"rate_psi_s": 0.9}, at="els-arm-3m")
    f = m.inject(APOLLO, "entry_rcs_fumes", at="els-arm-3m")
    assert f.start == tl.ELS_ARM - 180 and f.params == {}


@pytest.fixture(scope="module")
def night(defs: dict[str, VehicleDefinition]) -> Mission:
    """The night of 17-18 July: hard docked, the hatches between the DM and Soyuz closed
    since the first transfer, Apollo heard through ATS-6."""
    return Mission(parse_get("051:56:30"), seed=7, definitions=defs, historical=False)


def test_dm_trapped_gas_warms_and_reads_like_a_leak(night: Mission) -> None:
    # SP-4209 (18 July): after the hatches were closed with the DM at ~260 mm Hg, the gas
    # trapped between them heated up and its pressure rose: read as a leak. The DM and the
    # orbital module do not move; no gas is lost; clearing brings the reading back.
    m = copy.deepcopy(night)
    assert m.phase(APOLLO) == "docked" and m.env(APOLLO, m.t + 60).aos
    assert tunnel_sealed(m.t) and dm_stage(m.t) == "cm"
    gas = m.apollo.tunnel_gas
    r = drill(m, APOLLO, "dm_trapped_gas", {}, on_s=600, recover_s=1800, window_s=240)
    _assert_drill(r, {"dm_tunnel_press": 1})
    assert set(r[1].violations) == {"dm_tunnel_press"}  # DM PRESS and the rest in limits
    m2 = copy.deepcopy(night)
    s = TelemetryStream(m2, m2.definitions[APOLLO])
    t_fault = m2.t + 60.0
    m2.inject(APOLLO, "dm_trapped_gas", {}, at=t_fault)
    t, p = series(m2, s, "dm_tunnel_press", t_fault + 900)
    before = p[t < t_fault].mean()
    assert 245 < before < 268
    assert np.polyfit(t[t > t_fault], p[t > t_fault], 1)[0] > 0  # it RISES
    high = float(t[np.flatnonzero(p > 275.0)[0]] - t_fault)
    assert 60 < high < 480, high
    assert p[-50:].mean() < 300.0  # levels off: yellow, not red
    assert m2.apollo.tunnel_gas == pytest.approx(gas, rel=1e-9)  # nothing leaked in or out


def test_dm_trapped_gas_only_while_the_gas_is_sealed(defs: dict[str, VehicleDefinition]
                                                     ) -> None:
    for get in np.arange(tl.DOCKING_1 - 600, tl.UNDOCKING_2 + 600, 60.0):
        inside = any(a <= get < b for a, b in TUNNEL_SEALED)
        assert tunnel_sealed(get) == inside == (tunnel_stage(get) == "sealed"), get
    assert tunnel_sealed(parse_get("052:00:00"))  # the night of 17-18 July
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    with pytest.raises(FaultError, match="no gas is sealed between the DM and Soyuz hatches "
                                         "at 030:00:00"):
        m.inject(APOLLO, "dm_trapped_gas")
    with pytest.raises(FaultError, match=r"delta_k 500\.0 is above 100"):
        m.inject(APOLLO, "dm_trapped_gas", {"delta_k": 500}, at="052:00:00")
    assert m.faults.faults == []
    f = m.inject(APOLLO, "dm_trapped_gas", at="052:00:00")
    assert f.params == {"delta_k": 30.0}


# --- the caution and warning panel ---------------------------------------------------------

def _lights(base: Mission, fault: str, params: dict[str, Any], on_s: float,
            start: float | None = None) -> tuple[set[str], Report]:
    """The C&W lights on at the end of on_s with the fault, and the last minute's frames."""
    m = copy.deepcopy(base)
    if start is not None:
        m.fast_forward(start)
    d = m.definitions[APOLLO]
    s = TelemetryStream(m, d)
    m.inject(APOLLO, fault, params, at=m.t + 30)
    m.fast_forward(m.t + 30 + on_s - 60)
    s.skip_to(m.t)
    report = _check(m, d, s, m.t + 60)
    return set(m.apollo.cw), report


@pytest.mark.parametrize(("fault", "params", "on_s", "light", "alarm"), [
    ("inverter_overheat", {"inverter": 1}, 3600, "INV 1 TEMP", ("inv1_temp", 2)),
    ("inverter_overheat", {"inverter": 2}, 3600, "INV 2 TEMP", ("inv2_temp", 2)),
    ("inverter_overheat", {"inverter": 3}, 3600, "INV 3 TEMP", ("inv3_temp", 2)),
    ("fuel_cell_condenser", {"cell": 2}, 1800, "FC 2", ("fc2_cond_temp", 2)),
    ("fuel_cell_condenser", {"cell": 1, "to": "low"}, 1800, "FC 1", ("fc1_cond_temp", -2)),
    ("fuel_cell_ph", {"cell": 3}, 120, "FC 3", ("fc3_ph", 2)),
    ("fuel_cell_loss", {"cell": 2}, 600, "FC BUS DISCONNECT", ("cw_fc_bus_disc", 2)),
    ("ac_bus_overload", {"bus": 1}, 120, "AC BUS 1 OVERLOAD", ("ac_bus1_overload", 2)),
    ("ac_bus_overload", {"bus": 2}, 120, "AC BUS 2 OVERLOAD", ("ac_bus2_overload", 2)),
    ("guidance_warning", {"unit": "cmc"}, 120, "CMC", ("cw_cmc", 2)),
    ("guidance_warning", {"unit": "iss"}, 120, "ISS", ("cw_iss", 2)),
    ("gimbal_lock", {}, 300, "GIMBAL LOCK", ("cw_gimbal_lock", 2)),
    ("crew_alert", {}, 300, "CREW ALERT", ("cw_crew_alert", 1)),
    ("suit_compressor", {}, 300, "SUIT COMP", ("suit_comp_dp", -2)),
    ("sm_rcs_heater", {"quad": "C"}, 5400, "SM RCS C", ("sm_rcs_c_pkg_temp", 2)),
    ("sm_rcs_heater", {"quad": "A", "stuck": "off"}, 5400, "SM RCS A",
     ("sm_rcs_a_pkg_temp", -2)),
])
def test_each_caution_light_has_its_fault(base: Mission, fault: str, params: dict[str, Any],
                                          on_s: float, light: str,
                                          alarm: tuple[str, int]) -> None:
    lights, report = _lights(base, fault, params, on_s)
    assert light in lights, lights
    pid, worst = alarm
    assert pid in report.violations and report.violations[pid].worst == worst, \
        report.violations


@pytest.mark.parametrize(("axis", "motor"), [("pitch", 1), ("pitch", 2), ("yaw", 1),
                                             ("yaw", 2)])
def test_gimbal_motor_lights_with_the_motors_on(base: Mission, axis: str, motor: int) -> None:
    ncc = next(b for b in tl.BURNS if b.name == "ncc")
    lights, report = _lights(base, "sps_gimbal_motor", {"axis": axis, "motor": motor}, 240,
                             start=ncc.get - 280)
    assert f"{axis.upper()} GMBL {motor}" in lights
    assert report.violations[f"cw_{axis}_gmbl{motor}"].worst == 2
    # The motors off (no burn), the same fault lights nothing.
    quiet, _ = _lights(base, "sps_gimbal_motor", {"axis": axis, "motor": motor}, 120)
    assert not any("GMBL" in x for x in quiet)


def test_gimbal_lock_yaw_shows_in_the_attitude(base: Mission) -> None:
    m = copy.deepcopy(base)
    s = TelemetryStream(m, m.definitions[APOLLO])
    t0 = m.t + 30
    m.inject(APOLLO, "gimbal_lock", {"rate_deg_s": 1.0}, at=t0)
    t, yaw = series(m, s, "yaw_att", t0 + 150)
    assert yaw[t < t0].max() < 5 or yaw[t < t0].min() > 355
    assert 85 < yaw[-50:].mean() < 89  # the middle gimbal past 85 deg


def test_cm_rcs_lights_only_once_the_cw_watches_the_cm(defs: dict[str, VehicleDefinition]
                                                       ) -> None:
    # AOH 2.10.6: the CM RCS lights are live in CM mode only, i.e. after CM/SM separation.
    before = Mission(tl.CM_SM_SEP - 900, seed=3, definitions=defs, historical=False)
    before.inject(APOLLO, "cm_rcs_leak", {"system": 1, "rate_psi_min": 20.0}, at="now")
    before.fast_forward(tl.CM_SM_SEP - 60)
    assert before.apollo.cm_rcs_press(0, 0.5) < 260 and "CM RCS 1" not in before.apollo.cw
    after = Mission(tl.CM_SM_SEP + 30, seed=3, definitions=defs, historical=False)
    after.inject(APOLLO, "cm_rcs_leak", {"system": 2, "rate_psi_min": 20.0}, at="now")
    after.advance_to(after.t + 180)
    assert "CM RCS 2" in after.apollo.cw and "CM RCS 1" not in after.apollo.cw


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
    (APOLLO, "entry_rcs_fumes", {"rate_psi_s": 0.9}, "unknown parameter 'rate_psi_s'"),
    (SOYUZ, "entry_rcs_fumes", {}, "apollo_csm fault"),
    (APOLLO, "inverter_overheat", {"inverter": 4}, "must be one of 1, 2, 3"),
    (APOLLO, "sm_rcs_heater", {"quad": "E"}, "must be one of A, B, C, D"),
    (APOLLO, "gimbal_lock", {"peak_deg": 95.0}, "above"),
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
