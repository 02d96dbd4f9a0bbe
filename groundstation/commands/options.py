"""Flags generated from the one configuration schema (groundstation/config.py), shared by
every command that takes configuration: the ingest's full set, or the broker's alone for
the MQTT clients. Precedence: file, then environment, then these flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from groundstation.config import ENV_PREFIX, SECTIONS, Config, load


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per option, generated from the schema."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML config file (sections [mqtt], [influx], [ingest])")
    for section, model in SECTIONS.items():
        group = parser.add_argument_group(f"[{section}] options",
                                          f"environment: {ENV_PREFIX}{section.upper()}_<KEY>")
        for key, field in model.model_fields.items():
            flag = f"--{section}-{key.replace('_', '-')}"
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else f" (default: {default})"
            group.add_argument(flag, dest=f"{section}__{key}", default=None,
                               metavar=key.upper(),
                               help=f"{field.description}{shown}; env "
                                    f"{ENV_PREFIX}{section.upper()}_{key.upper()}")


def add_mqtt_arguments(parser: argparse.ArgumentParser, *, config_help: str,
                       username_help: str) -> None:
    """--config and the broker flags, for the commands that are MQTT clients only (replay,
    drill, console): the same schema and precedence as the ingest, fewer options."""
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help=config_help)
    for key, typ, text in (("host", str, "broker host"), ("port", int, "broker port"),
                           ("username", str, username_help),
                           ("password", str, "password (prefer the environment: "
                                             f"{ENV_PREFIX}MQTT_PASSWORD)")):
        parser.add_argument(f"--mqtt-{key}", dest=f"mqtt__{key}", type=typ, default=None,
                            metavar=key.upper(),
                            help=f"{text}; env {ENV_PREFIX}MQTT_{key.upper()}")


def load_config(args: argparse.Namespace) -> Config:
    """The effective configuration of a command: its --config file, the environment, then
    its flags."""
    return load(getattr(args, "config", None), flags=vars(args))
