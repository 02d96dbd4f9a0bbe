#!/usr/bin/env python
"""The clustered ingest (issue 16) against the single one: throughput, CPU by part, failover.

    python benchmarks/cluster.py [--quick]

Everything real, on this one machine, on loopback: InfluxDB 1.x; for the single-node setup
one Mosquitto and one `groundstation ingest` (MQTT, persistent session); for the cluster
setup three RabbitMQ nodes (groundstation.deploy.rabbitmq.RabbitMQCluster, MQTT plugin,
the guest account on loopback) and 1, 2 then 3 clustered ingest instances, each a process
of its own started with GS_CLUSTER_* in its environment as
tests/integration/test_cluster_ingest.py starts them.

1. Throughput, end to end: Apollo CSM and Soyuz frames (their real definitions, encoded by
   the simulators' FrameEncoder) under several vehicle ids (copies of the two definitions
   in a temporary defs dir, `vehicle:` renamed, the ids chosen so that every partition
   carries one vehicle), pre-encoded envelopes published as fast as the broker takes them
   (QoS 1) by a publisher process; frames/s from the first publish until the last frame
   of every vehicle is queryable in InfluxDB, and a count of what was stored.
2. CPU seconds of every part during each run (/proc/<pid>/stat): the broker (Mosquitto, or
   each RabbitMQ node), each ingest process, InfluxDB, the publisher; and per frame.
3. Failover, two instances under a steady paced load: SIGKILL of the instance that owns
   the most partitions, then (after a replacement has taken its share back) SIGKILL of the
   RabbitMQ node that the publisher and one instance are connected to; for each, how long
   until frames published after the kill are stored again (InfluxDB polled for the newest
   frame of every vehicle), and until the newest stored frame is as fresh as before.
4. A conclusion computed from the numbers: which part used the most CPU a frame.

Numbers and method: benchmarks/README.md, "Cluster (issue 16)".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from ingest import (  # noqa: E402
    APOLLO,
    DOCKING_NS,
    PROBE_FIELD,
    SOYUZ,
    Child,
    CpuMeter,
    Influx,
    IngestProcess,
    fmt_n,
    log,
    machine,
    mqtt_connect,
    pct,
    server_versions,
    throughput_pool,
)

from groundstation.core import partitions, topics  # noqa: E402
from groundstation.core.definitions import load_definition  # noqa: E402
from groundstation.core.envelope import encode_envelope  # noqa: E402
from groundstation.deploy.broker_auth import deploy_settings  # noqa: E402
from groundstation.deploy.rabbitmq import RabbitMQCluster, RabbitMQNode  # noqa: E402
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer  # noqa: E402
from groundstation.paths import defs_dir  # noqa: E402

BASES = (APOLLO, SOYUZ)
GUEST = ("guest", "guest")  # the RabbitMQ nodes' own account, loopback only (as the tests)
POOL_FRAMES = 6400  # a multiple of both counters' moduli (Apollo 50, Soyuz 256)
WARM_FRAMES = 640  # a vehicle's warm-up, before each run's clock starts
SCRIPT = Path(__file__).resolve()


# --- the fleet ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vehicle:
    name: str
    base: str  # the definition it is a copy of
    stream: str
    period_ns: int
    probe: str  # a field of every frame (its presence says the frame is stored)
    partition: int


def make_fleet(count: int, n_partitions: int) -> list[Vehicle]:
    """`count` vehicle ids, Apollo and Soyuz copies in turn, the first two the real ids;
    each next one taken from base, base_2, base_3, ... so that it goes to one of the least
    loaded partitions (count == partitions: one vehicle a partition)."""
    defs = {b: load_definition(defs_dir() / f"{b}.yaml") for b in BASES}
    load = [0] * n_partitions
    fleet: list[Vehicle] = []
    taken: set[str] = set()
    while len(fleet) < count:
        base = BASES[len(fleet) % len(BASES)]
        for k in itertools.count(1):
            name = base if k == 1 else f"{base}_{k}"
            p = partitions.partition_of(name, n_partitions)
            if name not in taken and load[p] == min(load):
                break
        taken.add(name)
        load[p] += 1
        d = defs[base]
        fleet.append(Vehicle(name, base, d.stream, round(1e9 / d.frame.rate_hz),
                             PROBE_FIELD[base], p))
    return fleet


def write_defs(directory: Path, fleet: list[Vehicle]) -> None:
    """The fleet's definitions: the real files, copied with `vehicle:` renamed."""
    directory.mkdir(parents=True)
    for v in fleet:
        text = (defs_dir() / f"{v.base}.yaml").read_text(encoding="utf-8")
        renamed, n = re.subn(rf"^vehicle: {v.base}\s*$", f"vehicle: {v.name}", text,
                             count=1, flags=re.MULTILINE)
        if n != 1:
            raise RuntimeError(f"no 'vehicle: {v.base}' line in {v.base}.yaml")
        (directory / f"{v.name}.yaml").write_text(renamed, encoding="utf-8")


def frame_ns(v: Vehicle, seq: int) -> int:
    return DOCKING_NS + seq * v.period_ns


# --- the publisher process ------------------------------------------------------------------


