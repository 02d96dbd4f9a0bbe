"""Upload the generated dashboards to a running Grafana through its HTTP API (urllib; no
extra dependency, so grafana-client's urllib3 replacement never meets influxdb-client)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from groundstation.grafana.board import DATASOURCE_UID

__all__ = ["GrafanaError", "push"]



class GrafanaError(RuntimeError):
    pass


@dataclass
class _Grafana:
    url: str
    token: str | None = None
    user: str | None = None
    password: str | None = None
    timeout_s: float = 15.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.user is not None:
            pair = f"{self.user}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise GrafanaError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise GrafanaError(f"cannot reach Grafana at {self.url}: {exc}") from None
        return json.loads(raw) if raw else None


def push(dashboards: dict[str, dict[str, Any]], url: str, *, token: str | None = None,
         user: str | None = None, password: str | None = None,
         folder: str = "Groundstation", datasource_uid: str = DATASOURCE_UID,
         message: str = "groundstation dashboards push") -> list[str]:
    """Create or replace the dashboards in a running Grafana (POST /api/dashboards/db), in a
    folder (created if missing). Returns each dashboard's URL as Grafana reports it."""
    api = _Grafana(url, token, user, password)
    folder_uid = "groundstation"
    try:
        api.request("GET", f"/api/folders/{folder_uid}")
    except GrafanaError as exc:
        if "HTTP 404" not in str(exc):
            raise
        api.request("POST", "/api/folders", {"uid": folder_uid, "title": folder})
    urls = []
    for board in dashboards.values():
        if datasource_uid != DATASOURCE_UID:
            board = json.loads(json.dumps(board).replace(
                f'"uid": "{DATASOURCE_UID}"', f'"uid": "{datasource_uid}"'))
        res = api.request("POST", "/api/dashboards/db", {
            "dashboard": {**board, "id": None}, "folderUid": folder_uid, "overwrite": True,
            "message": message})
        urls.append(url.rstrip("/") + str((res or {}).get("url", "")))
    return urls
