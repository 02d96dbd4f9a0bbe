"""Writes line protocol to InfluxDB through the v1 HTTP API (/write), gzip-compressed.

The tests' server is Debian's InfluxDB 1.6, which speaks only v1. (The v2 API, token, org
and bucket, comes with the ingest service.)
"""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class InfluxError(RuntimeError):
    pass


@dataclass
class InfluxV1:
    url: str  # e.g. http://127.0.0.1:8086
    database: str
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0

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

    async def awrite_lines(self, lines: list[str]) -> None:
        await asyncio.to_thread(self.write_lines, lines)

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
        self.query(f'CREATE DATABASE "{self.database}"')
