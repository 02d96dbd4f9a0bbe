"""Broker security with the real Mosquitto: authentication and the repository's ACL.

Mosquitto drops a denied publish silently (MQTT 3.1.1 has no refusal for QoS 0/1), so
every test proves non-delivery the same way: the denied message is published first, then
a permitted marker *from the same connection*, and the subscriber must receive the
marker and nothing denied before it. The broker handles one connection's packets in
order and queues each message for its subscribers before it acknowledges it, so had
the denied message been let through it would have arrived before the marker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from groundstation.core import topics
from groundstation.deploy.broker_auth import (
    ACL_FILE,
    CONF_FILE,
    secure_broker_config,
    write_password_file,
)
from groundstation.deploy.servers import MosquittoServer
from tests.harness import ACL_USERS, MARK, login, received_until_mark


@pytest.fixture
def broker(mosquitto: MosquittoServer, tmp_path: Path) -> Iterator[MosquittoServer]:
    """A real broker with authentication and deploy/mosquitto/acl."""
    # The mosquitto fixture is requested only to skip (or fail under CI) without the binary.
    extra = secure_broker_config(tmp_path / "auth", ACL_USERS)
    server = MosquittoServer(tmp_path / "secure", allow_anonymous=False, extra_config=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- authentication --------------------------------------------------------------------------


async def test_anonymous_connection_is_refused(broker: MosquittoServer) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot [Aa]uthori[sz]ed"):
        async with aiomqtt.Client(broker.host, broker.port, timeout=5):
            pass


@pytest.mark.parametrize(("user", "password"), [("flight", "eecom-pw"), ("flight", ""),
                                                ("nobody", "flight-pw")])
async def test_wrong_password_or_unknown_user_is_refused(broker: MosquittoServer, user: str,
                                                         password: str) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot [Aa]uthori[sz]ed"):
        async with aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                                  timeout=5):
            pass


async def test_every_account_can_log_in(broker: MosquittoServer) -> None:
    for user in ACL_USERS:
        async with login(broker, user):
            pass


async def test_a_denied_publish_leaves_the_publisher_connected(broker: MosquittoServer) -> None:
    # What every test below relies on (marker from the same connection), and what a
    # vehicle needs: one bad topic costs that message, not the link. (With
    # max_queued_messages 0, Mosquitto 2.0.11 disconnects instead: see mosquitto.conf.)
    async with login(broker, "ingest", "telemetry/#") as ingest, \
            login(broker, "apollo_csm") as csm:
        for qos in (0, 1, 0, 1):
            await csm.publish(topics.telemetry("soyuz", "tm"), b"DENIED", qos=qos)
        await csm.publish(topics.telemetry("apollo_csm", "hbr"), MARK, qos=1)
        assert await received_until_mark(ingest) == [("telemetry/live/apollo_csm/hbr", MARK)]


# -- telemetry -------------------------------------------------------------------------------


async def test_vehicle_publishes_only_its_own_telemetry(broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "telemetry/#") as ingest,
        login(broker, "soyuz") as soyuz,
        login(broker, "apollo_csm") as csm,
    ):
        # Soyuz tries to pass frames off as Apollo's, live and as a replay, then sends
        # its own.
        await soyuz.publish(topics.telemetry("apollo_csm", "hbr"), b"SPOOF", qos=1)
        await soyuz.publish(topics.telemetry("soyuz", "tm", session="s1"), b"SPOOF", qos=1)
        await soyuz.publish(topics.telemetry("soyuz", "tm"), MARK, qos=1)
        await csm.publish(topics.telemetry("apollo_csm", "hbr"), b"CSM FRAMES", qos=0)
        await csm.publish(topics.telemetry("apollo_csm", "hbr"), MARK, qos=1)
        got = await received_until_mark(ingest, marks=2)
    assert got == [
        ("telemetry/live/soyuz/tm", MARK),
        ("telemetry/live/apollo_csm/hbr", b"CSM FRAMES"),
        ("telemetry/live/apollo_csm/hbr", MARK),
    ]


async def test_only_the_replay_account_publishes_replays_and_never_live(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "telemetry/#") as ingest,
        login(broker, "replay") as replay,
        login(broker, "flight") as flight,
    ):
        await replay.publish(topics.telemetry("apollo_csm", "hbr"), b"AS LIVE", qos=1)
        await replay.publish(topics.telemetry("apollo_csm", "hbr", session="s7"), MARK, qos=1)
        await flight.publish(topics.telemetry("apollo_csm", "hbr", session="s8"), b"OP", qos=1)
        await flight.publish(topics.telemetry("apollo_csm", "hbr"), b"OP", qos=1)
        await replay.publish(topics.telemetry("apollo_csm", "hbr", session="s7"), MARK, qos=1)
        got = await received_until_mark(ingest, marks=2)
    assert got == [("telemetry/replay/s7/apollo_csm/hbr", MARK)] * 2


async def test_the_replay_account_announces_its_sessions_phase_only(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "sim/state/#") as ingest,
        login(broker, "replay") as replay,
        login(broker, "flight") as flight,
    ):
        await replay.publish(topics.sim_state("apollo_csm"), b"AS LIVE", qos=1)
        await replay.publish(topics.sim_state("apollo_csm", "training/d1"), b"DRILL", qos=1)
        await flight.publish(topics.sim_state("apollo_csm", "replay/s7"), b"OP", qos=1)
        await replay.publish(topics.sim_control("apollo_csm"), b"CONTROL", qos=1)
        await replay.publish(topics.sim_state("apollo_csm", "replay/s7"), MARK, qos=1)
        got = await received_until_mark(ingest)
    assert got == [("sim/state/replay/s7/apollo_csm", MARK)]


async def test_operators_and_instructor_cannot_read_telemetry(broker: MosquittoServer) -> None:
    async with (
        login(broker, "flight", "#") as flight,
        login(broker, "instructor", "#") as instructor,
        login(broker, "apollo_csm") as csm,
        login(broker, "ingest") as ingest,
    ):
        await csm.publish(topics.telemetry("apollo_csm", "hbr"), b"FRAMES", qos=1)
        await ingest.publish(topics.parameters("apollo_csm"), MARK, qos=1)
        assert await received_until_mark(flight) == [("params/live/apollo_csm", MARK)]
        assert await received_until_mark(instructor) == [("params/live/apollo_csm", MARK)]


# -- acknowledgements ------------------------------------------------------------------------


async def test_operator_cannot_acknowledge_in_another_operators_name(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "ack/#") as ingest,
        login(broker, "flight") as flight,
        login(broker, "eecom") as eecom,
    ):
        await flight.publish(topics.acknowledgements("eecom", "apollo_csm"), b"FORGED", qos=1)
        await flight.publish("ack/eecom", b"FORGED", qos=1)
        await flight.publish("ack", b"FORGED", qos=1)
        await flight.publish(topics.acknowledgements("flight", "apollo_csm"), MARK, qos=1)
        await eecom.publish(topics.acknowledgements("eecom", "apollo_csm"), MARK, qos=1)
        got = await received_until_mark(ingest, marks=2)
    assert got == [("ack/flight/apollo_csm", MARK), ("ack/eecom/apollo_csm", MARK)]
    # The identity the ingest reads from the topic is the one the broker authenticated.
    assert [topic.split("/")[1] for topic, _ in got] == ["flight", "eecom"]


async def test_accounts_that_are_not_operators_cannot_acknowledge(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "ack/#") as ingest,
        login(broker, "apollo_csm") as csm,
        login(broker, "replay") as replay,
        login(broker, "instructor") as instructor,
    ):
        # Each would match the operators' pattern ack/%u/#, but their own deny wins.
        await csm.publish(topics.acknowledgements("apollo_csm", "apollo_csm"), b"NO", qos=1)
        await replay.publish(topics.acknowledgements("replay", "soyuz"), b"NO", qos=1)
        await ingest.publish(topics.acknowledgements("ingest", "soyuz"), b"NO", qos=1)
        # The instructor is also an operator.
        await instructor.publish(topics.acknowledgements("instructor", "soyuz"), MARK, qos=1)
        got = await received_until_mark(ingest)
    assert got == [("ack/instructor/soyuz", MARK)]


# -- parameters, alarms, ingest health -------------------------------------------------------


async def test_only_the_ingest_publishes_parameters_and_alarms(broker: MosquittoServer) -> None:
    async with (
        login(broker, "flight", "params/#", "alarms/#", "ingest/#") as flight,
        login(broker, "eecom") as eecom,
        login(broker, "apollo_csm") as csm,
        login(broker, "ingest") as ingest,
    ):
        await eecom.publish(topics.alarms("apollo_csm"), b"FAKE ALARM", qos=1)
        await csm.publish(topics.parameters("apollo_csm"), b"FAKE PARAMS", qos=1)
        await ingest.publish(topics.parameters("apollo_csm"), b"params", qos=1)
        await ingest.publish(topics.alarms("soyuz", "replay/s1"), b"alarm", qos=1)
        await ingest.publish("ingest/health/ingest-1", MARK, qos=1)
        got = await received_until_mark(flight)
    assert got == [("params/live/apollo_csm", b"params"), ("alarms/replay/s1/soyuz", b"alarm"),
                   ("ingest/health/ingest-1", MARK)]


async def test_vehicles_do_not_receive_console_data(broker: MosquittoServer) -> None:
    async with (
        login(broker, "apollo_csm", "#") as csm,
        login(broker, "ingest") as ingest,
        login(broker, "instructor") as instructor,
    ):
        await ingest.publish(topics.parameters("apollo_csm"), b"params", qos=1)
        await ingest.publish(topics.alarms("apollo_csm"), b"alarm", qos=1)
        await instructor.publish(topics.sim_control("apollo_csm"), MARK, qos=1)
        got = await received_until_mark(csm)
    assert got == [("sim/control/apollo_csm", MARK)]


# -- simulator control -----------------------------------------------------------------------


async def test_only_the_instructor_reaches_simulator_control(broker: MosquittoServer) -> None:
    async with (
        login(broker, "apollo_csm", "sim/control/#") as csm,
        login(broker, "soyuz", "sim/control/#") as soyuz,
        login(broker, "flight") as flight,
        login(broker, "ingest") as ingest,
        login(broker, "instructor", "sim/reply/#") as instructor,
    ):
        await flight.publish(topics.sim_control("apollo_csm"), b"FAULT BY OPERATOR", qos=1)
        await ingest.publish(topics.sim_control("apollo_csm"), b"FAULT BY INGEST", qos=1)
        await csm.publish(topics.sim_control("soyuz"), b"FAULT BY CSM", qos=1)
        await instructor.publish(topics.sim_control("apollo_csm"), b"fault: o2 tank 2", qos=1)
        await instructor.publish(topics.sim_control("apollo_csm"), MARK, qos=1)
        await instructor.publish(topics.sim_control("soyuz"), MARK, qos=1)
        # Each vehicle hears only its own control topic, whatever it subscribed to.
        assert await received_until_mark(csm) == [
            ("sim/control/apollo_csm", b"fault: o2 tank 2"), ("sim/control/apollo_csm", MARK)]
        assert await received_until_mark(soyuz) == [("sim/control/soyuz", MARK)]
        # And the simulators answer the instructor under their own names only.
        await csm.publish("sim/reply/soyuz", b"FORGED REPLY", qos=1)
        await csm.publish("sim/reply/apollo_csm", MARK, qos=1)
        assert await received_until_mark(instructor) == [("sim/reply/apollo_csm", MARK)]


async def test_operators_cannot_hear_simulator_replies(broker: MosquittoServer) -> None:
    async with (
        login(broker, "flight", "sim/#", "params/#") as flight,
        login(broker, "apollo_csm") as csm,
        login(broker, "ingest") as ingest,
    ):
        await csm.publish("sim/reply/apollo_csm", b"reply", qos=1)
        await ingest.publish(topics.parameters("soyuz"), MARK, qos=1)
        assert await received_until_mark(flight) == [("params/live/soyuz", MARK)]


def test_deploy_config_runs_in_the_real_broker(mosquitto: MosquittoServer,
                                               tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, with only its addresses and paths replaced."""
    pw = write_password_file(tmp_path / "passwd", ACL_USERS)

    class DeployBroker(MosquittoServer):
        def config_lines(self) -> list[str]:
            out = []
            for raw in CONF_FILE.read_text().splitlines():
                line = raw.strip()
                key = line.split()[0] if line and not line.startswith("#") else ""
                if key == "listener":
                    line = f"listener {self.port} {self.host}"
                elif key == "password_file":
                    line = f"password_file {pw}"
                elif key == "acl_file":
                    line = f"acl_file {ACL_FILE}"
                elif key == "persistence_location":
                    line = f"persistence_location {self.data_dir}{os.sep}"
                elif key == "log_dest":
                    line = f"log_dest file {self.broker_log_path}"
                out.append(line)
            if os.geteuid() == 0:
                out.append("user root")
            return out

    async def check(server: MosquittoServer) -> None:
        async with (
            login(server, "ingest", "ack/#") as ingest,
            login(server, "flight") as flight,
        ):
            await flight.publish(topics.acknowledgements("eecom", "soyuz"), b"FORGED", qos=1)
            await flight.publish(topics.acknowledgements("flight", "soyuz"), MARK, qos=1)
            assert await received_until_mark(ingest) == [("ack/flight/soyuz", MARK)]
        with pytest.raises(aiomqtt.MqttCodeError):
            async with aiomqtt.Client(server.host, server.port, timeout=5):
                pass

    with DeployBroker(tmp_path / "deploy") as server:
        asyncio.run(check(server))
        log = server.broker_log_path.read_text()
    assert "Error" not in log, log


