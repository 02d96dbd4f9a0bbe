"""A vehicle whose downlink has several formats (Apollo's high and low bit rate: one stream
each): its streams share one alarm state, and a switch of format is not a loss of frames."""

from __future__ import annotations

from collections.abc import Iterable

from groundstation.core.alarms import AlarmEngine
from groundstation.core.definitions import VehicleDefinition
from groundstation.ingest.stream import Stream


def shared_engine(streams: Iterable[Stream], source: str, defn: VehicleDefinition,
                  main: VehicleDefinition | None) -> AlarmEngine:
    """The alarm engine for a new stream of (source, vehicle): the one its other streams
    already use, else a new one judged with the vehicle's main definition."""
    for s in streams:
        if s.source == source and s.vehicle == defn.vehicle:
            return s.alarms
    return AlarmEngine(main or defn, source)


def switched(streams: Iterable[Stream], s: Stream, first_ns: int) -> None:
    """Live frames of `s` newer than the last of the vehicle's other streams: the downlink
    changed format, and the frames those streams miss meanwhile are not lost."""
    for o in streams:
        if (o is not s and o.source == s.source and o.vehicle == s.vehicle
                and o.decoder.last_good_time_ns is not None
                and o.decoder.last_good_time_ns < first_ns):
            o.decoder.switched_away()


def share_restored(restored: list[Stream], running: Iterable[Stream]) -> None:
    """Streams restored at start-up share their vehicle's alarm state: the one already
    running, else the newest saved (by event sequence)."""
    running = list(running)
    newest: dict[tuple[str, str], AlarmEngine] = {}
    for s in restored:
        key = (s.source, s.vehicle)
        have = newest.get(key)
        if have is None or s.alarms.snapshot()["seq"] > have.snapshot()["seq"]:
            newest[key] = s.alarms
    for s in restored:
        s.alarms = next((o.alarms for o in running
                         if o.source == s.source and o.vehicle == s.vehicle),
                        newest[(s.source, s.vehicle)])
