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
import math
import re
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
TUNNEL_OPEN = hms(6, 0)  # estimate: DM checkout, CM-DM hatches first opened
SOYUZ_BURN_1 = hms(17, 36)  # estimate: orbit 17, circularisation to ~225 km
SOYUZ_LOWERING = hms(20, 30)  # estimate: "after their first 28 hours", to ~0.65 atm
RENDEZVOUS = hms(41, 9, 59)  # Jul 17 13:00 UTC: Soyuz in the sextant, VHF voice
VHF_RANGING = hms(41, 46, 59)  # 13:37 UTC: ranging acquired at 222 km
COELLIPTIC = hms(42, 21, 59)  # 14:12 UTC: coelliptic burn to 210 x 209 km
TPI = hms(43, 26, 59)  # 15:17 UTC: terminal phase burn, 0.9 s, range 35 km
GO_FOR_DOCKING = hms(43, 55, 59)  # 15:46 UTC
DOCKING_1 = hms(44, 19, 8)
HANDSHAKE = hms(47, 25)  # estimate (~3 h after docking)
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
BLACKOUT = (hms(217, 12, 30), hms(217, 16, 30))  # estimate: entry plasma blackout
CABIN_REPRESS = hms(217, 22)  # estimate: cabin relief valve opens near 24,000 ft
SPLASHDOWN = hms(217, 28, 23)
APOLLO_CREW_INGRESS = hms(-2, 30)  # estimate
SOYUZ_CREW_INGRESS = SOYUZ_LAUNCH - hms(2, 0)  # estimate
FALSE_GNC_ALARM = hms(36, 16, 59)  # Jul 17 03:07 CDT: false guidance-system alarm (real)
SOYUZ_TV_REPAIRED = SOYUZ_BURN_1 + hms(1, 0)  # real failure; colour camera used after
MISSION_END = {APOLLO: SPLASHDOWN, SOYUZ: SOYUZ_LANDING}


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


# Four crossings (facts sheet); who moved when is an estimate shaped by SP-4209: Stafford and
# Slayton visit Soyuz on Jul 17; on Jul 18 Brand goes to Soyuz and Leonov to Apollo (about
# 5 h 43 min on the American side in all), then Kubasov visits Apollo (4 h 57 min).
DM_CYCLES = (
    DMCycle("transfer-1", HANDSHAKE - 20 * 60, HANDSHAKE, hms(50, 10), hms(50, 50),
            ((HANDSHAKE - 20 * 60, "stafford", "dm"), (HANDSHAKE - 20 * 60, "slayton", "dm"),
             (HANDSHAKE, "stafford", "soyuz"), (HANDSHAKE, "slayton", "soyuz"),
             (hms(50, 10), "stafford", "dm"), (hms(50, 10), "slayton", "dm"),
             (hms(50, 50), "stafford", "apollo"), (hms(50, 50), "slayton", "apollo"))),
    _cycle("transfer-2", hms(64, 40), 10, ("brand",), ("leonov",), ("brand",)),
    _cycle("transfer-3", hms(70, 50), 10, ("leonov",), ("kubasov", "brand"), ("leonov",)),
    _cycle("transfer-4", hms(76, 57), 10, ("kubasov",), (), ("kubasov",)),
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


def crew_asleep(vehicle: str, get: float) -> bool:
    """Sleep periods (estimates): 8 h a day; nobody sleeps through a DM cycle."""
    if dm_cycle_at(get) is not None:
        return False
    if vehicle == APOLLO:
        start, length = hms(11, 0), 8 * 3600.0
        if hms(35, 0) <= get < FALSE_GNC_ALARM:
            return True  # the second night, cut short by the false GNC alarm
        if hms(35, 0) <= get < hms(43, 0):
            return False
    else:
        start, length = hms(0, 10), 8 * 3600.0  # 23:00 Moscow time
    if get < start:
        return False
    return (get - start) % 86400.0 < length


# --- docking mechanism -----------------------------------------------------------------------

def docked_at(get: float) -> bool:
    """Hard-docked or captured: from contact to undocking."""
    return DOCKING_1 <= get < UNDOCKING_1 or DOCKING_2 <= get < UNDOCKING_2


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
        Event("blackout", BLACKOUT[0], "entry plasma blackout begins", a, "estimate"),
        Event("cabin-repress", CABIN_REPRESS, "cabin relief valve opens; cabin climbs "
              "toward ambient", a, "estimate"),
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
