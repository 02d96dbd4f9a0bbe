"""Every MQTT payload but the telemetry envelope, as a typed value: the other half of the
wire contract (the topics are in `groundstation.core.topics`; the frames' msgpack envelope,
the hot path, is validated by hand in `groundstation.core.envelope`).

One way in, one way out, for each message:

    Message.from_json(payload) -> the message      validated; MessageError says which field
    message.to_json() -> bytes                      what goes on the wire

`to_dict()` gives the same as plain JSON types, for the places that keep a message (a
debrief, a reply returned in-process). Two control messages also read the text forms a
person types (`speed 10`, `inject apollo_csm cabin_leak rate_lb_h=5`).

Requests (from operators, instructors, scripts) refuse unknown fields, so a typo is an
error rather than a silently ignored option. What the services publish (events, lists,
status) ignores fields it does not know, so an older console keeps reading a newer
ingest. No payload carries NaN or infinity: JSON has neither, so a missing value is null.

| topic (core/topics.py)            | message                                  |
|-----------------------------------|------------------------------------------|
| ack/<operator>/<vehicle>          | OperatorRequest                          |
| alarms/replies/<operator>         | OperatorReply                            |
| alarms/<source>/<vehicle>         | AlarmEvent                               |
| alarms/<source>/<vehicle>/active  | ActiveAlarms                             |
| params/<source>/<vehicle>         | ParamsUpdate                             |
| ingest/link/<source>/<vehicle>    | LinkStats                                |
| ingest/stats                      | IngestStats                              |
| ingest/instances/<instance>       | IngestInstance (empty payload: it left)  |
| ingest/context/<source>/<vehicle> | ContextValues                            |
| sim/state/...                     | SimState                                 |
| sim/control/<vehicle>             | SimControlRequest                        |
| sim/reply/<vehicle>               | SimControlReply                          |
| replay/session/<session>          | ReplaySession (empty payload: ended)     |
| replay/control/<session>          | ReplayControl (JSON or text)             |
| replay/status/<session>           | ReplayStatus                             |
| drill/control/<drill>             | DrillControl (JSON or text)              |
| drill/status/<drill>              | DrillStatus                              |
| calls/<operator>/<drill>          | DrillCall                                |
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from groundstation.core.alarms import AlarmEvent as EngineEvent
from groundstation.core.alarms import AlarmState, Transition
from groundstation.core.mission_time import parse_duration
from groundstation.core.topics import Source


class MessageError(ValueError):
    """A payload that is not the message it should be. `field` is the first wrong field
    (dotted, e.g. `definitions.apollo_csm.sha256`; None when the payload as a whole is
    wrong); `request_id` is the request's id when it could still be read, so a reply can
    name the request it refuses."""

    def __init__(self, problem: str, field: str | None = None,
                 request_id: str | int | None = None):
        self.problem = problem
        self.field = field
        self.request_id = request_id
        super().__init__(f"{field}: {problem}" if field else problem)

    @classmethod
    def of(cls, exc: ValidationError, request_id: str | int | None = None) -> MessageError:
        seen: set[object] = set()
        parts: list[str] = []
        first: str | None = None
        for e in exc.errors(include_url=False):
            # A union's members each fail: the first complaint about a field is enough.
            head = e["loc"][0] if e["loc"] else None
            if head in seen:
                continue
            seen.add(head)
            where = _where(e)
            if not parts:
                first = where or None
            parts.append(f"{where}: {_problem(e)}" if where else _problem(e))
        message = "; ".join(parts) or str(exc)
        if first and message.startswith(f"{first}: "):
            message = message[len(first) + 2:]
        return cls(message, first, request_id)


def _where(e: ErrorDetails) -> str:
    out = ""
    for part in e["loc"]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "union[")) or part in (
                "str", "int", "float", "bool", "list", "dict", "none", "tuple"):
            break  # pydantic's name for a union member or validator, not a field
        else:
            out += f".{part}" if out else part
    return out


def _problem(e: ErrorDetails) -> str:
    kind = e["type"]
    ctx = e.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", e["msg"]))
    if kind == "json_invalid":
        return f"not a JSON object (not JSON at all: {ctx.get('error', e['msg'])})"
    if kind in ("model_type", "model_attributes_type", "dict_type") and not e["loc"]:
        return f"a message is a JSON object, got {_json_type(e['input'])}"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    return str(e["msg"])


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _source(value: object) -> Source:
    if isinstance(value, Source):
        return value
    if isinstance(value, str):
        return Source.parse(value)
    raise ValueError("a source is 'live', 'replay/<session>' or 'training/<drill>'")


# On the wire a source is its text; in Python it is a `Source`.
SourceField = Annotated[Source, PlainValidator(_source), PlainSerializer(str, return_type=str),
                        WithJsonSchema({"type": "string"})]
def _finite_params(params: dict[str, JsonValue]) -> dict[str, JsonValue]:
    # JSON has no NaN or infinity, but Python's parser reads them: a fault parameter of NaN
    # would pass every range check.
    def finite(v: JsonValue) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, list):
            return all(finite(x) for x in v)
        if isinstance(v, dict):
            return all(finite(x) for x in v.values())
        return True

    bad = [k for k, v in params.items() if not finite(v)]
    if bad:
        raise ValueError(f"{bad[0]}: not a finite number")
    return params


Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Params = Annotated[dict[str, JsonValue], AfterValidator(_finite_params)]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Severity = Literal["nominal", "yellow", "red"]
Side = Literal["low", "high"]
OperatorAction = Literal["acknowledge", "shelve", "unshelve"]
OPERATOR_ACTIONS: Final[tuple[OperatorAction, ...]] = ("acknowledge", "shelve", "unshelve")


class Message(BaseModel):
    """What every payload shares: frozen, finite numbers only, JSON in and out."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False,
                              populate_by_name=True)

    # The field holding a request's id, read from a payload that failed validation so the
    # reply can still name the request (None: the message has no id).
    _id_field: ClassVar[str | None] = None

    @classmethod
    def from_json(cls, payload: bytes | bytearray | str) -> Self:
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            raise MessageError.of(exc, cls._salvage_id(payload)) from None

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> Self:
        """From plain data already in memory (e.g. what an engine returns)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MessageError.of(exc) from None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """Plain JSON types; compact leaves out the fields still at their defaults."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=compact)

    @classmethod
    def _salvage_id(cls, payload: bytes | bytearray | str) -> str | int | None:
        if cls._id_field is None:
            return None
        try:
            data = json.loads(payload)
        except (ValueError, TypeError):  # JSONDecodeError and UnicodeDecodeError included
            return None
        if not isinstance(data, dict):
            return None
        return cls._valid_id(data.get(cls._id_field))

    @classmethod
    def _valid_id(cls, value: object) -> str | int | None:
        return value if isinstance(value, str) and 0 < len(value) <= 128 else None


