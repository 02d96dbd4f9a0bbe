"""The MQTT topic layout: every topic the system uses, with its builder, its parser and its
subscription patterns. Nothing outside `groundstation.core` spells a topic; the payloads
are in `groundstation.core.messages`. Together the two modules are the wire contract.

Each kind of traffic has its own subtree so that a broker ACL (deploy/mosquitto/acl, which
depends on these exact strings) can say who may publish what, and so that replayed and
training data can never be mistaken for live data:

    telemetry/<source>/<vehicle>/<stream>   frames (msgpack envelopes, core/envelope.py)
    sim/state/<vehicle>                     retained: a live ship's mission state
    sim/state/<source>/<vehicle>            ... a drill's ship, or a replay's phase
    sim/control/<vehicle>                   simulator control requests
    sim/reply/<vehicle>                     ... and their replies
    params/<source>/<vehicle>               processed parameters for consoles
    alarms/<source>/<vehicle>               alarm events
    alarms/<source>/<vehicle>/active        retained: the active alarm list
    ack/<operator>/<vehicle>                operator requests (acknowledge, shelve, unshelve)
    alarms/replies/<operator>               the ingest's answer to each request
    ingest/stats                            retained: the ingest's own health
    ingest/link/<source>/<vehicle>          retained: a stream's link quality
    ingest/instances/<instance>             retained: a clustered ingest instance's
                                            partitions (empty: it left)
    ingest/context/<source>/<vehicle>       a vehicle's values other vehicles' limits
                                            look at, from the instance that owns it
    replay/session|control|status/<session> a replay session's handshake, control, status
    drill/control|status/<drill>            a drill's control and status
    calls/<operator>/<drill>                a trainee's calls in a drill (the call key)
    cmd/request/<operator>/<vehicle>        an operator's command requests (send, arm, ...)
    cmd/replies/<operator>                  the commanding service's answer to each
    cmd/uplink/<source>/<vehicle>           a stamped command, to the ship
    cmd/ack/<source>/<vehicle>              the ship's receipt (or the crew's readback)
    cmd/events/<source>/<vehicle>           every stage of every command
    cmd/history/<source>/<vehicle>          retained: the recent commands and their stages

A source is "live", "replay/<session>" (a recorded pass played back) or "training/<drill>"
(a drill's simulated ships): the `source` tag in InfluxDB, one or two levels of the topics
above and a directory of the archive. `Source` is its parsed form; `str(source)` is the text
everywhere else (tags, keys, directories).

Every builder checks that each name is one topic level (not empty, no '/', '+' or '#'), so a
name can never widen a subscription or escape into another subtree; every parser returns a
typed value or raises ValueError saying what topic it expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

LIVE: Final = "live"  # the live source's text (its topic level, tag value and key)
REPLAY: Final = "replay"
TRAINING: Final = "training"

_NOT_IN_A_LEVEL = frozenset("/+#\0")


def check_level(what: str, name: str) -> str:
    """`name` if it can be one topic level; else ValueError naming `what` it was."""
    if not isinstance(name, str) or not name or not _NOT_IN_A_LEVEL.isdisjoint(name):
        raise ValueError(f"{what} {name!r} must be one topic level (not empty, no '/', '+' "
                         "or '#')")
    return name


# --- sources ------------------------------------------------------------------------------


class SourceKind(StrEnum):
    LIVE = LIVE
    REPLAY = REPLAY
    TRAINING = TRAINING


_SOURCE_FORMS = "'live', 'replay/<session>' or 'training/<drill>'"


@dataclass(frozen=True, slots=True)
class Source:
    """Where data comes from: the live ships, a replay session or a drill."""

    kind: SourceKind
    name: str | None = None  # the session or the drill; None for live

    def __post_init__(self) -> None:
        try:
            kind = SourceKind(self.kind)
        except ValueError:
            raise ValueError(f"source kind {self.kind!r} must be live, replay or "
                             "training") from None
        object.__setattr__(self, "kind", kind)
        if kind is SourceKind.LIVE:
            if self.name is not None:
                raise ValueError("the live source has no name")
        else:
            what = "replay session" if kind is SourceKind.REPLAY else "drill"
            if self.name is None:
                raise ValueError(f"a {kind.value} source needs its {what}")
            check_level(what, self.name)

    @classmethod
    def parse(cls, text: str | Source) -> Source:
        """'live', 'replay/<session>' or 'training/<drill>'; else ValueError."""
        if isinstance(text, Source):
            return text
        if isinstance(text, str):
            if text == LIVE:
                return _LIVE
            kind, _, name = text.partition("/")
            if kind in (REPLAY, TRAINING) and name and _NOT_IN_A_LEVEL.isdisjoint(name):
                return cls(SourceKind(kind), name)
        raise ValueError(f"source {text!r} must be {_SOURCE_FORMS} (one topic level, no + "
                         "or #)")

    @classmethod
    def live(cls) -> Source:
        return _LIVE

    @classmethod
    def replay(cls, session: str) -> Source:
        return cls(SourceKind.REPLAY, session)

    @classmethod
    def training(cls, drill: str) -> Source:
        return cls(SourceKind.TRAINING, drill)

    @property
    def is_live(self) -> bool:
        return self.kind is SourceKind.LIVE

    @property
    def levels(self) -> tuple[str, ...]:
        """The topic levels this source takes up: one for live, two for the others."""
        return (LIVE,) if self.name is None else (self.kind.value, self.name)

    def __str__(self) -> str:
        return LIVE if self.name is None else f"{self.kind.value}/{self.name}"


_LIVE: Final = Source(SourceKind.LIVE)


def check_source(source: str | Source) -> str:
    """The source's text if it is live, replay/<name> or training/<name>; else ValueError."""
    return str(Source.parse(source))


