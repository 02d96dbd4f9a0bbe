"""What the terminal console shows: pages of parameters per control centre and position,
with labels, units and formatting taken from the telemetry definitions.

Houston speaks English in US units (each parameter's `display.houston` unit) and has the
FLIGHT overview and the EECOM, GNC and INCO positions; Moscow speaks Russian in metric
units (`display.moscow`: mm Hg, °C, atm, kg), puts Soyuz first and groups parameters by
the ЦУП groups (СОЖ, СТР, СЭП, СУД, ДУ, ССВП, РТС). The grouping, key-value lists, labels,
unit conversions and decimals come from groundstation.core.presentation, which the Grafana
generator uses too, so the console and the dashboards cannot disagree; the clocks are
groundstation.core.mission_time's.

Nothing here touches MQTT or Textual: it is pure data and text, so it is cheap to test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from groundstation.core import presentation as pr
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.limits import LimitState
from groundstation.core.mission_time import format_get_ns, format_gmt_ns, format_msk_ns

CENTRES = ("houston", "moscow")
HOUSTON_POSITIONS = ("FLIGHT", "EECOM", "GNC", "INCO")
MOSCOW_OVERVIEW = "ОБЗОР"
# Latin spellings, so `--position SOZH` works on a keyboard without Cyrillic.
MOSCOW_ALIASES = {"OBZOR": MOSCOW_OVERVIEW, "OVERVIEW": MOSCOW_OVERVIEW, "SOZH": "СОЖ",
                  "STR": "СТР", "SEP": "СЭП", "SUD": "СУД", "DU": "ДУ", "SSVP": "ССВП",
                  "RTS": "РТС", "SIGNAL": "Сигнализация"}

# Vehicles in the order each centre lists them.
VEHICLE_ORDER = {"houston": ("apollo_csm", "soyuz"), "moscow": ("soyuz", "apollo_csm")}

# Short ship names for the header and the alarm list.
SHIP_SHORT = {"houston": {"apollo_csm": "CSM", "soyuz": "SOYUZ"},
              "moscow": {"apollo_csm": "АПОЛЛОН", "soyuz": "СОЮЗ"}}

# Trends: where the shape of the curve matters more than the number (a leak, a heater
# cycling, a bus sagging under load).
TRENDS: dict[str, tuple[tuple[str, str], ...]] = {
    "houston": (("apollo_csm", "cabin_press"), ("apollo_csm", "o2_tank1_press"),
                ("apollo_csm", "o2_tank2_press"), ("apollo_csm", "main_bus_a_volts"),
                ("apollo_csm", "main_bus_b_volts"), ("soyuz", "sa_press")),
    "moscow": (("soyuz", "sa_press"), ("soyuz", "bo_press"), ("soyuz", "pco2"),
               ("soyuz", "bus_volts"), ("apollo_csm", "cabin_press"),
               ("apollo_csm", "main_bus_a_volts")),
}

WORDS: dict[str, tuple[str, str]] = {
    "title": ("MCC-H  ASTP", "ЦУП  ЭПАС"),
    "get": ("GET", "GET"),
    "gmt": ("GMT", "GMT"),
    "msk": ("MSK", "МСК"),
    "aos": ("AOS", "СВЯЗЬ"),
    "los": ("LOS", "НЕТ СВЯЗИ"),
    "nodata": ("NO DATA", "НЕТ ДАННЫХ"),
    "master": ("MASTER ALARM", "ОБЩАЯ ТРЕВОГА"),
    "no_master": ("NO ALARM", "НЕТ ТРЕВОГИ"),
    "broker_ok": ("MQTT OK", "MQTT НОРМА"),
    "broker_lost": ("BROKER LOST — reconnecting", "БРОКЕР ПОТЕРЯН — переподключение"),
    "connecting": ("connecting to broker", "подключение к брокеру"),
    "source": ("SRC", "ИСТ"),
    "alarms": ("ALARMS", "АВАРИЙНЫЕ СИГНАЛЫ"),
    "trends": ("TRENDS", "ГРАФИКИ"),
    "operator": ("OPR", "ОПЕР"),
    "quality": ("Q", "КАЧ"),
    "fps": ("fr/s", "к/с"),
    "no_alarms": ("no active alarms", "активных сигналов нет"),
    "unacked": ("unack", "не квит."),
    "shelved": ("shelved", "отложено"),
    "ground": ("GROUND — LINK QUALITY", "НАЗЕМНЫЙ КОМПЛЕКС — КАЧЕСТВО СВЯЗИ"),
}

ALARM_STATE_TEXT = {
    "active_unacked": ("UNACK", "НЕ КВИТ"),
    "active_acked": ("ACK", "КВИТ"),
    "normal_unacked": ("RTN UNACK", "НОРМА НЕ КВИТ"),
    "shelved": ("SHELVED", "ОТЛОЖЕН"),
    "normal": ("NORMAL", "НОРМА"),
}
SEVERITY_TEXT = {"red": ("RED", "КРАСН"), "yellow": ("YEL", "ЖЁЛТ"), "nominal": ("NOM", "НОРМ")}
ALARM_COLUMNS = {
    "houston": ("GET", "SHIP", "POS", "PARAMETER", "VALUE", "LIMIT", "SEV", "STATE", "ACK BY"),
    "moscow": ("МСК", "КА", "ГРУППА", "ПАРАМЕТР", "ЗНАЧЕНИЕ", "ПРЕДЕЛ", "УРОВ", "СОСТ",
               "КВИТ."),
}


def word(key: str, centre: str) -> str:
    en, ru = WORDS[key]
    return ru if centre == "moscow" else en


def style_of(centre: str) -> pr.Style:
    return pr.MOSCOW if centre == "moscow" else pr.HOUSTON


def lang(centre: str) -> pr.Lang:
    return style_of(centre).lang


@dataclass(frozen=True)
class Field:
    """One parameter as a centre shows it."""

    vehicle: str
    pid: str
    label: str
    unit: str  # the display unit's symbol
    unit_text: str  # how the centre writes it
    scale: float
    offset: float
    decimals: int
    states: dict[int, str] = field(default_factory=dict)
    discrete: bool = False
    counter: bool = False
    position: str = ""  # Houston position or Moscow group
    # The default limit set's yellow band in the display unit (either end may be open).
    yellow: tuple[float | None, float | None] | None = None
    count: float = 0.0  # one count of the sensor in the display unit (0: not known)

    def convert(self, value: float) -> float:
        return self.scale * value + self.offset

    def text(self, value: float | None) -> str:
        """The value in the centre's unit, or a discrete's state name; no unit."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "----"
        if self.discrete:
            return self.states.get(int(value), str(int(value)))
        if self.counter:
            return str(int(value))
        return f"{self.convert(value):.{self.decimals}f}"

    def with_unit(self, value: float | None) -> str:
        t = self.text(value)
        return f"{t} {self.unit_text}" if self.unit_text and not self.discrete else t


