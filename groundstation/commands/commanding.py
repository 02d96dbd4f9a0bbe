"""`groundstation commanding`: the commanding service, and its command definitions and a
command-line sender (groundstation/commanding/)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from groundstation.commands.options import (
    add_config_arguments,
    add_mqtt_arguments,
    load_config,
    load_definitions,
)
from groundstation.config import ConfigError, example_toml
from groundstation.core import messages, topics
from groundstation.core.commanddefs import (
    CommandDefinitionError,
    VehicleCommands,
    commands_dir,
    load_all_commands,
    load_commands,
)
from groundstation.core.definitions import DefinitionError, load_all
from groundstation.core.mission_time import format_get_ns


def _sourced(builder: Any) -> str:
    """A sourced topic's pattern as the help shows it: <source> for the source levels."""
    return str(builder("<vehicle>")).replace(f"/{topics.LIVE}/", "/<source>/")


DESCRIPTION = f"""\
The command path. An operator sends a command from the terminal console (key c) or with
`groundstation commanding send`; the commanding service checks it against the command
definitions (telemetry_defs/commands/<vehicle>.yaml: `groundstation commanding list`) and
the operator's rights, stamps it, sends it to the ship, and follows it through its stages
until the ship's telemetry shows it worked, or not.

  who may command   the operator is the MQTT user name: the broker's ACL lets a user publish
                    requests only on {topics.command_requests('<user>', '<vehicle>')}, so no
                    request arrives in another operator's name. The operators file
                    ([commanding] operators_file, deploy/commanding/operators.toml) says which
                    console positions each operator holds; each command lists the positions
                    allowed to send it. Vehicles, the ingest and the replay tool never command.
  real-time         uplinked, acted on as the ship receives it (it must hear the up-link: a
                    ground station in contact, or ATS-6 while docked; Soyuz only in a Soviet
                    pass)
  procedure         read up to the crew, who read it back and act crew_delay_s later
  hazardous         armed first, then executed within {30:g} s ([commanding] arm_timeout_s)
  stages            refused (why) | armed -> queued -> sent -> received (real-time) or
                    crew_acknowledged (procedure) -> verified | failed (why); cancelled
  verified          each condition of the definition (a state, a value above or below a
                    level) shows in the ingest's processed parameters within its time after
                    the ship acts (mission time)

Topics: requests {topics.command_requests('<operator>', '<vehicle>')}, replies
{topics.command_replies('<operator>')}, to the ship {_sourced(topics.command_uplink)},
the ship's answer {_sourced(topics.command_acks)}, every stage
{_sourced(topics.command_events)} and the retained {_sourced(topics.command_history)}
(<source>: live or training/<drill>). Every stage is also stored: InfluxDB's `commands`
measurement and the command history beside the raw archive
(<archive_dir>/commands/<source>/commands.gsc), which `groundstation replay` republishes
with the recording.
"""

