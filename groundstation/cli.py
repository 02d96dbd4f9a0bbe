"""The `groundstation` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from groundstation import console as console_cmd
from groundstation import dashboards as dashboards_cmd
from groundstation import demo as demo_cmd
from groundstation import drill_cli, passes, replay
from groundstation.config import ConfigError, example_toml
from groundstation.config import add_arguments as add_config_arguments
from groundstation.config import load as load_config
from groundstation.definitions import DEFS_DIR, DefinitionError, load_all, load_definition
from simulators import cli as sim_cli

EPILOG = """\
examples:
  groundstation demo                      the whole station: broker, InfluxDB, ingest, both
                                          ships docked, and the Houston console
  groundstation demo --start docking-30m --speed 10
                                          watch the final approach and docking at 10x
  groundstation defs check                validate every file in telemetry_defs/
  groundstation defs check my_ship.yaml   validate one file
  groundstation defs show apollo_csm      list a vehicle's parameters, units and limits
  groundstation dashboards build          regenerate dashboards/*.json from telemetry_defs/
  groundstation archive ls                recorded passes, with AOS/LOS in UTC and GET
  groundstation replay 1 --speed 10       replay the first pass at 10x as a replay session
  groundstation console houston --position EECOM
                                          the Houston terminal console on a running station
  groundstation drill list                training drills, with their titles
  groundstation drill run o2-tank-spike   run a drill; the debrief is written at the end
  groundstation sim both --start docking-30m --speed 10
                                          fly both ships from 30 min before docking, 10x
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="groundstation",
        description="Mission-control telemetry ground station for the Apollo-Soyuz Test "
                    "Project: PCM frames over MQTT, decommutated, limit-checked, stored in "
                    "InfluxDB.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo_cmd.add_parser(sub)

    ingest = sub.add_parser(
        "ingest", help="run the ingest service: MQTT telemetry to InfluxDB, consoles and the "
                       "archive",
        description="Subscribes to live and replayed telemetry, decodes it, checks limits, "
                    "raises alarms, and writes values, alarm events and link quality to "
                    "InfluxDB (spooling to disk while it is down), the raw frames to the "
                    "archive, and processed parameters and alarms back to MQTT. Every option "
                    "comes from the config file, then the environment, then the flags, each "
                    "overriding the one before.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  groundstation ingest --mqtt-host broker --influx-url http://influx:8086\n"
               "  GS_INFLUX_TOKEN=... groundstation ingest --config ingest.toml\n"
               "  groundstation ingest --print-config > ingest.toml   # every option, "
               "commented")
    ingest.add_argument("--print-config", action="store_true",
                        help="print the effective configuration as TOML and exit")
    add_config_arguments(ingest)

    defs = sub.add_parser("defs", help="check or list telemetry definitions")
    defs_sub = defs.add_subparsers(dest="defs_command", metavar="ACTION", required=True)
    check = defs_sub.add_parser("check", help="validate definition files; exit 1 on any "
                                              "problem, naming file, parameter and field")
    check.add_argument("files", nargs="*", type=Path,
                       help="files to check (default: every *.yaml in telemetry_defs/)")
    show = defs_sub.add_parser("show", help="list a vehicle's parameters")
    show.add_argument("vehicle", help="vehicle id, e.g. apollo_csm or soyuz")
    show.add_argument("--defs", type=Path, default=DEFS_DIR)

    dashboards_cmd.add_parser(sub)
    sim_cli.add_parser(sub)
    passes.add_parser(sub)
    replay.add_parser(sub)
    drill_cli.add_parser(sub)
    console_cmd.add_parser(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            return demo_cmd.run(args)
        if args.command == "ingest":
            return _ingest(args)
        if args.command == "dashboards":
            return dashboards_cmd.run(args)
        if args.command == "sim":
            return sim_cli.run(args)
        if args.command == "archive":
            return passes.run(args)
        if args.command == "replay":
            return replay.run(args)
        if args.command == "drill":
            return drill_cli.run(args)
        if args.command == "console":
            return console_cmd.run(args)
        if args.command == "defs" and args.defs_command == "check":
            return _defs_check(args.files)
        if args.command == "defs" and args.defs_command == "show":
            return _defs_show(args.vehicle, args.defs)
    except (DefinitionError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 2


def _ingest(args: argparse.Namespace) -> int:
    from groundstation.ingest import serve
    from groundstation.malloc_tuning import keep_large_buffers

    config = load_config(args.config, args=args)
    if args.print_config:
        print(example_toml(config), end="")
        return 0
    definitions = load_all(config.ingest.defs_dir)
    keep_large_buffers()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        task = asyncio.create_task(serve(config, definitions, stop, ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            print(f"ingest: subscribed at {config.mqtt.host}:{config.mqtt.port}, writing to "
                  f"{config.influx.url}; Ctrl-C stops", flush=True)
        waiter.cancel()
        await task

    asyncio.run(main())
    return 0


def _defs_check(files: list[Path]) -> int:
    if not files:
        defs = load_all()
        for d in defs.values():
            print(f"ok  {d.path}: {d.vehicle}, {len(d.parameters)} parameters, "
                  f"{len(d.derived)} derived, {d.frame.words}-word frames at "
                  f"{d.frame.rate_hz:g}/s")
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


def _defs_show(vehicle: str, directory: Path) -> int:
    defs = load_all(directory)
    if vehicle not in defs:
        print(f"error: no vehicle {vehicle!r}; known: {', '.join(defs)}", file=sys.stderr)
        return 1
    d = defs[vehicle]
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
