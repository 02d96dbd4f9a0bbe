"""Attitude and body rates, computed analytically for every frame time (50 sps on Apollo).

Each ship follows a schedule of commanded body rates that changes with the mission phase:
on the pad and in powered flight the roll and pitch programmes; in free flight a
local-horizontal attitude (pitching at orbital rate, ~0.0675 deg/s) or an inertial hold for
rendezvous and burns; during entry the command module's bank reversals. On top sits the
RCS deadband limit cycle: the attitude wanders +-2 deg inside the deadband at a few
hundredths of a degree per second, a thruster pulse reversing the drift at each edge.
Angles are the integral of the rates, so the two always agree. Docked, Soyuz turns with
Apollo (its axes face the other way along x and z).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import flightplan as tl
from groundstation.core.mission_time import EARLIEST_GET
from simulators.orbit import PERIOD_S

Array = NDArray[np.float64]
ORBITAL_RATE = 360.0 / PERIOD_S  # deg/s
# Limit cycle per axis: (amplitude deg, period s); estimates for a +-2 deg deadband.
LIMIT_CYCLE = ((2.0, 180.0), (2.0, 150.0), (2.0, 210.0))
SOYUZ_LIMIT_CYCLE = ((1.5, 240.0), (1.5, 200.0), (1.5, 260.0))


def _apollo_schedule() -> list[tuple[float, tuple[float, float, float], bool]]:
    """(start GET, (roll, pitch, yaw) rate deg/s, limit cycle on) breakpoints."""
    s: list[tuple[float, tuple[float, float, float], bool]] = [
        (EARLIEST_GET, (0.0, 0.0, 0.0), False),
        (10.0, (-1.8, 0.0, 0.0), False),  # roll programme
        (13.0, (0.0, -0.45, 0.0), False),  # pitch programme
        (150.0, (0.0, -0.03, 0.0), False),
        (tl.APOLLO_ORBIT, (0.0, -ORBITAL_RATE, 0.0), True),
    ]
    holds = [(tl.RENDEZVOUS, tl.DOCKING_1), (tl.UNDOCKING_1, tl.DOCKING_2),
             (tl.UNDOCKING_2, tl.SEPARATION + 600)]
    holds += [(b.get - 300, b.end + 120) for b in tl.BURNS if b.vehicle == tl.APOLLO
              and not tl.RENDEZVOUS <= b.get < tl.DOCKING_1]
    for a, b in holds:
        s.append((a, (0.0, 0.0, 0.0), True))
        s.append((b, (0.0, -ORBITAL_RATE, 0.0), True))
    # Entry: bank reversals at +-1.2 deg/s, then swinging under the parachutes.
    s.append((tl.CM_SM_SEP, (0.0, 0.0, 0.0), True))
    t = tl.BLACKOUT[0] - 120
    sign = 1.0
    while t < tl.CABIN_REPRESS - 120:
        s.append((t, (1.2 * sign, 0.0, 0.0), False))
        s.append((t + 25, (0.0, 0.0, 0.0), False))
        sign = -sign
        t += 60
    s.append((tl.CABIN_REPRESS - 120, (0.0, 0.0, 0.0), False))
    return sorted(s, key=lambda x: x[0])


def _soyuz_schedule() -> list[tuple[float, tuple[float, float, float], bool]]:
    s: list[tuple[float, tuple[float, float, float], bool]] = [
        (EARLIEST_GET, (0.0, 0.0, 0.0), False),
        (tl.SOYUZ_LAUNCH + 15, (0.0, -0.25, 0.0), False),
        (tl.SOYUZ_ORBIT, (0.0, ORBITAL_RATE, 0.0), True),
        (tl.RENDEZVOUS, (0.0, 0.0, 0.0), True),
        (tl.UNDOCKING_1, (0.0, 0.0, 0.0), True),
        (tl.SEPARATION + 600, (0.0, ORBITAL_RATE, 0.0), True),
        (tl.SOYUZ_DEORBIT - 1200, (0.0, 0.0, 0.0), True),
        (tl.SOYUZ_MODULE_SEP, (0.0, 0.0, 0.0), False),
    ]
    for b in tl.BURNS:
        if b.vehicle == tl.SOYUZ and b.get < tl.SOYUZ_DEORBIT - 1200:
            s.append((b.get - 600, (0.0, 0.0, 0.0), True))
            s.append((b.end + 300, (0.0, ORBITAL_RATE, 0.0), True))
    t, sign = tl.SOYUZ_MODULE_SEP + 300, 1.0
    while t < tl.SOYUZ_MODULE_SEP + 900:
        s.append((t, (0.8 * sign, 0.0, 0.0), False))
        s.append((t + 20, (0.0, 0.0, 0.0), False))
        sign, t = -sign, t + 60
    return sorted(s, key=lambda x: x[0])


class Profile:
    """Piecewise-constant commanded rates, integrated exactly, plus the limit cycle."""

    def __init__(self, schedule: list[tuple[float, tuple[float, float, float], bool]],
                 initial: tuple[float, float, float],
                 limit_cycle: tuple[tuple[float, float], ...]):
        self.starts = np.array([x[0] for x in schedule])
        self.rates = np.array([x[1] for x in schedule], dtype=np.float64)
        self.lc_on = np.array([x[2] for x in schedule])
        base = np.zeros_like(self.rates)
        base[0] = initial
        for i in range(1, len(schedule)):
            base[i] = base[i - 1] + self.rates[i - 1] * (self.starts[i] - self.starts[i - 1])
        self.base = base
        self.lc_amp = np.array([a for a, _ in limit_cycle])
        self.lc_period = np.array([p for _, p in limit_cycle])

    def evaluate(self, times: Array) -> tuple[Array, Array]:
        """(angles, rates), each (N, 3), in degrees (unwrapped) and deg/s."""
        t = np.asarray(times, dtype=np.float64)
        i = np.searchsorted(self.starts, t, side="right") - 1
        dt = (t - self.starts[i])[:, None]
        rates = self.rates[i].copy()
        angles = self.base[i] + rates * dt
        on = self.lc_on[i][:, None]
        # Triangle wave of amplitude A and period P: slope +-4A/P.
        phase = (t[:, None] / self.lc_period + np.array([0.1, 0.37, 0.71])) % 1.0
        tri = self.lc_amp * (4 * np.abs(phase - 0.5) - 1.0)
        slope = np.where(phase < 0.5, -4.0, 4.0) * self.lc_amp / self.lc_period
        angles = angles + np.where(on, tri, 0.0)
        rates = rates + np.where(on, slope, 0.0)
        return angles, rates


APOLLO_PROFILE = Profile(_apollo_schedule(), (90.0, 90.0, 0.0), LIMIT_CYCLE)
SOYUZ_PROFILE = Profile(_soyuz_schedule(), (0.0, 90.0, 0.0), SOYUZ_LIMIT_CYCLE)


def burn_activity(vehicle: str, times: Array) -> Array:
    """1 while a main-engine burn of this ship is under way, else 0."""
    t = np.asarray(times, dtype=np.float64)
    on = np.zeros(t.shape)
    for b in tl.BURNS:
        if b.vehicle == vehicle and b.engine != "RCS":
            on = np.maximum(on, ((t >= b.get) & (t < b.end)).astype(np.float64))
    return on


def attitude(vehicle: str, times: Array) -> tuple[Array, Array]:
    """(angles, rates) of a ship; docked, Soyuz follows Apollo with x and z reversed."""
    t = np.asarray(times, dtype=np.float64)
    if vehicle == tl.APOLLO:
        ang, rate = APOLLO_PROFILE.evaluate(t)
    else:
        ang, rate = SOYUZ_PROFILE.evaluate(t)
        docked = _docked_mask(t)
        if docked.any():
            a_ang, a_rate = APOLLO_PROFILE.evaluate(t[docked])
            flip = np.array([-1.0, 1.0, -1.0])
            rate[docked] = a_rate * flip
            ang[docked] = a_ang * flip + np.array([0.0, 0.0, 180.0])
    burn = burn_activity(vehicle, t)
    if burn.any():
        # Gimbal-trim and slosh transients while the main engine fires.
        wob = 0.25 * np.sin(2 * math.pi * t / 3.3)
        rate[:, 1] += burn * wob
        rate[:, 2] -= burn * 0.6 * wob
    return ang, rate


def _docked_mask(t: Array) -> NDArray[np.bool_]:
    return (((t >= tl.DOCKING_1) & (t < tl.UNDOCKING_1))
            | ((t >= tl.DOCKING_2) & (t < tl.UNDOCKING_2)))


def middle_gimbal_deg(get: float) -> float:
    """The CSM IMU's middle gimbal angle (the yaw CDU angle, -180..180 deg) at a GET, as the
    nominal attitude schedule leaves it (faults aside)."""
    ang, _ = APOLLO_PROFILE.evaluate(np.array([get], dtype=np.float64))
    return float((ang[0, 2] + 180.0) % 360.0 - 180.0)


def gimbal_excursions(faults: Iterable[Any], times: Array) -> tuple[Array, Array]:
    """(deg, deg/s) added to Apollo's yaw by gimbal_lock faults: an unplanned yaw toward the
    IMU's middle-gimbal limit at rate_deg_s, stopping at peak_deg, and back at the same rate
    once cleared."""
    t = np.asarray(times, dtype=np.float64)
    exc = np.zeros(t.shape)
    rate = np.zeros(t.shape)
    for f in faults:
        if f.name != "gimbal_lock":
            continue
        r, peak = f.params["rate_deg_s"], f.params["peak_deg"]
        e = np.clip((t - f.start) * r, 0.0, peak)
        de = np.where((t >= f.start) & (e < peak), r, 0.0)
        if f.end is not None:
            e_end = min(max((f.end - f.start) * r, 0.0), peak)
            back = np.clip(e_end - (t - f.end) * r, 0.0, None)
            de = np.where(t >= f.end, np.where(back > 0, -r, 0.0), de)
            e = np.where(t >= f.end, back, e)
        exc += e
        rate += de
    return exc, rate


def gimbal_excursion(faults: Iterable[Any], get: float) -> float:
    return float(gimbal_excursions(faults, np.array([get]))[0][0])
