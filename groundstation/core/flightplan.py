"""The ASTP timeline: named events at their GET, mission phases, burns, the docking
sequences, the docking-module (DM) transfer cycles and where each crew member is.

Times come from astp-facts.md (NASA SP-4209 and the other sources it cites) where it gives
them; every other time is an estimate and its event says so (`source="estimate"`). The
ingest can call `phase_at` / `docked_at` itself for any frame time (including frames played
back from the Apollo recorder), so a limit context never depends on when a frame arrived.

Phase names are the ones the telemetry definitions' limit contexts use: prelaunch, ascent,
orbit, rendezvous, docked, transfer, undocked, entry.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from groundstation.core.mission_time import EARLIEST_GET, format_get, parse_duration, parse_get

APOLLO = "apollo_csm"
SOYUZ = "soyuz"
VEHICLES = (APOLLO, SOYUZ)
PHASES = ("prelaunch", "ascent", "orbit", "rendezvous", "docked", "transfer", "undocked",
          "entry")


def hms(h: int, m: int = 0, s: float = 0.0) -> float:
    sign = -1 if h < 0 else 1
    return sign * (abs(h) * 3600 + m * 60 + s)


# --- key times (GET seconds) ----------------------------------------------------------------

SOYUZ_LAUNCH = hms(-7, 30, 1)
SOYUZ_ORBIT = SOYUZ_LAUNCH + 530.0
APOLLO_LAUNCH = 0.0
APOLLO_ORBIT = hms(0, 9, 55)
SIVB_SEP = hms(1, 15)  # estimate: CSM separates from the S-IVB, turns around
DM_DOCK = hms(1, 30)  # estimate: CSM docks with the DM in the S-IVB adapter
DM_EXTRACT = hms(1, 50)  # estimate
# The docking probe stuck in the CM tunnel on the first day: the crew could not remove it
# until, after breakfast on 16 July, a procedure from the ground freed it and Slayton
# entered the DM (SP-4209 ch. 11, "16 July - Chase"). The hour is an estimate.
TUNNEL_OPEN = hms(21, 0)
SOYUZ_BURN_1 = hms(17, 36)  # estimate: orbit 17, circularisation to ~225 km
SOYUZ_LOWERING = hms(20, 30)  # estimate: "after their first 28 hours", to ~0.65 atm
RENDEZVOUS = hms(41, 9, 59)  # Jul 17 13:00 UTC: Soyuz in the sextant, VHF voice
VHF_RANGING = hms(41, 46, 59)  # 13:37 UTC: ranging acquired at 222 km
COELLIPTIC = hms(42, 21, 59)  # 14:12 UTC: coelliptic burn to 210 x 209 km
TPI = hms(43, 26, 59)  # 15:17 UTC: terminal phase burn, 0.9 s, range 35 km
GO_FOR_DOCKING = hms(43, 55, 59)  # 15:46 UTC
DOCKING_1 = hms(44, 19, 8)
# 19:18:53 UTC: the docking was over the Atlantic off Portugal and the handshake over Metz;
# with the orbit pinned to the docking (simulators/orbit.py DOCKING_POINT) the ground track
# passes over Metz here, 3 h 10 min after the docking (the facts sheet's ~19:15 was an
# estimate of "~3 h after docking").
HANDSHAKE = hms(47, 28, 52)
UNDOCKING_1 = hms(88, 13, 19)
DOCKING_2 = hms(88, 43, 38)
UNDOCKING_2 = hms(91, 36, 11)
SEPARATION = hms(94, 52, 26)
RANGING_OFF = hms(95, 30)  # estimate
SOYUZ_DEORBIT = hms(134, 10)  # estimate (~50 min before landing)
SOYUZ_MODULE_SEP = hms(134, 33)  # estimate
SOYUZ_LANDING = hms(135, 0, 53)
TUNNEL_CLOSED_FINAL = hms(191, 30)  # estimate: hatches closed before the DM is jettisoned
DM_JETTISON = hms(191, 56, 59)
APOLLO_DEORBIT = hms(216, 47, 46)
CM_SM_SEP = hms(217, 2)  # estimate
ENTRY_INTERFACE = hms(217, 7, 46)  # 20:57:47 UTC (JSC-10638; ASTP medical report)
BLACKOUT = (ENTRY_INTERFACE + 90, ENTRY_INTERFACE + 390)  # estimate: entry plasma blackout
SPLASHDOWN = hms(217, 28, 23)
APOLLO_CREW_INGRESS = hms(-2, 30)  # estimate
SOYUZ_CREW_INGRESS = SOYUZ_LAUNCH - hms(2, 0)  # estimate
FALSE_GNC_ALARM = hms(36, 16, 59)  # Jul 17 03:07 CDT: false guidance-system alarm (real)
SOYUZ_TV_REPAIRED = SOYUZ_BURN_1 + hms(1, 0)  # real failure; colour camera used after
MISSION_END = {APOLLO: SPLASHDOWN, SOYUZ: SOYUZ_LANDING}


# --- the CM's descent ------------------------------------------------------------------------

# Earth landing system (JSC-10638, Apollo Soyuz Mission Anomaly Report No. 1): the crew arms
# the pyrotechnic buses at 50,000 ft and the ELS sequencer (ELS LOGIC and ELS AUTO) at
# 30,000 ft; the 24,000 ft baroswitches then latch the ELS activate relay, which disables the
# CM RCS and fires the apex cover (+0.4 s) and the drogues (+2 s); after a 14 s timer the
# 10,000 ft baroswitches release the drogues and deploy the mains. On ASTP the ELS AUTO
# switch was missed: nothing happened at 24,000 ft, the drogues were deployed by hand at
# 18,550 ft with the RCS still firing, and the RCS was disabled by hand at 9,600 ft, 30 s
# later (~21:15:07 UTC, ASTP medical report).
ELS_ARM_FT = 30_000.0
REPRESS_FT = 27_000.0  # standard atmosphere 4.99 psia: outside passes the cabin's 5 psia
BAROSWITCH_FT = 24_000.0
MAIN_CHUTES_FT = 10_000.0
ASTP_DROGUES_FT = 18_550.0  # manual drogue deployment (JSC-10638)
ASTP_RCS_OFF_FT = 9_600.0  # RCS disabled by hand (JSC-10638)

# Altitude of the CM (ft) by GET, from the deorbit burn to splashdown: the sources' times
# (entry interface 20:57:47 UTC at 400,000 ft; manual drogues at 18,550 ft 30 s before the
# RCS was disabled at 9,600 ft at ~21:15:07 UTC; splashdown 21:18:24 UTC) joined by an
# estimated glide: a slow hypersonic descent, then the free fall of the capsule (~360 ft/s
# near 20,000 ft) and the drogues (~300 ft/s). The last 9,600 ft under the mains take the
# 197 s between the sources' times (~49 ft/s, faster than three mains' ~32 ft/s at sea level;
# the times are kept as the sources give them). One profile serves a nominal and the ASTP
# descent alike (drogues at 24,000 ft would have slowed the nominal one a little earlier).
ENTRY_PROFILE = (
    (APOLLO_DEORBIT, 722_000.0),
    (ENTRY_INTERFACE, 400_000.0),
    (hms(217, 11), 300_000.0),
    (hms(217, 15), 220_000.0),
    (hms(217, 19), 160_000.0),
    (hms(217, 21, 30), 110_000.0),
    (hms(217, 22, 55), 75_000.0),
    (hms(217, 23, 35), 45_000.0),
    (hms(217, 24, 6), ELS_ARM_FT),
    (hms(217, 24, 21), BAROSWITCH_FT),
    (hms(217, 24, 36), ASTP_DROGUES_FT),
    (hms(217, 25, 6), ASTP_RCS_OFF_FT),
    (SPLASHDOWN, 0.0),
)
ORBIT_FT = 722_000.0  # ~220 km, the orbit model's mean altitude


def entry_altitude_ft(get: float) -> float:
    """The CM's altitude (ft) at a GET: the orbit's before the deorbit burn, the entry
    profile after it, zero after splashdown."""
    ts = [t for t, _ in ENTRY_PROFILE]
    if get <= ts[0]:
        return ORBIT_FT
    if get >= ts[-1]:
        return 0.0
    i = bisect.bisect_right(ts, get) - 1
    (t0, a0), (t1, a1) = ENTRY_PROFILE[i], ENTRY_PROFILE[i + 1]
    return a0 + (a1 - a0) * (get - t0) / (t1 - t0)


def entry_time_at_ft(alt_ft: float) -> float:
    """The GET at which the descending CM passes an altitude."""
    for (t0, a0), (t1, a1) in itertools.pairwise(ENTRY_PROFILE):
        if a1 <= alt_ft <= a0:
            return t0 + (t1 - t0) * (a0 - alt_ft) / (a0 - a1)
    raise ValueError(f"the CM never passes {alt_ft:g} ft")


ELS_ARM = entry_time_at_ft(ELS_ARM_FT)
CABIN_REPRESS = entry_time_at_ft(REPRESS_FT)
BAROSWITCH = entry_time_at_ft(BAROSWITCH_FT)
MAIN_CHUTES = entry_time_at_ft(MAIN_CHUTES_FT)


@dataclass(frozen=True)
class Burn:
    vehicle: str
    name: str
    get: float
    duration_s: float
    engine: str  # SPS / KDU (main engines) or RCS
    source: str = "estimate"

    @property
    def end(self) -> float:
        return self.get + self.duration_s


BURNS = (
    Burn(SOYUZ, "soyuz-circularisation", SOYUZ_BURN_1, 22.0, "KDU"),
    Burn(APOLLO, "nc1", hms(3, 50), 12.0, "SPS"),
    Burn(APOLLO, "nc2", hms(23, 5), 8.0, "SPS"),
    Burn(APOLLO, "ncc", hms(40, 35), 4.0, "SPS"),
    Burn(APOLLO, "coelliptic", COELLIPTIC, 6.0, "SPS", "time: SP-4209; duration: estimate"),
    Burn(APOLLO, "tpi", TPI, 0.9, "SPS", "SP-4209"),
    Burn(APOLLO, "separation-burn", SEPARATION, 10.0, "RCS",
         "time: facts sheet; duration: estimate"),
    Burn(SOYUZ, "soyuz-deorbit", SOYUZ_DEORBIT, 180.0, "KDU"),
    Burn(APOLLO, "apollo-deorbit", APOLLO_DEORBIT, 10.0, "SPS",
         "time: facts sheet; duration: estimate"),
)


# --- DM transfer cycles --------------------------------------------------------------------

@dataclass(frozen=True)
class DMCycle:
    """One working cycle of the docking module for a crossing between the ships.

    start: the CM-side DM hatch closes and N2 is added to bring the DM from the CM's
    ~255 mm Hg to ~490 (about 16 min); the BO-DM valve equalises it with Soyuz; at
    hold_start the Soyuz-side hatches open; at hold_end they close and the DM is vented back
    to ~255 and flushed with O2 (so the CM is not loaded with nitrogen); at end the CM-side
    hatch opens again. moves: (GET, person, where) with where in apollo, soyuz, dm.
    """

    name: str
    start: float
    hold_start: float
    hold_end: float
    end: float
    moves: tuple[tuple[float, str, str], ...]


def _cycle(name: str, start: float, hold_min: float, to_soyuz: tuple[str, ...],
           to_apollo: tuple[str, ...], start_in_dm: tuple[str, ...]) -> DMCycle:
    hold_start = start + 20 * 60
    hold_end = hold_start + hold_min * 60
    end = hold_end + 40 * 60
    moves = [(start, p, "dm") for p in start_in_dm]
    moves += [(hold_start, p, "soyuz") for p in to_soyuz]
    moves += [(hold_start, p, "dm") for p in to_apollo]
    moves += [(hold_end, p, "dm") for p in start_in_dm if p not in to_soyuz]
    moves += [(end, p, "apollo") for p in to_apollo]
    return DMCycle(name, start, hold_start, hold_end, end, tuple(sorted(moves)))


# Four crossings (facts sheet). What SP-4012 gives are the times in the other ship: Stafford
# 7 h 10 min in Soyuz, Slayton 1 h 35 min, Kubasov 4 h 59 min in Apollo; the cycles are laid
# out to give exactly those (tests/unit/test_sim_timeline.py checks them). Everything else
# is an estimate shaped by SP-4209: on Jul 17 Stafford and Slayton cross at the hatch
# opening; Stafford comes back into the DM after 1 h 01 min, Slayton (the DM pilot, whose
# furnace experiments were in the DM) at the end of the cycle. On Jul 18 Brand goes to
# Soyuz as Leonov comes to Apollo; later Leonov and Brand go home as Kubasov comes to Apollo
# and Stafford goes to Soyuz; then Kubasov and Stafford go home. Stafford's Jul 18 visit
# (6 h 09 min) is Kubasov's (4 h 59 min) plus the DM cycles either side of it.
_C1_START = HANDSHAKE - 20 * 60
_C1_END_HOLD = HANDSHAKE + hms(1, 35)
_C3_HOLD = hms(68, 40)
_C4_START = _C3_HOLD + 10 * 60 + 40 * 60 + hms(4, 59)
DM_CYCLES = (
    DMCycle("transfer-1", _C1_START, HANDSHAKE, _C1_END_HOLD, _C1_END_HOLD + 40 * 60,
            ((_C1_START, "stafford", "dm"), (_C1_START, "slayton", "dm"),
             (HANDSHAKE, "stafford", "soyuz"), (HANDSHAKE, "slayton", "soyuz"),
             (HANDSHAKE + hms(1, 1), "stafford", "dm"), (_C1_END_HOLD, "slayton", "dm"),
             (_C1_END_HOLD + 40 * 60, "stafford", "apollo"),
             (_C1_END_HOLD + 40 * 60, "slayton", "apollo"))),
    _cycle("transfer-2", hms(62, 20), 10, ("brand",), ("leonov",), ("brand",)),
    _cycle("transfer-3", _C3_HOLD - 20 * 60, 10, ("leonov", "stafford"), ("kubasov", "brand"),
           ("leonov", "stafford")),
    _cycle("transfer-4", _C4_START, 10, ("kubasov",), ("stafford",), ("kubasov",)),
)

CREW_HOME = {"stafford": APOLLO, "brand": APOLLO, "slayton": APOLLO, "leonov": SOYUZ,
             "kubasov": SOYUZ}
_MOVES = sorted(m for c in DM_CYCLES for m in c.moves)


def _crew_table() -> tuple[list[float], list[dict[str, int]]]:
    """Crew in each cabin after each move, so a lookup is one bisection."""
    where = {p: ("apollo" if home == APOLLO else "soyuz") for p, home in CREW_HOME.items()}
    times: list[float] = [-math.inf]
    counts = [_count(where)]
    for t, person, place in _MOVES:
        where[person] = place
        times.append(t)
        counts.append(_count(where))
    return times, counts


def _count(where: dict[str, str]) -> dict[str, int]:
    return {APOLLO: sum(w == "apollo" for w in where.values()),
            SOYUZ: sum(w == "soyuz" for w in where.values())}


_CREW_TIMES, _CREW_COUNTS = _crew_table()


def crew_aboard(vehicle: str, get: float) -> int:
    """How many people are in a ship's cabin at a GET (DM occupants count for neither)."""
    if vehicle == APOLLO and (get < APOLLO_CREW_INGRESS or get >= SPLASHDOWN):
        return 0
    if vehicle == SOYUZ and (get < SOYUZ_CREW_INGRESS or get >= SOYUZ_LANDING):
        return 0
    return _CREW_COUNTS[bisect.bisect_right(_CREW_TIMES, get) - 1][vehicle]


