"""`groundstation sim`: fly Apollo, Soyuz or both through the ASTP mission onto a broker.

groundstation/commands/sim.py wires this in: add_parser(subparsers) makes the subcommand and
adds the flags the station shares (the broker's --mqtt-*, --config, --defs-dir, from the
configuration schema); run(args, mqtt, defs_dir) flies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundstation.config import MqttConfig
from groundstation.core import fleet, messages, topics
from groundstation.core import flightplan as tl
from groundstation.core.definitions import DefinitionError, VehicleDefinition, load_all
from groundstation.core.mission_time import format_get, parse_duration
from groundstation.mqtt import BrokerError
from groundstation.paths import defs_dir
from simulators.faults import CATALOGUE, FaultError, FaultManager
from simulators.mission import Mission
from simulators.recorder import HBR_CAPACITY_S, HBR_DUMP_RATE
from simulators.runner import RunnerOptions, SimRunner

SHIPS = {"apollo": [tl.APOLLO], "soyuz": [tl.SOYUZ], "both": [tl.APOLLO, tl.SOYUZ],
         "fleet": [], "all": [tl.APOLLO, tl.SOYUZ]}
WITH_FLEET = ("fleet", "all")  # the choices that fly the fleet's members
PROGRESS_S = 5.0  # real seconds between a fleet's progress lines
SHORT = {"apollo": tl.APOLLO, "apollo_csm": tl.APOLLO, "soyuz": tl.SOYUZ}

_V = "<vehicle>"
_DRILL = topics.training("<drill>")
DESCRIPTION = f"""\
Fly the simulated Apollo CSM and Soyuz 19 through the 1975 ASTP mission and downlink their
PCM telemetry to an MQTT broker, as the real ships did to Houston and Moscow.

The mission clock is ground elapsed time (GET) from the Apollo liftoff, 1975-07-15
19:50:01 UTC (Soyuz launched at GET -007:30:01). Both ships are always simulated together
(the docking module's gas is shared with Soyuz during transfers); you choose which of them
transmit. A ship transmits only while a ground station hears it: NASA's network for Apollo
(plus the ATS-6 relay while docked), the Soviet stations for Soyuz. Apollo records what it
cannot send and dumps the recording, faster than real time, after the next acquisition of
signal; Soyuz's data out of coverage is lost.

Each ship's subsystems are physical models that stay consistent: the O2 regulator holds
the cabin against leaks, LiOH canisters load up and are changed, fuel cells share the load,
cryo tanks empty, burns use propellant, temperatures follow orbital day and night. Values
go through sensor noise and the telemetry definitions' encoder, so every reading is a real
count of its sensor. The same --seed and --start give the same frames, byte for byte.

Topics:
  {topics.telemetry(_V, "<stream>"):<34} frames, msgpack envelopes (playback dumps too, with
                                     their original seq and times and "playback": true)
  {topics.sim_state(_V):<34} retained JSON: GET, UTC, phase, docked, AOS, faults
  {topics.sim_control(_V):<34} JSON requests: inject and clear faults, pause and
                                     resume the mission clock (see below)
  {topics.sim_reply(_V):<34} one JSON reply per request; bad requests change nothing

With --source {_DRILL} the ships fly for a drill instead: frames on
{topics.telemetry(_V, "<stream>", source=_DRILL)}, state on {topics.sim_state(_V, _DRILL)}
(cleared when the simulator stops), no control topic; the broker lets only the instructor
account publish there.

A fleet (--fleet apollo_csm=8,soyuz=8, GS_INGEST_FLEET, [ingest] fleet: the same setting
the ingest decodes the members with) is more ships under the definitions of Apollo and
Soyuz, apollo_csm-1 .. apollo_csm-8 and soyuz-1 .. soyuz-8: `sim fleet` flies the members,
`sim all` both ships and the members, in one process. Every member flies its base ship's
mission (the frames are made once and sent under each member's id, on
{topics.telemetry('<member>', '<stream>')}, with its state on {topics.sim_state('<member>')}),
logs in to the broker as itself (user name = its vehicle id, with the [mqtt] password) and
hears no control topic. A line every {PROGRESS_S:g} s says what the fleet has sent and how
fast: a load generator for the ground.
"""

_APOLLO_CONTROL = topics.sim_control(tl.APOLLO)
_REPLIES, _STATES = topics.SIM_REPLY_SUBSCRIPTION, topics.SIM_STATE_SUBSCRIPTIONS[0]
EPILOG = f"""\
examples:
  groundstation sim both                              both ships, real time, from T-1 h
  groundstation sim both --speed 100                  100 mission seconds every second
  groundstation sim apollo --start docking-30m        start 30 min before the first docking
  groundstation sim soyuz --start 041:00:00 --until 045:00:00 --speed 20
  groundstation sim both --start 055:00:00 \\
      --fault apollo:o2_tank_heater:tank=2,rupture=true,at=055:53:00
  groundstation sim apollo --fault apollo:cabin_leak:rate_lb_h=2,ramp_s=300
  groundstation sim apollo --start els-arm-6m \\
      --fault apollo:entry_rcs_fumes:at=els-arm-4m           the ASTP entry fumes
  groundstation sim apollo --start 051:57:00 \\
      --fault apollo:dm_trapped_gas:at=052:00:00              the false DM leak
  GS_MQTT_PASSWORD_FILE=/run/secrets/apollo groundstation sim apollo \
      --mqtt-host broker --mqtt-username apollo_csm    as the vehicle's broker account
  groundstation sim fleet --fleet apollo_csm=8,soyuz=8 --speed 10
                                                      16 more ships, a load generator
  groundstation sim both --list-events                the timeline, with its GETs
  groundstation sim both --list-faults                what can be broken, and how

control requests (mosquitto_pub -t {_APOLLO_CONTROL} -m '...'):
  {{"cmd": "inject", "fault": "fuel_cell_loss", "params": {{"cell": 2}}, "id": "drill-1"}}
  {{"cmd": "inject", "fault": "cabin_leak", "params": {{"rate_lb_h": 5}}, "at": "docking+10m",
   "ramp_s": 120, "duration_s": 1800}}
  {{"cmd": "inject", "fault": "sensor_stuck", "params": {{"parameter": "cabin_press"}}}}
  {{"cmd": "inject", "fault": "los", "duration_s": 600}}    Apollo records, then dumps
  {{"cmd": "clear", "fault_id": "F1"}}      {{"cmd": "clear", "fault": "cabin_leak"}}
  {{"cmd": "clear_all"}}    {{"cmd": "list"}}    {{"cmd": "status"}}
  {{"cmd": "pause"}}        freeze the mission clock (both ships): no frames, state "paused"
  {{"cmd": "resume"}}       fly on from the same GET at the same speed (no catching up)
  {{"cmd": "pcm_mode", "mode": "LBR"}}   Apollo's PCM to low bit rate (1.6 kbit/s, stream
                            lbr) until "HBR" or the flight plan switches it (LBR through
                            the first night, GET 009:30-017:36)
  Watch the answers with: mosquitto_sub -t '{_REPLIES}' -t '{_STATES}' -v

