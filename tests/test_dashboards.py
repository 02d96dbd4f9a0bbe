"""The Grafana consoles, proven without Grafana.

1. The committed dashboards/*.json are what the generator makes from telemetry_defs/.
2. Every query in them (panels, annotations, template variables), with the variables filled
   in the way Grafana fills them, runs against a real InfluxDB holding both ships' frames,
   sent through a real Mosquitto and the real ingest, and returns rows. A renamed
   parameter makes its panels' queries come back empty, and a renamed key parameter stops
   the generator.
3. Every threshold in a panel is a limit of the definitions, converted to the console's
   display unit, and colours what the limit engine (groundstation.limits) flags.
4. docker-compose.yml is valid against the Compose specification's JSON schema, and every
   file it mounts or builds from exists.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from groundstation import dashboards
from groundstation.definitions import (
    DEFS_DIR,
    Derived,
    Parameter,
    VehicleDefinition,
    load_all,
    parse_definition,
)
from groundstation.influx_writer import InfluxV1
from groundstation.limits import check
from groundstation.servers import InfluxDBServer, MosquittoServer
from groundstation.units import conversion
from simulators.downlink import Downlink, nominal_values
from tests.harness import running_ingest, start_or_skip, wait_for

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path("/work/shared/schemas/compose-spec.json")
# Whose display units each console uses (the joint view is metric, as Moscow's).
CENTRE = {"flight": "houston", "eecom": "houston", "gnc": "houston", "inco": "houston",
          "tsup": "moscow", "joint": "moscow"}
COLOUR_SEVERITY = {dashboards.NOMINAL: 0, dashboards.YELLOW: 1, dashboards.RED: 2}


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all(DEFS_DIR)


@pytest.fixture(scope="module")
def boards(defs: dict[str, VehicleDefinition]) -> dict[str, dict[str, Any]]:
    return dashboards.build(defs)


def _committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((REPO / "dashboards").glob("*.json"))}


# --- 1. committed == generated ---------------------------------------------------------------


def test_committed_dashboards_are_what_the_generator_makes(
        defs: dict[str, VehicleDefinition]) -> None:
    problems = dashboards.stale(REPO / "dashboards", defs)
    assert not problems, ("dashboards/ is out of date with telemetry_defs/; run "
                          "`groundstation dashboards build`:\n  " + "\n  ".join(problems))


def test_a_changed_limit_makes_the_committed_files_stale(
        tmp_path: Path, defs: dict[str, VehicleDefinition]) -> None:
    out = tmp_path / "dashboards"
    dashboards.write(out, defs)
    assert dashboards.stale(out, defs) == []
    text = (DEFS_DIR / "apollo_csm.yaml").read_text(encoding="utf-8")
    changed = text.replace("      yellow: [4.7, 5.4]\n      red: [4.3, 5.8]",
                           "      yellow: [4.8, 5.4]\n      red: [4.3, 5.8]", 1)
    assert changed != text
    edited = {**defs, "apollo_csm": parse_definition(changed, DEFS_DIR / "apollo_csm.yaml")}
    problems = dashboards.stale(out, edited)
    assert problems and all("differs" in p for p in problems)
    (out / "stray.json").write_text("{}", encoding="utf-8")
    assert any("stray.json" in p for p in dashboards.stale(out, defs))


def test_every_console_parameter_has_a_panel(boards: dict[str, dict[str, Any]],
                                             defs: dict[str, VehicleDefinition]) -> None:
    for name, board in boards.items():
        fields = {(t.vehicle, t.field) for _, t in _tm_targets(board)}
        for d in defs.values():
            for e in [*d.parameters, *d.derived]:
                wanted = (name in ("eecom", "gnc", "inco")
                          and e.console.get("houston", "").lower() == name) or \
                         (name == "tsup" and d.vehicle == "soyuz")
                if wanted:
                    assert (d.vehicle, e.id) in fields, f"{name}: no panel for {e.id}"


def test_dashboards_are_grafana_models(boards: dict[str, dict[str, Any]]) -> None:
    uids = set()
    for name, board in boards.items():
        assert board["schemaVersion"] == dashboards.SCHEMA_VERSION
        assert board["uid"] not in uids and len(board["uid"]) <= 40
        uids.add(board["uid"])
        ids = [p["id"] for p in _panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in _panels(board):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            for t in p.get("targets", []):
                assert t["rawQuery"] is True and t["datasource"]["uid"] == \
                    dashboards.DATASOURCE_UID
        assert {v["name"] for v in board["templating"]["list"]} == {"source", "vehicle"}
    assert boards["tsup"]["timezone"] == "Europe/Moscow"
    assert "ЦУП" in boards["tsup"]["title"]


# --- 2. every query returns rows from data that came through the real pipeline ----------------


@dataclass(frozen=True)
class Query:
    where: str  # dashboard / panel, for messages
    text: str
    time_from: str | None  # the panel's relative time override


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def _queries(name: str, board: dict[str, Any]) -> list[Query]:
    out = []
    for p in _panels(board):
        for t in p.get("targets", []):
            out.append(Query(f"{name}: {p['title']} [{t['refId']}]", t["query"],
                             p.get("timeFrom")))
    for a in board["annotations"]["list"]:
        if "target" in a:
            out.append(Query(f"{name}: annotation {a['name']}", a["target"]["query"], None))
    for v in board["templating"]["list"]:
        out.append(Query(f"{name}: variable {v['name']}", v["query"]["query"], None))
    return out


def _escape_regex(value: str) -> str:
    """@grafana/data's escapeRegex."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def interpolate(query: str, variables: dict[str, list[str]], multi: set[str],
                time_from_ms: int, time_to_ms: int, interval_ms: int = 1000) -> str:
    """What Grafana sends to InfluxDB for a raw InfluxQL query.

    Front end (InfluxDatasource.interpolateQueryExpr): a multi-value variable becomes
    `(a|b)` of regex-escaped values; a single-value variable is regex-escaped where it
    sits in a regex literal and left as it is elsewhere. `$__interval` and `$__interval_ms`
    are left for the back end. Back end (pkg/tsdb/influxdb/models/query.go): `$timeFilter`
    becomes `time >= <from>ms and time <= <to>ms`, then `$interval`, `$__interval_ms`,
    `$__interval`."""
    def value(name: str) -> str | None:
        if name not in variables:
            return None
        vals = variables[name]
        in_regex = re.search(r"[=!]~\s*/[^/]*\$\{?" + name, query) is not None
        if name in multi:
            esc = [_escape_regex(v) for v in vals]
            return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
        return _escape_regex(vals[0]) if in_regex else vals[0]

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        v = value(name)
        return m.group(0) if v is None else v

    q = re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", sub, query)
    q = q.replace("$timeFilter", f"time >= {time_from_ms}ms and time <= {time_to_ms}ms")
    secs = interval_ms / 1000
    text = f"{int(secs)}s" if secs >= 1 and secs == int(secs) else f"{interval_ms}ms"
    q = q.replace("$interval", text).replace("$__interval_ms", str(interval_ms))
    q = q.replace("$__interval", text)
    leftover = re.findall(r"\$\w+|\[\[\w+\]\]", q)
    assert not leftover, f"unfilled variables {leftover} in {q}"
    return q


