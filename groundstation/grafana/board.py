"""Grafana consoles, generated from the telemetry definitions.

`build(defs)` turns the definitions into Grafana dashboard JSON models (the classic
dashboard model, schemaVersion 41): Houston FLIGHT, the EECOM, GNC and INCO positions,
the Moscow (ЦУП) Soyuz console in Russian, and the joint docking-and-transfer view.
`write(dir)` writes them as `dashboards/<name>.json`, which are committed; a test fails
when the committed files differ from what this module makes, so adding a parameter or
changing a limit in `telemetry_defs/` changes the consoles with it.

What comes from the definitions:

* every parameter's panels: labels (English, Russian), the display unit of the control
  centre (the InfluxQL query converts: `SELECT last("cabin_press") * 51.7149... FROM "tm"`,
  every conversion in `units` being affine), the number of decimals (the sensor's
  resolution in the display unit), the grouping (Houston position and subsystem, or
  Moscow group). How a centre shows a parameter is groundstation.core.presentation's,
  shared with the terminal console;
* stat and time-series colours and limit bands: the default limit set's yellow and red
  limits, converted to the display unit (Grafana thresholds; a limit set that only
  applies in a context, such as "docked", is listed in the panel description);
* discretes: state names and colours (red and yellow states) as value mappings.

Queries are InfluxQL only (InfluxDB 1.x, 2.x through its v1 compatibility, 3.x), against
the schema in README.md: `tm` (one field per parameter), `alarms`, `link`, `ingest`.
Template variables: `source` (live or a replay session) and `vehicle`. Tags are matched
with anchored regexes (`"source" =~ /^$source$/`), which is the form every Grafana
version interpolates safely (a replay session's `/` is regex-escaped).

Times: `tm` and `alarms` carry the data's own time, and the simulators fly in 1975
mission time, so the consoles open on the day of the first docking (17 July 1975, where
docker-compose.yml starts the simulators) and link to the whole joint flight and to
wall-clock time ("Live: last 15 min", for data stamped now). `link` and `ingest` are
stamped when the ingest measured them, so their panels use a relative time override
(`timeFrom`) and always show the ground system now. GET, GMT and MSK come from
`link.last_frame_ns`, the newest frame's time, shifted in the query by the epoch and the
Moscow offset of groundstation.core.mission_time.

The command line is `groundstation dashboards build [--check]`
(groundstation/commands/dashboards.py); `push` is in groundstation/grafana/push.py.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from groundstation.core import presentation as pr
from groundstation.core.definitions import LimitSet, VehicleDefinition, load_all
from groundstation.core.mission_time import LIFTOFF_NS, LIFTOFF_UTC, MSK_OFFSET_S, NS
from groundstation.paths import dashboards_dir

__all__ = [
    "DATASOURCE_UID",
    "DashboardError",
    "build",
    "dumps",
    "write",
]

DATASOURCE_UID = "gs-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 41
TAG = "groundstation"

NOMINAL = "transparent"  # nominal: no colour, so yellow and red stand out
YELLOW = "yellow"
RED = "red"
STATE_COLOURS = ("#8e8e8e", "green", "blue", "purple", "#b877d9", "#5794f2", "#73bf69")


class DashboardError(ValueError):
    """The definitions lack something a console needs (a key parameter was renamed).

    `build` raises it for a presentation.PresentationError too, so a caller of the
    generator catches one exception."""


# --- words and lists -------------------------------------------------------------------------


_WORDS: dict[str, tuple[str, str]] = {
    "source": ("Source", "Источник"),
    "vehicle": ("Vehicle", "Аппарат"),
    "get": ("GET", "Полётное время (GET)"),
    "gmt": ("GMT", "GMT"),
    "msk": ("MSK", "МСК"),
    "link": ("LINK", "СВЯЗЬ"),
    "alarms": ("ACTIVE ALARMS", "АКТИВНЫЕ АВАРИЙНЫЕ СИГНАЛЫ"),
    "alarm_events": ("Alarms", "Аварийные сигналы"),
    "consoles": ("Consoles", "Пульты"),
    "live": ("Live: last 15 min", "Реальное время: 15 мин"),
    "docking1": ("Mission time: first docking, 17 Jul 1975", "Время полёта: первая стыковка, "
                 "17.07.1975"),
    "mission": ("Mission time: whole joint flight", "Время полёта: весь совместный полёт"),
    "trends": ("trends", "графики"),
    "states": ("states", "состояния"),
    "limits": ("limits", "пределы"),
    "default_set": ("default set", "основной набор"),
    "yellow": ("yellow", "жёлтые"),
    "red": ("red", "красные"),
    "shown_in": ("shown in", "показано в"),
    "canonical": ("stored in", "хранится в"),
    "when": ("when", "если"),
    "no_limits": ("no limits", "без пределов"),
    "persistence": ("persistence", "задержка"),
    "samples": ("samples", "отсч."),
    "phase": ("phase", "фаза"),
    "estimate": ("figures are estimates", "значения оценочные"),
    "red_states": ("red states", "красные состояния"),
    "yellow_states": ("yellow states", "жёлтые состояния"),
}


def _w(key: str, lang: pr.Lang) -> str:
    en, ru = _WORDS[key]
    return ru if lang == "ru" else en if lang == "en" else f"{en} · {ru}"


_GRAFANA_UNITS = {"degF": "fahrenheit", "degC": "celsius", "percent": "percent"}

# FLIGHT's trends (its key values and docking state are presentation.FLIGHT_*).
FLIGHT_TRENDS: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("cabin_press", "co2_pp", "main_bus_a_volts"),
    "soyuz": ("sa_press", "pco2", "bus_volts"),
}
# The joint view: both cabins and the DM (every docking-subsystem parameter of both ships
# is added to these), the range and range rate.
JOINT_ATMOSPHERE: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("cabin_press", "dm_press", "cm_dm_delta_p", "cabin_o2_pp", "co2_pp",
                   "cabin_temp"),
    "soyuz": ("bo_press", "sa_press", "sa_bo_dp", "bo_po2", "sa_po2", "pco2", "bo_temp",
              "sa_temp"),
}
JOINT_PRESSURES: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("cabin_press", "dm_press"),
    "soyuz": ("bo_press", "sa_press"),
}
JOINT_VALVES: dict[str, tuple[str, ...]] = {"soyuz": ("sa_bo_valve",)}
JOINT_APPROACH: dict[str, tuple[str, ...]] = {
    "apollo_csm": ("vhf_range", "vhf_range_rate"),
    "soyuz": ("dock_ring_travel",),
}

# Quick links to mission-time windows: the simulators fly in 1975 time (UTC).
_WINDOWS = {
    "docking1": (datetime(1975, 7, 17, 15, 30, tzinfo=UTC), datetime(1975, 7, 17, 20, 30,
                                                                     tzinfo=UTC)),
    "mission": (datetime(1975, 7, 15, 12, 0, tzinfo=UTC), datetime(1975, 7, 25, 0, 0,
                                                                   tzinfo=UTC)),
}


# --- parameters --------------------------------------------------------------------------------


def _grafana_unit(unit: str, lang: pr.Lang) -> str:
    if unit in ("state", "count"):
        return "none"
    if unit in _GRAFANA_UNITS:
        return _GRAFANA_UNITS[unit]
    text = pr.unit_text(unit, "ru" if lang == "ru" else "en")
    return f"suffix:{text}" if unit == "deg" else f"suffix: {text}"


def _fmt(v: float) -> str:
    return f"{v:g}"


# --- thresholds and mappings -----------------------------------------------------------


def _severity(v: float, yellow: tuple[float | None, float | None] | None,
              red: tuple[float | None, float | None] | None) -> int:
    """0 nominal, 1 yellow, 2 red, for Grafana's rule: a step's colour holds from its value
    up (inclusive). The limit engine flags values strictly beyond a limit, so at exactly a
    high limit Grafana already shows the next colour; everywhere else they agree."""
    def beyond(pair: tuple[float | None, float | None] | None) -> bool:
        if pair is None:
            return False
        lo, hi = pair
        return (lo is not None and v < lo) or (hi is not None and v >= hi)

    return 2 if beyond(red) else 1 if beyond(yellow) else 0


def threshold_steps(limits: LimitSet | None, scale: float = 1.0, offset: float = 0.0,
                    nominal: str = NOMINAL) -> list[dict[str, Any]]:
    """Grafana threshold steps for a numeric limit set, in the display unit."""
    colours = (nominal, YELLOW, RED)
    if limits is None or (limits.yellow is None and limits.red is None):
        return [{"color": nominal, "value": None}]

    def conv(pair: tuple[float | None, float | None] | None
             ) -> tuple[float | None, float | None] | None:
        if pair is None:
            return None
        return pr.to_display(pair[0], scale, offset), pr.to_display(pair[1], scale, offset)

    yellow, red = conv(limits.yellow), conv(limits.red)
    points = sorted({v for pair in (yellow, red) if pair for v in pair if v is not None})
    steps: list[dict[str, Any]] = [
        {"color": colours[_severity(points[0] - 1.0 - abs(points[0]), yellow, red)],
         "value": None}]
    for p in points:
        colour = colours[_severity(p, yellow, red)]
        if colour != steps[-1]["color"]:
            steps.append({"color": colour, "value": p})
    return steps


def _state_mappings(r: pr.ParameterRef, lang: pr.Lang) -> list[dict[str, Any]]:
    """Each state's code to its name in the console's language, coloured by its limits."""
    lim = r.entry.limits
    red = set(lim.red_states or []) if lim else set()
    yellow = set(lim.yellow_states or []) if lim else set()
    options: dict[str, Any] = {}
    for i, (code, name) in enumerate(sorted(r.states.items())):
        colour = RED if name in red else YELLOW if name in yellow else \
            STATE_COLOURS[i % len(STATE_COLOURS)]
        options[str(code)] = {"text": pr.state_name(r, name, lang), "color": colour,
                              "index": i}
    return [{"type": "value", "options": options}] if options else []


def _describe(r: pr.ParameterRef, style: pr.Style) -> str:
    """The panel's description: where the value comes from and its limits."""
    e = r.entry
    lang: pr.Lang = "ru" if style.lang == "ru" else "en"
    ids = [x for x in (getattr(e, "msid", None), getattr(e, "channel", None)) if x]
    parts = [f"{r.vid}.{r.pid}" + (f" ({', '.join(ids)})" if ids else "")]
    if not (r.discrete or r.counter):
        shown = pr.display_unit(r, style)
        text = f"{_w('canonical', lang)} {pr.unit_text(e.unit, lang)}"
        if shown != e.unit:
            text += f", {_w('shown_in', lang)} {pr.unit_text(shown, lang)}"
        parts.append(text)
    lim = e.limits
    unit = pr.unit_text(e.unit, lang)

    def pair(p: tuple[float | None, float | None] | None) -> str:
        if p is None:
            return ""
        lo, hi = p
        return f"{'' if lo is None else _fmt(lo)}…{'' if hi is None else _fmt(hi)}"

    def states(names: list[str]) -> str:
        return ", ".join(pr.state_name(r, n, lang) for n in names)

    def limit_set(ls: LimitSet) -> str:
        bits = []
        if ls.yellow:
            bits.append(f"{_w('yellow', lang)} {pair(ls.yellow)}")
        if ls.red:
            bits.append(f"{_w('red', lang)} {pair(ls.red)}")
        if ls.yellow_states:
            bits.append(f"{_w('yellow_states', lang)} {states(ls.yellow_states)}")
        if ls.red_states:
            bits.append(f"{_w('red_states', lang)} {states(ls.red_states)}")
        if not bits:
            return _w("no_limits", lang)
        return "; ".join(bits) + (f" {unit}" if (ls.yellow or ls.red) and unit else "")

    if lim is not None:
        text = f"{_w('limits', lang)} ({_w('default_set', lang)}): {limit_set(lim)}"
        if lim.persistence_s:
            text += f"; {_w('persistence', lang)} {_fmt(lim.persistence_s)} s"
        elif lim.persistence > 1:
            text += f"; {_w('persistence', lang)} {lim.persistence} {_w('samples', lang)}"
        parts.append(text)
        for c in lim.contexts:
            w = c.when
            cond = (f"{_w('phase', lang)} {'/'.join(w.phase)}" if w.phase else
                    f"{w.parameter} in {'/'.join(str(x) for x in w.in_ or [])}")
            parts.append(f"{_w('when', lang)} {cond}: {limit_set(c)}")
    if e.is_estimate or (lim is not None and (lim.source or "").startswith("estimate")):
        parts.append(_w("estimate", lang))
    return " · ".join(parts)


