"""`groundstation dashboards build|push`: the Grafana consoles (groundstation/grafana/)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from groundstation.commands.options import add_defs_argument, load_config, load_definitions
from groundstation.grafana.board import DATASOURCE_UID, DashboardError, build, stale, write
from groundstation.grafana.push import GrafanaError, push
from groundstation.paths import dashboards_dir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `dashboards build|push` to the `groundstation` command's subparsers."""
    p = subparsers.add_parser(
        "dashboards", help="generate the Grafana consoles from the definitions, or upload them",
        description="Houston FLIGHT, EECOM, GNC and INCO, the Moscow (ЦУП) Soyuz console and "
                    "the joint docking view, generated from telemetry_defs/ as Grafana "
                    "dashboards (dashboards/*.json, committed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  groundstation dashboards build              regenerate dashboards/*.json\n"
               "  groundstation dashboards build --check      exit 1 if they are out of date\n"
               "  GRAFANA_TOKEN=... groundstation dashboards push --url http://grafana:3000")
    sub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="write dashboards/*.json from the definitions")
    add_defs_argument(b)
    b.add_argument("--out", type=Path, default=None,
                   help="where to write (default: dashboards/)")
    b.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and list the files that differ")
    u = sub.add_parser("push", help="upload the dashboards to a running Grafana (HTTP API)")
    add_defs_argument(u)
    u.add_argument("--url", default=os.environ.get("GRAFANA_URL", "http://localhost:3000"),
                   help="Grafana base URL (env GRAFANA_URL; default http://localhost:3000)")
    u.add_argument("--user", default=os.environ.get("GRAFANA_USER"),
                   help="basic-auth user (env GRAFANA_USER); a token is preferred: "
                        "GRAFANA_TOKEN, a service account token (never on the command line)")
    u.add_argument("--folder", default="Groundstation", help="folder title")
    u.add_argument("--datasource-uid", default=DATASOURCE_UID,
                   help=f"the InfluxDB (InfluxQL) data source's uid in that Grafana "
                        f"(default {DATASOURCE_UID}, as provisioned by docker-compose)")
    return p


def run(args: argparse.Namespace) -> int:
    """Carry out `groundstation dashboards ...`; returns the exit status."""
    try:
        return _run(args)
    except DashboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    defs = load_definitions(load_config(args, sections=("ingest",)))
    if args.dashboards_command == "build":
        out = args.out if args.out is not None else dashboards_dir()
        if args.check:
            problems = stale(out, defs)
            for line in problems:
                print(line, file=sys.stderr)
            if problems:
                print("run: groundstation dashboards build", file=sys.stderr)
                return 1
            print(f"ok  {out}: every dashboard matches the definitions")
            return 0
        for path in write(out, defs):
            print(f"wrote {path}")
        return 0
    if args.dashboards_command == "push":
        token = os.environ.get("GRAFANA_TOKEN")
        password = os.environ.get("GRAFANA_PASSWORD")
        if not token and not args.user:
            print("error: set GRAFANA_TOKEN (a service account token), or --user and "
                  "GRAFANA_PASSWORD", file=sys.stderr)
            return 2
        try:
            urls = push(build(defs), args.url, token=token, user=args.user, password=password,
                        folder=args.folder, datasource_uid=args.datasource_uid)
        except GrafanaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for u in urls:
            print(f"pushed {u}")
        return 0
    return 2
