"""Orbital geometry, vectorised over arrays of GET: where each ship is, whether it is in
sunlight, and which ground station (or the ATS-6 relay) can hear it.

The model is deliberately simple but physical: a circular 220 km orbit at 51.8 degrees
(period ~88.9 min) whose plane passes over the Cape at the Apollo liftoff, turning with
the J2 nodal regression (about -5.5 deg/day), its phase pinned for the joint flight so the
docking and the handshake happen where they did (see DOCKING_POINT); the Earth turns under
it (GMST); the Sun's direction follows the low-precision solar ephemeris for July 1975; the
shadow is a cylinder. Soyuz flies in the same plane (Apollo's launch was timed for that), ahead of
Apollo by an arc that closes to the VHF range during rendezvous.

Coverage is line of sight above a 2 degree elevation mask (estimate) from the stations of
each ship's own network: NASA's STDN for Apollo, the Soviet command-and-measurement points
(NIPs) and the tracking ship Akademik Sergey Korolev for Soyuz. Station positions are
public; which of them supported ASTP, the mask and the ship's position are estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from groundstation.core import flightplan as tl
from groundstation.core.mission_time import LIFTOFF_NS, NS

R_E = 6378.137  # km
MU = 398600.4418  # km^3/s^2
J2 = 1.08263e-3
ALTITUDE = 220.0  # km (orbits 186 x 222 to 225 x 225; a mean)
A = R_E + ALTITUDE
INC = math.radians(51.8)
N_MEAN = math.sqrt(MU / A**3)  # rad/s
PERIOD_S = 2 * math.pi / N_MEAN
RAAN_RATE = -1.5 * N_MEAN * J2 * (R_E / A) ** 2 * math.cos(INC)  # rad/s
MASK = math.radians(2.0)
GEO_R = 42164.0
ATS6_LON = math.radians(35.0)

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Station:
    code: str
    name: str
    lat: float
    lon: float


STDN = (
    Station("MIL", "Merritt Island", 28.51, -80.69),
    Station("BDA", "Bermuda", 32.35, -64.66),
    Station("MAD", "Madrid", 40.45, -4.17),
    Station("ACN", "Ascension", -7.95, -14.40),
    Station("ORR", "Orroral Valley", -35.63, 148.96),
    Station("GWM", "Guam", 13.31, 144.73),
    Station("HAW", "Hawaii", 22.13, -159.67),
    Station("GDS", "Goldstone", 35.34, -116.87),
    Station("ULA", "Fairbanks", 64.97, -147.52),
    Station("QUI", "Quito", -0.62, -78.58),
    Station("AGO", "Santiago", -33.15, -70.67),
)
# Five Soviet sites that do not chain into one long pass, so a pass lasts at most ~12 min as
# the facts sheet says (Shchyolkovo, Kolpashevo and Ussuriysk are left out for that reason).
SOVIET = (
    Station("NIP-16", "Yevpatoria", 45.19, 33.19),
    Station("NIP-4", "Dzhusaly", 45.50, 64.10),
    Station("NIP-13", "Ulan-Ude", 51.80, 107.60),
    Station("NIP-7", "Petropavlovsk-Kamchatsky", 53.00, 158.70),
    Station("KOR", "Akademik Sergey Korolev", 30.00, -35.00),
)
# Tananarive (Madagascar) is not in STDN: the station had ceased operations before launch
# (US notice of 12 July 1975; astp-facts.md, December 2026 additions).
NETWORK = {tl.APOLLO: STDN, tl.SOYUZ: SOVIET}
KSC = (28.573, -80.649)
BAIKONUR = (45.920, 63.342)


def _unit(lat_deg: float, lon_deg: float) -> NDArray[np.float64]:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                     math.sin(lat)])


_STATION_UNITS = {v: np.stack([_unit(s.lat, s.lon) for s in net]) for v, net in NETWORK.items()}


def _days_j2000(get: Array) -> Array:
    # J2000.0 = 2000-01-01 12:00 UTC = 946728000 s after the Unix epoch.
    return (LIFTOFF_NS / NS + get - 946_728_000.0) / 86400.0


def gmst(get: Array) -> Array:
    """Greenwich sidereal angle (rad), from the Earth rotation angle."""
    d = _days_j2000(get)
    return 2 * np.pi * ((0.7790572732640 + 1.00273781191135448 * d) % 1.0)


def sun_direction(get: Array) -> Array:
    """(N, 3) unit vectors to the Sun in the inertial frame."""
    d = _days_j2000(get)
    mean_lon = np.radians(280.460 + 0.9856474 * d)
    g = np.radians(357.528 + 0.9856003 * d)
    lam = mean_lon + np.radians(1.915) * np.sin(g) + np.radians(0.020) * np.sin(2 * g)
    eps = np.radians(23.439 - 4e-7 * d)
    return np.stack([np.cos(lam), np.cos(eps) * np.sin(lam), np.sin(eps) * np.sin(lam)], -1)


def _plane_at_liftoff() -> tuple[float, float]:
    """(RAAN at GET 0, argument of latitude over the Cape) for a plane that passes over
    the Cape, ascending, at liftoff."""
    lat, lon = map(math.radians, KSC)
    u = math.asin(math.sin(lat) / math.sin(INC))
    ra = float(gmst(np.array([0.0]))[0]) + lon
    raan = ra - math.atan2(math.cos(INC) * math.sin(u), math.cos(u))
    return raan, u


RAAN0, U_CAPE = _plane_at_liftoff()
U_INSERTION = U_CAPE + math.radians(15.0)  # ~1700 km downrange at insertion (estimate)
LEAD_AT_INSERTION = math.radians(40.0)  # Soyuz ahead of Apollo at its insertion (estimate)

# Where the joint flight happened. A single circular orbit propagated from insertion puts the
# first docking over the Pacific off Peru and the hatch opening over Mexico, both out of
# coverage; the docking was over the Atlantic off Portugal and the handshake over Metz
# (France), both televised live (astp-facts.md, December 2026 additions; SP-4209: "high
# above the coast of Portugal"). The orbit's phase and node are therefore pinned so that the
# ships pass over DOCKING_POINT, northbound, at the docking (16:09:09 UTC). That ground
# track passes over Metz 2 orbits later, at 19:18:53 UTC (GET 047:28:52): the handshake
# time the timeline uses. The correction is spread smoothly over the free flight from
# insertion to the rendezvous (a slightly different mean altitude, as the real phasing burns
# made), so the ground track never jumps. DOCKING_POINT itself is an estimate chosen on the
# Atlantic ~600 km west of Portugal so that the same track overflies Metz.
DOCKING_POINT = (41.5, -16.0)  # deg latitude, longitude (estimate, see above)
METZ = (49.12, 6.18)


def _over(lat_deg: float, lon_deg: float, get: float, northbound: bool) -> tuple[float, float]:
    """(RAAN, argument of latitude) that put a ship over a point at a GET."""
    u = math.asin(math.sin(math.radians(lat_deg)) / math.sin(INC))
    if not northbound:
        u = math.pi - u
    ra = float(gmst(np.array([get]))[0]) + math.radians(lon_deg)
    return ra - math.atan2(math.cos(INC) * math.sin(u), math.cos(u)), u


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _pin() -> tuple[float, float]:
    raan, u = _over(*DOCKING_POINT, tl.DOCKING_1, northbound=True)
    d_raan = _wrap(raan - (RAAN0 + RAAN_RATE * tl.DOCKING_1))
    d_u = _wrap(u - (U_INSERTION + N_MEAN * (tl.DOCKING_1 - tl.APOLLO_ORBIT)))
    return d_raan, d_u


PIN_RAAN, PIN_U = _pin()


def _pinned(get: Array) -> Array:
    """0 before Apollo's insertion, rising smoothly to 1 at the rendezvous, then 1."""
    x = np.clip((get - tl.APOLLO_ORBIT) / (tl.RENDEZVOUS - tl.APOLLO_ORBIT), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def soyuz_lead(get: Array) -> Array:
    """Arc (rad) by which Soyuz leads Apollo: ~40 deg at Apollo insertion closing to the
    VHF acquisition range, then the measured range profile, then slowly opening."""
    g = np.asarray(get, dtype=np.float64)
    knots_t = [t for t, _ in tl.RANGE_KNOTS]
    knots_r = [r for _, r in tl.RANGE_KNOTS]
    close = np.interp(g, [tl.APOLLO_ORBIT, tl.VHF_RANGING],
                      [LEAD_AT_INSERTION, knots_r[0] / A])
    ranged = np.interp(g, knots_t, knots_r) / A
    opening = (knots_r[-1] + 0.001 * (g - tl.RANGING_OFF)) / A
    return np.where(g < tl.VHF_RANGING, close, np.where(g < tl.RANGING_OFF, ranged, opening))


def position_eci(vehicle: str, get: Array) -> Array:
    """(N, 3) inertial position (km) on the circular orbit (extrapolated before launch)."""
    g = np.asarray(get, dtype=np.float64)
    pin = _pinned(g)
    u = U_INSERTION + N_MEAN * (g - tl.APOLLO_ORBIT) + PIN_U * pin
    if vehicle == tl.SOYUZ:
        u = u + soyuz_lead(g)
    raan = RAAN0 + RAAN_RATE * g + PIN_RAAN * pin
    cu, su, co, so = np.cos(u), np.sin(u), np.cos(raan), np.sin(raan)
    ci, si = math.cos(INC), math.sin(INC)
    return A * np.stack([co * cu - so * su * ci, so * cu + co * su * ci, su * si], -1)


def _to_ecef(r: Array, get: Array) -> Array:
    th = gmst(get)
    c, s = np.cos(th), np.sin(th)
    return np.stack([c * r[:, 0] + s * r[:, 1], -s * r[:, 0] + c * r[:, 1], r[:, 2]], -1)


def subsatellite(vehicle: str, get: Array) -> tuple[Array, Array]:
    """(latitude, longitude) in degrees."""
    e = _to_ecef(position_eci(vehicle, get), np.asarray(get, dtype=np.float64))
    lat = np.degrees(np.arcsin(e[:, 2] / np.linalg.norm(e, axis=1)))
    lon = np.degrees(np.arctan2(e[:, 1], e[:, 0]))
    return lat, lon


@dataclass
class Geometry:
    """Per-time geometry of one ship."""

    sunlit: Array  # 0..1 (a short penumbra)
    elevation: Array  # deg, best station of the ship's network (-90 if none)
    station: NDArray[np.int64]  # index into NETWORK[vehicle], -1 when none above the mask
    ats6: NDArray[np.bool_]  # line of sight to the ATS-6 relay


def geometry(vehicle: str, get: Array) -> Geometry:
    g = np.atleast_1d(np.asarray(get, dtype=np.float64))
    r = position_eci(vehicle, g)
    s = sun_direction(g)
    along = np.einsum("ij,ij->i", r, s)
    perp = np.linalg.norm(r - along[:, None] * s, axis=1)
    # Behind the Earth and inside its shadow cylinder; ~8 s of penumbra either side.
    sunlit = np.where(along > 0, 1.0, np.clip((perp - R_E) / 60.0 + 0.5, 0.0, 1.0))
    e = _to_ecef(r, g)
    units = _STATION_UNITS[vehicle]
    sites = units * R_E
    los = e[:, None, :] - sites[None, :, :]  # (N, S, 3)
    dist = np.linalg.norm(los, axis=2)
    sin_el = np.einsum("nsk,sk->ns", los, units) / dist
    best = np.argmax(sin_el, axis=1)
    best_sin = sin_el[np.arange(g.size), best]
    elevation = np.degrees(np.arcsin(np.clip(best_sin, -1, 1)))
    station = np.where(best_sin > math.sin(MASK), best, -1)
    th = gmst(g)
    ats = GEO_R * np.stack([np.cos(ATS6_LON + th), np.sin(ATS6_LON + th), np.zeros_like(th)],
                           -1)
    d = ats - r
    t = np.clip(-np.einsum("ij,ij->i", r, d) / np.einsum("ij,ij->i", d, d), 0.0, 1.0)
    closest = np.linalg.norm(r + t[:, None] * d, axis=1)
    ats6 = closest > R_E + 100.0  # the ray must clear the atmosphere
    return Geometry(sunlit, elevation, station.astype(np.int64), ats6)
