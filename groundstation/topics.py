"""MQTT topic layout. Each kind of traffic has its own subtree so that a broker ACL can say
who may publish what, and so that replayed data can never be mistaken for live data."""

from __future__ import annotations

from dataclasses import dataclass

LIVE = "live"


@dataclass(frozen=True)
class TelemetryTopic:
    source: str  # "live", or "replay/<session>"
    vehicle: str
    stream: str


def telemetry(vehicle: str, stream: str, session: str | None = None) -> str:
    """Raw frames: telemetry/live/<vehicle>/<stream> or telemetry/replay/<session>/..."""
    if session is None:
        return f"telemetry/live/{vehicle}/{stream}"
    return f"telemetry/replay/{session}/{vehicle}/{stream}"


TELEMETRY_SUBSCRIPTIONS = ("telemetry/live/+/+", "telemetry/replay/+/+/+")


def parse_telemetry(topic: str) -> TelemetryTopic:
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["telemetry", "live"]:
        return TelemetryTopic(LIVE, parts[2], parts[3])
    if len(parts) == 5 and parts[:2] == ["telemetry", "replay"]:
        return TelemetryTopic(f"replay/{parts[2]}", parts[3], parts[4])
    raise ValueError(f"not a telemetry topic: {topic!r} (expected telemetry/live/<vehicle>/"
                     "<stream> or telemetry/replay/<session>/<vehicle>/<stream>)")


def parameters(vehicle: str, source: str = LIVE) -> str:
    return f"params/{source}/{vehicle}"


def alarms(vehicle: str, source: str = LIVE) -> str:
    return f"alarms/{source}/{vehicle}"


def acknowledgements(user: str, vehicle: str) -> str:
    return f"ack/{user}/{vehicle}"


def sim_control(vehicle: str) -> str:
    return f"sim/control/{vehicle}"
