"""How a control centre shows a parameter: its label, display unit, decimals and grouping.

Houston (MCC-H) speaks English in US units (each parameter's ``display.houston`` unit: psia,
°F) and files parameters by position and subsystem; Moscow (ЦУП) speaks Russian in metric
units (``display.moscow``: mm Hg, °C, atm, kg) and files them by the ЦУП groups (СОЖ, СТР,
СЭП, СУД, ДУ, ССВП, РТС); the joint ASTP view is metric with both languages. Everything
comes from the telemetry definitions.

The terminal console (groundstation.console.pages) and the Grafana generator
(groundstation.grafana.board) both show the consoles through this module, so a value reads
the same, in the same unit and to the same decimals, on either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from groundstation.core.definitions import Derived, Parameter, VehicleDefinition
from groundstation.core.units import UNITS, conversion

__all__ = [
    "FLIGHT_DOCKING",
    "FLIGHT_KEYS",
    "FLIGHT_STATUS",
    "HOUSTON",
    "JOINT",
    "MOSCOW",
    "MOSCOW_GROUPS",
    "NO_MOSCOW_GROUP",
    "OTHER_SUBSYSTEM",
    "RU_UNITS",
    "SUBSYSTEMS_EN",
    "Entry",
    "Lang",
    "ParameterRef",
    "PresentationError",
    "Style",
    "UnitSystem",
    "decimals",
    "display_conversion",
    "display_unit",
    "find_ref",
    "label",
    "moscow_group",
    "moscow_group_order",
    "moscow_group_title",
    "parameter_refs",
    "pick_refs",
    "sensor_step",
    "state_name",
    "state_names",
    "subsystem_name",
    "subsystem_order",
    "to_display",
    "unit_text",
    "vehicle_name",
]

Entry = Parameter | Derived
Lang = Literal["en", "ru", "bi"]
"""English, Russian, or both ("Cabin pressure · Давление в кабине") for the joint view."""
UnitSystem = Literal["houston", "moscow"]
"""Whose ``display`` entry of a parameter gives the unit a console shows it in."""


class PresentationError(ValueError):
    """The definitions lack something a console needs (a key parameter was renamed, or a
    display unit would turn the scale upside down)."""


# --- the control centres ---------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How a console speaks: whose display units, which language, which clock."""

    units: UnitSystem
    lang: Lang
    timezone: str  # the clock's zone as Grafana names it: "utc" or "Europe/Moscow"


HOUSTON = Style("houston", "en", "utc")
MOSCOW = Style("moscow", "ru", "Europe/Moscow")
# ASTP's joint documents were metric: the joint view uses the metric (Moscow) units, so
# CM, DM and Soyuz pressures compare directly in mm Hg, with labels in both languages.
JOINT = Style("moscow", "bi", "utc")

RU_UNITS: dict[str, str] = {
    "psia": "psia", "psid": "psid", "mmHg": "мм рт. ст.", "kPa": "кПа", "atm": "атм",
    "kgf/cm2": "кгс/см²",
    "degF": "°F", "degC": "°C", "K": "К", "V": "В", "A": "А", "W": "Вт", "Ah": "А·ч",
    "percent": "%", "lb": "фунт", "kg": "кг", "lb/h": "фунт/ч", "kg/h": "кг/ч", "deg": "°",
    "deg/s": "°/с", "km": "км", "m": "м", "ft": "фут", "m/s": "м/с", "ft/s": "фут/с",
    "dB": "дБ", "dBm": "дБм", "Hz": "Гц", "s": "с", "count": "", "state": "",
}
"""How the ЦУП writes each unit symbol of groundstation.core.units."""

SUBSYSTEMS_EN: dict[str, str] = {
    "ECS": "environmental control", "EPS": "electrical power", "CRYO": "cryogenics",
    "PROP": "propulsion", "GNC": "guidance and control", "DOCK": "docking",
    "COMM": "communications", "CW": "caution and warning", "CREW": "crew",
}
"""Houston's subsystems, in the order a position lists them, with their names."""
OTHER_SUBSYSTEM = "OTHER"

MOSCOW_GROUPS: dict[str, str] = {
    "СОЖ": "система обеспечения жизнедеятельности",
    "СТР": "система терморегулирования",
    "СЭП": "система электропитания",
    "СУД": "система управления движением",
    "ДУ": "двигательные установки",
    "ССВП": "стыковка и внутренний переход",
    "РТС": "радиотехнические системы",
    "Сигнализация": "сигнализация",
}
"""The ЦУП groups, in the order the Moscow consoles list them, with their full names."""
NO_MOSCOW_GROUP = "—"

