"""MQTT over TLS (issue 14): a real Mosquitto with a TLS listener and certificates made for
the test; the simulators, the console (headless) and the replay tool over it; mutual TLS;
and the mistakes refused in words, never a traceback: an untrusted certificate, plain TCP
against the TLS port, TLS against a plain port, a missing client certificate."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.console import pages as console_pages
from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.core.definitions import load_all, load_definition
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.mqtt import BrokerRefused, MqttClient, Received
from groundstation.storage.influx.backends import InfluxV1
from simulators.downlink import Downlink
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.archive_helpers import T0, record
from tests.harness import flying, rows, running_ingest, start_or_skip, wait_for
from tests.paths import MINI
from tests.tls_helpers import Certificates, make_certificates

A = tl.APOLLO
HEARD = tl.parse_time("044:25:30")  # docked, Apollo heard (ATS-6): every frame goes live


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


def _broker(tmp_path: Path, certs: Certificates, name: str = "tls",
            require_client_certificate: bool = False) -> MosquittoServer:
    server = MosquittoServer(tmp_path / name, extra_config=certs.broker_config(
        require_client_certificate))
    start_or_skip(server)
    return server


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Certificates) -> Iterator[MosquittoServer]:
    server = _broker(tmp_path, certs)
    try:
        yield server
    finally:
        server.stop()


def _tls(broker: MosquittoServer, certs: Certificates, **kw: Any) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, tls=True, **{"ca_file": certs.ca,
                                                                       **kw})


def _sim(broker: MosquittoServer, env: dict[str, str], *flags: str
         ) -> subprocess.CompletedProcess[str]:
    """`groundstation sim apollo` for ten mission seconds, as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "groundstation", "sim", "apollo", "--mqtt-host", broker.host,
         "--mqtt-port", str(broker.port), "--start", "044:25:30", "--until", "044:25:40",
         "--speed", "20", *flags],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("GS_")}, **env},
        capture_output=True, text=True, timeout=120)


async def test_the_ships_fly_over_tls(tls_broker: MosquittoServer, certs: Certificates
                                      ) -> None:
    defs = load_all()
    got: list[Received] = []
    watcher = MqttClient(_tls(tls_broker, certs), name="watch", on_message=got.append,
                         subscriptions=[*topics.TELEMETRY_SUBSCRIPTIONS, topics.sim_state(A)])
    stop = asyncio.Event()
    watching = asyncio.create_task(watcher.run(stop=stop))
    await wait_for(lambda: watcher.connected, 10, "the watcher over TLS")
    # 044:25:30: docked, and both ships heard (Apollo through ATS-6).
    runner = SimRunner(Mission(HEARD, seed=3, definitions=defs), [defs[A]],
                       RunnerOptions(mqtt=_tls(tls_broker, certs), speed=20))
    async with flying(runner):
        await wait_for(lambda: sum(topics.is_telemetry(m.topic) for m in got) >= 5, 20,
                       "frames over TLS")
    assert runner.publisher.connected is False and runner.publisher.connections == 1
    assert any(m.topic == topics.sim_state(A) for m in got)
    stop.set()
    await watching


async def test_the_ingest_over_tls_stores_what_the_ship_sent(
        tls_broker: MosquittoServer, certs: Certificates, influxdb: InfluxDBServer,
        tmp_path: Path) -> None:
    mini = load_definition(MINI)
    press = (np.arange(16) + 60) * 17 / 255  # counts 60..75, one per frame
    link = Downlink(mini, tls_broker.host, tls_broker.port, frames_per_message=4,
                    values=lambda seq, n: {"cabin_press": press[seq:seq + n], "hatch": "OPEN",
                                           "range": 222.0, "temp": 66.0})
    async with running_ingest(tls_broker, influxdb, tmp_path, {"mini": mini}, "tls",
                              mqtt=_tls(tls_broker, certs, client_id="ingest-tls")) as ingest:
        ship = MqttClient(_tls(tls_broker, certs), name="ship")
        async with ship.connect() as conn:
            for k in range(4):
                await conn.publish(*link.next_message(T0 + k * 4 * 20_000_000))
        await wait_for(lambda: ingest.acked >= 4, 20, "4 messages stored and acknowledged")
    got = rows(InfluxV1(influxdb.url, "tls"),
               "SELECT cabin_press FROM tm WHERE vehicle='mini' AND source='live'")
    np.testing.assert_allclose([r["cabin_press"] for r in got], press, rtol=1e-12)


