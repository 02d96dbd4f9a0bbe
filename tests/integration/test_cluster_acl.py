"""The cluster's broker security: RabbitMQ's users and permissions, generated from the one
ACL (groundstation.deploy.rabbitmq_auth), give the rights tests/integration/
test_broker_acl.py proves for Mosquitto, on every node of the cluster.

RabbitMQ 3.10 refuses differently: a publish or a subscription the account may not make
closes its connection (Mosquitto drops it and keeps the connection). So a refusal is seen
as that close (`refused`), and proven harmless with a marker: after the refused message, a
permitted marker goes out on a new connection to the same node, and the subscriber must
receive the marker and nothing refused before it. The node had routed (or dropped) the
refused message before it closed the connection, and it forwards what it routes to another
node's queue over one ordered link, so a refused message let through would have arrived
first. No sleeping: every wait is for a message or for the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import pytest

from groundstation.core import topics
from groundstation.deploy.rabbitmq import RabbitMQCluster, RabbitMQNode
from tests.harness import CLUSTER_USERS, MARK, login, received_until_mark

USERS = CLUSTER_USERS


@pytest.fixture
def cluster(rabbitmq_secure: RabbitMQCluster) -> RabbitMQCluster:
    return rabbitmq_secure


async def refused(node: RabbitMQNode, user: str,
                  act: Callable[[aiomqtt.Client], Awaitable[Any]], timeout: float = 10,
                  identifier: str | None = None) -> None:
    """`user` does `act` on `node`; the broker must close the connection for it."""
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(login(node, user, password=USERS[user],
                                                       identifier=identifier))
        stack.push_async_exit(_ignore_disconnected)
        attempt = asyncio.create_task(act(client))
        try:
            with pytest.raises(aiomqtt.MqttError, match=r"[Dd]isconnected"):
                async with asyncio.timeout(timeout):
                    async for message in client.messages:
                        pytest.fail(f"{user} received {message.topic} instead of a refusal")
        finally:
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt


async def _ignore_disconnected(exc_type: Any, exc: Any, tb: Any) -> bool:
    return exc_type is not None and issubclass(exc_type, aiomqtt.MqttError)


def publish(topic: str, payload: bytes = b"DENIED") -> Callable[[aiomqtt.Client], Awaitable[Any]]:
    return lambda c: c.publish(topic, payload, qos=1)


def subscribe(topic: str) -> Callable[[aiomqtt.Client], Awaitable[Any]]:
    return lambda c: c.subscribe(topic, qos=1)


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [(None, None), ("flight", "eecom-pw"),
                                                ("flight", ""), ("nobody", "flight-pw"),
                                                ("guest", "guest")])
async def test_anonymous_unknown_and_wrong_passwords_are_refused_on_every_node(
        cluster: RabbitMQCluster, user: str | None, password: str | None) -> None:
    for node in cluster.nodes:
        with pytest.raises(aiomqtt.MqttCodeError):
            async with aiomqtt.Client(node.host, node.port, username=user, password=password,
                                      timeout=5):
                pass


async def test_every_account_logs_in_on_every_node(cluster: RabbitMQCluster) -> None:
    for node in cluster.nodes:
        for user in USERS:
            async with login(node, user, password=USERS[user]):
                pass


async def test_a_permitted_publish_is_not_taken_for_a_refusal(cluster: RabbitMQCluster) -> None:
    # The control for refused(): a publish the account may make keeps the connection open.
    with pytest.raises(TimeoutError):
        await refused(cluster.nodes[0], "soyuz", publish(topics.telemetry("soyuz", "tm")),
                      timeout=1)


async def test_a_client_subscribes_only_under_its_accounts_client_ids(
        cluster: RabbitMQCluster) -> None:
    """A client's subscription queue is named by its client id, and an account has only the
    queues of ids under its own name (rabbitmq_auth.own_queues, mqtt.account_client_id): a
    client under another account's name, or under none, cannot subscribe."""
    node = cluster.nodes[2]
    for identifier in ("eecom.console", "console-flight", "flightx.console"):
        await refused(node, "flight", subscribe("params/#"), identifier=identifier)
    async with login(node, "flight", "params/#", identifier="flight.console"):
        pass


# -- telemetry -------------------------------------------------------------------------------


async def test_vehicle_publishes_only_its_own_telemetry(cluster: RabbitMQCluster) -> None:
    a, b, c = cluster.nodes
    async with login(a, "ingest", "telemetry/#") as ingest:
        await refused(b, "soyuz", publish(topics.telemetry("apollo_csm", "hbr")))
        await refused(b, "soyuz", publish(topics.telemetry("soyuz", "tm", session="s1")))
        async with login(b, "soyuz") as soyuz:
            await soyuz.publish(topics.telemetry("soyuz", "tm"), MARK, qos=1)
        async with login(c, "apollo_csm") as csm:
            await csm.publish(topics.telemetry("apollo_csm", "hbr"), b"CSM FRAMES", qos=0)
            await csm.publish(topics.telemetry("apollo_csm", "hbr"), MARK, qos=1)
        got = await received_until_mark(ingest, marks=2, timeout=10)
    assert got == [
        ("telemetry/live/soyuz/tm", MARK),
        ("telemetry/live/apollo_csm/hbr", b"CSM FRAMES"),
        ("telemetry/live/apollo_csm/hbr", MARK),
    ]