def training(drill: str) -> str:
    """The source text of a drill's data: training/<drill>."""
    return str(Source.training(drill))


def replay(session: str) -> str:
    """The source text of a replay session's data: replay/<session>."""
    return str(Source.replay(session))


def _take_source(levels: list[str]) -> tuple[Source, list[str]] | None:
    """The source at the start of `levels` and the levels after it, or None."""
    if levels and levels[0] == LIVE:
        return _LIVE, levels[1:]
    if len(levels) >= 2 and levels[0] in (REPLAY, TRAINING) and levels[1] \
            and _NOT_IN_A_LEVEL.isdisjoint(levels[1]):
        return Source(SourceKind(levels[0]), levels[1]), levels[2:]
    return None


def _names(levels: list[str], n: int) -> bool:
    return len(levels) == n and all(levels)


def _per_source(prefix: str, tail: str) -> tuple[str, str, str]:
    """A family's subscription patterns, one per kind of source."""
    return (f"{prefix}/{LIVE}/{tail}", f"{prefix}/{REPLAY}/+/{tail}",
            f"{prefix}/{TRAINING}/+/{tail}")


def _bad(what: str, topic: str, expected: str) -> ValueError:
    return ValueError(f"not a {what} topic: {topic!r} (expected {expected})")


_SOURCE_NOTE = ", <source> being live, replay/<session> or training/<drill>"


# --- telemetry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    source: Source
    vehicle: str
    stream: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)
        check_level("stream", self.stream)

    def __str__(self) -> str:
        return "/".join(("telemetry", *self.source.levels, self.vehicle, self.stream))


def telemetry(vehicle: str, stream: str, session: str | None = None, *,
              source: str | Source | None = None) -> str:
    """Raw frames: telemetry/<source>/<vehicle>/<stream>, e.g. telemetry/live/apollo_csm/hbr,
    telemetry/replay/<session>/..., telemetry/training/<drill>/...; `session` is the
    older spelling of source=replay/<session>."""
    if source is None:
        src = _LIVE if session is None else Source.replay(session)
    else:
        src = Source.parse(source)
    return str(TelemetryTopic(src, vehicle, stream))