class _Sparse(Message):
    """A reply whose unset (None) fields are left out, as the replies always were; the
    fields in `_always` are written even when None."""

    _always: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in self._always}


def parse_scalar(text: str) -> bool | int | float | str:
    """A value typed on a command line: true/false, an int, a float, or text."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


# --- alarms ---------------------------------------------------------------------------------


class AlarmEvent(Message):
    """One alarm transition (alarms/<source>/<vehicle>; also a reply's `event`). `state` is
    the alarm's state afterwards; `state == "normal"` means it left the active list."""

    time_ns: int  # data time of the transition
    seq: int  # per (source, vehicle), increasing: with time_ns, the key for storage
    vehicle: Name
    source: SourceField
    parameter: Name
    transition: Transition
    state: AlarmState
    severity: Severity  # the condition after the event
    side: Side | None = None
    value: float | None = None
    value_text: str | None = None
    limit: float | None = None
    onset_ns: int | None = None  # raised/escalated: the streak's first bad sample
    operator: str | None = None  # acknowledged/shelved/unshelved
    until_ns: int | None = None  # shelved: when the shelf expires
    label: str = ""
    label_ru: str | None = None
    unit: str = ""
    console: str | None = None
    subsystem: str | None = None

    @classmethod
    def from_event(cls, event: EngineEvent) -> AlarmEvent:
        return cls.from_data(event.to_dict())


class ActiveAlarm(Message):
    parameter: Name
    label: str = ""
    label_ru: str | None = None
    unit: str = ""
    console: str | None = None
    subsystem: str | None = None
    state: AlarmState
    severity: Severity
    peak_severity: Severity
    side: Side | None = None
    value: float | None = None
    value_text: str | None = None
    limit: float | None = None
    raised_ns: int | None = None
    acked_by: str | None = None
    acked_ns: int | None = None
    shelved_by: str | None = None
    shelved_until_ns: int | None = None


class AlarmCounts(Message):
    red: int = 0
    yellow: int = 0
    unacked: int = 0
    shelved: int = 0


class ActiveAlarms(Message):
    """The retained active list of a stream (alarms/<source>/<vehicle>/active):
    unacknowledged first, then red before yellow, then oldest first. `master_alarm`: some
    alarm waits for an acknowledgement (Apollo's master alarm light)."""

    vehicle: Name
    source: SourceField
    time_ns: int
    master_alarm: bool
    counts: AlarmCounts
    alarms: list[ActiveAlarm]


# --- operators ------------------------------------------------------------------------------


class OperatorRequest(Message):
    """An operator's request about an alarm, on ack/<operator>/<vehicle>: the operator is
    whom the broker authenticated (the topic), never a field. The reply on
    alarms/replies/<operator> names the same request_id."""

    model_config = ConfigDict(extra="forbid")
    _id_field: ClassVar[str | None] = "request_id"

    request_id: RequestId
    parameter: Name
    action: OperatorAction = "acknowledge"
    source: SourceField = Source.live()
    duration_s: float | None = Field(default=None, gt=0)  # shelve: for how long

    @field_validator("action", mode="before")
    @classmethod
    def _known_action(cls, value: object) -> object:
        if value not in OPERATOR_ACTIONS:
            raise ValueError(f"unknown action {value!r}; use acknowledge, shelve or unshelve")
        return value

    @model_validator(mode="after")
    def _duration(self) -> Self:
        if self.action == "shelve" and self.duration_s is None:
            raise ValueError("duration_s: required to shelve (seconds)")
        if self.action != "shelve" and self.duration_s is not None:
            raise ValueError(f"duration_s: only a shelve takes a duration, not {self.action}")
        return self


OPERATOR_REQUEST_FORM: Final = ('{"request_id": ID, "parameter": ID, "action": "acknowledge"|'
                                '"shelve"|"unshelve", "duration_s": S (shelve), "source": '
                                '"live"}')


class OperatorReply(Message):
    """The ingest's answer to one OperatorRequest: `ok` with the event it caused, or the
    error (and `reason`, a stable code). `request_id` is the request's, or None when the
    request was too malformed to carry one."""

    ok: bool
    request_id: str | None
    parameter: str | None = None
    event: AlarmEvent | None = None
    error: str | None = None
    reason: str | None = None  # bad_request, no_data, or the alarm engine's AlarmError

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ok and (self.event is None or self.error is not None):
            raise ValueError("an ok reply carries the event and no error")
        if not self.ok and not self.error:
            raise ValueError("a refusal says why (error)")
        return self

    @classmethod
    def done(cls, request_id: str, event: AlarmEvent) -> OperatorReply:
        return cls(ok=True, request_id=request_id, parameter=event.parameter, event=event)

    @classmethod
    def refused(cls, request_id: str | int | None, error: str, *, reason: str,
                parameter: str | None = None) -> OperatorReply:
        return cls(ok=False, request_id=None if request_id is None else str(request_id),
                   parameter=parameter, error=error, reason=reason)


# --- consoles: values and link quality ------------------------------------------------------


ParamSample = tuple[int, float | None, int]  # (time_ns, value, limit state -2..2)


class ParamsUpdate(Message):
    """The newest value of each parameter of a stream (params/<source>/<vehicle>), at the
    display rate; a value the ground could not compute is null."""

    vehicle: Name
    source: SourceField
    time_ns: int  # the newest frame's time
    values: dict[str, ParamSample]


class LinkStats(Message):
    """A stream's link quality as the ingest counts it (ingest/link/<source>/<vehicle>).
    The counters start at 0 with each ingest process."""

    vehicle: str | None = None  # the topic names both; kept in the payload for the log
    source: SourceField | None = None
    frames_good: int = 0
    sync_errors: int = 0
    counter_errors: int = 0
    frames_missing: int = 0
    frames_duplicate: int = 0
    frames_recovered: int = 0
    seq_jumps: int = 0  # jumps of the sequence number not counted as missing frames
    last_frame_ns: int = 0
    latency_ms_p50: float | None = None
    latency_ms_max: float | None = None
    # The format the newest frames came in (Apollo: hbr or lbr); the counters add up the
    # vehicle's streams.
    stream: str | None = None

    def counters(self) -> dict[str, int | float]:
        """The figures alone (what goes into InfluxDB's `link` measurement)."""
        return {k: v for k, v in self.model_dump(exclude={"vehicle", "source",
                                                          "stream"}).items()
                if v is not None}


class IngestStats(Message):
    """The ingest's own health (ingest/stats)."""

    time_ns: int
    messages_in: int
    frames_in: int
    frames_stored: int
    lines_submitted: int
    messages_acked: int
    inflight_messages: int
    pending_frames: int
    outbox: int
    alarm_events: int
    alarm_state_saves: int
    alarm_state_errors: int
    rejected: dict[str, int]
    rejected_total: int
    decode_ms_p50: float | None = None
    decode_ms_max: float | None = None
    sink: dict[str, int | float | bool] | None = None
    instance: str | None = None  # a clustered ingest's instance (docs/cluster.md)


class IngestInstance(Message):
    """A clustered ingest instance's status (ingest/instances/<instance>), retained: the
    partitions it owns now (docs/cluster.md)."""

    instance: str
    time_ns: int
    partitions: list[int]  # owned, by number
    partition_count: int
    vehicles: list[str]  # the known vehicles whose partitions it owns
    members: list[str]  # the instances it hears from (itself included)
    taken_over: int  # partitions it has taken from another instance since it started
    released: int  # ... and let go to share them out
    amqp_node: str | None = None  # the node it consumes through


class ContextValues(Message):
    """A vehicle's newest values of the parameters other vehicles' limits look at (their
    limit contexts), from the instance that owns the vehicle's partition, for the others."""

    source: SourceField
    vehicle: str
    values: Params  # "<vehicle>.<parameter>" -> value (a state's name)


# --- the simulators -------------------------------------------------------------------------


class FaultInfo(Message):
    """A fault injected in a ship, scheduled, active or finished."""

    id: str
    vehicle: str
    fault: str
    params: Params = Field(default_factory=dict)
    start: str  # GET
    ramp_s: float = 0.0
    end: str | None = None


class SimState(Message):
    """A ship's mission state (sim/state/...), retained. Only `phase` matters to the ingest
    (it picks limit sets by it); the replay tool sends little more than that."""

    vehicle: Name
    phase: str
    get: float | None = None
    get_text: str | None = None
    utc: str | None = None
    docked: bool | None = None
    aos: bool | None = None
    station: str | None = None
    relay: bool | None = None
    ended: bool | None = None
    faults: list[FaultInfo] = Field(default_factory=list)
    source: SourceField | None = None
    pcm_mode: str | None = None  # HBR or LBR (Apollo)
    stream: str | None = None  # the downlink stream its frames go down on now
    t: int | None = None  # the newest frame's time, ns
    running: bool | None = None
    paused: bool | None = None
    seed: int | None = None
    speed: float | None = None
    achieved_speed: float | None = None
    started: str | None = None  # GET the simulator started at
    recorder_frames: int | None = None
    recorder_overwritten: int | None = None
    live_frames: int | None = None
    playback_frames: int | None = None
    backlog_frames: int | None = None
    backlog_limit: int | None = None
    dropped_frames: int | None = None
    max_backlog_frames: int | None = None
    connected: bool | None = None
    events: list[str] | None = None  # timeline events since the last state message
    origin: str | None = Field(default=None, validation_alias="from",
                               serialization_alias="from")  # e.g. the replay's flight plan


SimCommand = Literal["inject", "clear", "clear_all", "list", "status", "pause", "resume",
                     "pcm_mode"]
SIM_COMMANDS: Final[tuple[SimCommand, ...]] = ("inject", "clear", "clear_all", "list",
                                               "status", "pause", "resume", "pcm_mode")
PCM_MODES: Final = ("HBR", "LBR")
_SIM_KEYS: Final[dict[str, frozenset[str]]] = {
    "inject": frozenset({"cmd", "id", "fault", "params", "at", "ramp_s", "duration_s"}),
    "clear": frozenset({"cmd", "id", "fault", "fault_id"}),
    "pcm_mode": frozenset({"cmd", "id", "mode", "at"}),
    **{c: frozenset({"cmd", "id"}) for c in ("clear_all", "list", "status", "pause",
                                             "resume")},
}


class SimControlRequest(_Sparse):
    """A request to a live ship's simulator (sim/control/<vehicle>); `id` is echoed in the
    reply as `request`. The simulator checks the fault and its parameters."""

    model_config = ConfigDict(extra="forbid")
    _id_field: ClassVar[str | None] = "id"

    cmd: SimCommand
    id: str | int | None = None
    fault: str | None = None  # inject, clear
    fault_id: str | None = None  # clear
    params: Params | None = None  # inject: the fault's parameters
    at: str | float | None = None  # inject: "now", a GET, an event+offset, GET seconds
    ramp_s: float | None = None
    duration_s: float | None = None
    mode: Literal["HBR", "LBR"] | None = None  # pcm_mode: Apollo's PCM bit rate

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> object:
        if not isinstance(data, dict):
            raise ValueError(f"a request is a JSON object, got {_json_type(data)}")
        if "id" in data and cls._valid_id(data["id"]) is None and data["id"] is not None:
            raise ValueError("id must be a string or an integer")
        cmd = data.get("cmd")
        if not isinstance(cmd, str) or cmd not in SIM_COMMANDS:
            raise ValueError(f"cmd must be one of {', '.join(SIM_COMMANDS)}; got {cmd!r}")
        extra = sorted(set(data) - _SIM_KEYS[cmd])
        if extra:
            raise ValueError(f"{cmd}: unknown key {extra[0]!r}; it takes "
                             f"{', '.join(sorted(_SIM_KEYS[cmd] - {'cmd'}))}")
        if cmd == "inject" and "fault" not in data:
            raise ValueError("inject: 'fault' is required")
        if cmd == "pcm_mode" and data.get("mode") not in PCM_MODES:
            raise ValueError(f"pcm_mode: 'mode' must be one of {', '.join(PCM_MODES)}; got "
                             f"{data.get('mode')!r}")
        at = data.get("at")
        if at is not None and (isinstance(at, bool) or not isinstance(at, str | int | float)):
            raise ValueError("at must be 'now', a GET such as '055:53:00', an event such as "
                             "'docking+10m', or GET seconds")
        return data

    @classmethod
    def _valid_id(cls, value: object) -> str | int | None:
        if isinstance(value, bool):
            return None
        return value if isinstance(value, str | int) else None


class FaultCatalogueEntry(Message):
    fault: str
    kind: str  # the fault's own kind (sensor, system, link), not an alarm transition
    doc: str
    effects: str | None = None
    params: dict[str, dict[str, JsonValue]] = Field(default_factory=dict)


class SimControlReply(_Sparse):
    """The simulator's answer (sim/reply/<vehicle>): `ok` and what the command did, or the
    error; a bad request changes nothing. `request` is the request's id."""

    _always: ClassVar[frozenset[str]] = frozenset({"ok", "request"})

    ok: bool
    request: str | int | None = None
    cmd: SimCommand | None = None
    error: str | None = None
    fault: FaultInfo | None = None  # inject
    fault_id: str | None = None  # inject
    cleared: list[str] | None = None  # clear, clear_all
    faults: list[FaultInfo] | None = None  # list
    catalogue: list[FaultCatalogueEntry] | None = None  # list
    state: SimState | None = None  # status
    paused: bool | None = None  # pause, resume
    get: float | None = None  # pause, resume
    get_text: str | None = None  # pause, resume
    mode: str | None = None  # pcm_mode: the mode from `get` on
    stream: str | None = None  # pcm_mode: the downlink stream it goes down on


# --- replay ---------------------------------------------------------------------------------


ReplayLimits = Literal["recorded", "current"]
REPLAY_LIMITS: Final[tuple[ReplayLimits, ...]] = ("recorded", "current")
REPLAY_SESSION_VERSION: Final = 1


class ReplayDefinition(Message):
    stream: str
    sha256: str
    text: str  # the definition file exactly as recorded


class ReplaySession(Message):
    """The replay tool's retained announcement of a session (replay/session/<session>),
    before its first frame: the definitions its frames were recorded with (`recorded`),
    or none (`current`: the ingest's own). An empty payload ends the session; see
    groundstation/replay/session.py for the handshake."""

    v: Literal[1] = REPLAY_SESSION_VERSION
    session: Name
    state: Literal["open", "closed"] = "open"
    limits: ReplayLimits = "recorded"
    definitions: dict[str, ReplayDefinition] = Field(default_factory=dict)
    pass_id: str | None = Field(default=None, validation_alias="pass", serialization_alias="pass")
    from_ns: int | None = None
    to_ns: int | None = None
    started_ns: int | None = None


def parse_replay_speed(text: str | float | None) -> float | None:
    """A replay speed factor; None means max."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("max", "inf")):
        return None
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"speed {text!r}: give a factor such as 1, 10, 100, or max") from None
    if not v > 0 or math.isinf(v) or math.isnan(v):
        raise ValueError(f"speed {text!r} must be a positive factor (or max)")
    return v


ReplayCommand = Literal["pause", "resume", "speed", "seek", "stop"]
REPLAY_COMMANDS: Final[tuple[ReplayCommand, ...]] = ("pause", "resume", "speed", "seek", "stop")


class ReplayControl(_Sparse):
    """A command to a running replay (replay/control/<session>): JSON such as
    {"command": "speed", "speed": 10}, or the text a person types: pause, resume, stop,
    speed 10, speed max, seek GET 044:22:00, seek 1975-07-17T16:12:00Z."""

    model_config = ConfigDict(extra="forbid")

    command: ReplayCommand
    speed: float | Literal["max"] | None = None  # speed: a factor, or max
    to: str | int | None = None  # seek: UTC, "GET hhh:mm:ss" or ns
    by_s: float | None = None  # seek: relative, seconds

    @field_validator("command", mode="before")
    @classmethod
    def _known(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in REPLAY_COMMANDS:
            return value.lower()
        raise ValueError(f"unknown command {value!r}; use pause, resume, speed, seek, stop")

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"speed {value!r}: give a factor such as 1, 10, 100, or max")
        try:
            factor = parse_replay_speed(value)
        except ValueError:
            raise ValueError(f"{value!r}: give a factor such as 1, 10, 100, or max "
                             "(a positive number)") from None
        return "max" if factor is None else factor

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: object) -> object:
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError("seek to a UTC time, 'GET hhh:mm:ss' or ns")
        return value

    @model_validator(mode="after")
    def _arguments(self) -> Self:
        if self.command == "speed" and self.speed is None:
            raise ValueError("speed needs a factor such as 1, 10, 100, or max")
        if self.command == "seek" and self.by_s is None and self.to in (None, ""):
            raise ValueError("seek needs 'to' (UTC, GET or ns) or 'by_s'")
        if self.command != "speed" and self.speed is not None:
            raise ValueError(f"{self.command} takes no speed")
        if self.command != "seek" and (self.to is not None or self.by_s is not None):
            raise ValueError(f"{self.command} takes no 'to' or 'by_s'")
        return self

    @property
    def factor(self) -> float | None:
        """The speed as a factor; None for max."""
        return self.speed if isinstance(self.speed, float) else None

    @classmethod
    def from_json(cls, payload: bytes | bytearray | str) -> Self:
        """JSON, or the text form (pause, speed 10, seek GET 044:22:00, ...)."""
        text = (payload.decode("utf-8", "replace") if isinstance(payload, bytes | bytearray)
                else payload).strip()
        if text.startswith("{"):
            return super().from_json(text)
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        data: dict[str, object] = {"command": word}
        if word.lower() == "speed":
            data["speed"] = rest or None
        elif word.lower() == "seek":
            data["to"] = rest or None
        elif rest:
            raise MessageError(f"{word} takes no argument (got {rest!r})", "command")
        return cls.from_data(data)


class ReplayControlReply(_Sparse):
    """The answer to the last replay command, in the status."""

    ok: bool
    command: ReplayCommand | None = None
    speed: str | None = None  # as shown: 10x, max
    paused: bool | None = None
    error: str | None = None
    time_ns: int


ReplayState = Literal["starting", "running", "paused", "finished", "stopped"]


class ReplayStatus(Message):
    """The replay tool's state (replay/status/<session>), retained."""

    session: Name
    state: ReplayState
    speed: str  # 10x, max
    position_ns: int
    position_utc: str
    position_get: str
    frames_sent: int
    frames_total: int
    pass_id: str | None = Field(default=None, validation_alias="pass", serialization_alias="pass")
    from_utc: str
    to_utc: str
    limits: ReplayLimits
    last_command: ReplayControlReply | None = None
    time_ns: int


# --- drills ---------------------------------------------------------------------------------


DrillCommand = Literal["pause", "resume", "stop", "inject"]
DRILL_COMMANDS: Final[tuple[DrillCommand, ...]] = ("pause", "resume", "stop", "inject")
_DRILL_KEYS: Final[dict[str, frozenset[str]]] = {
    "pause": frozenset({"cmd"}), "resume": frozenset({"cmd"}),
    "stop": frozenset({"cmd", "now"}),
    "inject": frozenset({"cmd", "vehicle", "fault", "params", "ramp_s", "duration_s",
                         "expect", "id"}),
}
DRILL_INJECT_FORM: Final = ("inject VEHICLE FAULT [key=value ...], e.g. inject apollo_csm "
                            "cabin_leak rate_lb_h=5 ramp_s=60")


class DrillExpectation(Message):
    """An alarm an instructor's extra fault should raise (checked against the
    definitions by the drill runner)."""

    model_config = ConfigDict(extra="forbid")

    parameter: Name
    vehicle: str | None = None  # default: the fault's
    severity: Literal["yellow", "red"] = "yellow"
    within_s: float = 300.0
    ack_within_s: float | None = None  # default: the scenario's
    weight: float = 1.0


class DrillControl(_Sparse):
    """The instructor's command to a running drill (drill/control/<drill>): JSON such as
    {"cmd": "inject", "vehicle": "soyuz", "fault": "coolant_loop", "expect": [...]}, or a
    text line: pause | resume | stop [now] | inject VEHICLE FAULT [key=value ...] (ramp_s,
    duration_s and id are the injection's; other keys are the fault's parameters)."""

    model_config = ConfigDict(extra="forbid")

    cmd: DrillCommand
    now: bool | None = None  # stop: true for no grace period
    vehicle: str | None = None  # inject
    fault: str | None = None  # inject
    params: Params | None = None  # inject: the fault's parameters
    ramp_s: float | None = None  # inject
    duration_s: float | None = None  # inject
    expect: list[DrillExpectation] | None = None  # inject: the alarms it should raise
    id: str | None = None  # inject: the injection's id in the debrief

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> object:
        if not isinstance(data, dict):
            raise ValueError(f"a command is a JSON object, got {_json_type(data)}")
        cmd = data.get("cmd")
        if cmd not in DRILL_COMMANDS:
            raise ValueError(f"unknown command {cmd!r}; commands are pause, resume, stop, "
                             "inject")
        extra = sorted(set(data) - _DRILL_KEYS[cmd])
        if extra:
            raise ValueError(f"{cmd}: unknown key {extra[0]!r}; it takes "
                             f"{', '.join(sorted(_DRILL_KEYS[cmd] - {'cmd'})) or 'nothing'}")
        if cmd == "inject":
            if not isinstance(data.get("vehicle"), str):
                raise ValueError("inject: 'vehicle' is required (apollo_csm or soyuz)")
            if "fault" not in data:
                raise ValueError("inject: 'fault' is required")
        return data

    @classmethod
    def from_json(cls, payload: bytes | bytearray | str) -> Self:
        """JSON, or the text form (pause, stop now, inject VEHICLE FAULT k=v ...)."""
        text = (payload.decode("utf-8", "replace") if isinstance(payload, bytes | bytearray)
                else payload).strip()
        if text.startswith("{"):
            return super().from_json(text)
        return cls.from_data(cls._text(text))

    @staticmethod
    def _text(text: str) -> dict[str, object]:
        words = text.split()
        if not words:
            raise MessageError("empty command; send pause, resume, stop or inject ...")
        cmd = words[0].lower()
        if cmd in ("pause", "resume"):
            if len(words) > 1:
                raise MessageError(f"{cmd} takes no argument (got {' '.join(words[1:])!r})")
            return {"cmd": cmd}
        if cmd == "stop":
            if words[1:] not in ([], ["now"]):
                raise MessageError(f"stop or stop now, not {text!r}")
            return {"cmd": "stop", "now": len(words) > 1}
        if cmd != "inject":
            raise MessageError(f"unknown command {words[0]!r}; commands are pause, resume, "
                               "stop [now], inject VEHICLE FAULT [key=value ...]")
        if len(words) < 3:
            raise MessageError(DRILL_INJECT_FORM)
        params: dict[str, object] = {}
        msg: dict[str, object] = {"cmd": "inject", "vehicle": words[1], "fault": words[2],
                                  "params": params}
        for item in words[3:]:
            if "=" not in item:
                raise MessageError(f"{item!r} is not key=value")
            k, v = item.split("=", 1)
            try:
                if k in ("ramp_s", "duration_s"):
                    msg[k] = parse_duration(v)
                elif k == "id":
                    msg["id"] = v
                else:
                    params[k] = parse_scalar(v)
            except ValueError as exc:
                raise MessageError(str(exc), k) from None
        return msg


class DrillControlReply(_Sparse):
    """The answer to an instructor's command, in the drill's status and its debrief."""

    ok: bool
    cmd: DrillCommand | None = None
    get: str | None = None  # GET of the mission clock (or of the injection)
    now: bool | None = None  # stop
    id: str | None = None  # inject: the injection's id
    error: str | None = None


DrillState = Literal["starting", "running", "paused", "grace", "finishing", "finished"]


class DrillStatus(Message):
    """A running drill's state (drill/status/<drill>), retained. Every user may read it,
    so it names no pending fault (a trainee must not learn what is coming)."""

    drill: Name
    scenario: str
    title: str
    source: SourceField
    state: DrillState
    get: float
    get_text: str
    start: str
    end: str
    speed: float
    achieved_speed: float
    faults_injected: int
    faults_pending: int
    alarms_raised: int
    acknowledgements: int
    last_reply: DrillControlReply | None = None
    time_ns: int
    score: int | None = None  # at the end
    debrief: str | None = None  # at the end: where it was written
    calls: int = 0  # the trainees' calls heard so far


CALL_MAX: Final = 500  # characters of a call


class DrillCall(Message):
    """A trainee's call in a drill (calls/<operator>/<drill>), made with the console's call
    key: what they would say on the loop ("RCS off now, fumes"), from which position. The
    operator is whom the broker authenticated (the topic), never a field; the drill runner
    stamps the call with the mission clock when it hears it, and the debrief scores it
    against the scenario's timed calls."""

    model_config = ConfigDict(extra="forbid")
    _id_field: ClassVar[str | None] = "request_id"

    request_id: RequestId
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=CALL_MAX)]
    position: str | None = None
    time_ns: int | None = None  # wall clock of the console when it was made


