"""`groundstation archive ls | show | export`: the recorded passes of the raw archive."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

from groundstation.commands.options import add_defs_argument, load_definitions
from groundstation.config import load as load_config
from groundstation.core import topics
from groundstation.core.mission_time import NS, format_duration, format_get_ns, format_utc_ns
from groundstation.storage.archive import LIVE
from groundstation.storage.export import FORMATS, LAYOUTS, export_pass
from groundstation.storage.passes import DEFAULT_LOS_GAP_S, Catalogue


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`groundstation archive ls | show | export`."""
    archive = subparsers.add_parser(
        "archive", help="browse the raw frame archive: recorded passes, detail, export",
        description="Recorded passes, found from the archive's index (no full scan): a "
                    "pass runs from AOS to LOS, silences shorter than --los-gap are gaps "
                    "inside it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  groundstation archive ls\n"
               "  groundstation archive show apollo_csm/hbr/1975-07-17T16:09Z\n"
               "  groundstation archive show 3\n"
               "  groundstation archive export 3 --format csv -o pass3.csv")
    sub = archive.add_subparsers(dest="archive_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--archive-dir", type=Path, default=None, metavar="DIR",
                       help="the archive (default: [ingest] archive_dir of the configuration, "
                            "var/archive)")
        p.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="ingest configuration file to take archive_dir from")
        p.add_argument("--los-gap", type=float, default=DEFAULT_LOS_GAP_S, metavar="S",
                       help=f"a silence longer than this ends a pass (default "
                            f"{DEFAULT_LOS_GAP_S:g} s)")
        p.add_argument("--source", default=LIVE,
                       help=f"'{topics.LIVE}' (default), '{topics.replay('<session>')}', "
                            f"'{topics.training('<drill>')}', or 'all'")

    ls = sub.add_parser("ls", help="list recorded passes per vehicle and stream")
    common(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per pass")
    ls.add_argument("--vehicle", default=None, help="only this vehicle")
    show = sub.add_parser("show", help="one pass in detail: times, gaps, rejects, files")
    common(show)
    show.add_argument("pass_id", metavar="PASS", help="pass id, number from ls, or "
                                                      "<vehicle>/<stream>/<time>")
    show.add_argument("--json", action="store_true")
    exp = sub.add_parser("export", help="engineering values of a pass to CSV or Parquet")
    common(exp)
    _add_export_arguments(exp)
    return archive


def archive_root(args: argparse.Namespace) -> Path:
    if getattr(args, "archive_dir", None) is not None:
        return Path(args.archive_dir)
    return load_config(getattr(args, "config", None), sections=("ingest",)).ingest.archive_dir


def catalogue_for(args: argparse.Namespace) -> Catalogue:
    src = args.source
    return Catalogue(archive_root(args), los_gap_s=args.los_gap,
                     sources=None if src == "all" else src)


def run(args: argparse.Namespace) -> int:
    """Run `groundstation archive ...`; returns the exit status."""
    try:
        if args.archive_command == "export":
            return _export(args)
        cat = catalogue_for(args)
        if args.archive_command == "ls":
            return _ls(cat, args)
        if args.archive_command == "show":
            return _show(cat, args)
    except (LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


def _ls(cat: Catalogue, args: argparse.Namespace) -> int:
    passes = [p for p in cat.passes if args.vehicle in (None, p.vehicle)]
    if args.json:
        for p in passes:
            print(json.dumps(p.summary()))
        return 0
    if not passes:
        print(f"no recorded passes in {cat.root} (source {args.source})")
    else:
        print(f"{'#':>3}  {'pass':<36} {'AOS (UTC)':<20} {'LOS (UTC)':<20} "
              f"{'AOS GET':>10} {'LOS GET':>10} {'duration':>9} {'frames':>9} "
              f"{'dups':>6} {'gaps':>4} {'missing':>7} {'rejected':>8}")
        for p in passes:
            rej = "n/a" if p.rejected is None else str(p.rejected.frames)
            if p.rejected is not None and p.rejected.messages:
                rej += "*"
            print(f"{p.index:>3}  {p.id:<36} {format_utc_ns(p.aos_ns):<20} "
                  f"{format_utc_ns(p.los_ns):<20} {format_get_ns(p.aos_ns):>10} "
                  f"{format_get_ns(p.los_ns):>10} {format_duration(p.duration_ns / NS):>9} "
                  f"{p.frames:>9,} {p.duplicates:>6,} {len(p.gaps):>4} {p.missing:>7,} "
                  f"{rej:>8}"
                  + ("  TORN" if any(x.kind == "torn" for x in p.problems) else ""))
    notes = []
    if not cat.quarantine_found:
        notes.append("rejected: n/a, no quarantine in this archive")
    elif any(p.rejected and p.rejected.messages for p in passes):
        notes.append("rejected: * includes messages rejected whole (see `archive show`)")
    if cat.quarantine_found and cat.unattributed.reasons.total():
        u = cat.unattributed
        notes.append(f"{u.reasons.total()} quarantined messages/frames match no pass "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(u.reasons.items()))})")
    for prob in cat.problems:
        notes.append(f"skipped damage: {prob}")
    for n in notes:
        print(n)
    return 0


