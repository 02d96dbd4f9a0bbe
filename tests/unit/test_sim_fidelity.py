"""What the drills teach matches the sources (issue 15): the facts of
/work/shared/astp-facts.md, "Additions (December 2026)", one test per corrected fact. The
drills' own cues are in test_drill_scenarios.py, the faults' in test_sim_faults.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import format_get, format_utc, parse_get
from groundstation.core.units import convert
from simulators import orbit, recorder
from simulators.link import Transmitter
from simulators.mission import Mission
from simulators.runner import RunnerOptions

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


# --- the onboard recorder ---------------------------------------------------------------------

def test_recorder_holds_30_min_of_hbr_and_dumps_at_8x(defs: dict[str, VehicleDefinition]
                                                      ) -> None:
    # About 2 h of LBR (3.75 in/s) or 30 min of HBR (15 in/s) on one tape, dumped at
    # 120 in/s: 32x LBR, 8x HBR.
    assert (recorder.HBR_CAPACITY_S, recorder.LBR_CAPACITY_S) == (1800.0, 7200.0)
    assert (recorder.HBR_DUMP_RATE, recorder.LBR_DUMP_RATE) == (8.0, 32.0)
    o = RunnerOptions()
    assert (o.recorder_s, o.playback_rate) == (1800.0, 8.0)
    tx = Transmitter(defs[A], Mission(tl.hms(30), seed=1, definitions=defs).faults, 1,
                     recorder_frames=int(o.recorder_s * 50))
    assert tx.playback_rate == 8.0 and tx.recorder_cap == 90_000  # 30 min of 50 frames/s


def test_a_full_recorder_keeps_the_newest_30_min(defs: dict[str, VehicleDefinition]) -> None:
    from simulators.link import _Run

    tx = Transmitter(defs[A], Mission(tl.hms(30), seed=1, definitions=defs).faults, 1,
                     recorder_frames=int(recorder.HBR_CAPACITY_S * 50))
    frames = np.zeros((500, 128), dtype=np.uint8)
    for k in range(0, 40 * 60 * 50, 500):  # 40 min out of contact
        tx._record(_Run(k, k * 20_000_000, frames))
    assert tx.recorded == 90_000
    assert tx.stats.recorder_overwritten == 10 * 60 * 50  # the oldest 10 min
    assert tx.recorder[0].seq == 10 * 60 * 50


# --- ground coverage and where things happened --------------------------------------------------

def test_tananarive_is_not_a_station() -> None:
    # It had ceased operations before launch (US notice of 12 July 1975).
    names = {s.name for net in orbit.NETWORK.values() for s in net}
    codes = {s.code for net in orbit.NETWORK.values() for s in net}
    assert "Tananarive" not in names and "TAN" not in codes


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    ua, ub = orbit._unit(*a), orbit._unit(*b)
    return math.degrees(math.acos(float(np.clip(ua @ ub, -1.0, 1.0)))) * 111.2


@pytest.mark.parametrize(("event", "place", "within_km"), [
    ("docking", (40.0, -12.0), 700.0),  # over the Atlantic off Portugal
    ("handshake", orbit.METZ, 30.0),  # over Metz
])
def test_docking_and_handshake_happen_where_they_did_and_are_heard(
        event: str, place: tuple[float, float], within_km: float) -> None:
    t = tl.event(event).get
    lat, lon = orbit.subsatellite(A, np.array([t]))
    assert _distance_km((float(lat[0]), float(lon[0])), place) < within_km, (lat, lon)
    g = orbit.geometry(A, np.array([t]))
    station = orbit.NETWORK[A][int(g.station[0])].code if g.station[0] >= 0 else None
    assert station is not None or bool(g.ats6[0])  # both were televised live
    m = Mission(t - 1, seed=1)
    assert m.env(A, t).aos


def test_docking_is_over_the_sea_west_of_portugal() -> None:
    lat, lon = orbit.subsatellite(A, np.array([tl.DOCKING_1]))
    assert 36 < lat[0] < 44 and -25 < lon[0] < -9.5  # the coast is at ~9 W
    assert format_utc(tl.DOCKING_1) == "1975-07-17T16:09:09Z"
    assert format_utc(tl.HANDSHAKE).startswith("1975-07-17T19:1")


def test_the_ground_track_does_not_jump() -> None:
    t = np.arange(tl.APOLLO_ORBIT, tl.SEPARATION, 10.0)
    r = orbit.position_eci(A, t)
    step = np.linalg.norm(np.diff(r, axis=0), axis=1)
    assert step.max() < 80.0  # ~7.8 km/s for 10 s


# --- the timeline ----------------------------------------------------------------------------

def test_entry_interface_and_blackout() -> None:
    ei = tl.event("entry-interface").get
    assert format_get(ei) == "217:07:46" and format_utc(ei) == "1975-07-24T20:57:47Z"
    assert tl.entry_altitude_ft(ei) == pytest.approx(400_000)
    assert ei < tl.BLACKOUT[0] < tl.BLACKOUT[1] < tl.ELS_ARM
    # The altitudes of the landing sequence come in order, the real fumes at ~217:25.
    assert tl.ELS_ARM < tl.CABIN_REPRESS < tl.BAROSWITCH < tl.MAIN_CHUTES < tl.SPLASHDOWN
    fumes_end = tl.entry_time_at_ft(tl.ASTP_RCS_OFF_FT)
    assert format_utc(fumes_end).startswith("1975-07-24T21:15")
    assert fumes_end - tl.entry_time_at_ft(tl.ASTP_DROGUES_FT) == pytest.approx(30.0)
    assert tl.event("cabin-repress").get > parse_get("217:24:00")


def _time_in(person: str, place: str) -> float:
    home = {p: ("apollo" if h == A else "soyuz") for p, h in tl.CREW_HOME.items()}
    where, since, total = home[person], -math.inf, 0.0
    for t, p, w in tl._MOVES:
        if p != person:
            continue
        if where == place:
            total += t - since
        where, since = w, t
    return total


@pytest.mark.parametrize(("person", "place", "hms"), [
    ("stafford", "soyuz", (7, 10)), ("slayton", "soyuz", (1, 35)),
    ("kubasov", "apollo", (4, 59)),
])
def test_crew_transfer_durations_are_sp4012s(person: str, place: str,
                                             hms: tuple[int, int]) -> None:
    assert _time_in(person, place) == tl.hms(*hms)
    # The cabins count them: someone in the other ship is aboard it.
    assert sum(1 for c in tl.DM_CYCLES for _ in c.moves) > 0


def test_the_dm_was_first_entered_on_day_two() -> None:
    # The docking probe stuck on the first day; it came out after breakfast on 16 July
    # (SP-4209 ch. 11), when Slayton entered the DM.
    assert format_utc(tl.TUNNEL_OPEN).startswith("1975-07-16")
    assert tl.TUNNEL_OPEN > tl.SOYUZ_BURN_1  # the Apollo crew woke during that burn
    assert not tl.tunnel_open(tl.hms(12)) and tl.tunnel_open(tl.hms(30))


def test_the_false_leak_night() -> None:
    # The night of 17-18 July (GET ~51-58 h): both crews asleep, the gas sealed.
    from simulators.faults import tunnel_sealed

    for get in np.arange(parse_get("051:30:00"), parse_get("056:00:00"), 600.0):
        assert tl.crew_asleep(A, get) and tl.crew_asleep(S, get) and tunnel_sealed(get)


# --- the definitions ---------------------------------------------------------------------------

def test_three_inverters_each_with_its_caution_light(defs: dict[str, VehicleDefinition]
                                                     ) -> None:
    inv = [p for p in defs[A].parameters if p.id.startswith("inv") and p.id.endswith("_temp")]
    assert [p.id for p in inv] == ["inv1_temp", "inv2_temp", "inv3_temp"]
    for p in inv:
        assert p.limits is not None and p.limits.red == (None, 190.0)
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    assert len(m.apollo.inv_temp) == 3
    assert all(m.history[A].value(p.id, 0) < 175 for p in inv)


def test_fuel_cell_skin_red_high_is_475(defs: dict[str, VehicleDefinition]) -> None:
    for k in (1, 2, 3):
        p = defs[A].parameter(f"fc{k}_skin_temp")
        assert p.limits is not None and p.limits.red is not None
        assert p.limits.red[1] == pytest.approx(475.0)


def test_soyuz_battery_current_covers_the_eclipse_load(defs: dict[str, VehicleDefinition]
                                                       ) -> None:
    p = defs[S].parameter("batt_current")
    lo, hi = p.eng_range()
    assert lo <= -40.0 and hi >= 40.0
    assert float(p.calibrate(np.array([128]))[0]) == pytest.approx(0.0, abs=1e-9)  # raw 128
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    m.fast_forward(tl.hms(31, 30))
    assert -lo > m.soyuz.load + 10  # the eclipse discharge (~21 A) with room to spare


def test_sm_rcs_quads_are_lettered_consistently_in_russian(defs: dict[str, VehicleDefinition]
                                                           ) -> None:
    for q, ru in zip("abcd", "АБВГ", strict=True):
        for x in ("pkg_temp", "prop_press", "qty"):
            label = defs[A].parameter(f"sm_rcs_{q}_{x}").label["ru"]
            assert f"блок{'а' if x == 'pkg_temp' else ''} {ru}" in label, label
            assert not any("A" <= ch <= "Z" for ch in label.split("блок")[1]), label


def test_every_discrete_state_has_a_russian_name(defs: dict[str, VehicleDefinition]) -> None:
    for d in defs.values():
        for p in d.parameters:
            if p.type != "discrete":
                continue
            assert p.calibration is not None and p.calibration.states is not None
            states = set(p.calibration.states.values())
            assert set(p.state_labels.get("ru", {})) == states, p.id
            for st in states:
                assert any("А" <= ch <= "я" for ch in p.state_label(st, "ru")), (p.id, st)
            assert p.state_label(next(iter(states)), "en") in states


def test_soyuz_bottles_and_tanks_show_kgf_cm2_in_moscow(defs: dict[str, VehicleDefinition]
                                                        ) -> None:
    assert convert([1.0], "kgf/cm2", "atm")[0] == pytest.approx(0.967841, rel=1e-5)
    assert convert([14.223343], "psia", "kgf/cm2")[0] == pytest.approx(1.0, rel=1e-5)
    for pid in ("o2_reserve_press", "kdu_fuel_press", "kdu_ox_press", "dpo_press", "do_press",
                "kdu_pressurant_press"):
        assert defs[S].parameter(pid).display["moscow"] == "kgf/cm2", pid


def test_dm_instrumentation(defs: dict[str, VehicleDefinition]) -> None:
    # N2 and O2 supply spheres, DM temperature, and the pressure between the DM and Soyuz
    # hatches (the false-leak drill's parameter), all in Apollo's downlink.
    for pid in ("dm_n2_press", "dm_o2_press", "dm_temp", "dm_tunnel_press"):
        assert defs[A].parameter(pid).limits is not None
    m = Mission(tl.DM_CYCLES[0].start - 60, seed=1, definitions=defs)
    n2, o2 = m.apollo.dm_n2, m.apollo.dm_o2
    m.fast_forward(tl.DM_CYCLES[0].end + 60)
    # Each transfer raises the DM with N2 (~1.4 kg) and flushes it with O2 (~2.6 kg: 1.5
    # DM volumes through in 22 min) from the spheres.
    assert 0.8 < n2 - m.apollo.dm_n2 < 2.0 and 1.5 < o2 - m.apollo.dm_o2 < 3.5
    assert 240 < m.history[A].value("dm_tunnel_press", 0) < 270
