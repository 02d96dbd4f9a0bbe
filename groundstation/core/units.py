"""Engineering units: the closed list a definition may use, and conversions between them.

Every conversion here is affine (display = scale * value + offset), which lets dashboards
and consoles convert whole arrays, and lets Grafana apply the same conversion in InfluxQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Unit:
    symbol: str
    quantity: str
    # Affine map to the quantity's base unit: base = value * to_base + base_offset.
    to_base: float = 1.0
    base_offset: float = 0.0
    label: str = ""


_PSI_PA = 6894.757293168
_MMHG_PA = 133.322387415

UNITS: dict[str, Unit] = {
    u.symbol: u
    for u in [
        Unit("psia", "pressure", _PSI_PA, label="psia"),
        Unit("psid", "pressure", _PSI_PA, label="psid"),
        Unit("mmHg", "pressure", _MMHG_PA, label="mm Hg"),
        Unit("kPa", "pressure", 1000.0, label="kPa"),
        Unit("atm", "pressure", 101325.0, label="atm"),
        # Technical atmosphere, the Soviet gauges' unit for bottles and tanks.
        Unit("kgf/cm2", "pressure", 98066.5, label="kgf/cm²"),
        Unit("degF", "temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0, label="°F"),
        Unit("degC", "temperature", 1.0, 273.15, label="°C"),
        Unit("K", "temperature", 1.0, label="K"),
        Unit("V", "voltage", label="V"),
        Unit("A", "current", label="A"),
        Unit("W", "power", label="W"),
        Unit("Ah", "charge", label="A·h"),
        Unit("percent", "fraction", 0.01, label="%"),
        Unit("lb", "mass", 0.45359237, label="lb"),
        Unit("kg", "mass", label="kg"),
        Unit("lb/h", "mass_flow", 0.45359237, label="lb/h"),
        Unit("kg/h", "mass_flow", label="kg/h"),
        Unit("deg", "angle", label="°"),
        Unit("deg/s", "angular_rate", label="°/s"),
        Unit("km", "length", 1000.0, label="km"),
        Unit("m", "length", label="m"),
        Unit("ft", "length", 0.3048, label="ft"),
        Unit("m/s", "speed", label="m/s"),
        Unit("ft/s", "speed", 0.3048, label="ft/s"),
        Unit("dB", "ratio_db", label="dB"),
        Unit("dBm", "power_db", label="dBm"),
        Unit("Hz", "frequency", label="Hz"),
        Unit("s", "time", label="s"),
        Unit("count", "count", label=""),
        Unit("state", "state", label=""),
    ]
}


class UnitError(ValueError):
    pass


def get_unit(symbol: str) -> Unit:
    try:
        return UNITS[symbol]
    except KeyError:
        known = ", ".join(UNITS)
        raise UnitError(f"unknown unit {symbol!r}; known units: {known}") from None


def conversion(from_unit: str, to_unit: str) -> tuple[float, float]:
    """(scale, offset) such that value_in_to_unit = scale * value_in_from_unit + offset."""
    a, b = get_unit(from_unit), get_unit(to_unit)
    if a.quantity != b.quantity:
        raise UnitError(
            f"cannot convert {from_unit!r} ({a.quantity}) to {to_unit!r} ({b.quantity})"
        )
    scale = a.to_base / b.to_base
    offset = (a.base_offset - b.base_offset) / b.to_base
    return scale, offset


def convert(values: ArrayLike, from_unit: str, to_unit: str) -> NDArray[np.float64]:
    scale, offset = conversion(from_unit, to_unit)
    return np.asarray(values, dtype=np.float64) * scale + offset
