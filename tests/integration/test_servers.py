"""The real-server fixtures: Mosquitto and InfluxDB start, serve, restart and recover."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from groundstation.deploy.servers import (
    BinaryNotFoundError,
    InfluxDBServer,
    MosquittoServer,
    ServerError,
    find_binary,
)

# Apollo-Soyuz docking, 17 July 1975 16:09:09 UTC, in nanoseconds since the epoch.
DOCKING_NS = int(datetime(1975, 7, 17, 16, 9, 9, tzinfo=UTC).timestamp()) * 10**9


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(client.messages), timeout)


def ping(server: InfluxDBServer) -> int:
    with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as resp:
        return resp.status


# -- binaries and errors ---------------------------------------------------------------


def test_find_binary_looks_outside_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("needs Debian's /usr/sbin/mosquitto")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_binary("mosquitto") == "/usr/sbin/mosquitto"
    assert find_binary("no-such-server-binary") is None


def test_missing_binary_error_says_how_to_install(tmp_path: Path) -> None:
    server = MosquittoServer(tmp_path, binary=str(tmp_path / "no-mosquitto-here"))
    with pytest.raises(BinaryNotFoundError, match="apt-get install mosquitto"):
        server.start()
    assert not server.is_running()


def test_failed_start_reports_command_and_log(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    # The mosquitto fixture is requested only to skip (or fail under CI) without the binary.
    broken = MosquittoServer(tmp_path / "broken", extra_config=["no_such_option_xyz 1"])
    with pytest.raises(ServerError) as info:
        broken.start()
    message = str(info.value)
    assert "exited with code" in message
    assert str(broken.config_path) in message  # the command line
    assert "no_such_option_xyz" in message  # mosquitto's own complaint, from the log
    assert "Next step" in message
    assert not broken.is_running()


def test_start_refuses_a_port_held_by_another_server(
    mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path
) -> None:
    # Otherwise the readiness probe would be answered by the server already there.
    with pytest.raises(ServerError, match="taken by another process"):
        MosquittoServer(tmp_path / "m", port=mosquitto.port).start()
    with pytest.raises(ServerError, match="taken by another process"):
        InfluxDBServer(tmp_path / "i", port=influxdb.port).start()


# -- Mosquitto -----------------------------------------------------------------------------


async def test_mosquitto_delivers_publish_to_subscriber(mosquitto: MosquittoServer) -> None:
    assert mosquitto.host == "127.0.0.1"
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe("gs/test/#", qos=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish("gs/test/csm", b"\xeb\x90\x00\x01", qos=1)
        msg = await next_message(sub)
    assert msg.topic.value == "gs/test/csm"
    assert msg.payload == b"\xeb\x90\x00\x01"


async def test_mosquitto_restart_keeps_port_and_accepts_new_clients(
    mosquitto: MosquittoServer,
) -> None:
    port, pid = mosquitto.port, mosquitto.pid
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as old:
        await old.subscribe("gs/test/#")
        await asyncio.to_thread(mosquitto.restart)
        # The old connection really went away: this was a new broker process.
        with pytest.raises(aiomqtt.MqttError):
            await next_message(old)
    assert mosquitto.port == port
    assert mosquitto.pid is not None and mosquitto.pid != pid

    async with aiomqtt.Client(mosquitto.host, port) as sub:
        await sub.subscribe("gs/test/#", qos=1)
        async with aiomqtt.Client(mosquitto.host, port) as pub:
            await pub.publish("gs/test/after-restart", b"ok", qos=1)
        msg = await next_message(sub)
    assert msg.payload == b"ok"


async def test_mosquitto_queued_qos1_message_survives_restart(mosquitto: MosquittoServer) -> None:
    client_id = "gs-test-persistent-console"
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, identifier=client_id, clean_session=False
    ) as sub:
        await sub.subscribe("gs/alarms/#", qos=1)
    # The subscriber is offline: only its persistent session on the broker holds this.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        await pub.publish("gs/alarms/csm", b"MASTER ALARM", qos=1)

    await asyncio.to_thread(mosquitto.restart)

    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, identifier=client_id, clean_session=False
    ) as sub:
        # No new subscribe: the session and its queue came back from the persistence file.
        msg = await next_message(sub)
    assert msg.topic.value == "gs/alarms/csm"
    assert msg.payload == b"MASTER ALARM"
    assert msg.qos == 1
    assert mosquitto.persistence_path.exists()


async def test_mosquitto_kill_then_start(mosquitto: MosquittoServer) -> None:
    mosquitto.kill()
    assert not mosquitto.is_running()
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, timeout=2):
            pass
    mosquitto.start()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish("gs/test/alive", b"1", qos=1)


async def test_mosquitto_without_anonymous_access_rejects_anonymous(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    # The mosquitto fixture is requested only to skip (or fail under CI) without the binary.
    with (
        MosquittoServer(tmp_path / "closed", allow_anonymous=False) as broker,
        pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot [Aa]uthori[sz]ed"),
    ):
        async with aiomqtt.Client(broker.host, broker.port, timeout=5):
            pass


# -- InfluxDB ------------------------------------------------------------------------------


def write_two_docking_points(server: InfluxDBServer, db: str) -> None:
    """Write two points through the raw v1 API, as the ingest will."""
    body = (
        f"eps,vehicle=CSM bus_a_volts=28.4,fc1_amps=22.5 {DOCKING_NS}\n"
        f"eps,vehicle=CSM bus_a_volts=27.9,fc1_amps=23.25 {DOCKING_NS + 20_000_000}\n"
    ).encode()
    req = urllib.request.Request(
        f"{server.url}/write?db={db}&precision=ns", data=body, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def assert_two_docking_points(server: InfluxDBServer, db: str) -> None:
    answer = server.query(db, "SELECT bus_a_volts, fc1_amps FROM eps WHERE vehicle = 'CSM'")
    series = answer["results"][0]["series"]
    assert len(series) == 1
    assert series[0]["name"] == "eps"
    assert series[0]["columns"] == ["time", "bus_a_volts", "fc1_amps"]
    assert series[0]["values"] == [
        [DOCKING_NS, 28.4, 22.5],
        [DOCKING_NS + 20_000_000, 27.9, 23.25],
    ]


def test_influxdb_is_v1_and_answers_ping(influxdb: InfluxDBServer) -> None:
    assert influxdb.url == f"http://127.0.0.1:{influxdb.port}"
    assert ping(influxdb) == 204
    assert influxdb.version is not None and influxdb.version.startswith("1.")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{influxdb.url}/api/v2/buckets", timeout=2)
    assert info.value.code == 404


def test_influxdb_write_and_read_back(influxdb: InfluxDBServer) -> None:
    influxdb.create_database("telemetry")
    names = influxdb.query(None, "SHOW DATABASES")["results"][0]["series"][0]["values"]
    assert ["telemetry"] in names
    write_two_docking_points(influxdb, "telemetry")
    assert_two_docking_points(influxdb, "telemetry")


def test_influxdb_write_helper_and_query_errors(influxdb: InfluxDBServer) -> None:
    influxdb.create_database("tm")
    influxdb.write("tm", ["link,vehicle=Soyuz snr_db=14.5 1", "link,vehicle=Soyuz snr_db=15 2"])
    answer = influxdb.query("tm", "SELECT sum(snr_db) FROM link")
    assert answer["results"][0]["series"][0]["values"] == [[0, 29.5]]
    with pytest.raises(ServerError, match="database not found"):
        influxdb.query("no_such_db", "SELECT * FROM link")
    with pytest.raises(ServerError, match="HTTP 400"):
        influxdb.write("tm", "this is not line protocol")


def test_influxdb_data_survives_restart(influxdb: InfluxDBServer) -> None:
    influxdb.create_database("telemetry")
    write_two_docking_points(influxdb, "telemetry")
    port, pid = influxdb.port, influxdb.pid
    influxdb.restart()
    assert influxdb.port == port
    assert influxdb.pid != pid
    assert_two_docking_points(influxdb, "telemetry")


def test_influxdb_kill_then_start_keeps_acknowledged_writes(influxdb: InfluxDBServer) -> None:
    influxdb.create_database("telemetry")
    write_two_docking_points(influxdb, "telemetry")
    influxdb.kill()
    assert not influxdb.is_running()
    with pytest.raises(OSError):
        ping(influxdb)
    influxdb.start()
    assert ping(influxdb) == 204
    # A 204 from /write means the points were in the WAL, which replays after a crash.
    assert_two_docking_points(influxdb, "telemetry")


def test_two_influxdb_servers_run_side_by_side(influxdb: InfluxDBServer, tmp_path: Path) -> None:
    with InfluxDBServer(tmp_path / "second") as second:
        assert {second.port, second.rpc_port}.isdisjoint({influxdb.port, influxdb.rpc_port})
        second.create_database("only_here")
        assert ping(influxdb) == 204
        with pytest.raises(ServerError, match="database not found"):
            influxdb.query("only_here", "SELECT * FROM eps")