_DURATION = re.compile(r"^(\d+)([smhd])$")


def _ms(duration: str) -> int:
    m = _DURATION.match(duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[
        m.group(2)]


def _rows(influx: InfluxV1, q: str) -> list[dict[str, Any]]:
    res = influx.query(q, epoch="ms")["results"][0]
    assert "error" not in res, f"InfluxDB refused {q!r}: {res['error']}"
    out = []
    for s in res.get("series", []):
        tags = s.get("tags", {})
        out += [{**dict(zip(s["columns"], v, strict=True)), "_tags": tags} for v in s["values"]]
    return out


def _has_data(rows: list[dict[str, Any]]) -> bool:
    """A row with a value (fill(null) gives rows of nothing for empty intervals)."""
    return any(v is not None for r in rows for k, v in r.items()
               if k not in ("time", "key", "_tags"))


@dataclass
class Filled:
    influx: InfluxV1
    t0_ms: int
    database: str


# Out-of-limit values, so that every console's alarm list, alarm annotations and latched
# alarms have something: EECOM (Apollo cabin pressure low, Soyuz pCO2 high), GNC (Apollo
# roll rate high), INCO (Apollo S-band signal low).
ALARMS = {"apollo_csm": {"cabin_press": 4.0, "roll_rate": 4.8, "sband_signal": -131.0},
          "soyuz": {"pco2": 9.0}}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory,
           defs: dict[str, VehicleDefinition]) -> Iterator[Filled]:
    """Both ships downlink for 2 s through a real Mosquitto and the real ingest into a real
    InfluxDB; the servers stay up for the queries."""
    tmp = tmp_path_factory.mktemp("dashboards")
    broker, db = MosquittoServer(tmp / "mosquitto"), InfluxDBServer(tmp / "influxdb")
    start_or_skip(broker)
    try:
        start_or_skip(db)
    except BaseException:
        broker.stop()
        raise
    t0_ms = int(time.time() * 1000) - 1000
    try:
        asyncio.run(_fly(broker, db, tmp, defs))
        yield Filled(InfluxV1(db.url, "dash"), t0_ms, "dash")
    finally:
        broker.stop()
        db.stop()