class FailoverPublisher:
    """paho, QoS 1, up to `window` messages awaiting their PUBACK; when the connection
    drops, a new client on the next broker in the list, and every message not yet
    acknowledged published again there (at least once, as a ship's link would)."""

    def __init__(self, hosts: list[str], auth: tuple[str, str] | None,
                 window: int = 500) -> None:
        self.hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]
        self.auth = auth
        self.window = window
        self.index = 0
        self.attempt = 0
        self.pending: deque[tuple[str, bytes, mqtt.MQTTMessageInfo]] = deque()
        self.failovers: list[dict[str, Any]] = []
        self.lost = threading.Event()
        self.address = ""
        self.client = self._connect()

    def _connect(self) -> mqtt.Client:
        for _ in range(20 * len(self.hosts)):
            host, port = self.hosts[self.index % len(self.hosts)]
            self.attempt += 1
            lost = threading.Event()
            try:
                client = mqtt_connect(host, port, f"bench-pub-{os.getpid()}-{self.attempt}",
                                      auth=self.auth)
            except (OSError, RuntimeError):
                self.index += 1
                time.sleep(0.1)
                continue
            client.on_disconnect = lambda *_a, ev=lost: ev.set()
            self.lost = lost
            self.address = f"{host}:{port}"
            return client
        raise RuntimeError(f"no broker of {self.hosts} took the connection")

    def publish(self, topic: str, payload: bytes) -> None:
        if self.lost.is_set():
            self._failover()
        self._room(self.window)
        self.pending.append((topic, payload, self.client.publish(topic, payload, qos=1)))

    def flush(self, timeout: float = 120.0) -> None:
        self._room(0, timeout)

    def _room(self, limit: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.pending) > limit:
            info = self.pending[0][2]
            if _acked(info):
                self.pending.popleft()
            elif self.lost.is_set():
                self._failover()
            elif time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.pending)} messages never acknowledged")
            else:
                try:
                    info.wait_for_publish(0.05)
                except (RuntimeError, ValueError):  # published while not connected
                    time.sleep(0.01)

    def _failover(self) -> None:
        lost_ns = time.time_ns()
        old, old_address = self.client, self.address
        with contextlib.suppress(Exception):
            old.disconnect()
        # Its network thread may be in paho's reconnect wait (a second): not waited for.
        threading.Thread(target=old.loop_stop, daemon=True).start()
        resend = [(t, p) for t, p, info in self.pending if not _acked(info)]
        self.pending.clear()
        self.index += 1
        self.client = self._connect()
        for t, p in resend:
            self.pending.append((t, p, self.client.publish(t, p, qos=1)))
        self.failovers.append({"lost_ns": lost_ns, "connected_ns": time.time_ns(),
                               "from": old_address, "to": self.address,
                               "resent": len(resend)})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACKed (False too for a message published while the client was not connected)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def role_publish(plan_path: str) -> int:
    """Every message of the plan encoded first; then, on 'go', published in turn across the
    vehicles, as fast as the broker takes them or paced at `rate` frames/s a vehicle, until
    done or 'stop'. Writes (vehicle index, first seq, frames, publish ns) of each message."""
    plan = json.loads(Path(plan_path).read_text())
    pools = {b: [bytes(r) for r in np.load(p)] for b, p in plan["pools"].items()}
    per = int(plan["per_message"])
    queues = []
    for vi, v in enumerate(plan["vehicles"]):
        rows = pools[v["base"]]
        topic = topics.telemetry(v["name"], v["stream"])
        msgs = []
        seq, end = v["seq0"], v["seq0"] + v["frames"]
        while seq < end:
            n, i = min(per, end - seq), seq % len(rows)
            frames = rows[i:i + n] if i + n <= len(rows) else rows[i:] + rows[:i + n - len(rows)]
            msgs.append((vi, seq, n, topic, encode_envelope(
                v["name"], v["stream"], seq, DOCKING_NS + seq * v["period_ns"], frames)))
            seq += n
        queues.append(msgs)
    order = [m for group in itertools.zip_longest(*queues) for m in group if m is not None]
    seq0 = [v["seq0"] for v in plan["vehicles"]]
    rate = float(plan["rate"])
    auth = (str(plan["auth"][0]), str(plan["auth"][1])) if plan.get("auth") else None
    pub = FailoverPublisher(plan["hosts"], auth)
    print("ready", flush=True)
    sys.stdin.readline()
    stop = threading.Event()

    def on_stop() -> None:
        sys.stdin.readline()
        stop.set()
    threading.Thread(target=on_stop, daemon=True).start()
    records = np.zeros((len(order), 4), dtype=np.int64)
    k = 0
    first = time.time_ns()
    t_go = time.perf_counter()
    for vi, seq, n, topic, payload in order:
        if rate:
            wait = t_go + (seq - seq0[vi]) / rate - time.perf_counter()
            if wait > 0 and stop.wait(wait):
                break
        elif stop.is_set():
            break
        records[k] = (vi, seq, n, time.time_ns())
        pub.publish(topic, payload)
        k += 1
    last = time.time_ns()
    pub.flush()
    np.save(plan["out"], records[:k])
    print(json.dumps({"first_ns": first, "last_ns": last, "acked_ns": time.time_ns(),
                      "messages": k, "frames": int(records[:k, 2].sum()),
                      "failovers": pub.failovers}), flush=True)
    pub.close()
    return 0


# --- ingest processes -----------------------------------------------------------------------