@dataclass(frozen=True)
class Section:
    title: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Page:
    key: str  # what --position names
    title: str
    sections: tuple[Section, ...]
    link_quality: bool = False  # INCO and РТС also show the ground side of each link


def make_field(ref: pr.ParameterRef, centre: str) -> Field:
    style = style_of(centre)
    unit = pr.display_unit(ref, style)
    scale, offset = pr.display_conversion(ref, style)
    unit_text = "" if unit in ("state", "count") else pr.unit_text(unit, style.lang)
    position = ref.entry.console.get(centre, "")
    lim = ref.entry.limits
    yellow = None
    if lim is not None and lim.yellow is not None and not (ref.discrete or ref.counter):
        yellow = (pr.to_display(lim.yellow[0], scale, offset),
                  pr.to_display(lim.yellow[1], scale, offset))
    return Field(ref.vid, ref.pid, pr.label(ref.entry, style.lang), unit, unit_text, scale,
                 offset, pr.decimals(ref, scale), pr.state_names(ref, style.lang), ref.discrete,
                 ref.counter,
                 position, yellow, pr.sensor_step(ref, scale))


def fields(defs: dict[str, VehicleDefinition], centre: str) -> dict[tuple[str, str], Field]:
    """Every parameter of every vehicle as the centre shows it, by (vehicle, id)."""
    return {(r.vid, r.pid): make_field(r, centre) for d in defs.values()
            for r in pr.parameter_refs(d)}


def _ordered(defs: dict[str, VehicleDefinition], centre: str) -> list[VehicleDefinition]:
    order = VEHICLE_ORDER[centre]
    return sorted(defs.values(), key=lambda d: (order.index(d.vehicle) if d.vehicle in order
                                                else len(order), d.vehicle))


def _key_section(defs: dict[str, VehicleDefinition], d: VehicleDefinition, centre: str
                 ) -> Section:
    tables = (pr.FLIGHT_STATUS, pr.FLIGHT_KEYS, pr.FLIGHT_DOCKING)
    refs = [r for t in tables
            for r in pr.pick_refs(defs, {d.vehicle: t.get(d.vehicle, ())},
                                  "console key values")]
    return Section(pr.vehicle_name(d, lang(centre)).upper(),
                   tuple(make_field(r, centre) for r in refs))