# --- commands -------------------------------------------------------------------------------

# The stages of a command (groundstation/commanding/), in the order they can come:
#   refused            the service would not take it (never reached the ship): `reason` says why
#   armed              a hazardous command's first step; `cancelled` if not executed in time
#   queued             checked and stamped: the operator's rights, the definition, the arguments
#   sent               published to the ship's uplink (real-time) or read up (procedure)
#   received           a real-time command: the ship heard it and acted (its own time)
#   crew_acknowledged  a procedure: the crew read it back; they act crew_delay_s later
#   verified           every verification condition showed in the telemetry in time
#   failed             the ship never answered, or a condition did not show in time: `reason`
CommandStage = Literal["refused", "armed", "cancelled", "queued", "sent", "received",
                       "crew_acknowledged", "verified", "failed"]
COMMAND_STAGES: Final[tuple[CommandStage, ...]] = (
    "refused", "armed", "cancelled", "queued", "sent", "received", "crew_acknowledged",
    "verified", "failed")
FINAL_STAGES: Final = frozenset({"refused", "cancelled", "verified", "failed"})
CommandAction = Literal["send", "arm", "execute", "disarm"]
COMMAND_ACTIONS: Final[tuple[CommandAction, ...]] = ("send", "arm", "execute", "disarm")
CommandKind = Literal["realtime", "procedure"]
# Why the service refused a request (CommandReply.reason, and the refused event's `code`).
CommandRefusal = Literal["bad_request", "unknown_vehicle", "unknown_command", "not_operator",
                         "wrong_position", "bad_argument", "needs_arm", "not_armed",
                         "not_commandable"]
