"""The command path's security in the real Mosquitto with the repository's ACL: a request
only in one's own name, the ships' uplinks only from the commanding service, each ship
hears only its own, answers only as itself, and only the service publishes the stages.
Non-delivery is proven by the marker pattern (tests/test_broker_acl.py's docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation.core import topics
from groundstation.deploy.servers import MosquittoServer
from tests.commanding_helpers import USERS
from tests.harness import MARK, login, received_until_mark, secure_mosquitto

APOLLO, SOYUZ = "apollo_csm", "soyuz"
DRILL = "training/d1"


@pytest.fixture
def broker(mosquitto: MosquittoServer, tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


def _login(broker: MosquittoServer, user: str, *subs: str):  # type: ignore[no-untyped-def]
    return login(broker, user, *subs, password=USERS[user])


async def test_a_request_only_in_ones_own_name_and_never_from_a_ship_or_a_service(
        broker: MosquittoServer) -> None:
    async with (
        _login(broker, "commanding", "cmd/request/#", "params/#") as service,
        _login(broker, "eecom") as eecom,
        _login(broker, APOLLO) as csm,
        _login(broker, "ingest") as ingest,
        _login(broker, "replay") as replay,
    ):
        # eecom poses as flight, then asks as eecom.
        await eecom.publish(topics.command_requests("flight", APOLLO), b"FORGED", qos=1)
        await eecom.publish(topics.command_requests("eecom", APOLLO), MARK, qos=1)
        # The ship, the ingest and the replay tool under their own names: no operators.
        await csm.publish(topics.command_requests(APOLLO, APOLLO), b"SHIP", qos=1)
        await csm.publish(topics.telemetry(APOLLO, "hbr"), b"x", qos=1)  # not the marker's
        await ingest.publish(topics.command_requests("ingest", APOLLO), b"INGEST", qos=1)
        await ingest.publish(topics.parameters(APOLLO), MARK, qos=1)
        await replay.publish(topics.command_requests("replay", APOLLO), b"REPLAY", qos=1)
        await replay.publish(topics.command_requests("eecom", APOLLO), b"REPLAY2", qos=1)
        await ingest.publish(topics.parameters(APOLLO), MARK, qos=1)
        got = await received_until_mark(service, marks=3)
    assert got == [(topics.command_requests("eecom", APOLLO), MARK),
                   (topics.parameters(APOLLO), MARK), (topics.parameters(APOLLO), MARK)]


async def test_only_the_service_reaches_the_ships_uplinks(broker: MosquittoServer) -> None:
    async with (
        _login(broker, APOLLO, topics.command_uplink(APOLLO)) as csm,
        _login(broker, "commanding") as service,
        _login(broker, "eecom") as eecom,
        _login(broker, "instructor") as instructor,
        _login(broker, "ingest") as ingest,
        _login(broker, SOYUZ) as soyuz,
    ):
        for who in (eecom, instructor, ingest, soyuz):
            await who.publish(topics.command_uplink(APOLLO), b"FORGED UPLINK", qos=1)
        await service.publish(topics.command_uplink(APOLLO), MARK, qos=1)
        got = await received_until_mark(csm)
    assert got == [(topics.command_uplink(APOLLO), MARK)]


async def test_a_ship_hears_only_its_own_uplink_and_answers_only_as_itself(
        broker: MosquittoServer) -> None:
    async with (
        _login(broker, SOYUZ, "cmd/uplink/#") as soyuz,
        _login(broker, "commanding", "cmd/ack/#") as service,
        _login(broker, APOLLO) as csm,
        _login(broker, "eecom") as eecom,
    ):
        await service.publish(topics.command_uplink(APOLLO), b"FOR APOLLO", qos=1)
        await service.publish(topics.command_uplink(SOYUZ, DRILL), b"FOR THE DRILL", qos=1)
        await service.publish(topics.command_uplink(SOYUZ), MARK, qos=1)
        heard = await received_until_mark(soyuz)
        await csm.publish(topics.command_acks(SOYUZ), b"APOLLO AS SOYUZ", qos=1)
        await csm.publish(topics.command_acks(APOLLO, DRILL), b"APOLLO AS A DRILL", qos=1)
        await eecom.publish(topics.command_acks(APOLLO), b"EECOM AS APOLLO", qos=1)
        await eecom.publish(topics.command_acks("eecom"), b"no ship: harmless", qos=1)
        await csm.publish(topics.command_acks(APOLLO), MARK, qos=1)
        acks = await received_until_mark(service)
    assert heard == [(topics.command_uplink(SOYUZ), MARK)]
    assert acks == [(topics.command_acks("eecom"), b"no ship: harmless"),
                    (topics.command_acks(APOLLO), MARK)]


async def test_a_drills_ships_answer_through_the_instructor(broker: MosquittoServer) -> None:
    async with (
        _login(broker, "instructor", "cmd/uplink/#") as instructor,
        _login(broker, "commanding", "cmd/ack/#") as service,
    ):
        await service.publish(topics.command_uplink(SOYUZ), b"LIVE", qos=1)
        await service.publish(topics.command_uplink(SOYUZ, DRILL), MARK, qos=1)
        heard = await received_until_mark(instructor)
        await instructor.publish(topics.command_acks(SOYUZ), b"AS A LIVE SHIP", qos=1)
        await instructor.publish(topics.command_acks(SOYUZ, DRILL), MARK, qos=1)
        acks = await received_until_mark(service)
    assert heard == [(topics.command_uplink(SOYUZ, DRILL), MARK)]
    assert acks == [(topics.command_acks(SOYUZ, DRILL), MARK)]


async def test_only_the_service_publishes_stages_and_replies(broker: MosquittoServer) -> None:
    async with (
        _login(broker, "flight", "cmd/events/#", "cmd/history/#", "cmd/replies/#") as flight,
        _login(broker, SOYUZ, "cmd/events/#", "cmd/replies/#", "cmd/history/#",
               topics.command_uplink(SOYUZ)) as soyuz,
        _login(broker, "eecom") as eecom,
        _login(broker, "replay") as replay,
        _login(broker, "commanding") as service,
    ):
        await eecom.publish(topics.command_events(APOLLO), b"FORGED EVENT", qos=1)
        await eecom.publish(topics.command_history(APOLLO), b"FORGED HISTORY", qos=1)
        await eecom.publish(topics.command_replies("flight"), b"FORGED REPLY", qos=1)
        await replay.publish(topics.command_events(APOLLO), b"REPLAY AS LIVE", qos=1)
        await replay.publish(topics.command_events(APOLLO, "replay/s1"), b"REPLAYED", qos=1)
        await service.publish(topics.command_events(APOLLO, "replay/s1"), b"NOT OURS", qos=1)
        await service.publish(topics.command_replies("eecom"), b"NOT YOURS", qos=1)
        await service.publish(topics.command_replies("flight"), b"YOURS", qos=1)
        await service.publish(topics.command_events(APOLLO), MARK, qos=1)
        got = await received_until_mark(flight)
        # A ship reads no console traffic: none of it before the marker on its uplink.
        await service.publish(topics.command_replies(SOYUZ), b"A SHIP", qos=1)
        await service.publish(topics.command_events(SOYUZ), b"EVENT", qos=1)
        await service.publish(topics.command_history(SOYUZ), b"HISTORY", qos=1)
        await service.publish(topics.command_uplink(SOYUZ), MARK, qos=1)
        ship = await received_until_mark(soyuz)
    assert ship == [(topics.command_uplink(SOYUZ), MARK)]
    assert got == [(topics.command_events(APOLLO, "replay/s1"), b"REPLAYED"),
                   (topics.command_replies("flight"), b"YOURS"),
                   (topics.command_events(APOLLO), MARK)]


async def test_the_service_makes_no_call_in_a_drill(broker: MosquittoServer) -> None:
    async with (
        _login(broker, "instructor", "calls/#") as instructor,
        _login(broker, "commanding") as service,
        _login(broker, "eecom") as eecom,
    ):
        await service.publish(topics.drill_calls("commanding", "t1"), b"NO", qos=1)
        await eecom.publish(topics.drill_calls("eecom", "t1"), MARK, qos=1)
        got = await received_until_mark(instructor)
    assert got == [(topics.drill_calls("eecom", "t1"), MARK)]
