"""The clustered ingest's pure parts: partitions and their routing keys, a decoder going on
from another process's position, a partition's handed-over alarm state, [cluster] config."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from groundstation.config import ConfigError, load
from groundstation.core import partitions, topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.ingest.cluster import PartitionStates
from groundstation.ingest.stream import Stream
from tests.paths import MINI

T0 = 174_845_349_000_000_000
PERIOD = 20_000_000


@pytest.fixture(scope="module")
def mini() -> VehicleDefinition:
    return load_definition(MINI)


def frames(mini: VehicleDefinition, first: int, n: int, **values: Any) -> np.ndarray:
    return FrameEncoder(mini).encode({"cabin_press": 5.0, "hatch": "CLOSED", "temp": 66.0,
                                      **values}, n, start_counter=1 + first % 50)


def times(first: int, n: int) -> np.ndarray:
    return T0 + (first + np.arange(n, dtype=np.int64)) * PERIOD


# --- partitions ------------------------------------------------------------------------------


def test_a_vehicles_topics_of_every_source_route_to_its_partition_only() -> None:
    keys = partitions.binding_keys("soyuz")
    routed = [partitions.routing_key(t) for t in (
        topics.telemetry("soyuz", "tm"), topics.telemetry("soyuz", "tm", source="replay/p1"),
        topics.telemetry("soyuz", "tm", source="training/d7"),
        topics.acknowledgements("flight", "soyuz"))]
    assert routed == ["telemetry.live.soyuz.tm", "telemetry.replay.p1.soyuz.tm",
                      "telemetry.training.d7.soyuz.tm", "ack.flight.soyuz"]
    assert all(any(_matches(k, r) for k in keys) for r in routed)
    others = [partitions.routing_key(t) for t in (
        topics.telemetry("apollo_csm", "hbr"), topics.acknowledgements("soyuz", "apollo_csm"),
        topics.telemetry("soyuz_2", "tm"))]
    assert not any(_matches(k, r) for k in keys for r in others)
    assert partitions.topic_of("telemetry.live.soyuz.tm") == topics.telemetry("soyuz", "tm")


def _matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, '*' one word, '#' any (none here)."""
    p, k = pattern.split("."), key.split(".")
    return len(p) == len(k) and all(a in ("*", b) for a, b in zip(p, k, strict=True))


def test_partitions_are_stable_and_spread_a_fleet() -> None:
    vehicles = [f"apollo_csm-{n}" for n in range(1, 33)] + ["apollo_csm", "soyuz"]
    got = partitions.assignment(vehicles, 16)
    assert got == partitions.assignment(list(reversed(vehicles)), 16)  # order-free
    assert sum(map(len, got.values())) == len(vehicles)
    assert sum(1 for vs in got.values() if vs) >= 12  # spread, not piled on a few
    assert partitions.fair_share(16, 3) == 6 and partitions.fair_share(16, 0) == 16


@pytest.mark.parametrize("vehicle", ["soyuz.2", "a*b", "a/b", ""])
def test_a_vehicle_bindings_cannot_name_is_refused(vehicle: str) -> None:
    with pytest.raises(ValueError, match="vehicle"):
        partitions.binding_keys(vehicle)


def test_partition_queue_names_read_back() -> None:
    assert partitions.partition_of_queue(partitions.queue(7)) == 7
    assert partitions.partition_of_queue(partitions.UNROUTED_QUEUE) is None
    with pytest.raises(ValueError, match="not a partition queue"):
        partitions.partition_of_queue(partitions.state_queue(7))
    with pytest.raises(ValueError, match="1 to 100"):
        partitions.check_count(0)


# --- a decoder going on from another's position ----------------------------------------------


def test_a_resumed_decoder_treats_redelivered_frames_as_duplicates(
        mini: VehicleDefinition) -> None:
    first = StreamDecoder(mini)
    first.decode(frames(mini, 0, 30), times(0, 30), seq=0)
    position = json.loads(json.dumps(first.position()))  # as it travels
    second = StreamDecoder(mini)
    second.resume(position)
    # The last ten again (their acknowledgement was lost with the old owner), then new ones.
    batch = second.decode(frames(mini, 20, 20), times(20, 20), seq=20)
    assert batch.n_good == 20  # all stored...
    assert batch.live().n_good == 10  # ...only the new ones alarmed and displayed
    assert second.frames_duplicate == 10
    assert second.frames_missing == 0  # no gap counted across the hand-over
    assert second.last_seq == 39


