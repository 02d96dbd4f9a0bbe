"""Failover in the one MQTT adapter: a ship (the simulators' SimRunner) and a subscriber,
both given the cluster's nodes as their brokers (MqttConfig hosts), are on the first node;
that node is killed (SIGKILL, a crash); both move to another node and telemetry flows
again, within a measured time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from groundstation.config import MqttConfig
from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import RabbitMQCluster
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