TELEMETRY_SUBSCRIPTIONS: Final = _per_source("telemetry", "+/+")


def is_telemetry(topic: str) -> bool:
    """Whether a topic is in the telemetry subtree (well formed or not): the hot path's
    one-comparison dispatch, before parse_telemetry."""
    return topic.startswith("telemetry/")


def parse_telemetry(topic: str) -> TelemetryTopic:
    parts = topic.split("/")
    if parts[0] == "telemetry" and (taken := _take_source(parts[1:])) is not None:
        source, rest = taken
        if _names(rest, 2):
            return TelemetryTopic(source, rest[0], rest[1])
    raise _bad("telemetry", topic, "telemetry/live/<vehicle>/<stream>, "
               "telemetry/replay/<session>/<vehicle>/<stream> or "
               "telemetry/training/<drill>/<vehicle>/<stream>")


# --- the simulators: state, control, replies ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SimStateTopic:
    """The retained mission state (phase, GET, ...): sim/state/<vehicle> for the live ships,
    sim/state/training/<drill>/<vehicle> for a drill's, sim/state/replay/<session>/<vehicle>
    for a replay (the phase of the recording's time, from the replay tool)."""

    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        # The live ships' state has no source level: the ACL's `sim/state/%u` predates
        # the other sources.
        where = () if self.source.is_live else self.source.levels
        return "/".join(("sim", "state", *where, self.vehicle))


def sim_state(vehicle: str, source: str | Source = LIVE) -> str:
    return str(SimStateTopic(Source.parse(source), vehicle))


SIM_STATE_SUBSCRIPTIONS: Final = ("sim/state/+", f"sim/state/{TRAINING}/+/+",
                                  f"sim/state/{REPLAY}/+/+")


def parse_sim_state(topic: str) -> SimStateTopic:
    parts = topic.split("/")
    if parts[:2] == ["sim", "state"]:
        if _names(parts[2:], 1):
            return SimStateTopic(_LIVE, parts[2])
        taken = _take_source(parts[2:])
        if taken is not None and not taken[0].is_live and _names(taken[1], 1):
            return SimStateTopic(taken[0], taken[1][0])
    raise _bad("simulator state", topic, "sim/state/<vehicle>, "
               "sim/state/training/<drill>/<vehicle> or sim/state/replay/<session>/<vehicle>")


@dataclass(frozen=True, slots=True)
class SimControlTopic:
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return f"sim/control/{self.vehicle}"


@dataclass(frozen=True, slots=True)
class SimReplyTopic:
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return f"sim/reply/{self.vehicle}"


def sim_control(vehicle: str) -> str:
    """Requests to a live ship's simulator (the instructor only)."""
    return str(SimControlTopic(vehicle))


def sim_reply(vehicle: str) -> str:
    """The simulator's reply to each control request."""
    return str(SimReplyTopic(vehicle))


SIM_CONTROL_SUBSCRIPTION: Final = "sim/control/+"
SIM_REPLY_SUBSCRIPTION: Final = "sim/reply/+"


def parse_sim_control(topic: str) -> SimControlTopic:
    parts = topic.split("/")
    if parts[:2] == ["sim", "control"] and _names(parts[2:], 1):
        return SimControlTopic(parts[2])
    raise _bad("simulator control", topic, "sim/control/<vehicle>")


def parse_sim_reply(topic: str) -> SimReplyTopic:
    parts = topic.split("/")
    if parts[:2] == ["sim", "reply"] and _names(parts[2:], 1):
        return SimReplyTopic(parts[2])
    raise _bad("simulator reply", topic, "sim/reply/<vehicle>")


