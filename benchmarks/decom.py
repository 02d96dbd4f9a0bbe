#!/usr/bin/env python
"""Decommutation throughput: ours against the peers a ground-software team would pick.

    python benchmarks/decom.py [--quick]

Measures our decom + calibration + limit check (groundstation.decom.Decommutator.decode)
in frames/s and parameter values/s for every vehicle in telemetry_defs/ at batch sizes 1, 64
and 4096. Then the same Apollo frames go through each peer (benchmarks/peers/), each with
the frame written in its own definition language, generated here from our loaded definition:
OpenC3 COSMOS (openc3), NASA AIT (ait-core), space_packet_parser (XTCE) and ccsdspy (with
numpy limit checks). Before timing, each peer's engineering values and limit states are
checked against ours. Peers not installed are reported as skipped.

Everything runs on one core: BLAS/OpenMP pools are set to one thread before numpy loads and
the process is pinned to a single CPU. Timing: time.perf_counter, a warm-up call per batch,
then the best of several repeats of a fixed time slice. Peers that decode frame by frame in
Python get fewer frames per call (the table says how many), so the run stays short.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.metadata  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
from machine import cpu_model  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from peers import PEERS, PeerInfo  # noqa: E402
from peers._common import FrameSpec, PeerResult, frame_spec, synthetic_frames  # noqa: E402

from groundstation.core.decom import Decommutator  # noqa: E402
from groundstation.core.definitions import VehicleDefinition, load_definition  # noqa: E402
from groundstation.malloc_tuning import keep_large_buffers  # noqa: E402
from groundstation.paths import defs_dir  # noqa: E402

BATCH_SIZES = (1, 64, 4096)
POOL = 4096  # frames generated per vehicle
CHECK_FRAMES = 200  # frames each peer decodes for the agreement check


@dataclass
class Row:
    impl: str
    batch: int
    per_call: int  # frames per timed call (below batch when a slow peer's batch is cut)
    frames_s: float
    values_s: float
    values_frame: float
    note: str = ""


# --- frames ---------------------------------------------------------------------------------


def realistic_frames(defn: VehicleDefinition, n: int, seed: int = 1975) -> NDArray[np.uint8]:
    """n frames from our encoder: analogs near nominal with ~1% excursions (so limits trip),
    discretes mostly in their first state, counters counting. Random bytes with a valid
    sync and counter if the encoder is not there."""
    try:
        from groundstation.core.encoder import FrameEncoder
    except ImportError:
        return synthetic_frames(defn, n, seed=seed)
    rng = np.random.default_rng(seed)
    values: dict[str, Any] = {}
    for p in defn.parameters:
        cal = p.calibration
        if p.type == "discrete":
            codes = sorted(cal.states) if cal and cal.states else [0]
            weights = np.full(len(codes), 0.1 / max(1, len(codes) - 1))
            weights[0] = 0.9 if len(codes) > 1 else 1.0
            values[p.id] = rng.choice(codes, size=n, p=weights / weights.sum())
            continue
        if p.type == "counter":
            values[p.id] = p.calibrate(np.arange(n) % (p.raw_max + 1))
            continue
        lo, hi = p.eng_range()
        y = p.limits.yellow if p.limits is not None else None
        if y is not None and y[0] is not None and y[1] is not None:
            mid, spread = (y[0] + y[1]) / 2, (y[1] - y[0]) / 6
        else:
            mid, spread = (lo + hi) / 2, (hi - lo) / 20
        v = mid + spread * rng.standard_normal(n)
        wild = rng.random(n) < 0.01
        v[wild] = rng.uniform(lo, hi, wild.sum())
        values[p.id] = np.clip(v, lo, hi)
    return FrameEncoder(defn).encode(values, n)


# --- timing ---------------------------------------------------------------------------------


def measure(run: Callable[[NDArray[np.uint8]], Any], pool: NDArray[np.uint8], batch: int,
            per_call: int, target_s: float, repeats: int, max_distinct: int,
            count: Callable[[NDArray[np.uint8]], int] | None = None) -> Row:
    """Best-of-`repeats` throughput of run() over `per_call`-frame slices of the pool.

    count(frames) gives the values a call yields (default: what run returns)."""
    distinct = max(1, min(max_distinct, pool.shape[0] // batch))
    calls = [np.ascontiguousarray(pool[k * batch: k * batch + per_call])
             for k in range(distinct)]
    # warm-up, and the number of values each call yields
    values = [int((count or run)(c)) for c in calls]
    best_f, best_v = 0.0, 0.0
    for _ in range(repeats):
        frames = nvalues = 0
        i = 0
        t0 = time.perf_counter()
        while True:
            k = i % distinct
            run(calls[k])
            frames += calls[k].shape[0]
            nvalues += values[k]
            i += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= target_s:
                break
        if frames / elapsed > best_f:
            best_f, best_v = frames / elapsed, nvalues / elapsed
    return Row("", batch, per_call, best_f, best_v, best_v / best_f if best_f else 0.0)


def probe_rate(run: Callable[[NDArray[np.uint8]], int], pool: NDArray[np.uint8],
               budget_s: float) -> float:
    """Rough frames/s of a frame-by-frame peer (to size its timed calls)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        run(pool[n % pool.shape[0]: n % pool.shape[0] + 1])
        n += 1
    return n / (time.perf_counter() - t0)


