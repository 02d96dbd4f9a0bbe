"""Small physical building blocks shared by the ship models.

Gas inventories are kept as partial "pV" amounts in mm Hg x m^3 at cabin temperature, so
that mixing two volumes, venting, leaking and adding a gas are all sums, and a pressure is
an amount divided by a volume. Conversions from masses use the ideal gas law at the
compartment's temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R = 8.314462  # J/(mol K)
PA_PER_MMHG = 133.322
MMHG_PER_PSI = 51.7149
LB = 0.45359237  # kg
MOLAR = {"o2": 0.031998, "n2": 0.028014, "co2": 0.04401}  # kg/mol


def pv_per_kg(gas: str, temp_k: float) -> float:
    """mm Hg x m^3 of one kilogram of a gas at a temperature."""
    return R * temp_k / MOLAR[gas] / PA_PER_MMHG


def standard_atmosphere_psia(alt_ft: float) -> float:
    """Outside pressure (psia) at an altitude, 1976 standard atmosphere below 36,089 ft (and
    its isothermal layer above)."""
    if alt_ft <= 36_089.0:
        return 14.696 * (1.0 - 6.8756e-6 * max(alt_ft, 0.0)) ** 5.2559
    return 3.2828 * math.exp(-(alt_ft - 36_089.0) / 20_806.0)


def relax(x: float, target: float, dt: float, tau: float) -> float:
    """First-order lag, exact for any step (so coarse steps stay stable)."""
    if tau <= 0:
        return target
    return target + (x - target) * math.exp(-dt / tau)


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass
class Gas:
    """A compartment's gas: amounts in mm Hg x m^3, volume in m^3."""

    volume: float
    o2: float = 0.0
    n2: float = 0.0
    co2: float = 0.0

    @classmethod
    def at(cls, volume: float, press_mmhg: float, o2_frac: float, pco2: float = 0.3) -> Gas:
        rest = press_mmhg - pco2
        return cls(volume, rest * o2_frac * volume, rest * (1 - o2_frac) * volume,
                   pco2 * volume)

    @property
    def total(self) -> float:
        return self.o2 + self.n2 + self.co2

    @property
    def press(self) -> float:
        """Total pressure, mm Hg."""
        return self.total / self.volume

    @property
    def po2(self) -> float:
        return self.o2 / self.volume

    @property
    def pco2(self) -> float:
        return self.co2 / self.volume

    @property
    def o2_frac(self) -> float:
        return self.o2 / self.total if self.total > 0 else 0.0

    def remove_fraction(self, frac: float) -> None:
        """Vent or leak: the mixture leaves, so each gas goes in proportion."""
        keep = 1.0 - clamp(frac, 0.0, 1.0)
        self.o2 *= keep
        self.n2 *= keep
        self.co2 *= keep

    def remove_amount(self, amount: float) -> None:
        if self.total > 0:
            self.remove_fraction(amount / self.total)

    def vent_to(self, press: float, dt: float, tau: float) -> None:
        """Vent toward a pressure with a time constant (no effect when already below)."""
        p = self.press
        if p > press:
            target = press + (p - press) * math.exp(-dt / tau)
            self.remove_fraction(1.0 - target / p)


def merge(*gases: Gas) -> None:
    """Connected volumes share one pressure and one composition."""
    vol = sum(g.volume for g in gases)
    o2 = sum(g.o2 for g in gases) / vol
    n2 = sum(g.n2 for g in gases) / vol
    co2 = sum(g.co2 for g in gases) / vol
    for g in gases:
        g.o2, g.n2, g.co2 = o2 * g.volume, n2 * g.volume, co2 * g.volume


def exchange(a: Gas, b: Gas, dt: float, tau: float) -> None:
    """Flow through a valve: pressures and compositions approach each other."""
    k = 1.0 - math.exp(-dt / tau)
    for name in ("o2", "n2", "co2"):
        ca, cb = getattr(a, name) / a.volume, getattr(b, name) / b.volume
        mean = (getattr(a, name) + getattr(b, name)) / (a.volume + b.volume)
        setattr(a, name, (ca + (mean - ca) * k) * a.volume)
        setattr(b, name, (cb + (mean - cb) * k) * b.volume)


def breakthrough(used: float, capacity: float) -> float:
    """CO2 absorber (LiOH) efficiency as a bed is used up: flat, then a breakthrough."""
    x = used / capacity
    return 0.97 / (1.0 + math.exp((x - 0.88) / 0.05))


class Thermostat:
    """An on/off heater with hysteresis (BMAG packages, cryo tanks, RCS quads)."""

    def __init__(self, value: float, on_below: float, off_above: float, heat_rate: float,
                 cool_rate: float, on: bool = False):
        self.value, self.on = value, on
        self.on_below, self.off_above = on_below, off_above
        self.heat_rate, self.cool_rate = heat_rate, cool_rate

    def step(self, dt: float, extra_rate: float = 0.0, coarse: bool = False) -> None:
        """Advance dt seconds; rates are per second. A coarse step (spin-up) puts the
        value mid-band: a thermostat cycles much faster than a coarse step."""
        if coarse:
            self.value = 0.5 * (self.on_below + self.off_above)
            self.on = False
            return
        if self.value < self.on_below:
            self.on = True
        elif self.value > self.off_above:
            self.on = False
        rate = (self.heat_rate if self.on else 0.0) - self.cool_rate + extra_rate
        self.value += rate * dt
