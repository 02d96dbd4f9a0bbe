#!/usr/bin/env python
"""Where the ingest's CPU a frame goes, stage by stage, in one process.

    python benchmarks/ingest_stages.py [--batch 1000] [--rounds 5] [--no-influx]

The same Apollo frames as `benchmarks/ingest.py`'s throughput run (5,000 healthy frames,
100 a message), through each step the ingest takes for them, in the order it takes them,
each timed on its own with `time.thread_time` (CPU of this thread, so other processes on
the machine do not count) and reported as microseconds of CPU a frame (best of
`--rounds`):

  envelope   `decode_envelope` of each 100-frame message (msgpack and the checks)
  archive    `ArchiveWriter.append` of each message (record, CRC, one write)
  decode     `StreamDecoder.decode` of a batch (`--batch` frames, as the flusher hands
             them over), with the limit check
  alarms     `AlarmEngine.process` of the batch
  lines      `encoded_lines`: line protocol of the batch, joined and encoded (in a tree
             from before it, `batch_lines`: a list of lines)
  bodies     the sink's `_encode`: the request bodies (before: the join and encode)
  gzip       `gzip.compress` of the bodies at the sink's level
  http       one POST per body to a real InfluxDB on loopback (CPU of this client only),
             gzip'd and plain (skipped with --no-influx)

Large buffers are kept for reuse as the ingest keeps them (`keep_large_buffers`). What
it leaves out, and `benchmarks/ingest.py` includes: the MQTT client (receiving,
parsing and acknowledging messages), the event loop and its tasks, the thread hand-offs.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO, HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402

from groundstation.config import Config  # noqa: E402
from groundstation.core import topics  # noqa: E402
from groundstation.core.alarms import AlarmEngine  # noqa: E402
from groundstation.core.decom import StreamDecoder  # noqa: E402
from groundstation.core.definitions import load_all  # noqa: E402
from groundstation.core.envelope import decode_envelope, encode_envelope  # noqa: E402
from groundstation.ingest.wiring import sink_config  # noqa: E402
from groundstation.malloc_tuning import keep_large_buffers  # noqa: E402
from groundstation.storage.archive import ArchiveWriter  # noqa: E402
from groundstation.storage.influx import lineprotocol  # noqa: E402
from groundstation.storage.influx.backends import InfluxV1  # noqa: E402
from groundstation.storage.influx.sink import InfluxSink  # noqa: E402

PER_MESSAGE = 100
DOCKING_NS = 174838140 * 10**9


def best_us(fn: Callable[[], object], frames: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return 1e6 * best / frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1000, help="frames a decoded batch")
    ap.add_argument("--rounds", type=int, default=5, help="best of this many")
    ap.add_argument("--no-influx", action="store_true", help="skip the HTTP stage")
    args = ap.parse_args(argv)
    keep_large_buffers()  # as `groundstation ingest` runs

    from ingest import POOL_FRAMES, throughput_pool  # the benchmark's own frames

    defn = load_all()["apollo_csm"]
    pool = throughput_pool(defn)
    n = POOL_FRAMES
    period = round(1e9 / defn.frame.rate_hz)
    rows = [bytes(r) for r in pool]
    payloads = [encode_envelope(defn.vehicle, defn.stream, s, DOCKING_NS + s * period,
                                rows[s:s + PER_MESSAGE]) for s in range(0, n, PER_MESSAGE)]
    rounds = args.rounds
    out: dict[str, float] = {}

    envs = []

    def envelope() -> None:
        envs.clear()
        for p in payloads:
            envs.append(decode_envelope(p, vehicle=defn.vehicle, stream=defn.stream,
                                        frame_bytes=defn.frame.bytes_per_frame,
                                        period_ns=period, t_min_ns=0,
                                        t_max_ns=2**62))

    out["envelope (msgpack + checks)"] = best_us(envelope, n, rounds)

    with tempfile.TemporaryDirectory(prefix="gs-stages-") as tmp:
        k = [0]

        def archive() -> None:
            k[0] += 1
            w = ArchiveWriter(Path(tmp) / str(k[0]), defn.vehicle, defn.stream, topics.LIVE,
                              frame_period_ns=period)
            for e in envs:
                w.append(e.seq, e.t_ns, e.frames, e.t_ns)
            w.close()

        archive()  # the first file and directory creation, not timed
        out["archive append (record, CRC, write)"] = best_us(archive, n, rounds)

    frames = np.concatenate([e.frames for e in envs])
    times = np.concatenate([e.times_ns(period) for e in envs])
    batches = [(frames[i:i + args.batch], times[i:i + args.batch],
                np.arange(i, min(n, i + args.batch), dtype=np.int64))
               for i in range(0, n, args.batch)]
    decoded = []
    # A fresh decoder a round (one that has seen the frames would take them for
    # duplicates), made before the clock starts.
    decoders = [StreamDecoder(defn) for _ in range(rounds + 1)]

    def decode() -> None:
        decoded.clear()
        d = decoders.pop()
        for f, t, s in batches:
            decoded.append(d.decode(f, t, {}, seq=s))
        decoders.insert(0, d)

    decode()
    out[f"decode + limits (batch {args.batch})"] = best_us(decode, n, rounds)

    def alarms() -> None:
        eng = AlarmEngine(defn, topics.LIVE)
        for b in decoded:
            eng.process(b.live(), {})

    out["alarms"] = best_us(alarms, n, rounds)

    # What the ingest submits: one EncodedLines a batch; before it existed (to measure
    # an older tree), a list of lines, which the sink then joined and encoded.
    encoded_lines = getattr(lineprotocol, "encoded_lines", None)
    decom = decoders[0].decom  # the one that decoded `decoded`
    submitted: list[list[Any]] = []

    def line_protocol() -> None:
        submitted.clear()
        for b in decoded:
            submitted.append([encoded_lines(b, topics.LIVE, decom)] if encoded_lines
                             else lineprotocol.batch_lines(b, topics.LIVE, decom))

    line_protocol()
    out["line protocol (" + ("encoded_lines" if encoded_lines else "batch_lines") + ")"] = \
        best_us(line_protocol, n, rounds)

    cfg = sink_config(Config())  # the ingest's, as shipped
    sink = InfluxSink.__new__(InfluxSink)
    sink.config = cfg
    bodies: list[bytes] = []

    def encode() -> None:
        bodies.clear()
        for items in submitted:
            bodies.extend(b for b, _ in sink._encode(items))

    encode()
    out["sink request bodies (_encode)"] = best_us(encode, n, rounds)
    per_line = sum(map(len, bodies)) / n
    big = b"".join(bodies)  # the ingest sends a few such bodies a second at full speed
    gz: list[bytes] = []

    def compress() -> None:
        gz.clear()
        gz.append(gzip.compress(big, cfg.gzip_level))

    out[f"gzip level {cfg.gzip_level}"] = best_us(compress, n, rounds)

    if not args.no_influx:
        from groundstation.deploy.servers import InfluxDBServer

        with tempfile.TemporaryDirectory(prefix="gs-stages-influx-") as tmp:
            server = InfluxDBServer(Path(tmp))
            server.start()
            try:
                server.create_database("stages")
                backend = InfluxV1(server.url, "stages")
                backend.post_gzip(gz[0])  # connect, warm up
                post_raw = getattr(backend, "post", None)

                def http_gzip() -> None:
                    res = backend.post_gzip(gz[0])
                    assert res.ok, res

                out["HTTP POST, gzip'd body (client)"] = best_us(http_gzip, n, rounds)
                if post_raw is not None:
                    def http_plain() -> None:
                        res = post_raw(big, compressed=False)
                        assert res.ok, res

                    out["HTTP POST, plain body (client)"] = best_us(http_plain, n, rounds)
                backend.close()
            finally:
                server.stop()

    print(f"Apollo, {n:,} frames, {PER_MESSAGE} a message, batches of {args.batch}; "
          f"{per_line:.0f} bytes of line protocol a frame, gzip'd "
          f"{len(gz[0]) / n:.0f}; CPU us a frame, best of {rounds}")
    width = max(map(len, out))
    for name, us in out.items():
        print(f"  {name:<{width}}  {us:6.2f}")
    core = [v for k, v in out.items() if not k.startswith(("HTTP", "gzip"))]
    print(f"  {'sum without gzip and HTTP':<{width}}  {sum(core):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