# --- queries -------------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _select(fn: str, field: str, scale: float = 1.0, offset: float = 0.0) -> str:
    expr = f'{fn}("{field}")'
    if scale != 1.0:
        expr += f" * {scale!r}"
    if offset:
        expr += f" {'+' if offset > 0 else '-'} {abs(offset)!r}"
    return expr


SOURCE_FILTER = '"source" =~ /^$source$/'
VEHICLE_FILTER = '"vehicle" =~ /^$vehicle$/'


def _tm_where(vid: str) -> str:
    return f"\"vehicle\" = '{vid}' AND {SOURCE_FILTER} AND $timeFilter"


def _q_value(r: pr.ParameterRef, style: pr.Style, alias: str) -> str:
    scale, offset = pr.display_conversion(r, style)
    return (f"SELECT {_select('last', r.pid, scale, offset)} AS {_ident(alias)} FROM \"tm\" "
            f"WHERE {_tm_where(r.vid)}")


def _q_series(r: pr.ParameterRef, style: pr.Style, alias: str) -> str:
    scale, offset = pr.display_conversion(r, style)
    if r.discrete or r.counter:
        return (f"SELECT last(\"{r.pid}\") AS {_ident(alias)} FROM \"tm\" WHERE "
                f"{_tm_where(r.vid)} GROUP BY time($__interval) fill(none)")
    return (f"SELECT {_select('mean', r.pid, scale, offset)} AS {_ident(alias)} FROM \"tm\" "
            f"WHERE {_tm_where(r.vid)} GROUP BY time($__interval) fill(null)")