async def _fly(broker: MosquittoServer, db: InfluxDBServer, tmp: Path,
               defs: dict[str, VehicleDefinition]) -> None:
    async with running_ingest(broker, db, tmp, defs, database="dash") as ingest:
        links = []
        for d in defs.values():
            values = {**nominal_values(d), **ALARMS.get(d.vehicle, {})}
            fpm = max(1, int(d.frame.rate_hz) // 2)
            links.append(Downlink(d, broker.host, broker.port, frames_per_message=fpm,
                                  values=lambda _s, _n, v=values: v))
        await asyncio.gather(*(link.run(2.0) for link in links))
        sent = sum(link.sent_messages for link in links)
        await wait_for(lambda: ingest.acked >= sent, what="every message stored")
        # Two more self-telemetry rounds (every 0.5 s here): link quality and ingest health
        # after the last frame.
        await asyncio.sleep(1.2)


def _variables(board: dict[str, Any], defs: dict[str, VehicleDefinition]
               ) -> tuple[dict[str, list[str]], set[str]]:
    values: dict[str, list[str]] = {}
    multi = set()
    for v in board["templating"]["list"]:
        current = v["current"]["value"]
        current = current if isinstance(current, list) else [current]
        if current == ["$__all"]:
            current = sorted(defs)  # what SHOW TAG VALUES answers; checked below
        values[v["name"]] = current
        if v.get("multi") or v.get("includeAll"):
            multi.add(v["name"])
    return values, multi


def _run_all(influx: InfluxV1, boards: dict[str, dict[str, Any]], t0_ms: int,
             defs: dict[str, VehicleDefinition]) -> dict[str, list[dict[str, Any]]]:
    results = {}
    for name, board in boards.items():
        variables, multi = _variables(board, defs)
        for q in _queries(name, board):
            now = int(time.time() * 1000)
            start = now - _ms(q.time_from) if q.time_from else t0_ms - 60_000
            sql = interpolate(q.text, variables, multi, start, now)
            results[q.where + " :: " + sql] = _rows(influx, sql)
    return results


def test_every_query_returns_rows(filled: Filled, boards: dict[str, dict[str, Any]],
                                  defs: dict[str, VehicleDefinition]) -> None:
    committed = _committed()
    assert committed.keys() == boards.keys()
    t = time.monotonic()
    results = _run_all(filled.influx, committed, filled.t0_ms, defs)
    elapsed = time.monotonic() - t
    empty = [k for k, rows in results.items() if not _has_data(rows)]
    assert not empty, f"{len(empty)} of {len(results)} queries returned no data:\n  " + \
        "\n  ".join(empty[:40])
    assert len(results) > 500 and elapsed < 20
    # The variables' own queries offer what the defaults assume.
    sources = _rows(filled.influx, 'SHOW TAG VALUES FROM "tm" WITH KEY = "source"')
    vehicles = _rows(filled.influx, 'SHOW TAG VALUES FROM "tm" WITH KEY = "vehicle"')
    assert "live" in {r["value"] for r in sources}
    assert {r["value"] for r in vehicles} == set(defs)
    # Each alarm list holds an active alarm (the table hides state == normal).
    for key, rows in results.items():
        if 'FROM "alarms"' in key and "GROUP BY" in key:
            assert any(r["state"] != "normal" for r in rows), key


def test_values_shown_are_the_values_sent_in_display_units(
        filled: Filled, boards: dict[str, dict[str, Any]],
        defs: dict[str, VehicleDefinition]) -> None:
    """Moscow shows Soyuz's cabin pressure in mm Hg, Houston in psia: the same sample."""
    variables, multi = _variables(boards["tsup"], defs)
    now = int(time.time() * 1000)
    seen = {}
    for name in ("tsup", "eecom"):
        for p, t in _tm_targets(boards[name]):
            if (t.vehicle, t.field) == ("soyuz", "sa_press") and p["type"] == "stat":
                sql = interpolate(t.query, variables, multi, filled.t0_ms - 60_000, now)
                seen[name] = _rows(filled.influx, sql)[0]
    p = defs["soyuz"].parameter("sa_press")
    sent = nominal_values(defs["soyuz"])["sa_press"]
    step = (p.eng_range()[1] - p.eng_range()[0]) / p.raw_max
    mmhg = next(v for k, v in seen["tsup"].items() if k != "time")
    psia = next(v for k, v in seen["eecom"].items() if k != "time")
    assert abs(mmhg - sent) <= step
    assert psia == pytest.approx(mmhg * conversion("mmHg", "psia")[0], rel=1e-9)


def test_a_renamed_parameter_breaks_the_query(
        filled: Filled, defs: dict[str, VehicleDefinition]) -> None:
    """Dashboards generated from a definition whose parameter was renamed ask InfluxDB for a
    field the ingest never wrote: their queries come back empty, and the check fails."""
    path = DEFS_DIR / "apollo_csm.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count("- id: fc2_skin_temp\n") == 1
    renamed = {**defs, "apollo_csm": parse_definition(
        text.replace("- id: fc2_skin_temp\n", "- id: fc2_skin_temperature\n"), path)}
    new = dashboards.build(renamed)
    old = dashboards.build(defs)
    hits_new = {k: v for k, v in _run_all(filled.influx, new, filled.t0_ms, defs).items()
                if '"fc2_skin_temperature"' in k}
    hits_old = {k: v for k, v in _run_all(filled.influx, old, filled.t0_ms, defs).items()
                if '"fc2_skin_temp"' in k}
    assert len(hits_new) == len(hits_old) >= 2  # its stat and its trend in EECOM
    assert all(_has_data(rows) for rows in hits_old.values())
    assert not any(_has_data(rows) for rows in hits_new.values())


def test_a_renamed_key_parameter_stops_the_generator(
        defs: dict[str, VehicleDefinition]) -> None:
    path = DEFS_DIR / "apollo_csm.yaml"
    text = path.read_text(encoding="utf-8").replace("- id: co2_pp\n", "- id: co2_partial\n")
    renamed = {**defs, "apollo_csm": parse_definition(text, path)}
    with pytest.raises(dashboards.DashboardError, match="co2_pp"):
        dashboards.build(renamed)


def test_interpolation_escapes_a_replay_session_like_grafana() -> None:
    q = 'SELECT last("x") FROM "tm" WHERE "source" =~ /^$source$/ AND "vehicle" =~ ' \
        "/^$vehicle$/ AND $timeFilter GROUP BY time($__interval)"
    got = interpolate(q, {"source": ["replay/pass 7.1"], "vehicle": ["apollo_csm", "soyuz"]},
                      {"vehicle"}, 1000, 2000, 5000)
    assert got == ('SELECT last("x") FROM "tm" WHERE "source" =~ /^replay\\/pass 7\\.1$/ AND '
                   '"vehicle" =~ /^(apollo_csm|soyuz)$/ AND time >= 1000ms and time <= '
                   "2000ms GROUP BY time(5s)")


def test_a_replay_session_is_selected_apart_from_live(filled: Filled) -> None:
    """A replay session's name holds a '/', which Grafana regex-escapes: InfluxDB must still
    match it, and live data must not."""
    line = (f"tm,source=replay/s1,stream=hbr,vehicle=apollo_csm cabin_press=5.0 "
            f"{(filled.t0_ms + 10) * 1_000_000}")
    filled.influx.write_lines([line])
    q = 'SELECT last("cabin_press") FROM "tm" WHERE "source" =~ /^$source$/ AND $timeFilter'
    now = int(time.time() * 1000)
    replay = _rows(filled.influx, interpolate(q, {"source": ["replay/s1"]}, set(),
                                              filled.t0_ms - 60_000, now))
    assert [r["last"] for r in replay] == [5.0]
    none = _rows(filled.influx, interpolate(q, {"source": ["replay/s"]}, set(),
                                            filled.t0_ms - 60_000, now))
    assert none == []


# --- 3. thresholds are the definitions' limits -----------------------------------------------


@dataclass(frozen=True)
class TmTarget:
    vehicle: str
    field: str
    fn: str
    scale: float
    offset: float
    query: str


_SELECT = re.compile(r'^SELECT (\w+)\("(\w+)"\)(?: \* ([0-9.eE+-]+))?(?: ([+-]) ([0-9.eE+-]+))?'
                     r' AS "(?:[^"\\]|\\.)*" FROM "tm" WHERE "vehicle" = \'(\w+)\'')


def _tm_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], TmTarget]]:
    for p in _panels(board):
        for t in p.get("targets", []):
            if 'FROM "tm"' not in t["query"]:
                continue
            m = _SELECT.match(t["query"])
            assert m, f"unexpected tm query shape: {t['query']}"
            fn, field, scale, sign, offset, vehicle = m.groups()
            off = float(offset) * (-1 if sign == "-" else 1) if offset else 0.0
            yield p, TmTarget(vehicle, field, fn, float(scale or 1.0), off, t["query"])


