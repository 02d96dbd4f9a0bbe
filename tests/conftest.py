"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.servers import InfluxDBServer, MosquittoServer
from tests.harness import start_or_skip

# Each server starts in about 25 ms on a fresh data directory, so every test gets its
# own instance: tests may stop, kill or restart it without disturbing their neighbours.


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A running Mosquitto broker on an ephemeral loopback port, anonymous access allowed."""
    server = MosquittoServer(tmp_path / "mosquitto")
    start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDBServer]:
    """A running, empty InfluxDB 1.x server (v1 HTTP API) on an ephemeral loopback port."""
    server = InfluxDBServer(tmp_path / "influxdb")
    start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()