def pages(defs: dict[str, VehicleDefinition], centre: str) -> list[Page]:
    """The centre's pages, in the order the keys 1, 2, 3... select them."""
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {', '.join(CENTRES)}, not {centre!r}")
    ships = _ordered(defs, centre)
    if centre == "houston":
        out = [Page("FLIGHT", "FLIGHT — both ships",
                    tuple(_key_section(defs, d, centre) for d in ships))]
        for pos in HOUSTON_POSITIONS[1:]:
            sections = []
            for d in ships:
                refs = [r for r in pr.parameter_refs(d)
                        if r.entry.console.get("houston") == pos]
                for sub in pr.subsystem_order(refs):
                    group = [r for r in refs if r.subsystem == sub]
                    name = pr.subsystem_name(sub).upper()
                    sections.append(Section(f"{pr.vehicle_name(d, 'en').upper()} · {sub} — "
                                            f"{name}", tuple(make_field(r, centre)
                                                             for r in group)))
            out.append(Page(pos, pos, tuple(sections), link_quality=pos == "INCO"))
        return out
    out = [Page(MOSCOW_OVERVIEW, "ОБЗОР — оба корабля",
                tuple(_key_section(defs, d, centre) for d in ships))]
    groups = pr.moscow_group_order(r for d in ships for r in pr.parameter_refs(d))
    for g in groups:
        sections = []
        for d in ships:
            refs = [r for r in pr.parameter_refs(d) if pr.moscow_group(r) == g]
            if refs:
                sections.append(Section(pr.vehicle_name(d, "ru").upper(),
                                        tuple(make_field(r, centre) for r in refs)))
        out.append(Page(g, pr.moscow_group_title(g), tuple(sections),
                        link_quality=g == "РТС"))
    return out


def find_page(page_list: list[Page], position: str | None) -> int:
    """Index of the page --position names (case-insensitive; Latin aliases for Moscow)."""
    if not position:
        return 0
    want = position.strip()
    want = MOSCOW_ALIASES.get(want.upper(), want)
    for i, p in enumerate(page_list):
        if p.key.casefold() == want.casefold():
            return i
    known = ", ".join(p.key for p in page_list)
    raise ValueError(f"no position {position!r} on this console; choose one of: {known}")


def trend_fields(defs: dict[str, VehicleDefinition], centre: str) -> list[Field]:
    all_fields = fields(defs, centre)
    return [all_fields[k] for k in TRENDS[centre] if k in all_fields]


# A trend spans at least this many sensor counts, so that noise of a count or two moves a
# bar by one step at most (two rows of eighths: 16 steps) instead of filling the height.
TREND_MIN_COUNTS = 32


def trend_scale(f: Field, values: list[float]) -> tuple[float, float]:
    """The vertical scale of a trend, in the display unit: the yellow band, widened to
    take in the data when it leaves the band, and at least TREND_MIN_COUNTS counts tall.

    A controller reads a trend against its limits: a value creeping towards a limit must
    look like it, and a steady value must look steady, whatever its noise."""
    lo, hi = f.yellow or (None, None)
    if values:
        lo = min(values) if lo is None else min(lo, min(values))
        hi = max(values) if hi is None else max(hi, max(values))
    if lo is None or hi is None:
        return 0.0, 1.0
    step = f.count if f.count > 0 else 10.0 ** -f.decimals
    span = max(hi - lo, TREND_MIN_COUNTS * step)
    mid = (lo + hi) / 2
    return mid - span / 2, mid + span / 2


# --- clocks ------------------------------------------------------------------------------
# The header and the alarm list show dashes where no frame has come yet.


def get_text(t_ns: int | None) -> str:
    """GET of a data time, HHH:MM:SS from the Apollo liftoff."""
    return "---:--:--" if t_ns is None else format_get_ns(t_ns)


def gmt_text(t_ns: int | None) -> str:
    """GMT as NASA wrote it: day of year, then the time."""
    return "---:--:--:--" if t_ns is None else format_gmt_ns(t_ns)


def msk_text(t_ns: int | None, with_date: bool = True) -> str:
    """Moscow time of a data time, with the date or without."""
    if t_ns is None:
        return "--.--.---- --:--:--" if with_date else "--:--:--"
    return format_msk_ns(t_ns, with_date)


def limit_colour(state: int | None) -> str:
    """Control-room colours: green nominal, amber yellow, red red."""
    if state is None:
        return "grey50"
    sev = LimitState(max(-2, min(2, int(state)))).severity
    return {"nominal": "green3", "yellow": "orange1", "red": "bold red1"}[sev]
