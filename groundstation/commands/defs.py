"""`groundstation defs check|show`: validate and list telemetry definitions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from groundstation.commands.options import add_defs_argument, load_config, load_definitions
from groundstation.config import Config
from groundstation.core import fleet
from groundstation.core.definitions import DefinitionError, load_definition


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    defs = subparsers.add_parser("defs", help="check or list telemetry definitions")
    defs_sub = defs.add_subparsers(dest="defs_command", metavar="ACTION", required=True)
    check = defs_sub.add_parser("check", help="validate definition files; exit 1 on any "
                                              "problem, naming file, parameter and field")
    check.add_argument("files", nargs="*", type=Path,
                       help="files to check (default: every *.yaml in the definitions "
                            "directory)")
    add_defs_argument(check)
    show = defs_sub.add_parser("show", help="list a vehicle's parameters")
    show.add_argument("vehicle", help="vehicle id, e.g. apollo_csm or soyuz; VEHICLE/STREAM "
                                      "for another format of its downlink (apollo_csm/lbr)")
    add_defs_argument(show)
    return defs


def run(args: argparse.Namespace) -> int:
    config = load_config(args, sections=("ingest",))
    if args.defs_command == "check":
        return _defs_check(args.files, config)
    return _defs_show(args.vehicle, config)


def _defs_check(files: list[Path], config: Config) -> int:
    if not files:
        defs = load_definitions(config)
        members = fleet.members(config.ingest.fleet)
        for d in (s for main in defs.values() if main.vehicle not in members
                  for s in main.streams.values()):
            print(f"ok  {d.path}: {d.vehicle}, {len(d.parameters)} parameters, "
                  f"{len(d.derived)} derived, {d.frame.words}-word frames at "
                  f"{d.frame.rate_hz:g}/s, stream {d.stream}"
                  + (f" (a subset of {d.subset_of})" if d.subset_of else ""))
        for base, count in config.ingest.fleet.items():
            if count:
                print(f"ok  fleet: {fleet.member_id(base, 1)} .. {fleet.member_id(base, count)}"
                      f", {count} more {base}")
        return 0
    failed = 0
    for f in files:
        try:
            d = load_definition(f)
        except DefinitionError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        print(f"ok  {f}: {d.vehicle}, {len(d.parameters)} parameters")
    return 1 if failed else 0


def _defs_show(vehicle: str, config: Config) -> int:
    defs = load_definitions(config)
    vehicle, _, stream = vehicle.partition("/")
    if vehicle not in defs:
        print(f"error: no vehicle {vehicle!r}; known: {', '.join(defs)}", file=sys.stderr)
        return 1
    found = defs[vehicle].stream_definition(stream or defs[vehicle].stream)
    if found is None:
        print(f"error: {vehicle} has no stream {stream!r}; its streams: "
              f"{', '.join(defs[vehicle].streams)}", file=sys.stderr)
        return 1
    d = found
    print(f"{'id':<22} {'label':<22} {'unit':<8} {'rate/s':>6}  {'yellow':<16} red")
    for p in d.parameters:
        rate = d.frame.rate_hz * (len(p.frames) / d.frame.minor_frames if p.frames else 1)
        lim = p.limits
        y = _pair(lim.yellow if lim else None) or ",".join(lim.yellow_states or []) if lim else ""
        r = _pair(lim.red if lim else None) or ",".join(lim.red_states or []) if lim else ""
        print(f"{p.id:<22} {p.label.get('en', ''):<22} {p.unit:<8} {rate:>6g}  {y:<16} {r}")
    return 0


def _pair(pair: tuple[float | None, float | None] | None) -> str:
    if pair is None:
        return ""
    return "..".join("" if v is None else f"{v:g}" for v in pair)
