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

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from groundstation.cli import main
from groundstation.core.definitions import (
    Derived,
    Parameter,
    VehicleDefinition,
    load_all,
    parse_definition,
)
from groundstation.core.limits import check
from groundstation.core.units import conversion
from groundstation.grafana import board as dashboards
from groundstation.grafana.push import push
from groundstation.paths import defs_dir
from tests.grafana_queries import (
    COMPOSE,
    committed_boards,
    compose_file,
    interpolate,
    panels,
    tm_targets,
)
from tests.paths import DATA, REPO

# The Compose Specification's JSON schema, vendored (tests/data/compose-spec.README.md).
SCHEMA = DATA / "compose-spec.json"
# Whose display units each console uses (the joint view is metric, as Moscow's).
CENTRE = {"flight": "houston", "eecom": "houston", "gnc": "houston", "inco": "houston",
          "tsup": "moscow", "joint": "moscow"}
COLOUR_SEVERITY = {dashboards.NOMINAL: 0, dashboards.YELLOW: 1, dashboards.RED: 2}


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all(defs_dir())


@pytest.fixture(scope="module")
def boards(defs: dict[str, VehicleDefinition]) -> dict[str, dict[str, Any]]:
    return dashboards.build(defs)


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
    text = (defs_dir() / "apollo_csm.yaml").read_text(encoding="utf-8")
    changed = text.replace("      yellow: [4.7, 5.4]\n      red: [4.3, 5.8]",
                           "      yellow: [4.8, 5.4]\n      red: [4.3, 5.8]", 1)
    assert changed != text
    edited = {**defs, "apollo_csm": parse_definition(changed, defs_dir() / "apollo_csm.yaml")}
    problems = dashboards.stale(out, edited)
    assert problems and all("differs" in p for p in problems)
    (out / "stray.json").write_text("{}", encoding="utf-8")
    assert any("stray.json" in p for p in dashboards.stale(out, defs))


def test_every_console_parameter_has_a_panel(boards: dict[str, dict[str, Any]],
                                             defs: dict[str, VehicleDefinition]) -> None:
    for name, board in boards.items():
        fields = {(t.vehicle, t.field) for _, t in tm_targets(board)}
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
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in panels(board):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            for t in p.get("targets", []):
                assert t["rawQuery"] is True and t["datasource"]["uid"] == \
                    dashboards.DATASOURCE_UID
        assert {v["name"] for v in board["templating"]["list"]} == {"source", "vehicle"}
    assert boards["tsup"]["timezone"] == "Europe/Moscow"
    assert "ЦУП" in boards["tsup"]["title"]


# --- 2. every query returns rows from data that came through the real pipeline ----------------


def test_a_renamed_key_parameter_stops_the_generator(
        defs: dict[str, VehicleDefinition]) -> None:
    path = defs_dir() / "apollo_csm.yaml"
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


# --- 3. thresholds are the definitions' limits -----------------------------------------------


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
    for name, board in committed_boards().items():
        assert board == boards[name]
        for panel, t in tm_targets(board):
            e = _entry(defs, t.vehicle, t.field)
            discrete = isinstance(e, Parameter) and e.type == "discrete"
            counter = isinstance(e, Parameter) and e.type == "counter"
            shown = e.unit if discrete or counter else e.display.get(CENTRE[name], e.unit)
            scale, offset = (1.0, 0.0) if discrete or counter else conversion(e.unit, shown)
            assert t.scale == pytest.approx(scale, rel=1e-12), (name, t.field)
            assert t.offset == pytest.approx(offset, abs=1e-9), (name, t.field)
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if discrete:
                _check_states(panel, e, t.query, LANG.get(name, "en"))
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


# Each dashboard's language: the ЦУП's Russian, the joint view's both, Houston's English.
LANG = {"tsup": "ru", "joint": "bi"}


def _check_states(panel: dict[str, Any], e: Parameter, query: str, lang: str = "en"
                  ) -> None:
    """A discrete's value mappings name every state, in the dashboard's language (the
    definitions' state_labels), and colour the red and yellow ones."""
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
    said = {code: name if lang == "en" else e.state_label(name, "ru") if lang == "ru"
            else f"{name} · {e.state_label(name, 'ru')}" for code, name in states.items()}
    assert {int(k): v["text"] for k, v in options.items()} == said, e.id
    for k, v in options.items():
        if states[int(k)] in red:
            assert v["color"] == dashboards.RED, e.id
        elif states[int(k)] in yellow:
            assert v["color"] == dashboards.YELLOW, e.id
        else:
            assert v["color"] not in (dashboards.RED, dashboards.YELLOW), e.id