def _entry(defs: dict[str, VehicleDefinition], vehicle: str, field: str
           ) -> Parameter | Derived:
    d = defs[vehicle]
    return next(e for e in [*d.parameters, *d.derived] if e.id == field)


def _colour_at(steps: list[dict[str, Any]], v: float) -> str:
    colour = steps[0]["color"]
    for s in steps[1:]:
        if v >= s["value"]:
            colour = s["color"]
    return colour


def test_thresholds_are_the_definitions_limits(boards: dict[str, dict[str, Any]],
                                               defs: dict[str, VehicleDefinition]) -> None:
    checked = 0
    for name, board in _committed().items():
        assert board == boards[name]
        for panel, t in _tm_targets(board):
            e = _entry(defs, t.vehicle, t.field)
            discrete = isinstance(e, Parameter) and e.type == "discrete"
            counter = isinstance(e, Parameter) and e.type == "counter"
            shown = e.unit if discrete or counter else e.display.get(CENTRE[name], e.unit)
            scale, offset = (1.0, 0.0) if discrete or counter else conversion(e.unit, shown)
            assert t.scale == pytest.approx(scale, rel=1e-12), (name, t.field)
            assert t.offset == pytest.approx(offset, abs=1e-9), (name, t.field)
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if discrete:
                _check_states(panel, e, t.query)
                continue
            single = len(panel["targets"]) == 1
            lim = e.limits
            numeric = lim is not None and (lim.yellow is not None or lim.red is not None)
            if not numeric or not single:
                assert len(steps) == 1, (name, panel["title"])
                continue
            assert lim is not None
            # The step values are the limits, converted to the display unit ...
            want = {scale * v + offset for pair in (lim.yellow, lim.red) if pair
                    for v in pair if v is not None}
            got = {s["value"] for s in steps[1:]}
            assert sorted(got) == pytest.approx(sorted(want), rel=1e-12), (name, t.field)
            # ... and each band shows the severity the limit engine gives a value there.
            edges = sorted(want)
            probes = [edges[0] - 1.0, *(x + d for x in edges for d in (-1e-6, 1e-6)),
                      *((a + b) / 2 for a, b in itertools.pairwise(edges)),
                      edges[-1] + 1.0]
            canonical = (np.array(probes) - offset) / scale
            engine = np.abs(check(canonical, lim))
            grafana = [COLOUR_SEVERITY[_colour_at(steps, v)] for v in probes]
            assert list(engine) == grafana, (name, panel["title"], steps)
            checked += 1
    assert checked > 150


