"""`groundstation drill`: list, check, show and run training drills (groundstation/drills/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from groundstation.commands.options import (
    add_defs_argument,
    add_mqtt_arguments,
    load_config,
    load_definitions,
)
from groundstation.core import messages, topics
from groundstation.core.definitions import DefinitionError, load_all
from groundstation.core.mission_time import format_get, format_utc
from groundstation.drills.scenario import (
    ScenarioError,
    find_scenario,
    load_scenario,
    scenario_files,
)
from groundstation.mqtt import BrokerError
from groundstation.paths import scenarios_dir

_CONTROL = topics.drill_control("<drill>")
EPILOG = f"""\
examples:
  groundstation drill list
  groundstation drill show o2-tank-spike              the briefing (for the trainee)
  groundstation drill check                           validate every shipped scenario
  groundstation drill check --fly my-drill.yaml       ... and fly it offline: are the
                                                      expected alarms raised in time?
  groundstation drill run o2-tank-spike --mqtt-username instructor
  groundstation drill run soyuz-cabin-leak --speed 5 --out /tmp/debrief

while a drill runs (instructor; JSON or text on {_CONTROL}):
  mosquitto_pub -t {_CONTROL} -m pause        (resume, stop, stop now)
  mosquitto_pub -t {_CONTROL} -m 'inject apollo_csm cabin_leak rate_lb_h=5'
  mosquitto_pub -t {_CONTROL} -m '{{"cmd": "inject", "vehicle": "soyuz",
      "fault": "coolant_loop", "expect": [{{"parameter": "coolant_temp", "within_s": 900}}]}}'
  mosquitto_sub -t '{topics.DRILL_STATUS_SUBSCRIPTION}' -v                  (every user may watch)
  on the instructor's terminal: p pause, r resume, q stop, i VEHICLE FAULT [k=v ...]
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "drill", help="training drills: scenarios of injected faults, scored debriefs",
        description="Training drills. A scenario (simulators/scenarios/*.yaml) starts the "
                    "simulated ships at a point of the mission, injects faults on time and "
                    "says which alarms each must raise; the trainees acknowledge them on "
                    "their consoles as usual. The drill's data is tagged "
                    f"source={topics.training('<drill>')} everywhere (InfluxDB, topics, "
                    "archive), so it "
                    "never mixes with live data. At the end the runner writes a debrief "
                    "(Markdown, JSON, timeline PNG) with a score.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="drill_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the scenarios, with their titles")
    ls.add_argument("--dir", type=Path, default=scenarios_dir(), help="scenario directory")
    check = sub.add_parser("check", help="validate scenario files; exit 1 on any problem")
    check.add_argument("files", nargs="*", type=Path,
                       help="scenario files (default: every shipped scenario)")
    check.add_argument("--fly", action="store_true",
                       help="also fly each offline (no broker) and check that every "
                            "expected alarm is raised in time and no other; with expected "
                            "actions, fly it again taking each at its due time and check "
                            "its effect shows in the telemetry")
    show = sub.add_parser("show", help="a scenario's briefing and plan")
    show.add_argument("scenario", help="scenario id or file")
    show.add_argument("--instructor", action="store_true",
                      help="also show the faults and expected alarms (not for trainees)")
    run_p = sub.add_parser(
        "run", help="fly a drill against the broker and write its debrief",
        description="Flies the scenario's ships in this process as source "
                    f"{topics.training('<drill>')}, injects its faults on time, records "
                    "alarms and "
                    "acknowledgements from the ingest, and writes debrief.md, debrief.json "
                    "and timeline.png. Broker settings come from --config, then GS_MQTT_* "
                    "variables, then the flags, as for the ingest.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    run_p.add_argument("scenario", help="scenario id (groundstation drill list) or file")
    run_p.add_argument("--speed", type=float, default=None,
                       help="mission seconds per real second (default: the scenario's, "
                            "usually 1); acknowledgement windows are mission seconds")
    run_p.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="write the debrief here (default: drills/<drill> next to the "
                            "archive directory, var/drills/<drill>)")
    run_p.add_argument("--drill-id", default=None,
                       help="drill id (default: <scenario>-<UTC time>); the data's source "
                            f"is {topics.training('<drill-id>')}")
    run_p.add_argument("--no-progress", action="store_true", help="no progress line")
    run_p.add_argument("--no-stdin", action="store_true",
                       help="do not read p/r/q/i commands from the terminal")
    add_defs_argument(run_p)
    add_mqtt_arguments(run_p, config_help="TOML configuration ([mqtt], and [ingest] "
                                          "archive_dir for the default --out)",
                       username_help="user name (in a secured deployment: instructor)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        if args.drill_command == "list":
            return _list(args.dir)
        if args.drill_command == "check":
            return _check(args.files, args.fly)
        if args.drill_command == "show":
            return _show(args.scenario, args.instructor)
        return _run(args)
    except (FileNotFoundError, DefinitionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("fix the fields named above; the schema is in simulators/scenarios/README.md",
              file=sys.stderr)
        return 1


def _list(directory: Path) -> int:
    files = scenario_files(directory)
    if not files:
        print(f"no scenarios in {directory}", file=sys.stderr)
        return 1
    defs = load_all()
    bad = 0
    for f in files:
        try:
            sc = load_scenario(f, defs)
        except ScenarioError as exc:
            bad += 1
            print(f"{f.stem:<22} (invalid: {len(exc.problems)} problems; groundstation drill "
                  f"check {f})")
            continue
        print(f"{sc.id:<22} {format_get(sc.start_get)} {format_get(sc.duration_s)[4:]:>5}  "
              f"{', '.join(sc.ships):<18} {sc.title}")
    return 1 if bad else 0


def _check(files: list[Path], fly: bool) -> int:
    from groundstation.drills.debrief import build_debrief, scenario_injections
    from groundstation.drills.offline import action_problems, fly_offline

    files = files or scenario_files()
    defs = load_all()
    failed = 0
    for f in files:
        try:
            sc = load_scenario(f, defs)
        except ScenarioError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        if not fly:
            print(f"{f}: ok ({len(sc.faults)} faults, "
                  f"{sum(len(x.expect) for x in sc.faults)} expected alarms)")
            continue
        result = fly_offline(sc, defs)
        injections = scenario_injections(sc)
        d = build_debrief(sc, "offline", injections, result.events, speed=0.0,
                          started_get=sc.start_get, ended_get=sc.end_get + sc.grace,
                          cues=result.cues, calls_together=result.calls)
        problems = [f"{r['vehicle']} {r['parameter']} ({r['severity']}) for fault "
                    f"{x['id']}: {r.get('note', 'not raised')}"
                    for x in d["faults"] for r in x["alarms"]
                    if r["status"] == "missed_by_system"]
        problems += [f"{u['vehicle']} {u['parameter']} ({u['severity']}) raised at "
                     f"{u['raised']} without a fault (add it to a fault's collateral or to "
                     "tolerate)" for u in d["raised_without_fault"]]
        problems += [f"call {c['call']!r}: {c['note']}" for c in d["timed_calls"]
                     if not c.get("cues_in_time", True)]
        acted = None
        if sc.actions:
            # Flown again: each expected action taken at its due time (the last moment).
            acted = fly_offline(sc, defs, actions=True)
            problems += action_problems(sc, acted)
        if problems:
            failed += 1
            print(f"{f}: {len(problems)} problems when flown offline:\n  "
                  + "\n  ".join(problems), file=sys.stderr)
        else:
            times = [f"{r['parameter']} +{r['raised_after_s']:.0f} s"
                     for x in d["faults"] for r in x["alarms"]]
            times += [f"call cues together +{c['cues_together_after_s']:.0f} s (due "
                      f"+{c['within_s']:g} s)" for c in d["timed_calls"]]
            if acted is not None:
                times += [f"{a.id} at +{a.within_s:g} s: "
                          + ", ".join(f"{w.what.split(':')[0]} +"
                                      f"{(w.shown or 0) - (acted.actions[a.id].act or 0):.0f} s"
                                      for w in acted.actions[a.id].watches)
                          for a in sc.actions]
            print(f"{f}: ok, flown offline: {', '.join(times)}")
    return 1 if failed else 0


def _show(name: str, instructor: bool) -> int:
    sc = load_scenario(find_scenario(name))
    print(f"{sc.title}\n{'=' * len(sc.title)}")
    print(f"start {format_get(sc.start_get)} GET ({format_utc(sc.start_get)}), "
          f"{format_get(sc.duration_s)} of mission time; ships: {', '.join(sc.ships)}; "
          f"positions: {', '.join(sc.positions)}; acknowledge within {sc.ack_within_s:g} s\n")
    print(sc.briefing.strip())
    if instructor:
        print("\nfaults (instructor only):")
        for f in sc.faults:
            params = ", ".join(f"{k}={v}" for k, v in f.params.items())
            print(f"  {format_get(f.start_get)} {f.id}: {f.vehicle} {f.fault} {params}")
            for e in f.expect:
                print(f"      expect {sc.expected_vehicle(f, e)} {e.parameter} {e.severity} "
                      f"within {e.within_s:g} s, ack within {sc.ack_within(e):g} s")
            for c in sc.timed_calls:
                if sc.call_fault(c) is f:
                    said = " and ".join(k.replace("|", " or ") for k in c.keywords) \
                        or "any call"
                    print(f"      call within {c.within_s:g} s: {c.call} (cues: "
                          f"{'; '.join(x.describe() for x in c.cues)}; scored on: {said})")
        if sc.actions or sc.harmful:
            print("\nexpected actions (instructor only):")
            for act in sc.actions:
                fault = sc.action_fault(act)
                print(f"  {act.id}: {sc.action_vehicle(act)} {act.describe()} from "
                      f"{act.position or 'any position'} within {act.within_s:g} s of "
                      f"{fault.id if fault else '?'}")
                for eff in act.effect:
                    print(f"      effect: {eff.describe()}")
            for h in sc.harmful:
                args = " ".join(f"{k}={v}" for k, v in h.args.items())
                print(f"  harmful: {sc.harmful_vehicle(h)} {h.command} {args}".rstrip()
                      + f": {h.reason.strip()}")
        if sc.history:
            print("\nthe real event:\n" + sc.history.strip())
    return 0


def _run(args: argparse.Namespace) -> int:
    from groundstation.config import ConfigError
    from groundstation.drills.runner import (
        PLOT_MISSING,
        DrillOptions,
        DrillRunner,
        plot_available,
    )

    try:
        config = load_config(args, sections=("mqtt", "ingest"))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    defs = load_definitions(config)
    sc = load_scenario(find_scenario(args.scenario), defs)
    if not plot_available():
        print(f"note: no timeline.png: {PLOT_MISSING}", file=sys.stderr)
    out = args.out if args.out is not None else config.ingest.archive_dir.parent / "drills"
    try:
        runner = DrillRunner(sc, defs, DrillOptions(
            mqtt=config.mqtt, speed=args.speed, out_dir=out,
            out_exact=args.out is not None, drill_id=args.drill_id,
            progress=None if args.no_progress else sys.stderr,
            interactive=not args.no_stdin))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, lambda: runner.command(
                    messages.DrillControl(cmd="stop"), by="signal"))
        return await runner.run()

    try:
        result = asyncio.run(main())
    except BrokerError as exc:  # it names the broker and says why
        print(f"\nerror: {exc} (is it running? in a secured deployment log in as the "
              "instructor: --mqtt-username instructor and GS_MQTT_PASSWORD or "
              "GS_MQTT_PASSWORD_FILE)", file=sys.stderr)
        return 1
    print(f"\ndebrief: {result.out / 'debrief.md'}  score: "
          f"{'n/a' if result.debrief['score'] is None else result.debrief['score']}/100")
    return 0
