"""Flags generated from the one configuration schema (groundstation/config.py), shared by
every command that takes configuration: the ingest's full set; the broker's section for
every command that talks to the broker (console, replay, drill run, sim, demo's children);
the definitions directory (--defs-dir) for every command that reads the definitions.
Precedence: file, then environment, then these flags.

A secret (a password, a token) has no flag of its own worth using: the command line is
visible to every user of the machine (`ps`) and in `docker inspect`. Its `--...-file` flag
names a file holding it; the environment (`GS_MQTT_PASSWORD`, `GS_MQTT_PASSWORD_FILE`)
works as well. The value flag (`--mqtt-password`) still works, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from groundstation.config import (
    ENV_PREFIX,
    SECTIONS,
    Config,
    ConfigError,
    env_name,
    flag_name,
    is_secret,
    load,
)
from groundstation.core import fleet
from groundstation.core.definitions import VehicleDefinition, load_all

_DEPRECATED_SECRET = "deprecated: the command line is visible to every user (ps)"
# Spellings kept working, each for its option (section, key); hidden from --help.
OLD_FLAGS: dict[tuple[str, str], tuple[str, ...]] = {("ingest", "defs_dir"): (
    "--ingest-defs-dir", "--defs")}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per option of every section, generated from the schema
    (the ingest, which reads them all)."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML config file (sections [mqtt], [influx], [ingest])")
    for section in SECTIONS:
        _add_section(parser, section)


def add_mqtt_arguments(parser: argparse.ArgumentParser, *, config_help: str | None = None,
                       username_help: str | None = None) -> None:
    """--config and every [mqtt] flag, for the commands that are MQTT clients: the same
    schema, names and precedence as the ingest's."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=config_help or "TOML configuration (its [mqtt] section, and "
                                            "[ingest] defs_dir)")
    _add_section(parser, "mqtt", help_for={"username": username_help} if username_help
                 else None)


def add_defs_argument(parser: argparse.ArgumentParser, text: str | None = None) -> None:
    """--defs-dir and --fleet: the one spelling of the definitions directory and of the
    fleet's members for every command ([ingest] defs_dir and fleet, GS_INGEST_DEFS_DIR and
    GS_INGEST_FLEET); load_definitions(load_config(args)) reads both. `text`: the help of
    --defs-dir."""
    _add_option(parser, "ingest", "defs_dir", parser, text)
    _add_option(parser, "ingest", "fleet", parser)


def load_definitions(config: Config) -> dict[str, VehicleDefinition]:
    """The telemetry definitions in force: the directory's, with the fleet's members
    (groundstation.core.fleet). Raises DefinitionError (a file), or ConfigError naming the
    fleet entry that names no defined vehicle."""
    defs = load_all(config.ingest.defs_dir)
    try:
        return fleet.expand(defs, config.ingest.fleet)
    except fleet.FleetError as exc:
        raise ConfigError(f"bad configuration:\n  [ingest] {exc}") from None


def _add_section(parser: argparse.ArgumentParser, section: str,
                 keys: Iterable[str] | None = None,
                 help_for: dict[str, str | None] | None = None) -> None:
    model = SECTIONS[section]
    group = parser.add_argument_group(f"[{section}] options",
                                      f"environment: {ENV_PREFIX}{section.upper()}_<KEY>")
    for key in keys or model.model_fields:
        _add_option(parser, section, key, group, (help_for or {}).get(key))


def _add_option(parser: argparse.ArgumentParser, section: str, key: str, group: Any,
                text: str | None = None) -> None:
    field = SECTIONS[section].model_fields[key]
    default = field.get_default(call_default_factory=True)
    shown = "" if default in (None, [], {}) or is_secret(SECTIONS[section], key) else \
        f" (default: {default})"
    env = env_name(section, key)
    flag = flag_name(section, key)
    dest = f"{section}__{key}"
    if is_secret(SECTIONS[section], key):
        group.add_argument(flag, dest=dest, default=None, metavar=key.upper(),
                           help=f"{_DEPRECATED_SECRET}: use {env} or {flag}-file")
    elif field.annotation is bool:
        group.add_argument(flag, dest=dest, default=None,
                           action=argparse.BooleanOptionalAction,
                           help=f"{text or field.description}{shown}; env {env}")
    else:
        metavar = "FILE" if key.endswith("_file") else "DIR" if key.endswith("_dir") \
            else "BASE=COUNT,..." if field.annotation == dict[str, int] else key.upper()
        kind = field.annotation if field.annotation in (int, float) else None
        group.add_argument(flag, dest=dest, default=None, metavar=metavar, type=kind,
                           help=f"{text or field.description}{shown}; env {env}")
    for old in OLD_FLAGS.get((section, key), ()):
        group.add_argument(old, dest=dest, default=None, help=argparse.SUPPRESS)


def load_config(args: argparse.Namespace, *, sections: Iterable[str] | None = None
                ) -> Config:
    """The effective configuration of a command: its --config file, the environment, then
    its flags. A secret given as a flag works, with a warning."""
    flags = vars(args)
    for section, model in SECTIONS.items():
        for key in model.model_fields:
            if is_secret(model, key) and flags.get(f"{section}__{key}") is not None:
                print(f"warning: {flag_name(section, key)}: {_DEPRECATED_SECRET}, and in "
                      f"`docker inspect`; use {env_name(section, key)} or "
                      f"{flag_name(section, key)}-file", file=sys.stderr)
    return load(getattr(args, "config", None), flags=flags, sections=sections)