def _target(query: str, ref: str = "A", fmt: str = "time_series",
            alias: str | None = "$col") -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "query": query,
                         "rawQuery": True, "resultFormat": fmt}
    if alias is not None:
        t["alias"] = alias
    return t


def _refs(n: int) -> list[str]:
    out = []
    for i in range(n):
        s, k = "", i
        while True:
            s = chr(ord("A") + k % 26) + s
            k = k // 26 - 1
            if k < 0:
                break
        out.append(s)
    return out


def _regex_list(values: Iterable[str]) -> str:
    return "|".join(sorted(set(values)))


# --- panels --------------------------------------------------------------------------------


def _stat_options(colour_mode: str = "background", text_mode: str = "value_and_name",
                  value_size: int | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "auto", "textMode": text_mode, "colorMode": colour_mode,
        "graphMode": "none", "justifyMode": "center", "wideLayout": True,
        "showPercentChange": False,
    }
    if value_size is not None:
        opts["text"] = {"valueSize": value_size}
    return opts


def _panel(kind: str, title: str, targets: list[dict[str, Any]], defaults: dict[str, Any],
           options: dict[str, Any], description: str = "",
           overrides: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"type": kind, "title": title, "datasource": DATASOURCE}
    if description:
        p["description"] = description
    p["targets"] = targets
    p["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    p["options"] = options
    p.update(extra)
    return p


def _stat(r: pr.ParameterRef, style: pr.Style, title: str | None = None) -> dict[str, Any]:
    label = title or pr.label(r.entry, style.lang)
    scale, offset = pr.display_conversion(r, style)
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"}, "noValue": "—",
        "unit": _grafana_unit(pr.display_unit(r, style), style.lang),
        "decimals": pr.decimals(r, scale),
        "thresholds": {"mode": "absolute", "steps": [{"color": NOMINAL, "value": None}]},
        "mappings": [],
    }
    if r.discrete:
        defaults["mappings"] = _state_mappings(r, style.lang)
    elif r.entry.limits is not None:
        defaults["thresholds"]["steps"] = threshold_steps(r.entry.limits, scale, offset)
    return _panel("stat", label, [_target(_q_value(r, style, label))], defaults,
                  _stat_options(), _describe(r, style))


def _timeseries_defaults(unit: str, decimals: int | None,
                         steps: list[dict[str, Any]] | None) -> dict[str, Any]:
    banded = steps is not None and len(steps) > 1
    custom: dict[str, Any] = {
        "drawStyle": "line", "lineInterpolation": "linear", "lineWidth": 2,
        "fillOpacity": 0, "showPoints": "never",
        # Connect samples up to 10 s apart (the slowest are 1.6 s apart); a longer gap,
        # such as a loss of signal, stays a gap.
        "spanNulls": 10000,
        "axisPlacement": "auto",
        "thresholdsStyle": {"mode": "line+area" if banded else "off"},
    }
    if steps is not None and banded:
        # Keep the limits on the axis, so the bands show even while the value is nominal.
        values = [s["value"] for s in steps[1:]]
        if steps[0]["color"] != NOMINAL:
            custom["axisSoftMin"] = min(values)
        if steps[-1]["color"] != NOMINAL:
            custom["axisSoftMax"] = max(values)
    d: dict[str, Any] = {
        "custom": custom, "color": {"mode": "palette-classic"}, "unit": unit,
        "thresholds": {"mode": "absolute",
                       "steps": steps or [{"color": NOMINAL, "value": None}]},
        "mappings": [],
    }
    if decimals is not None:
        d["decimals"] = decimals
    return d


def _timeseries_options() -> dict[str, Any]:
    return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                       "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "none"}}


def _trend(r: pr.ParameterRef, style: pr.Style) -> dict[str, Any]:
    """One parameter over time, its yellow and red limits shaded (line+area)."""
    label = pr.label(r.entry, style.lang)
    scale, offset = pr.display_conversion(r, style)
    steps = threshold_steps(r.entry.limits, scale, offset) if r.entry.limits else None
    return _panel("timeseries", label, [_target(_q_series(r, style, label))],
                  _timeseries_defaults(_grafana_unit(pr.display_unit(r, style), style.lang),
                                       pr.decimals(r, scale), steps),
                  _timeseries_options(), _describe(r, style))


def _multi_trend(refs: Sequence[pr.ParameterRef], style: pr.Style, title: str) -> dict[str, Any]:
    """Several unlimited parameters sharing a display unit, over time."""
    unit = pr.display_unit(refs[0], style)
    targets = [_target(_q_series(r, style, pr.label(r.entry, style.lang)), ref)
               for r, ref in zip(refs, _refs(len(refs)), strict=True)]
    desc = "\n".join(_describe(r, style) for r in refs)
    return _panel("timeseries", title, targets,
                  _timeseries_defaults(_grafana_unit(unit, style.lang), None, None),
                  _timeseries_options(), desc)