def _check_states(panel: dict[str, Any], e: Parameter, query: str) -> None:
    """A discrete's value mappings name every state and colour the red and yellow ones."""
    lim = e.limits
    red = set(lim.red_states or []) if lim else set()
    yellow = set(lim.yellow_states or []) if lim else set()
    mappings = panel["fieldConfig"]["defaults"]["mappings"]
    if panel["type"] == "state-timeline":  # one override per lane, by its alias
        alias = json.loads(re.search(r' AS ("(?:[^"\\]|\\.)*")', query).group(1))
        mappings = next(prop["value"] for o in panel["fieldConfig"]["overrides"]
                        if o["matcher"]["options"] == alias
                        for prop in o["properties"] if prop["id"] == "mappings")
    options = {k: v for m in mappings if m["type"] == "value" for k, v in m["options"].items()}
    states = e.calibration.states if e.calibration and e.calibration.states else {}
    assert {int(k): v["text"] for k, v in options.items()} == states, e.id
    for v in options.values():
        if v["text"] in red:
            assert v["color"] == dashboards.RED, e.id
        elif v["text"] in yellow:
            assert v["color"] == dashboards.YELLOW, e.id
        else:
            assert v["color"] not in (dashboards.RED, dashboards.YELLOW), e.id


def test_moscow_shows_mm_hg_and_celsius_in_russian(boards: dict[str, dict[str, Any]]) -> None:
    tsup = boards["tsup"]
    by_field = {t.field: p for p, t in _tm_targets(tsup) if p["type"] == "stat"}
    assert by_field["sa_press"]["title"] == "Давление в СА"
    assert by_field["sa_press"]["fieldConfig"]["defaults"]["unit"] == "suffix: мм рт. ст."
    assert by_field["sa_temp"]["fieldConfig"]["defaults"]["unit"] == "celsius"
    houston = {t.field: p for p, t in _tm_targets(boards["eecom"]) if p["type"] == "stat"}
    assert houston["sa_press"]["fieldConfig"]["defaults"]["unit"] == "suffix: psia"
    assert houston["sa_temp"]["fieldConfig"]["defaults"]["unit"] == "fahrenheit"
    titles = {p["title"] for p in _panels(tsup)}
    assert {"МСК", "GMT"} <= titles


