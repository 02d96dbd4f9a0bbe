#!/usr/bin/env python
"""The ingest end to end, with real Mosquitto and InfluxDB: throughput, latency, memory.

    python benchmarks/ingest.py [--quick] [--profile]

Starts its own Mosquitto and InfluxDB 1.x on loopback ports with temporary data
directories, runs the real ingest (`python -m groundstation ingest`, a process of its own)
between them, and measures:

1. Throughput. Apollo frames, many per message (QoS 1), from a publisher process, through
   the broker and the ingest into InfluxDB: frames/s and field values/s from the first
   publish until the last frame is queryable, with a count of the stored points (zero
   loss). In the same run, InfluxDB's own write ceiling for the same points: the line
   protocol the ingest produces for those frames
   (`groundstation.storage.influx.lineprotocol.batch_lines`), in 5,000-line bodies
   prepared in advance, gzip'd and plain, written by several concurrent /write requests,
   before and after the ingest run. Then the ratio to the median of the ceiling runs sent
   as the ingest sends (plain on loopback), and to the best of all of them, with the
   spread of the ceiling runs themselves.
2. Latency at live rate: both vehicles at their real frame rates, one frame a message. A
   bus voltage is driven below its red limit and back, over and over; frame published ->
   alarm event received on MQTT, and frame published -> value queryable in InfluxDB.
   With the shipped configuration and with a low-latency one.
3. Memory: the ingest's RSS at live rate, during an InfluxDB outage (frames keep flowing;
   the sink spools to disk) and after recovery, with the spool's size on disk.

Numbers and method: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import http.client
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
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
from machine import cpu_model  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from groundstation.config import InfluxConfig, IngestConfig  # noqa: E402
from groundstation.core import topics  # noqa: E402
from groundstation.core.decom import StreamDecoder  # noqa: E402
from groundstation.core.definitions import VehicleDefinition, load_all  # noqa: E402
from groundstation.core.encoder import FrameEncoder  # noqa: E402
from groundstation.core.envelope import encode_envelope  # noqa: E402
from groundstation.deploy.broker_auth import deploy_settings  # noqa: E402
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer, find_binary  # noqa: E402
from groundstation.storage.influx.lineprotocol import batch_lines  # noqa: E402
from simulators.downlink import nominal_values  # noqa: E402

APOLLO, SOYUZ = "apollo_csm", "soyuz"
VEHICLES = (APOLLO, SOYUZ)
DB = "groundstation"
CLIENT_ID = "gs-bench-ingest"  # one id for every ingest run: a restart resumes the session
POOL_FRAMES = 5000  # distinct Apollo frames the throughput publisher cycles through
LINES_PER_BODY = 5000  # ceiling requests
# Throughput frames are dated from the docking (1975-07-17 16:09 GMT), apart from live data.
DOCKING_NS = int(dt.datetime(1975, 7, 17, 16, 9, tzinfo=dt.UTC).timestamp()) * 10**9
# What the live publisher drives below its red limit: (parameter, value, first frame of its
# low half of each 10-frame cycle). Low for 5 frames (the 5th completes the persistence of 5
# samples: "raised"), then nominal for 5 ("returned_to_normal" at the first).
TOGGLES: dict[str, list[tuple[str, float, int]]] = {
    APOLLO: [("main_bus_a_volts", 25.0, 0), ("main_bus_b_volts", 25.0, 5)],
    SOYUZ: [("bus_volts", 22.0, 0)],
}
CYCLE = 10
ALIGN = 6400  # a multiple of every live pool's length (Apollo 50, Soyuz 1,280)
# The field whose presence says a frame is stored (sampled in every frame).
PROBE_FIELD = {APOLLO: "main_bus_a_volts", SOYUZ: "bus_volts"}
# The shipped defaults of the two latency knobs.
SHIPPED = {"batch_max_delay_ms": int(IngestConfig.model_fields["batch_max_delay_ms"].default),
           "flush_interval_ms": int(InfluxConfig.model_fields["flush_interval_ms"].default)}


# --- small helpers --------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """q-th percentile (nearest rank) of values; NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def fmt_n(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):,.1f} MiB"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | None, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or one of its threads); 0 if gone."""
    if pid is None:
        return 0.0
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK
    return 0.0


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) if gone."""
    rss = hwm = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class CpuMeter:
    """CPU used by named processes (and everything else) between start() and stop()."""

    def __init__(self, pids: dict[str, int | None], threads_of: int | None = None) -> None:
        self.pids = pids
        self.threads_of = threads_of  # a pid whose main thread is reported on its own
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _snap(self) -> dict[str, float]:
        out = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        if self.threads_of is not None:
            out["_main"] = proc_cpu_s(self.threads_of, self.threads_of)
        out["_busy"] = system_busy_s()
        out["_self"] = proc_cpu_s(os.getpid())
        return out

    def start(self) -> None:
        self._t0, self._a = time.monotonic(), self._snap()

    def stop(self) -> None:
        b = self._snap()
        self.wall = time.monotonic() - self._t0
        self.used = {k: b[k] - self._a.get(k, 0.0) for k in b}

    def share(self, name: str) -> float:
        """% of one core."""
        return 100 * self.used.get(name, 0.0) / self.wall if self.wall else math.nan

    def describe(self) -> str:
        ours = sum(v for k, v in self.used.items() if not k.startswith("_")) + self.used["_self"]
        others = max(0.0, self.used["_busy"] - ours)
        parts = [f"{name} {self.share(name):.0f}%" for name in self.pids]
        if self.threads_of is not None:
            parts.append(f"(ingest event-loop thread {self.share('_main'):.0f}%)")
        parts.append(f"benchmark itself {self.share('_self'):.0f}%")
        parts.append(f"other processes {100 * others / self.wall:.0f}%")
        idle = max(0.0, (os.cpu_count() or 1) * self.wall - self.used["_busy"])
        parts.append(f"idle {100 * idle / self.wall:.0f}%")
        return ", ".join(parts) + " of one core"


# --- telemetry -----------------------------------------------------------------------------


def steady_values(defn: VehicleDefinition, n: int, seed: int) -> dict[str, Any]:
    """n frames of healthy telemetry: each analog near nominal with sensor noise, kept
    inside its yellow band with a margin (no alarms); discretes and counters nominal."""
    rng = np.random.default_rng(seed)
    nominal = nominal_values(defn)
    out: dict[str, Any] = {}
    for p in defn.parameters:
        v = nominal[p.id]
        if p.type != "analog":
            out[p.id] = v
            continue
        lo, hi = p.eng_range()
        safe_lo, safe_hi = lo, hi
        band = (p.limits.yellow or p.limits.red) if p.limits else None
        if band is not None:
            safe_lo = band[0] if band[0] is not None else lo
            safe_hi = band[1] if band[1] is not None else hi
        margin = 0.15 * (safe_hi - safe_lo)
        noisy = float(v) + rng.normal(0.0, 0.004 * (hi - lo), n)
        out[p.id] = np.clip(noisy, safe_lo + margin, safe_hi - margin)
    return out


def throughput_pool(defn: VehicleDefinition, n: int = POOL_FRAMES) -> NDArray[np.uint8]:
    """n consecutive frames (n a multiple of the counter modulus, so cycling them keeps
    the frame counter continuous)."""
    assert n % defn.frame.counter.modulus == 0
    return FrameEncoder(defn).encode(steady_values(defn, n, seed=1975), n,
                                     defn.frame.counter.first)


def live_pool(defn: VehicleDefinition) -> NDArray[np.uint8]:
    """Frames for the live publisher: healthy, except the TOGGLES parameters, low for half
    of each 10-frame cycle. Length: a multiple of both the cycle and the counter modulus."""
    mod = defn.frame.counter.modulus
    n = mod * CYCLE // math.gcd(mod, CYCLE)
    values = steady_values(defn, n, seed=1717)
    pos = np.arange(n) % CYCLE
    for pid, low, start in TOGGLES[defn.vehicle]:
        is_low = (pos - start) % CYCLE < CYCLE // 2
        values[pid] = np.where(is_low, low, float(nominal_values(defn)[pid]))
    return FrameEncoder(defn).encode(values, n, defn.frame.counter.first)


def expected_events(vehicle: str, seqs: Iterable[int]) -> int:
    """Alarm events the toggles cause in frames `seqs` (cycle position seq % 10; the frames
    must not be the first of a run): 'raised' on the 5th low frame, 'returned_to_normal'
    on the first nominal one after it."""
    return sum(1 for s in seqs for _, _, start in TOGGLES[vehicle]
               if (s - start) % CYCLE in (4, 5))


def aligned(seq: int) -> int:
    """The next sequence number that starts both live pools and the toggle cycle."""
    return -(-seq // ALIGN) * ALIGN


# --- MQTT -----------------------------------------------------------------------------------


def mqtt_connect(host: str, port: int, client_id: str,
                 on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None] | None = None,
                 subscriptions: Sequence[tuple[str, int]] = (),
                 auth: tuple[str, str] | None = None) -> mqtt.Client:
    """A paho client with its network thread running, connected (and subscribed); `auth`:
    (username, password), else anonymous."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311)
    if auth is not None:
        client.username_pw_set(*auth)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            for topic, qos in subscriptions:
                c.subscribe(topic, qos)
            connected.set()

    client.on_connect = on_connect
    if on_message is not None:
        client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(15):
        raise RuntimeError(f"could not connect to the broker at {host}:{port}")
    return client


