"""The stack's InfluxDB 2.x tokens: one per user of the database, each with only what it
needs, instead of the admin token for everyone.

- ``ingest``: write to the bucket, nothing else (it never reads: the archive is its record);
- ``grafana``: read the bucket, and the DBRP mappings InfluxQL finds it through.

docker-compose.yml runs this once InfluxDB is healthy, with the admin token (a compose
secret), before the ingest and Grafana start::

    python -m groundstation.deploy.influx_tokens --url http://influxdb:8086 --org astp \\
        --bucket groundstation --admin-token-file /run/secrets/influxdb_admin_token \\
        --out /run/influxdb-tokens

Each token is written to ``OUT/<name>``, mode 0400, owned by the user that reads it (the
ingest image's uid 10001, Grafana's 472): the ingest reads its file through
``GS_INFLUX_TOKEN_FILE``, Grafana's data source through ``$__file{...}``. It is idempotent:
a token whose file is there and which InfluxDB still holds, active and with the same
permissions, is kept; otherwise every token of that name is deleted and a new one made.
So `docker compose up` may run it every time, and deleting a file (or the token in
InfluxDB) makes a new one. The tokens are InfluxDB's own random ones: nobody chooses them,
and they are never printed.

Only the v2 HTTP API is used (urllib, no client library), so the tests check every request
against a stand-in server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INGEST_UID = 10001  # the groundstation image's user (Dockerfile)
GRAFANA_UID = 472  # grafana/grafana's user


class TokenError(RuntimeError):
    pass


@dataclass(frozen=True)
class Role:
    name: str
    uid: int
    # (action, resource type); a "buckets" resource is the stack's bucket, the rest the org's
    permissions: tuple[tuple[str, str], ...]

    @property
    def description(self) -> str:
        return f"groundstation {self.name}"


ROLES = (
    Role("ingest", INGEST_UID, (("write", "buckets"),)),
    Role("grafana", GRAFANA_UID, (("read", "buckets"), ("read", "dbrp"))),
)


class InfluxAPI:
    """The few InfluxDB 2.x API calls this needs, authenticated with a token."""

    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, query: dict[str, str] | None = None,
             body: Any = None) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise TokenError(f"InfluxDB {method} {path}: HTTP {exc.code} {detail}") from None
        return json.loads(text) if text else None


def _permission_key(p: dict[str, Any]) -> tuple[str, str, str | None]:
    r = p.get("resource", {})
    return (p.get("action", ""), r.get("type", ""), r.get("id"))


def ensure_tokens(api: InfluxAPI, org: str, bucket: str, out: Path,
                  roles: tuple[Role, ...] = ROLES, chown: bool = True) -> dict[str, str]:
    """Make sure each role has its token in ``out``; returns role -> 'kept' or 'created'."""
    orgs = api.call("GET", "/api/v2/orgs", {"org": org}).get("orgs", [])
    if not orgs:
        raise TokenError(f"InfluxDB has no organisation {org!r}")
    org_id = orgs[0]["id"]
    buckets = api.call("GET", "/api/v2/buckets", {"orgID": org_id, "name": bucket}).get(
        "buckets", [])
    if not buckets:
        raise TokenError(f"InfluxDB has no bucket {bucket!r} in {org!r}")
    bucket_id = buckets[0]["id"]
    existing = api.call("GET", "/api/v2/authorizations", {"orgID": org_id}).get(
        "authorizations", [])
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for role in roles:
        wanted = [{"action": action, "resource": {
            "type": kind, "orgID": org_id, **({"id": bucket_id} if kind == "buckets" else {})}}
            for action, kind in role.permissions]
        mine = [a for a in existing if a.get("description") == role.description]
        path = out / role.name
        current = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        keep = current and any(
            a.get("status") == "active"
            and a.get("token") in (current, None, "")  # hashed tokens are not shown
            and sorted(map(_permission_key, a.get("permissions", [])))
            == sorted(map(_permission_key, wanted))
            for a in mine)
        if keep:
            done[role.name] = "kept"
        else:
            for a in mine:
                api.call("DELETE", f"/api/v2/authorizations/{a['id']}")
            made = api.call("POST", "/api/v2/authorizations", body={
                "orgID": org_id, "description": role.description, "permissions": wanted})
            _write_secret(path, made["token"])
            done[role.name] = "created"
        if chown:
            os.chown(path, role.uid, role.uid)
        path.chmod(0o400)
    return done


def _write_secret(path: Path, value: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)  # no newline: Grafana's $__file{} takes the file as it is
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m groundstation.deploy.influx_tokens",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--admin-token-file", type=Path, required=True,
                   help="file holding the admin token (never on the command line)")
    p.add_argument("--out", type=Path, required=True, help="directory for the token files")
    p.add_argument("--no-chown", action="store_true",
                   help="leave the files' owner alone (when not run as root)")
    p.add_argument("--attempts", type=int, default=10,
                   help="tries while InfluxDB is not answering yet, 2 s apart")
    args = p.parse_args(argv)
    try:
        token = args.admin_token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"error: {args.admin_token_file}: {exc.strerror}", file=sys.stderr)
        return 1
    api = InfluxAPI(args.url, token)
    for attempt in range(1, args.attempts + 1):
        try:
            done = ensure_tokens(api, args.org, args.bucket, args.out,
                                 chown=not args.no_chown)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if attempt == args.attempts:
                print(f"error: InfluxDB at {args.url} does not answer: {exc}", file=sys.stderr)
                return 1
            time.sleep(2.0)
        except (TokenError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for name, what in done.items():
        print(f"{what} the {name} token ({args.out / name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