# --- agreement check ------------------------------------------------------------------------


def ours_series(defn: VehicleDefinition, frames: NDArray[np.uint8]
                ) -> dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]]:
    b = Decommutator(defn).decode(frames)
    out = {}
    for i, p in enumerate(defn.parameters):
        r, c = np.nonzero(b.param_index == i)
        out[p.id] = (b.rows[r], b.eng[r, c], np.abs(b.limit[r, c]).astype(np.int8))
    return out


def agreement(spec: FrameSpec, res: PeerResult, ref: dict[str, Any]) -> tuple[int, int, int, str]:
    """(values compared, mismatches, mismatches only at a value exactly on a limit, example)."""
    total = bad = on_limit = 0
    example = ""
    for f in spec.fields:
        if f.id not in res.values:
            continue
        rows_p, vals_p, sev_p = res.values[f.id]
        pos = {int(r): i for i, r in enumerate(rows_p)}
        rows_o, eng_o, sev_o = ref[f.id]
        for r, e, s in zip(rows_o, eng_o, sev_o, strict=True):
            i = pos.get(int(r))
            total += 1
            if i is None:
                bad += 1
                example = example or f"{f.id}: no value in frame {r}"
                continue
            v = vals_p[i]
            pv = float(f.state_code(str(v))) if f.type == "discrete" else float(v)
            if np.isclose(pv, e, rtol=1e-9, atol=1e-9) and int(sev_p[i]) == int(s):
                continue
            limits = [x for pair in (f.yellow, f.red) if pair for x in pair if x is not None]
            if np.isclose(pv, e, rtol=1e-9, atol=1e-9) and any(
                    np.isclose(e, x, rtol=1e-12, atol=1e-12) for x in limits):
                on_limit += 1
                continue
            bad += 1
            example = example or f"{f.id} frame {r}: peer {v!r}/{sev_p[i]}, ours {e:g}/{s}"
    return total, bad, on_limit, example


# --- main -----------------------------------------------------------------------------------


