"""MQTT topic layout. Each kind of traffic has its own subtree so that a broker ACL can say
who may publish what, and so that replayed and training data can never be mistaken for live
data.

A source is "live", "replay/<session>" (a recorded pass played back) or
"training/<drill>" (a drill's simulated ships): it is the `source` tag in InfluxDB, a level
of every topic below and a directory of the archive."""

from __future__ import annotations

from dataclasses import dataclass

LIVE = "live"
REPLAY = "replay"
TRAINING = "training"


@dataclass(frozen=True)
class TelemetryTopic:
    source: str  # "live", or "replay/<session>"
    vehicle: str
    stream: str


def telemetry(vehicle: str, stream: str, session: str | None = None, *,
              source: str | None = None) -> str:
    """Raw frames: telemetry/<source>/<vehicle>/<stream>, e.g. telemetry/live/apollo_csm/hbr,
    telemetry/replay/<session>/..., telemetry/training/<drill>/...; `session` is the
    older spelling of source=replay/<session>."""
    if source is None:
        source = LIVE if session is None else f"{REPLAY}/{session}"
    check_source(source)
    return f"telemetry/{source}/{vehicle}/{stream}"


TELEMETRY_SUBSCRIPTIONS = ("telemetry/live/+/+", "telemetry/replay/+/+/+",
                           "telemetry/training/+/+/+")


def parse_telemetry(topic: str) -> TelemetryTopic:
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["telemetry", LIVE]:
        return TelemetryTopic(LIVE, parts[2], parts[3])
    if len(parts) == 5 and parts[0] == "telemetry" and parts[1] in (REPLAY, TRAINING) \
            and parts[2]:
        return TelemetryTopic(f"{parts[1]}/{parts[2]}", parts[3], parts[4])
    raise ValueError(f"not a telemetry topic: {topic!r} (expected telemetry/live/<vehicle>/"
                     "<stream>, telemetry/replay/<session>/<vehicle>/<stream> or "
                     "telemetry/training/<drill>/<vehicle>/<stream>)")


def check_source(source: str) -> str:
    """Returns the source if it is live, replay/<name> or training/<name>; else ValueError."""
    kind, _, name = source.partition("/")
    if source == LIVE or (kind in (REPLAY, TRAINING) and name and "/" not in name
                          and not set(name) & set("+#")):
        return source
    raise ValueError(f"source {source!r} must be 'live', 'replay/<session>' or "
                     "'training/<drill>' (one topic level, no + or #)")


def training(drill: str) -> str:
    """The source of a drill's data: training/<drill>."""
    return check_source(f"{TRAINING}/{drill}")


def sim_state(vehicle: str, source: str = LIVE) -> str:
    """The retained mission state (phase, GET, ...): sim/state/<vehicle> for the live ships,
    sim/state/training/<drill>/<vehicle> for a drill's, sim/state/replay/<session>/<vehicle>
    for a replay (the phase of the recording's time, from the replay tool)."""
    if source == LIVE:
        return f"sim/state/{vehicle}"
    return f"sim/state/{check_source(source)}/{vehicle}"


SIM_STATE_SUBSCRIPTIONS = ("sim/state/+", "sim/state/training/+/+", "sim/state/replay/+/+")


def parse_sim_state(topic: str) -> tuple[str, str]:
    """sim/state/... -> (source, vehicle)."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[:2] == ["sim", "state"]:
        return LIVE, parts[2]
    if len(parts) == 5 and parts[:2] == ["sim", "state"] and parts[2] in (TRAINING, REPLAY):
        return f"{parts[2]}/{parts[3]}", parts[4]
    raise ValueError(f"not a simulator state topic: {topic!r}")


def parameters(vehicle: str, source: str = LIVE) -> str:
    return f"params/{source}/{vehicle}"


def alarms(vehicle: str, source: str = LIVE) -> str:
    return f"alarms/{source}/{vehicle}"


def acknowledgements(user: str, vehicle: str) -> str:
    return f"ack/{user}/{vehicle}"


def sim_control(vehicle: str) -> str:
    return f"sim/control/{vehicle}"