def test_a_malformed_position_is_refused(mini: VehicleDefinition) -> None:
    d = StreamDecoder(mini)
    with pytest.raises(ValueError, match="last_seq"):
        d.resume({**StreamDecoder(mini).position(), "last_seq": "12"})
    with pytest.raises(KeyError):
        d.resume({"last_seq": 1})


# --- a partition's state, handed over ---------------------------------------------------------


def test_a_partitions_state_restores_alarms_and_position_in_another_process(
        mini: VehicleDefinition) -> None:
    engine = AlarmEngine(mini, "live")
    decoder = StreamDecoder(mini)
    s = Stream("live", mini, decoder, engine, None, persist=True)
    p = partitions.partition_of("mini", 4)
    old = PartitionStates(4, lambda: [(("live", "mini", "hbr"), s)], lambda: False)
    batch = decoder.decode(frames(mini, 0, 10, hatch="OPEN"), times(0, 10), seq=0)
    events = engine.process(batch.live(), {})
    assert [e.parameter for e in events] == ["hatch"]
    old.checkpoint(s, True)(True)  # the batch acknowledged: its state is what is handed over
    assert old.dirty_partitions == {p}
    body = old.document_of(p)
    assert PartitionStates(4, list, lambda: False).document_of(p) != body  # not another's
    new = PartitionStates(4, list, lambda: False)
    [restored] = new.load(p, body, {"mini": mini}, with_archive=False)
    assert restored.alarms.snapshot()["seq"] == engine.snapshot()["seq"] == 1
    assert [a["parameter"] for a in restored.alarms.active()["alarms"]] == ["hatch"]
    assert restored.decoder.last_seq == 9
    assert new.load(p, None, {"mini": mini}, with_archive=False) == []
    assert new.load(p, b"{not json", {"mini": mini}, with_archive=False) == []


# --- configuration -----------------------------------------------------------------------------


def test_the_cluster_section_from_the_environment() -> None:
    c = load(env={"GS_CLUSTER_AMQP_HOSTS": "n1:5673, n2", "GS_CLUSTER_INSTANCE": "ingest-2",
                  "GS_CLUSTER_PARTITIONS": "8", "GS_MQTT_USERNAME": "ingest",
                  "GS_MQTT_PASSWORD": "pw"})
    assert c.cluster.enabled and c.cluster.nodes == [("n1", 5673), ("n2", 5672)]
    login = c.cluster.with_credentials_of(c.mqtt)
    assert login.username == "ingest" and login.password is not None
    assert not load(env={}).cluster.enabled


def test_a_bad_cluster_setting_says_which() -> None:
    with pytest.raises(ConfigError, match="GS_CLUSTER_PARTITIONS"):
        load(env={"GS_CLUSTER_PARTITIONS": "0"})
    with pytest.raises(ConfigError, match=r"GS_CLUSTER_AMQP_HOSTS.*no scheme"):
        load(env={"GS_CLUSTER_AMQP_HOSTS": "http://n1"})


def test_cluster_status_marks_a_silent_instance_and_the_partitions_no_one_owns() -> None:
    from groundstation.commands.cluster import table
    from groundstation.core import messages

    now = 10**18

    def status(name: str, ps: list[int], age_s: float) -> messages.IngestInstance:
        return messages.IngestInstance(
            instance=name, time_ns=now - int(age_s * 1e9), partitions=ps, partition_count=4,
            vehicles=["soyuz"] if 1 in ps else [], members=["a", "b"], taken_over=len(ps),
            released=0, amqp_node="n1:5672")

    text = table([status("a", [0, 1], 0.4), status("b", [3], 12)], now).splitlines()
    assert text[0].split() == ["INSTANCE", "PARTITIONS", "VEHICLES", "HEARS", "TAKEN/LET",
                               "GO", "VIA", "STATUS"]
    assert text[1].split() == ["a", "0", "1", "soyuz", "a", "b", "2/0", "n1:5672", "0.4", "s",
                               "ago"]
    assert text[2].split()[-3:] == ["SILENT", "12", "s"]
    assert text[3] == "4 partitions; not owned now: 2 (taken at their next message)"
