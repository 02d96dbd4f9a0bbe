"""Failover in the one MQTT adapter: a ship (the simulators' SimRunner) and a subscriber,
both given the cluster's nodes as their brokers (MqttConfig hosts), are on the first node;
that node is killed (SIGKILL, a crash); both move to another node and telemetry flows
again, within a measured time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from groundstation import cli
from groundstation.config import MqttConfig
from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.rabbitmq import RabbitMQCluster, RabbitMQNode
from groundstation.mqtt import MqttClient, Received
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.harness import CLUSTER_USERS, flying

A = tl.APOLLO
FAILOVER_BUDGET_S = 10.0  # kill to the first frame on the new connection, at most


def account(cluster: RabbitMQCluster, user: str) -> MqttConfig:
    return MqttConfig(hosts=cluster.mqtt_hosts, username=user,  # type: ignore[call-arg]
                      password=CLUSTER_USERS[user], reconnect_max_s=2)


async def test_ship_and_subscriber_move_to_another_node_when_theirs_is_killed(
        rabbitmq_secure: RabbitMQCluster, caplog: pytest.LogCaptureFixture) -> None:
    cluster = rabbitmq_secure
    defs: dict[str, VehicleDefinition] = load_all()
    probe = Mission(tl.hms(55), seed=1, definitions=defs)
    start = probe.find_coverage(A, probe.t, 300)  # in contact for the whole test
    runner = SimRunner(Mission(start, seed=1, definitions=defs), [defs[A]],
                       RunnerOptions(mqtt=account(cluster, "apollo_csm"), speed=1.0))
    frames: list[tuple[float, int]] = []  # (when, which connection of the subscriber)
    arrived = asyncio.Event()

    def on_message(m: Received) -> None:
        frames.append((time.monotonic(), m.generation))
        arrived.set()

    subscriber = MqttClient(account(cluster, "ingest"), name="ground",
                            subscriptions=[f"telemetry/live/{A}/#"], on_message=on_message)
    stop = asyncio.Event()

    async def next_frame(generation: int, timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while True:
                arrived.clear()
                for when, gen in frames:
                    if gen >= generation:
                        return when
                await arrived.wait()

    with caplog.at_level(logging.INFO, logger="groundstation.mqtt"):
        ground = asyncio.create_task(subscriber.run(stop=stop))
        try:
            async with flying(runner):
                await next_frame(1, 15)
                ship = runner.publisher.client
                assert (ship.current, subscriber.current) == (0, 0)  # both on the first node
                before = subscriber.generation
                killed = time.monotonic()
                cluster.nodes[0].kill()
                back = await next_frame(before + 1, 30)
                failover = back - killed
                assert ship.connected and subscriber.connected
                assert ship.current != 0 and subscriber.current != 0
                assert ship.connections == 2 and subscriber.connections == 2
                print(f"\nkilled {cluster.nodes[0].nodename}: ship on "
                      f"{ship.address}, subscriber on {subscriber.address}; frames "
                      f"again {failover:.2f} s after the kill")
                assert failover < FAILOVER_BUDGET_S
        finally:
            stop.set()
            await asyncio.wait_for(ground, 10)
    first = cluster.nodes[0].mqtt_address
    assert f"broker mqtt://{first}: connection lost" in caplog.text
    assert f"trying mqtt://{cluster.nodes[1].mqtt_address} in" in caplog.text
    assert f"connected to mqtt://{cluster.nodes[1].mqtt_address} again" in caplog.text


async def test_a_persistent_session_keeps_its_messages_across_a_node_killed(
        rabbitmq_secure: RabbitMQCluster) -> None:
    """What the ingest needs (clean_session off): its subscription queue is a quorum queue,
    replicated on every node, so QoS 1 messages queued while it was away survive the node
    it had been on, and it reads them from another."""
    cluster = rabbitmq_secure
    first, second, _ = cluster.nodes
    client_id = f"gs-test-persistent-{time.monotonic_ns() % 10**9}"
    ingest = MqttClient(account(cluster, "ingest"), name="ingest", client_id=client_id,
                        clean_session=False, subscriptions=["ack/#"])
    async with ingest.connect():
        assert ingest.address == f"mqtt://{first.mqtt_address}"
    queues = cluster.ctl("list_queues", "name", "type", "--quiet", "--no-table-headers")
    assert any(client_id in line and "quorum" in line for line in queues.splitlines()), queues
    flight = MqttClient(MqttConfig(host=second.host, port=second.port, username="flight",  # type: ignore[call-arg]
                                   password=CLUSTER_USERS["flight"]), name="flight")
    async with flight.connect() as conn:
        for n in range(3):
            await conn.publish(topics.acknowledgements("flight", "soyuz"), f"{n}".encode())
    first.kill()
    got: list[bytes] = []
    async with ingest.connect() as conn:  # the first node refuses: on to the second
        assert ingest.address == f"mqtt://{second.mqtt_address}"
        async with asyncio.timeout(15):
            async for m in conn.messages():
                got.append(m.payload)
                if len(got) == 3:
                    break
    assert got == [b"0", b"1", b"2"]


async def test_retained_messages_are_kept_by_the_node_they_were_published_on(
        rabbitmq_secure: RabbitMQCluster) -> None:
    """RabbitMQ 3.10 keeps retained messages per node (the MQTT plugin's local store): a
    subscriber on another node does not get them. What the station retains (mission state,
    the commanding history, active alarms) is therefore copied to every node by the adapter
    with [mqtt] retain_on_all_hosts (tests/integration/test_cluster_retained.py)."""
    cluster = rabbitmq_secure
    first, second, _ = cluster.nodes
    # A drill's ship state (the instructor's), under a drill of its own: nothing else in
    # the run retains there.
    state = topics.sim_state(A, topics.training(f"retained-{time.monotonic_ns()}"))

    def on(node: RabbitMQNode, user: str, *subscriptions: str) -> MqttClient:
        return MqttClient(MqttConfig(host=node.host, port=node.port, username=user,  # type: ignore[call-arg]
                                     password=CLUSTER_USERS[user]), name=user,
                          subscriptions=subscriptions)

    def ship(node: RabbitMQNode) -> MqttClient:
        return on(node, "instructor")

    def ground(node: RabbitMQNode) -> MqttClient:
        return on(node, "ingest", state)

    async with ship(first).connect() as conn:
        await conn.publish(state, b"RETAINED", retain=True)

    async def first_message(node: RabbitMQNode) -> bytes:
        async with ground(node).connect() as sub:
            # After the subscription (and its retained message, if any), a marker.
            async with ship(node).connect() as conn:
                await conn.publish(state, b"MARK")
            async with asyncio.timeout(10):
                async for m in sub.messages():
                    return m.payload
        raise AssertionError("no message")

    assert await first_message(first) == b"RETAINED"
    assert await first_message(second) == b"MARK"  # not replicated to the other nodes
    async with ship(first).connect() as conn:  # clear it, for the tests after
        await conn.publish(state, b"", retain=True)


async def test_the_sim_command_flies_on_the_cluster_from_a_list_with_a_dead_broker_first(
        rabbitmq_secure: RabbitMQCluster, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`groundstation sim --mqtt-hosts`, as a vehicle account: the first broker of the list
    is not there, the ship flies on the next; the ground, on another node, hears it."""
    cluster = rabbitmq_secure
    monkeypatch.setenv("GS_MQTT_USERNAME", "soyuz")
    monkeypatch.setenv("GS_MQTT_PASSWORD", CLUSTER_USERS["soyuz"])
    hosts = ",".join(["127.0.0.1:1", *cluster.mqtt_hosts[:2]])
    frames: list[int] = []
    subscribed = asyncio.Event()
    ground = MqttClient(MqttConfig(hosts=[cluster.mqtt_hosts[2]], username="ingest",  # type: ignore[call-arg]
                                   password=CLUSTER_USERS["ingest"]), name="ground",
                        subscriptions=["telemetry/live/soyuz/#"],
                        on_connect=lambda _: subscribed.set(),
                        on_message=lambda m: frames.append(len(m.payload)))
    stop = asyncio.Event()
    listening = asyncio.create_task(ground.run(stop=stop))
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        code = await asyncio.to_thread(cli.main, [
            "sim", "soyuz", "--mqtt-hosts", hosts, "--start", "soyuz-launch-2m",
            "--until", "soyuz-launch+1m", "--speed", "120"])
    finally:
        stop.set()
        await asyncio.wait_for(listening, 10)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "soyuz: 1800 live and 0 playback frames" in out
    assert f"to the first that answers of mqtt://127.0.0.1:1, mqtt://{cluster.mqtt_hosts[0]}" \
        in out
    assert frames, "the ground heard nothing"