def dm_cycle_at(get: float) -> DMCycle | None:
    for c in DM_CYCLES:
        if c.start <= get < c.end:
            return c
    return None


def dm_attached(get: float) -> bool:
    return DM_DOCK <= get < DM_JETTISON


def tunnel_open(get: float) -> bool:
    """CM forward hatch (hatch 1) open: the DM is part of the CM's volume unless a cycle
    has closed the DM's own CM-end hatch. Closed around the undock/redock period."""
    return (TUNNEL_OPEN <= get < TUNNEL_CLOSED_FINAL
            and not hms(87, 50) <= get < hms(92, 0))


# Apollo's nights (estimates from SP-4209): the crew woke on Jul 16 as Soyuz circularised its
# orbit; the false guidance alarm cut the second night short at 03:07 CDT on Jul 17; after
# the long first joint day they slept until 02:00 CDT on Jul 18 (the night of the false DM
# leak); then eight hours a day at the same clock time.
APOLLO_NIGHTS = ((hms(9, 30), SOYUZ_BURN_1), (hms(28, 30), FALSE_GNC_ALARM),
                 (hms(51, 10), hms(59, 10)))
APOLLO_NIGHT_LENGTH = 8 * 3600.0


# Apollo's PCM bit rate by the flight plan: low bit rate (1.6 kbit/s,
# telemetry_defs/apollo_csm_lbr.yaml) through the crew's first night, high bit rate
# otherwise. Estimate: the ASTP flight plan's PCM schedule is not in our sources; LBR is
# what let the onboard recorder hold ~2 h (more than an orbit between station passes)
# instead of ~30 min of HBR (astp-facts.md, "Onboard recorder"), which is what a quiet
# night needs. An instructor switches it any time (sim/control: pcm_mode).
APOLLO_LBR = (APOLLO_NIGHTS[0],)