class IngestProc(IngestProcess):
    """`python -m groundstation ingest` in a process of its own: the single ingest (MQTT,
    its persistent session) or, with `cluster` (GS_CLUSTER_* settings), a clustered
    instance, started as tests/integration/test_cluster_ingest.py starts them."""

    def __init__(self, name: str, workdir: Path, defs: Path, influx: InfluxDBServer,
                 db: str, *, mqtt_hosts: list[str], auth: tuple[str, str] | None = None,
                 cluster: dict[str, str] | None = None) -> None:
        self.name = name
        self.dir = workdir / f"ingest-{name}"
        self.dir.mkdir(parents=True)
        cmd = [sys.executable, "-m", "groundstation", "ingest", "--influx-api", "v1",
               "--influx-url", influx.url, "--influx-database", db, "--defs-dir", str(defs),
               "--ingest-archive-dir", str(self.dir / "archive"),
               "--influx-spool-dir", str(self.dir / "spool")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GS_")}
        env.update(PYTHONUNBUFFERED="1", GS_MQTT_HOSTS=",".join(mqtt_hosts))
        if auth is not None:
            env.update(GS_MQTT_USERNAME=auth[0], GS_MQTT_PASSWORD=auth[1])
        if cluster is None:
            cmd += ["--mqtt-client-id", f"gs-bench-cluster-{name}-{os.getpid()}"]
        else:
            env.update(cluster)
        self._spawn(cmd, env, self.dir)

    def wait_log(self, text: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest {self.name} did not start:\n{self.tail()}")
            time.sleep(0.05)

    def problems(self) -> tuple[list[str], list[str]]:
        """The log's ERROR lines (and tracebacks), and its WARNING lines."""
        errors, warnings = [], []
        for ln in self.log_path.read_text(errors="replace").splitlines():
            if not _LOG_RECORD.match(ln):
                continue  # a traceback's lines: its record says what it was
            if " ERROR " in ln or " CRITICAL " in ln:
                errors.append(ln)
            elif " WARNING " in ln:
                warnings.append(ln)
        return errors, warnings

    def stopped_line(self) -> str:
        """Why the ingest said it stopped (its 'the ingest stops' line), if it did."""
        for ln in self.log_path.read_text(errors="replace").splitlines():
            if "the ingest stops" in ln:
                return _gist(ln)
        return "(no reason logged)"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


# --- what the broker and the database say ---------------------------------------------------


class Watch:
    """A console on one broker: the instances' retained status (ingest/instances/+) and
    the vehicles' link quality (ingest/link/#), each with its arrival time."""

    def __init__(self, host: str, port: int, auth: tuple[str, str] | None) -> None:
        self.lock = threading.Lock()
        self.history: list[tuple[int, str, dict[str, Any] | None]] = []  # (ns, instance, doc)
        self.links: dict[str, dict[str, Any]] = {}
        self.client = mqtt_connect(host, port, f"bench-watch-{os.getpid()}", self._on,
                                   [(topics.INGEST_INSTANCES_SUBSCRIPTION, 1),
                                    ("ingest/link/#", 0)], auth)

    def _on(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.time_ns()
        doc = json.loads(msg.payload) if msg.payload else None
        with self.lock:
            if msg.topic.startswith("ingest/instances/"):
                self.history.append((t, msg.topic.rsplit("/", 1)[1], doc))
            elif isinstance(doc, dict) and doc.get("source") == topics.LIVE:
                self.links[str(doc.get("vehicle"))] = doc

    def latest(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each named instance's newest status (left out: gone, or never heard of)."""
        out: dict[str, dict[str, Any]] = {}
        with self.lock:
            for _, name, doc in self.history:
                if name in names:
                    if doc is None:
                        out.pop(name, None)
                    else:
                        out[name] = doc
        return out

    def owners(self, names: Sequence[str]) -> dict[str, list[int]]:
        return {n: list(d["partitions"]) for n, d in self.latest(names).items()}

    def shared(self, names: Sequence[str], count: int) -> bool:
        """Every named instance up, and the partitions shared out evenly between them."""
        owners = self.owners(names)
        if set(owners) != set(names):
            return False
        every = sorted(p for ps in owners.values() for p in ps)
        sizes = [len(ps) for ps in owners.values()]
        return every == list(range(count)) and max(sizes) <= partitions.fair_share(
            count, len(names))

    def wait_shared(self, names: Sequence[str], count: int, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        while not self.shared(names, count):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"partitions not shared out between {list(names)} within "
                                   f"{timeout:g} s: {self.owners(names)}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def first_after(self, t_ns: int, test: Callable[[str, dict[str, Any]], bool]
                    ) -> int | None:
        """Arrival time of the first status after t_ns that passes `test`."""
        with self.lock:
            return next((t for t, n, d in self.history
                         if t >= t_ns and d is not None and test(n, d)), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def last_seen(influx: Influx, fleet: list[Vehicle], last: dict[str, int], timeout: float
              ) -> int | None:
    """time_ns when the frame at last[vehicle] of every vehicle had become queryable
    (polled every 50 ms); None if not within the timeout."""
    waiting = list(fleet)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        q = "; ".join(f"SELECT {v.probe} FROM tm WHERE source='live' AND vehicle='{v.name}' "
                      f"AND time = {last[v.name]}" for v in waiting)
        with contextlib.suppress(OSError):
            found = influx.statements(q)
            waiting = [v for v, rows in zip(waiting, found, strict=True) if not rows]
        if waiting:
            time.sleep(0.05)
    return None if waiting else time.time_ns()


def stored_counts(influx: Influx, fleet: list[Vehicle], seq0: dict[str, int],
                  sent: dict[str, int], settle_s: float = 10.0) -> dict[str, int]:
    """Points stored per vehicle for seqs seq0 .. seq0+sent-1, counted until they reach
    what was sent or stop growing for settle_s."""
    counts: dict[str, int] = {}
    prev, grown = -1, time.monotonic()
    while True:
        q = "; ".join(
            f"SELECT count({v.probe}) FROM tm WHERE source='live' AND vehicle='{v.name}' AND "
            f"time >= {frame_ns(v, seq0[v.name])} AND "
            f"time <= {frame_ns(v, seq0[v.name] + sent[v.name] - 1)}" for v in fleet)
        with contextlib.suppress(OSError):
            rows = influx.statements(q)
            counts = {v.name: int(r[0][1]) if r else 0 for v, r in zip(fleet, rows, strict=True)}
        total = sum(counts.values())
        if all(counts.get(v.name, 0) >= sent[v.name] for v in fleet):
            return counts
        if total != prev:
            prev, grown = total, time.monotonic()
        elif time.monotonic() - grown > settle_s:
            return counts
        time.sleep(0.25)


class NewestPoller(threading.Thread):
    """The newest stored frame of every vehicle, every `interval` s: (poll ns, {vehicle:
    newest frame time})."""

    def __init__(self, server: InfluxDBServer, db: str, fleet: list[Vehicle], since: int,
                 interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.influx = Influx(server.host, server.port, db, timeout=5)
        self.fleet = fleet
        self.newest = {v.name: since for v in fleet}
        self.interval = interval
        self.samples: list[tuple[int, dict[str, int]]] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            q = "; ".join(f"SELECT last({v.probe}) FROM tm WHERE source='live' AND "
                          f"vehicle='{v.name}' AND time >= {self.newest[v.name]}"
                          for v in self.fleet)
            try:
                rows = self.influx.statements(q)
            except OSError:
                self.errors += 1
                self._halt.wait(0.2)
                continue
            t = time.time_ns()
            for v, r in zip(self.fleet, rows, strict=True):
                if r:
                    self.newest[v.name] = max(self.newest[v.name], int(r[0][0]))
            self.samples.append((t, dict(self.newest)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.influx.close()


async def _reset_queues(node: RabbitMQNode, count: int) -> None:
    import aio_pika  # only here: the clustered runs need it, the single one does not

    conn = await aio_pika.connect(host=node.host, port=node.amqp_port, login=GUEST[0],
                                  password=GUEST[1])
    async with conn:
        ch = await conn.channel()
        for name in [partitions.UNROUTED_QUEUE,
                     *(partitions.queue(p) for p in range(count)),
                     *(partitions.state_queue(p) for p in range(count))]:
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                await ch.queue_delete(name)
            if ch.is_closed:
                ch = await conn.channel()


# --- results --------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    per_message: int
    frames: int
    seconds: float
    stored: int
    meter: CpuMeter
    groups: dict[str, list[str]]  # "broker", "ingest", "influxd", "publisher" -> meter names
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds else math.nan

    def us(self, name: str) -> float:
        return 1e6 * self.meter.used.get(name, 0.0) / self.frames

    def group_us(self, group: str) -> float:
        return sum(self.us(n) for n in self.groups[group])

    def total_us(self) -> float:
        return sum(self.group_us(g) for g in self.groups)


GROUP_LABEL = {"broker": "broker", "ingest": "ingest", "influxd": "InfluxDB",
               "publisher": "publisher"}


def print_run(run: Run) -> None:
    m = run.meter
    print(f"   {'part':<18} {'CPU s':>7} {'% of a core':>12} {'us/frame':>9}")
    for names in run.groups.values():
        for n in names:
            print(f"   {n:<18} {m.used.get(n, 0.0):>7.2f} {m.share(n):>11.0f}% "
                  f"{run.us(n):>9.1f}")
    total = sum(m.used.get(n, 0.0) for names in run.groups.values() for n in names)
    print(f"   {'all parts':<18} {total:>7.2f} {100 * total / m.wall:>11.0f}% "
          f"{run.total_us():>9.1f}")
    print(f"   whole machine: {m.describe()}")


# --- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.workdir = Path(tempfile.mkdtemp(prefix="gs-cluster-bench-"))
        self.n_partitions: int = args.partitions
        self.fleet = make_fleet(args.vehicles or self.n_partitions, self.n_partitions)
        self.defs = self.workdir / "defs"
        write_defs(self.defs, self.fleet)
        self.per_vehicle: int = args.frames_per_vehicle or (4_000 if self.quick else 20_000)
        self.sizes = [int(x) for x in str(args.frames_per_message).split(",")]
        self.influx = InfluxDBServer(self.workdir / "influxdb")
        self.mosquitto: MosquittoServer | None = None
        self.cluster: RabbitMQCluster | None = None
        self.watch: Watch | None = None
        self.pools: dict[str, str] = {}
        self.runs: list[Run] = []
        self.failover_lines: list[str] = []
        self.findings: list[str] = []  # in the data: loss, exits, counted gaps
        self.log_lines: list[str] = []  # the ingest logs' errors and warnings
        self.seq = itertools.count(1)

    # -- set-up ----------------------------------------------------------------------------

    def start(self) -> None:
        self.influx.start()
        for b in BASES:
            path = self.workdir / f"pool.{b}.npy"
            np.save(path, throughput_pool(load_definition(defs_dir() / f"{b}.yaml"),
                                          POOL_FRAMES))
            self.pools[b] = str(path)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.mosquitto is not None:
            self.mosquitto.stop()
        self.influx.stop()
        if self.args.keep:
            print(f"\nkept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def publisher(self, hosts: list[str], auth: tuple[str, str] | None,
                  seq0: dict[str, int], frames: int, per_message: int, rate: float = 0.0
                  ) -> tuple[Child, Path]:
        k = next(self.seq)
        out = self.workdir / f"published-{k}.npy"
        plan = {"hosts": hosts, "auth": list(auth) if auth else None, "pools": self.pools,
                "per_message": per_message, "rate": rate, "out": str(out),
                "vehicles": [{"name": v.name, "base": v.base, "stream": v.stream,
                              "period_ns": v.period_ns, "seq0": seq0[v.name],
                              "frames": frames} for v in self.fleet]}
        path = self.workdir / f"plan-{k}.json"
        path.write_text(json.dumps(plan))
        return Child(["--role", "publish", "--plan", str(path)], f"publisher-{k}",
                     self.workdir, script=SCRIPT), out

    # -- 1 and 2: throughput and CPU ---------------------------------------------------------

    def throughput(self, setup: str, db: str, hosts: list[str], auth: tuple[str, str] | None,
                   ingests: list[IngestProc], brokers: dict[str, int | None]) -> None:
        """A warm-up, then a burst at each message size: a Run each."""
        influx = Influx(self.influx.host, self.influx.port, db)
        names = [v.name for v in self.fleet]
        seq = WARM_FRAMES
        try:
            pub, _ = self.publisher(hosts, auth, dict.fromkeys(names, 0), WARM_FRAMES,
                                    self.sizes[-1])
            pub.send("go")
            pub.result(120)
            last = {v.name: frame_ns(v, WARM_FRAMES - 1) for v in self.fleet}
            if last_seen(influx, self.fleet, last, 90) is None:
                raise RuntimeError(f"{setup}: the warm-up frames were not all stored")
            for per_msg in self.sizes:
                n = self.frames_at(per_msg)
                self.burst(influx, f"{setup}, {per_msg} f/msg", per_msg, n,
                           dict.fromkeys(names, seq), hosts, auth, ingests, brokers)
                seq += n
        finally:
            influx.close()

    def frames_at(self, per_msg: int) -> int:
        """Frames a vehicle in a burst: 4x more at 20 frames a message and up (a burst of
        large messages is over in well under a second otherwise)."""
        return self.per_vehicle * (4 if per_msg >= 20 else 1)

    def burst(self, influx: Influx, label: str, per_msg: int, n: int, seq0: dict[str, int],
              hosts: list[str], auth: tuple[str, str] | None, ingests: list[IngestProc],
              brokers: dict[str, int | None]) -> None:
        pub, _ = self.publisher(hosts, auth, seq0, n, per_msg)
        pids: dict[str, int | None] = {"publisher": pub.proc.pid, **brokers}
        pids.update({f"ingest {i.name}": i.pid for i in ingests})
        pids["influxd"] = self.influx.pid
        meter = CpuMeter(pids)
        meter.start()
        pub.send("go")
        last = {v.name: frame_ns(v, seq0[v.name] + n - 1) for v in self.fleet}
        seen = last_seen(influx, self.fleet, last, max(180.0, n * len(self.fleet) / 200))
        meter.stop()
        sent = pub.result(120)
        counts = stored_counts(influx, self.fleet, seq0, {v.name: n for v in self.fleet})
        frames = n * len(self.fleet)
        stored = sum(counts.values())
        if seen is None:
            raise RuntimeError(f"{label}: the last frames never became queryable "
                               f"({stored:,} of {frames:,} stored)")
        run = Run(label, per_msg, frames, (seen - sent["first_ns"]) / 1e9, stored, meter, {
            "publisher": ["publisher"], "broker": list(brokers),
            "ingest": [f"ingest {i.name}" for i in ingests], "influxd": ["influxd"]})
        acked_s = (sent["acked_ns"] - sent["first_ns"]) / 1e9
        log(f"   {label}: {frames:,} frames ({len(self.fleet)} vehicles x {n:,}) in "
            f"{sent['messages']:,} messages, all acknowledged by the broker {acked_s:.1f} s "
            f"after the first publish; the last queryable {run.seconds:.1f} s after it: "
            f"{fmt_n(run.rate)} frames/s; stored {stored:,}/{frames:,}")
        if stored != frames:
            short = {v: n - c for v, c in counts.items() if c != n}
            run.notes.append(f"{label}: frames missing in InfluxDB, by vehicle: {short}")
            self.findings.append(run.notes[-1])
        print_run(run)
        self.runs.append(run)

    def check_logs(self, label: str, ingests: list[IngestProc]) -> None:
        for i in ingests:
            errors, warnings = i.problems()
            if errors or warnings:
                log(f"   ingest {i.name} log: {len(errors)} errors, {len(warnings)} warnings")
            for ln in dict.fromkeys(_gist(x) for x in errors + warnings):
                self.log_lines.append(f"{label}, ingest {i.name}: {ln}")

    def check_links(self, label: str, vehicles: list[Vehicle] | None = None
                    ) -> dict[str, int]:
        """The owners' link quality (each owner's counters start when it takes the
        partition): the duplicate frames they counted (returned) and the missing ones."""
        if self.watch is None:
            return {}
        time.sleep(1.2)  # the owners' next self-telemetry
        with self.watch.lock:
            links = {v.name: self.watch.links.get(v.name) for v in vehicles or self.fleet}
        def counter(key: str) -> dict[str, int]:
            return {v: int(d.get(key, 0)) for v, d in links.items() if d}
        dup, miss, rec = (counter(k) for k in ("frames_duplicate", "frames_missing",
                                                "frames_recovered"))
        log(f"   {label}: link quality the owners report (since they took the partition): "
            f"duplicate frames {sum(dup.values()):,}{_nonzero(dup)}, missing "
            f"{sum(miss.values()):,}{_nonzero(miss)}, recovered (came after a gap) "
            f"{sum(rec.values()):,}{_nonzero(rec)}")
        if sum(miss.values()):
            self.findings.append(f"{label}: the owners' link quality counts frames missing"
                                 f"{_nonzero(miss)} (recovered{_nonzero(rec) or ' 0'})")
        return dup

    def single(self) -> None:
        log("1. single node: one Mosquitto (the deployment's settings), one "
            "`groundstation ingest` (MQTT, persistent session)")
        self.mosquitto = MosquittoServer(self.workdir / "mosquitto",
                                         extra_config=deploy_settings())
        self.mosquitto.start()
        db = "single"
        self.influx.create_database(db)
        host = f"{self.mosquitto.host}:{self.mosquitto.port}"
        ingest = IngestProc("single", self.workdir, self.defs, self.influx, db,
                            mqtt_hosts=[host])
        try:
            ingest.wait_log(b"subscribed at")
            self.throughput("single node, 1 ingest", db, [host], None, [ingest],
                            {"mosquitto": self.mosquitto.pid})
        finally:
            ingest.stop()
            self.check_logs("single node", [ingest])
            self.mosquitto.stop()
            self.mosquitto = None

    def start_cluster(self) -> None:
        t0 = time.monotonic()
        self.cluster = RabbitMQCluster(3, self.workdir / "rabbitmq")
        self.cluster.start()
        log(f"   RabbitMQ cluster of 3 nodes up in {time.monotonic() - t0:.0f} s "
            f"(nodes {self.cluster.last_start_seconds or 0:.0f} s, joins "
            f"{self.cluster.last_join_seconds or 0:.0f} s)")
        watch_node = self.cluster.nodes[-1]  # never killed
        self.watch = Watch(watch_node.host, watch_node.port, GUEST)

    def queue_depths(self) -> dict[str, int]:
        """Messages in each partition's queue, asked of a running node ({} if it cannot
        say)."""
        assert self.cluster is not None
        with contextlib.suppress(Exception):
            rows = json.loads(self.cluster.ctl("list_queues", "name", "messages",
                                               "--formatter", "json"))
            return {r["name"]: int(r["messages"]) for r in rows
                    if str(r["name"]).startswith("gs.ingest.")}
        return {}

    def reset_queues(self) -> None:
        assert self.cluster is not None
        asyncio.run(_reset_queues(self.cluster.nodes[-1], self.n_partitions))

    def instance(self, name: str, rotation: int, db: str) -> IngestProc:
        """A clustered instance whose lists of nodes (AMQP and MQTT) start at node
        `rotation` (so instances spread over the nodes)."""
        assert self.cluster is not None
        nodes = self.cluster.nodes[rotation:] + self.cluster.nodes[:rotation]
        env = {"GS_CLUSTER_AMQP_HOSTS": ",".join(f"{n.host}:{n.amqp_port}" for n in nodes),
               "GS_CLUSTER_INSTANCE": name,
               "GS_CLUSTER_PARTITIONS": str(self.n_partitions)}
        return IngestProc(name, self.workdir, self.defs, self.influx, db,
                          mqtt_hosts=[n.mqtt_address for n in nodes], auth=GUEST,
                          cluster=env)

    def clustered(self, count: int) -> None:
        assert self.cluster is not None and self.watch is not None
        log(f"1. cluster: 3 RabbitMQ nodes, {count} ingest instance{'s' * (count > 1)}, "
            f"{self.n_partitions} partitions")
        self.reset_queues()
        db = f"cluster{count}"
        self.influx.create_database(db)
        names = [f"c{count}{chr(ord('a') + i)}" for i in range(count)]
        ingests = [self.instance(n, i, db) for i, n in enumerate(names)]
        try:
            took = self.watch.wait_shared(names, self.n_partitions)
            log(f"   partitions shared out {took:.1f} s after the instances started: "
                f"{self.watch.owners(names)}")
            nodes = {f"rabbit{i + 1}": n.pid for i, n in enumerate(self.cluster.nodes)}
            publisher_node = self.cluster.nodes[0]
            self.throughput(f"cluster, {count} instance{'s' * (count > 1)}", db,
                            [publisher_node.mqtt_address], GUEST, ingests, nodes)
            self.check_links(f"cluster, {count} instance{'s' * (count > 1)}")
        finally:
            for i in ingests:
                i.stop()
            self.check_logs(f"cluster, {count} instances", ingests)

    # -- 3. failover -------------------------------------------------------------------------

    def failover(self, rate_total: float) -> None:
        assert self.cluster is not None and self.watch is not None
        watch, count = self.watch, self.n_partitions
        per_msg = self.args.steady_frames_per_message
        rate = rate_total / len(self.fleet)
        before_s = 3.0 if self.quick else 8.0
        recover_s = 30.0 if self.quick else 60.0
        log(f"3. failover: 2 instances under a steady load of {fmt_n(rate_total)} frames/s "
            f"({fmt_n(rate)} a vehicle, {per_msg} frames a message, paced; the publisher on "
            "node 1, failing over to node 2, 3)")
        self.reset_queues()
        db = "failover"
        self.influx.create_database(db)
        names = ["fa", "fb"]
        rotation = {"fa": 0, "fb": 1}
        ingests = {n: self.instance(n, rotation[n], db) for n in names}
        influx = Influx(self.influx.host, self.influx.port, db)
        poller: NewestPoller | None = None
        pub: Child | None = None
        try:
            watch.wait_shared(names, count)
            zero = dict.fromkeys((v.name for v in self.fleet), 0)
            warm, _ = self.publisher([self.cluster.nodes[0].mqtt_address], GUEST, zero,
                                     WARM_FRAMES, per_msg)
            warm.send("go")
            warm.result(120)
            if last_seen(influx, self.fleet, {v.name: frame_ns(v, WARM_FRAMES - 1)
                                              for v in self.fleet}, 90) is None:
                raise RuntimeError("failover: the warm-up frames were not all stored")
            seq0 = dict.fromkeys(zero, WARM_FRAMES)
            budget = int(rate * (2 * before_s + 2 * recover_s + 90)) // per_msg * per_msg
            hosts = [n.mqtt_address for n in self.cluster.nodes]  # node 1 first
            pub, out = self.publisher(hosts, GUEST, seq0, budget, per_msg, rate=rate)
            poller = NewestPoller(self.influx, db, self.fleet, since=DOCKING_NS)
            poller.start()
            pub.send("go")
            self._go = (time.time_ns(), rate, WARM_FRAMES)
            time.sleep(before_s)

            # (a) the instance that owns the most partitions (a tie: the first by name)
            owners = watch.owners(names)
            victim = max(sorted(owners), key=lambda n: len(owners[n]))
            survivor = next(n for n in names if n != victim)
            lost = set(owners[victim])
            lost_vehicles = [v for v in self.fleet if v.partition in lost]
            kept_vehicles = [v for v in self.fleet if v.partition not in lost]
            t_kill_a = time.time_ns()
            ingests[victim].kill()
            log(f"   (a) SIGKILL of instance {victim}, owner of partitions {sorted(lost)} "
                f"({', '.join(v.name for v in lost_vehicles)}); {survivor} owned "
                f"{sorted(owners[survivor])}")
            self.wait_caught_up(poller, recover_s)
            time.sleep(3.0)  # and the same freshness as before, for a while
            t_end_a = time.time_ns()
            dup_a = self.check_links(f"(a), {survivor}", lost_vehicles)
            t_status_a = watch.first_after(
                t_kill_a, lambda n, d: n == survivor and lost <= set(d["partitions"]))
            repl = f"{victim}2"  # a replacement, with the victim's place in the node lists
            ingests[repl] = self.instance(repl, rotation[victim], db)
            t0 = time.monotonic()
            names2 = [survivor, repl]
            watch.wait_shared(names2, count)
            rebalance_s = time.monotonic() - t0
            log(f"   replacement {repl} started; the partitions shared out again "
                f"{rebalance_s:.1f} s later: {watch.owners(names2)}")
            time.sleep(before_s)

            # (b) the RabbitMQ node the publisher and one instance are connected to
            node = self.cluster.nodes[0]
            amqp = f"{node.host}:{node.amqp_port}"
            on_node = [n for n, d in watch.latest(names2).items() if d.get("amqp_node") == amqp]
            t_kill_b = time.time_ns()
            node.kill()
            log(f"   (b) SIGKILL of RabbitMQ node 1 (AMQP {amqp}, MQTT {node.mqtt_address}): "
                f"the publisher's node and instance {', '.join(on_node) or '(none)'}'s")
            self.wait_caught_up(poller, recover_s)
            shared_s = math.nan
            with contextlib.suppress(RuntimeError):
                watch.wait_shared(names2, count, timeout=recover_s)
                shared_s = (time.time_ns() - t_kill_b) / 1e9
            t_back = watch.first_after(
                t_kill_b, lambda n, d: n in on_node and d.get("amqp_node") not in (None, amqp))
            time.sleep(3.0)
            t_end_b = time.time_ns()
            pub.send("stop")
            sent = pub.result(120)
            pub = None
            poller.stop()
            times = PublishTimes(np.load(out), self.fleet)
            counts = stored_counts(influx, self.fleet, seq0, times.sent)
            dup_end = self.check_links("the end")
            exited = {n: (i.proc.returncode, i.stopped_line())
                      for n, i in ingests.items() if n != victim and i.proc.poll() is not None}
            queued = self.queue_depths()
        finally:
            if pub is not None:
                pub.kill()
            if poller is not None and poller.is_alive():
                poller.stop()
            influx.close()
            for i in ingests.values():
                if i.proc.poll() is None:
                    i.stop()
            self.check_logs("failover", list(ingests.values()))

        s = poller.samples
        a = episode(s, times, t_kill_a, t_end_a, lost_vehicles, before_s)
        a_kept = episode(s, times, t_kill_a, t_end_a, kept_vehicles, before_s)
        b = episode(s, times, t_kill_b, t_end_b, self.fleet, before_s)
        lines = self.failover_lines
        lines.append(
            f"instance SIGKILLed ({victim}, {len(lost)} of {count} partitions): "
            f"{survivor}'s status listed them {_s(t_status_a, t_kill_a)} later; frames "
            f"published after the kill stored after {_f(a.resumed_s)} (slowest vehicle; "
            f"{a.by_vehicle()}); newest stored frame back to normal freshness after "
            f"{_f(a.caught_up_s)}; it was at most {_f(a.worst_lag_s)} old (before the kill: "
            f"p95 {_f(a.baseline_s)}); the survivor's own vehicles at most "
            f"{_f(a_kept.worst_lag_s)} old")
        lines.append(f"{survivor} counted {sum(dup_a.values()):,} duplicate frames in what "
                     f"it took over from {victim}{_nonzero(dup_a)}: delivered again (not "
                     f"acknowledged by {victim}) and at or before the decoder position in the "
                     "handed-over state (stored again, not alarmed again)")
        lines.append(f"replacement instance: partitions shared out again {rebalance_s:.1f} s "
                     "after it started")
        pub_fail = [f for f in sent.get("failovers", []) if f["lost_ns"] >= t_kill_b]
        pf = (f"the publisher lost node 1 after {_s(pub_fail[0]['lost_ns'], t_kill_b)}, was "
              f"publishing to {pub_fail[0]['to']} after {_s(pub_fail[0]['connected_ns'], t_kill_b)}"
              f" ({pub_fail[0]['resent']} unacknowledged messages sent again)"
              if pub_fail else "the publisher did not notice")
        lines.append(
            f"RabbitMQ node SIGKILLed (node 1: the publisher's, and {', '.join(on_node) or 'no'}"
            f" instance's): {pf}; {', '.join(on_node) or 'the instance'} consuming through "
            f"another node after {_s(t_back, t_kill_b)}; partitions shared out again after "
            f"{_f(shared_s)}; frames published after the kill stored after {_f(b.resumed_s)} "
            f"(slowest vehicle; {b.by_vehicle()}); back to normal freshness after "
            f"{_f(b.caught_up_s)}; newest stored frame at most {_f(b.worst_lag_s)} old "
            f"(before: p95 {_f(b.baseline_s)})")
        lines.append(f"duplicate frames the owners counted at the end (each since it last "
                     f"took the partition): {sum(dup_end.values()):,}{_nonzero(dup_end)}")
        for n, (rc, why) in exited.items():
            lines.append(f"instance {n} EXITED by itself during the run (exit code {rc}): {why}")
            self.findings.append(f"failover: instance {n} exited by itself (exit code {rc}) "
                                 f"after the RabbitMQ node was killed: {why}")
        missing = {v.name: times.sent[v.name] - counts.get(v.name, 0) for v in self.fleet}
        lines.append(
            f"failover run, frames stored / published: {sum(counts.values()):,} / "
            f"{sum(times.sent.values()):,} (InfluxDB holds a frame once however often it is "
            "written)" + (f"; NOT STORED by the end:{_nonzero(missing)}"
                          if any(missing.values()) else ""))
        if any(missing.values()):
            waiting = {q: m for q, m in queued.items() if m}
            lines.append(f"messages left in the partitions' queues at the end: {waiting or 0}")
            self.findings.append(
                f"failover: frames published (PUBACKed by the broker) and not stored by the "
                f"end of the run:{_nonzero(missing)}; left in the queues: {waiting or 0}")
        for ln in lines:
            log(f"   {ln}")

    _go: tuple[int, float, int] = (0, 1.0, 0)  # the paced publisher's start, rate, first seq

    def wait_caught_up(self, poller: NewestPoller, timeout: float) -> bool:
        """Until every vehicle's newest stored frame is within 1.5 s of the paced
        publisher's schedule, or the timeout (at least 2 s)."""
        t0 = time.monotonic()
        time.sleep(2.0)
        while time.monotonic() - t0 < timeout:
            if poller.samples and self._fresh(poller.samples[-1][1]):
                return True
            time.sleep(0.2)
        return False

    def _fresh(self, newest: dict[str, int]) -> bool:
        go, rate, seq0 = self._go
        now = time.time_ns()
        return all(now - (go + 1e9 * ((newest[v.name] - DOCKING_NS) // v.period_ns + 1 - seq0)
                          / rate) < 1.5e9 for v in self.fleet)


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ ")


def _gist(line: str) -> str:
    """A log record without its timestamp (so repeats fold), and the addresses of objects
    and ports (which differ between repeats)."""
    text = _LOG_RECORD.sub("", line).strip()
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)[:300]


def _nonzero(d: dict[str, int]) -> str:
    nz = {k: v for k, v in d.items() if v}
    return f" ({', '.join(f'{k} {v:,}' for k, v in nz.items())})" if nz else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller loads and shorter windows (about 3 minutes in all)")
    ap.add_argument("--partitions", type=int, default=6,
                    help="the cluster's partitions (default 6: one vehicle each)")
    ap.add_argument("--vehicles", type=int, default=0,
                    help="vehicle ids published under (default: one a partition)")
    ap.add_argument("--frames-per-vehicle", type=int, default=0,
                    help="frames of each vehicle in a throughput run at under 20 frames a "
                         "message, four times as many at more (default 20,000; quick 4,000)")
    ap.add_argument("--frames-per-message", default="5,100",
                    help="frames a message in the throughput runs, comma-separated: a run "
                         "at each (default 5, as the simulators send, and 100)")
    ap.add_argument("--steady-rate", type=float, default=0.0,
                    help="frames/s of the failover's steady load, all vehicles (default: "
                         "half the 1-instance cluster's rate, at most 3,000)")
    ap.add_argument("--steady-frames-per-message", type=int, default=10)
    ap.add_argument("--only", choices=("single", "cluster", "failover"), default=None,
                    help="one part: the single node, the cluster (throughput and failover), "
                         "or the failover alone")
    ap.add_argument("--no-failover", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--role", choices=("publish",), help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "publish":
        return role_publish(args.plan)
    return run(args)


class PublishTimes:
    """When the publisher first published each frame (its message's publish time)."""

    def __init__(self, records: np.ndarray, fleet: list[Vehicle]) -> None:
        self.by = {v.name: records[records[:, 0] == k] for k, v in enumerate(fleet)}
        self.period = {v.name: v.period_ns for v in fleet}
        self.sent = {name: int(r[:, 2].sum()) for name, r in self.by.items()}

    def of(self, vehicle: str, frame_time: int) -> int | None:
        r = self.by[vehicle]
        seq = (frame_time - DOCKING_NS) // self.period[vehicle]
        i = int(np.searchsorted(r[:, 1], seq, side="right")) - 1
        return int(r[i, 3]) if i >= 0 and seq < r[i, 1] + r[i, 2] else None


@dataclass
class Episode:
    resumed: dict[str, float | None]  # s from the kill until a frame published after it
    caught_up: dict[str, float | None]  # ... until the newest frame's age is back to normal
    worst_lag_s: float  # the oldest the newest stored frame got, after the kill
    baseline_s: float  # its age before the kill, p95

    @property
    def resumed_s(self) -> float | None:
        vals = list(self.resumed.values())
        return None if not vals or None in vals else max(v for v in vals if v is not None)

    @property
    def caught_up_s(self) -> float | None:
        vals = list(self.caught_up.values())
        return None if not vals or None in vals else max(v for v in vals if v is not None)

    def by_vehicle(self) -> str:
        return ", ".join(f"{k} {_f(v)}" for k, v in self.resumed.items())


def episode(samples: list[tuple[int, dict[str, int]]], times: PublishTimes, t_kill: int,
            t_end: int, vehicles: list[Vehicle], before_s: float) -> Episode:
    """From the poller's samples: for each vehicle, the age of its newest stored frame (poll
    time - that frame's publish time) around a kill at t_kill."""
    def age(t: int, newest: dict[str, int], v: Vehicle) -> float | None:
        p = times.of(v.name, newest[v.name])
        return None if p is None else (t - p) / 1e9

    w0 = t_kill - int((before_s - 1.0) * 1e9)
    base = [a for t, nw in samples if w0 <= t < t_kill for v in vehicles
            if (a := age(t, nw, v)) is not None]
    baseline = pct(base, 95)
    normal = max(2 * baseline, 0.5) if base else 0.5
    after = [(t, nw) for t, nw in samples if t_kill <= t <= t_end]
    resumed: dict[str, float | None] = {}
    caught: dict[str, float | None] = {}
    worst = 0.0
    for v in vehicles:
        t_res = next((t for t, nw in after
                      if (p := times.of(v.name, nw[v.name])) is not None and p >= t_kill), None)
        resumed[v.name] = None if t_res is None else (t_res - t_kill) / 1e9
        t_ok = None if t_res is None else next(
            (t for t, nw in after if t >= t_res and (a := age(t, nw, v)) is not None
             and a <= normal), None)
        caught[v.name] = None if t_ok is None else (t_ok - t_kill) / 1e9
        worst = max([worst, *(a for t, nw in after if (a := age(t, nw, v)) is not None)])
    return Episode(resumed, caught, worst, baseline)


def _f(x: float | None) -> str:
    return "never (within the window)" if x is None or math.isnan(x) else f"{x:.2f} s"


def _s(t: int | None, t0: int) -> str:
    return _f(None if t is None else (t - t0) / 1e9)


GROUPS = ("publisher", "broker", "ingest", "influxd")


def summary(runs: list[Run]) -> None:
    cores = os.cpu_count() or 1
    head = (f"{'setup':<36} {'frames/s':>9} {'stored/sent':>15}  "
            + "  ".join(f"{GROUP_LABEL[g] + ' us':>13}" for g in GROUPS)
            + f"  {'all us':>7} {f'{cores}-core bound':>13}  others  idle")
    print(head)
    print("-" * len(head))
    for r in runs:
        m = r.meter
        ours = sum(v for k, v in m.used.items() if not k.startswith("_")) + m.used["_self"]
        others = 100 * max(0.0, m.used["_busy"] - ours) / m.wall
        idle = 100 * max(0.0, cores * m.wall - m.used["_busy"]) / m.wall
        print(f"{r.label:<36} {fmt_n(r.rate):>9} {f'{r.stored:,}/{r.frames:,}':>15}  "
              + "  ".join(f"{r.group_us(g):>13.1f}" for g in GROUPS)
              + f"  {r.total_us():>7.1f} {fmt_n(cores * 1e6 / r.total_us()):>13}  "
              f"{others:>5.0f}% {idle:>4.0f}%")
    print("(us: CPU microseconds a frame, all of a group's processes: the broker is "
          "Mosquitto or the three RabbitMQ nodes together, the ingest every instance; "
          "bound: cores / all us, the rate at which these parts alone would fill the "
          "machine; others, idle: % of one core)")
    for r in runs:
        if len(r.groups["broker"]) > 1 or len(r.groups["ingest"]) > 1:
            parts = [f"{n} {r.us(n):.1f}" for g in ("broker", "ingest") for n in r.groups[g]]
            print(f"  {r.label}: {', '.join(parts)} us a frame")


def conclusion(runs: list[Run]) -> list[str]:
    """Where the CPU a frame went, computed from the runs: a line a message size."""
    def top(r: Run) -> tuple[str, float]:
        g = max(GROUPS, key=r.group_us)
        return g, r.group_us(g)

    def who(r: Run) -> str:
        return r.label.split(", ")[1]

    out = []
    for size in dict.fromkeys(r.per_message for r in runs):
        same = [r for r in runs if r.per_message == size]
        single = next((r for r in same if r.label.startswith("single")), None)
        clustered = [r for r in same if r.label.startswith("cluster")]
        parts = []
        if single is not None:
            g, us = top(single)
            parts.append(f"single node {fmt_n(single.rate)} frames/s, the most CPU a frame "
                         f"in {GROUP_LABEL[g]} ({us:.1f} of {single.total_us():.1f} us)")
        if clustered:
            tops = [top(r) for r in clustered]
            parts.append("cluster " + ", ".join(
                f"{who(r)} {fmt_n(r.rate)} frames/s, the most in {GROUP_LABEL[g]} ({us:.1f} of "
                f"{r.total_us():.1f} us)" for r, (g, us) in zip(clustered, tops, strict=True)))
            best = max(clustered, key=lambda r: r.rate)
            if single is not None:
                parts.append(f"the cluster's best ({who(best)}) at {best.rate / single.rate:.2f}x "
                             f"the single node's rate, {best.total_us() / single.total_us():.2f}x "
                             "its CPU a frame")
            if len(clustered) > 1:
                parts.append(f"{who(clustered[-1])} / {who(clustered[0])}: "
                             f"{clustered[-1].rate / clustered[0].rate:.2f}x the rate")
            groups = [g for g, _ in tops]
            g = max(set(groups), key=groups.count)
            share = [r.group_us(g) / r.total_us() for r in clustered]
            parts.append(f"bottleneck: {GROUP_LABEL[g]} "
                         f"({100 * min(share):.0f}-{100 * max(share):.0f} % of the cluster's "
                         "CPU a frame)")
        out.append(f"{size} frames a message: " + "; ".join(parts))
    return out


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    bench = Bench(args)
    print(f"cluster benchmark (issue 16), {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
          f"{' (quick)' if args.quick else ''}")
    print(f"machine: {machine()}; load average {load0:.2f} at start")
    print(f"fleet: {len(bench.fleet)} vehicles, {bench.n_partitions} partitions: "
          + ", ".join(f"{v.name} ({v.base}) p{v.partition}" for v in bench.fleet))
    try:
        bench.start()
        print(f"servers: {server_versions(bench.influx)}, on loopback, data in "
              f"{bench.workdir}\n")
        if args.only in (None, "single"):
            bench.single()
        if args.only != "single":
            log("starting a RabbitMQ cluster of 3 nodes")
            bench.start_cluster()
            assert bench.cluster is not None
            log(f"   RabbitMQ {bench.cluster.ctl('version').strip()}")
            if args.only != "failover":
                for n in (1, 2, 3):
                    bench.clustered(n)
            if not args.no_failover:
                c1 = min((r for r in bench.runs if r.label.startswith("cluster, 1 ")),
                         key=lambda r: r.per_message, default=None)
                bench.failover(args.steady_rate
                               or (min(3000.0, 0.5 * c1.rate) if c1 else 2000.0))
    finally:
        bench.close()
    print()
    summary(bench.runs)
    for r in bench.runs:
        for note in r.notes:
            print(f"- {note}")
    if bench.failover_lines:
        print("\nfailover (2 instances, steady load):")
        for ln in bench.failover_lines:
            print(f"- {ln}")
    print("\nfound:" if bench.findings else "\nfound: no frame lost, no instance exited, no "
          "gap counted")
    for f in bench.findings:
        print(f"- {f}")
    print("\nin the ingest logs (errors and warnings, repeats folded):" if bench.log_lines
          else "\nin the ingest logs: no errors or warnings")
    for f in bench.log_lines:
        print(f"- {f}")
    print("\nconclusion:")
    for line in conclusion(bench.runs):
        print(f"- {line}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; whole run "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