# --- what the ingest publishes for consoles -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamsTopic:
    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join(("params", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class AlarmsTopic:
    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join(("alarms", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class ActiveAlarmsTopic:
    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join(("alarms", *self.source.levels, self.vehicle, "active"))


@dataclass(frozen=True, slots=True)
class LinkTopic:
    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join(("ingest", "link", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class IngestStatsTopic:
    def __str__(self) -> str:
        return INGEST_STATS


def parameters(vehicle: str, source: str | Source = LIVE) -> str:
    """Processed parameters for consoles, at the display rate."""
    return str(ParamsTopic(Source.parse(source), vehicle))


def alarms(vehicle: str, source: str | Source = LIVE) -> str:
    """Alarm events."""
    return str(AlarmsTopic(Source.parse(source), vehicle))


def active_alarms(vehicle: str, source: str | Source = LIVE) -> str:
    """The retained active alarm list (and master alarm) of a stream."""
    return str(ActiveAlarmsTopic(Source.parse(source), vehicle))


def ingest_link(vehicle: str, source: str | Source = LIVE) -> str:
    """A stream's retained link quality."""
    return str(LinkTopic(Source.parse(source), vehicle))


INGEST_STATS: Final = "ingest/stats"


def ingest_stats() -> str:
    """The ingest's retained self-telemetry."""
    return INGEST_STATS


def ingest_instance(instance: str) -> str:
    """A clustered ingest instance's retained status (which partitions it owns)."""
    return f"ingest/instances/{check_level('instance', instance)}"


INGEST_INSTANCES_SUBSCRIPTION: Final = "ingest/instances/+"


@dataclass(frozen=True, slots=True)
class InstanceTopic:
    instance: str

    def __str__(self) -> str:
        return ingest_instance(self.instance)


def parse_ingest_instance(topic: str) -> InstanceTopic:
    name = _one_name(topic, ["ingest", "instances"])
    if name is None:
        raise _bad("an ingest instance's status", topic, "ingest/instances/<instance>")
    return InstanceTopic(name)


@dataclass(frozen=True, slots=True)
class ContextTopic:
    source: Source
    vehicle: str

    def __str__(self) -> str:
        return "/".join(("ingest", "context", *self.source.levels, self.vehicle))


def ingest_context(vehicle: str, source: str | Source = LIVE) -> str:
    """A vehicle's values that other vehicles' limit contexts look at (clustered ingest)."""
    return str(ContextTopic(Source.parse(source), check_level("vehicle", vehicle)))


CONTEXT_SUBSCRIPTIONS: Final = _per_source("ingest/context", "+")


def parse_ingest_context(topic: str) -> ContextTopic:
    where = _parse_sourced(topic, ["ingest", "context"], [])
    if where is None:
        raise _bad("a vehicle's context values", topic, "ingest/context/<source>/<vehicle>")
    return ContextTopic(*where)


PARAMS_SUBSCRIPTIONS: Final = _per_source("params", "+")
ALARMS_SUBSCRIPTIONS: Final = _per_source("alarms", "+")
ACTIVE_ALARMS_SUBSCRIPTIONS: Final = _per_source("alarms", "+/active")
LINK_SUBSCRIPTIONS: Final = _per_source("ingest/link", "+")
INGEST_SUBSCRIPTION: Final = "ingest/#"  # self-telemetry and every link


def parameters_subscription(source: str | Source) -> str:
    """Every vehicle's parameters from one source."""
    return "/".join(("params", *Source.parse(source).levels, "+"))


def alarms_subscription(source: str | Source) -> str:
    """Every vehicle's alarm events from one source (not the active lists)."""
    return "/".join(("alarms", *Source.parse(source).levels, "+"))


def _parse_sourced(topic: str, prefix: list[str], suffix: list[str]
                   ) -> tuple[Source, str] | None:
    parts = topic.split("/")
    n = len(prefix)
    if parts[:n] != prefix or (suffix and parts[-len(suffix):] != suffix):
        return None
    taken = _take_source(parts[n:len(parts) - len(suffix)])
    if taken is None or not _names(taken[1], 1):
        return None
    return taken[0], taken[1][0]


def parse_parameters(topic: str) -> ParamsTopic:
    got = _parse_sourced(topic, ["params"], [])
    if got is None:
        raise _bad("parameters", topic, "params/<source>/<vehicle>" + _SOURCE_NOTE)
    return ParamsTopic(*got)


def parse_alarms(topic: str) -> AlarmsTopic:
    got = _parse_sourced(topic, ["alarms"], [])
    if got is None:
        raise _bad("alarm events", topic, "alarms/<source>/<vehicle>" + _SOURCE_NOTE)
    return AlarmsTopic(*got)


def parse_active_alarms(topic: str) -> ActiveAlarmsTopic:
    got = _parse_sourced(topic, ["alarms"], ["active"])
    if got is None:
        raise _bad("active alarm list", topic,
                   "alarms/<source>/<vehicle>/active" + _SOURCE_NOTE)
    return ActiveAlarmsTopic(*got)


def parse_ingest_link(topic: str) -> LinkTopic:
    got = _parse_sourced(topic, ["ingest", "link"], [])
    if got is None:
        raise _bad("link quality", topic, "ingest/link/<source>/<vehicle>" + _SOURCE_NOTE)
    return LinkTopic(*got)


def parse_ingest_stats(topic: str) -> IngestStatsTopic:
    if topic != INGEST_STATS:
        raise _bad("ingest stats", topic, INGEST_STATS)
    return IngestStatsTopic()


# --- operators: requests and replies ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckTopic:
    """ack/<operator>/<vehicle>: the operator level is whom the broker authenticated (its
    ACL lets a user publish only under their own name)."""

    operator: str
    vehicle: str

    def __post_init__(self) -> None:
        check_level("operator", self.operator)
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return f"ack/{self.operator}/{self.vehicle}"


@dataclass(frozen=True, slots=True)
class AlarmRepliesTopic:
    operator: str

    def __post_init__(self) -> None:
        check_level("operator", self.operator)

    def __str__(self) -> str:
        return f"alarms/replies/{self.operator}"


def acknowledgements(operator: str, vehicle: str) -> str:
    """An operator's requests about a vehicle's alarms (acknowledge, shelve, unshelve)."""
    return str(AckTopic(operator, vehicle))


def alarm_replies(operator: str) -> str:
    """The ingest's answers to an operator's requests."""
    return str(AlarmRepliesTopic(operator))


ACK_SUBSCRIPTION: Final = "ack/+/+"
ALARM_REPLIES_SUBSCRIPTION: Final = "alarms/replies/+"


def parse_acknowledgements(topic: str) -> AckTopic:
    parts = topic.split("/")
    if parts[0] == "ack" and _names(parts[1:], 2):
        return AckTopic(parts[1], parts[2])
    raise _bad("operator request", topic, "ack/<operator>/<vehicle>")


def parse_alarm_replies(topic: str) -> AlarmRepliesTopic:
    parts = topic.split("/")
    if parts[:2] == ["alarms", "replies"] and _names(parts[2:], 1):
        return AlarmRepliesTopic(parts[2])
    raise _bad("operator reply", topic, "alarms/replies/<operator>")


# --- replay sessions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplaySessionTopic:
    session: str

    def __post_init__(self) -> None:
        check_level("replay session", self.session)

    def __str__(self) -> str:
        return f"replay/session/{self.session}"


@dataclass(frozen=True, slots=True)
class ReplayControlTopic:
    session: str

    def __post_init__(self) -> None:
        check_level("replay session", self.session)

    def __str__(self) -> str:
        return f"replay/control/{self.session}"


@dataclass(frozen=True, slots=True)
class ReplayStatusTopic:
    session: str

    def __post_init__(self) -> None:
        check_level("replay session", self.session)

    def __str__(self) -> str:
        return f"replay/status/{self.session}"


def replay_session(session: str) -> str:
    """Retained: the session's definitions; empty = the session ended."""
    return str(ReplaySessionTopic(session))


def replay_control(session: str) -> str:
    return str(ReplayControlTopic(session))


def replay_status(session: str) -> str:
    """Retained: the replay tool's state and its answer to the last command."""
    return str(ReplayStatusTopic(session))


REPLAY_SESSION_SUBSCRIPTION: Final = "replay/session/+"
REPLAY_CONTROL_SUBSCRIPTION: Final = "replay/control/+"
REPLAY_STATUS_SUBSCRIPTION: Final = "replay/status/+"


def _one_name(topic: str, prefix: list[str]) -> str | None:
    parts = topic.split("/")
    n = len(prefix)
    return parts[n] if parts[:n] == prefix and _names(parts[n:], 1) else None


def parse_replay_session(topic: str) -> ReplaySessionTopic:
    name = _one_name(topic, ["replay", "session"])
    if name is None:
        raise _bad("replay session", topic, "replay/session/<session>")
    return ReplaySessionTopic(name)


def parse_replay_control(topic: str) -> ReplayControlTopic:
    name = _one_name(topic, ["replay", "control"])
    if name is None:
        raise _bad("replay control", topic, "replay/control/<session>")
    return ReplayControlTopic(name)


def parse_replay_status(topic: str) -> ReplayStatusTopic:
    name = _one_name(topic, ["replay", "status"])
    if name is None:
        raise _bad("replay status", topic, "replay/status/<session>")
    return ReplayStatusTopic(name)


# --- drills ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrillControlTopic:
    drill: str

    def __post_init__(self) -> None:
        check_level("drill", self.drill)

    def __str__(self) -> str:
        return f"drill/control/{self.drill}"


@dataclass(frozen=True, slots=True)
class DrillStatusTopic:
    drill: str

    def __post_init__(self) -> None:
        check_level("drill", self.drill)

    def __str__(self) -> str:
        return f"drill/status/{self.drill}"


def drill_control(drill: str) -> str:
    """The instructor's commands to a running drill."""
    return str(DrillControlTopic(drill))


def drill_status(drill: str) -> str:
    """Retained: a drill's state, for everyone (it names no pending fault)."""
    return str(DrillStatusTopic(drill))


DRILL_CONTROL_SUBSCRIPTION: Final = "drill/control/+"
DRILL_STATUS_SUBSCRIPTION: Final = "drill/status/+"


def parse_drill_control(topic: str) -> DrillControlTopic:
    name = _one_name(topic, ["drill", "control"])
    if name is None:
        raise _bad("drill control", topic, "drill/control/<drill>")
    return DrillControlTopic(name)


def parse_drill_status(topic: str) -> DrillStatusTopic:
    name = _one_name(topic, ["drill", "status"])
    if name is None:
        raise _bad("drill status", topic, "drill/status/<drill>")
    return DrillStatusTopic(name)


# --- calls: what a trainee says in a drill -------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrillCallTopic:
    """calls/<operator>/<drill>: a trainee's call (the console's call key). The operator
    level is whom the broker authenticated (its ACL lets a user publish only under their
    own name, as for ack/); the drill runner hears every operator's calls of its drill."""

    operator: str
    drill: str

    def __post_init__(self) -> None:
        check_level("operator", self.operator)
        check_level("drill", self.drill)

    def __str__(self) -> str:
        return f"calls/{self.operator}/{self.drill}"


def drill_calls(operator: str, drill: str) -> str:
    """An operator's calls in a drill."""
    return str(DrillCallTopic(operator, drill))


def drill_calls_subscription(drill: str) -> str:
    """Every operator's calls in one drill (the drill runner's)."""
    return f"calls/+/{check_level('drill', drill)}"


DRILL_CALLS_SUBSCRIPTION: Final = "calls/+/+"


def parse_drill_calls(topic: str) -> DrillCallTopic:
    parts = topic.split("/")
    if parts[0] == "calls" and _names(parts[1:], 2):
        return DrillCallTopic(parts[1], parts[2])
    raise _bad("drill call", topic, "calls/<operator>/<drill>")


# --- commands --------------------------------------------------------------------------------

# The command path (groundstation/commanding/): operators ask on cmd/request/<operator>/...
# (the broker's ACL binds the operator level to the authenticated user, as for ack/), the
# commanding service answers on cmd/replies/<operator>, stamps the command and sends it to the
# ship on cmd/uplink/<source>/<vehicle> (only the service may publish there), the ship (the
# simulator) answers on cmd/ack/<source>/<vehicle> (only that vehicle, or the instructor for a
# drill's ships), and every stage goes out on cmd/events/<source>/<vehicle>, the retained
# cmd/history/<source>/<vehicle> holding the recent commands for consoles that start later.

CMD: Final = "cmd"


@dataclass(frozen=True, slots=True)
class CommandRequestTopic:
    """cmd/request/<operator>/<vehicle>: the operator level is whom the broker
    authenticated (its ACL lets a user publish only under their own name)."""

    operator: str
    vehicle: str

    def __post_init__(self) -> None:
        check_level("operator", self.operator)
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return f"{CMD}/request/{self.operator}/{self.vehicle}"


@dataclass(frozen=True, slots=True)
class CommandRepliesTopic:
    operator: str

    def __post_init__(self) -> None:
        check_level("operator", self.operator)

    def __str__(self) -> str:
        return f"{CMD}/replies/{self.operator}"


@dataclass(frozen=True, slots=True)
class CommandUplinkTopic:
    """cmd/uplink/<source>/<vehicle>: stamped commands to a ship (the service only)."""

    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join((CMD, "uplink", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class CommandAckTopic:
    """cmd/ack/<source>/<vehicle>: the ship's receipt of a command (that vehicle only)."""

    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join((CMD, "ack", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class CommandEventsTopic:
    """cmd/events/<source>/<vehicle>: each stage of each command."""

    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join((CMD, "events", *self.source.levels, self.vehicle))


@dataclass(frozen=True, slots=True)
class CommandHistoryTopic:
    """cmd/history/<source>/<vehicle>: retained, the recent commands and their stages."""

    source: Source
    vehicle: str

    def __post_init__(self) -> None:
        check_level("vehicle", self.vehicle)

    def __str__(self) -> str:
        return "/".join((CMD, "history", *self.source.levels, self.vehicle))


def command_requests(operator: str, vehicle: str) -> str:
    """An operator's command requests for a vehicle."""
    return str(CommandRequestTopic(operator, vehicle))


def command_replies(operator: str) -> str:
    """The commanding service's answers to an operator's requests."""
    return str(CommandRepliesTopic(operator))


def command_uplink(vehicle: str, source: str | Source = LIVE) -> str:
    return str(CommandUplinkTopic(Source.parse(source), vehicle))


def command_acks(vehicle: str, source: str | Source = LIVE) -> str:
    return str(CommandAckTopic(Source.parse(source), vehicle))


def command_events(vehicle: str, source: str | Source = LIVE) -> str:
    return str(CommandEventsTopic(Source.parse(source), vehicle))


def command_history(vehicle: str, source: str | Source = LIVE) -> str:
    return str(CommandHistoryTopic(Source.parse(source), vehicle))


COMMAND_REQUEST_SUBSCRIPTION: Final = f"{CMD}/request/+/+"
COMMAND_ACK_SUBSCRIPTIONS: Final = _per_source(f"{CMD}/ack", "+")
COMMAND_EVENTS_SUBSCRIPTIONS: Final = _per_source(f"{CMD}/events", "+")
COMMAND_HISTORY_SUBSCRIPTIONS: Final = _per_source(f"{CMD}/history", "+")


def command_events_subscription(source: str | Source) -> str:
    """Every vehicle's command events from one source."""
    return "/".join((CMD, "events", *Source.parse(source).levels, "+"))


def command_history_subscription(source: str | Source) -> str:
    """Every vehicle's retained command history from one source."""
    return "/".join((CMD, "history", *Source.parse(source).levels, "+"))


def command_uplink_subscription(vehicle: str, source: str | Source = LIVE) -> str:
    """What a ship listens to: its own uplink (one topic, no wildcard)."""
    return command_uplink(vehicle, source)


def parse_command_requests(topic: str) -> CommandRequestTopic:
    parts = topic.split("/")
    if parts[:2] == [CMD, "request"] and _names(parts[2:], 2):
        return CommandRequestTopic(parts[2], parts[3])
    raise _bad("command request", topic, "cmd/request/<operator>/<vehicle>")


def parse_command_replies(topic: str) -> CommandRepliesTopic:
    name = _one_name(topic, [CMD, "replies"])
    if name is None:
        raise _bad("command reply", topic, "cmd/replies/<operator>")
    return CommandRepliesTopic(name)


def _parse_cmd_sourced(topic: str, kind: str) -> tuple[Source, str]:
    got = _parse_sourced(topic, [CMD, kind], [])
    if got is None:
        raise _bad(f"command {kind}", topic, f"cmd/{kind}/<source>/<vehicle>" + _SOURCE_NOTE)
    return got


def parse_command_uplink(topic: str) -> CommandUplinkTopic:
    return CommandUplinkTopic(*_parse_cmd_sourced(topic, "uplink"))


def parse_command_acks(topic: str) -> CommandAckTopic:
    return CommandAckTopic(*_parse_cmd_sourced(topic, "ack"))


def parse_command_events(topic: str) -> CommandEventsTopic:
    return CommandEventsTopic(*_parse_cmd_sourced(topic, "events"))


def parse_command_history(topic: str) -> CommandHistoryTopic:
    return CommandHistoryTopic(*_parse_cmd_sourced(topic, "history"))


# --- any topic ------------------------------------------------------------------------------

Topic = (TelemetryTopic | SimStateTopic | SimControlTopic | SimReplyTopic | ParamsTopic
         | AlarmsTopic | ActiveAlarmsTopic | LinkTopic | IngestStatsTopic | AckTopic
         | AlarmRepliesTopic | ReplaySessionTopic | ReplayControlTopic | ReplayStatusTopic
         | DrillControlTopic | DrillStatusTopic | DrillCallTopic | CommandRequestTopic
         | CommandRepliesTopic
         | CommandUplinkTopic | CommandAckTopic | CommandEventsTopic | CommandHistoryTopic
         | InstanceTopic | ContextTopic)


def parse(topic: str) -> Topic:
    """Any topic of the layout as its typed value (match on the type); ValueError for a
    topic that is none of them."""
    first, _, rest = topic.partition("/")
    second = rest.partition("/")[0]
    if first == "telemetry":
        return parse_telemetry(topic)
    if first == "params":
        return parse_parameters(topic)
    if first == "ack":
        return parse_acknowledgements(topic)
    if first == "calls":
        return parse_drill_calls(topic)
    if first == "alarms":
        if second == "replies":
            return parse_alarm_replies(topic)
        if topic.endswith("/active"):
            # alarms/live/active is live alarm events of a vehicle named "active"; the
            # level count tells it from an active list.
            try:
                return parse_active_alarms(topic)
            except ValueError:
                pass
        return parse_alarms(topic)
    parsers: dict[tuple[str, str], Callable[[str], Topic]] = {
        ("sim", "state"): parse_sim_state, ("sim", "control"): parse_sim_control,
        ("sim", "reply"): parse_sim_reply, ("ingest", "link"): parse_ingest_link,
        ("ingest", "stats"): parse_ingest_stats,
        ("ingest", "instances"): parse_ingest_instance,
        ("ingest", "context"): parse_ingest_context,
        ("replay", "session"): parse_replay_session,
        ("replay", "control"): parse_replay_control,
        ("replay", "status"): parse_replay_status,
        ("drill", "control"): parse_drill_control, ("drill", "status"): parse_drill_status,
        (CMD, "request"): parse_command_requests, (CMD, "replies"): parse_command_replies,
        (CMD, "uplink"): parse_command_uplink, (CMD, "ack"): parse_command_acks,
        (CMD, "events"): parse_command_events, (CMD, "history"): parse_command_history,
    }
    parser = parsers.get((first, second))
    if parser is None:
        raise ValueError(f"not a groundstation topic: {topic!r}")
    return parser(topic)