def pcm_mode_at(vehicle: str, get: float,
                switches: Sequence[tuple[float, str]] = ()) -> str:
    """A ship's PCM mode ("HBR" or "LBR") at a GET: the flight plan's, or the latest
    instructor switch (GET, mode) since the flight plan last changed it. Soyuz: HBR (its
    one format)."""
    if vehicle != APOLLO:
        return "HBR"
    mode, since = "HBR", -math.inf
    for a, b in APOLLO_LBR:
        if a <= get < b:
            mode, since = "LBR", a
        elif get >= b and b > since:
            mode, since = "HBR", b
    for at, m in switches:
        if since <= at <= get:
            mode, since = m, at
    return mode


def crew_asleep(vehicle: str, get: float) -> bool:
    """Sleep periods (estimates): 8 h a day; nobody sleeps through a DM cycle."""
    if dm_cycle_at(get) is not None:
        return False
    if vehicle == APOLLO:
        for a, b in APOLLO_NIGHTS:
            if a <= get < b:
                return True
        start = APOLLO_NIGHTS[-1][0]
        return get >= start and (get - start) % 86400.0 < APOLLO_NIGHT_LENGTH
    start, length = hms(0, 10), 8 * 3600.0  # Soyuz: 23:00 Moscow time
    if get < start:
        return False
    return (get - start) % 86400.0 < length


