"""Transports to InfluxDB: one HTTP write request at a time, no batching, no retries.

- `InfluxV1`: the v1 HTTP API (`/write`, `/query`; database, retention policy, optional
  user and password). What Debian's InfluxDB 1.6, the tests' server, speaks; InfluxDB 2.x
  and 3.x answer it too (v1 compatibility).
- `InfluxV2`: the v2 write API (`/api/v2/write`; token, org, bucket) through
  `influxdb-client`'s low-level `WriteService` (see the class for why not its `WriteApi`).

Both expose `post(body, compressed=...) -> WriteResult`: one request with a line-protocol
body, already gzip-compressed or plain (`post_gzip(body)` is `post(body, compressed=True)`),
whose outcome is reported, never raised, so that the caller
(`groundstation.storage.influx.sink.InfluxSink`) owns batching, retry, spooling and dead-lettering.
`detect_api` / `make_backend` pick the API from the server's `/ping` answer.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class InfluxError(RuntimeError):
    pass


class DatabaseMissingError(InfluxError):
    """The database (v1) or bucket (v2) the ingest writes to does not exist."""


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one write request."""

    status: int  # HTTP status; 0 when there was no answer (refused, reset, timed out)
    error: str = ""  # InfluxDB's own error text, or the exception, for the logs
    retry_after: float | None = None  # seconds, from a Retry-After header (429, 503)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        # No answer, overload (429) and server trouble (5xx) may pass, and so may 404: the
        # database (or bucket) is not there, which is an outage until someone creates it,
        # never a fault of the lines. Any other 4xx says something about the request
        # itself and would fail the same way again.
        return self.status in (0, 404, 429) or self.status >= 500

    @property
    def missing_target(self) -> bool:
        """The database or bucket written to does not exist (v1: `database not found`,
        v2: `bucket ... not found`)."""
        return self.status == 404

    @property
    def kind(self) -> str:
        return "connection" if self.status == 0 else f"http_{self.status}"