# --- 4. the compose file ------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    try:
        import jsonschema
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("jsonschema is not installed (CI is set)")
        pytest.skip("jsonschema is not installed: pip install jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"no Compose specification schema at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_file_the_compose_file_mounts_or_builds_from_exists() -> None:
    compose = _compose()
    checked = 0
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build is not None:
            ctx = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = ctx / (build.get("dockerfile", "Dockerfile")
                                if isinstance(build, dict) else "Dockerfile")
            assert ctx.is_dir() and dockerfile.is_file(), name
            checked += 1
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            kind = vol.get("type") if isinstance(vol, dict) else (
                "bind" if source.startswith((".", "/")) else "volume")
            if kind == "bind":
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
                checked += 1
            else:
                assert source in compose.get("volumes", {}), f"{name}: volume {source}"
        assert "image" in svc, f"{name}: pin an image"
        image = svc["image"]
        if build is None:
            assert re.search(r":\d+\.\d+\.\d+$", image), f"{name}: {image} is not pinned"
    assert checked >= 9
    # InfluxDB runs the init scripts only if they are executable.
    for script in (REPO / "dashboards/provisioning/influxdb").glob("*.sh"):
        assert os.access(script, os.X_OK), f"{script} must be executable"


def test_compose_secrets_come_from_env_and_the_example_lists_them() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert used <= listed, f"not in .env.example: {sorted(used - listed)}"
    required = set(re.findall(r"(?<!\$)\$\{(\w+):\?", text))
    assert {"INFLUXDB_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
            "MQTT_PASSWORD_INGEST"} <= required
    if shutil.which("git") and (REPO / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", ".env"], cwd=REPO, capture_output=True,
                                 text=True, check=False).stdout.strip()
        assert tracked == "", ".env holds secrets and must never be committed"


def test_dockerfile_copies_only_what_exists() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), src
    ignored = [line.strip() for line in
               (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".env" in ignored and ".git" in ignored
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert src.rstrip("/") not in ignored, f".dockerignore drops {src}"


def test_grafana_provisioning_matches_the_dashboards_and_compose() -> None:
    prov = REPO / "dashboards/provisioning"
    ds = yaml.safe_load((prov / "datasources/influxdb.yaml").read_text(encoding="utf-8"))
    (source,) = ds["datasources"]
    assert source["uid"] == dashboards.DATASOURCE_UID and source["type"] == "influxdb"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"].startswith("Token $")
    provider = yaml.safe_load((prov / "dashboards/groundstation.yaml").read_text(
        encoding="utf-8"))["providers"][0]
    mounts = [v for v in _compose()["services"]["grafana"]["volumes"]
              if isinstance(v, str) and v.startswith("./dashboards:")]
    assert mounts and mounts[0].split(":")[1] == provider["options"]["path"]
    grafana_env = _compose()["services"]["grafana"]["environment"]
    assert grafana_env["GF_DASHBOARDS_MIN_REFRESH_INTERVAL"] == "1s"
    home = grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"])
    assert (REPO / "dashboards" / Path(home).name).is_file()


def _shell(text: str) -> str:
    """A compose command as the container's shell gets it: `$$` is a literal `$`."""
    return text.replace("$$", "$")


def test_compose_broker_commands_work_against_the_real_broker(tmp_path: Path) -> None:
    """What runs in the containers, run here: broker-auth's password file, with the
    repository's mosquitto.conf settings and ACL; the broker's and the ingest's health
    checks against it."""
    from groundstation.broker_auth import broker_config

    compose = _compose()
    passwords = {k: f"pw-{k.lower()}" for k in compose["services"]["broker-auth"]["environment"]}
    script = _shell(compose["services"]["broker-auth"]["command"][2])
    passwd = tmp_path / "passwd"
    script = script.replace("/mosquitto/config/passwd", str(passwd))
    script = "\n".join(line for line in script.splitlines() if not line.startswith("chown"))
    env = {**os.environ, **passwords}
    subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True, timeout=30)
    assert sorted(line.split(":")[0] for line in passwd.read_text().splitlines()) == \
        ["apollo_csm", "flight", "ingest", "instructor", "replay", "soyuz"]

    broker = MosquittoServer(tmp_path / "mosquitto", allow_anonymous=False,
                             extra_config=broker_config(passwd))
    start_or_skip(broker)
    try:
        import paho.mqtt.publish as publish

        publish.single("ingest/stats", json.dumps({"time_ns": time.time_ns()}), retain=True,
                       hostname=broker.host, port=broker.port,
                       auth={"username": "ingest", "password": passwords[
                           "MQTT_PASSWORD_INGEST"]})
        check = compose["services"]["mosquitto"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        # mosquitto_sub is in the eclipse-mosquitto image; here it comes with Debian's
        # mosquitto-clients, which the test setup does not install: checked when present.
        if shutil.which("mosquitto_sub"):
            cmd = _shell(check[1]).replace("-h 127.0.0.1 -p 1883",
                                           f"-h {broker.host} -p {broker.port}")
            ok = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, timeout=15)
            assert ok.returncode == 0, ok.stderr
            bad = subprocess.run(["sh", "-c", cmd],
                                 env={**env, "MQTT_PASSWORD_FLIGHT": "wrong"},
                                 capture_output=True, timeout=15)
            assert bad.returncode != 0

        ingest = compose["services"]["ingest"]
        assert ingest["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
        ienv = {**os.environ, "GS_MQTT_HOST": broker.host, "GS_MQTT_PORT": str(broker.port),
                "GS_MQTT_USERNAME": ingest["environment"]["GS_MQTT_USERNAME"],
                "GS_MQTT_PASSWORD": passwords["MQTT_PASSWORD_INGEST"]}
        run = subprocess.run([sys.executable, "-c", ingest["healthcheck"]["test"][3]],
                             env=ienv, capture_output=True, timeout=15)
        assert run.returncode == 0, run.stderr
    finally:
        broker.stop()


def test_push_uses_grafanas_dashboard_api(tmp_path: Path,
                                          boards: dict[str, dict[str, Any]]) -> None:
    """`groundstation dashboards push` against a stand-in for Grafana's HTTP API (no Grafana
    here): the folder is created when missing, every dashboard is posted with overwrite,
    with the token as a Bearer header and the data source uid rewritten when asked."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str, str | None, Any]] = []

    class Grafana(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            seen.append(("GET", self.path, self.headers.get("Authorization"), None))
            self._answer(404, {"message": "folder not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("POST", self.path, self.headers.get("Authorization"), body))
            if self.path == "/api/dashboards/db":
                uid = body["dashboard"]["uid"]
                self._answer(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x"})
            else:
                self._answer(200, {"uid": body["uid"], "title": body["title"]})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Grafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        urls = dashboards.push(boards, url, token="glsa_test", datasource_uid="other-influx")
    finally:
        server.shutdown()
        server.server_close()
    assert urls == [f"{url}/d/{b['uid']}/x" for b in boards.values()]
    assert seen[0][:2] == ("GET", "/api/folders/groundstation")
    assert seen[1][:2] == ("POST", "/api/folders")
    posts = [s for s in seen if s[1] == "/api/dashboards/db"]
    assert len(posts) == len(boards)
    assert all(s[2] == "Bearer glsa_test" for s in seen)
    for _, _, _, body in posts:
        assert body["overwrite"] is True and body["folderUid"] == "groundstation"
        text = json.dumps(body)
        assert dashboards.DATASOURCE_UID not in text and '"uid": "other-influx"' in text


def test_cli_build_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "boards"
    assert dashboards.main(["dashboards", "build", "--out", str(out)]) == 0
    assert dashboards.main(["dashboards", "build", "--check", "--out", str(out)]) == 0
    (out / "flight.json").write_text("{}\n", encoding="utf-8")
    assert dashboards.main(["dashboards", "build", "--check", "--out", str(out)]) == 1
    assert "flight.json" in capsys.readouterr().err