# --- docking mechanism -----------------------------------------------------------------------

def docked_at(get: float) -> bool:
    """Hard-docked or captured: from contact to undocking."""
    return DOCKING_1 <= get < UNDOCKING_1 or DOCKING_2 <= get < UNDOCKING_2


def hard_docked(get: float) -> bool:
    """The structural latches closed: from 5 min after contact to undocking (estimate)."""
    return (DOCKING_1 + 300 <= get < UNDOCKING_1) or (DOCKING_2 + 300 <= get < UNDOCKING_2)


def phase_at(vehicle: str, get: float) -> str:
    """The mission phase of a ship at a GET (the names the limit contexts use)."""
    if vehicle == APOLLO:
        if get < APOLLO_LAUNCH:
            return "prelaunch"
        if get < APOLLO_ORBIT:
            return "ascent"
        if get >= APOLLO_DEORBIT:
            return "entry"
    elif vehicle == SOYUZ:
        if get < SOYUZ_LAUNCH:
            return "prelaunch"
        if get < SOYUZ_ORBIT:
            return "ascent"
        if get >= SOYUZ_DEORBIT:
            return "entry"
    else:
        raise KeyError(f"no vehicle {vehicle!r}; vehicles are {', '.join(VEHICLES)}")
    if get < RENDEZVOUS:
        return "orbit"
    if get < DOCKING_1:
        return "rendezvous"
    if docked_at(get):
        return "transfer" if dm_cycle_at(get) is not None else "docked"
    if get < SEPARATION:
        return "undocked"
    return "orbit"