COMMAND_REQUEST_FORM: Final = ('{"request_id": ID, "action": "send"|"arm"|"execute"|"disarm", '
                               '"command": ID, "args": {...}, "command_id": ID (execute, '
                               'disarm), "source": "live", "position": POS}')
_COMMAND_KEYS: Final[dict[str, frozenset[str]]] = {
    "send": frozenset({"request_id", "action", "command", "args", "source", "position"}),
    "arm": frozenset({"request_id", "action", "command", "args", "source", "position"}),
    "execute": frozenset({"request_id", "action", "command_id", "source", "position"}),
    "disarm": frozenset({"request_id", "action", "command_id", "source", "position"}),
}


class CommandRequest(_Sparse):
    """An operator's command request, on cmd/request/<operator>/<vehicle>: the operator is
    whom the broker authenticated (the topic), never a field. `send` a command (refused for
    a hazardous one), `arm` a hazardous one, then `execute` it (naming the `command_id` the
    arm reply gave) or `disarm` it. The answer on cmd/replies/<operator> names the same
    request_id. `position`: the console position the operator acts from (default: the
    first of theirs the command allows)."""

    model_config = ConfigDict(extra="forbid")
    _id_field: ClassVar[str | None] = "request_id"

    request_id: RequestId
    action: CommandAction = "send"
    command: Name | None = None  # send, arm
    args: Params = Field(default_factory=dict)  # send, arm
    command_id: Name | None = None  # execute, disarm
    source: SourceField = Source.live()
    position: Name | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> object:
        if not isinstance(data, dict):
            raise ValueError(f"a request is a JSON object, got {_json_type(data)}")
        action = data.get("action", "send")
        if action not in COMMAND_ACTIONS:
            raise ValueError(f"action: unknown action {action!r}; use send, arm, execute or "
                             "disarm")
        # An empty `args` is no argument (what an execute's own to_json() writes).
        extra = sorted(k for k in set(data) - _COMMAND_KEYS[action]
                       if not (k == "args" and data[k] in ({}, None)))
        if extra:
            raise ValueError(f"{extra[0]}: unknown field for {action} (it takes "
                             f"{', '.join(sorted(_COMMAND_KEYS[action]))})")
        if action in ("send", "arm") and not data.get("command"):
            raise ValueError(f"command: required to {action} (the command's id)")
        if action in ("execute", "disarm") and not data.get("command_id"):
            raise ValueError(f"command_id: required to {action} (the id the arm reply gave)")
        return data

    @classmethod
    def parse_line(cls, text: str, request_id: str, *, source: str | Source = "live",
                   position: str | None = None) -> CommandRequest:
        """The command line a person types: `COMMAND [key=value ...]` sends (or arms, for
        `arm COMMAND ...`), `execute COMMAND_ID`, `disarm COMMAND_ID`."""
        words = text.split()
        if not words:
            raise MessageError("type a command: COMMAND [key=value ...]")
        action: str = "send"
        if words[0].lower() in ("arm", "execute", "disarm", "send"):
            action, words = words[0].lower(), words[1:]
        data: dict[str, object] = {"request_id": request_id, "action": action,
                                   "source": str(Source.parse(source))}
        if position:
            data["position"] = position
        if action in ("execute", "disarm"):
            if len(words) != 1:
                raise MessageError(f"{action} COMMAND_ID (the id the arm gave)")
            data["command_id"] = words[0]
            return cls.from_data(data)
        if not words:
            raise MessageError(f"{action} what? {action} COMMAND [key=value ...]")
        data["command"] = words[0]
        args: dict[str, object] = {}
        for item in words[1:]:
            if "=" not in item:
                raise MessageError(f"{item!r} is not key=value", "args")
            k, v = item.split("=", 1)
            args[k] = parse_scalar(v)
        data["args"] = args
        return cls.from_data(data)


