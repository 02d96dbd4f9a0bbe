"""The compose stack's secrets, without Docker: the check that refuses `change-me` values,
and the InfluxDB tokens the stack makes for the ingest (write-only) and Grafana
(read-only), against a stand-in for InfluxDB 2.x's HTTP API that keeps its tokens."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from groundstation.deploy import influx_tokens, secrets_check
from groundstation.deploy.influx_tokens import InfluxAPI, TokenError, ensure_tokens

# --- the secrets check -------------------------------------------------------------------


def _secrets(tmp_path: Path, **values: str) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    for name, value in values.items():
        (d / name).write_text(value)
    return d


def test_good_secrets_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _secrets(tmp_path, mqtt_password_ingest="x8Yc2-rT", influxdb_admin_password="12345678")
    assert secrets_check.main([str(d)]) == 0
    assert capsys.readouterr().out == "ok: 2 secrets set\n"


def test_change_me_empty_and_short_values_are_refused_by_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _secrets(tmp_path, mqtt_password_ingest="change-me-ingest", grafana_admin_password="",
                 influxdb_admin_password="short", mqtt_password_soyuz="fine-Pa55word")
    assert secrets_check.main([str(d)]) == 1
    err = capsys.readouterr().err
    assert "error: MQTT_PASSWORD_INGEST in .env is still the example's 'change-me' value" in err
    assert "error: GRAFANA_ADMIN_PASSWORD is empty in .env" in err
    assert "error: INFLUXDB_ADMIN_PASSWORD in .env is 5 characters: it needs at least 8" in err
    assert "SOYUZ" not in err
    assert "secrets.token_urlsafe" in err


# --- the InfluxDB tokens -----------------------------------------------------------------


class FakeInflux2:
    """Orgs, buckets and authorizations as InfluxDB 2.x's API serves them."""

    def __init__(self, admin: str = "admin-token") -> None:
        self.admin = admin
        self.auths: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.buckets = {"groundstation": "b0001"}
        self._n = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((method, url.path))
                if self.headers.get("Authorization") != f"Token {fake.admin}":
                    return self._answer(401, {"code": "unauthorized"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, answer = fake.handle(method, url.path, q, body)
                self._answer(code, answer)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, method: str, path: str, q: dict[str, str],
               body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/api/v2/orgs"):
            return 200, {"orgs": [{"id": "o0001", "name": "astp"}] if q.get("org") == "astp"
                         else []}
        if (method, path) == ("GET", "/api/v2/buckets"):
            assert q["orgID"] == "o0001"
            bid = self.buckets.get(q.get("name", ""))
            return 200, {"buckets": [{"id": bid, "name": q["name"]}] if bid else []}
        if (method, path) == ("GET", "/api/v2/authorizations"):
            return 200, {"authorizations": list(self.auths.values())}
        if (method, path) == ("POST", "/api/v2/authorizations"):
            self._n += 1
            auth = {**body, "id": f"a{self._n:04d}", "token": f"tok-{self._n}-secret",
                    "status": "active"}
            self.auths[auth["id"]] = auth
            return 201, auth
        if method == "DELETE" and path.startswith("/api/v2/authorizations/"):
            self.auths.pop(path.rsplit("/", 1)[1])
            return 204, None
        return 404, {"code": "not found"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def influx2() -> Iterator[FakeInflux2]:
    fake = FakeInflux2()
    try:
        yield fake
    finally:
        fake.close()


def _by_description(fake: FakeInflux2) -> dict[str, dict[str, Any]]:
    return {a["description"]: a for a in fake.auths.values()}


def test_the_ingest_may_only_write_and_grafana_only_read(influx2: FakeInflux2,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    api = InfluxAPI(influx2.url, "admin-token")
    assert ensure_tokens(api, "astp", "groundstation", out, chown=False) == \
        {"ingest": "created", "grafana": "created"}
    auths = _by_description(influx2)
    ingest, grafana = auths["groundstation ingest"], auths["groundstation grafana"]
    assert ingest["permissions"] == [{"action": "write", "resource": {
        "type": "buckets", "orgID": "o0001", "id": "b0001"}}]
    assert grafana["permissions"] == [
        {"action": "read", "resource": {"type": "buckets", "orgID": "o0001", "id": "b0001"}},
        {"action": "read", "resource": {"type": "dbrp", "orgID": "o0001"}}]
    assert all(p["action"] == "read" for p in grafana["permissions"])
    assert (out / "ingest").read_text() == ingest["token"]  # no newline: $__file{} as is
    assert (out / "grafana").read_text() == grafana["token"]
    assert ingest["token"] != grafana["token"] != "admin-token"
    for f in (out / "ingest", out / "grafana"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o400
    assert sorted(p.name for p in out.iterdir()) == ["grafana", "ingest"]  # no temp left


def test_a_second_run_keeps_the_tokens_and_a_lost_one_is_replaced(influx2: FakeInflux2,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    api = InfluxAPI(influx2.url, "admin-token")
    ensure_tokens(api, "astp", "groundstation", out, chown=False)
    before = dict(influx2.auths)
    influx2.requests.clear()
    assert ensure_tokens(api, "astp", "groundstation", out, chown=False) == \
        {"ingest": "kept", "grafana": "kept"}
    assert influx2.auths == before
    assert {m for m, _ in influx2.requests} == {"GET"}
    # The ingest's file is gone (a new volume): its old token is deleted, a new one made.
    (out / "ingest").unlink()
    assert ensure_tokens(api, "astp", "groundstation", out, chown=False) == \
        {"ingest": "created", "grafana": "kept"}
    auths = _by_description(influx2)
    assert len(influx2.auths) == 2
    assert auths["groundstation ingest"]["token"] == (out / "ingest").read_text()
    assert auths["groundstation ingest"]["token"] != before[next(
        k for k, a in before.items() if a["description"] == "groundstation ingest")]["token"]
    # An operator deactivated Grafana's token in InfluxDB: it is replaced too.
    auths["groundstation grafana"]["status"] = "inactive"
    assert ensure_tokens(api, "astp", "groundstation", out, chown=False)["grafana"] == "created"
    assert _by_description(influx2)["groundstation grafana"]["status"] == "active"


def test_the_files_belong_to_their_readers(influx2: FakeInflux2, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to the ingest's and Grafana's users needs root (as in the stack)")
    out = tmp_path / "tokens"
    ensure_tokens(InfluxAPI(influx2.url, "admin-token"), "astp", "groundstation", out)
    assert (out / "ingest").stat().st_uid == influx_tokens.INGEST_UID
    assert (out / "grafana").stat().st_uid == influx_tokens.GRAFANA_UID


def test_the_command_reads_the_admin_token_from_a_file(influx2: FakeInflux2, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    admin = tmp_path / "influxdb_admin_token"
    admin.write_text("admin-token\n")
    args = ["--url", influx2.url, "--org", "astp", "--bucket", "groundstation",
            "--admin-token-file", str(admin), "--out", str(tmp_path / "t"), "--no-chown"]
    assert influx_tokens.main(args) == 0
    out = capsys.readouterr().out
    assert "created the ingest token" in out and "tok-" not in out  # never printed
    assert influx_tokens.main([*args[:5], "nobucket", *args[6:]]) == 1
    assert "InfluxDB has no bucket 'nobucket' in 'astp'" in capsys.readouterr().err
    admin.write_text("wrong")
    assert influx_tokens.main(args) == 1
    assert "HTTP 401" in capsys.readouterr().err
    with pytest.raises(TokenError, match="no organisation 'moscow'"):
        ensure_tokens(InfluxAPI(influx2.url, "admin-token"), "moscow", "groundstation",
                      tmp_path / "t", chown=False)
