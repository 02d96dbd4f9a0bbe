"""What the InfluxDB sink tests share: lines shaped like the ships' points, fast retry
timings, a count query, and FakeInflux, a small local HTTP server that answers as
InfluxDB 2.x would (none can be installed here) and records every request."""

from __future__ import annotations

import gzip
import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from groundstation.storage.influx.backends import InfluxV1

T0 = 174_845_349_000_000_000  # 1975-07-17 16:09:09 UTC, first docking, in ns
APOLLO_PERIOD_NS = 20_000_000  # 50 frames/s
SOYUZ_PERIOD_NS = 100_000_000  # 10 frames/s


# Fast retry timings, so that outages are noticed and left quickly in tests.
FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.4, "spool_after_s": 0.3,
        "flush_interval_s": 0.05}


def apollo_line(i: int, nfields: int = 95) -> str:
    """One Apollo HBR frame's point, about as wide as the real one (95 parameters)."""
    fields = ",".join(f"p{k}={5.0 + math.sin(i * 0.01 + k):.4f}" for k in range(nfields))
    return f"tm,source=live,stream=hbr,vehicle=apollo_csm {fields},seq={i}i " \
           f"{T0 + i * APOLLO_PERIOD_NS}"


def soyuz_line(i: int) -> str:
    fields = ",".join(f"s{k}={700.0 + math.cos(i * 0.1 + k):.3f}" for k in range(60))
    return f"tm,source=live,stream=tm,vehicle=soyuz {fields},seq={i}i " \
           f"{T0 + i * SOYUZ_PERIOD_NS}"


def count(influx: InfluxV1, vehicle: str, where: str = "") -> int:
    q = f"SELECT count(seq) FROM tm WHERE vehicle='{vehicle}'{where}"
    res = influx.query(q)["results"][0]
    series = res.get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


@dataclass
class Seen:
    """One request the fake server received."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes  # as received (gzip)
    status: int  # what we answered

    @property
    def lines(self) -> list[str]:
        raw = gzip.decompress(self.body) if self.headers.get("content-encoding") == "gzip" \
            else self.body
        return [ln for ln in raw.decode().split("\n") if ln]


Answer = tuple[int, dict[str, str], bytes]


class FakeInflux:
    """A loopback HTTP server standing in for InfluxDB 2.x.

    `respond(seen)` decides each write's answer (default 204); `down = True` answers 503.
    """

    def __init__(self, respond: Callable[[Seen], Answer] | None = None,
                 version: str = "v2.7.4") -> None:
        self.requests: list[Seen] = []
        self.respond = respond or (lambda seen: (204, {}, b""))
        self.down = False
        self.version = version
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB does

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("X-Influxdb-Version", fake.version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(204 if self.path.startswith("/ping") else 404, {}, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = urllib.parse.urlsplit(self.path)
                seen = Seen(time.monotonic(), "POST", url.path,
                            dict(urllib.parse.parse_qsl(url.query)),
                            {k.lower(): v for k, v in self.headers.items()}, body, 0)
                if fake.down:
                    answer: Answer = (503, {}, b'{"code":"unavailable","message":"down"}')
                else:
                    answer = fake.respond(seen)
                seen.status = answer[0]
                with fake._lock:
                    fake.requests.append(seen)
                self._answer(*answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def written_lines(self) -> list[str]:
        with self._lock:
            return [ln for r in self.requests if 200 <= r.status < 300 for ln in r.lines]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
