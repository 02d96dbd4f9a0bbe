"""`groundstation console houston|moscow`: the terminal console (groundstation/console/)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from groundstation.commands.options import (
    add_defs_argument,
    add_mqtt_arguments,
    load_config,
    load_definitions,
)
from groundstation.config import ConfigError
from groundstation.console import pages as cp
from groundstation.console.app import ConsoleApp
from groundstation.core import topics
from groundstation.core.definitions import DefinitionError

EPILOG = f"""\
keys:
  1..9, Tab, Shift-Tab   pages (Houston: FLIGHT EECOM GNC INCO; Moscow: ОБЗОР СОЖ СТР СЭП
                         СУД ДУ ССВП РТС)
  Up, Down               select an alarm;  a  acknowledge it (as the operator)
  h                      shelve the selected alarm for 10 minutes of mission time (it stays
                         listed, greyed out, and returns by itself when the time is up)
  u                      unshelve the selected alarm now
  s                      next source: live, then the replay sessions and drills seen
  c                      the command line: COMMAND [key=value ...] (the status line lists
                         what the console's position may send, Right accepts the offered
                         completion; `soyuz COMMAND` for the other ship); Enter sends it
                         to the commanding service as the operator, Esc closes it; the
                         answer (or why it was refused) on the status line
  x, Esc                 execute, or disarm, the hazardous command the command line armed
  v                      the ship the command panel shows and commands
  k                      on a drill's source (training/<drill>): the call line, for what
                         you would say on the loop ("RCS off now, fumes", "false leak, no
                         action"); Enter makes the call as the operator from --position,
                         Esc closes it; the drill runner stamps it with the mission clock
                         and the debrief scores it against the scenario's timed calls
  q, Ctrl-C              quit

examples:
  groundstation console houston --position EECOM --operator eecom
  groundstation console moscow --position SOZH          # Latin aliases for the groups
  groundstation console houston --source {topics.replay("r1975-0717")} --mqtt-host broker
  GS_MQTT_PASSWORD=... groundstation console houston --mqtt-username flight
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`groundstation console`."""
    p = subparsers.add_parser(
        "console", help="terminal console: Houston or Moscow pages, alarms, link, trends",
        description="A terminal console of one control centre, fed from MQTT by the ingest "
                    "(processed parameters, alarms, link quality). Houston shows both ships "
                    "in English and US units by position; Moscow shows them in Russian and "
                    "metric units by ЦУП group, Soyuz first, with Moscow time. The operator "
                    "on acknowledgements and commands is the MQTT user name when one is "
                    "given (the broker ACL binds "
                    f"{topics.acknowledgements('<user>', '<vehicle>')}, "
                    f"{topics.command_requests('<user>', '<vehicle>')} and "
                    f"{topics.drill_calls('<user>', '<drill>')} to it), else "
                    "--operator, else the login name; commands go from --position. "
                    "Broker settings come from --config, then GS_MQTT_* variables, then the "
                    "flags, as for the ingest. The console reconnects by itself when the "
                    "broker goes away. It needs a terminal: with its input or output a pipe "
                    "or a file it exits with status 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("centre", choices=cp.CENTRES, help="which control centre's console")
    p.add_argument("--position", default=None, metavar="POS",
                   help="start page: FLIGHT, EECOM, GNC or INCO (Houston); ОБЗОР, СОЖ, СТР, "
                        "СЭП, СУД, ДУ, ССВП or РТС, or OBZOR, SOZH, STR, SEP, SUD, DU, SSVP, "
                        "RTS (Moscow)")
    p.add_argument("--source", default=topics.LIVE,
                   help=f"{topics.LIVE} (default), {topics.replay('<session>')} or "
                        f"{topics.training('<drill>')}; 's' switches")
    p.add_argument("--operator", default=None,
                   help="operator name for acknowledgements when no MQTT user name is given "
                        "(default: the login name)")
    add_defs_argument(p)
    add_mqtt_arguments(p, config_help="TOML configuration (its [mqtt] section is used)",
                       username_help="user name the broker authenticates; it is also the "
                                     "operator name on acknowledgements")
    return p


def run(args: argparse.Namespace) -> int:
    """Run `groundstation console`; returns the exit status."""
    try:
        config = load_config(args, sections=("mqtt", "ingest"))
        if config.mqtt.username and args.operator and args.operator != config.mqtt.username:
            print(f"warning: acknowledging as {config.mqtt.username!r}, the MQTT user name "
                  f"(the broker binds acknowledgements to it), not {args.operator!r}",
                  file=sys.stderr)
        definitions = load_definitions(config)
        app = ConsoleApp(centre=args.centre, position=args.position, mqtt=config.mqtt,
                         operator=args.operator, source=args.source, definitions=definitions)
    except (ConfigError, DefinitionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Textual would draw its escape codes into the pipe or file and wait for keys that
        # never come: refuse, as a usage error.
        print(f"error: the console needs a terminal, and its {_not_a_terminal()}; run it in "
              "a terminal (ssh -t for a remote one)", file=sys.stderr)
        return 2
    app.run()
    return 0


def _not_a_terminal() -> str:
    if not sys.stdout.isatty():
        return "output is not one (a pipe or a file)"
    return "input is not one"