EPILOG = """\
examples:
  groundstation commanding serve --mqtt-username commanding      the service (GS_MQTT_PASSWORD)
  groundstation commanding list apollo_csm --position EECOM      what EECOM may send
  groundstation commanding check                                 definitions, operators file
  groundstation commanding send apollo_csm crew_alert --mqtt-username inco
  groundstation commanding send apollo_csm o2_tank_heaters_fans_off tank=2 --mqtt-username eecom
  groundstation commanding send apollo_csm power_down --arm-and-execute --mqtt-username eecom
  groundstation commanding send soyuz close_hatch_sa_bo --source training/<drill> \\
      --mqtt-username sozh
  groundstation commanding history apollo_csm
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "commanding", help="commands and crew procedures: the commanding service, the "
                           "command definitions, a sender",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="commanding_command", metavar="ACTION", required=True)
    serve = sub.add_parser(
        "serve", help="run the commanding service",
        description="Runs the commanding service until Ctrl-C: requests in, the ships' "
                    "answers and the ingest's processed parameters in; replies, uplinks, "
                    "stage events and the retained history out; every stage stored. Every "
                    "option comes from the config file, then the environment, then the "
                    "flags. In a secured deployment it logs in as `commanding`, the only "
                    "account the broker lets publish to the ships' uplinks.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    serve.add_argument("--print-config", action="store_true",
                       help="print the effective configuration as TOML and exit")
    add_config_arguments(serve)
    ls = sub.add_parser("list", help="the commands and procedures of each ship")
    ls.add_argument("vehicle", nargs="?", help="apollo_csm or soyuz (default both)")
    ls.add_argument("--position", default=None, help="only what this position may send")
    ls.add_argument("--json", action="store_true", help="as JSON")
    check = sub.add_parser("check", help="validate command definitions and the operators "
                                         "file; exit 1 on any problem")
    check.add_argument("files", nargs="*", type=Path,
                       help="command definition files (default: telemetry_defs/commands/)")
    check.add_argument("--operators", type=Path, default=None,
                       help="operators file (default: deploy/commanding/operators.toml)")
    send = sub.add_parser(
        "send", help="send one command and follow it to verified or failed",
        description="Sends one command as the MQTT user, prints the service's answer and "
                    "each stage until the command is verified, fails or is refused. The "
                    "line is what the console's command line takes: COMMAND [key=value ...],"
                    " arm COMMAND ..., execute ID, disarm ID.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    send.add_argument("vehicle", help="apollo_csm or soyuz")
    send.add_argument("line", nargs="+", metavar="COMMAND", help="COMMAND [key=value ...]")
    send.add_argument("--source", default=topics.LIVE,
                      help=f"{topics.LIVE} (default) or {topics.training('<drill>')}")
    send.add_argument("--position", default=None, help="the position to send it from")
    send.add_argument("--arm-and-execute", action="store_true",
                      help="a hazardous command: arm it, then execute it at once")
    send.add_argument("--timeout", type=float, default=120.0,
                      help="give up following it after this many seconds (default 120)")
    add_mqtt_arguments(send, config_help="TOML configuration (its [mqtt] section is used)",
                       username_help="your user name: the operator the command is sent as")
    hist = sub.add_parser("history", help="the recent commands of a ship (the retained "
                                          "history)")
    hist.add_argument("vehicle")
    hist.add_argument("--source", default=topics.LIVE)
    add_mqtt_arguments(hist, config_help="TOML configuration (its [mqtt] section is used)",
                       username_help="user name")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        if args.commanding_command == "serve":
            return _serve(args)
        if args.commanding_command == "list":
            return _list(args.vehicle, args.position, args.json)
        if args.commanding_command == "check":
            return _check(args.files, args.operators)
        if args.commanding_command == "send":
            return _send(args)
        return _history(args)
    except (CommandDefinitionError, DefinitionError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _load(config_defs: Path | None = None, commands: Path | None = None
          ) -> tuple[dict[str, Any], dict[str, VehicleCommands]]:
    defs = load_all(config_defs)
    return defs, load_all_commands(defs, commands)


def _serve(args: argparse.Namespace) -> int:
    from groundstation.commanding.operators import load_operators
    from groundstation.commanding.service import serve
    from groundstation.commands.service_run import run_service
    from groundstation.ingest.wiring import make_sink

    config = load_config(args)
    if args.print_config:
        print(example_toml(config), end="")
        return 0
    defs = load_definitions(config)
    commands = load_all_commands(defs, config.commanding.commands_dir
                                 or Path(config.ingest.defs_dir) / "commands")
    if not commands:
        print("error: no command definitions found", file=sys.stderr)
        return 1
    operators = load_operators(config.commanding.operators_file)

    n = sum(len(c.commands) for c in commands.values())
    sink = make_sink(config, config.commanding.spool_dir)
    run_service("commanding",
                lambda stop, ready: serve(config, defs, commands, operators, sink, stop, ready),
                lambda: f"commanding: subscribed at {config.mqtt.where}; {n} "
                        f"commands of {', '.join(commands)}, {len(operators.positions)} "
                        "operators; Ctrl-C stops")
    return 0


def _list(vehicle: str | None, position: str | None, as_json: bool) -> int:
    _, commands = _load()
    if vehicle is not None and vehicle not in commands:
        print(f"error: no commands for {vehicle!r}; vehicles: {', '.join(commands)}",
              file=sys.stderr)
        return 1
    chosen = {v: c for v, c in commands.items() if vehicle in (None, v)}
    if as_json:
        print(json.dumps({v: [c.model_dump(mode="json") for c in vc.for_position(position)]
                          for v, vc in chosen.items()}, indent=2, ensure_ascii=False))
        return 0
    for v, vc in chosen.items():
        print(f"{v} ({vc.path})")
        for c in vc.for_position(position):
            flags = [c.kind] + (["HAZARDOUS: arm, then execute"] if c.hazardous else [])
            if c.kind == "procedure":
                flags.append(f"crew acts {c.delay_s:g} s after the readback")
            print(f"  {c.usage()}")
            print(f"      {c.label} - {', '.join(flags)}; from {', '.join(c.positions)}")
            print(f"      verified: {'; '.join(x.describe() for x in c.verify)}")
    return 0


def _check(files: list[Path], operators_path: Path | None) -> int:
    from groundstation import paths
    from groundstation.commanding.operators import OperatorsError, load_operators

    defs = load_all()
    failed = 0
    targets = files or sorted(commands_dir().glob("*.yaml"))
    for f in targets:
        try:
            vc = load_commands(f, defs)
        except CommandDefinitionError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        print(f"ok  {f}: {vc.vehicle}, {len(vc.commands)} commands "
              f"({sum(c.kind == 'procedure' for c in vc.commands)} procedures, "
              f"{sum(c.hazardous for c in vc.commands)} hazardous)")
    path = operators_path or paths.operators_file()
    try:
        ops = load_operators(path)
        print(f"ok  {path}: {len(ops.positions)} operators")
    except OperatorsError as exc:
        print(exc, file=sys.stderr)
        failed += 1
    return 1 if failed else 0


def _stage_line(ev: messages.CommandEvent) -> str:
    when = format_get_ns(ev.data_time_ns) if ev.data_time_ns else "-"
    args = " ".join(f"{k}={v}" for k, v in ev.args.items())
    text = f"{when} GET  {ev.command_id}  {ev.command} {args}".rstrip()
    text += f"  {ev.stage.upper()}  ({ev.operator}{'/' + ev.position if ev.position else ''})"
    if ev.reason:
        text += f": {ev.reason}"
    return text


def _send(args: argparse.Namespace) -> int:
    from groundstation.mqtt import MqttClient

    config = load_config(args)
    operator = config.mqtt.username or os.environ.get("USER") or "operator"
    prefix = secrets.token_hex(3)
    line = " ".join(args.line)

    async def main() -> int:
        client = MqttClient(config.mqtt, name="send", client_id=f"gs-send-{operator}-{prefix}",
                            subscriptions=[topics.command_replies(operator),
                                           topics.command_events(args.vehicle, args.source)])
        async with client.connect() as conn:
            n = 0

            async def request(text: str) -> messages.CommandReply:
                nonlocal n
                n += 1
                req = messages.CommandRequest.parse_line(text, f"{prefix}-{n}",
                                                         source=args.source,
                                                         position=args.position)
                await conn.publish(topics.command_requests(operator, args.vehicle),
                                   req.to_json(), qos=1)
                deadline = time.monotonic() + 15
                async for m in conn.messages():
                    if m.topic == topics.command_replies(operator):
                        reply = messages.CommandReply.from_json(m.payload)
                        if reply.request_id == req.request_id:
                            return reply
                    if time.monotonic() > deadline:
                        break
                raise TimeoutError("no answer from the commanding service (is it running?)")

            first = f"arm {line}" if args.arm_and_execute else line
            reply = await asyncio.wait_for(request(first), 20)
            if not reply.ok:
                print(f"refused ({reply.reason}): {reply.error}", file=sys.stderr)
                return 1
            print(f"{reply.command_id}: {reply.command} {reply.stage}")
            if reply.stage == "armed" and args.arm_and_execute:
                reply = await asyncio.wait_for(request(f"execute {reply.command_id}"), 20)
                if not reply.ok:
                    print(f"refused ({reply.reason}): {reply.error}", file=sys.stderr)
                    return 1
            if reply.stage != "queued":
                return 0
            wanted = reply.command_id
            deadline = time.monotonic() + args.timeout
            async for m in conn.messages():
                if time.monotonic() > deadline:
                    print("gave up following it", file=sys.stderr)
                    return 1
                if m.topic != topics.command_events(args.vehicle, args.source):
                    continue
                ev = messages.CommandEvent.from_json(m.payload)
                if ev.command_id != wanted:
                    continue
                print(_stage_line(ev), flush=True)
                for v in ev.verify:
                    mark = {True: "ok", False: "NOT", None: "?"}[v.ok]
                    print(f"      {mark:<3} {v.condition}"
                          + (f" (read {v.value_text or v.value})" if v.value is not None
                             else ""))
                if ev.stage in messages.FINAL_STAGES:
                    return 0 if ev.stage == "verified" else 1
        return 1

    try:
        return asyncio.run(main())
    except (OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except messages.MessageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _history(args: argparse.Namespace) -> int:
    from groundstation.mqtt import MqttClient

    config = load_config(args)

    async def main() -> int:
        client = MqttClient(config.mqtt, name="history",
                            client_id=f"gs-history-{secrets.token_hex(3)}",
                            subscriptions=[topics.command_history(args.vehicle, args.source)])
        async with client.connect() as conn:
            try:
                async with asyncio.timeout(3):
                    async for m in conn.messages():
                        h = messages.CommandHistory.from_json(m.payload)
                        for ev in h.commands:
                            print(_stage_line(ev))
                        if not h.commands:
                            print("no commands")
                        return 0
            except TimeoutError:
                print("no command history (no command yet, or no commanding service)")
        return 0

    return asyncio.run(main())