def _timeline(refs: Sequence[pr.ParameterRef], style: pr.Style, title: str) -> dict[str, Any]:
    """Discretes over time, one lane each, coloured by state."""
    targets = [_target(_q_series(r, style, pr.label(r.entry, style.lang)), ref)
               for r, ref in zip(refs, _refs(len(refs)), strict=True)]
    overrides = [{"matcher": {"id": "byName", "options": pr.label(r.entry, style.lang)},
                  "properties": [{"id": "mappings",
                                  "value": _state_mappings(r, style.lang)}]}
                 for r in refs]
    defaults = {"custom": {"fillOpacity": 85, "lineWidth": 0, "hideFrom": {
                    "legend": False, "tooltip": False, "viz": False}},
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]},
                "mappings": []}
    options = {"mergeValues": True, "showValue": "auto", "alignValue": "left",
               "rowHeight": 0.85, "legend": {"showLegend": False},
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("state-timeline", title, targets, defaults, options,
                  "\n".join(_describe(r, style) for r in refs), overrides)


def _clock_get(style: pr.Style) -> dict[str, Any]:
    q = (f'SELECT max("last_frame_ns") / 1000000000 - {LIFTOFF_NS // NS} AS "GET" FROM "link" '
         f"WHERE {SOURCE_FILTER} AND $timeFilter")
    desc = (f"Ground elapsed time from Apollo's liftoff ({LIFTOFF_UTC:%Y-%m-%d %H:%M:%S} UTC) "
            "of the newest frame received (link.last_frame_ns), hours:minutes:seconds")
    return _panel("stat", _w("get", style.lang), [_target(q)],
                  {"unit": "dthms", "decimals": 0, "color": {"mode": "fixed",
                                                               "fixedColor": "text"},
                   "noValue": "—", "mappings": [],
                   "thresholds": {"mode": "absolute", "steps": [{"color": "text",
                                                                 "value": None}]}},
                  _stat_options("value", "value", 34), desc, timeFrom="1m")


def _clock(style: pr.Style, which: str) -> dict[str, Any]:
    """GMT (day of year, as NASA wrote it) or Moscow time of the newest frame."""
    shift = ""
    fmt = "time:DDDD:HH:mm:ss"
    if which == "gmt" and style.timezone == "Europe/Moscow":
        shift = f" - {MSK_OFFSET_S * 1000}"
    if which == "gmt" and style.lang == "ru":
        fmt = "time:DD.MM.YYYY HH:mm:ss"
    if which == "msk":
        fmt = "time:DD.MM.YYYY HH:mm:ss"
        if style.timezone != "Europe/Moscow":
            shift = f" + {MSK_OFFSET_S * 1000}"
    alias = _w(which, "en")
    q = (f'SELECT max("last_frame_ns") / 1000000{shift} AS "{alias}" FROM "link" '
         f"WHERE {SOURCE_FILTER} AND $timeFilter")
    desc = {"gmt": "Greenwich time of the newest frame received (day of year:hh:mm:ss)",
            "msk": "Moscow time (UTC+3) of the newest frame received"}[which]
    return _panel("stat", _w(which, style.lang), [_target(q)],
                  {"unit": fmt, "color": {"mode": "fixed", "fixedColor": "text"},
                   "noValue": "—", "mappings": [],
                   "thresholds": {"mode": "absolute", "steps": [{"color": "text",
                                                                 "value": None}]}},
                  _stat_options("value", "value", 34), desc, timeFrom="1m")


def _aos(style: pr.Style, defs: dict[str, VehicleDefinition],
         vehicle: str | None = None) -> dict[str, Any]:
    """AOS while frames arrive (the good-frame count grew in the last 15 s), LOS otherwise."""
    ru = style.lang == "ru"
    where = f"\"vehicle\" = '{vehicle}'" if vehicle else VEHICLE_FILTER
    q = (f'SELECT spread("frames_good") AS "frames" FROM "link" WHERE {where} AND '
         f'{SOURCE_FILTER} AND $timeFilter GROUP BY "vehicle"')
    mappings = [
        {"type": "range", "options": {"from": 0, "to": 0, "result": {
            "text": "НЕТ СВЯЗИ" if ru else "LOS", "color": RED, "index": 0}}},
        {"type": "range", "options": {"from": 0.5, "to": 1e15, "result": {
            "text": "СВЯЗЬ" if ru else "AOS", "color": "green", "index": 1}}},
    ]
    # Each value is named by its vehicle tag; show the ship's name instead of its id.
    names = [{"matcher": {"id": "byName", "options": d.vehicle},
              "properties": [{"id": "displayName", "value": pr.vehicle_name(d, style.lang)}]}
             for d in defs.values() if vehicle in (None, d.vehicle)]
    desc = ("Acquisition of signal: good frames arrived in the last 15 s (link.frames_good). "
            "LOS: the ingest still tracks the stream but nothing came.")
    return _panel("stat", _w("link", style.lang), [_target(q, alias="$tag_vehicle")],
                  {"color": {"mode": "thresholds"}, "noValue": "NO DATA",
                   "mappings": mappings,
                   "thresholds": {"mode": "absolute", "steps": [{"color": "text",
                                                                 "value": None}]}},
                  _stat_options("background", "value_and_name"), desc, names,
                  timeFrom="15s")


_STATE_TEXT = {
    "active_unacked": ("ACTIVE · UNACK", "активна, не квитирована"),
    "active_acked": ("ACTIVE · ACK", "активна, квитирована"),
    "normal_unacked": ("NORMAL · UNACK", "норма, не квитирована"),
    "shelved": ("SHELVED", "отложена"),
    "normal": ("NORMAL", "норма"),
}
_SEVERITY_TEXT = {"red": ("RED", "КРАСНЫЙ", RED), "yellow": ("YELLOW", "ЖЁЛТЫЙ", YELLOW),
                  "nominal": ("NOMINAL", "НОРМА", "green")}


def _alarm_table(style: pr.Style, defs: dict[str, VehicleDefinition], *, console: str | None = None,
                 parameters: Sequence[pr.ParameterRef] = ()) -> dict[str, Any]:
    """Each parameter's latest alarm event; those not back to normal are the active list.

    No time filter: an alarm latches until acknowledged, however long ago it was raised."""
    ru = style.lang == "ru"
    where = [SOURCE_FILTER, VEHICLE_FILTER]
    if console:
        where.append(f"\"console\" = '{console}'")
    if parameters:
        where.append(f'"parameter" =~ /^({_regex_list(r.pid for r in parameters)})$/')
    fields = ("state", "severity", "label", "value", "value_text", "limit", "unit")
    q = (f"SELECT {', '.join(f'last({_ident(f)}) AS {_ident(f)}' for f in fields)} "
         f"FROM \"alarms\" WHERE {' AND '.join(where)} GROUP BY \"vehicle\", \"parameter\"")
    names = (["АППАРАТ", "ПАРАМЕТР", "СОСТОЯНИЕ", "УРОВЕНЬ", "ЗНАЧЕНИЕ", "СОСТ.", "ПРЕДЕЛ",
              "ЕД."] if ru else
             ["VEHICLE", "PARAMETER", "STATE", "SEVERITY", "VALUE", "DISCRETE", "LIMIT",
              "UNIT"])
    cols = ["vehicle", "parameter", "state", "severity", "value", "value_text", "limit", "unit"]
    overrides: list[dict[str, Any]] = [
        {"matcher": {"id": "byName", "options": "severity"}, "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": {
                k: {"text": v[1 if ru else 0], "color": v[2], "index": i}
                for i, (k, v) in enumerate(_SEVERITY_TEXT.items())}}]},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
        {"matcher": {"id": "byName", "options": "state"}, "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": {
                k: {"text": v[1 if ru else 0], "index": i}
                for i, (k, v) in enumerate(_STATE_TEXT.items())}}]}]},
        {"matcher": {"id": "byName", "options": "vehicle"}, "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": {
                d.vehicle: {"text": pr.vehicle_name(d, style.lang), "index": i}
                for i, d in enumerate(defs.values())}}]}]},
    ]
    if style.lang != "en":
        # Alarm events carry the English label; the parameter id maps to this console's.
        overrides.append({"matcher": {"id": "byName", "options": "parameter"}, "properties": [
            {"id": "mappings", "value": [{"type": "value", "options": {
                r.pid: {"text": pr.label(r.entry, style.lang), "index": i}
                for i, r in enumerate(r for d in defs.values() for r in pr.parameter_refs(d))}}]}]})
        # ... and a discrete's state in English (the definitions' name): in this
        # console's language wherever the name says one thing on these ships.
        said: dict[str, set[str]] = {}
        for d in defs.values():
            for r in pr.parameter_refs(d):
                if r.discrete and r.entry.limits is not None:
                    for st in r.states.values():
                        said.setdefault(st, set()).add(pr.state_name(r, st, style.lang))
        states = {st: next(iter(ws)) for st, ws in sorted(said.items()) if len(ws) == 1}
        if states:
            overrides.append({"matcher": {"id": "byName", "options": "value_text"},
                              "properties": [{"id": "mappings", "value": [{
                                  "type": "value", "options": {
                                      st: {"text": w, "index": i}
                                      for i, (st, w) in enumerate(states.items())}}]}]})
        exclude = {"Time": True, "label": True}
    else:
        exclude = {"Time": True, "parameter": True}
        cols[1] = "label"
    transformations = [
        {"id": "filterByValue", "options": {
            "type": "exclude", "match": "any",
            "filters": [{"fieldName": "state",
                         "config": {"id": "equal", "options": {"value": "normal"}}}]}},
        {"id": "organize", "options": {
            "excludeByName": exclude,
            "indexByName": {c: i for i, c in enumerate(cols)},
            "renameByName": {}}},
    ]
    defaults = {"custom": {"align": "auto", "cellOptions": {"type": "auto"},
                           "inspect": False, "filterable": False},
                "color": {"mode": "thresholds"}, "mappings": [],
                "thresholds": {"mode": "absolute", "steps": [{"color": "text",
                                                              "value": None}]}}
    # Column titles through displayName overrides: they survive the filter and organize.
    for col, name in zip(cols, names, strict=True):
        overrides.append({"matcher": {"id": "byName", "options": col},
                          "properties": [{"id": "displayName", "value": name}]})
    desc = ("Latest event of every alarm of this console (alarms measurement); those back to "
            "normal and acknowledged are hidden. Red and yellow alarms latch until an "
            "operator acknowledges them.")
    return _panel("table", _w("alarms", style.lang), [_target(q, fmt="table", alias=None)],
                  defaults, {"showHeader": True, "cellHeight": "sm", "footer": {
                      "show": False, "reducer": ["sum"], "fields": "", "countRows": False}},
                  desc, overrides, transformations=transformations)