class WriteBackend(Protocol):
    """What `InfluxSink` needs from a transport. `post` blocks; it runs in a thread."""

    @property
    def api(self) -> str: ...

    @property
    def target(self) -> str: ...

    def post(self, body: bytes, *, compressed: bool) -> WriteResult: ...

    def close(self) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_text(raw: bytes | str | None) -> str:
    """InfluxDB's error message from a response body (v1 `error`, v2 `message`)."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:1000]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:1000]
    return text.strip()[:1000]


class _KeepAlive:
    """One persistent HTTP connection per thread (http.client connections are not shared).

    A write every flush interval would otherwise pay a TCP handshake each time and leave a
    trail of TIME_WAIT sockets.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"InfluxDB URL must be http(s)://host[:port], not {url!r}")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port
        self.prefix = u.path.rstrip("/")
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._all_lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = (http.client.HTTPSConnection if self.scheme == "https"
                   else http.client.HTTPConnection)
            conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            with self._all_lock:
                self._all.add(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._all_lock:
                self._all.discard(conn)

    def post(self, path_query: str, body: bytes, headers: dict[str, str]) -> WriteResult:
        # One silent second try, only when a reused keep-alive connection turns out to
        # have been closed by the server while idle: that is not an outage. A write that
        # reached the server twice is harmless (same series and time overwrite).
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._connection()
            try:
                conn.request("POST", self.prefix + path_query, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self._drop()
                if reused and attempt == 0:
                    continue
                return WriteResult(0, f"{type(exc).__name__}: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                return WriteResult(0, f"{type(exc).__name__}: {exc}")
            if resp.will_close:
                self._drop()
            retry_after = parse_retry_after(resp.getheader("Retry-After"))
            if 200 <= resp.status < 300:
                return WriteResult(resp.status)
            return WriteResult(resp.status, error_text(raw) or resp.reason, retry_after)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()


_PLAIN_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}
_GZIP_HEADERS = {"Content-Encoding": "gzip", **_PLAIN_HEADERS}


@dataclass
class InfluxV1:
    url: str  # e.g. http://127.0.0.1:8086
    database: str
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    _http: _KeepAlive | None = field(default=None, init=False, repr=False, compare=False)
    _http_lock: threading.Lock = field(default_factory=threading.Lock, init=False,
                                       repr=False, compare=False)

    @property
    def api(self) -> str:
        return "v1"

    @property
    def target(self) -> str:
        rp = f"/{self.retention_policy}" if self.retention_policy else ""
        return f"v1 {self.url} db={self.database}{rp}"

    def post(self, body: bytes, *, compressed: bool) -> WriteResult:
        """POST /write?db=&rp=&precision=ns with a gzip-compressed (`compressed`) or plain
        line-protocol body; never raises."""
        with self._http_lock:  # writer and drainer threads may get here together
            if self._http is None:
                self._http = _KeepAlive(self.url, self.timeout_s)
        return self._http.post(f"/write?{self._params(precision='ns')}", body,
                               _GZIP_HEADERS if compressed else _PLAIN_HEADERS)

    def post_gzip(self, body: bytes) -> WriteResult:
        """POST a gzip-compressed body; never raises."""
        return self.post(body, compressed=True)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _params(self, **extra: str) -> str:
        q = {"db": self.database, **extra}
        if self.retention_policy:
            q["rp"] = self.retention_policy
        if self.username:
            q["u"] = self.username
            q["p"] = self.password or ""
        return urllib.parse.urlencode(q)

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)
        req = urllib.request.Request(
            f"{self.url}/write?{self._params(precision='ns')}", data=body, method="POST",
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                if resp.status != 204:
                    raise InfluxError(f"InfluxDB write answered {resp.status}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise InfluxError(f"InfluxDB at {self.url} refused the write ({exc.code}): "
                              f"{detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxError(f"cannot reach InfluxDB at {self.url}: {exc}") from None

    def query(self, influxql: str, epoch: str = "ns") -> dict[str, Any]:
        """Run InfluxQL; times come back as integers in `epoch` units (ns by default)."""
        req = urllib.request.Request(f"{self.url}/query?{self._params(q=influxql, epoch=epoch)}",
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as exc:
            raise InfluxError(f"InfluxDB query failed ({exc.code}): "
                              f"{exc.read().decode(errors='replace')[:500]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxError(f"cannot reach InfluxDB at {self.url}: {exc}") from None

    def create_database(self) -> None:
        self.query(f'CREATE DATABASE "{_quoted(self.database)}"')

    # The start-up check (see ensure_target).
    @property
    def target_name(self) -> str:
        return f"database {self.database!r}"

    def target_exists(self) -> bool:
        """Raises InfluxError if the server cannot say (unreachable, not allowed)."""
        res = self.query("SHOW DATABASES")["results"][0]
        if "error" in res:
            raise InfluxError(f"InfluxDB at {self.url}: SHOW DATABASES: {res['error']}")
        names = [v[0] for s in res.get("series", []) for v in s.get("values", [])]
        return self.database in names

    def create_target(self) -> None:
        self.create_database()

    def create_hint(self) -> str:
        return (f"influx -host <host> -port <port> -execute 'CREATE DATABASE "
                f"\"{_quoted(self.database)}\"'")


@dataclass
class InfluxV2:
    """The v2 write API (`POST /api/v2/write?org=&bucket=&precision=ns`, `Token` auth).

    Goes through `influxdb-client`'s generated `WriteService` rather than its `WriteApi`:
    `WriteApi` brings its own batching, retry and background threads (an rx pipeline),
    which would duplicate and fight the sink's, and in its batching mode reports failures
    through callbacks after the fact, which cannot tell the ingest when data is durable.
    `WriteService.post_write` is one synchronous request: we hand it the already
    gzip-compressed body with `Content-Encoding: gzip` (the client's own `enable_gzip` is
    off so it does not compress again), the client's urllib3 retries are off
    (`retries=False`), and an error comes back as `ApiException` with the status, the
    body and the headers (Retry-After), which `post` turns into a `WriteResult`. A plain
    body goes with `Content-Encoding: identity`.
    """

    url: str  # e.g. http://influxdb:8086
    org: str
    bucket: str
    token: str
    timeout_s: float = 10.0
    _service: Any = field(default=None, init=False, repr=False, compare=False)
    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    @property
    def api(self) -> str:
        return "v2"

    @property
    def target(self) -> str:
        return f"v2 {self.url} org={self.org} bucket={self.bucket}"

    def _write_service(self) -> Any:
        with self._lock:
            if self._service is None:
                # Imported here: influxdb-client pulls in a lot, and v1-only users
                # (the tests, the demo) never need it.
                from influxdb_client import InfluxDBClient
                from influxdb_client.service.write_service import WriteService

                self._client = InfluxDBClient(
                    url=self.url, token=self.token, org=self.org,
                    timeout=int(self.timeout_s * 1000), enable_gzip=False, retries=False)
                self._service = WriteService(self._client.api_client)
            return self._service

    def post(self, body: bytes, *, compressed: bool) -> WriteResult:
        """One v2 write of a gzip-compressed (`compressed`) or plain body; never raises."""
        from influxdb_client.rest import ApiException

        try:
            self._write_service().post_write(
                org=self.org, bucket=self.bucket, body=body, precision="ns",
                content_encoding="gzip" if compressed else "identity",
                content_type="text/plain; charset=utf-8")
        except ApiException as exc:
            headers: Any = exc.headers or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return WriteResult(int(exc.status or 0), error_text(exc.body) or str(exc.reason),
                               retry_after)
        except Exception as exc:  # urllib3's connection errors, timeouts, OSError
            return WriteResult(0, f"{type(exc).__name__}: {exc}")
        return WriteResult(204)

    def post_gzip(self, body: bytes) -> WriteResult:
        """One v2 write of a gzip-compressed body; never raises."""
        return self.post(body, compressed=True)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._service = None

    # The start-up check (see ensure_target).
    @property
    def target_name(self) -> str:
        return f"bucket {self.bucket!r} (org {self.org!r})"

    def _buckets(self) -> Any:
        from influxdb_client.client.bucket_api import BucketsApi

        self._write_service()  # makes the client
        return BucketsApi(self._client)

    def target_exists(self) -> bool:
        try:
            return self._buckets().find_bucket_by_name(self.bucket) is not None
        except Exception as exc:
            raise InfluxError(f"InfluxDB at {self.url}: cannot list buckets: {exc}") from None

    def create_target(self) -> None:
        try:
            self._buckets().create_bucket(bucket_name=self.bucket, org=self.org)
        except Exception as exc:
            raise InfluxError(f"InfluxDB at {self.url}: cannot create {self.target_name}: "
                              f"{exc}") from None

    def create_hint(self) -> str:
        return f"influx bucket create --name {self.bucket} --org {self.org}"


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def ensure_target(backend: InfluxV1 | InfluxV2, create: bool) -> bool:
    """The start-up check: the database (v1) or bucket (v2) exists, or is created when
    `create` is allowed; True if it was created. Raises DatabaseMissingError (saying what
    to run) when it is missing and may not be created, InfluxError when the server cannot
    be asked (then the caller starts anyway: an unreachable database is an outage)."""
    if backend.target_exists():
        return False
    if not create:
        raise DatabaseMissingError(
            f"InfluxDB at {backend.url} has no {backend.target_name}: create it "
            f"({backend.create_hint()}), or let the ingest create it with "
            "--influx-create-database (GS_INFLUX_CREATE_DATABASE, [influx] "
            "create_database)")
    backend.create_target()
    return True


def detect_api(url: str, timeout_s: float = 5.0) -> Literal["v1", "v2"]:
    """Which write API the server at `url` speaks, from `/ping`'s X-Influxdb-Version.

    1.x answers e.g. "1.6.7"; 2.x "v2.7.4" or "2.7.4". Without a recognisable header,
    `POST /api/v2/write` tells: 1.x has no such endpoint (404).
    """
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout_s) as resp:
            version = (resp.headers.get("X-Influxdb-Version") or "").strip().lower()
    except urllib.error.HTTPError as exc:
        version = (exc.headers.get("X-Influxdb-Version") or "").strip().lower()
    except (urllib.error.URLError, OSError) as exc:
        raise InfluxError(f"cannot reach InfluxDB at {url} to detect its API: {exc}") from None
    if version.startswith("1."):
        return "v1"
    if version.startswith(("2.", "v2", "3.", "v3")):
        return "v2"
    req = urllib.request.Request(f"{url}/api/v2/write", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return "v2"
    except urllib.error.HTTPError as exc:
        return "v1" if exc.code == 404 else "v2"
    except (urllib.error.URLError, OSError) as exc:
        raise InfluxError(f"cannot reach InfluxDB at {url} to detect its API: {exc}") from None


def make_backend(url: str, api: Literal["auto", "v1", "v2"] = "auto", *,
                 database: str | None = None, retention_policy: str | None = None,
                 username: str | None = None, password: str | None = None,
                 token: str | None = None, org: str | None = None, bucket: str | None = None,
                 timeout_s: float = 10.0) -> InfluxV1 | InfluxV2:
    """A transport for `url`, with the API configured or detected ("auto")."""
    chosen = detect_api(url, timeout_s) if api == "auto" else api
    if chosen == "v1":
        if not database:
            raise ValueError(f"InfluxDB at {url} speaks the v1 API: a database is required")
        return InfluxV1(url, database, retention_policy, username, password, timeout_s)
    if chosen == "v2":
        missing = [n for n, v in (("token", token), ("org", org), ("bucket", bucket)) if not v]
        if missing:
            raise ValueError(f"InfluxDB at {url} speaks the v2 API: "
                             f"{', '.join(missing)} required")
        assert token and org and bucket
        return InfluxV2(url, org, bucket, token, timeout_s)
    raise ValueError(f"api must be 'auto', 'v1' or 'v2', not {api!r}")
