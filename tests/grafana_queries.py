"""What the dashboard tests share: the committed boards, their panels and queries, Grafana's
variable interpolation, and the compose file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.paths import REPO

COMPOSE = REPO / "docker-compose.yml"


def committed_boards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((REPO / "dashboards").glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def escape_regex(value: str) -> str:
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
            esc = [escape_regex(v) for v in vals]
            return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
        return escape_regex(vals[0]) if in_regex else vals[0]

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


@dataclass(frozen=True)
class TmTarget:
    vehicle: str
    field: str
    fn: str
    scale: float
    offset: float
    query: str


SELECT = re.compile(r'^SELECT (\w+)\("(\w+)"\)(?: \* ([0-9.eE+-]+))?(?: ([+-]) ([0-9.eE+-]+))?'
                     r' AS "(?:[^"\\]|\\.)*" FROM "tm" WHERE "vehicle" = \'(\w+)\'')


def tm_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], TmTarget]]:
    for p in panels(board):
        for t in p.get("targets", []):
            if 'FROM "tm"' not in t["query"]:
                continue
            m = SELECT.match(t["query"])
            assert m, f"unexpected tm query shape: {t['query']}"
            fn, field, scale, sign, offset, vehicle = m.groups()
            off = float(offset) * (-1 if sign == "-" else 1) if offset else 0.0
            yield p, TmTarget(vehicle, field, fn, float(scale or 1.0), off, t["query"])


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data
