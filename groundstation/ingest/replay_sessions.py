"""Replay sessions as the ingest sees them: each session's own definitions (by default those
in force when its frames were recorded; groundstation/core/replay_session.py parses them)
and its end. The protocol: groundstation/replay/session.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.replay_session import SessionInfo, parse_session_message
from groundstation.ingest.stream import Stream

if TYPE_CHECKING:
    from groundstation.ingest.service import IngestService

log = logging.getLogger("groundstation.ingest")


@dataclass(frozen=True, slots=True)
class Change:
    source: str  # the session's source, replay/<session>
    ended: bool  # the session ended: its streams and context are to be freed


class ReplaySessions:
    def __init__(self, definitions: dict[str, VehicleDefinition]) -> None:
        self.definitions = definitions  # the ones the ingest runs with
        self.sessions: dict[str, SessionInfo] = {}  # by source
        # A clustered ingest hears an announcement twice (its partition's queue, and the
        # retained one over MQTT): the same again changes nothing.
        self._heard: dict[str, bytes] = {}

    def definition(self, source: str, vehicle: str, stream: str | None = None
                   ) -> VehicleDefinition | None:
        """A replay session's own definition of a vehicle, else the ingest's; with a
        stream, that stream's (None: the vehicle has no such stream). A session announces
        one definition per vehicle: the vehicle's other formats (Apollo's low bit rate) are
        decoded with the ingest's own definitions of them."""
        session = self.sessions.get(source)
        if session is not None and vehicle in session.definitions:
            d = session.definitions[vehicle]
            if stream is None or d.stream == stream:
                return d
        main = self.definitions.get(vehicle)
        if main is None or stream is None:
            return main
        return main.stream_definition(stream)

    def main_definition(self, source: str, vehicle: str) -> VehicleDefinition | None:
        """The definition a vehicle's alarms are judged with, whatever format its frames
        come in: the session's own, else the ingest's main one."""
        session = self.sessions.get(source)
        if session is not None and vehicle in session.definitions:
            d = session.definitions[vehicle]
            if d.subset_of is None:
                return d
        return self.definitions.get(vehicle)

    def on_message(self, topic: str, payload: bytes) -> Change:
        """A `replay/session/<session>` message: the session opens (or announces new
        definitions) or ends. Raises ValueError for a message that cannot be used."""
        source = topics.replay(topics.parse_replay_session(topic).session)
        if payload and self._heard.get(topic) == payload and source in self.sessions:
            return Change(source, ended=False)
        info = parse_session_message(topic, payload, self.definitions)
        self._heard[topic] = payload
        if info is None:  # the session ended (or its replay tool died: its MQTT will)
            self.sessions.pop(source, None)
            self._heard.pop(topic, None)
            return Change(source, ended=True)
        self.sessions[source] = info
        return Change(source, ended=False)

    def streams_ended(self, change: Change, streams: Mapping[tuple[str, str, str], Stream]
                      ) -> list[tuple[str, str, str]]:
        """The streams a session's change ends: all of an ended session's; of a running
        one, those whose definitions changed (they start anew with the new ones)."""
        return [key for key, s in streams.items() if s.source == change.source and (
            change.ended
            or self.definition(change.source, s.vehicle, s.definition.stream)
            is not s.definition
            or self.main_definition(change.source, s.vehicle) is not s.alarms.definition)]


def on_message(service: IngestService, topic: str, payload: bytes) -> None:
    """A replay session's message reaching the ingest: the streams it ends are freed (their
    queued frames processed first, in the session's context: its definitions, phase and
    context values), and an ended session's retained outputs and context cleared."""
    try:
        change = service.replays.on_message(topic, payload)
    except ValueError as exc:
        service.rejected["bad_replay_session"] += 1
        log.error("refused the replay session message on %s (its frames get the current "
                  "definitions): %s", topic, exc)
        return
    source = change.source
    for key in service.replays.streams_ended(change, service.streams):
        service.drop_stream(key)
        if change.ended:
            service.outbox.clear_retained(topics.active_alarms(key[1], source))
            service.outbox.clear_retained(topics.ingest_link(key[1], source))
    if change.ended:
        service.contexts.drop_source(source)