# The flight director's summary, which both consoles show (Grafana's FLIGHT, the terminal's
# FLIGHT and ОБЗОР pages): each ship's status, key values and docking state. A missing id
# is an error: FLIGHT must not quietly lose a value because a definition file renamed it.
FLIGHT_STATUS: dict[str, tuple[str, ...]] = {"apollo_csm": ("master_alarm", "pcm_sync")}
FLIGHT_KEYS: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("cabin_press", "suit_press", "co2_pp", "cabin_o2_pp", "cabin_temp",
                   "main_bus_a_volts", "main_bus_b_volts", "fc_total_amps",
                   "o2_tanks_mean_qty", "sm_rcs_min_qty", "sps_he_press", "sband_signal"),
    "soyuz": ("sa_press", "bo_press", "pco2", "sa_po2", "sa_temp", "bus_volts",
              "batt_charge", "dpo_qty", "kdu_prop_qty", "rf_signal", "sud_mode",
              "tv_status"),
}
FLIGHT_DOCKING: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("dock_capture_latch", "dock_ring_latch", "dm_hatch_cm"),
    "soyuz": ("dock_capture", "dock_latches", "hatch_bo_dm"),
}


# --- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ParameterRef:
    """A measured or derived parameter together with its vehicle.

    Equal (and hashed) by (vehicle id, parameter id), so a parameter picked twice for a
    view, through two lists, is recognised as one."""

    vehicle: VehicleDefinition
    entry: Entry

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParameterRef) and (self.vid, self.pid) == (other.vid,
                                                                           other.pid)

    def __hash__(self) -> int:
        return hash((self.vid, self.pid))

    @property
    def vid(self) -> str:
        """The vehicle id (``apollo_csm``)."""
        return self.vehicle.vehicle

    @property
    def pid(self) -> str:
        """The parameter id (``cabin_press``)."""
        return self.entry.id

    @property
    def discrete(self) -> bool:
        """A measured discrete: its value is a state code, shown by name."""
        return isinstance(self.entry, Parameter) and self.entry.type == "discrete"

    @property
    def counter(self) -> bool:
        """A measured counter: shown as a whole number, never converted."""
        return isinstance(self.entry, Parameter) and self.entry.type == "counter"

    @property
    def states(self) -> dict[int, str]:
        """State names by code, for a discrete with an enumeration; otherwise empty."""
        e = self.entry
        if isinstance(e, Parameter) and e.calibration is not None and e.calibration.states:
            return dict(e.calibration.states)
        return {}

    @property
    def subsystem(self) -> str:
        """The Houston subsystem (``OTHER_SUBSYSTEM`` when the definition names none)."""
        return self.entry.subsystem or OTHER_SUBSYSTEM


def parameter_refs(d: VehicleDefinition) -> list[ParameterRef]:
    """Every parameter of a vehicle, measured ones first, in definition order."""
    entries: list[Entry] = [*d.parameters, *d.derived]
    return [ParameterRef(d, e) for e in entries]


def find_ref(defs: dict[str, VehicleDefinition], vid: str, pid: str,
             purpose: str) -> ParameterRef:
    """One parameter by vehicle and id; PresentationError, naming `purpose`, if missing."""
    d = defs.get(vid)
    if d is None:
        raise PresentationError(f"{purpose}: no vehicle {vid!r} in the definitions")
    for r in parameter_refs(d):
        if r.pid == pid:
            return r
    raise PresentationError(f"{purpose}: {d.path or vid} has no parameter {pid!r}; update "
                            "the list in groundstation/core/presentation.py (or "
                            "groundstation/grafana/board.py) if it was renamed")


def pick_refs(defs: dict[str, VehicleDefinition], table: dict[str, tuple[str, ...]],
              purpose: str) -> list[ParameterRef]:
    """The parameters a table such as FLIGHT_KEYS names, in its order. Vehicles absent from
    `defs` are skipped; a parameter absent from a present vehicle is a PresentationError."""
    return [find_ref(defs, vid, pid, purpose) for vid, pids in table.items() if vid in defs
            for pid in pids]


# --- words -----------------------------------------------------------------------------------


def _in(lang: Lang, en: str, ru: str) -> str:
    return en if lang == "en" else ru if lang == "ru" else f"{en} · {ru}"


def label(e: Entry, lang: Lang) -> str:
    """A parameter's label in a language (English, then its id, where a label is missing)."""
    en = e.label.get("en", e.id)
    return _in(lang, en, e.label.get("ru", en))