def _alarm_annotation(style: pr.Style, *, console: str | None = None,
                      parameters: Sequence[pr.ParameterRef] = ()) -> dict[str, Any]:
    where = [SOURCE_FILTER, VEHICLE_FILTER]
    if console:
        where.append(f"\"console\" = '{console}'")
    if parameters:
        where.append(f'"parameter" =~ /^({_regex_list(r.pid for r in parameters)})$/')
    q = ('SELECT "label", "severity", "transition", "vehicle", "parameter" FROM "alarms" '
         f"WHERE {' AND '.join(where)} AND $timeFilter")
    return {"datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": RED,
            "name": _w("alarm_events", style.lang),
            "target": {"refId": "Alarms", "datasource": DATASOURCE, "query": q,
                       "rawQuery": True, "resultFormat": "table", "fromAnnotations": True,
                       "queryType": "tags", "textColumn": "label",
                       "tagsColumn": "transition,severity,vehicle", "titleColumn": "",
                       "timeEndColumn": "", "limit": 200, "matchAny": False, "tags": [],
                       "type": "tags"}}


def _link_table(style: pr.Style, defs: dict[str, VehicleDefinition],
                compact: bool = False) -> dict[str, Any]:
    """Per vehicle over the last minute: frames, sync and counter errors, gaps, latency."""
    cols = [('spread("frames_good")', "frames"), ('spread("sync_errors")', "sync errors"),
            ('spread("counter_errors")', "counter errors"),
            ('spread("frames_missing")', "gaps (frames)")]
    if not compact:
        cols += [('last("latency_ms_p50")', "latency p50 ms"),
                 ('max("latency_ms_max")', "latency max ms")]
    q = (f"SELECT {', '.join(f'{expr} AS {_ident(name)}' for expr, name in cols)} "
         f'FROM "link" WHERE {VEHICLE_FILTER} AND {SOURCE_FILTER} AND $timeFilter '
         'GROUP BY "vehicle"')
    overrides = [{"matcher": {"id": "byName", "options": "vehicle"}, "properties": [
        {"id": "mappings", "value": [{"type": "value", "options": {
            d.vehicle: {"text": pr.vehicle_name(d, style.lang), "index": i}
            for i, d in enumerate(defs.values())}}]}]}]
    for name in ("sync errors", "counter errors", "gaps (frames)"):
        # Any error in the last minute stands out.
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": YELLOW}},
            {"id": "mappings", "value": [{"type": "value", "options": {
                "0": {"text": "0", "color": "text", "index": 0}}}]}]})
    desc = ("Per vehicle, over the last minute (link measurement): good frames, bad sync "
            "patterns, impossible frame counters, frames missing from counter gaps"
            + ("" if compact else ", and the ingest's latency from frame time (mission-time "
               "and replayed data show their age here)"))
    return _panel("table", "LINK QUALITY (last minute)", [_target(q, fmt="table", alias=None)],
                  {"custom": {"align": "auto", "cellOptions": {"type": "auto"},
                              "inspect": False}, "decimals": 0, "mappings": [],
                   "color": {"mode": "thresholds"},
                   "thresholds": {"mode": "absolute", "steps": [{"color": "text",
                                                                 "value": None}]}},
                  {"showHeader": True, "cellHeight": "sm"}, desc, overrides,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {}}}],
                  timeFrom="1m")


def _ground_series(title: str, select: str, measurement: str, unit: str, desc: str,
                   group_vehicle: bool = True) -> dict[str, Any]:
    where = f"{VEHICLE_FILTER} AND {SOURCE_FILTER} AND " if measurement == "link" else ""
    group = ', "vehicle"' if group_vehicle and measurement == "link" else ""
    q = (f'SELECT {select} FROM "{measurement}" WHERE {where}$timeFilter '
         f"GROUP BY time($__interval){group} fill(null)")
    alias = "$tag_vehicle $col" if group else "$col"
    return _panel("timeseries", title, [_target(q, alias=alias)],
                  _timeseries_defaults(unit, None, None), _timeseries_options(), desc,
                  timeFrom="15m")


