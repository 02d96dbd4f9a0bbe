"""`groundstation demo`: the whole ground station on one machine, in one command.

It starts its own broker (Mosquitto when it is installed, else the embedded Python broker)
and its own InfluxDB (when `influxd` is installed, else none: consoles, alarms and the
archive still work), all on loopback ports with their files in one data directory; then the
ingest, the commanding service and both simulated ships as child processes, and the
Houston console in the foreground. Ctrl-C (or q in the console) stops everything in order:
ships, commanding, ingest, servers.

The children run in their own sessions so the terminal's Ctrl-C reaches only the demo,
which then stops the ships before the ingest (so nothing they sent is left half-processed)
and the servers last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundstation.commands.options import add_defs_argument, load_config, load_definitions
from groundstation.core import fleet, messages, topics
from groundstation.core.definitions import VehicleDefinition

log = logging.getLogger("groundstation.demo")

# Both ships in contact for 11 minutes, 6 minutes after the first docking (GET 044:19:08),
# found with Mission.find_coverage: a newcomer sees both ships' values at once.
DEFAULT_START = "044:25:30"
# In the demo the one operator holds every position, so every command can be tried.
DEMO_POSITIONS = ("FLIGHT", "CAPCOM", "EECOM", "GNC", "INCO", "OBZOR", "SOZH", "STR", "SEP",
                  "SUD", "DU", "SSVP", "RTS")

DESCRIPTION = """\
Run the whole ground station on this machine: a broker, InfluxDB, the ingest, both
simulated ships flying the ASTP mission from a chosen point at a chosen speed, and the
Houston terminal console (or Moscow's, with --centre moscow).

What it starts, each on a free loopback port with its files under the data directory:
  broker     Mosquitto if it is installed, else a small MQTT broker in Python (amqtt;
             pip install 'groundstation[embedded]')
  database   InfluxDB 1.x (influxd) if it is installed, else none: the consoles, alarms and
             the raw archive still work, nothing is written to a database
  ingest     groundstation ingest                     (log: DATA_DIR/ingest.log)
  commanding groundstation commanding serve           (log: DATA_DIR/commanding.log)
  ships      groundstation sim both --start --speed   (log: DATA_DIR/sim.log)
  console    groundstation console houston, in this terminal

In the console, c opens the command line: the operator (--operator, default flight) holds
every position in the demo, so any command of the ship in view goes (v switches ship; a
hazardous one is armed, x executes it). Try crew_alert on Apollo, or tv_power state=ON on
Soyuz in a Soviet pass.

Ctrl-C (or q in the console) stops the ships, the commanding service, the ingest, then the
servers.
Without a terminal (or with --no-console) it prints the newest values every few seconds
instead of the console.
"""

EPILOG = """\
examples:
  groundstation demo                                  docked, both ships in contact, 1x
  groundstation demo --start docking-30m --speed 10   the final approach and docking, 10x
  groundstation demo --centre moscow                  the Moscow console (Russian, mm Hg)
  groundstation demo --no-console --seconds 60        print values for a minute, then stop
  groundstation demo --data-dir var/demo              keep the archive and database after
Times: a GET such as 044:25:30, or an event with an offset such as docking-30m
(groundstation sim both --list-events lists the events).
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole ground station on this machine: broker, InfluxDB, ingest, "
                     "both ships and the Houston console",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", default=DEFAULT_START,
                   help=f"mission point to fly from: GET or event[+/-offset] (default "
                        f"{DEFAULT_START}, docked with both ships in contact)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="mission seconds per real second (default 1: real time)")
    p.add_argument("--centre", "--center", choices=("houston", "moscow"), default="houston",
                   help="which control centre's console (default houston)")
    p.add_argument("--position", default=None,
                   help="console page to open on, e.g. EECOM, GNC, INCO (default FLIGHT)")
    p.add_argument("--operator", default="flight",
                   help="your name on acknowledgements (default flight)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto",
                   help="auto (default): Mosquitto if installed, else the embedded broker")
    p.add_argument("--database", choices=("auto", "influxdb", "none"), default="auto",
                   help="auto (default): InfluxDB if installed, else none")
    p.add_argument("--no-console", action="store_true",
                   help="print values every few seconds instead of the console")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the servers, the archive and the logs go (default: a "
                        "temporary directory, removed afterwards)")
    add_defs_argument(p)


@dataclass
class _Child:
    """A groundstation command as a child process with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, args: list[str], log: Path) -> _Child:
        from groundstation.deploy.servers import die_with_parent

        with log.open("ab") as out:
            # -P: not the working directory first on sys.path, as -m would put it, so the
            # children run the same groundstation as this process, not a groundstation/
            # directory where the user happens to stand (an older checkout, say).
            # Not the user's broker settings (GS_MQTT_*, for another station): the demo's
            # broker is its own, on loopback, anonymous.
            env = {k: v for k, v in os.environ.items() if not k.startswith("GS_MQTT_")}
            proc = subprocess.Popen([sys.executable, "-P", "-m", "groundstation", *args],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent,
                                    env={**env, "PYTHONUNBUFFERED": "1"})
        return cls(name, proc, log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run(args: argparse.Namespace) -> int:
    from groundstation.core import flightplan as tl

    try:
        tl.parse_time(args.start)
    except ValueError as exc:
        print(f"error: --start: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.speed <= 1000:
        print("error: --speed must be above 0 and at most 1000", file=sys.stderr)
        return 2
    config = load_config(args, sections=("ingest",))
    args.defs = config.ingest.defs_dir
    # What the children read the definitions with: the same directory and fleet.
    args.defs_flags = ["--defs-dir", str(args.defs)]
    if config.ingest.fleet:
        args.defs_flags += ["--fleet", fleet.text(config.ingest.fleet)]
    definitions = load_definitions(config)
    console = not args.no_console and sys.stdin.isatty() and sys.stdout.isatty()
    if not args.no_console and not console:
        print("no terminal: printing values instead of the console (--no-console)")
    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="groundstation-demo-")
        data_dir = Path(tmp.name)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = _Stack(data_dir)
    try:
        status = stack.start(args)
        if status:
            return status
        if console:
            return _console(args, stack, definitions)
        return asyncio.run(_headless(args, stack, definitions))
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()
        if tmp is not None:
            tmp.cleanup()


class _Stack:
    """The servers and child processes of one demo, stopped in reverse order."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.broker: Any = None
        self.database: Any = None
        self.children: list[_Child] = []

    def start(self, args: argparse.Namespace) -> int:
        from groundstation.deploy import embedded_broker
        from groundstation.deploy.servers import (
            EmbeddedBroker,
            InfluxDBServer,
            MosquittoServer,
            ServerError,
            find_binary,
        )
        from groundstation.storage.influx.backends import InfluxV1

        have_mosquitto = find_binary("mosquitto") is not None
        if args.broker == "mosquitto" or (args.broker == "auto" and have_mosquitto):
            self.broker = MosquittoServer(self.data_dir / "mosquitto", own_session=True)
            what = "Mosquitto"
        elif args.broker == "embedded" or embedded_broker.available():
            self.broker = EmbeddedBroker(self.data_dir / "broker", own_session=True)
            what = "embedded MQTT broker (amqtt; Mosquitto is not installed)" \
                if args.broker == "auto" else "embedded MQTT broker (amqtt)"
        else:
            print("error: no MQTT broker: install Mosquitto (apt-get install mosquitto) or "
                  f"the embedded one ({embedded_broker.INSTALL_HINT})", file=sys.stderr)
            return 1
        have_influx = find_binary("influxd") is not None
        if args.database == "influxdb" or (args.database == "auto" and have_influx):
            self.database = InfluxDBServer(self.data_dir / "influxdb", own_session=True)
        try:
            self.broker.start()
            print(f"broker    {what} at {self.broker.host}:{self.broker.port}")
            if self.database is not None:
                self.database.start()
                InfluxV1(self.database.url, "groundstation").create_database()
                print(f"database  InfluxDB at {self.database.url} (database 'groundstation')")
            else:
                why = "--database none" if args.database == "none" else \
                    "influxd is not installed: apt-get install influxdb"
                print(f"database  none ({why}); consoles, alarms and the archive only")
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        port = str(self.broker.port)
        ingest = ["ingest", "--mqtt-host", self.broker.host, "--mqtt-port", port,
                  *args.defs_flags,
                  "--ingest-archive-dir", str(self.data_dir / "archive"),
                  "--influx-spool-dir", str(self.data_dir / "spool")]
        if self.database is not None:
            ingest += ["--influx-api", "v1", "--influx-url", self.database.url]
        else:
            ingest += ["--influx-api", "none"]
        self.children.append(_Child.start("ingest", ingest, self.data_dir / "ingest.log"))
        if not _wait_for_line(self.children[-1], "ingest: subscribed", 30.0):
            print(f"error: the ingest did not start; its log ({self.children[-1].log}):\n"
                  f"{self.children[-1].tail()}", file=sys.stderr)
            return 1
        print(f"ingest    running (log {self.data_dir / 'ingest.log'})")
        # The commanding service, with an operators file that gives the demo's operator
        # every position.
        operators = self.data_dir / "operators.toml"
        every = ", ".join(f'"{p}"' for p in DEMO_POSITIONS)
        operators.write_text(f"# groundstation demo: the operator holds every position\n"
                             f"[operators]\n{args.operator} = [{every}]\n", encoding="utf-8")
        commanding = ["commanding", "serve", "--mqtt-host", self.broker.host, "--mqtt-port",
                      port, *args.defs_flags,
                      "--ingest-archive-dir", str(self.data_dir / "archive"),
                      "--commanding-operators-file", str(operators),
                      "--commanding-spool-dir", str(self.data_dir / "spool-commanding")]
        commanding += ingest[ingest.index("--influx-api"):]
        self.children.append(_Child.start("commanding", commanding,
                                          self.data_dir / "commanding.log"))
        if not _wait_for_line(self.children[-1], "commanding: subscribed", 30.0):
            print(f"error: the commanding service did not start; its log "
                  f"({self.children[-1].log}):\n{self.children[-1].tail()}", file=sys.stderr)
            return 1
        print(f"commanding running: c in the console sends commands as {args.operator}, "
              f"holding every position (log {self.data_dir / 'commanding.log'})")
        # With a fleet set, its members fly beside the two ships.
        ships = "all" if "--fleet" in args.defs_flags else "both"
        sim = ["sim", ships, "--mqtt-host", self.broker.host, "--mqtt-port", port,
               "--start", args.start, "--speed", f"{args.speed:g}", *args.defs_flags]
        self.children.append(_Child.start("ships", sim, self.data_dir / "sim.log"))
        if not _wait_for_line(self.children[-1], "flying ", 60.0):
            print(f"error: the simulators did not start; their log "
                  f"({self.children[-1].log}):\n{self.children[-1].tail()}", file=sys.stderr)
            return 1
        print(f"ships     Apollo CSM and Soyuz 19 from {args.start} at {args.speed:g}x "
              f"(log {self.data_dir / 'sim.log'})")
        return 0

    def stop(self) -> None:
        # Ships first, then the ingest (it drains what they sent), then the servers.
        for child in reversed(self.children):
            code = child.stop()
            if code not in (0, -signal.SIGINT, 130):
                print(f"{child.name} exited with {code}; the end of its log "
                      f"({child.log}):\n{child.tail()}", file=sys.stderr)
        self.children.clear()
        for server in (self.database, self.broker):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        self.database = self.broker = None


def _wait_for_line(child: _Child, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in child.log.read_text(errors="replace"):
                return True
        if not child.alive():
            return False
        time.sleep(0.1)
    return False


def _console(args: argparse.Namespace, stack: _Stack,
             definitions: dict[str, VehicleDefinition]) -> int:
    from groundstation.config import MqttConfig
    from groundstation.console.app import ConsoleApp

    app = ConsoleApp(centre=args.centre, position=args.position,
                     mqtt=MqttConfig(host=stack.broker.host,  # type: ignore[call-arg]
                                     port=stack.broker.port,
                                     client_id=f"demo-console-{os.getpid()}"),
                     operator=args.operator, source="live", definitions=definitions)
    timer = None
    if args.seconds is not None:
        import threading

        def stop() -> None:
            with contextlib.suppress(Exception):  # the console may have closed already
                app.call_from_thread(app.exit)

        timer = threading.Timer(args.seconds, stop)
        timer.daemon = True
        timer.start()
    try:
        app.run()
    finally:
        if timer is not None:
            timer.cancel()
    return 0


# --- without a terminal: the newest values as text --------------------------------------

SHOWN = {
    "apollo_csm": ["cabin_press", "co2_pp", "o2_tank1_press", "o2_tank2_press",
                   "main_bus_a_volts", "main_bus_b_volts", "dm_press"],
    "soyuz": ["sa_press", "bo_press", "sa_po2", "pco2", "bus_volts", "coolant_temp"],
}


async def _headless(args: argparse.Namespace, stack: _Stack,
                    definitions: dict[str, VehicleDefinition]) -> int:
    from groundstation.config import MqttConfig
    from groundstation.mqtt import BrokerError, MqttClient, Received, broker_error_of
    from groundstation.tasks import TaskGroup

    latest: dict[str, dict[str, messages.ParamSample]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    deadline = None if args.seconds is None else loop.time() + args.seconds
    alarms = 0

    def receive(m: Received) -> None:
        nonlocal alarms
        try:
            match topics.parse(m.topic):
                case topics.ParamsTopic(vehicle=vehicle):
                    update = messages.ParamsUpdate.from_json(m.payload)
                    latest.setdefault(vehicle, {}).update(update.values)
                case topics.AlarmsTopic():
                    event = messages.AlarmEvent.from_json(m.payload)
                    alarms += 1
                    print(_alarm_text(event), flush=True)
                case topics.CommandEventsTopic():
                    cmd = messages.CommandEvent.from_json(m.payload)
                    print(_command_text(cmd), flush=True)
        except ValueError as exc:  # MessageError, or a topic of nobody's
            log.debug("ignored a message on %s: %s", m.topic, exc)

    client = MqttClient(MqttConfig(host=stack.broker.host,  # type: ignore[call-arg]
                                   port=stack.broker.port),
                        name="demo", connect_first=True, on_message=receive,
                        subscriptions=[topics.parameters_subscription(topics.LIVE),
                                       topics.alarms_subscription(topics.LIVE),
                                       topics.command_events_subscription(topics.LIVE)])
    link_stop = asyncio.Event()
    try:
        async with TaskGroup("demo", expected=(BrokerError,)) as tasks:
            tasks.create_task(client.run(stop=link_stop), name="mqtt")
            next_print = loop.time() + 3.0
            try:
                while not stop.is_set():
                    if deadline is not None and loop.time() >= deadline:
                        break
                    for child in stack.children:
                        if not child.alive():
                            print(f"error: {child.name} stopped; its log ({child.log}):\n"
                                  f"{child.tail()}", file=sys.stderr)
                            return 1
                    if loop.time() >= next_print:
                        next_print += 5.0
                        for line in _value_lines(latest, definitions, args.centre):
                            print(line, flush=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.25)
            finally:
                link_stop.set()
    except BaseExceptionGroup as group:
        print(f"error: {broker_error_of(group)}", file=sys.stderr)
        return 1
    print(f"values from {len(latest)} ship(s) seen on the consoles' topics, {alarms} alarm "
          f"event(s)")
    if stack.database is not None:
        for v, count in _stored_counts(stack.database.url, definitions).items():
            print(f"InfluxDB holds {count} frames of {v}")
    return 0


def _value_lines(latest: dict[str, dict[str, messages.ParamSample]],
                 definitions: dict[str, VehicleDefinition], centre: str) -> list[str]:
    """The newest values as the console would show them (its labels, units and decimals)."""
    from groundstation.console import pages as cp

    shown = cp.fields(definitions, centre)
    out = []
    for vehicle, values in sorted(latest.items()):
        d = definitions.get(vehicle)
        if d is None or not values:
            continue
        newest = max(v[0] for v in values.values())
        parts = []
        for pid in SHOWN.get(fleet.base_of(vehicle) or vehicle, []):  # a member: its base's
            f = shown.get((vehicle, pid))
            if f is None or pid not in values:
                continue
            _, value, state = values[pid]
            flag = {1: " (YELLOW)", 2: " (RED)"}.get(abs(int(state or 0)), "")
            parts.append(f"{f.label} {f.with_unit(value)}{flag}")
        name = cp.SHIP_SHORT[centre].get(vehicle, vehicle) if centre == "moscow" else \
            d.name.get("en", vehicle)
        out.append(f"GET {cp.get_text(newest)}  {name}: {'; '.join(parts)}")
    return out


def _alarm_text(ev: messages.AlarmEvent) -> str:
    who = f" by {ev.operator}" if ev.operator else ""
    return (f"ALARM {ev.transition.value}: {ev.vehicle} {ev.label or ev.parameter} "
            f"{ev.severity}{who}")


def _command_text(ev: messages.CommandEvent) -> str:
    args = "".join(f" {k}={v}" for k, v in ev.args.items())
    by = ev.operator + (f"/{ev.position}" if ev.position else "")
    return (f"COMMAND {ev.stage}: {ev.vehicle} {ev.command}{args} ({by})"
            + (f": {ev.reason}" if ev.reason else ""))


def _stored_counts(url: str, definitions: dict[str, VehicleDefinition]) -> dict[str, int]:
    from groundstation.storage.influx.backends import InfluxV1

    influx = InfluxV1(url, "groundstation")
    out = {}
    for v in definitions:
        res = influx.query(f"SELECT count(*) FROM tm WHERE vehicle='{v}' AND source='live'")
        series = res["results"][0].get("series", [])
        out[v] = max((x for x in series[0]["values"][0][1:] if isinstance(x, int)), default=0) \
            if series else 0
    return out

