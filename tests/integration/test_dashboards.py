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

import pytest

from groundstation.core.definitions import (
    VehicleDefinition,
    load_all,
    parse_definition,
)
from groundstation.core.units import conversion
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.grafana import board as dashboards
from groundstation.paths import defs_dir
from groundstation.storage.influx.backends import InfluxV1
from simulators.downlink import Downlink, nominal_values
from tests.grafana_queries import (
    committed_boards,
    compose_file,
    interpolate,
    panels,
    tm_targets,
)
from tests.harness import running_ingest, start_or_skip, wait_for
from tests.paths import REPO


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all(defs_dir())


@pytest.fixture(scope="module")
def boards(defs: dict[str, VehicleDefinition]) -> dict[str, dict[str, Any]]:
    return dashboards.build(defs)


# --- 2. every query returns rows from data that came through the real pipeline ----------------


@dataclass(frozen=True)
class Query:
    where: str  # dashboard / panel, for messages
    text: str
    time_from: str | None  # the panel's relative time override


def _queries(name: str, board: dict[str, Any]) -> list[Query]:
    out = []
    for p in panels(board):
        for t in p.get("targets", []):
            out.append(Query(f"{name}: {p['title']} [{t['refId']}]", t["query"],
                             p.get("timeFrom")))
    for a in board["annotations"]["list"]:
        if "target" in a:
            out.append(Query(f"{name}: annotation {a['name']}", a["target"]["query"], None))
    for v in board["templating"]["list"]:
        out.append(Query(f"{name}: variable {v['name']}", v["query"]["query"], None))
    return out


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
    committed = committed_boards()
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


# --- 4. the compose file ------------------------------------------------------------------


def _shell(text: str, secrets: Path) -> str:
    """A compose command as the container's shell gets it (`$$` is a literal `$`), with the
    secrets where this test keeps them and this interpreter for the image's `python` (the
    virtualenv need not be on PATH)."""
    text = text.replace("$$", "$").replace("/run/secrets/", f"{secrets}/")
    return re.sub(r"(^|[|;&]\s*|\s)python(?= )", rf"\g<1>{sys.executable}", text)


def _write_secrets(directory: Path, compose: dict[str, Any],
                   **override: str) -> dict[str, str]:
    """The secret files compose would mount, from made-up .env values."""
    directory.mkdir(exist_ok=True)
    values = {}
    for name in compose["secrets"]:
        values[name] = override.get(name, f"pw-{name.replace('_', '-')}-0123")
        (directory / name).write_text(values[name])
    return values


def test_compose_secret_check_refuses_change_me_values(tmp_path: Path) -> None:
    compose = compose_file()
    check = compose["services"]["secrets-check"]["command"]
    assert check[:3] == ["python", "-m", "groundstation.deploy.secrets_check"]
    secrets = tmp_path / "secrets"
    _write_secrets(secrets, compose)
    cmd = [sys.executable, *check[1:-1], check[-1].replace("/run/secrets", str(secrets))]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    example = dict(re.findall(r"^(\w+)=(.*)$", (REPO / ".env.example").read_text(), re.M))
    (secrets / "mqtt_password_ingest").write_text(example["MQTT_PASSWORD_INGEST"])
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "MQTT_PASSWORD_INGEST in .env is still the example's 'change-me' value" in bad.stderr


def test_compose_broker_commands_work_against_the_real_broker(tmp_path: Path) -> None:
    """What runs in the containers, run here: broker-auth's password file from the secret
    files, with the repository's mosquitto.conf settings and ACL; the broker's and the
    ingest's health checks against it, each reading its password from its secret file."""
    from groundstation.deploy.broker_auth import broker_config

    compose = compose_file()
    secrets = tmp_path / "secrets"
    passwords = _write_secrets(secrets, compose)
    script = _shell(compose["services"]["broker-auth"]["command"][2], secrets)
    passwd = tmp_path / "passwd"
    script = script.replace("/mosquitto/config/passwd", str(passwd))
    script = "\n".join(line for line in script.splitlines() if not line.startswith("chown"))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    assert done.returncode == 0, done.stderr
    assert sorted(line.split(":")[0] for line in passwd.read_text().splitlines()) == \
        ["apollo_csm", "flight", "ingest", "instructor", "replay", "soyuz"]
    # No password reached a command line: broker_auth reads them on stdin.
    assert not any(pw in script for pw in passwords.values())

    broker = MosquittoServer(tmp_path / "mosquitto", allow_anonymous=False,
                             extra_config=broker_config(passwd))
    start_or_skip(broker)
    try:
        import paho.mqtt.publish as publish

        publish.single("ingest/stats", json.dumps({"time_ns": time.time_ns()}), retain=True,
                       hostname=broker.host, port=broker.port,
                       auth={"username": "ingest", "password": passwords[
                           "mqtt_password_ingest"]})
        check = compose["services"]["mosquitto"]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        # mosquitto_sub is in the eclipse-mosquitto image; here it comes with Debian's
        # mosquitto-clients, which scripts/setup.sh installs.
        if not shutil.which("mosquitto_sub"):
            if os.environ.get("CI"):
                pytest.fail("mosquitto_sub not installed (apt-get install mosquitto-clients); "
                            "CI is set")
            pytest.skip("mosquitto_sub not installed: apt-get install mosquitto-clients")
        cmd = _shell(check[1], secrets).replace("-h 127.0.0.1 -p 1883",
                                                f"-h {broker.host} -p {broker.port}")
        ok = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=15)
        assert ok.returncode == 0, ok.stderr
        (secrets / "mqtt_password_flight").write_text("wrong")
        bad = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=15)
        assert bad.returncode != 0
        assert b"not authori" in bad.stderr.lower()

        ingest = compose["services"]["ingest"]
        assert ingest["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
        ienv = {**os.environ, "GS_MQTT_HOST": broker.host, "GS_MQTT_PORT": str(broker.port),
                "GS_MQTT_USERNAME": ingest["environment"]["GS_MQTT_USERNAME"],
                "GS_MQTT_PASSWORD_FILE": str(secrets / "mqtt_password_ingest")}
        assert ingest["environment"]["GS_MQTT_PASSWORD_FILE"] == \
            "/run/secrets/mqtt_password_ingest"
        run = subprocess.run([sys.executable, "-c", ingest["healthcheck"]["test"][3]],
                             env=ienv, capture_output=True, timeout=15)
        assert run.returncode == 0, run.stderr
    finally:
        broker.stop()


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


def test_values_shown_are_the_values_sent_in_display_units(
        filled: Filled, boards: dict[str, dict[str, Any]],
        defs: dict[str, VehicleDefinition]) -> None:
    """Moscow shows Soyuz's cabin pressure in mm Hg, Houston in psia: the same sample."""
    variables, multi = _variables(boards["tsup"], defs)
    now = int(time.time() * 1000)
    seen = {}
    for name in ("tsup", "eecom"):
        for p, t in tm_targets(boards[name]):
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
    path = defs_dir() / "apollo_csm.yaml"
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