async def test_a_vehicle_announces_only_its_own_mission_state_to_the_ingest(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "ingest", "sim/state/#") as ingest,
        login(broker, "apollo_csm") as csm,
        login(broker, "flight") as flight,
    ):
        await csm.publish("sim/state/soyuz", b"SPOOF", qos=1)
        await flight.publish("sim/state/apollo_csm", b"SPOOF", qos=1)
        await csm.publish("sim/state/apollo_csm", MARK, qos=1)
        got = await received_until_mark(ingest)
    assert got == [("sim/state/apollo_csm", MARK)]


# -- drills ----------------------------------------------------------------------------------


async def test_the_instructor_flies_drills_under_the_training_subtree_only(
        broker: MosquittoServer) -> None:
    drill = topics.training("t1")
    async with (
        login(broker, "ingest", "telemetry/#", "sim/state/#") as ingest,
        login(broker, "instructor") as instructor,
    ):
        # A drill's ships may never pass for live or replayed ones.
        await instructor.publish(topics.telemetry("apollo_csm", "hbr"), b"AS LIVE", qos=1)
        await instructor.publish(topics.telemetry("apollo_csm", "hbr", session="s1"),
                                 b"AS REPLAY", qos=1)
        await instructor.publish(topics.sim_state("apollo_csm"), b"AS LIVE STATE", qos=1)
        await instructor.publish(topics.telemetry("apollo_csm", "hbr", source=drill),
                                 b"DRILL FRAMES", qos=1)
        await instructor.publish(topics.sim_state("apollo_csm", drill), MARK, qos=1)
        got = await received_until_mark(ingest)
    assert got == [("telemetry/training/t1/apollo_csm/hbr", b"DRILL FRAMES"),
                   ("sim/state/training/t1/apollo_csm", MARK)]