def test_moscow_shows_mm_hg_and_celsius_in_russian(boards: dict[str, dict[str, Any]]) -> None:
    tsup = boards["tsup"]
    by_field = {t.field: p for p, t in tm_targets(tsup) if p["type"] == "stat"}
    assert by_field["sa_press"]["title"] == "Давление в СА"
    assert by_field["sa_press"]["fieldConfig"]["defaults"]["unit"] == "suffix: мм рт. ст."
    assert by_field["sa_temp"]["fieldConfig"]["defaults"]["unit"] == "celsius"
    houston = {t.field: p for p, t in tm_targets(boards["eecom"]) if p["type"] == "stat"}
    assert houston["sa_press"]["fieldConfig"]["defaults"]["unit"] == "suffix: psia"
    assert houston["sa_temp"]["fieldConfig"]["defaults"]["unit"] == "fahrenheit"
    titles = {p["title"] for p in panels(tsup)}
    assert {"МСК", "GMT"} <= titles


# --- 4. the compose file ------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    import jsonschema  # a test dependency: this test never skips

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose_file()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # The schema does check: a misspelt key fails.
    broken = compose_file()
    broken["services"]["ingest"]["depends_on"]["mosquitto"]["conditon"] = "x"
    assert list(validator.iter_errors(broken))


def test_every_file_the_compose_file_mounts_or_builds_from_exists() -> None:
    compose = compose_file()
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


def _secret_vars(compose: dict[str, Any]) -> dict[str, str]:
    """secret name -> the .env variable it is made from."""
    return {name: s["environment"] for name, s in compose["secrets"].items()}


def test_compose_secrets_are_files_from_env_and_the_example_lists_them() -> None:
    """Every secret comes from a .env variable (listed in .env.example with a change-me
    value) as a compose secret, a file: none is interpolated into an environment, a
    command or a health check, and the GS_*_FILE variables point at files the service has."""
    compose = compose_file()
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^(\w+)=(.*)$", example, re.MULTILINE))
    assert used <= set(listed), f"not in .env.example: {sorted(used - set(listed))}"
    secrets = _secret_vars(compose)
    assert set(secrets.values()) == {k for k in listed if "PASSWORD" in k or "TOKEN" in k}
    for name, var in secrets.items():
        assert name == var.lower()  # secrets_check names the variable from the file name
        assert listed[var].startswith("change-me"), var
        assert var not in used, f"{var} is interpolated into the compose file: use the secret"
    for svc_name, svc in compose["services"].items():
        mounted = set(svc.get("secrets", []))
        assert mounted <= set(secrets), svc_name
        for key, value in svc.get("environment", {}).items():
            assert not re.search(r"PASSWORD$|TOKEN$", key), \
                f"{svc_name}: {key} holds a secret in the environment; use a *_FILE"
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in mounted, (svc_name, key)
        command = " ".join(map(str, svc.get("command", [])))
        assert "--password" not in command and "-P " not in command, svc_name
    # The first step refuses change-me values: it sees every secret, everything waits for it.
    assert set(compose["services"]["secrets-check"]["secrets"]) == set(secrets)
    for name in compose["services"]:
        if name != "secrets-check":
            assert "secrets-check" in _needs(compose, name), name
    if shutil.which("git") and (REPO / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", ".env"], cwd=REPO, capture_output=True,
                                 text=True, check=False).stdout.strip()
        assert tracked == "", ".env holds secrets and must never be committed"


def _needs(compose: dict[str, Any], name: str) -> set[str]:
    """Every service ``name`` waits for, directly or not."""
    found: set[str] = set()
    todo = [name]
    while todo:
        for dep in compose["services"][todo.pop()].get("depends_on", {}):
            if dep not in found:
                found.add(dep)
                todo.append(dep)
    return found


def test_the_ingest_and_grafana_have_their_own_influxdb_tokens() -> None:
    compose = compose_file()
    services = compose["services"]
    admin = "influxdb_admin_token"
    assert {n for n, s in services.items() if admin in s.get("secrets", [])} == \
        {"secrets-check", "influxdb", "influxdb-tokens"}
    tokens = services["influxdb-tokens"]
    assert tokens["command"][:3] == ["python", "-m", "groundstation.deploy.influx_tokens"]
    out = tokens["command"][tokens["command"].index("--out") + 1]
    assert f"influxdb-tokens:{out}" in tokens["volumes"]
    assert services["ingest"]["environment"]["GS_INFLUX_TOKEN_FILE"] == f"{out}/ingest"
    for name in ("ingest", "grafana"):
        assert f"influxdb-tokens:{out}:ro" in services[name]["volumes"], name
        dep = services[name]["depends_on"]["influxdb-tokens"]
        assert dep == {"condition": "service_completed_successfully", "restart": True}
    ds = yaml.safe_load((REPO / "dashboards/provisioning/datasources/influxdb.yaml")
                        .read_text(encoding="utf-8"))["datasources"][0]
    assert ds["secureJsonData"]["httpHeaderValue1"] == f"Token $__file{{{out}/grafana}}"


