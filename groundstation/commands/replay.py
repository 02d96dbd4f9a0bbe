"""`groundstation replay`: a recorded pass (or a time span) through the broker into the
ingest, as a replay session (groundstation/replay/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from groundstation.commands.options import add_mqtt_arguments, load_config
from groundstation.config import ConfigError
from groundstation.core import messages, topics
from groundstation.mqtt import BrokerError
from groundstation.replay import session as rs
from groundstation.replay.replayer import (
    MAX_FRAMES_PER_MESSAGE,
    Replayer,
    ReplayResult,
    parse_speed,
    plan_replay,
    speed_text,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`groundstation replay`."""
    p = subparsers.add_parser(
        "replay", help="replay a recorded pass (or a time span) through the broker into "
                       "the ingest, as a replay session",
        description=f"Republishes recorded frames under "
                    f"{topics.telemetry('<vehicle>', '<stream>', '<session>')} with "
                    "their original times and sequence numbers, at the chosen speed; the "
                    f"ingest stores them under source={topics.replay('<session>')} and raises "
                    "replay alarms no live console shows. Control while it runs: publish to "
                    f"{topics.replay_control('<session>')} ('pause', 'resume', 'speed 10', "
                    "'speed max', 'seek 1975-07-17T16:12Z', 'seek GET 044:22:00', 'stop'); "
                    f"status on {topics.replay_status('<session>')}. Broker settings come "
                    "from --config, then GS_MQTT_* variables, then the flags, as for the "
                    "ingest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  groundstation replay apollo_csm/hbr/1975-07-17T16:09Z --speed 10\n"
               "  groundstation replay 3 --speed max --limits current\n"
               "  groundstation replay --from 'GET 044:15:00' --to 'GET 044:25:00' "
               "--vehicle soyuz --speed 1")
    p.add_argument("pass_id", nargs="?", metavar="PASS",
                   help="pass id or number (groundstation archive ls), or "
                        "<vehicle>/<stream>/<time>")
    p.add_argument("--from", dest="start", metavar="T",
                   help="start time: UTC (1975-07-17T16:09:00Z), GET ('GET 044:19:00') or ns")
    p.add_argument("--to", dest="end", metavar="T", help="end time (inclusive), as --from")
    p.add_argument("--vehicle", default=None, help="with --from/--to: only this vehicle")
    p.add_argument("--speed", default="1", help="1, 10, 100 (any factor) or max (default 1)")
    p.add_argument("--session", default=None,
                   help="session id (default: r<UTC time>-<random>), shown in InfluxDB as "
                        f"source={topics.replay('<session>')}")
    p.add_argument("--limits", choices=rs.LIMITS, default="recorded",
                   help="check limits with the definitions in force when the pass was "
                        "recorded (default) or the ingest's current ones (what-if)")
    p.add_argument("--frames-per-message", type=int, default=MAX_FRAMES_PER_MESSAGE,
                   metavar="N", help=f"most frames in one message (default "
                                     f"{MAX_FRAMES_PER_MESSAGE}; reached at high speed)")
    p.add_argument("--los-gap", type=float, default=60.0, metavar="S",
                   help="a silence longer than this ends a pass (default 60 s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--archive-dir", dest="ingest__archive_dir", default=None, metavar="DIR",
                   help="the archive (default: [ingest] archive_dir, var/archive)")
    add_mqtt_arguments(p, config_help="TOML configuration ([mqtt] and [ingest] archive_dir "
                                      "are used)",
                       username_help="user name (the broker's replay account: replay)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run `groundstation replay`; returns the exit status."""
    try:
        config = load_config(args, sections=("mqtt", "ingest"))
        speed = parse_speed(args.speed)
        if (args.pass_id is None) == (args.start is None and args.end is None):
            raise ValueError("give either a PASS or --from and --to")
        if args.pass_id is not None and args.vehicle:
            raise ValueError("--vehicle goes with --from/--to (a pass is one stream)")
        root = config.ingest.archive_dir
        plan = plan_replay(root, pass_spec=args.pass_id, start=args.start, end=args.end,
                           vehicle=args.vehicle, los_gap_s=args.los_gap)
        rep = Replayer(root, plan, mqtt=config.mqtt, session=args.session, speed=speed,
                       limits=args.limits, progress=not args.no_progress,
                       max_frames_per_message=args.frames_per_message)
    except (ConfigError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"replay session {rep.session}: {plan.describe()} at {speed_text(speed)}, limits "
          f"{args.limits}", file=sys.stderr)
    print(f"  control: {topics.replay_control(rep.session)}   status: "
          f"{topics.replay_status(rep.session)}   InfluxDB: source='{rep.source}'",
          file=sys.stderr)

    async def main() -> ReplayResult:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(
                    sig, lambda: rep.control.handle(messages.ReplayControl(command="stop")))
        return await rep.run()

    try:
        result = asyncio.run(main())
    except BrokerError as exc:  # it says which broker, and why
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for w in rep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{result.state}: {result.frames_sent:,} frames in {result.messages_sent:,} messages "
          f"in {result.seconds:.1f} s"
          + (f"; {result.repeats_skipped:,} repeated frames skipped"
             if result.repeats_skipped else ""), file=sys.stderr)
    return 0 if result.state in ("finished", "stopped") else 1
