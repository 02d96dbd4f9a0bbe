"""Retained state on every node of the RabbitMQ cluster ([mqtt] retain_on_all_hosts): RabbitMQ
3.10 keeps a retained message on the node it was published on only, so the one MQTT adapter
copies each retained message to the other nodes, and again to a node that comes back."""

from __future__ import annotations

import asyncio
import time

from groundstation.config import MqttConfig
from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.deploy.rabbitmq import RabbitMQCluster, RabbitMQNode
from groundstation.mqtt import MqttClient
from tests.harness import CLUSTER_USERS

A = tl.APOLLO
MARK = b"MARK"


def state_topic() -> str:
    # A drill's ship state (the instructor's), under a drill of its own: nothing else in
    # the run retains there.
    return topics.sim_state(A, topics.training(f"everywhere-{time.monotonic_ns()}"))


def instructor(cluster: RabbitMQCluster, *, copies: bool) -> MqttClient:
    """The publisher of retained state, given every node (it connects to the first)."""
    config = MqttConfig(hosts=cluster.mqtt_hosts, username="instructor",  # type: ignore[call-arg]
                        password=CLUSTER_USERS["instructor"], reconnect_max_s=2,
                        retain_on_all_hosts=copies)
    return MqttClient(config, name="instructor")


def on(node: RabbitMQNode, user: str, *subscriptions: str) -> MqttClient:
    return MqttClient(MqttConfig(host=node.host, port=node.port, username=user,  # type: ignore[call-arg]
                                 password=CLUSTER_USERS[user]), name=user,
                      subscriptions=subscriptions)


async def retained_on(node: RabbitMQNode, topic: str, *, gone: bool = False
                      ) -> bytes | None:
    """What a fresh subscriber on `node` holds for `topic`: its retained value, or None when
    the marker published after the subscription comes first. With `gone`, once its
    subscription queue is deleted too (the node deletes it only after the connection is
    closed), for a node about to be killed: RabbitMQ 3.10 drops the connection of anyone
    publishing to a queue of a dead node (its MQTT plugin does not expect the nack)."""
    subscriber = on(node, "ingest", topic)
    async with subscriber.connect() as sub:
        async with on(node, "instructor").connect() as conn:
            await conn.publish(topic, MARK)
        async with asyncio.timeout(10):
            async for m in sub.messages():
                got = None if m.payload == MARK else m.payload
                break
            else:
                raise AssertionError("no message, not even the marker")
    while gone and subscriber.client_id in await asyncio.to_thread(
            node.ctl, "list_queues", "--local", "name", "--quiet", "--no-table-headers"):
        pass
    return got


async def test_retained_state_published_on_one_node_is_on_every_node(
        rabbitmq_secure: RabbitMQCluster) -> None:
    cluster = rabbitmq_secure
    topic = state_topic()
    ship = instructor(cluster, copies=True)
    async with ship.connect() as conn:
        assert ship.current == 0
        await conn.publish(topic, b"STATE", retain=True)
        async with asyncio.timeout(20):
            await ship.retained_everywhere()
        assert [await retained_on(n, topic) for n in cluster.nodes] == [b"STATE"] * 3
        # A clear goes everywhere too (and leaves nothing for the tests after).
        await conn.publish(topic, b"", retain=True)
        async with asyncio.timeout(20):
            await ship.retained_everywhere()
        assert [await retained_on(n, topic) for n in cluster.nodes] == [None] * 3


async def test_a_node_that_was_down_comes_back_with_the_new_value(
        rabbitmq_secure: RabbitMQCluster) -> None:
    cluster = rabbitmq_secure
    third = cluster.nodes[2]
    topic = state_topic()
    connected = asyncio.Event()
    ship = instructor(cluster, copies=True)
    ship.on_connect = lambda _: connected.set()
    stop = asyncio.Event()
    running = asyncio.create_task(ship.run(stop=stop))
    try:
        await asyncio.wait_for(connected.wait(), 15)
        assert ship.current == 0
        await ship.publish(topic, b"OLD", retain=True)
        async with asyncio.timeout(20):
            await ship.retained_everywhere()
        assert await retained_on(third, topic, gone=True) == b"OLD"
        third.kill()
        began = time.monotonic()
        await ship.publish(topic, b"NEW", retain=True)
        assert time.monotonic() - began < 5  # the dead node never holds the publisher up
        await asyncio.to_thread(third.start)
        async with asyncio.timeout(60):
            await ship.retained_everywhere()
        assert await retained_on(third, topic) == b"NEW"  # not the OLD it kept on disk
        assert ship.connections == 1 and ship.failures == 0  # its own connection untouched
        await ship.publish(topic, b"", retain=True)
        async with asyncio.timeout(20):
            await ship.retained_everywhere()
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        if not third.is_running():  # the cluster is the whole run's
            await asyncio.to_thread(third.start)
        await asyncio.to_thread(cluster.check_members)


async def test_without_the_setting_retained_state_stays_on_its_node(
        rabbitmq_secure: RabbitMQCluster) -> None:
    cluster = rabbitmq_secure
    first, second, _ = cluster.nodes
    topic = state_topic()
    ship = instructor(cluster, copies=False)
    async with ship.connect() as conn:
        await conn.publish(topic, b"STATE", retain=True)
        await asyncio.wait_for(ship.retained_everywhere(), 1)  # no copies to wait for
        assert await retained_on(first, topic) == b"STATE"
        assert await retained_on(second, topic) is None  # the marker came first
        await conn.publish(topic, b"", retain=True)
