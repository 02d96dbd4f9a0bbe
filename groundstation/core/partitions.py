"""How a clustered station divides the ingest's work: partitions, and the broker topology
that routes each message to its partition (the AMQP side of the wire contract; the MQTT
side is core/topics.py). See docs/cluster.md.

A partition is a replicated queue (a RabbitMQ quorum queue) consumed by one ingest instance
at a time (single active consumer), the others standing by. Partition key: the *vehicle*.
A vehicle's streams in several formats (Apollo's HBR and LBR) share one alarm state, and an
operator's acknowledgement changes that state, so all of a vehicle's telemetry, in every
source (live, each replay, each drill), and every acknowledgement for it, go to one
partition, in the order they were published.

The MQTT plugin publishes a message on the `amq.topic` exchange with its topic as the
routing key, '/' and '.' swapped. `gs.telemetry` (a topic exchange bound from `amq.topic`)
routes a vehicle's topics to its partition by bindings made per vehicle; a vehicle no
binding names (not in the definitions) goes through the alternate exchange to
`gs.ingest.unrouted`, whose owner rejects it as the single ingest would. Replay sessions'
announcements go to every partition (ordered before the frames that follow them in each).

Each partition's alarm state travels through its own queue `gs.state.pNN` (one message,
the newest: x-max-length 1), published before the messages it accounts for are
acknowledged, so whoever owns the partition next starts where the last owner's
acknowledged work ended.
"""

from __future__ import annotations

import zlib
from typing import Final

from groundstation.core import topics

EXCHANGE: Final = "gs.telemetry"  # topic exchange, bound from amq.topic
UNROUTED_EXCHANGE: Final = "gs.telemetry.unrouted"  # its alternate exchange (fanout)
UNROUTED_QUEUE: Final = "gs.ingest.unrouted"
MQTT_EXCHANGE: Final = "amq.topic"  # where the MQTT plugin publishes
# The ingest's way into its own queues (ticks, handed-over state): each bound by its name.
# Not the default exchange, which reaches every queue (the ships' uplinks' too).
DIRECT_EXCHANGE: Final = "gs.direct"
MAX_PARTITIONS: Final = 100
# What of the MQTT traffic enters gs.telemetry (as routing-key patterns).
ENTRY_KEYS: Final = ("telemetry.#", "ack.*.*", "replay.session.*")
# Queue arguments: replicated, ordered, one consumer at a time.
PARTITION_ARGUMENTS: Final[dict[str, str | int | bool]] = {
    "x-queue-type": "quorum", "x-single-active-consumer": True}
STATE_ARGUMENTS: Final[dict[str, str | int | bool]] = {
    "x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "drop-head"}
TICK_TYPE: Final = "gs.tick"  # the AMQP `type` of an instance's heartbeat into a partition


def check_count(count: int) -> int:
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"partitions: {count}; expected 1 to {MAX_PARTITIONS}")
    return count


def partition_of(vehicle: str, count: int) -> int:
    """The partition of a vehicle's traffic (stable across processes and machines)."""
    return zlib.crc32(vehicle.encode()) % count


def queue(partition: int) -> str:
    return f"gs.ingest.p{partition:02d}"


def state_queue(partition: int) -> str:
    return f"gs.state.p{partition:02d}"


def partition_of_queue(name: str) -> int | None:
    """The partition a queue name is of (None: the unrouted queue)."""
    if name == UNROUTED_QUEUE:
        return None
    prefix = "gs.ingest.p"
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        raise ValueError(f"{name!r} is not a partition queue")
    return int(name[len(prefix):])


def routing_key(topic: str) -> str:
    """An MQTT topic as the MQTT plugin's routing key ('/' and '.' swapped)."""
    return topic.translate(_SWAP)


def topic_of(key: str) -> str:
    """The MQTT topic a routing key came from."""
    return key.translate(_SWAP)


_SWAP = str.maketrans({"/": ".", ".": "/"})


def check_vehicle(vehicle: str) -> str:
    """A vehicle that bindings can name: one topic level, and no '.' or '*' (the routing
    key's own separators and wildcards)."""
    topics.check_level("vehicle", vehicle)
    if "." in vehicle or "*" in vehicle:
        raise ValueError(f"vehicle {vehicle!r}: a clustered ingest cannot route a vehicle "
                         "id with '.' or '*' in it (the broker's routing keys use them)")
    return vehicle


def binding_keys(vehicle: str) -> tuple[str, ...]:
    """The routing-key patterns that take a vehicle's telemetry (every source) and the
    operators' acknowledgements for it to its partition."""
    v = check_vehicle(vehicle)
    return (routing_key(topics.telemetry(v, "x")).rsplit(".", 1)[0] + ".*",
            f"telemetry.{topics.REPLAY}.*.{v}.*", f"telemetry.{topics.TRAINING}.*.{v}.*",
            routing_key(topics.acknowledgements("x", v)).replace(".x.", ".*.", 1))


def broadcast_keys() -> tuple[str, ...]:
    """What goes to every partition: a replay session's announcement and end."""
    return (routing_key(topics.replay_session("x")).rsplit(".", 1)[0] + ".*",)


def assignment(vehicles: list[str], count: int) -> dict[int, list[str]]:
    """Which vehicles each partition carries (for the status and the docs)."""
    out: dict[int, list[str]] = {p: [] for p in range(count)}
    for v in sorted(vehicles):
        out[partition_of(v, count)].append(v)
    return out


def fair_share(partitions: int, instances: int) -> int:
    """The most partitions one instance should own when `instances` share them."""
    return -(-partitions // max(1, instances))