# Range between the ships (km) by GET: VHF ranging from acquisition at 222 km to contact
# (SP-4209: 222 km at 13:37, coelliptic at 14:12, 35 km after the TPI burn at 15:17, "half
# a mile" at 15:46); the knots between are estimates. Range rate follows from the slope.
RANGE_KNOTS = (
    (VHF_RANGING, 222.0), (COELLIPTIC, 150.0), (TPI, 35.0), (hms(43, 50), 1.6),
    (GO_FOR_DOCKING, 0.8), (hms(44, 5), 0.05), (hms(44, 14), 0.05), (DOCKING_1, 0.0),
    (UNDOCKING_1, 0.0), (UNDOCKING_1 + 600, 0.05), (DOCKING_2 - 900, 0.05), (DOCKING_2, 0.0),
    (UNDOCKING_2, 0.0), (UNDOCKING_2 + 600, 0.04), (SEPARATION, 0.04),
    (RANGING_OFF, 0.04 + 2.3),
)


def ranging_active(get: float) -> bool:
    return (VHF_RANGING <= get < DOCKING_1 or UNDOCKING_1 <= get < DOCKING_2
            or UNDOCKING_2 <= get < RANGING_OFF)


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    name: str
    get: float
    title: str
    vehicles: tuple[str, ...] = VEHICLES
    source: str = "facts sheet"
    aliases: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        est = " (estimate)" if self.source.startswith("estimate") else ""
        return f"{format_get(self.get)}  {self.name:<22} {self.title}{est}"


