"""`groundstation ingest`: the ingest service (groundstation/ingest/)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from groundstation.commands.options import add_config_arguments, load_config, load_definitions
from groundstation.commands.service_run import run_service
from groundstation.config import example_toml
from groundstation.ingest.tasks import WorkerDied
from groundstation.ingest.wiring import serve
from groundstation.malloc_tuning import keep_large_buffers


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    ingest = subparsers.add_parser(
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
    return ingest


def run(args: argparse.Namespace) -> int:
    """Run `groundstation ingest` until SIGINT or SIGTERM."""
    config = load_config(args)
    if args.print_config:
        print(example_toml(config), end="")
        return 0
    definitions = load_definitions(config)
    keep_large_buffers()

    try:
        run_service("ingest", lambda stop, ready: serve(config, definitions, stop, ready),
                    lambda: f"ingest: subscribed at {config.mqtt.where}, "
                            f"writing to {config.influx.url}; Ctrl-C stops")
    except WorkerDied as exc:  # logged with its traceback where it happened
        print(f"error: {exc}; the ingest stopped (what it had not stored, the broker still "
              "holds)", file=sys.stderr)
        return 1
    return 0