async def test_only_the_replay_account_publishes_replays_and_never_live(
        cluster: RabbitMQCluster) -> None:
    a, b, _ = cluster.nodes
    async with login(a, "ingest", "telemetry/#") as ingest:
        await refused(b, "replay", publish(topics.telemetry("apollo_csm", "hbr")))
        await refused(b, "flight", publish(topics.telemetry("apollo_csm", "hbr",
                                                            session="s8")))
        async with login(b, "replay") as replay:
            await replay.publish(topics.telemetry("apollo_csm", "hbr", session="s7"), MARK,
                                 qos=1)
        got = await received_until_mark(ingest, timeout=10)
    assert got == [("telemetry/replay/s7/apollo_csm/hbr", MARK)]


async def test_operators_vehicles_and_the_instructor_cannot_read_telemetry(
        cluster: RabbitMQCluster) -> None:
    node = cluster.nodes[1]
    for user in ("flight", "instructor", "soyuz"):
        await refused(node, user, subscribe("telemetry/#"))
        await refused(node, user, subscribe("#"))  # no filtering: refused whole


# -- acknowledgements ------------------------------------------------------------------------


async def test_operator_acknowledges_only_as_itself(cluster: RabbitMQCluster) -> None:
    a, b, c = cluster.nodes
    async with login(a, "ingest", "ack/#") as ingest:
        await refused(b, "flight", publish(topics.acknowledgements("eecom", "apollo_csm")))
        await refused(b, "flight", publish("ack/eecom"))
        await refused(b, "flight", publish("ack"))
        for user in ("apollo_csm", "replay", "ingest"):  # not operators
            await refused(c, user, publish(topics.acknowledgements(user, "soyuz")))
        async with login(b, "flight") as flight:
            await flight.publish(topics.acknowledgements("flight", "apollo_csm"), MARK, qos=1)
        async with login(c, "instructor") as instructor:  # an operator too
            await instructor.publish(topics.acknowledgements("instructor", "soyuz"), MARK,
                                     qos=1)
        got = await received_until_mark(ingest, marks=2, timeout=10)
    assert got == [("ack/flight/apollo_csm", MARK), ("ack/instructor/soyuz", MARK)]


# -- simulator control -----------------------------------------------------------------------


async def test_only_the_instructor_controls_the_simulators(cluster: RabbitMQCluster) -> None:
    a, b, c = cluster.nodes
    async with login(a, "apollo_csm", topics.sim_control("apollo_csm")) as csm:
        for user in ("flight", "ingest", "soyuz", "replay", "commanding"):
            await refused(b, user, publish(topics.sim_control("apollo_csm")))
        async with login(c, "instructor", "sim/reply/#") as instructor:
            await instructor.publish(topics.sim_control("apollo_csm"), b"fault: o2 tank 2",
                                     qos=1)
            await instructor.publish(topics.sim_control("apollo_csm"), MARK, qos=1)
            assert await received_until_mark(csm, timeout=10) == [
                ("sim/control/apollo_csm", b"fault: o2 tank 2"),
                ("sim/control/apollo_csm", MARK)]
            # The ship answers the instructor under its own name only.
            await refused(a, "apollo_csm", publish("sim/reply/soyuz"))
            await csm.publish("sim/reply/apollo_csm", MARK, qos=1)
            assert await received_until_mark(instructor, timeout=10) == [
                ("sim/reply/apollo_csm", MARK)]
    # A vehicle hears only its own control topic; operators hear no replies.
    await refused(b, "apollo_csm", subscribe("sim/control/#"))
    await refused(b, "apollo_csm", subscribe(topics.sim_control("soyuz")))
    await refused(b, "flight", subscribe("sim/reply/#"))


# -- console data ------------------------------------------------------------------------------


async def test_only_the_ingest_publishes_parameters_and_alarms(cluster: RabbitMQCluster) -> None:
    a, b, c = cluster.nodes
    async with login(a, "flight", "params/#", "alarms/#", "ingest/#") as flight:
        await refused(b, "eecom", publish(topics.alarms("apollo_csm")))
        await refused(b, "apollo_csm", publish(topics.parameters("apollo_csm")))
        async with login(b, "ingest") as ingest:
            await ingest.publish(topics.parameters("apollo_csm"), b"params", qos=1)
            await ingest.publish(topics.alarms("soyuz", "replay/s1"), b"alarm", qos=1)
            await ingest.publish("ingest/health/ingest-1", MARK, qos=1)
        got = await received_until_mark(flight, timeout=10)
    assert got == [("params/live/apollo_csm", b"params"), ("alarms/replay/s1/soyuz", b"alarm"),
                   ("ingest/health/ingest-1", MARK)]
    await refused(c, "apollo_csm", subscribe("params/#"))  # vehicles get no console data