async def test_vehicles_and_operators_cannot_pose_as_a_drill(broker: MosquittoServer) -> None:
    drill = topics.training("t1")
    async with (
        login(broker, "ingest", "telemetry/#", "sim/state/#") as ingest,
        login(broker, "apollo_csm") as csm,
        login(broker, "flight") as flight,
    ):
        await flight.publish(topics.telemetry("apollo_csm", "hbr", source=drill), b"OP",
                             qos=1)
        await flight.publish(topics.sim_state("apollo_csm", drill), b"OP", qos=1)
        await csm.publish(topics.telemetry("apollo_csm", "hbr", source=drill), b"CSM", qos=1)
        await csm.publish(topics.sim_state("apollo_csm", drill), b"CSM", qos=1)
        await csm.publish(topics.telemetry("apollo_csm", "hbr"), MARK, qos=1)
        got = await received_until_mark(ingest)
    assert got == [("telemetry/live/apollo_csm/hbr", MARK)]


async def test_operators_watch_drills_but_only_the_instructor_steers_them(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "flight", "drill/#") as flight,
        login(broker, "instructor", "drill/#") as instructor,
        login(broker, "eecom") as eecom,
    ):
        # eecom's publish is acknowledged (QoS 1) only once the broker has queued it for
        # its subscribers: had it been let through it would reach the instructor before the
        # instructor's own marker, published after that acknowledgement.
        await eecom.publish("drill/control/t1", b"FORGED", qos=1)
        await eecom.publish("drill/status/t1", b"FORGED", qos=1)
        await instructor.publish("drill/control/t1", b'{"cmd": "start"}', qos=1)
        await instructor.publish("drill/status/t1", MARK, qos=1)
        assert await received_until_mark(flight) == [("drill/status/t1", MARK)]
        assert await received_until_mark(instructor) == [
            ("drill/control/t1", b'{"cmd": "start"}'), ("drill/status/t1", MARK)]


