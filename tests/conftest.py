"""Shared pytest fixtures, and the kinds of test by directory:

- tests/unit: no servers, fast; the inner loop (`pytest tests/unit`). A unit test that
  tries to start a server fails and says where it belongs.
- tests/integration: the real Mosquitto and InfluxDB, started per test by the fixtures.
- tests/e2e: what a person runs: the demo, the consoles, drills, processes killed, the
  installed wheel, and the whole-mission nominal flight.

Tests under integration/ and e2e/ get the `servers` marker (and e2e/ the `e2e` marker), so
`pytest -m "not servers"` is the same set as tests/unit: what is not the inner loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.deploy import servers
from groundstation.deploy.rabbitmq_auth import apply_accounts
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer, RabbitMQCluster
from tests.harness import CLUSTER_USERS, start_or_skip
from tests.influx_helpers import FakeInflux
from tests.paths import TESTS

# Each server starts in about 25 ms on a fresh data directory, so every test gets its
# own instance: tests may stop, kill or restart it without disturbing their neighbours.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).relative_to(TESTS).parts[0]
        if kind in ("integration", "e2e"):
            item.add_marker(pytest.mark.servers)
        if kind == "e2e":
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_servers(request: pytest.FixtureRequest,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if Path(request.node.path).relative_to(TESTS).parts[0] != "unit":
        return

    def refuse(self: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a {type(self).__name__}: a test "
                             "that needs a server belongs in tests/integration or tests/e2e")

    monkeypatch.setattr(servers._Server, "start", refuse)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A running Mosquitto broker on an ephemeral loopback port, anonymous access allowed."""
    server = MosquittoServer(tmp_path / "mosquitto")
    start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _rabbitmq_cluster_of_the_run(tmp_path_factory: pytest.TempPathFactory
                                 ) -> Iterator[RabbitMQCluster]:
    cluster = RabbitMQCluster(3, tmp_path_factory.mktemp("rabbitmq"))
    try:
        start_or_skip(cluster)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def rabbitmq_cluster(_rabbitmq_cluster_of_the_run: RabbitMQCluster) -> RabbitMQCluster:
    """A running three-node RabbitMQ cluster (MQTT on every node; RabbitMQCluster). Unlike
    the other servers it starts once per run (about 30 s: 20 s for the nodes, 6 s to join
    them), so a test that stops or kills a node leaves it to this fixture to start it
    again for the next test; users and permissions a test adds stay for the run."""
    cluster = _rabbitmq_cluster_of_the_run
    stopped = [n for n in cluster.nodes if not n.is_running()]
    for node in stopped:
        node.start()
    if stopped:
        cluster.check_members()
    return cluster


_ACCOUNTS_LOADED: set[str] = set()


@pytest.fixture
def rabbitmq_secure(rabbitmq_cluster: RabbitMQCluster) -> RabbitMQCluster:
    """The run's cluster with the station's accounts (tests.harness.CLUSTER_USERS) and the
    rights of the one ACL (groundstation.deploy.rabbitmq_auth); loaded once, as accounts
    are cluster-wide."""
    if rabbitmq_cluster.name not in _ACCOUNTS_LOADED:
        apply_accounts(rabbitmq_cluster, CLUSTER_USERS)
        _ACCOUNTS_LOADED.add(rabbitmq_cluster.name)
    return rabbitmq_cluster


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDBServer]:
    """A running, empty InfluxDB 1.x server (v1 HTTP API) on an ephemeral loopback port."""
    server = InfluxDBServer(tmp_path / "influxdb")
    start_or_skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake() -> Iterator[FakeInflux]:
    """A fake InfluxDB 2.x HTTP API (see tests/influx_helpers.py)."""
    server = FakeInflux()
    try:
        yield server
    finally:
        server.close()
