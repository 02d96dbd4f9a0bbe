"""`groundstation cluster status`: which ingest instance owns which partitions (the
instances' retained `ingest/instances/<instance>` status; docs/cluster.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from groundstation.commands.options import add_mqtt_arguments, load_config
from groundstation.core import messages, topics

SILENT_S = 5.0  # a status older than this: the instance has stopped telling (or died)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cluster", help="a clustered station: which ingest instance owns which partitions",
        description="The ingest instances of a clustered station (docs/cluster.md) and the "
                    "partitions each owns now, from their retained status on the broker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  groundstation cluster status --mqtt-hosts node1:1883,node2:1883 "
               "--mqtt-username flight\n"
               "  groundstation cluster status --json   # for a script")
    sub = p.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="the instances, their partitions and vehicles",
                            description="Lists every ingest instance the broker has a status "
                                        "of: its partitions, their vehicles, the instances it "
                                        "hears, and how old its status is. An instance whose "
                                        "status is older than 5 s is marked SILENT; one that "
                                        "stopped is gone from the list.")
    status.add_argument("--wait", type=float, default=2.0, metavar="S",
                        help="how long to collect statuses (default: 2 s)")
    status.add_argument("--json", action="store_true", help="print the statuses as JSON")
    add_mqtt_arguments(status)
    return p


def run(args: argparse.Namespace) -> int:
    config = load_config(args, sections=("mqtt",))
    statuses = asyncio.run(_collect(config.mqtt, args.wait))
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=1))
        return 0
    if not statuses:
        print(f"no ingest instance has a status at {config.mqtt.where}: the station is not "
              "clustered, or no instance runs ([cluster] amqp_hosts)", file=sys.stderr)
        return 1
    print(table(statuses, time.time_ns()))
    return 0


async def _collect(mqtt: Any, wait: float) -> list[messages.IngestInstance]:
    from groundstation.mqtt import MqttClient

    found: dict[str, messages.IngestInstance] = {}
    client = MqttClient(mqtt, name="cluster-status",
                        subscriptions=[topics.INGEST_INSTANCES_SUBSCRIPTION])
    async with client.connect() as conn:
        try:
            async with asyncio.timeout(wait):
                async for m in conn.messages():
                    name = topics.parse_ingest_instance(m.topic).instance
                    if not m.payload:
                        found.pop(name, None)
                        continue
                    try:
                        found[name] = messages.IngestInstance.from_json(m.payload)
                    except messages.MessageError as exc:
                        print(f"warning: the status of {name} is unreadable: {exc}",
                              file=sys.stderr)
        except TimeoutError:
            pass
    return sorted(found.values(), key=lambda s: s.instance)


def table(statuses: list[messages.IngestInstance], now_ns: int) -> str:
    rows = [("INSTANCE", "PARTITIONS", "VEHICLES", "HEARS", "TAKEN/LET GO", "VIA", "STATUS")]
    owned: set[int] = set()
    count = max(s.partition_count for s in statuses)
    for s in statuses:
        age = (now_ns - s.time_ns) / 1e9
        owned.update(s.partitions)
        rows.append((s.instance, " ".join(map(str, s.partitions)) or "-",
                     ", ".join(s.vehicles) or "-", " ".join(s.members),
                     f"{s.taken_over}/{s.released}", s.amqp_node or "-",
                     f"SILENT {age:.0f} s" if age > SILENT_S else f"{age:.1f} s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    unowned = sorted(set(range(count)) - owned)
    lines.append(f"{count} partitions; " + (f"not owned now: {' '.join(map(str, unowned))} "
                                              "(taken at their next message)" if unowned
                                              else "every one owned"))
    return "\n".join(lines)
