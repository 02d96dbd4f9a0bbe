"""The RabbitMQ cluster fixture: three nodes on loopback form one cluster, serve MQTT on
every node, survive a node killed and started again, and leave no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest

from groundstation.deploy.rabbitmq import RabbitMQCluster
from groundstation.deploy.rabbitmq_auth import apply_accounts
from groundstation.deploy.servers import LOOPBACK, _accepts
from tests.harness import start_or_skip

USERS = {"flight": "flight-pw", "ingest": "ingest-pw"}


def processes_naming(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in args:
            found.append(f"{proc.name}: {args[:200]}")
    return found


def test_three_nodes_form_one_cluster(rabbitmq_cluster: RabbitMQCluster) -> None:
    cluster = rabbitmq_cluster
    names = {n.nodename for n in cluster.nodes}
    assert len(names) == 3
    for node in cluster.nodes:
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        assert set(status["running_nodes"]) == names
        # Its own ports, loopback only.
        assert len({node.port, node.amqp_port, node.dist_port}) == 3
    assert len(set(cluster.mqtt_hosts)) == 3
    print(f"\nnodes up in {cluster.last_start_seconds:.1f} s, joined in "
          f"{cluster.last_join_seconds:.1f} s")


async def test_mqtt_on_every_node_reaches_subscribers_on_every_other(
        rabbitmq_cluster: RabbitMQCluster) -> None:
    cluster = rabbitmq_cluster
    apply_accounts(cluster, USERS)
    subscribers = [aiomqtt.Client(n.host, n.port, username="ingest", password="ingest-pw",
                                  identifier=f"ingest.sub-{i}-{os.getpid()}", timeout=10)
                   for i, n in enumerate(cluster.nodes)]
    for s in subscribers:
        await s.__aenter__()
    try:
        for s in subscribers:
            await s.subscribe("ack/#", qos=1)
        first = cluster.nodes[0]
        async with aiomqtt.Client(first.host, first.port, username="flight",
                                  password="flight-pw", timeout=10) as flight:
            await flight.publish("ack/flight/soyuz", b"across the cluster", qos=1)
        for s in subscribers:
            msg = await asyncio.wait_for(anext(s.messages), 10)
            assert (str(msg.topic), msg.payload) == ("ack/flight/soyuz", b"across the cluster")
    finally:
        for s in subscribers:
            await s.__aexit__(None, None, None)


def test_a_killed_node_comes_back_into_the_cluster(rabbitmq_cluster: RabbitMQCluster) -> None:
    node = rabbitmq_cluster.nodes[2]
    node.kill()
    assert not _accepts(LOOPBACK, node.port)
    others = [n for n in rabbitmq_cluster.nodes if n is not node]
    status = json.loads(others[0].ctl("cluster_status", "--formatter", "json"))
    assert node.nodename not in status["running_nodes"]
    node.start()
    print(f"\nnode started again in {node.last_start_seconds:.1f} s")
    status = json.loads(others[0].ctl("cluster_status", "--formatter", "json"))
    assert set(status["running_nodes"]) == {n.nodename for n in rabbitmq_cluster.nodes}


def test_a_one_node_cluster_starts_stops_and_leaves_nothing_running(
        rabbitmq_cluster: RabbitMQCluster, tmp_path: Path) -> None:
    # rabbitmq_cluster: only to skip (or fail under CI) without rabbitmq-server.
    cluster = RabbitMQCluster(1, tmp_path / "one")
    start_or_skip(cluster)
    try:
        node = cluster.nodes[0]
        assert node.pid is not None
        assert processes_naming(str(cluster.data_dir)), "the node names its directory"
        print(f"\none node up in {cluster.last_start_seconds:.1f} s")
        assert cluster.last_start_seconds is not None and cluster.last_start_seconds < 120
    finally:
        cluster.close()
    assert processes_naming(str(cluster.data_dir)) == []
    assert not _accepts(LOOPBACK, cluster.epmd.port), "its port mapper is gone"
    assert not _accepts(LOOPBACK, cluster.nodes[0].port)


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    from groundstation.deploy.servers import BinaryNotFoundError

    cluster = RabbitMQCluster(1, tmp_path, binary=str(tmp_path / "no-rabbitmq"))
    with pytest.raises(BinaryNotFoundError, match="apt-get install rabbitmq-server"):
        cluster.start()
    assert not cluster.epmd.is_running()


def test_stop_ends_a_port_mapper_a_node_started_by_itself(rabbitmq_cluster: RabbitMQCluster,
                                                          tmp_path: Path) -> None:
    # rabbitmq_cluster: only to skip (or fail under CI) without rabbitmq-server (and epmd).
    cluster = RabbitMQCluster(1, tmp_path / "c")
    port = cluster.epmd.port
    subprocess.run([cluster.epmd.resolve_binary(), "-port", str(port), "-address", LOOPBACK,
                    "-daemon"], check=True, timeout=10)
    deadline = time.monotonic() + 10
    while not _accepts(LOOPBACK, port):
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    cluster.close()
    assert not _accepts(LOOPBACK, port)