def _ground_stat(title: str, select: str, unit: str, desc: str,
                 decimals: int | None = 0) -> dict[str, Any]:
    q = f'SELECT {select} FROM "ingest" WHERE $timeFilter'
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "fixed", "fixedColor": "text"},
                                "noValue": "—", "mappings": [],
                                "thresholds": {"mode": "absolute",
                                               "steps": [{"color": "text", "value": None}]}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return _panel("stat", title, [_target(q)], defaults, _stat_options("value"), desc,
                  timeFrom="1m")


# --- layout --------------------------------------------------------------------------------


class _Board:
    """Places panels left to right in Grafana's 24-column grid, in rows."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._next_id = 1
        self._y = 0  # where the next line starts, top level
        self._x = 0
        self._line_h = 0
        self._row: dict[str, Any] | None = None  # an open collapsed row takes the panels

    def _newline(self) -> None:
        self._y += self._line_h
        self._x = 0
        self._line_h = 0

    def _close_row(self) -> None:
        self._newline()
        if self._row is not None:
            # A collapsed row takes one grid line; what it holds is laid out below it and
            # pushed down by Grafana when it is opened.
            self._y = self._row["gridPos"]["y"] + 1
            self._row = None

    def row(self, title: str, collapsed: bool = False) -> None:
        self._close_row()
        row = {"type": "row", "title": title, "collapsed": collapsed, "id": self._id(),
               "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []}
        self.panels.append(row)
        self._y += 1
        if collapsed:
            self._row = row

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        panel = {"id": self._id(), "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
                 **panel}
        (self._row["panels"] if self._row is not None else self.panels).append(panel)
        self._x += w
        self._line_h = max(self._line_h, h)

    def fill(self, panels: Iterable[dict[str, Any]], w: int, h: int) -> None:
        for p in panels:
            self.add(p, w, h)

    def end_line(self) -> None:
        self._newline()

    def _id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def done(self) -> list[dict[str, Any]]:
        self._close_row()
        return self.panels


# --- dashboards ----------------------------------------------------------------------------


def _variables(style: pr.Style, vehicle_default: str | None = None) -> list[dict[str, Any]]:
    def text(key: str) -> str:
        return f'SHOW TAG VALUES FROM "tm" WITH KEY = "{key}"'

    def query(key: str) -> dict[str, str]:
        # The form Grafana's InfluxDB variable editor saves (older versions took the string).
        return {"query": text(key), "refId": "InfluxVariableQueryEditor-VariableQuery"}

    source = {
        "name": "source", "label": _w("source", style.lang), "type": "query",
        "datasource": DATASOURCE, "query": query("source"), "definition": text("source"),
        "refresh": 1, "multi": False, "includeAll": False, "sort": 1, "regex": "",
        "hide": 0, "skipUrlSync": False, "options": [],
        "current": {"selected": True, "text": "live", "value": "live"},
        "description": "live, or a replay session (replay/<session>)",
    }
    if vehicle_default:
        current = {"selected": True, "text": [vehicle_default], "value": [vehicle_default]}
    else:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    vehicle = {
        "name": "vehicle", "label": _w("vehicle", style.lang), "type": "query",
        "datasource": DATASOURCE, "query": query("vehicle"), "definition": text("vehicle"),
        "refresh": 1, "multi": True, "includeAll": True, "allValue": None, "sort": 1,
        "regex": "", "hide": 0, "skipUrlSync": False, "options": [], "current": current,
        "description": "the alarm list, alarm annotations and link status show these vehicles",
    }
    return [source, vehicle]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _links(uid: str, style: pr.Style) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = [
        {"title": _w("consoles", style.lang), "type": "dashboards", "tags": [TAG],
         "asDropdown": True, "includeVars": True, "keepTime": True, "icon": "external link",
         "targetBlank": False, "tooltip": "", "url": ""},
        {"title": _w("live", style.lang), "type": "link", "url":
         f"/d/{uid}?from=now-15m&to=now&refresh=1s", "includeVars": True, "keepTime": False,
         "icon": "dashboard", "asDropdown": False, "targetBlank": False, "tags": [],
         "tooltip": "wall-clock time: data stamped now"},
    ]
    for key, (t0, t1) in _WINDOWS.items():
        links.append({"title": _w(key, style.lang), "type": "link",
                      "url": f"/d/{uid}?from={_ms(t0)}&to={_ms(t1)}&refresh=1s",
                      "includeVars": True,
                      "keepTime": False, "icon": "info", "asDropdown": False,
                      "targetBlank": False, "tags": [],
                      "tooltip": "the simulators stamp frames with 1975 mission time"})
    return links


def _dashboard(uid: str, title: str, style: pr.Style, panels: list[dict[str, Any]],
               annotations: list[dict[str, Any]], description: str, tags: Sequence[str],
               vehicle_default: str | None = None) -> dict[str, Any]:
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG, *tags],
        "timezone": style.timezone,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "weekStart": "monday" if style.lang == "ru" else "",
        # The simulators fly in 1975 mission time and docker-compose.yml starts them half
        # an hour before the first docking: open on that day. The "Live" link switches to
        # wall-clock time (data stamped now, such as `groundstation demo`).
        "time": {"from": _iso(_WINDOWS["docking1"][0]), "to": _iso(_WINDOWS["docking1"][1])},
        "timepicker": {"refresh_intervals": ["1s", "2s", "5s", "10s", "30s", "1m", "5m"]},
        "templating": {"list": _variables(style, vehicle_default)},
        "annotations": {"list": [builtin, *annotations]},
        "links": _links(uid, style),
        "panels": panels,
    }


def _header(board: _Board, style: pr.Style, defs: dict[str, VehicleDefinition], *,
            msk: bool = False, aos_vehicle: str | None = None, width: int = 24) -> None:
    """GET, GMT (and Moscow time), and the link status, on one line of `width` columns."""
    board.add(_clock_get(style), 4, 3)
    board.add(_clock(style, "gmt"), 5, 3)
    if msk:
        board.add(_clock(style, "msk"), 5, 3)
    board.add(_aos(style, defs, aos_vehicle), width - (14 if msk else 9), 3)


def _analog(refs: Iterable[pr.ParameterRef]) -> list[pr.ParameterRef]:
    return [r for r in refs if not r.discrete]


def _discrete(refs: Iterable[pr.ParameterRef]) -> list[pr.ParameterRef]:
    return [r for r in refs if r.discrete]


def _has_numeric_limits(r: pr.ParameterRef) -> bool:
    lim = r.entry.limits
    return lim is not None and (lim.yellow is not None or lim.red is not None)


def _group_section(board: _Board, refs: Sequence[pr.ParameterRef], style: pr.Style,
                   title: str) -> None:
    """A console section: stats (and discrete stats) open; trends in a collapsed row."""
    if not refs:
        return
    board.row(title)
    board.fill((_stat(r, style) for r in _analog(refs)), 3, 4)
    board.end_line()
    board.fill((_stat(r, style) for r in _discrete(refs)), 3, 3)
    board.end_line()
    discretes = _discrete(refs)
    analogs = _analog(refs)
    if not analogs and not discretes:
        return
    board.row(f"{title} — {_w('trends', style.lang)}", collapsed=True)
    for r in analogs:
        if _has_numeric_limits(r):
            board.add(_trend(r, style), 6, 7)
    unlimited: dict[str, list[pr.ParameterRef]] = {}
    for r in analogs:
        if not _has_numeric_limits(r):
            unlimited.setdefault(pr.display_unit(r, style), []).append(r)
    for unit, group in unlimited.items():
        name = pr.unit_text(unit, "ru" if style.lang == "ru" else "en") or unit
        board.add(_multi_trend(group, style, f"{title} ({name})"), 12, 7)
    if discretes:
        board.end_line()
        board.add(_timeline(discretes, style, f"{title} — {_w('states', style.lang)}"), 24,
                  2 + math.ceil(1.3 * len(discretes)))


def _flight(defs: dict[str, VehicleDefinition]) -> dict[str, Any]:
    style, board = pr.HOUSTON, _Board()
    _header(board, style, defs, width=16)
    board.fill((_stat(r, style)
                for r in pr.pick_refs(defs, pr.FLIGHT_STATUS, "FLIGHT status")), 4, 3)
    board.end_line()
    board.row("DOCKING")
    board.fill((_stat(r, style)
                for r in pr.pick_refs(defs, pr.FLIGHT_DOCKING, "FLIGHT docking")), 4, 3)
    board.end_line()
    board.add(_alarm_table(style, defs), 16, 6)
    board.add(_link_table(style, defs, compact=True), 8, 6)
    for vid, d in defs.items():
        keys = pr.pick_refs(defs, {vid: pr.FLIGHT_KEYS.get(vid, ())}, "FLIGHT key values")
        if not keys:
            continue
        board.row(pr.vehicle_name(d, "en"))
        board.fill((_stat(r, style) for r in keys), 4, 4)
    board.row("TRENDS")
    board.fill((_trend(r, style) for r in pr.pick_refs(defs, FLIGHT_TRENDS, "FLIGHT trends")), 8, 7)
    return _dashboard(
        "gs-flight", "FLIGHT — Houston", style, board.done(),
        [_alarm_annotation(style)],
        "The flight director's view: mission clock, both ships' link, key values and docking "
        "state, the active alarm list. Generated from telemetry_defs/ by "
        "groundstation.grafana.board; do not edit by hand.", ["houston", "flight"])


def _position(defs: dict[str, VehicleDefinition], position: str) -> dict[str, Any]:
    style, board = pr.HOUSTON, _Board()
    _header(board, style, defs)
    board.end_line()
    board.add(_alarm_table(style, defs, console=position), 24, 5)
    for d in defs.values():
        refs = [r for r in pr.parameter_refs(d) if r.entry.console.get("houston") == position]
        for sub in pr.subsystem_order(refs):
            group = [r for r in refs if r.subsystem == sub]
            name = pr.subsystem_name(sub)
            _group_section(board, group, style, f"{pr.vehicle_name(d, 'en')} · {sub} — {name}")
    if position == "INCO":
        _inco_ground(board, style, defs)
    what = {"EECOM": "environmental control, electrical power and cryogenics, the docking "
                     "module's atmosphere and hatches",
            "GNC": "attitude, rates, gimbals, propulsion, docking mechanism and ranging",
            "INCO": "communications and the ground system's own health: link quality per "
                    "ship and the ingest service"}.get(position, "")
    return _dashboard(f"gs-{position.lower()}", f"{position} — Houston", style, board.done(),
                      [_alarm_annotation(style, console=position)],
                      f"Houston {position} console: {what}. Generated from telemetry_defs/ "
                      "by groundstation.grafana.board; do not edit by hand.",
                      ["houston", position.lower()])


def _inco_ground(board: _Board, style: pr.Style, defs: dict[str, VehicleDefinition]) -> None:
    board.row("GROUND — link quality and ingest health")
    board.add(_link_table(style, defs), 24, 5)
    board.add(_ground_series("FRAMES / s", 'non_negative_derivative(last("frames_good"), 1s) '
                             'AS "frames/s"', "link", "none",
                             "good frames a second, per vehicle"), 8, 7)
    board.add(_ground_series("LINK ERRORS / s", 'non_negative_derivative(last("sync_errors"), '
                             '1s) AS "sync", non_negative_derivative(last("counter_errors"), '
                             '1s) AS "counter", non_negative_derivative(last('
                             '"frames_missing"), 1s) AS "missing"', "link", "none",
                             "bad sync patterns, impossible counters and counter gaps a "
                             "second, per vehicle"), 8, 7)
    board.add(_ground_series("INGEST LATENCY", 'mean("latency_ms_p50") AS "p50", '
                             'max("latency_ms_max") AS "max"', "link", "ms",
                             "time from a frame's own timestamp to its decoding; mission-time "
                             "and replayed data show their age"), 8, 7)
    board.fill([
        _ground_stat("MESSAGES / s", 'non_negative_derivative("messages_in", 1s)',
                     "none", "MQTT messages received a second", 1),
        _ground_stat("FRAMES STORED / s", 'non_negative_derivative("frames_stored", 1s)',
                     "none", "frames decoded and submitted for storage a second", 0),
        _ground_stat("IN FLIGHT", 'last("inflight_messages")', "none",
                     "messages received and not yet durable (bounded by queue_max_messages)"),
        _ground_stat("REJECTED", 'spread("rejected_total")', "none",
                     "messages and frames rejected in the last minute (quarantined)"),
        _ground_stat("DECODE p50", 'last("decode_ms_p50")', "ms",
                     "decode time of a batch, median", 2),
        _ground_stat("DB WRITE p50", 'last("sink_write_latency_p50_s") * 1000', "ms",
                     "InfluxDB write request latency, median", 1),
        _ground_stat("SPOOL", 'last("sink_spool_bytes")', "bytes",
                     "lines waiting on disk while InfluxDB is unreachable"),
        _ground_stat("DEAD LETTERS", 'last("sink_dead_letter_lines")', "none",
                     "lines InfluxDB refused as malformed"),
    ], 3, 3)
    board.add(_ground_series("INGEST THROUGHPUT", 'non_negative_derivative(last('
                             '"frames_stored"), 1s) AS "frames/s", non_negative_derivative('
                             'last("sink_lines_written"), 1s) AS "lines/s"', "ingest", "none",
                             "frames stored and lines written a second"), 12, 7)
    board.add(_ground_series("BACKLOG", 'last("inflight_messages") AS "in flight", '
                             'last("outbox") AS "outbox", last("sink_spool_pending_lines") AS '
                             '"spooled lines"', "ingest", "none",
                             "unacknowledged messages, queued console updates, lines on the "
                             "disk spool"), 12, 7)


def _tsup(defs: dict[str, VehicleDefinition]) -> dict[str, Any]:
    style, board = pr.MOSCOW, _Board()
    d = defs.get("soyuz")
    if d is None:
        raise DashboardError("ЦУП console: no vehicle 'soyuz' in the definitions")
    _header(board, style, defs, msk=True, aos_vehicle="soyuz")
    board.end_line()
    board.add(_alarm_table(style, defs), 24, 5)
    refs = pr.parameter_refs(d)
    groups = pr.moscow_group_order(refs)
    for g in groups:
        group = [r for r in refs if pr.moscow_group(r) == g]
        _group_section(board, group, style, pr.moscow_group_title(g))
    return _dashboard(
        "gs-tsup", "ЦУП — Союз-19", style, board.done(),
        [_alarm_annotation(style)],
        "Пульт ЦУП: системы корабля «Союз-19» по группам, давление в мм рт. ст., температура в "
        "°C, московское время рядом с GMT. Создано из telemetry_defs/ модулем "
        "groundstation.grafana.board; не редактировать вручную.", ["moscow", "soyuz"],
        vehicle_default="soyuz")


def _joint(defs: dict[str, VehicleDefinition]) -> dict[str, Any]:
    style, board = pr.JOINT, _Board()
    _header(board, style, defs, msk=True)
    atmosphere = pr.pick_refs(defs, JOINT_ATMOSPHERE, "joint view")
    approach = pr.pick_refs(defs, JOINT_APPROACH, "joint view")
    valves = pr.pick_refs(defs, JOINT_VALVES, "joint view")
    docking = [r for d in defs.values() for r in pr.parameter_refs(d)
               if r.entry.subsystem == "DOCK" and r not in atmosphere and r not in approach]
    everything = [*atmosphere, *approach, *docking, *valves]
    board.end_line()
    board.add(_alarm_table(style, defs, parameters=everything), 24, 5)

    board.row("APPROACH · СБЛИЖЕНИЕ")
    board.fill((_stat(r, style) for r in [*approach, *_analog(docking)]), 4, 4)
    board.end_line()
    for r in approach:
        board.add(_trend(r, style), 8, 7)
    board.end_line()
    mechanism = [r for r in _discrete(docking) if r.entry.console.get("houston") == "GNC"]
    board.add(_timeline(mechanism, style, "DOCKING MECHANISM · СТЫКОВОЧНЫЙ МЕХАНИЗМ"), 24,
              2 + math.ceil(1.3 * len(mechanism)))

    board.row("ATMOSPHERE · АТМОСФЕРА")
    board.fill((_stat(r, style) for r in atmosphere), 3, 4)
    board.end_line()
    pressures = pr.pick_refs(defs, JOINT_PRESSURES, "joint view")
    board.add(_multi_trend(pressures, style, "CM · DM · БО · СА (мм рт. ст.)"), 12, 8)
    for r in atmosphere:
        if r in pressures or not _has_numeric_limits(r):
            continue
        board.add(_trend(r, style), 6, 8)

    board.row("HATCHES AND VALVES · ЛЮКИ И КЛАПАНЫ")
    passage = [r for r in [*_discrete(docking), *valves] if r not in mechanism]
    board.fill((_stat(r, style) for r in passage), 3, 3)
    board.end_line()
    board.add(_timeline(passage, style, "HATCHES · ЛЮКИ"), 24,
              2 + math.ceil(1.3 * len(passage)))
    return _dashboard(
        "gs-joint", "ASTP JOINT — Docking and transfer · ЭПАС — стыковка и переход", style,
        board.done(), [_alarm_annotation(style, parameters=everything)],
        "Both cabins, the docking module, hatches, latches, range and range rate, in metric "
        "units (as ASTP's joint documents were) with English and Russian labels. Generated "
        "from telemetry_defs/ by groundstation.grafana.board; do not edit by hand.",
        ["joint", "docking"])


def build(defs: dict[str, VehicleDefinition]) -> dict[str, dict[str, Any]]:
    """Every console's dashboard JSON model, by file name (without .json)."""
    if not defs:
        raise DashboardError("no telemetry definitions")
    try:
        boards = {"flight": _flight(defs)}
        positions = sorted({r.entry.console["houston"] for d in defs.values()
                            for r in pr.parameter_refs(d) if r.entry.console.get("houston")},
                           key=lambda p: ("EECOM", "GNC", "INCO").index(p)
                           if p in ("EECOM", "GNC", "INCO") else 9)
        for position in positions:
            boards[position.lower()] = _position(defs, position)
        if "soyuz" in defs:
            boards["tsup"] = _tsup(defs)
        boards["joint"] = _joint(defs)
    except pr.PresentationError as exc:
        raise DashboardError(str(exc)) from exc
    return boards