def _events() -> tuple[Event, ...]:
    a, s = (APOLLO,), (SOYUZ,)
    ev = [
        Event("soyuz-crew-ingress", SOYUZ_CREW_INGRESS, "Leonov and Kubasov board Soyuz 19",
              s, "estimate"),
        Event("soyuz-launch", SOYUZ_LAUNCH, "Soyuz 19 lifts off from Baikonur", s),
        Event("soyuz-orbit", SOYUZ_ORBIT, "Soyuz 19 in orbit, 186 x 220 km", s),
        Event("apollo-crew-ingress", APOLLO_CREW_INGRESS, "Stafford, Brand, Slayton board "
              "the CM", a, "estimate"),
        Event("apollo-launch", APOLLO_LAUNCH, "Apollo lifts off from KSC", a,
              aliases=("liftoff", "launch")),
        Event("apollo-orbit", APOLLO_ORBIT, "Apollo orbit insertion, 186.3 x 221.9 km", a,
              aliases=("insertion",)),
        Event("sivb-sep", SIVB_SEP, "CSM separates from the S-IVB and turns around", a,
              "estimate"),
        Event("dm-docking", DM_DOCK, "CSM docks with the docking module", a, "estimate"),
        Event("dm-extraction", DM_EXTRACT, "CSM/DM extracted from the S-IVB", a, "estimate"),
        Event("tunnel-open", TUNNEL_OPEN, "CM-DM hatches opened for DM checkout", a,
              "estimate"),
        Event("soyuz-tv-repaired", SOYUZ_TV_REPAIRED, "Soyuz colour TV in use after the "
              "black-and-white camera failure", s, "estimate"),
        Event("soyuz-pressure-lowering", SOYUZ_LOWERING, "Soyuz cabin lowered from 760 to "
              "~510 mm Hg, O2 raised to ~35 %", s, "estimate"),
        Event("false-gnc-alarm", FALSE_GNC_ALARM, "false guidance-system alarm wakes the "
              "Apollo crew", a, "SP-4209"),
        Event("rendezvous", RENDEZVOUS, "Soyuz in Apollo's sextant; VHF voice contact",
              aliases=("vhf-voice", "soyuz-sighted")),
        Event("vhf-ranging", VHF_RANGING, "VHF ranging acquired at 222 km"),
        Event("go-for-docking", GO_FOR_DOCKING, "Moscow, Houston: go for docking"),
        Event("docking", DOCKING_1, "first docking (Apollo active)",
              aliases=("docking-1", "first-docking")),
        Event("handshake", HANDSHAKE, "hatches open; Stafford and Leonov shake hands",
              source="estimate", aliases=("hatch-opening",)),
        Event("undocking", UNDOCKING_1, "first undocking", aliases=("undocking-1",)),
        Event("docking-2", DOCKING_2, "second docking (Soyuz active)",
              aliases=("second-docking",)),
        Event("undocking-2", UNDOCKING_2, "final undocking", aliases=("final-undocking",)),
        Event("separation", SEPARATION, "Apollo separation manoeuvre"),
        Event("soyuz-module-sep", SOYUZ_MODULE_SEP, "Soyuz orbital and service modules "
              "separate", s, "estimate"),
        Event("soyuz-landing", SOYUZ_LANDING, "Soyuz 19 lands near Arkalyk", s,
              aliases=("landing",)),
        Event("dm-jettison", DM_JETTISON, "docking module jettisoned", a),
        Event("cm-sm-sep", CM_SM_SEP, "CM/SM separation", a, "estimate"),
        Event("entry-interface", ENTRY_INTERFACE, "entry interface, 400,000 ft", a,
              "JSC-10638", aliases=("ei",)),
        Event("blackout", BLACKOUT[0], "entry plasma blackout begins", a, "estimate"),
        Event("blackout-end", BLACKOUT[1], "out of the blackout, heard through Hawaii", a,
              "estimate"),
        Event("els-arm", ELS_ARM, "30,000 ft: the crew arms the ELS (ELS LOGIC, ELS AUTO)", a,
              "estimate (the procedure: JSC-10638)"),
        Event("cabin-repress", CABIN_REPRESS, "outside passes the cabin's 5 psia: the cabin "
              "pressure relief valve admits outside air", a, "estimate"),
        Event("baroswitch", BAROSWITCH, "24,000 ft baroswitches: an armed ELS disables the "
              "RCS, jettisons the apex cover and deploys the drogues", a,
              "estimate (the sequence: JSC-10638)"),
        Event("main-chutes", MAIN_CHUTES, "10,000 ft: drogues released, main parachutes out",
              a, "estimate (the sequence: JSC-10638)"),
        Event("splashdown", SPLASHDOWN, "Apollo splashdown near Hawaii", a),
    ]
    for b in BURNS:
        ev.append(Event(b.name, b.get, f"{b.engine} burn, {b.duration_s:g} s", (b.vehicle,),
                        b.source))
    for c in DM_CYCLES:
        ev.append(Event(c.name, c.start, "DM cycle: CM hatch closed, DM raised to ~490 mm Hg",
                        source="estimate"))
        ev.append(Event(c.name + "-end", c.end, "DM back at CM pressure, CM hatch open",
                        source="estimate"))
    return tuple(sorted(ev, key=lambda e: e.get))