def _idle_ticks() -> dict[int, int]:
    ticks = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                ticks[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
    return ticks


def pin_one_core() -> str:
    """Pin this process to one CPU, the one that was idlest over a quarter second."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = os.sched_getaffinity(0)
    before = _idle_ticks()
    time.sleep(0.25)
    after = _idle_ticks()
    idle = {c: after.get(c, 0) - before.get(c, 0) for c in allowed}
    cpu = max(sorted(allowed), key=lambda c: idle.get(c, 0))
    os.sched_setaffinity(0, {cpu})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"pinned to CPU {cpu} (load average {load:.2f} at start)"


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"numpy {np.__version__}; {platform.system()} {platform.release()}")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def print_table(rows: list[Row], ours: dict[int, Row]) -> None:
    head = (f"{'implementation':<32} {'batch':>5} {'frames/call':>11} {'frames/s':>11} "
            f"{'values/frame':>12} {'values/s':>12} {'ours/peer':>10} {'ours/peer':>10}")
    sub = " " * (len(head) - 21) + f"{'frames/s':>10} {'values/s':>10}"
    print(head)
    print(sub)
    print("-" * len(head))
    for r in rows:
        rf = rv = ""
        if r.note == "peer" and r.batch in ours and r.values_s:
            rf = f"{ours[r.batch].frames_s / r.frames_s:,.1f}x"
            rv = f"{ours[r.batch].values_s / r.values_s:,.1f}x"
        print(f"{r.impl:<32} {r.batch:>5} {r.per_call:>11} {fmt(r.frames_s):>11} "
              f"{r.values_frame:>12.1f} {fmt(r.values_s):>12} {rf:>10} {rv:>10}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter time slices, fewer repeats")
    ap.add_argument("--defs", type=Path, default=defs_dir(), help="telemetry definitions folder")
    ap.add_argument("--peer-vehicle", default="apollo_csm",
                    help="vehicle whose frames go through the peers")
    ap.add_argument("--peers", default=",".join(p.key for p in PEERS),
                    help="comma-separated peers to run (default: all)")
    args = ap.parse_args(argv)
    target = 0.08 if args.quick else 0.15
    repeats = 3 if args.quick else 9
    started = time.perf_counter()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    pinned = pin_one_core()
    # As the ingest service does at start: without it, throughput at batch 4096 depends on
    # glibc's allocation history (fresh mmap pages for every batch's temporaries).
    tuned = keep_large_buffers()
    print(f"decom benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}; {pinned}; BLAS/OpenMP threads 1; malloc large-buffer "
          f"reuse {'on' if tuned else 'unavailable'} (groundstation.malloc_tuning)")
    print(f"timing: best of {repeats} x {target:g} s slices after a warm-up call\n")

    defs: dict[str, VehicleDefinition] = {}
    for path in sorted(args.defs.glob("*.yaml")):
        d = load_definition(path)
        defs[d.vehicle] = d
    if not defs:
        print(f"no telemetry definitions in {args.defs}")
        return 1

    rows: list[Row] = []
    pools: dict[str, NDArray[np.uint8]] = {}
    ours_rows: dict[int, Row] = {}
    core_rows: dict[int, Row] = {}
    for vehicle, defn in defs.items():
        try:
            dec = Decommutator(defn)
        except NotImplementedError as exc:
            print(f"ours {vehicle}: skipped ({exc})")
            continue
        pool = realistic_frames(defn, POOL)
        pools[vehicle] = pool
        variants = [(f"ours {vehicle}", dec)]
        if defn.derived:
            # The same decode without derived parameters: the work the peers do.
            core = Decommutator(defn.model_copy(update={"derived": []}))
            variants.append((f"ours {vehicle} (no derived)", core))
        for label, d in variants:
            for b in BATCH_SIZES:
                row = measure(d.decode, pool, b, b, target, repeats, max_distinct=64,
                              count=lambda f, d=d: d.decode(f).n_values)
                row.impl, row.note = label, "ours"
                rows.append(row)
                if vehicle == args.peer_vehicle:
                    (ours_rows if d is dec else core_rows)[b] = row

    notes: list[str] = []
    if args.peer_vehicle in pools:
        defn = defs[args.peer_vehicle]
        pool = pools[args.peer_vehicle]
        spec = frame_spec(defn)
        ref = ours_series(defn, pool[:CHECK_FRAMES])
        workdir = Path(tempfile.mkdtemp(prefix="decom-bench-"))
        wanted = {k.strip() for k in args.peers.split(",")}
        for info in [p for p in PEERS if p.key in wanted]:
            rows += run_peer(info, spec, pool, ref, workdir, target, repeats, notes)
        notes.append(f"peer definitions generated from {defn.path}: {workdir}")
        if spec.skipped:
            notes.append("no peer can take: " + ", ".join(f"{i} ({why})" for i, why in
                                                          spec.skipped))
    else:
        notes.append(f"peers skipped: no decodable vehicle {args.peer_vehicle!r}")

    print()
    print_table(rows, ours_rows)
    print()
    print(f"ours/peer: our {args.peer_vehicle} decode (derived parameters included) over the "
          "peer's, same batch size. values/frame counts measured parameter samples: ours only "
          "those a minor frame carries; a peer that decodes every parameter in every frame "
          "makes more values per frame, which the values/s ratio credits it for.")
    if core_rows:
        print("Without derived parameters (the same work as the peers), ours over each peer, "
              "values/s at batch " + "/".join(str(b) for b in BATCH_SIZES) + ":")
        for name in dict.fromkeys(r.impl for r in rows if r.note == "peer"):
            ratios = [f"{core_rows[r.batch].values_s / r.values_s:,.1f}x" for r in rows
                      if r.impl == name and r.batch in core_rows and r.values_s]
            print(f"  {name}: {' / '.join(ratios)}")
    for n in notes:
        print(f"- {n}")
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")
    return 0


def run_peer(info: PeerInfo, spec: FrameSpec, pool: NDArray[np.uint8], ref: dict[str, Any],
             workdir: Path, target: float, repeats: int, notes: list[str]) -> list[Row]:
    missing = info.missing()
    label = info.package
    if missing:
        print(f"{label}: skipped, {missing}")
        notes.append(f"{label}: skipped, {missing}")
        return []
    sink = io.StringIO()
    try:
        peer = info.create()
        t0 = time.perf_counter()
        (workdir / info.key).mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            peer.build(spec, workdir / info.key)
            res = peer.collect(pool[:CHECK_FRAMES])
        build_s = time.perf_counter() - t0
    except Exception as exc:  # a peer that breaks is reported, not fatal
        print(f"{label}: failed to build or decode: {type(exc).__name__}: {exc}")
        notes.append(f"{label}: failed ({type(exc).__name__}: {exc})")
        return []
    total, bad, on_limit, example = agreement(spec, res, ref)
    status = "agree" if bad == 0 else "DISAGREE"
    msg = (f"{peer.name} {version(info.package)}: {len(getattr(peer, 'fields', spec.fields))} "
           f"parameters; {peer.handles}. Check on {CHECK_FRAMES} frames: "
           f"{total - bad - on_limit}/{total} values and limit states {status} with ours")
    if on_limit:
        msg += (f", {on_limit} differ only in the limit state of a value exactly on a limit "
                "(the peer counts a value equal to a limit as out of limits, we count it in)")
    if bad:
        msg += f"; first: {example}"
    print(f"{msg}; setup {build_s:.2f} s")
    notes.append(msg)
    out: list[Row] = []
    rate = probe_rate(peer.run, pool, min(0.2, target)) if peer.per_frame else 0.0
    for b in BATCH_SIZES:
        per_call = b
        if peer.per_frame:
            per_call = max(1, min(b, int(rate * target / 2)))
        row = measure(peer.run, pool, b, per_call, target, repeats,
                      max_distinct=max(1, min(64, int(rate * target / per_call)) if rate else 64))
        row.impl, row.note = peer.name, "peer"
        out.append(row)
    return out


if __name__ == "__main__":
    sys.exit(main())
