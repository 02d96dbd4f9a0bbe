"""The `groundstation` command: the root parser; each command in groundstation/commands/
adds its own subparser and runs itself."""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from groundstation.commands import (
    archive,
    commanding,
    console,
    dashboards,
    defs,
    demo,
    drill,
    ingest,
    replay,
    sim,
)
from groundstation.config import ConfigError
from groundstation.core.definitions import DefinitionError

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
  groundstation commanding serve          the commanding service: commands and crew
                                          procedures from the consoles, verified in telemetry
  groundstation commanding list apollo_csm
                                          what each position may send a ship
  groundstation sim both --start docking-30m --speed 10
                                          fly both ships from 30 min before docking, 10x
"""


# In the order `groundstation --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "demo": demo, "ingest": ingest, "defs": defs, "dashboards": dashboards, "sim": sim,
    "archive": archive, "replay": replay, "drill": drill, "console": console,
    "commanding": commanding,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="groundstation",
        description="Mission-control telemetry ground station for the Apollo-Soyuz Test "
                    "Project: PCM frames over MQTT, decommutated, limit-checked, stored in "
                    "InfluxDB.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(COMMANDS[args.command].run(args))
    except (DefinitionError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