def test_the_sim_command_over_tls_and_its_mistakes_in_words(tls_broker: MosquittoServer,
                                                            certs: Certificates) -> None:
    tls = {"GS_MQTT_TLS": "true", "GS_MQTT_CA_FILE": str(certs.ca)}
    ok = _sim(tls_broker, tls)
    assert ok.returncode == 0, ok.stderr
    assert f"to mqtts://{tls_broker.host}:{tls_broker.port}" in ok.stdout
    assert "apollo_csm: 500 live" in ok.stdout  # 10 s of 50 frames/s, all acknowledged

    wrong = _sim(tls_broker, {**tls, "GS_MQTT_CA_FILE": str(certs.wrong_ca)})
    assert wrong.returncode == 1
    assert "TLS: its certificate is not trusted" in wrong.stderr
    assert str(certs.wrong_ca) in wrong.stderr and "Traceback" not in wrong.stderr

    plain = _sim(tls_broker, {})
    assert plain.returncode == 1
    assert "closed the connection before answering CONNECT" in plain.stderr
    assert "GS_MQTT_TLS=true" in plain.stderr and "Traceback" not in plain.stderr


async def test_tls_against_a_plain_port_and_a_missing_file(mosquitto: MosquittoServer,
                                                           certs: Certificates,
                                                           tmp_path: Path) -> None:
    client = MqttClient(_tls(mosquitto, certs), name="probe", fail_fast=True)
    with pytest.raises(BrokerRefused, match=r"TLS handshake failed .*: is this port the "
                                            r"broker's TLS listener"):
        await asyncio.wait_for(client.run(), 15)
    missing = _sim(mosquitto, {"GS_MQTT_TLS": "1",
                               "GS_MQTT_CA_FILE": str(tmp_path / "absent.pem")})
    assert missing.returncode == 1
    assert "error: [mqtt] ca_file" in missing.stderr and "cannot load it" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_the_console_over_tls(tls_broker: MosquittoServer, certs: Certificates) -> None:
    defs = load_all()
    app = console.ConsoleApp(centre="houston", mqtt=_tls(tls_broker, certs),
                             operator="flight", definitions=defs)
    t = 174_845_349_000_000_000
    update = json.dumps({"vehicle": A, "source": "live", "time_ns": t,
                         "values": {"cabin_press": [t, 5.0, 0]}}).encode()
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(lambda: app.model.connected, 10, "the console over TLS")
        async with MqttClient(_tls(tls_broker, certs), name="ingest-standin"
                              ).connect() as conn:
            await conn.publish(topics.parameters(A), update)
        await wait_for(lambda: app.model.source("live").vehicle(A).values.get("cabin_press")
                       is not None, 10, "a value over TLS")
        await pilot.pause(0.5)
        assert console_pages.word("broker_ok", "houston") in app.screen_text()

    # Trusting the wrong CA: the console says why on its status line, and keeps trying.
    wrong = console.ConsoleApp(centre="houston", definitions=defs, operator="flight",
                               mqtt=_tls(tls_broker, certs, ca_file=certs.wrong_ca))
    async with wrong.run_test(size=(160, 50)) as pilot:
        await wait_for(lambda: wrong.model.attempts >= 1, 10, "a refused attempt")
        await pilot.pause(0.5)
        assert "certificate is not trusted" in wrong.status_text.plain
        assert not wrong.model.connected


async def test_mutual_tls(tmp_path: Path, certs: Certificates) -> None:
    broker = _broker(tmp_path, certs, "mutual", require_client_certificate=True)
    try:
        anonymous = MqttClient(_tls(broker, certs), name="probe", fail_fast=True)
        with pytest.raises(BrokerRefused, match=r"closed the connection before answering "
                                                r"CONNECT .*client certificate"):
            await asyncio.wait_for(anonymous.run(), 15)
        mine = MqttClient(_tls(broker, certs, cert_file=certs.client_cert,
                               key_file=certs.client_key), name="probe")
        async with mine.connect() as conn:
            await conn.publish("probe/x", b"signed", qos=1)
    finally:
        broker.stop()


