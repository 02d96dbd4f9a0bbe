"""Replay sessions as the ingest sees them: each session's own definitions (by default those
in force when its frames were recorded; groundstation/core/replay_session.py parses them)
and its end. The protocol: groundstation/replay/session.py."""

from __future__ import annotations

from dataclasses import dataclass

from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.replay_session import SessionInfo, parse_session_message


@dataclass(frozen=True, slots=True)
class Change:
    source: str  # the session's source, replay/<session>
    ended: bool  # the session ended: its streams and context are to be freed


class ReplaySessions:
    def __init__(self, definitions: dict[str, VehicleDefinition]) -> None:
        self.definitions = definitions  # the ones the ingest runs with
        self.sessions: dict[str, SessionInfo] = {}  # by source

    def definition(self, source: str, vehicle: str) -> VehicleDefinition | None:
        """A replay session's own definition of a vehicle, else the ingest's."""
        session = self.sessions.get(source)
        if session is not None and vehicle in session.definitions:
            return session.definitions[vehicle]
        return self.definitions.get(vehicle)

    def on_message(self, topic: str, payload: bytes) -> Change:
        """A `replay/session/<session>` message: the session opens (or announces new
        definitions) or ends. Raises ValueError for a message that cannot be used."""
        info = parse_session_message(topic, payload, self.definitions)
        source = topics.replay(topics.parse_replay_session(topic).session)
        if info is None:  # the session ended (or its replay tool died: its MQTT will)
            self.sessions.pop(source, None)
            return Change(source, ended=True)
        self.sessions[source] = info
        return Change(source, ended=False)
