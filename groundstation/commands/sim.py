"""`groundstation sim`: fly the simulated ships (simulators/cli.py), with the broker and
definitions flags every command shares (--mqtt-*, --config, --defs-dir, GS_MQTT_*)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import SecretStr

from groundstation.commands.options import add_defs_argument, add_mqtt_arguments, load_config
from simulators import cli

# The spellings `sim` had before it took the shared flags: still accepted, with a warning.
_OLD = {"host": ("--host", str), "port": ("--port", int), "username": ("--username", str),
        "password": ("--password", str)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = cli.add_parser(subparsers)
    add_defs_argument(p)
    add_mqtt_arguments(p, username_help="user name the broker authenticates (in the "
                                        "repository's ACL, the vehicle's own account: "
                                        "apollo_csm or soyuz)")
    old = p.add_argument_group("deprecated spellings (they still work)")
    for key, (flag, kind) in _OLD.items():
        old.add_argument(flag, dest=f"old_{key}", type=kind, default=None,
                         metavar=key.upper(),
                         help=f"use GS_MQTT_PASSWORD or --mqtt-password-file: {flag} is "
                              "visible to every user (ps)" if key == "password"
                         else f"use --mqtt-{key}")
    return p


def run(args: argparse.Namespace) -> int:
    if args.list_events or args.list_faults:
        return cli.run(args)
    for key, (flag, _) in _OLD.items():
        value = getattr(args, f"old_{key}", None)
        if value is None:
            continue
        print(f"warning: {flag} is deprecated: use "
              + ("GS_MQTT_PASSWORD or --mqtt-password-file (the command line is visible to "
                 "every user)" if key == "password" else f"--mqtt-{key}"), file=sys.stderr)
        if key != "password" and getattr(args, f"mqtt__{key}", None) is None:
            setattr(args, f"mqtt__{key}", value)
    config = load_config(args, sections=("mqtt", "ingest"))
    mqtt = config.mqtt
    if args.old_password is not None and args.mqtt__password is None:
        mqtt = mqtt.model_copy(update={"password": SecretStr(args.old_password),
                                       "password_file": None})
    return cli.run(args, mqtt, config.ingest.defs_dir, config.ingest.fleet)
