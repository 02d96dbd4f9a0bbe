"""A flood of bad messages against the real ingest: its log size and memory (issue 12).

Starts Mosquitto and InfluxDB on loopback ports in a temporary directory, runs
`python -m groundstation ingest` as its own process with its log in a file, publishes N
malformed telemetry messages (a third each: garbage, truncated envelopes, and envelopes of
100 frames one byte short, 1.5 kB) with QoS 1, then one
good message, and reports the log's size and the ingest's RSS before the flood, at its peak
and IDLE seconds after it. Traffic goes to 127.0.0.1 only; the run is bounded by N.

    python benchmarks/flood.py [--messages 110000] [--idle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from groundstation.core import topics
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer

MINI = Path(__file__).resolve().parent.parent / "tests" / "data" / "mini.yaml"
T0 = 174_845_349_000_000_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def flood(broker: MosquittoServer, n: int, pid: int) -> float:
    enc = FrameEncoder(load_definition(MINI))
    good = encode_envelope("mini", "hbr", 0, T0, enc.encode({"cabin_press": 5.0}, 5, 1))
    short = encode_envelope("mini", "hbr", 0, T0, [bytes(15)] * 100)
    kinds = [lambda i: b"\xc1" + i.to_bytes(4, "big"), lambda i: good[:-3], lambda i: short]
    peak = 0.0
    async with aiomqtt.Client(broker.host, broker.port) as client:
        topic = topics.telemetry("mini", "hbr")
        for i in range(n):
            await client.publish(topic, kinds[i % 3](i), qos=1)
            if i % 5000 == 0:
                peak = max(peak, rss_mb(pid))
        await client.publish(topic, good, qos=1)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=110_000)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--floods", type=int, default=1, help="floods one after the other, "
                    "each followed by the idle time (is the memory kept bounded?)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gs-flood-") as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoServer(tmp / "mosquitto").start()
        db = InfluxDBServer(tmp / "influxdb").start()
        db.create_database("flood")
        defs = tmp / "defs"
        defs.mkdir()
        (defs / "mini.yaml").write_text(MINI.read_text())
        log_path = tmp / "ingest.log"
        cmd = [sys.executable, "-m", "groundstation", "ingest", "--mqtt-host", broker.host,
               "--mqtt-port", str(broker.port), "--influx-api", "v1", "--influx-url", db.url,
               "--influx-database", "flood", "--ingest-defs-dir", str(defs),
               "--influx-spool-dir", str(tmp / "spool"), "--ingest-archive-dir",
               str(tmp / "archive")]
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 30
            while "subscribed" not in log_path.read_text():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the ingest did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            time.sleep(2)
            before, log_before = rss_mb(proc.pid), log_path.stat().st_size
            for k in range(args.floods):
                t0 = time.monotonic()
                peak = asyncio.run(flood(broker, args.messages, proc.pid))
                took = time.monotonic() - t0
                peak = max(peak, rss_mb(proc.pid))
                series: list[tuple[float, float]] = []
                for t in (2, 10, args.idle):
                    time.sleep(t - (series[-1][0] if series else 0))
                    series.append((t, rss_mb(proc.pid)))
                after = series[-1][1]
                size = log_path.stat().st_size - log_before
                lines = log_path.read_text().count("\n")
                if args.floods > 1:
                    print(f"flood {k + 1}: peak {peak:.0f} MB, {after:.0f} MB "
                          f"{args.idle:.0f} s after", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            db.stop()
            broker.stop()
    print(f"{args.messages} bad messages in {took:.1f} s: log +{size:,} bytes ({lines} lines "
          f"in all); RSS {before:.0f} MB before, {peak:.0f} MB at the peak, {after:.0f} MB "
          f"{args.idle:.0f} s after ({', '.join(f'{m:.0f} MB at {t:.0f} s' for t, m in series)})")


if __name__ == "__main__":
    main()