def state_name(r: ParameterRef, state: str, lang: Lang) -> str:
    """A discrete's state as a centre says it: the definitions' name (English) in Houston,
    its ``state_labels.ru`` name in Moscow, both on the joint view ("OPEN · ОТКРЫТ")."""
    e = r.entry
    if not isinstance(e, Parameter):
        return state
    en = e.state_label(state, "en")
    return _in(lang, en, e.state_label(state, "ru"))


def state_names(r: ParameterRef, lang: Lang) -> dict[int, str]:
    """A discrete's state names by code in a language (empty for anything else)."""
    return {code: state_name(r, name, lang) for code, name in r.states.items()}


def vehicle_name(d: VehicleDefinition, lang: Lang) -> str:
    """A ship's name in a language (English, then its id, where a name is missing)."""
    en = d.name.get("en", d.vehicle)
    return _in(lang, en, d.name.get("ru", en))


def unit_text(unit: str, lang: Lang) -> str:
    """How a console writes a unit symbol: Russian on Moscow's, the unit's label otherwise
    (the joint view's "bi" writes symbols, which read the same in both languages)."""
    return RU_UNITS.get(unit, unit) if lang == "ru" else UNITS[unit].label


# --- units and decimals ----------------------------------------------------------------------


def display_unit(r: ParameterRef, style: Style) -> str:
    """The unit the centre shows a parameter in (its canonical unit where none is given)."""
    return r.entry.display.get(style.units, r.entry.unit)


def display_conversion(r: ParameterRef, style: Style) -> tuple[float, float]:
    """(scale, offset) from the canonical unit to the display unit: shown = scale * value +
    offset. Discretes and counters are never converted."""
    if r.discrete or r.counter:
        return 1.0, 0.0
    scale, offset = conversion(r.entry.unit, display_unit(r, style))
    if scale <= 0:
        # Limit bands and "above/below" would swap ends: refuse rather than mislead.
        raise PresentationError(f"{r.vid}.{r.pid}: conversion to {display_unit(r, style)} "
                                "reverses the scale")
    return scale, offset


def to_display(v: float | None, scale: float, offset: float) -> float | None:
    """A canonical value (a limit, say) in the display unit; None (an open end) stays None."""
    return None if v is None else scale * v + offset


def sensor_step(r: ParameterRef, scale: float) -> float:
    """One count of the sensor in the display unit (`scale` from display_conversion); 0.0
    where there is no sensor (a derived value) or no scale (a discrete, a counter)."""
    e = r.entry
    if r.discrete or r.counter or not isinstance(e, Parameter):
        return 0.0
    lo, hi = e.eng_range()
    return (hi - lo) / e.raw_max * scale


def decimals(r: ParameterRef, scale: float) -> int:
    """Enough decimals to show one count of the sensor in the display unit (at most 4);
    none for discretes and counters, 2 where the resolution is not known."""
    if r.discrete or r.counter:
        return 0
    step = sensor_step(r, scale)
    if step > 0:
        return int(min(4, max(0, math.ceil(-math.log10(step) - 1e-9))))
    return 2


# --- grouping --------------------------------------------------------------------------------


def subsystem_name(subsystem: str) -> str:
    """Houston's name of a subsystem ("ECS" -> "environmental control")."""
    return SUBSYSTEMS_EN.get(subsystem, subsystem.lower())


def subsystem_order(refs: Iterable[ParameterRef]) -> list[str]:
    """The subsystems these parameters belong to, known ones in Houston's order first."""
    known = list(SUBSYSTEMS_EN)
    seen = {r.subsystem for r in refs}
    return [s for s in known if s in seen] + sorted(seen - set(known))


def moscow_group(r: ParameterRef) -> str:
    """The ЦУП group a parameter is filed under (NO_MOSCOW_GROUP when it has none)."""
    return r.entry.console.get("moscow", NO_MOSCOW_GROUP)


def moscow_group_order(refs: Iterable[ParameterRef]) -> list[str]:
    """The ЦУП groups these parameters belong to, known ones in the ЦУП's order first."""
    seen = {moscow_group(r) for r in refs}
    return [g for g in MOSCOW_GROUPS if g in seen] + sorted(seen - set(MOSCOW_GROUPS))


def moscow_group_title(group: str) -> str:
    """"СОЖ — система обеспечения жизнедеятельности" (the bare name of an unknown group)."""
    full = MOSCOW_GROUPS.get(group)
    return f"{group} — {full}" if full else group