times (--start, --until, "at"): a GET such as 044:19:08 or -007:30:01, or an event with an
optional offset such as docking-30m, tpi+5m, splashdown-1h30m (--list-events).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sim` subcommand to groundstation's argument parser (without the shared
    broker and definitions flags: groundstation/commands/sim.py adds those)."""
    p = subparsers.add_parser(
        "sim", help="fly the simulated ships through the ASTP mission onto a broker",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ships", choices=list(SHIPS),
                   help="which ships transmit: apollo, soyuz, both, the fleet's members "
                        "(fleet, with --fleet), or both and the members (all)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="mission seconds per real second: 1 is real time; 100 flies an "
                        "orbit in under a minute (default 1)")
    p.add_argument("--start", default="apollo-launch-1h",
                   help="GET or event[+/-offset] to start at (default apollo-launch-1h)")
    p.add_argument("--until", help="GET or event[+/-offset] to stop at (default: the end of "
                                   "the ships' missions)")
    p.add_argument("--seed", type=int, default=1975,
                   help="random seed: the same seed and start give the same frames")
    p.add_argument("--frames-per-message", type=int, default=None, metavar="N",
                   help="minor frames per MQTT message (default: about ten messages a "
                        "second per ship at the chosen speed, at least 5)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1,
                   help="MQTT QoS for telemetry (default 1: at least once)")
    p.add_argument("--backlog-frames", type=int, default=500_000, metavar="N",
                   help="frames kept while the broker is unreachable; past this the "
                        "oldest are dropped and counted (default 500000)")
    p.add_argument("--recorder-minutes", type=float, default=HBR_CAPACITY_S / 60.0,
                   help="Apollo's onboard recorder, minutes of HBR data (default "
                        f"{HBR_CAPACITY_S / 60.0:g}: the DSE's tape at 15 in/s; it holds "
                        "4x as long in LBR)")
    p.add_argument("--playback-rate", type=float, default=HBR_DUMP_RATE,
                   help="recorded HBR frames' worth of tape dumped per live HBR frame at "
                        f"AOS (default {HBR_DUMP_RATE:g}: the DSE dumps at 120 in/s, 8x HBR, "
                        "32x LBR)")
    p.add_argument("--fault", action="append", default=[], metavar="SHIP:FAULT[:K=V,...]",
                   help="inject a fault at start-up; keys are the fault's parameters and "
                        "at, ramp_s, duration_s (repeatable)")
    p.add_argument("--source", default=topics.LIVE,
                   metavar=f"{topics.LIVE}|{topics.training('DRILL')}",
                   help=f"{topics.LIVE} (default), or {_DRILL} to fly a drill's ships "
                        "under the training topics (as the instructor account)")
    p.add_argument("--no-historical", action="store_true",
                   help="leave out the real minor anomalies (Soyuz TV failure, the false "
                        "GNC alarm of Jul 17)")
    p.add_argument("--list-events", action="store_true", help="print the timeline and exit")
    p.add_argument("--list-faults", action="store_true", help="print the faults and exit")
    return p


def run(args: argparse.Namespace, mqtt: MqttConfig | None = None,
        definitions_dir: Path | None = None, fleet_setting: Mapping[str, int] | None = None
        ) -> int:
    """Run the `sim` subcommand with this broker, definitions directory and fleet (default:
    the local broker, telemetry_defs/, none); returns the exit status."""
    mqtt = mqtt or MqttConfig()  # type: ignore[call-arg]
    fleet_setting = fleet_setting or {}
    definitions_dir = definitions_dir or defs_dir()
    if args.list_events:
        for e in tl.EVENTS:
            print(e.describe())
        return 0
    if args.list_faults:
        _print_faults()
        return 0
    try:
        start = tl.parse_time(args.start)
        until = tl.parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if until is not None and until <= start:
        print(f"error: --until {format_get(until)} is not after --start {format_get(start)}",
              file=sys.stderr)
        return 2
    try:
        parsed = topics.Source.parse(args.source)
    except ValueError as exc:
        print(f"error: --source: {exc}", file=sys.stderr)
        return 2
    if parsed.kind is topics.SourceKind.REPLAY:
        print(f"error: --source: the simulators fly {topics.LIVE} or {_DRILL} ships",
              file=sys.stderr)
        return 2
    source = str(parsed)
    if not 0 < args.speed <= 10000:
        print("error: --speed must be above 0 and at most 10000", file=sys.stderr)
        return 2
    early = FaultManager()  # catch a mistyped --fault before the slower start-up
    for spec in args.fault:
        try:
            _parse_fault(spec, lambda v, n, p, c: early.validate(v, n, p, start, **c))
        except (FaultError, ValueError) as exc:
            print(f"error: --fault {spec!r}: {exc}", file=sys.stderr)
            return 2
    try:
        defs = load_all(definitions_dir)
    except DefinitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ships = SHIPS[args.ships]
    missing = [v for v in ships if v not in defs]
    if missing:
        print(f"error: no telemetry definition for {', '.join(missing)} in {definitions_dir}",
              file=sys.stderr)
        return 1
    members: list[VehicleDefinition] = []
    if args.ships in WITH_FLEET:
        try:
            expanded = fleet.expand(defs, fleet_setting)
        except fleet.FleetError as exc:
            print(f"error: --fleet: {exc}", file=sys.stderr)
            return 2
        members = [expanded[m] for m in fleet.members(fleet_setting)]
        if not members:
            print(f"error: sim {args.ships}: the fleet has no members: give --fleet "
                  "BASE=COUNT,... (e.g. apollo_csm=8,soyuz=8), GS_INGEST_FLEET or [ingest] "
                  "fleet", file=sys.stderr)
            return 2
    mission = Mission(start, seed=args.seed, historical=not args.no_historical,
                      definitions=defs)
    for spec in args.fault:
        try:
            f = _inject(mission, spec)
        except (FaultError, ValueError) as exc:
            print(f"error: --fault {spec!r}: {exc}", file=sys.stderr)
            return 2
        print(f"fault {f.id}: {f.vehicle} {f.name} {f.params} from {format_get(f.start)}")
    options = RunnerOptions(
        mqtt=mqtt, speed=args.speed, frames_per_message=args.frames_per_message, qos=args.qos,
        backlog_frames=args.backlog_frames, recorder_s=args.recorder_minutes * 60.0,
        playback_rate=args.playback_rate, until=until, source=source, fail_fast=True)
    try:
        runner = SimRunner(mission, [defs[v] for v in ships], options, members)
    except fleet.FleetError as exc:  # a member of a ship no simulator flies
        print(f"error: --fleet: {exc}", file=sys.stderr)
        return 2
    listens = ("no control topic" if runner.training else
               f"control on {', '.join(topics.sim_control(v) for v in ships)}, replies on "
               f"{', '.join(topics.sim_reply(v) for v in ships)}")
    if ships:
        print(f"flying {', '.join(ships)} from {format_get(start)} at {args.speed:g}x to "
              f"{runner.publisher.client.destination} (seed {args.seed}, source {source}); "
              f"{listens}, state on {', '.join(topics.sim_state(v, source) for v in ships)}")
    if members:
        print(f"flying the fleet from {format_get(start)} at {args.speed:g}x to "
              f"{runner.publisher.client.destination} (seed {args.seed}, source {source}): "
              f"{_fleet_text(fleet_setting)}, each logged in as itself")
    return asyncio.run(_run(runner))


def _fleet_text(setting: Mapping[str, int]) -> str:
    return ", ".join(f"{fleet.member_id(b, 1)} .. {fleet.member_id(b, n)}" if n > 1
                     else fleet.member_id(b, 1) for b, n in setting.items() if n)


async def _run(runner: SimRunner) -> int:
    stop, finished = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = loop.time()
    progress = asyncio.create_task(_progress(runner, finished)) if runner.members else None
    try:
        await runner.run(stop)
    except BrokerError as exc:  # refused: a setting to change, not something to wait out
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        finished.set()
        if progress is not None:
            await progress
    for v in runner.vehicles:
        s = runner.tx[v].stats
        print(f"{v}: {s.live_frames} live and {s.playback_frames} playback frames in "
              f"{s.messages} messages; {runner.tx[v].recorded} still on the recorder; "
              f"{runner.publisher.dropped_frames} dropped from the backlog")
    if runner.members:
        stats = [runner.tx[m].stats for m in runner.members]
        seconds = max(loop.time() - started, 1e-9)
        frames = sum(runner.publishers[m].sent_frames for m in runner.members)
        print(f"fleet: {len(runner.members)} members sent {frames} frames "
              f"({sum(s.live_frames for s in stats)} live, "
              f"{sum(s.playback_frames for s in stats)} playback) in "
              f"{sum(s.messages for s in stats)} messages, {frames / seconds:.0f} frames/s; "
              f"{sum(runner.publishers[m].dropped_frames for m in runner.members)} dropped "
              "from the backlog")
    print(f"stopped at {format_get(runner.mission.t)}; achieved {runner.achieved_speed:.1f}x")
    return 0


async def _progress(runner: SimRunner, finished: asyncio.Event) -> None:
    """Every PROGRESS_S while a fleet flies: how many ships, where, what the broker has
    taken and how fast, how far behind."""
    loop = asyncio.get_running_loop()
    last_t, last_n = loop.time(), runner.sent_frames
    while not finished.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), PROGRESS_S)
        if finished.is_set():
            return
        now, n = loop.time(), runner.sent_frames
        print(f"fleet: {len(runner.base)} ships at {format_get(runner.get)}, {n} frames sent, "
              f"{(n - last_n) / max(now - last_t, 1e-9):.0f} frames/s, "
              f"{runner.achieved_speed:.1f}x of {runner.o.speed:g}x, backlog "
              f"{runner.backlog_frames} frames", flush=True)
        last_t, last_n = now, n


def _inject(mission: Mission, spec: str) -> Any:
    return _parse_fault(spec, lambda v, n, p, c: mission.inject(v, n, p, **c))


def _parse_fault(spec: str, apply: Any) -> Any:
    """SHIP:FAULT[:KEY=VALUE,...] -> apply(vehicle, fault, params, common options)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or parts[0] not in SHORT:
        raise ValueError("write SHIP:FAULT[:KEY=VALUE,...] with SHIP apollo or soyuz")
    vehicle, name = SHORT[parts[0]], parts[1]
    params: dict[str, Any] = {}
    common: dict[str, Any] = {}
    for item in (parts[2].split(",") if len(parts) == 3 and parts[2] else []):
        if "=" not in item:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        k, v = (x.strip() for x in item.split("=", 1))
        value = parse_value(v)
        if k in ("at", "ramp_s", "duration_s"):
            value = parse_duration(v) if k != "at" else v
            common[k] = value
        else:
            params[k] = value
    return apply(vehicle, name, params, common)


# A fault parameter typed on a command line: true/false, an int, a float, or text (the
# drill's text commands read their parameters the same way).
parse_value = messages.parse_scalar


def _print_faults() -> None:
    for spec in CATALOGUE.values():
        ships = ", ".join(spec.vehicles)
        print(f"{spec.name}  [{spec.kind}; {ships}]\n    {spec.doc}")
        for p in spec.params:
            bits = [p.doc]
            if p.required:
                bits.append("required")
            elif p.default is not None:
                bits.append(f"default {p.default}")
            if p.choices:
                bits.append("one of " + "/".join(map(str, p.choices)))
            elif p.lo is not None or p.hi is not None:
                bits.append(f"{p.lo:g}..{p.hi:g}" if p.lo is not None and p.hi is not None
                            else "")
            print(f"      {p.name}: {'; '.join(b for b in bits if b)}")
        if spec.effects:
            print(f"    effect: {spec.effects}")
    print("\nevery fault also takes: at (GET, event+/-offset or now), ramp_s, duration_s")
