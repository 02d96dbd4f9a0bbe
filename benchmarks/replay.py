#!/usr/bin/env python
"""Replay throughput end to end: one hour of Apollo high-bit-rate frames (180,000 minor
frames) from the archive, through a real Mosquitto, the ingest (its own process, as
deployed) and into a real InfluxDB 1.x, at `--speed max`.

    python benchmarks/replay.py [--minutes 60] [--repeat N] [--ingest-args FLAGS]

The archive is written first (not timed): 50 frames/s from the shared encoder, five frames
a record as the live downlink sends them, with drifting analog values and a few
out-of-limit excursions so alarms fire. The clock starts when the replay starts reading
the archive and stops when InfluxDB answers that every replayed frame is stored
(`SELECT count(<an every-frame parameter>) ... WHERE source='replay/bench'`, polled every
0.1 s), so it covers reading, publishing, the broker, the ingest's decoding, limit checks,
alarms, archiving of the session, line protocol and the database's writes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from groundstation.core.definitions import VehicleDefinition, load_definition  # noqa: E402
from groundstation.core.encoder import FrameEncoder  # noqa: E402
from groundstation.core.mission_time import parse_time_ns  # noqa: E402
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer  # noqa: E402
from groundstation.paths import defs_dir  # noqa: E402
from groundstation.replay.replayer import Replayer, plan_replay  # noqa: E402
from groundstation.storage.archive import ArchiveWriter  # noqa: E402
from groundstation.storage.influx.backends import InfluxV1  # noqa: E402
from simulators.downlink import nominal_values  # noqa: E402

T0 = parse_time_ns("1975-07-17T15:00:00Z")


def write_archive(root: Path, defn: VehicleDefinition, n_frames: int) -> None:
    enc = FrameEncoder(defn)
    period = round(1e9 / defn.frame.rate_hz)
    base = nominal_values(defn)
    rng = np.random.default_rng(1975)
    analogs = [p for p in defn.parameters if p.type == "analog" and p.limits is not None
               and p.limits.red is not None]
    step = 3000  # a minute of frames per encoder call
    per_record = 5
    with ArchiveWriter.for_definition(root, defn, fsync_interval=None) as w:
        for start in range(0, n_frames, step):
            n = min(step, n_frames - start)
            values: dict[str, object] = dict(base)
            i = start + np.arange(n)
            for k, p in enumerate(analogs[:20]):
                lo, hi = p.eng_range()
                v = np.full(n, float(base[p.id])) + 0.01 * (hi - lo) * np.sin(i / (500 + k))
                values[p.id] = np.clip(v, lo, hi)
            # A red excursion on one parameter every ten minutes, 2 s long.
            if analogs and (start // step) % 10 == 3:
                p = analogs[int(rng.integers(len(analogs)))]
                red_hi = p.limits.red[1] if p.limits and p.limits.red else None
                if red_hi is not None:
                    v = np.broadcast_to(np.asarray(values[p.id], dtype=float), (n,)).copy()
                    v[:100] = min(p.eng_range()[1], red_hi + 0.05 * abs(red_hi) + 1e-3)
                    values[p.id] = v
            frames = enc.encode(values, n, start_counter=defn.frame.counter.first
                                + start % defn.frame.counter.modulus)
            for k in range(0, n, per_record):
                seq = start + k
                t = T0 + seq * period
                w.append(seq, t, frames[k:k + per_record], t + 40_000_000)


def start_ingest(broker: MosquittoServer, db: InfluxDBServer, tmp: Path,
                 extra: list[str]) -> subprocess.Popen[str]:
    """`groundstation ingest` in its own process, as deployed (extra: more of its flags)."""
    cmd = [sys.executable, "-m", "groundstation", "ingest",
           "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
           "--influx-api", "v1", "--influx-url", db.url, "--influx-database", "bench",
           "--influx-spool-dir", str(tmp / "spool"),
           "--ingest-archive-dir", str(tmp / "ingest-archive"), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ingest: subscribed" in line:
            return proc
    raise SystemExit(f"the ingest did not start (exit {proc.wait()})")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return 0.0


def stored(influx: InfluxV1, pid: str, session: str) -> int:
    res = influx.query(f"SELECT count({pid}) FROM tm WHERE source='replay/{session}'")
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def measure(root: Path, broker: MosquittoServer, influx: InfluxV1, pid: str,
                  n_frames: int, fpm: int, timeout: float, session: str
                  ) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    plan = plan_replay(root, pass_spec="1")
    rep = Replayer(root, plan, host=broker.host, port=broker.port, session=session,
                   speed=None, progress=sys.stderr.isatty(), max_frames_per_message=fpm)
    result = await rep.run()
    t_published = time.perf_counter() - t0
    while stored(influx, pid, session) < n_frames:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"only {stored(influx, pid, session)} of {n_frames} frames "
                             f"stored after {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0, t_published, result.messages_sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="recording length (60)")
    ap.add_argument("--frames-per-message", type=int, default=2048)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="replay N times (sessions bench1..N, same servers and ingest); "
                         "reports each, the best and the median")
    ap.add_argument("--ingest-args", default="", metavar="FLAGS",
                    help="more `groundstation ingest` flags, e.g. '--influx-batch-max-mb 1 "
                         "--influx-write-concurrency 1'")
    args = ap.parse_args()
    extra = shlex.split(args.ingest_args)
    defn = load_definition(defs_dir() / "apollo_csm.yaml")
    n_frames = int(args.minutes * 60 * defn.frame.rate_hz)
    every_frame = next(p.id for p in defn.parameters if p.frames is None and p.every is None)
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmpdir:
        tmp = Path(tmpdir)
        root = tmp / "archive"
        t = time.perf_counter()
        write_archive(root, defn, n_frames)
        size = sum(f.stat().st_size for f in root.rglob("*.gs?"))
        print(f"archive: {n_frames:,} Apollo HBR frames ({args.minutes:g} min), "
              f"{size / 1e6:.1f} MB, written in {time.perf_counter() - t:.1f} s (not timed)")
        with MosquittoServer(tmp / "mosquitto") as broker, \
                InfluxDBServer(tmp / "influxdb") as db:
            influx = InfluxV1(db.url, "bench")
            influx.create_database()
            ingest = start_ingest(broker, db, tmp, extra)
            pids = {"ingest": ingest.pid, "influxd": db.pid, "mosquitto": broker.pid}
            totals = []
            try:
                for run in range(1, args.repeat + 1):
                    session = f"bench{run}"
                    load0 = os.getloadavg()[0]
                    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                    self0 = time.process_time()
                    total, published, messages = asyncio.run(measure(
                        root, broker, influx, every_frame, n_frames, args.frames_per_message,
                        args.timeout, session))
                    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
                    cpu["replay"] = time.process_time() - self0
                    alarms = influx.query(f"SELECT count(state) FROM alarms WHERE "
                                          f"source='replay/{session}'")
                    series = alarms["results"][0].get("series")
                    n_alarms = int(series[0]["values"][0][1]) if series else 0
                    totals.append(total)
                    print(f"run {run}: {n_frames:,} frames in {messages:,} messages of up to "
                          f"{args.frames_per_message}, published in {published:.1f} s; all "
                          f"stored in {total:.1f} s = {n_frames / total:,.0f} frames/s; "
                          f"{n_alarms} alarm events; load average {load0:.1f} at start; "
                          "CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()),
                          flush=True)
            finally:
                ingest.terminate()
                ingest.wait(30)
    totals.sort()
    print(f"end to end (archive -> broker -> ingest -> InfluxDB, all stored), "
          f"{n_frames:,} frames at max: best {totals[0]:.1f} s, median "
          f"{totals[len(totals) // 2]:.1f} s of {len(totals)} (goal <= 15 s for 180,000)")
    if extra:
        print(f"ingest flags: {args.ingest_args}")
    print(f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