EVENTS = _events()
_BY_NAME = {n: e for e in EVENTS for n in (e.name, *e.aliases)}


def event(name: str) -> Event:
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise KeyError(f"no event {name!r}; events are: "
                       f"{', '.join(e.name for e in EVENTS)}") from None


_EVENT_TIMES = [e.get for e in EVENTS]


def events_between(t0: float, t1: float, vehicle: str | None = None) -> list[Event]:
    """Events with t0 < get <= t1 (for one vehicle, or all)."""
    lo, hi = bisect.bisect_right(_EVENT_TIMES, t0), bisect.bisect_right(_EVENT_TIMES, t1)
    return [e for e in EVENTS[lo:hi] if vehicle is None or vehicle in e.vehicles]


_LOOKS_LIKE_GET = re.compile(r"^[-+]?\d+:\d")


def parse_time(spec: str) -> float:
    """A start or stop time: a GET ('044:00:00', '-007:30:01'), an event name, or an event
    with an offset ('docking-30m', 'splashdown+5m', 'tpi-1h30m'). Raises ValueError."""
    text = spec.strip()
    try:
        t = parse_get(text)
    except ValueError:
        if _LOOKS_LIKE_GET.match(text):
            raise
        t = None
    if t is None:
        name, off = text, 0.0
        if text.lower() not in _BY_NAME:
            for i in range(len(text) - 1, 0, -1):
                if text[i] in "+-" and text[:i].lower() in _BY_NAME:
                    name = text[:i]
                    try:
                        off = parse_duration(text[i + 1:])
                    except ValueError:
                        continue
                    off = -off if text[i] == "-" else off
                    break
        try:
            t = event(name).get + off
        except KeyError as exc:
            raise ValueError(f"{spec!r} is neither a GET (HHH:MM:SS) nor an event "
                             f"[+/-offset]: {exc.args[0]}") from None
    if t < EARLIEST_GET:
        raise ValueError(f"{spec!r} is {format_get(t)}; the simulation starts at "
                         f"{format_get(EARLIEST_GET)} at the earliest")
    return t
