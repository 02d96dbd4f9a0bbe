"""Running a drill: the scenario's ships flown in-process as training/<drill> sources, its
faults injected on the mission clock, the ingest's alarm events and acknowledgements and
the key parameters recorded off the broker, instructor control, and the debrief at the end.

    control   the instructor's commands (messages.DrillControl): {"cmd": "pause" |
              "resume" | "stop" | "inject", ...} as JSON, or the same as a text line
              ("pause", "stop now", "inject apollo_csm cabin_leak rate_lb_h=5 ramp_s=60")
    status    retained (messages.DrillStatus): state, GET, speed, counts, the answer to the
              last command. Every user may read it, so it names no pending fault (a
              trainee watching it must not learn what is coming).

(topics.drill_control and topics.drill_status name the topics.)

Faults are injected when their GET is a few mission seconds away, at exactly their GET
(the simulators' state lists active and scheduled faults; scheduling them all at the start
would show the trainee the whole drill). A pause freezes the mission clock: no frames, so
no alarms, and reaction times do not count it. At the end (the scenario's duration, or the
instructor's stop) the ships fly on for the grace period so the last alarms can still be
acknowledged, then the runner waits for the ingest to catch up and writes the debrief.

Commands: the drill's ships hear their uplinks under the drill's source (the commanding
service sends them the trainees' commands and procedures, cmd/uplink/training/<drill>/...)
and act on them in their physics; the runner records every stage of every command
(cmd/events/training/<drill>/...) on the mission clock, and the debrief scores them against
the scenario's expected and harmful actions.

Calls: trainees make calls with the console's call key (messages.DrillCall on
calls/<operator>/<drill>, the operator the broker authenticated); the runner stamps each
with the mission clock and the debrief scores them against the scenario's timed calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from groundstation.config import MqttConfig
from groundstation.core import flightplan as tl
from groundstation.core import messages, topics
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.mission_time import format_get, utc_ns_to_get
from groundstation.drills.debrief import (
    Injection,
    build_debrief,
    call_record,
    command_record,
    scenario_injections,
    write,
)
from groundstation.drills.offline import event_record
from groundstation.drills.scenario import SEVERITY_RANK, SHIP_ALIASES, Scenario
from groundstation.mqtt import BrokerError, MqttClient, broker_error_of
from groundstation.tasks import TaskGroup
from simulators.faults import FaultError
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner

log = logging.getLogger(__name__)

LOOKAHEAD_S = 5.0  # mission seconds before its GET a fault is handed to the simulator
TICK_S = 0.05


def new_drill_id(scenario_id: str, now: datetime | None = None) -> str:
    """<scenario>-<UTC yyyymmddThhmmssZ>: unique per run, one MQTT topic level, a valid
    directory name."""
    now = now or datetime.now(UTC)
    return f"{scenario_id}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def check_drill_id(drill_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", drill_id):
        raise ValueError(f"drill id {drill_id!r} must be letters, digits, '-', '_' or '.' "
                         "(one MQTT topic level and a directory name)")
    return drill_id


def control_topic(drill_id: str) -> str:
    return topics.drill_control(drill_id)


def status_topic(drill_id: str) -> str:
    return topics.drill_status(drill_id)


@dataclass
class DrillOptions:
    # The broker: the [mqtt] section of the configuration, for the runner's own client and
    # the ships'. Without one, host, port, username and password make a plain one.
    mqtt: MqttConfig | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    speed: float | None = None  # default: the scenario's
    out_dir: Path = Path("var/drills")  # the debrief goes to out_dir/<drill_id>/ ...
    out_exact: bool = False  # ... or to out_dir itself
    drill_id: str | None = None
    settle_s: float = 2.0  # wall seconds for the ingest to catch up after the ships stop
    status_interval_s: float = 1.0
    progress: TextIO | None = None  # progress lines (default: none)
    interactive: bool = False  # read p/r/i/q commands from stdin

    def broker(self) -> MqttConfig:
        if self.mqtt is not None:
            return self.mqtt
        return MqttConfig(host=self.host, port=self.port, username=self.username,  # type: ignore[call-arg]
                          password=self.password)  # type: ignore[arg-type]


@dataclass
class Pause:
    get: float
    wall_start: float
    wall_end: float | None = None


@dataclass
class _Due:
    injection: Injection
    params: dict[str, Any]
    ramp_s: float
    duration_s: float | None
    done: bool = False


@dataclass
class DrillResult:
    drill_id: str
    out: Path
    debrief: dict[str, Any]
    files: list[Path] = field(default_factory=list)


class DrillRunner:
    def __init__(self, scenario: Scenario, definitions: dict[str, VehicleDefinition],
                 options: DrillOptions):
        self.sc = scenario
        self.defs = definitions
        self.o = options
        self.drill_id = check_drill_id(options.drill_id or new_drill_id(scenario.id))
        self.source = topics.training(self.drill_id)
        self.speed = options.speed if options.speed is not None else scenario.speed
        if not 0 < self.speed <= 1000:
            raise ValueError("speed must be above 0 and at most 1000")
        self.out = options.out_dir if options.out_exact else options.out_dir / self.drill_id
        self.mission = Mission(scenario.start_get, seed=scenario.seed,
                               historical=scenario.historical, definitions=definitions)
        self.hard_end = scenario.end_get + scenario.grace
        self.sim = SimRunner(self.mission, [definitions[v] for v in scenario.ships],
                             RunnerOptions(mqtt=options.broker(), speed=self.speed,
                                           until=self.hard_end, source=self.source,
                                           client_id=f"drill-{self.drill_id}-ships"[:64]))
        plan = {f.id: f for f in scenario.faults}
        self.due = [_Due(inj, dict(plan[inj.id].params), plan[inj.id].ramp_s,
                         plan[inj.id].duration_s)
                    for inj in scenario_injections(scenario)]
        self.injections: list[Injection] = []
        self.events: list[dict[str, Any]] = []
        self.command_events: list[dict[str, Any]] = []  # every stage of every command
        self.calls: list[dict[str, Any]] = []  # the trainees' calls (the console's call key)
        self.key = scenario.plot_parameters()
        self._keys = {(v, p) for v, ps in self.key.items() for p in ps}
        self.series: dict[tuple[str, str], list[tuple[float, float]]] = {k: []
                                                                          for k in self._keys}
        self._last_t: dict[tuple[str, str], int] = {}
        self.pauses: list[Pause] = []
        self.commands: list[dict[str, Any]] = []  # for the debrief: request, reply, when
        self.state: messages.DrillState = "starting"
        self.end_get = scenario.end_get  # the drill proper ends here; then the grace
        self.stopped_early = False
        self._stop_now = False
        self._extra = 0
        self._last_reply: messages.DrillControlReply | None = None
        # The runner's own connection (the ships have theirs): the ingest's alarms and
        # values of this drill, and its control topic, made again on every reconnection.
        self._connected = asyncio.Event()
        self.client = MqttClient(
            options.broker(), name="drill", client_id=f"drill-{self.drill_id}"[:64],
            subscriptions=[topics.alarms_subscription(self.source),
                           topics.parameters_subscription(self.source),
                           topics.command_events_subscription(self.source),
                           topics.drill_calls_subscription(self.drill_id),
                           topics.drill_control(self.drill_id)],
            on_message=lambda m: self.on_message(m.topic, m.payload),
            on_connect=lambda _: self._connected.set(), connect_first=True)
        self._status_dirty = True
        self._wall0 = 0.0

    # --- clock ---------------------------------------------------------------------------

    @property
    def clock(self) -> float:
        """The mission clock: GET of the newest frame the ships have made (frozen while
        paused)."""
        return self.sim.get

    # --- instructor commands -----------------------------------------------------------------

    def command(self, payload: bytes | str | messages.DrillControl, by: str = "mqtt"
                ) -> messages.DrillControlReply:
        """Apply one instructor command (JSON or text, see messages.DrillControl); the
        reply says what happened (never raises)."""
        request: dict[str, Any]
        try:
            if isinstance(payload, messages.DrillControl):
                msg = payload
            else:
                raw = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
                msg = messages.DrillControl.from_json(raw)
        except messages.MessageError as exc:
            reply = messages.DrillControlReply(ok=False, error=str(exc))
            request = {"raw": raw}
        else:
            request = msg.to_dict(compact=True)
            try:
                reply = self._apply(msg)
            except (ValueError, FaultError, KeyError, TypeError) as exc:
                reply = messages.DrillControlReply(ok=False, cmd=msg.cmd,
                                                   error=str(exc).strip("'\""))
        self.commands.append({"get": self.clock, "get_text": format_get(self.clock),
                              "by": by, "request": request, "reply": reply.to_dict()})
        self._last_reply = reply
        self._status_dirty = True
        return reply

    def _apply(self, msg: messages.DrillControl) -> messages.DrillControlReply:
        if msg.cmd == "pause":
            if self.state not in ("running", "grace"):
                raise ValueError(f"cannot pause while {self.state}")
            self.sim.pause()
            self.pauses.append(Pause(self.clock, time.monotonic()))
            self._set_state("paused")
            return messages.DrillControlReply(ok=True, cmd="pause", get=format_get(self.clock))
        if msg.cmd == "resume":
            if self.state != "paused":
                raise ValueError("not paused")
            self.sim.resume()
            self.pauses[-1].wall_end = time.monotonic()
            self._set_state("grace" if self.stopped_early or self.clock >= self.end_get
                            else "running")
            return messages.DrillControlReply(ok=True, cmd="resume",
                                              get=format_get(self.clock))
        if msg.cmd == "stop":
            if msg.now or self.state == "grace":
                self._stop_now = True
            else:
                self.stopped_early = True
                self.end_get = min(self.end_get, self.clock)
            if self.sim.paused:
                self.sim.resume()
                if self.pauses and self.pauses[-1].wall_end is None:
                    self.pauses[-1].wall_end = time.monotonic()
            return messages.DrillControlReply(ok=True, cmd="stop", now=self._stop_now,
                                              get=format_get(self.clock))
        return self._inject_extra(msg)

    def _inject_extra(self, msg: messages.DrillControl) -> messages.DrillControlReply:
        if self.state not in ("running", "paused"):
            raise ValueError(f"cannot inject while {self.state}")
        assert msg.vehicle is not None and msg.fault is not None  # the message requires them
        vehicle = SHIP_ALIASES.get(msg.vehicle.lower(), msg.vehicle)
        expect = _expectations(msg.expect or [], vehicle, self.sc.ack_within_s, self.defs)
        f = self.mission.inject(vehicle, msg.fault, dict(msg.params or {}), at="now",
                                ramp_s=msg.ramp_s or 0.0, duration_s=msg.duration_s)
        self._extra += 1
        fid = msg.id or f"x{self._extra}"
        inj = Injection(fid, vehicle, f.name, dict(f.params), f.start, origin="instructor",
                        expect=expect, sim_id=f.id, clock=self.clock)
        self.injections.append(inj)
        self._say(f"instructor injected {fid}: {vehicle} {f.name} at {format_get(f.start)}")
        return messages.DrillControlReply(ok=True, cmd="inject", id=fid,
                                          get=format_get(f.start))

    def _set_state(self, state: messages.DrillState) -> None:
        if state != self.state:
            self.state = state
            self._status_dirty = True

    # --- status and progress -----------------------------------------------------------------

    def status(self, *, score: int | None = None, debrief: str | None = None
               ) -> messages.DrillStatus:
        raised = sum(1 for e in self.events if e["transition"] == "raised")
        acked = sum(1 for e in self.events if e["transition"] == "acknowledged")
        return messages.DrillStatus(
            drill=self.drill_id, scenario=self.sc.id, title=self.sc.title,
            source=topics.Source.parse(self.source), state=self.state, get=self.clock,
            get_text=format_get(self.clock), start=format_get(self.sc.start_get),
            end=format_get(self.end_get), speed=self.speed,
            achieved_speed=round(self.sim.achieved_speed, 2),
            faults_injected=len(self.injections),
            faults_pending=sum(1 for d in self.due if not d.done),
            alarms_raised=raised, acknowledgements=acked, last_reply=self._last_reply,
            time_ns=time.time_ns(), score=score, debrief=debrief, calls=len(self.calls))

    def progress_line(self) -> str:
        s = self.status()
        left = max(0.0, self.end_get - self.clock)
        return (f"{self.drill_id}  GET {s.get_text}  {s.state:<8} "
                f"{s.achieved_speed:5.1f}x  faults {s.faults_injected}/"
                f"{s.faults_injected + s.faults_pending}  alarms {s.alarms_raised}  "
                f"acks {s.acknowledgements}  {format_get(left)} to go")

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self.o.progress is not None:
            tty = bool(getattr(self.o.progress, "isatty", lambda: False)())
            print(("\r\x1b[2K" if tty else "") + text, file=self.o.progress, flush=True)

    # --- MQTT in -----------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            where = topics.parse(topic)
        except ValueError:
            return
        match where:
            case topics.DrillControlTopic(drill=self.drill_id):
                reply = self.command(payload)
                self._say(f"control: {payload[:200].decode('utf-8', 'replace')} -> "
                          f"{'ok' if reply.ok else reply.error}")
            case topics.CommandEventsTopic(source=source) if str(source) == self.source:
                try:
                    cmd = messages.CommandEvent.from_json(payload)
                except messages.MessageError as exc:
                    log.warning("drill: ignored a command event on %s: %s", topic, exc)
                    return
                self.command_events.append(command_record(cmd, self.clock))
                if cmd.stage in ("queued", "refused", "verified", "failed"):
                    self._say(f"command {cmd.command_id} {cmd.command} by {cmd.operator}: "
                              f"{cmd.stage}" + (f" ({cmd.reason})" if cmd.reason else ""))
                self._status_dirty = True
            case topics.DrillCallTopic(drill=self.drill_id):
                try:
                    call = messages.DrillCall.from_json(payload)
                except messages.MessageError as exc:
                    log.warning("drill: ignored a call on %s: %s", topic, exc)
                    return
                self.on_call(where.operator, call)
            case topics.AlarmsTopic():
                try:
                    event = messages.AlarmEvent.from_json(payload)
                except messages.MessageError as exc:
                    log.warning("drill: ignored an alarm event on %s: %s", topic, exc)
                    return
                self.events.append(event_record(event, self.clock))
                self._status_dirty = True
            case topics.ParamsTopic():
                try:
                    update = messages.ParamsUpdate.from_json(payload)
                except messages.MessageError as exc:
                    log.warning("drill: ignored parameters on %s: %s", topic, exc)
                    return
                for pid, (t, v, _) in update.values.items():
                    key = (where.vehicle, pid)
                    if key not in self._keys or v is None or self._last_t.get(key) == t:
                        continue
                    self._last_t[key] = t
                    self.series[key].append((utc_ns_to_get(t), v))

    def on_call(self, operator: str, call: messages.DrillCall) -> None:
        """A trainee's call, on the mission clock (a paused drill's clock stands still; a
        call after the drill's grace comes too late for the debrief)."""
        if self.state in ("starting", "finished"):
            return
        if any(c["request_id"] == call.request_id and c["operator"] == operator
               for c in self.calls):
            return  # the broker's redelivery of a QoS 1 message already heard
        self.calls.append(call_record(operator, call, self.clock))
        self._say(f"call by {operator}" + (f"/{call.position}" if call.position else "")
                  + f" at {format_get(self.clock)}: {call.text}")
        self._status_dirty = True

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> DrillResult:
        """Run the drill to its end (or the instructor's stop) and write the debrief. The
        runner's connection, the ships and the drill's clock are one named task group: a
        broker that cannot be reached at the start, or a task that dies, ends the drill
        with that exception (BrokerError for the broker)."""
        try:
            return await self._run()
        except BaseExceptionGroup as group:
            raise broker_error_of(group) from None

    async def _run(self) -> DrillResult:
        wall0 = self._wall0 = time.monotonic()
        link_stop = asyncio.Event()
        async with TaskGroup("drill", expected=(BrokerError,)) as tasks:
            tasks.create_task(self.client.run(stop=link_stop), name="mqtt")
            await self._connected.wait()  # or the link task fails, and this with it
            stop_sim = asyncio.Event()
            self._say(f"drill {self.drill_id}: {self.sc.title}; {', '.join(self.sc.ships)} "
                      f"from {format_get(self.sc.start_get)} for "
                      f"{format_get(self.sc.duration_s)} at {self.speed:g}x; data under "
                      f"source='{self.source}'; control on {control_topic(self.drill_id)}")
            centre = "moscow" if self.sc.ships == [tl.SOYUZ] else "houston"
            position = f" --position {self.sc.positions[0]}" if centre == "houston" and \
                self.sc.positions else ""
            self._say(f"trainees: groundstation console {centre}{position} --source "
                      f"{self.source}  (or press s on a running console)")
            if self.sc.actions:
                self._say("the drill expects commands: the commanding service must run "
                          "(groundstation commanding serve)")
            if self.sc.timed_calls:
                self._say(f"the drill expects {len(self.sc.timed_calls)} calls: k on the "
                          "trainees' consoles (heard on "
                          f"{topics.drill_calls_subscription(self.drill_id)})")
            self._set_state("running")
            self._inject_due()  # faults at the very start go in before the first frame
            sim_task = tasks.create_task(self.sim.run(stop_sim), name="ships")
            stdin = self._watch_stdin()
            last_status = last_progress = 0.0
            try:
                while not sim_task.done():
                    self._inject_due()
                    if self.state == "running" and self.clock >= self.end_get:
                        self._set_state("grace")
                        self._say(f"drill time is up at {format_get(self.clock)}; "
                                  f"{self.sc.grace:g} s of grace for acknowledgements")
                    if (self._stop_now or self.clock >= self.end_get + self.sc.grace) \
                            and not stop_sim.is_set():
                        stop_sim.set()
                    now = time.monotonic()
                    if self._status_dirty or now - last_status >= self.o.status_interval_s:
                        self._status_dirty = False
                        last_status = now
                        await self._publish_status()
                    if self.o.progress is not None and now - last_progress >= (
                            0.5 if getattr(self.o.progress, "isatty", lambda: False)()
                            else 10.0):
                        last_progress = now
                        self._progress()
                    await asyncio.sleep(TICK_S)
                await sim_task
                self._set_state("finishing")
                await self._publish_status()
                # The ingest is a little behind the ships: its last alarms and acks.
                await asyncio.sleep(self.o.settle_s)
            finally:
                if stdin:
                    stdin()
                stop_sim.set()  # should the drill end early: the ships land, cleanly
            ended = self.clock
            debrief = self._debrief(ended, time.monotonic() - wall0)
            files = self._write(debrief)
            self._set_state("finished")
            status = self.status(score=debrief["score"], debrief=str(self.out))
            with contextlib.suppress(BrokerError):
                await self.client.publish(topics.drill_status(self.drill_id),
                                          status.to_json(), qos=1, retain=True)
            link_stop.set()
        self._say(f"drill {self.drill_id} finished: score "
                  f"{'n/a' if debrief['score'] is None else debrief['score']}/100; "
                  f"debrief in {self.out}")
        return DrillResult(self.drill_id, self.out, debrief, files)

    async def _publish_status(self) -> None:
        with contextlib.suppress(BrokerError):  # while the broker is away: the next one
            await self.client.publish(topics.drill_status(self.drill_id),
                                      self.status().to_json(), qos=1, retain=True)

    def _progress(self) -> None:
        out = self.o.progress
        assert out is not None
        if getattr(out, "isatty", lambda: False)():
            print("\r\x1b[2K" + self.progress_line(), end="", file=out, flush=True)
        else:
            print(self.progress_line(), file=out, flush=True)

    def _inject_due(self) -> None:
        if self.state == "paused" or self.stopped_early:
            return
        for d in self.due:
            if d.done or self.mission.t < d.injection.get - LOOKAHEAD_S:
                continue
            d.done = True
            inj = d.injection
            # At its GET if the physics has not passed it yet (it never should: the
            # look-ahead is many ticks), else now, and the debrief says when it really was.
            at: Any = inj.get if inj.get >= self.mission.t else "now"
            f = self.mission.inject(inj.vehicle, inj.fault, d.params, at=at,
                                    ramp_s=d.ramp_s, duration_s=d.duration_s)
            inj.get, inj.sim_id, inj.clock = f.start, f.id, self.clock
            self.injections.append(inj)
            self._status_dirty = True
            log.info("fault %s (%s %s) scheduled for %s", inj.id, inj.vehicle, inj.fault,
                     format_get(f.start))

    def _watch_stdin(self) -> Callable[[], None] | None:
        if not self.o.interactive or not sys.stdin.isatty():
            return None
        loop = asyncio.get_running_loop()

        def read() -> None:
            line = sys.stdin.readline()
            if not line:
                loop.remove_reader(sys.stdin)
                return
            line = line.strip()
            if not line:
                return
            word, _, rest = line.partition(" ")
            text = {"p": "pause", "r": "resume", "q": "stop", "i": "inject"}.get(word, word)
            reply = self.command(f"{text} {rest}".strip(), by="terminal")
            self._say(f"{text}: {'ok' if reply.ok else reply.error}")

        try:
            loop.add_reader(sys.stdin, read)
        except (NotImplementedError, ValueError, OSError):
            return None
        self._say("commands: p = pause, r = resume, q = stop (q again: stop now), "
                  "i VEHICLE FAULT [key=value ...] = inject")

        def unwatch() -> None:
            loop.remove_reader(sys.stdin)

        return unwatch

    # --- the end -------------------------------------------------------------------------------

    def _debrief(self, ended: float, wall_s: float) -> dict[str, Any]:
        pauses = [{"get": p.get, "get_text": format_get(p.get),
                   "wall_s": round((p.wall_end or time.monotonic()) - p.wall_start, 2)}
                  for p in self.pauses]
        # Faults still pending when the drill was stopped early were never injected.
        return build_debrief(self.sc, self.drill_id, self.injections, self.events,
                             speed=self.speed, started_get=self.sc.start_get,
                             ended_get=ended, pauses=pauses, commands=self.commands,
                             stopped_early=self.stopped_early or self._stop_now,
                             wall_s=round(wall_s, 2), command_events=self.command_events,
                             calls_made=self.calls)

    def _write(self, debrief: dict[str, Any]) -> list[Path]:
        picture: Path | None = None
        if not plot_available():
            self._say(f"no timeline picture: {PLOT_MISSING}")
        else:
            from groundstation.drills.plot import plot_timeline

            try:
                plot_timeline(self.out / "timeline.png", debrief, self.series, self.defs,
                              self.key)
                picture = self.out / "timeline.png"
            except Exception:  # the written debrief matters more than its picture
                log.exception("timeline picture failed")
        write(debrief, self.out, picture.name if picture else None)
        files = [self.out / "debrief.md", self.out / "debrief.json"]
        return files + ([picture] if picture else [])


