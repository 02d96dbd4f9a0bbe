"""What the ingest's parts share: a stream's state, a received message, a quarantined
one, and the interfaces of the sink and the archive the service is wired to."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from groundstation.core import topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.envelope import Envelope
from groundstation.storage.influx.lineprotocol import EncodedLines


class Sink(Protocol):
    """Where line protocol goes: lines, or many already joined and encoded
    (`EncodedLines`, a batch of frames). submit() may wait (backpressure) and returns an
    awaitable that completes once the lines are durable (in the database, or spooled to
    disk)."""

    async def submit(self, lines: Sequence[str | EncodedLines]) -> Awaitable[Any]: ...


class ArchiveLike(Protocol):
    def append(self, seq: int, t_ns: int, frames: np.ndarray, received_ns: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


ArchiveFactory = Callable[[VehicleDefinition, str], ArchiveLike]


@dataclass
class Quarantined:
    topic: str
    reason: str
    detail: str
    payload: bytes
    received_ns: int


@dataclass
class Held:
    """A message held unacknowledged until what it brought is durable."""

    mid: int
    qos: int
    generation: int  # of the connection it came on


@dataclass
class Received(Held):
    env: Envelope
    received_ns: int


@dataclass(slots=True)
class Checkpoint:
    """A stream's alarm state after a batch, waiting for the batch's messages to be
    acknowledged (see groundstation/ingest/alarm_state.py)."""

    snapshot: dict[str, Any]
    changed: bool  # the batch had alarm events (or an operator acted)
    position: dict[str, Any]  # the decoder's, after the batch
    done: bool = False


@dataclass
class Stream:
    source: str
    definition: VehicleDefinition
    decoder: StreamDecoder
    alarms: AlarmEngine
    archive: ArchiveLike | None
    pending: list[Received] = field(default_factory=list)
    pending_frames: int = 0
    oldest: float = 0.0  # monotonic time the oldest pending message arrived
    latest: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    latest_dirty: bool = False
    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=512))
    # (receive time, receive time - frame time), increasing offsets: the sliding minimum
    # that models the ship's own clock (see outputs.note_latency)
    latency_base: deque[tuple[int, int]] = field(default_factory=deque)
    last_frame_ns: int = 0
    last_data_mono: float = 0.0  # when the last good frame arrived (monotonic)
    last_data_wall_ns: int = 0  # ... and on the wall clock (saved with the alarm state)
    persist: bool = False  # its alarm state is saved across restarts (live and training)
    archive_pending: bool = False  # restored at start-up: its archive opens with its data
    # Alarm snapshots after each batch, waiting for the batch's messages to be
    # acknowledged; `saveable` is the newest one all of whose batches are.
    checkpoints: deque[Checkpoint] = field(default_factory=deque)
    saveable: dict[str, Any] | None = None
    saveable_position: dict[str, Any] | None = None  # the decoder's, with `saveable`

    @property
    def vehicle(self) -> str:
        return self.definition.vehicle


def persists(source: str) -> bool:
    """Live and training streams keep their alarm state across restarts; a replay
    session's ends with the session (its source disappears with it)."""
    return topics.Source.parse(source).kind is not topics.SourceKind.REPLAY