class CommandReply(_Sparse):
    """The commanding service's answer to one CommandRequest (cmd/replies/<operator>): ok
    with the command's id and stage (queued, armed, cancelled), or the error and a stable
    `reason` (CommandRefusal). `request_id` is the request's, or None when the request was
    too malformed to carry one."""

    _always: ClassVar[frozenset[str]] = frozenset({"ok", "request_id"})

    ok: bool
    request_id: str | None
    command_id: str | None = None
    command: str | None = None
    vehicle: str | None = None
    stage: CommandStage | None = None
    arm_expires_ns: int | None = None  # armed: execute before this (wall clock)
    error: str | None = None
    reason: CommandRefusal | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("an ok reply carries no error")
        if not self.ok and not self.error:
            raise ValueError("a refusal says why (error)")
        return self


class VerifyResult(Message):
    """One verification condition and how it came out."""

    condition: str  # as the definition says it: "o2_tank2_htr OFF within 20 s"
    parameter: str
    ok: bool | None = None  # None: still waiting
    at_ns: int | None = None  # data time it showed
    value: float | None = None  # the value that showed (a state code for a discrete)
    value_text: str | None = None


class CommandEvent(Message):
    """One stage of one command (cmd/events/<source>/<vehicle>; stored in InfluxDB's
    `commands` measurement and the archive's command history)."""

    command_id: Name
    seq: int  # increasing per service process: the order of the events
    vehicle: Name
    source: SourceField
    command: Name
    kind: CommandKind | None = None  # None: a refused request for no known command
    title: str = ""
    args: Params = Field(default_factory=dict)
    operator: str
    position: str | None = None
    stage: CommandStage
    time_ns: int  # wall clock of the event
    data_time_ns: int | None = None  # mission (data) time it belongs to, where known
    reason: str | None = None  # refused, cancelled, failed: why
    code: str | None = None  # refused: the CommandRefusal
    hazardous: bool = False
    act_ns: int | None = None  # received / crew_acknowledged: when the ship acts (data time)
    verify: list[VerifyResult] = Field(default_factory=list)  # verified, failed