# The timeline picture needs matplotlib, an extra (`groundstation[drills]`): the ingest's
# image leaves it out. Without it the debrief is written all the same, without the picture.
PLOT_MISSING = ("matplotlib is not installed; pip install 'groundstation[drills]' adds it "
                "(the Markdown and JSON debrief are written without it)")


def plot_available() -> bool:
    """Whether the timeline picture can be drawn (matplotlib is importable)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a module set to None in sys.modules (as the tests do)
        return False


# --- an instructor's expectations ------------------------------------------------------------

def _expectations(raw: list[messages.DrillExpectation], vehicle: str, ack_within_s: float,
                  defs: dict[str, VehicleDefinition]) -> list[dict[str, Any]]:
    """The alarms an extra fault should raise, checked against the definitions, in the
    form the debrief scores (a scenario's expectations have the same)."""
    out = []
    for i, e in enumerate(raw):
        v = SHIP_ALIASES.get((e.vehicle or vehicle).lower(), vehicle)
        if v not in defs or e.parameter not in defs[v].all_ids:
            raise ValueError(f"inject: expect[{i}]: {v} has no parameter {e.parameter!r}")
        if e.severity not in SEVERITY_RANK:
            raise ValueError(f"inject: expect[{i}]: severity must be yellow or red")
        out.append({"parameter": e.parameter, "vehicle": v, "severity": e.severity,
                    "within_s": e.within_s,
                    "ack_within_s": ack_within_s if e.ack_within_s is None
                    else e.ack_within_s,
                    "weight": e.weight})
    return out