def dumps(dashboard: dict[str, Any]) -> str:
    """The committed file's text: stable key order, UTF-8 (Russian stays readable)."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write(directory: str | os.PathLike[str] | None = None,
          defs: dict[str, VehicleDefinition] | None = None) -> list[Path]:
    """Write every dashboard as `<directory>/<name>.json` (default: dashboards/); return the
    paths written."""
    directory = Path(directory) if directory is not None else dashboards_dir()
    directory.mkdir(parents=True, exist_ok=True)
    boards = build(defs if defs is not None else load_all())
    out = []
    for name, board in boards.items():
        path = directory / f"{name}.json"
        text = dumps(board)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        out.append(path)
    return out


def stale(directory: str | os.PathLike[str] | None = None,
          defs: dict[str, VehicleDefinition] | None = None) -> list[str]:
    """Files in `directory` (default: dashboards/) that differ from what `build` makes (or
    are missing/extra)."""
    directory = Path(directory) if directory is not None else dashboards_dir()
    boards = build(defs if defs is not None else load_all())
    problems = []
    for name, board in boards.items():
        path = directory / f"{name}.json"
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != dumps(board):
            problems.append(f"{path}: differs from the definitions")
    for path in sorted(directory.glob("*.json")):
        if path.stem not in boards:
            problems.append(f"{path}: not made by the generator (a removed console?)")
    return problems