class CommandHistory(Message):
    """The retained recent commands of a vehicle (cmd/history/<source>/<vehicle>): the
    newest event of each, newest command first, with when it reached each stage."""

    vehicle: Name
    source: SourceField
    time_ns: int
    commands: list[CommandEvent]
    stages: dict[str, dict[str, int]] = Field(default_factory=dict)  # id -> stage -> wall ns


class CommandUplink(Message):
    """A stamped command to a ship (cmd/uplink/<source>/<vehicle>), from the commanding
    service only (the broker's ACL)."""

    model_config = ConfigDict(extra="forbid")

    command_id: Name
    command: Name
    kind: CommandKind
    args: Params = Field(default_factory=dict)
    operator: Name
    position: str | None = None
    sent_ns: int  # wall clock


ShipAckStage = Literal["received", "crew_acknowledged", "rejected"]


class CommandAck(_Sparse):
    """The ship's answer to an uplinked command (cmd/ack/<source>/<vehicle>): heard it
    (a real-time command, acted at once), the crew read it back (a procedure, to be done
    at `act_ns`), or rejected it (`reason`). Times are the ship's clock (mission time, ns
    since 1970, like frame times). No answer at all: the ship did not hear the up-link."""

    command_id: Name
    stage: ShipAckStage
    time_ns: int
    act_ns: int | None = None  # when the ship acts (a procedure: after the crew delay)
    get: str | None = None
    reason: str | None = None
