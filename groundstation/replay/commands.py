"""A replay's command history: the commands sent while the replayed span was recorded,
republished on the replay session's topics as the replay reaches each one.

The commanding service keeps every stage of every command beside the raw archive
(groundstation/storage/command_log.py), each stamped with the data time it belongs to. A
replay reads the events of its ships whose data time lies in its span and publishes each,
re-tagged with the session's source, on cmd/events/replay/<session>/<vehicle> when the
replayed frames reach its data time, keeping cmd/history/replay/<session>/<vehicle>
(retained) up to date. A console watching the session sees the commands appear in the
command panel as they did live. A seek publishes the history as it stood at the new
position; the end of the session clears the retained histories. Nothing is ever sent to a
ship: a replay cannot be commanded (the commanding service refuses it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

from groundstation.core import messages, topics
from groundstation.core.topics import Source
from groundstation.storage.command_log import read_span

Outgoing = tuple[str, bytes, bool]  # topic, payload, retain


class CommandReplay:
    def __init__(self, root: str | Path, source: str, vehicles: set[str], start_ns: int,
                 end_ns: int, session_source: str):
        self.session = Source.parse(session_source)
        self.events = read_span(root, source, vehicles=vehicles, start_ns=start_ns,
                                end_ns=end_ns)
        self.next = 0
        self.history: dict[str, OrderedDict[str, messages.CommandEvent]] = {}
        self.stages: dict[str, dict[str, dict[str, int]]] = {}
        self.published = 0

    def _as_session(self, ev: messages.CommandEvent) -> messages.CommandEvent:
        return ev.model_copy(update={"source": self.session})

    def _file(self, ev: messages.CommandEvent) -> None:
        h = self.history.setdefault(ev.vehicle, OrderedDict())
        h[ev.command_id] = ev
        h.move_to_end(ev.command_id)
        self.stages.setdefault(ev.vehicle, {}).setdefault(ev.command_id, {})[ev.stage] = \
            ev.time_ns

    def _history(self, vehicle: str) -> Outgoing:
        msg = messages.CommandHistory(
            vehicle=vehicle, source=self.session, time_ns=time.time_ns(),
            commands=list(reversed(self.history.get(vehicle, {}).values())),
            stages=dict(self.stages.get(vehicle, {})))
        return topics.command_history(vehicle, self.session), msg.to_json(), True

    def due(self, position_ns: int) -> list[Outgoing]:
        """The events the replay has reached (data time at or before position_ns)."""
        out: list[Outgoing] = []
        touched: set[str] = set()
        while self.next < len(self.events) and \
                (self.events[self.next].data_time_ns or 0) <= position_ns:
            ev = self._as_session(self.events[self.next])
            self.next += 1
            self._file(ev)
            touched.add(ev.vehicle)
            out.append((topics.command_events(ev.vehicle, self.session), ev.to_json(), False))
        out += [self._history(v) for v in sorted(touched)]
        self.published += len(out)
        return out

    def seek(self, position_ns: int) -> list[Outgoing]:
        """After a seek: the history as it stood at the new position (no events)."""
        vehicles = set(self.history)
        self.history.clear()
        self.stages.clear()
        self.next = 0
        while self.next < len(self.events) and \
                (self.events[self.next].data_time_ns or 0) <= position_ns:
            self._file(self._as_session(self.events[self.next]))
            self.next += 1
        return [self._history(v) for v in sorted(vehicles | set(self.history))]

    def end(self) -> list[Outgoing]:
        """The session is over: its retained histories cleared."""
        return [(topics.command_history(v, self.session), b"", True)
                for v in sorted(self.history)]