def _show(cat: Catalogue, args: argparse.Namespace) -> int:
    p = cat.find(args.pass_id)
    if args.json:
        print(json.dumps(p.summary(), indent=2))
        return 0
    print(f"pass      {p.id}   (#{p.index})")
    print(f"stream    {p.vehicle}/{p.stream}, source {p.source}, frame period "
          f"{p.period_ns / 1e6:g} ms")
    print(f"AOS       {format_utc_ns(p.aos_ns, 'ms')}   GET {format_get_ns(p.aos_ns, 'ms')}")
    print(f"LOS       {format_utc_ns(p.los_ns, 'ms')}   GET {format_get_ns(p.los_ns, 'ms')}")
    print(f"duration  {format_duration(p.duration_ns / NS)}")
    print(f"frames    {p.frames:,} distinct recorded, {p.expected:,} expected at the frame "
          f"rate, {p.missing:,} missing")
    if p.duplicates:
        print(f"          {p.duplicates:,} duplicates: frames archived again (a redelivery "
              f"after a reconnect), counted, replayed and exported once ({p.archived:,} "
              "archived)")
    if p.late:
        print(f"          {p.late:,} late: archived after later frames (recorder playback), "
              "counted, replayed and exported in their place in time")
    print(f"gaps      {len(p.gaps)} longer than {cat.gap_ns / 1e9:g} s")
    for g in p.gaps:
        print(f"          {format_utc_ns(g.start_ns, 'ms')} .. {format_utc_ns(g.end_ns, 'ms')}  "
              f"(GET {format_get_ns(g.start_ns)} .. {format_get_ns(g.end_ns)}), "
              f"{g.duration_ns / 1e9:.1f} s, {g.missing:,} frames")
    for span in p.formats:
        print(f"format    {format_utc_ns(span.start_ns, 'ms')} .. "
              f"{format_utc_ns(span.end_ns, 'ms')}  (GET {format_get_ns(span.start_ns)} .. "
              f"{format_get_ns(span.end_ns)}), {(span.end_ns - span.start_ns) / 1e9:.1f} s in "
              f"{span.stream} (another stream of {p.vehicle}): no gap")
    if p.rejected is None:
        print("rejected  unknown: no quarantine in this archive")
    else:
        r = p.rejected
        print(f"rejected  {r.frames:,} frames, {r.messages:,} whole messages"
              + (f" ({', '.join(f'{k} {v}' for k, v in sorted(r.reasons.items()))})"
                 if r.reasons else ""))
        if r.messages:
            print("          (whole messages are matched by topic and receive time)")
    reader = cat.reader
    for sha in p.definitions:
        have = "stored" if sha and reader.definition_text(sha) is not None else "NOT stored"
        print(f"defs      {sha or '(unknown)'}  ({have} in the archive)")
    print(f"receive   {format_utc_ns(p.recv_min, 'ms')} .. {format_utc_ns(p.recv_max, 'ms')} "
          "(ground wall clock)")
    print(f"index     {len(p.blocks)} blocks ({sum(not b.indexed for b in p.blocks)} from "
          "scanning an unindexed tail)")
    for f in p.files:
        print(f"file      {f}")
    for prob in p.problems:
        print(f"damage    {prob.kind} at byte {prob.offset} of {prob.path.name} "
              f"({prob.length} bytes skipped): {prob.detail}")
    return 0



def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pass_id", metavar="PASS",
                   help="pass id or number (archive ls), or <vehicle>/<stream>/<time>")
    p.add_argument("--format", choices=FORMATS, default="csv",
                   help="csv (default) or parquet (needs pyarrow: the 'export' extra)")
    p.add_argument("--layout", choices=LAYOUTS, default="wide",
                   help="wide: a row per frame, a column per parameter (default); long: a "
                        "row per sample")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="output file (default: <vehicle>_<stream>_<AOS>.<format> here)")
    p.add_argument("--limits", choices=("recorded", "current"), default="recorded",
                   help="decode with the definitions the pass was recorded with (default) "
                        "or the current ones")
    add_defs_argument(p, "with --limits current: the definitions directory")
    p.add_argument("--parameters", default=None, metavar="ID,ID",
                   help="only these parameters (comma-separated ids)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _export(args: argparse.Namespace) -> int:
    cat = catalogue_for(args)
    p = cat.find(args.pass_id)
    out = args.output or Path(f"{p.vehicle}_{p.stream}_"
                              f"{format_utc_ns(p.aos_ns).replace(':', '').replace('-', '')}"
                              f".{'csv' if args.format == 'csv' else 'parquet'}")
    only = [x.strip() for x in args.parameters.split(",")] if args.parameters else None
    _check_writable(out)  # before the progress bar, not after it has failed
    current = None
    if args.limits == "current":
        current = load_definitions(load_config(getattr(args, "config", None),
                                               flags=vars(args), sections=("ingest",)))
    r = export_pass(cat.root, p, out, fmt=args.format, layout=args.layout, limits=args.limits,
                    definitions=current, parameters=only, progress=not args.no_progress)
    print(f"{r.path}: {r.rows:,} rows from {r.frames:,} frames of {p.id} in {r.seconds:.1f} s"
          + (f"; {r.skipped_bad:,} frames failed sync/counter checks" if r.skipped_bad else "")
          + (f"; {r.repeats:,} repeated frames written once" if r.repeats else ""),
          file=sys.stderr)
    for prob in p.problems:
        print(f"note: skipped damaged archive bytes: {prob}", file=sys.stderr)
    return 0


def _check_writable(out: Path) -> None:
    """Raise the OSError writing ``out`` would raise at the end (a missing directory, no
    permission, a directory in its place), before any work is done."""
    directory = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(out))
    if not directory.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write in this directory", str(directory))