class Monitor:
    """Subscribes to alarm events and the ingest's self-telemetry; timestamps arrivals."""

    def __init__(self, host: str, port: int) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []  # (received ns, event)
        self.stats: dict[str, Any] = {}
        self._lock = threading.Lock()
        subs = [(topics.alarms(v), 1) for v in VEHICLES] + [(topics.INGEST_STATS, 0)]
        self.client = mqtt_connect(host, port, f"bench-monitor-{os.getpid()}",
                                   self._on_message, subs)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.time_ns()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if msg.topic == topics.INGEST_STATS:
                self.stats = doc
            elif isinstance(doc, dict) and "time_ns" in doc:
                self.events.append((t, doc))

    def events_between(self, t0: int, t1: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(t, d) for t, d in self.events if t0 <= d["time_ns"] < t1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- publisher processes --------------------------------------------------------------------


class Child:
    """A publisher subprocess (this file, or `script`, with --role): 'ready', then 'go' on
    stdin."""

    def __init__(self, args: list[str], name: str, logdir: Path,
                 script: Path | None = None) -> None:
        self.name = name
        self._stderr = (logdir / f"{name}.log").open("wb")
        script = script or Path(__file__).resolve()
        self.proc = subprocess.Popen([sys.executable, str(script), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True)
        line = self._readline(60)
        if line.strip() != "ready":
            raise RuntimeError(f"{name} did not start: {line!r}; see {self._stderr.name}")

    def _readline(self, timeout: float) -> str:
        out = self.proc.stdout
        assert out is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            raise RuntimeError(f"{self.name}: no answer within {timeout:g} s")
        return box[0]

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self, timeout: float) -> dict[str, Any]:
        line = self._readline(timeout)
        self.proc.wait(30)
        self._stderr.close()
        try:
            doc: dict[str, Any] = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{self.name} failed: {line!r}; see {self._stderr.name}") from None
        return doc


def role_burst(a: argparse.Namespace) -> int:
    """Publish frames seq .. seq+frames-1 of the pool, `per_message` a message, QoS 1, as
    fast as the broker takes them (or paced at --rate frames/s)."""
    defs = load_all()
    defn = defs[a.vehicle]
    rows = [bytes(r) for r in np.load(a.pool)]
    period = round(1e9 / defn.frame.rate_hz)
    topic = topics.telemetry(defn.vehicle, defn.stream)
    client = mqtt_connect(a.host, a.port, f"bench-burst-{os.getpid()}")
    print("ready", flush=True)
    sys.stdin.readline()
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    seq, end, n_pool = a.seq, a.seq + a.frames, len(rows)
    messages = 0
    first = time.time_ns()
    t_start = time.perf_counter()
    while seq < end:
        n = min(a.per_message, end - seq)
        i = seq % n_pool
        frames = rows[i:i + n] if i + n <= n_pool else rows[i:] + rows[:i + n - n_pool]
        payload = encode_envelope(defn.vehicle, defn.stream, seq, a.t0 + seq * period, frames)
        if a.rate:
            wait = t_start + (seq - a.seq) / a.rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        pending.append(client.publish(topic, payload, qos=1))
        if len(pending) > 500:  # bound the client's own queue
            pending.popleft().wait_for_publish(60)
        seq += n
        messages += 1
    last = time.time_ns()
    for info in pending:
        info.wait_for_publish(60)
    print(json.dumps({"first_ns": first, "last_ns": last, "acked_ns": time.time_ns(),
                      "messages": messages, "frames": a.frames}), flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


@dataclass
class _Feed:
    """One vehicle's live downlink in role_live."""

    index: int
    vehicle: str
    stream: str
    period_ns: int
    seq0: int
    pool: list[bytes]
    sent: int = 0

    def due_ns(self, t_base: int) -> int:
        return t_base + self.sent * self.period_ns


def role_live(a: argparse.Namespace) -> int:
    """Both vehicles in real time, one frame a message, until 'stop' on stdin; writes
    (vehicle index, seq, frame time, publish time) of every message to --out."""
    defs = load_all()
    seq0 = {APOLLO: a.seq_apollo, SOYUZ: a.seq_soyuz}
    feeds = [_Feed(k, v, defs[v].stream, round(1e9 / defs[v].frame.rate_hz), seq0[v],
                   [bytes(r) for r in np.load(f"{a.pool}.{v}.npy")])
             for k, v in enumerate(VEHICLES)]
    client = mqtt_connect(a.host, a.port, f"bench-live-{os.getpid()}")
    print("ready", flush=True)
    sys.stdin.readline()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    t_base = time.time_ns() + 50_000_000
    records: list[tuple[int, int, int, int]] = []
    while not stop.is_set():
        f = min(feeds, key=lambda f: f.due_ns(t_base))  # the next frame due
        t_frame = f.due_ns(t_base)
        wait = (t_frame - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        seq = f.seq0 + f.sent
        payload = encode_envelope(f.vehicle, f.stream, seq, t_frame,
                                  [f.pool[seq % len(f.pool)]])
        t_pub = time.time_ns()
        client.publish(topics.telemetry(f.vehicle, f.stream), payload, qos=1)
        records.append((f.index, seq, t_frame, t_pub))
        f.sent += 1
    np.save(a.out, np.array(records, dtype=np.int64).reshape(-1, 4))
    print(json.dumps({"messages": len(records)}), flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


# --- InfluxDB -------------------------------------------------------------------------------


class Influx:
    """Queries over one keep-alive connection (the pollers run many)."""

    def __init__(self, host: str, port: int, db: str, timeout: float = 30.0) -> None:
        self.host, self.port, self.db, self.timeout = host, port, db, timeout
        self._conn: http.client.HTTPConnection | None = None

    def statements(self, q: str) -> list[list[list[Any]]]:
        """Rows of each statement (empty list when it matched nothing)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        params = urllib.parse.urlencode({"db": self.db, "q": q, "epoch": "ns"})
        try:
            self._conn.request("POST", f"/query?{params}")
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        if resp.status != 200:
            raise OSError(f"InfluxDB query answered {resp.status}: {body[:300]!r}")
        out = []
        for r in json.loads(body).get("results", []):
            if "error" in r:
                raise OSError(f"InfluxDB: {r['error']} in {q}")
            out.append([v for s in r.get("series", []) for v in s["values"]])
        return out

    def scalar(self, q: str) -> int:
        rows = self.statements(q)[0]
        return int(rows[0][1]) if rows else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def line_pool(defn: VehicleDefinition, pool: NDArray[np.uint8], t0: int
              ) -> tuple[list[tuple[str, int]], int]:
    """The ingest's line protocol for one pass of the pool (frame seq i at t0 + i periods),
    split into (everything before the timestamp, timestamp); and its field values."""
    period = round(1e9 / defn.frame.rate_hz)
    times = t0 + np.arange(pool.shape[0], dtype=np.int64) * period
    decoder = StreamDecoder(defn)
    lines = batch_lines(decoder.decode(pool, times), topics.LIVE, decoder.decom)
    split = []
    values = 0
    for line in lines:
        head, _, t = line.rpartition(" ")
        split.append((head + " ", int(t)))
        values += head.split(" ", 1)[1].count(",") + 1
    return split, values


def ceiling_bodies(split: list[tuple[str, int]], reps: range, shift_ns: int,
                   compressed: bool = True) -> list[bytes]:
    """5,000-line bodies (gzip'd, or plain) of the pool's lines for repetitions `reps` (rep
    r is frame seq r*P .. (r+1)*P-1: the same points the ingest writes for those frames)."""
    bodies = []
    for r in reps:
        off = r * shift_ns
        lines = [f"{head}{t + off}" for head, t in split]
        for i in range(0, len(lines), LINES_PER_BODY):
            body = ("\n".join(lines[i:i + LINES_PER_BODY]) + "\n").encode()
            bodies.append(gzip.compress(body, 1) if compressed else body)
    return bodies


def write_ceiling(server: InfluxDBServer, db: str, bodies: list[bytes], concurrency: int,
                  compressed: bool = True) -> float:
    """Write every body with `concurrency` requests in flight; seconds taken."""
    server.create_database(db)
    nxt = iter(range(len(bodies)))
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        path = f"/write?{urllib.parse.urlencode({'db': db, 'precision': 'ns'})}"
        while not errors:
            with lock:
                i = next(nxt, None)
            if i is None:
                break
            headers = {"Content-Type": "text/plain"}
            if compressed:
                headers["Content-Encoding"] = "gzip"
            conn.request("POST", path, bodies[i], headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 204:
                errors.append(f"{resp.status} {body[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"ceiling write failed: {errors[0]}")
    return time.perf_counter() - t0


# --- the ingest process ---------------------------------------------------------------------


class IngestProcess:
    """A `python -m groundstation ingest` child (this benchmark's and cluster.py's): its
    process, its log file, and how it is stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path = cwd / "ingest.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 15) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log(f"   ingest {self.name} did not stop within 60 s of SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Ingest(IngestProcess):
    """`python -m groundstation ingest`, configured by flags, in a process of its own."""

    def __init__(self, name: str, workdir: Path, broker: MosquittoServer,
                 influx: InfluxDBServer, **knobs: Any) -> None:
        self.name = name
        self.dir = workdir / f"ingest-{name}"
        self.dir.mkdir(parents=True)
        self.knobs = {**SHIPPED, **knobs}
        self.spool_dir = self.dir / "spool"
        cmd = [sys.executable, "-m", "groundstation", "ingest",
               "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
               "--mqtt-client-id", CLIENT_ID, "--influx-api", "v1", "--influx-url", influx.url,
               "--influx-database", DB, "--influx-spool-dir", str(self.spool_dir),
               "--ingest-archive-dir", str(self.dir / "archive"),
               "--ingest-batch-max-delay-ms", str(self.knobs["batch_max_delay_ms"]),
               "--influx-flush-interval-ms", str(self.knobs["flush_interval_ms"])]
        if "compress" in self.knobs:
            cmd += ["--influx-compress", self.knobs["compress"]]
        cmd += self.knobs.get("extra", [])
        env = {k: v for k, v in os.environ.items() if not k.startswith("GS_")}
        self._spawn(cmd, env, self.dir)
        deadline = time.monotonic() + 60
        while b"subscribed at" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"ingest did not start:\n{self.tail()}")
            time.sleep(0.05)

    def describe(self) -> str:
        compress = (f"compress={self.knobs['compress']}, " if "compress" in self.knobs
                    else "")
        extra = "".join(f"{flag}, " for flag in self.knobs.get("extra", []))
        return (f"batch_max_delay_ms={self.knobs['batch_max_delay_ms']}, "
                f"flush_interval_ms={self.knobs['flush_interval_ms']}, {compress}{extra}other "
                "options at their defaults")

    def spool_bytes(self) -> int:
        total = 0
        with contextlib.suppress(OSError):
            for p in self.spool_dir.glob("seg-*.spool"):
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
        return total

    def problems(self) -> list[str]:
        return [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                if " ERROR " in ln or "Traceback" in ln]


class Sampler(threading.Thread):
    """The ingest's RSS and spool size every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.ingest: Ingest | None = None
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, rss KiB, spool bytes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            ing = self.ingest
            if ing is not None and ing.proc.poll() is None:
                self.samples.append((time.monotonic(), rss_kib(ing.pid)[0], ing.spool_bytes()))

    def between(self, t0: float, t1: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if t0 <= s[0] < t1]

    def stop(self) -> None:
        self._halt.set()


LOOKBACK_NS = 2_000_000_000


class VisibilityPoller(threading.Thread):
    """Polls InfluxDB for live frames newer than the last seen, per vehicle; records when
    each frame time first showed up (an upper bound, by one poll, of when it became
    queryable)."""

    def __init__(self, server: InfluxDBServer, since_ns: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.influx = Influx(server.host, server.port, DB, timeout=5)
        self.since = dict.fromkeys(VEHICLES, since_ns)
        self.interval = interval_s
        self.seen: dict[tuple[str, int], int] = {}
        self.poll_ns: list[int] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            # Look back a little behind the newest frame seen: with more than one write in
            # flight, an older frame can become visible after a newer one.
            q = "; ".join(f"SELECT {PROBE_FIELD[v]} FROM tm WHERE source='live' AND "
                          f"vehicle='{v}' AND time > {self.since[v] - LOOKBACK_NS}"
                          for v in VEHICLES)
            t0 = time.time_ns()
            try:
                results = self.influx.statements(q)
            except OSError:
                self.errors += 1
                self._halt.wait(0.2)
                continue
            t1 = time.time_ns()
            self.poll_ns.append(t1 - t0)
            for v, rows in zip(VEHICLES, results, strict=True):
                for row in rows:
                    self.seen.setdefault((v, int(row[0])), t1)
                    self.since[v] = max(self.since[v], int(row[0]))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.influx.close()


class Live:
    """The live publisher (both vehicles in real time) and what it sent."""

    def __init__(self, bench: Bench, seq0: dict[str, int]) -> None:
        self.seq0 = seq0
        self.out = bench.workdir / f"live-{time.monotonic_ns()}.npy"
        b = bench.broker
        self.child = Child(["--role", "live", "--host", b.host, "--port", str(b.port),
                            "--pool", str(bench.live_pool_prefix), "--out", str(self.out),
                            "--seq-apollo", str(seq0[APOLLO]), "--seq-soyuz", str(seq0[SOYUZ])],
                           "live-publisher", bench.workdir)
        self.records: NDArray[np.int64] = np.zeros((0, 4), dtype=np.int64)

    def go(self) -> int:
        self.child.send("go")
        return time.time_ns()

    def stop(self) -> NDArray[np.int64]:
        self.child.send("stop")
        self.child.result(60)
        self.records = np.load(self.out)
        return self.records

    def next_seq(self) -> dict[str, int]:
        """Where a following live run starts."""
        out = {}
        for k, v in enumerate(VEHICLES):
            r = self.records[self.records[:, 0] == k]
            out[v] = aligned(int(r[:, 1].max()) + 1 if r.size else self.seq0[v])
        return out


# --- the benchmark --------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # measure, value, goal, ok
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("met" if ok else "NOT MET")
        self.rows.append((measure, value, goal, verdict))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.workdir = Path(tempfile.mkdtemp(prefix="gs-ingest-bench-"))
        self.defs = load_all()
        self.apollo = self.defs[APOLLO]
        self.period = {v: round(1e9 / self.defs[v].frame.rate_hz) for v in VEHICLES}
        self.results = Results()
        self.sampler = Sampler()
        # The deployment's broker limits and TCP settings (deploy/mosquitto/mosquitto.conf:
        # queue and in-flight bounds, packet size, set_tcp_nodelay); anonymous, no ACL.
        self.broker_settings = [] if args.broker_defaults else deploy_settings()
        self.broker = MosquittoServer(self.workdir / "mosquitto",
                                      extra_config=self.broker_settings)
        self.influx = InfluxDBServer(self.workdir / "influxdb")
        self.pool_path = self.workdir / "pool.apollo_csm.npy"
        self.live_pool_prefix = self.workdir / "live-pool"
        self.monitor: Monitor | None = None
        self.throughput_next_seq = 0
        self.live_cpu: dict[str, float] = {}  # label -> the ingest's CPU s in the window

    # -- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        self.broker.start()
        self.influx.start()
        self.influx.create_database(DB)
        self.monitor = Monitor(self.broker.host, self.broker.port)
        self.pool = throughput_pool(self.apollo)
        np.save(self.pool_path, self.pool)
        for v in VEHICLES:
            np.save(f"{self.live_pool_prefix}.{v}.npy", live_pool(self.defs[v]))
        self.sampler.start()

    def close(self) -> None:
        self.sampler.stop()
        if self.monitor is not None:
            self.monitor.close()
        self.influx.stop()
        self.broker.stop()
        if self.args.keep:
            print(f"\nkept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def burst(self, seq: int, frames: int, per_message: int, rate: float = 0.0) -> Child:
        b = self.broker
        return Child(["--role", "burst", "--host", b.host, "--port", str(b.port),
                      "--pool", str(self.pool_path), "--vehicle", APOLLO, "--seq", str(seq),
                      "--frames", str(frames), "--per-message", str(per_message),
                      "--t0", str(DOCKING_NS), "--rate", str(rate)],
                     "burst-publisher", self.workdir)

    def frame_ns(self, seq: int) -> int:
        return DOCKING_NS + seq * self.period[APOLLO]

    def count(self, influx: Influx, vehicle: str, t0: int, t1: int) -> int:
        fld = PROBE_FIELD[vehicle]
        return influx.scalar(f"SELECT count({fld}) FROM tm WHERE source='live' AND "
                             f"vehicle='{vehicle}' AND time >= {t0} AND time <= {t1}")

    def wait_stored(self, influx: Influx, vehicle: str, t_first: int, t_last: int,
                    expect: int, timeout: float, poll_s: float = 0.05) -> tuple[int, int]:
        """Wait until the frame at t_last is queryable and `expect` frames are stored in
        [t_first, t_last]: (time the last frame was first seen, count). Gives up once the
        count has not grown for 10 s."""
        fld = PROBE_FIELD[vehicle]
        q = (f"SELECT {fld} FROM tm WHERE source='live' AND vehicle='{vehicle}' AND "
             f"time = {t_last}")
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if influx.statements(q)[0]:
                    seen = time.time_ns()
                    break
            time.sleep(poll_s)
        n, last_growth, prev = 0, time.monotonic(), -1
        # At least one count, even when the last frame was not seen in time (so that a
        # missing last frame does not read as nothing stored).
        with contextlib.suppress(OSError):
            n = self.count(influx, vehicle, t_first, t_last)
        while time.monotonic() < deadline and n < expect:
            with contextlib.suppress(OSError):
                n = self.count(influx, vehicle, t_first, t_last)
            if n >= expect:
                break
            if n != prev:
                prev, last_growth = n, time.monotonic()
            elif time.monotonic() - last_growth > 10:
                break
            time.sleep(0.25)
        return seen, n

    # -- 1. throughput -------------------------------------------------------------------

    def throughput(self) -> None:
        a = self.args
        n_frames = a.frames or (60_000 if self.quick else 300_000)
        n_frames = max(POOL_FRAMES, n_frames // POOL_FRAMES * POOL_FRAMES)
        per_msg = a.frames_per_message
        reps = range(1, 1 + n_frames // POOL_FRAMES)
        concurrencies = [int(c) for c in a.ceiling_concurrency.split(",")]
        log(f"1. throughput: {n_frames:,} Apollo frames, {per_msg} a message; InfluxDB "
            f"ceiling for the same points with {'/'.join(map(str, concurrencies))} requests "
            "in flight, before and after")

        split, values_pool = line_pool(self.apollo, self.pool, DOCKING_NS)
        values_per_frame = values_pool / POOL_FRAMES
        lines_per_frame = len(split) / POOL_FRAMES
        t0 = time.perf_counter()
        encodings = a.ceiling_bodies.split(",")
        bodies = {enc: ceiling_bodies(split, reps, POOL_FRAMES * self.period[APOLLO],
                                      compressed=enc == "gzip") for enc in encodings}
        log(f"   ceiling bodies: {len(bodies[encodings[0]])} x {LINES_PER_BODY} lines, "
            + ", ".join(f"{mib(sum(map(len, b)))} {enc}" for enc, b in bodies.items())
            + f", prepared in {time.perf_counter() - t0:.1f} s (not timed); "
            f"{lines_per_frame:.2f} lines and {values_per_frame:.2f} field values a frame")

        # (before/after and body encoding, requests in flight, frames/s, influxd CPU us
        # a frame)
        ceilings: list[tuple[str, int, float, float]] = []

        def ceiling(when: str) -> None:
            for enc in encodings:
                tag = f"{when}, {enc}"
                for c in concurrencies:
                    meter = CpuMeter({"influxd": self.influx.pid})
                    meter.start()
                    secs = write_ceiling(self.influx, f"ceiling_{when}_{enc}_{c}", bodies[enc],
                                         c, compressed=enc == "gzip")
                    meter.stop()
                    rate = n_frames / secs
                    db_us = 1e6 * meter.used["influxd"] / n_frames
                    ceilings.append((tag, c, rate, db_us))
                    log(f"   ceiling ({tag}, {c} in flight): {fmt_n(rate)} frames/s, "
                        f"{fmt_n(rate * values_per_frame)} values/s in {secs:.1f} s; influxd "
                        f"{db_us:.1f} us CPU a frame; CPU: {meter.describe()}")

        ceiling("before")

        knobs: dict[str, Any] = {}
        if a.throughput_delay_ms is not None:
            knobs["batch_max_delay_ms"] = a.throughput_delay_ms
        if a.compress is not None:
            knobs["compress"] = a.compress
        if a.ingest_flag:
            knobs["extra"] = a.ingest_flag
        ingest = Ingest("throughput", self.workdir, self.broker, self.influx, **knobs)
        self.sampler.ingest = ingest
        log(f"   ingest (pid {ingest.pid}): {ingest.describe()}")
        influx = Influx(self.influx.host, self.influx.port, DB)
        try:
            # warm-up: one pool's worth, stored before the clock starts
            pub = self.burst(0, POOL_FRAMES, per_msg)
            pub.send("go")
            pub.result(120)
            seen, n = self.wait_stored(influx, APOLLO, self.frame_ns(0),
                                       self.frame_ns(POOL_FRAMES - 1), POOL_FRAMES, 60)
            if n != POOL_FRAMES:
                raise RuntimeError(f"warm-up: {n} of {POOL_FRAMES} frames stored\n"
                                   f"{ingest.tail()}")

            first_seq, last_seq = POOL_FRAMES, POOL_FRAMES + n_frames - 1
            pub = self.burst(first_seq, n_frames, per_msg)
            meter = CpuMeter({"ingest": ingest.pid, "influxd": self.influx.pid,
                              "mosquitto": self.broker.pid, "publisher": pub.proc.pid},
                             threads_of=ingest.pid)
            spy = self.start_profile(ingest.pid)
            meter.start()
            pub.send("go")
            seen, stored = self.wait_stored(influx, APOLLO, self.frame_ns(first_seq),
                                            self.frame_ns(last_seq), n_frames,
                                            timeout=max(120.0, n_frames / 1000))
            meter.stop()
            profile = self.stop_profile(spy)
            sent = pub.result(60)
            time.sleep(1.2)  # the ingest's next self-telemetry, which covers the whole run
            stats = self.monitor.stats if self.monitor else {}
            if not seen:
                raise RuntimeError(f"the last frame never became queryable ({stored:,} of "
                                   f"{n_frames:,} stored)\n{ingest.tail()}")
            secs = (seen - sent["first_ns"]) / 1e9
            e2e = n_frames / secs
            pub_s = (sent["last_ns"] - sent["first_ns"]) / 1e9
            log(f"   ingest: {n_frames:,} frames in {sent['messages']:,} messages, published "
                f"in {pub_s:.1f} s; last frame queryable {secs:.1f} s after the first publish: "
                f"{fmt_n(e2e)} frames/s, {fmt_n(e2e * values_per_frame)} values/s; stored "
                f"{stored:,}/{n_frames:,}")
            ingest_us = 1e6 * meter.used["ingest"] / n_frames
            db_us = 1e6 * meter.used["influxd"] / n_frames
            broker_us = 1e6 * meter.used["mosquitto"] / n_frames
            log(f"   CPU during the run: {meter.describe()}; a frame cost the ingest "
                f"{ingest_us:.1f} us of CPU (all its threads) and influxd {db_us:.1f} us")
            sink = (stats.get("sink") or {}) if isinstance(stats, dict) else {}
            if sink.get("batches_written"):
                per_req = sink["lines_written"] / sink["batches_written"]
                w50 = 1000 * (sink.get("write_latency_p50_s") or 0)
                w99 = 1000 * (sink.get("write_latency_p99_s") or 0)
                log(f"   ingest's own view: {stats.get('frames_in'):,} frames in, decode p50 "
                    f"{stats.get('decode_ms_p50') or 0:.1f} ms a batch, {per_req:,.0f} lines a "
                    f"write request, write latency p50 {w50:.0f} ms, p99 {w99:.0f} ms, submit "
                    f"blocked {sink.get('submit_blocked', 0)} times, alarm events "
                    f"{stats.get('alarm_events')}, rejected {stats.get('rejected_total')}")

            paced = None
            if not self.quick and not a.no_paced:
                paced = self.paced(influx, last_seq + 1, 0.9 * e2e, per_msg)
            time.sleep(1.0)
            rss_idle, hwm = rss_kib(ingest.pid)
        finally:
            influx.close()
            self.sampler.ingest = None
            ingest.stop()
        ceiling("after")

        best = max(c[2] for c in ceilings)
        # What the ingest is held to: the database's ceiling for its requests as it sends
        # them (plain on this loopback, where compress=auto turns gzip off), the median of
        # those runs, before and after. Not the best of all runs: the machine's speed
        # moves from run to run, and the best is the fastest moment, not the database's
        # ceiling (the ceiling runs themselves often fall below 80 % of their best).
        config = InfluxConfig.model_validate({"url": self.influx.url,
                                              "compress": a.compress or "auto"})
        sent_as = "gzip" if config.compress_writes() else "plain"
        own = [c[2] for c in ceilings if c[0].endswith(sent_as)] or [c[2] for c in ceilings]
        median = pct(own, 50)
        ratio = e2e / median
        r = self.results
        r.add("throughput: ingest end to end (Apollo, "
              f"{per_msg} frames/msg)",
              f"{fmt_n(e2e)} frames/s = {fmt_n(e2e * values_per_frame)} values/s")
        r.add("  zero loss (points stored / frames sent)", f"{stored:,} / {n_frames:,}",
              "equal", stored == n_frames)
        for tag, c, rate, us in ceilings:
            r.add(f"  InfluxDB ceiling, same points ({tag}, {c} in flight)",
                  f"{fmt_n(rate)} frames/s = {fmt_n(rate * values_per_frame)} values/s "
                  f"({us:.0f} us influxd CPU/frame)")
        r.add(f"  ingest / ceiling: median of the {len(own)} {sent_as} runs (as the ingest "
              "sends)", f"{100 * ratio:.0f} %", ">= 80 %", ratio >= 0.8)
        r.add(f"  ingest / best of all {len(ceilings)} ceiling runs; the slowest ceiling run / "
              "the best", f"{100 * e2e / best:.0f} %; "
              f"{100 * min(c[2] for c in ceilings) / best:.0f} %")
        r.add("  CPU a frame, end to end: ingest (all threads) / influxd",
              f"{ingest_us:.1f} us / {db_us:.1f} us")
        # Both move together with what the machine's other tenants do to its caches and
        # clock (6.3-8.7 us for the same code in one morning); their ratio, in the same
        # run, moves far less: it is what compares two versions of the ingest.
        r.add("  ingest's CPU a frame as a share of influxd's, same run",
              f"{100 * ingest_us / db_us:.1f} %")
        # The ingest, the broker and the database share this machine's cores: even with
        # every core busy, the pipeline cannot beat cores / (CPU a frame, all three).
        cores = os.cpu_count() or 1
        bound = cores * 1e6 / (ingest_us + db_us + broker_us)
        r.add(f"  bound when all three share the {cores} cores",
              f"{fmt_n(bound)} frames/s = {100 * bound / median:.0f} % of the ceiling")
        if paced is not None:
            rate, lag, ok_count = paced
            r.add(f"  paced at 90 % ({fmt_n(rate)} frames/s): lag of the last frame",
                  f"{lag:.2f} s", "< 2 s, all stored", ok_count and lag < 2.0)
        r.add("  ingest RSS: peak (VmHWM) / once idle again", f"{mib(hwm * 1024)} / "
              f"{mib(rss_idle * 1024)}")
        r.notes.append(f"throughput run CPU: {meter.describe()}")
        self.e2e_rate = e2e
        self.throughput_next_seq = last_seq + 1
        if profile:
            r.notes.append("py-spy profile of the ingest during the throughput run (the "
                           "numbers of this run carry the profiler's overhead):\n" + profile)

    def paced(self, influx: Influx, seq: int, rate: float, per_msg: int
              ) -> tuple[float, float, bool]:
        """Publish at `rate` frames/s for a while: how far behind is the last frame?"""
        seconds = 10.0
        n = max(per_msg, int(rate * seconds) // per_msg * per_msg)
        pub = self.burst(seq, n, per_msg, rate=rate)
        pub.send("go")
        seen, stored = self.wait_stored(influx, APOLLO, self.frame_ns(seq),
                                        self.frame_ns(seq + n - 1), n, 120)
        sent = pub.result(60)
        lag = (seen - sent["last_ns"]) / 1e9 if seen else math.inf
        achieved = n / ((sent["last_ns"] - sent["first_ns"]) / 1e9)
        log(f"   paced run: {n:,} frames at {fmt_n(achieved)} frames/s for "
            f"{(sent['last_ns'] - sent['first_ns']) / 1e9:.1f} s; last frame queryable "
            f"{lag:.2f} s after its publish; stored {stored:,}/{n:,}")
        return achieved, lag, stored == n

    # -- profiling -----------------------------------------------------------------------

    def start_profile(self, pid: int) -> tuple[subprocess.Popen[bytes], Path] | None:
        if not self.args.profile:
            return None
        exe = self.args.py_spy or find_binary("py-spy")
        if exe is None:
            log("   --profile: py-spy not found (pip install py-spy, or --py-spy PATH)")
            return None
        out = self.workdir / "profile.txt"
        proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250",
                                 "--format", "raw", "--output", str(out), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return proc, out

    def stop_profile(self, spy: tuple[subprocess.Popen[bytes], Path] | None) -> str:
        if spy is None:
            return ""
        proc, out = spy
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if not out.exists():
            return "(py-spy wrote nothing)"
        return summarize_profile(out.read_text(errors="replace"))

    # -- 2. latency at live rate ---------------------------------------------------------

    def live_phase(self, name: str, label: str, seq0: dict[str, int], outage: bool,
                   **knobs: int) -> dict[str, int]:
        """An ingest with `knobs`, both vehicles live: latency (and the outage)."""
        seconds = self.args.latency_seconds or (6.0 if self.quick else 20.0)
        ingest = Ingest(name, self.workdir, self.broker, self.influx, **knobs)
        self.sampler.ingest = ingest
        log(f"   ingest (pid {ingest.pid}): {ingest.describe()}")
        live = Live(self, seq0)
        influx = Influx(self.influx.host, self.influx.port, DB)
        windows: list[tuple[str, int, int, VisibilityPoller | None]] = []
        try:
            t_go = live.go()
            windows.append(self.latency_window(t_go, seconds, label))
            if outage:
                windows.append(self.outage(ingest, windows[0][1], windows[0][2]))
            records = live.stop()
            self.published = {(VEHICLES[int(k)], int(t)): (int(s), int(tp))
                              for k, s, t, tp in records}
            for lab, w0, w1, poller in windows:
                self.latency_report(lab, w0, w1, poller)
            self.verify_live(influx, records, label)
        finally:
            live.child.kill()
            influx.close()
            self.sampler.ingest = None
            rc = ingest.stop()
            problems = ingest.problems()
            if rc != 0 or problems:
                self.results.notes.append(f"ingest {name}: exit status {rc}; log: "
                                          + " | ".join(problems[:5]))
        return live.next_seq()

    def latency_window(self, t_go: int, seconds: float, label: str
                       ) -> tuple[str, int, int, VisibilityPoller]:
        """Poll for queryable frames over [t_go + warm-up, + seconds]; the publish times
        come from the publisher when it stops, so the report is made then."""
        warm = 2.0 if self.quick else 3.0
        w0 = t_go + int(warm * 1e9)
        w1 = w0 + int(seconds * 1e9)
        poller = VisibilityPoller(self.influx, w0, self.args.poll_ms / 1000)
        time.sleep(max(0.0, (w0 - time.time_ns()) / 1e9))
        poller.start()
        ingest = self.sampler.ingest
        meter = CpuMeter({"ingest": ingest.pid if ingest else None})
        meter.start()
        time.sleep(max(0.0, (w1 - time.time_ns()) / 1e9))
        meter.stop()
        self.live_cpu[label] = meter.used["ingest"]
        # and a little longer, for the window's last frames to become queryable
        time.sleep(1.5)
        poller.stop()
        return label, w0, w1, poller

    def latency_report(self, label: str, w0: int, w1: int,
                       poller: VisibilityPoller | None) -> None:
        """Latencies of frames published in [w0, w1) (frame times)."""
        pub = self.published
        events = self.monitor.events_between(w0, w1) if self.monitor else []
        alarm_ms: dict[str, list[float]] = {v: [] for v in VEHICLES}
        for t_recv, d in events:
            hit = pub.get((d.get("vehicle", ""), d["time_ns"]))
            if hit is not None:
                alarm_ms[d["vehicle"]].append((t_recv - hit[1]) / 1e6)
        expected = sum(expected_events(v, [s for (vv, t), (s, _) in pub.items()
                                           if vv == v and w0 <= t < w1]) for v in VEHICLES)
        every = alarm_ms[APOLLO] + alarm_ms[SOYUZ]
        p50, p99 = pct(every, 50), pct(every, 99)
        log(f"   alarms, {label}: {len(every)} events of {expected} expected; publish -> "
            f"alarm received p50 {p50:.1f} ms, p99 {p99:.1f} ms, max "
            f"{max(every, default=math.nan):.1f} ms (p99 Apollo "
            f"{pct(alarm_ms[APOLLO], 99):.1f}, Soyuz {pct(alarm_ms[SOYUZ], 99):.1f})")
        r = self.results
        r.add(f"latency, {label}: published -> alarm received",
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(every)}/{expected} events)",
              "p99 <= 20 ms", p99 <= 20 and len(every) == expected)
        if poller is None:
            return
        cpu_s = self.live_cpu.get(label)
        frames = sum(1 for (_, t) in pub if w0 <= t < w1)
        if cpu_s is not None and frames:
            # Everything the ingest does at this rate over the frames: the per-message
            # costs of one-frame messages, and its timers and self-telemetry.
            r.add(f"  ingest CPU at live rate, {label}",
                  f"{100 * cpu_s / ((w1 - w0) / 1e9):.1f} % of a core = "
                  f"{1e6 * cpu_s / frames:.0f} us a frame ({frames:,} frames, one a message)")
        vis_ms = []
        missing = 0
        for (v, t_frame), (_, t_pub) in pub.items():
            if w0 <= t_frame < w1:
                t_seen = poller.seen.get((v, t_frame))
                if t_seen is None:
                    missing += 1
                else:
                    vis_ms.append((t_seen - t_pub) / 1e6)
        query_ms = pct([x / 1e6 for x in poller.poll_ns], 50)
        p50, p99 = pct(vis_ms, 50), pct(vis_ms, 99)
        log(f"   queryable, {label}: {len(vis_ms)} frames; publish -> queryable p50 "
            f"{p50:.0f} ms, p99 {p99:.0f} ms, max {max(vis_ms, default=math.nan):.0f} ms "
            f"(a poll every {self.args.poll_ms} ms, {query_ms:.1f} ms a query; never seen: "
            f"{missing})")
        r.add(f"latency, {label}: published -> value queryable",
              f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(vis_ms)} frames)", "p99 <= 1 s",
              p99 <= 1000 and missing == 0)

    # -- 3. memory and the database outage ------------------------------------------------

    def outage(self, ingest: Ingest, w0: int, w1: int
               ) -> tuple[str, int, int, VisibilityPoller | None]:
        """Stop InfluxDB while frames keep flowing; RSS and spool, then recovery."""
        out_s = self.args.outage_seconds or (8.0 if self.quick else 15.0)
        now = time.monotonic()
        steady = self.sampler.between(now - (w1 - w0) / 1e9 - 1.5, now)
        rss_steady = pct([s[1] for s in steady], 50) * 1024
        log(f"3. memory: ingest RSS at live rate {mib(rss_steady)} (median of {len(steady)} "
            f"samples); stopping InfluxDB for {out_s:g} s")
        t_out, m_out = time.time_ns(), time.monotonic()
        self.influx.stop()
        time.sleep(max(0.0, out_s - (time.monotonic() - m_out)))
        self.influx.start()
        m_up, t_up = time.monotonic(), time.time_ns()
        during = self.sampler.between(m_out, m_up)
        rss_out = max((s[1] for s in during), default=0) * 1024
        spool_peak = max((s[2] for s in during), default=0)
        log(f"   InfluxDB back after {m_up - m_out:.1f} s (its restart took "
            f"{self.influx.last_start_seconds or 0:.1f} s): ingest RSS peak {mib(rss_out)}, "
            f"spool peak {mib(spool_peak)} on disk")
        drained = math.nan
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if ingest.spool_bytes() == 0:
                drained = time.monotonic() - m_up
                break
        time.sleep(3.0)
        after = self.sampler.between(time.monotonic() - 2.5, time.monotonic())
        rss_after = pct([s[1] for s in after], 50) * 1024
        log(f"   spool drained {drained:.1f} s after InfluxDB was back; ingest RSS "
            f"{mib(rss_after)} after recovery")
        r = self.results
        r.add("memory: ingest RSS at live rate (both vehicles)", mib(rss_steady))
        r.add(f"  during a {m_up - m_out:.0f} s InfluxDB outage (peak)",
              f"{mib(rss_out)}; spool {mib(spool_peak)} on disk")
        r.add("  after recovery", f"{mib(rss_after)}; spool drained in {drained:.1f} s")
        return "during the outage", t_out, t_up, None

    def verify_live(self, influx: Influx, records: NDArray[np.int64], label: str) -> None:
        """Every live frame sent is stored, once; every alarm event received is stored."""
        parts = []
        ok = True
        for k, v in enumerate(VEHICLES):
            r = records[records[:, 0] == k]
            if not r.size:
                continue
            t0, t1 = int(r[:, 2].min()), int(r[:, 2].max())
            _, n = self.wait_stored(influx, v, t0, t1, len(r), 60)
            ok &= n == len(r)
            parts.append(f"{v} frames {n:,}/{len(r):,}")
        t0, t1 = int(records[:, 2].min()), int(records[:, 2].max()) + 1
        got = len(self.monitor.events_between(t0, t1)) if self.monitor else 0
        stored = 0
        for _ in range(40):
            with contextlib.suppress(OSError):
                stored = influx.scalar(f"SELECT count(state) FROM alarms WHERE "
                                       f"source='live' AND time >= {t0} AND time < {t1}")
            if stored >= got:
                break
            time.sleep(0.25)
        ok &= stored == got
        parts.append(f"alarm events {stored:,}/{got:,}")
        log(f"   stored / sent, {label}: {', '.join(parts)}")
        self.results.add(f"  zero loss, {label} (stored / sent)", "; ".join(parts), "equal",
                         ok)


# Leaves that are a thread waiting, not working (py-spy --nonblocking cannot always tell).
_IDLE = ("select (selectors.py)", "wait (threading.py)", "_worker (thread.py)",
         "readinto (socket.py)", "sleep", "acquire")
# Frames every stack of the event loop or a worker thread goes through.
_PLUMBING = ("runpy", "base_events.py", "events.py", "runners.py", "threading.py",
             "thread.py", "cli.py", "__main__.py")


def summarize_profile(raw: str, top: int = 12) -> str:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output, of the
    samples where a thread was working."""
    self_n: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        if any(frames[-1].endswith(i) or frames[-1].startswith(i) for i in _IDLE):
            idle += int(n)
            continue
        total += int(n)
        self_n[frames[-1]] += int(n)
        for f in set(frames):
            if not any(p in f for p in _PLUMBING):
                incl[f] += int(n)
    if not total:
        return "  (no samples)"
    out = [f"  {total:,} samples of a working thread ({idle:,} idle ones left out). Self:"]
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in self_n.most_common(top)]
    out.append("  Inclusive (the function and what it calls):")
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(path).name})" if path else name


# --- main -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = cpu_model()
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / (1 << 20):.0f} GiB"
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, paho-mqtt "
            f"{importlib.metadata.version('paho-mqtt')}")