def test_mosquitto_restarts_after_broker_auth_and_its_clients_after_it() -> None:
    services = compose_file()["services"]
    assert services["mosquitto"]["depends_on"]["broker-auth"] == {
        "condition": "service_completed_successfully", "restart": True}
    for name in ("ingest", "sim-apollo", "sim-soyuz"):
        assert services[name]["depends_on"]["mosquitto"] == {
            "condition": "service_healthy", "restart": True}, name
    # The simulators log in as their vehicle, from GS_MQTT_*, with their own client ids.
    for name, user in (("sim-apollo", "apollo_csm"), ("sim-soyuz", "soyuz")):
        env = services[name]["environment"]
        assert env["GS_MQTT_USERNAME"] == user
        assert env["GS_MQTT_PASSWORD_FILE"] == f"/run/secrets/mqtt_password_{user}"
        assert env["GS_MQTT_CLIENT_ID"] != "groundstation-ingest"
        assert "--host" not in services[name]["command"]


def test_the_readme_states_the_docker_version_the_compose_file_needs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    uses_start_interval = any("start_interval" in s.get("healthcheck", {})
                              for s in compose_file()["services"].values())
    assert uses_start_interval  # needs Docker Engine 25 (API 1.44): said where it is used
    assert "Docker Engine 25 or later" in readme
    assert "Docker Engine 25 or later" in COMPOSE.read_text(encoding="utf-8")


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
    assert source["secureJsonData"]["httpHeaderValue1"].startswith("Token $__file{")
    provider = yaml.safe_load((prov / "dashboards/groundstation.yaml").read_text(
        encoding="utf-8"))["providers"][0]
    mounts = [v for v in compose_file()["services"]["grafana"]["volumes"]
              if isinstance(v, str) and v.startswith("./dashboards:")]
    assert mounts and mounts[0].split(":")[1] == provider["options"]["path"]
    grafana_env = compose_file()["services"]["grafana"]["environment"]
    assert grafana_env["GF_DASHBOARDS_MIN_REFRESH_INTERVAL"] == "1s"
    home = grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"])
    assert (REPO / "dashboards" / Path(home).name).is_file()


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
        urls = push(boards, url, token="glsa_test", datasource_uid="other-influx")
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
    assert main(["dashboards", "build", "--out", str(out)]) == 0
    assert main(["dashboards", "build", "--check", "--out", str(out)]) == 0
    (out / "flight.json").write_text("{}\n", encoding="utf-8")
    assert main(["dashboards", "build", "--check", "--out", str(out)]) == 1
    assert "flight.json" in capsys.readouterr().err


def test_the_compose_services_configuration_is_what_the_schema_reads(tmp_path: Path) -> None:
    """Every GS_* variable compose gives a groundstation service is read by the one
    configuration schema as given (a misspelt or retired variable would be ignored or
    refused at start-up, in a container, where nobody sees it until the stack is down)."""
    from groundstation.config import ConfigError, env_name, load, reveal

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    checked = 0
    for name, svc in compose_file()["services"].items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()
               if k.startswith("GS_")}
        if not env:
            continue
        # ${VAR:-default} as compose fills it from an empty .env; secrets as mounted files.
        env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
        env = {k: str(secret) if k.endswith("_FILE") else v for k, v in env.items()}
        try:
            config = load(None, env=env)
        except ConfigError as exc:
            raise AssertionError(f"service {name}: {exc}") from None
        for key, value in env.items():
            if key == "GS_LOG_LEVEL" or key.endswith("_FILE"):
                continue
            section, _, field = key.removeprefix("GS_").lower().partition("_")
            assert env_name(section, field) == key, f"service {name}: {key} is no setting"
            got = getattr(getattr(config, section), field)
            if isinstance(got, list):  # a list's text: comma-separated
                got = ",".join(got)
            assert str(reveal(got)) in (value, str(Path(value))) or \
                str(got).lower() == value.lower(), (name, key, got, value)
        for key in (k for k in env if k.endswith("_FILE")):
            section, _, field = key.removeprefix("GS_").removesuffix("_FILE").lower() \
                .partition("_")
            assert reveal(getattr(getattr(config, section), field)) == "s3cret", (name, key)
        checked += 1
    assert checked >= 3  # the ingest and both ships at least