# -- calls in a drill (the console's call key) -------------------------------------------------


async def test_operators_call_only_in_their_own_name_and_only_the_instructor_hears(
        broker: MosquittoServer) -> None:
    async with (
        login(broker, "instructor", topics.drill_calls_subscription("t1")) as instructor,
        login(broker, "flight", "calls/#") as flight,
        login(broker, "eecom") as eecom,
    ):
        # The drill runner takes the caller from the topic: the broker's user, never another.
        await flight.publish(topics.drill_calls("eecom", "t1"), b"FORGED", qos=1)
        await flight.publish("calls/eecom", b"FORGED", qos=1)
        await eecom.publish(topics.drill_calls("eecom", "t1"), b"RCS OFF", qos=1)
        await flight.publish(topics.drill_calls("flight", "t1"), MARK, qos=1)
        got = await received_until_mark(instructor)
        # The instructor is an operator too: its own calls, under its own name only.
        await instructor.publish(topics.drill_calls("flight", "t1"), b"FORGED", qos=1)
        await instructor.publish(topics.drill_calls("instructor", "t1"), MARK, qos=1)
        got += await received_until_mark(instructor)
        # Another operator hears nobody's calls (a trainee must not learn them).
        await flight.publish(topics.drill_calls("flight", "t2"), b"UNHEARD", qos=1)
        await flight.publish(topics.acknowledgements("flight", "soyuz"), MARK, qos=1)
    assert got == [("calls/eecom/t1", b"RCS OFF"), ("calls/flight/t1", MARK),
                   ("calls/instructor/t1", MARK)]


async def test_accounts_that_are_not_operators_cannot_call(broker: MosquittoServer) -> None:
    async with (
        login(broker, "instructor", "calls/#") as instructor,
        login(broker, "apollo_csm") as csm,
        login(broker, "replay") as replay,
        login(broker, "ingest") as ingest,
        login(broker, "flight") as flight,
    ):
        # Each would match the operators' pattern calls/%u/#, but their own deny wins.
        # (The commanding service's deny: tests/integration/test_commanding_acl.py.)
        for name, client in (("apollo_csm", csm), ("replay", replay), ("ingest", ingest)):
            await client.publish(topics.drill_calls(name, "t1"), b"NO", qos=1)
        await flight.publish(topics.drill_calls("flight", "t1"), MARK, qos=1)
        got = await received_until_mark(instructor)
    assert got == [("calls/flight/t1", MARK)]