def server_versions(influx: InfluxDBServer) -> str:
    mosq = "?"
    exe = find_binary("mosquitto")
    if exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=10).stdout
            mosq = out.splitlines()[0].replace("mosquitto version ", "") if out else "?"
    return f"Mosquitto {mosq}, InfluxDB {influx.version or '?'}"


def print_table(results: Results) -> None:
    w0 = max(len(r[0]) for r in results.rows)
    w1 = max(len(r[1]) for r in results.rows)
    w2 = max(len(r[2]) for r in results.rows)
    head = f"{'measure':<{w0}}  {'result':<{w1}}  {'goal':<{w2}}  "
    print(head)
    print("-" * (len(head) + 7))
    for m, v, g, ok in results.rows:
        print(f"{m:<{w0}}  {v:<{w1}}  {g:<{w2}}  {ok}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer frames, shorter windows, one live configuration (< 1 min)")
    ap.add_argument("--frames", type=int, default=0,
                    help="Apollo frames in the throughput run (default 300,000; quick 60,000)")
    ap.add_argument("--frames-per-message", type=int, default=100,
                    help="frames batched into one MQTT message in the throughput run")
    ap.add_argument("--ceiling-concurrency", default="2,4",
                    help="write requests in flight for InfluxDB's ceiling, comma-separated")
    ap.add_argument("--ceiling-bodies", default="gzip,plain",
                    help="how InfluxDB's ceiling requests are sent: gzip, plain or both")
    ap.add_argument("--compress", choices=("auto", "on", "off"), default=None,
                    help="the throughput run's ingest --influx-compress (default: as "
                         "shipped, auto: off on this loopback)")
    ap.add_argument("--ingest-flag", action="append", default=[], metavar="FLAG=VALUE",
                    help="a further flag for the throughput run's ingest, e.g. "
                         "--ingest-flag=--influx-write-concurrency=3 (repeatable)")
    ap.add_argument("--latency-seconds", type=float, default=0.0,
                    help="measurement window per live configuration (default 20; quick 6)")
    ap.add_argument("--outage-seconds", type=float, default=0.0,
                    help="how long InfluxDB is stopped (default 15; quick 8)")
    ap.add_argument("--low-latency-delay-ms", type=int, default=5,
                    help="batch_max_delay_ms of the low-latency configuration")
    ap.add_argument("--throughput-delay-ms", type=int, default=None,
                    help="batch_max_delay_ms of the throughput run (default: as shipped)")
    ap.add_argument("--poll-ms", type=int, default=10,
                    help="how often the queryable-latency poller asks InfluxDB")
    ap.add_argument("--no-paced", action="store_true", help="skip the paced run at 90 %%")
    ap.add_argument("--profile", action="store_true",
                    help="sample the ingest with py-spy during the throughput run")
    ap.add_argument("--py-spy", default=None, help="path of the py-spy executable")
    ap.add_argument("--broker-defaults", action="store_true",
                    help="run Mosquitto without the deployment's settings (set_tcp_nodelay "
                         "off: shows what Nagle's algorithm costs the alarm latency)")
    ap.add_argument("--only", choices=("throughput", "live"), default=None,
                    help="run one part: throughput (1), or live rate (2 and 3)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    # the publisher subprocesses
    ap.add_argument("--role", choices=("burst", "live"), help=argparse.SUPPRESS)
    for name, typ in (("--host", str), ("--port", int), ("--pool", str), ("--vehicle", str),
                      ("--seq", int), ("--per-message", int), ("--t0", int), ("--rate", float),
                      ("--out", str), ("--seq-apollo", int), ("--seq-soyuz", int)):
        ap.add_argument(name, type=typ, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "burst":
        return role_burst(args)
    if args.role == "live":
        return role_live(args)

    started = time.monotonic()
    load0 = os.getloadavg()[0]
    bench = Bench(args)
    print(f"ingest benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
          f"{' (quick)' if args.quick else ''}")
    print(f"machine: {machine()}; load average {load0:.2f} at start")
    try:
        bench.start()
        print(f"servers: {server_versions(bench.influx)}, on loopback, data in {bench.workdir}")
        print("processes: publisher(s), Mosquitto, the ingest (python -m groundstation "
              "ingest), InfluxDB, and this script (monitor, pollers), all on this machine\n")
        if args.only != "live":
            bench.throughput()
        seq0 = {APOLLO: aligned(bench.throughput_next_seq), SOYUZ: 0}
        low = {"batch_max_delay_ms": args.low_latency_delay_ms}
        if args.only == "throughput":
            pass
        elif not args.quick:
            log("2. latency at live rate (Apollo 50 frames/s, Soyuz 10 frames/s, one frame a "
                "message): shipped configuration")
            seq0 = bench.live_phase("live-shipped", "shipped config", seq0, outage=False)
        if args.only != "throughput":
            log("2. latency at live rate (Apollo 50 frames/s, Soyuz 10 frames/s, one frame a "
                f"message): low-latency configuration (batch_max_delay_ms="
                f"{args.low_latency_delay_ms}), then 3. memory and an InfluxDB outage")
            bench.live_phase("live-low-latency", f"batch delay {args.low_latency_delay_ms} ms",
                             seq0, outage=True, **low)
    finally:
        bench.close()
    print()
    print_table(bench.results)
    for note in bench.results.notes:
        print(f"- {note}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; whole run "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
