"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.servers import BinaryNotFoundError, InfluxDBServer, MosquittoServer

# Each server starts in about 25 ms on a fresh data directory, so every test gets its
# own instance: tests may stop, kill or restart it without disturbing their neighbours.


def _start_or_skip(server: MosquittoServer | InfluxDBServer) -> None:
    try:
        server.start()
    except BinaryNotFoundError as exc:
        # A green CI run must mean the real servers ran, so there a missing binary is
        # a failure; on a developer's machine it is only a skip.
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A running Mosquitto broker on an ephemeral loopback port, anonymous access allowed."""
    server = MosquittoServer(tmp_path / "mosquitto")
    _start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDBServer]:
    """A running, empty InfluxDB 1.x server (v1 HTTP API) on an ephemeral loopback port."""
    server = InfluxDBServer(tmp_path / "influxdb")
    _start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()