def test_a_replay_over_tls(tls_broker: MosquittoServer, certs: Certificates, tmp_path: Path
                           ) -> None:
    """The replay tool (the MQTT client of our choice beside the ships and the console), as
    its own process: refused in words when it trusts the wrong CA, through when it trusts
    the right one."""
    archive = tmp_path / "archive"
    record(archive, [(T0, 250)])  # five seconds of the mini vehicle's frames

    def replay(ca: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GS_")}
        env |= {"GS_MQTT_TLS": "true", "GS_MQTT_CA_FILE": str(ca)}
        return subprocess.run(
            [sys.executable, "-m", "groundstation", "replay", "1", "--speed", "max",
             "--no-progress", "--archive-dir", str(archive), "--mqtt-host", tls_broker.host,
             "--mqtt-port", str(tls_broker.port)],
            env=env, capture_output=True, text=True, timeout=120)

    wrong = replay(certs.wrong_ca)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "TLS: its certificate is not trusted" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    right = replay(certs.ca)
    assert right.returncode == 0, right.stderr
    assert "finished: 250 frames" in right.stderr


def test_the_deployment_tls_listener_as_documented(tmp_path: Path, certs: Certificates
                                                   ) -> None:
    """deploy/mosquitto/mosquitto.conf with its TLS block uncommented (only addresses and
    paths replaced): the plain and the TLS listener both take the ACL's users, and the TLS
    one wants a client certificate."""
    import re

    from groundstation.deploy.broker_auth import ACL_FILE, CONF_FILE, write_password_file
    from groundstation.deploy.servers import free_port
    from tests.harness import ACL_USERS

    pw = write_password_file(tmp_path / "passwd", ACL_USERS)
    tls_port = free_port()
    paths = {"/mosquitto/certs/server.crt": certs.server_cert,
             "/mosquitto/certs/server.key": certs.server_key,
             "/mosquitto/certs/ca.crt": certs.ca}

    class DeployBroker(MosquittoServer):
        def config_lines(self) -> list[str]:
            out = []
            for raw in CONF_FILE.read_text().splitlines():
                line = re.sub(r"^#(?=(listener 8883|protocol|certfile|keyfile|tls_version|"
                              r"cafile|require_certificate)\b)", "", raw.strip())
                key = line.split()[0] if line and not line.startswith("#") else ""
                if line.startswith("listener 1883"):
                    line = f"listener {self.port} {self.host}"
                elif line.startswith("listener 8883"):
                    line = f"listener {tls_port} {self.host}"
                elif key == "password_file":
                    line = f"password_file {pw}"
                elif key == "acl_file":
                    line = f"acl_file {ACL_FILE}"
                elif key == "persistence_location":
                    line = f"persistence_location {self.data_dir}{os.sep}"
                elif key == "log_dest":
                    line = f"log_dest file {self.broker_log_path}"
                for old, new in paths.items():
                    line = line.replace(old, str(new))
                out.append(line)
            if os.geteuid() == 0:
                out.append("user root")
            return out

    async def check(server: MosquittoServer) -> None:
        user: dict[str, Any] = {"username": "flight", "password": ACL_USERS["flight"]}
        async with MqttClient(MqttConfig(host=server.host, port=server.port, **user),
                              name="plain").connect():
            pass
        mutual = MqttConfig(host=server.host, port=tls_port, tls=True, ca_file=certs.ca,
                            cert_file=certs.client_cert, key_file=certs.client_key, **user)
        async with MqttClient(mutual, name="tls").connect() as conn:
            await conn.publish(topics.acknowledgements("flight", A), b"{}", qos=1)
        bare = MqttConfig(host=server.host, port=tls_port, tls=True, ca_file=certs.ca, **user)
        with pytest.raises(BrokerRefused, match="client certificate"):
            async with MqttClient(bare, name="tls").connect():
                pass

    server = DeployBroker(tmp_path / "deploy")
    start_or_skip(server)
    try:
        asyncio.run(check(server))
    finally:
        server.stop()
