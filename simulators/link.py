"""The downlink: what of a ship's frames reaches the ground, and in which messages.

Frames go down live only while a ground station (or, for Apollo docked, the ATS-6 relay)
hears the ship. Apollo records what it cannot send (its data storage equipment) and plays
the recording back after the next acquisition of signal, faster than real time, alongside
the live stream: the ground receives a burst of older frames with their original sequence
numbers and times. Soyuz's frames out of coverage are lost. Link faults act here: bit
errors flip bits, frame loss drops frames, a loss-of-signal fault stops the live stream
(Apollo records meanwhile).

A ship whose PCM changes format (Apollo's high and low bit rate, each its own stream and
definition) sends each block of frames on its format's topic; one recorder (one tape)
records both, each at its own tape speed, and dumps each at the tape's one playback speed:
32x an LBR recording, 8x an HBR one (simulators/recorder.py).

Frames are batched into envelopes of consecutive frames (a lost frame, an LOS or a change
of format ends a message early). Playback messages carry an extra key, "playback": true, which the
envelope decoder ignores; it lets the ingest tell a dump from live data.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import msgpack
import numpy as np
from numpy.typing import NDArray

from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition
from groundstation.core.envelope import MAX_FRAMES, VERSION
from simulators.faults import Fault, FaultManager
from simulators.recorder import HBR_DUMP_RATE, RECORD_IPS
from simulators.telemetry import VEHICLE_IDS, FrameBlock

LINK_DRAWS = 12  # uniforms per frame: loss, error count, 8 bit positions, 2 spare
MAX_BIT_ERRORS = 8


@dataclass
class Message:
    topic: str
    payload: bytes
    frames: int
    kind: str  # live | playback
    seq: int
    t_ns: int


def pack(vehicle: str, stream: str, seq: int, t_ns: int, frames: NDArray[np.uint8],
         playback: bool = False) -> bytes:
    """The wire envelope (groundstation.envelope's format), with the playback flag."""
    msg = {"v": VERSION, "vehicle": vehicle, "stream": stream, "seq": int(seq),
           "t": int(t_ns), "frames": [row.tobytes() for row in frames]}
    if playback:
        msg["playback"] = True
    return msgpack.packb(msg, use_bin_type=True)


@dataclass
class _Run:
    """Consecutive frames waiting to be sent or played back."""

    seq: int
    t_ns: int
    frames: NDArray[np.uint8]
    stream: str = ""


@dataclass
class LinkStats:
    live_frames: int = 0
    playback_frames: int = 0
    messages: int = 0
    recorded_frames: int = 0
    recorder_overwritten: int = 0
    lost_out_of_coverage: int = 0
    lost_link: int = 0
    corrupted_frames: int = 0
    recorder: dict[str, int] = field(default_factory=dict)


class Transmitter:
    """One ship's downlink: live batching, link faults, and (Apollo) the recorder."""

    def __init__(self, definition: VehicleDefinition, faults: FaultManager, seed: int, *,
                 frames_per_message: int = 5, playback_frames_per_message: int | None = None,
                 recorder_frames: int = 0, playback_rate: float = HBR_DUMP_RATE,
                 source: str = topics.LIVE):
        self.definition = definition
        self.vehicle = definition.vehicle
        self.stream = definition.stream
        # A drill's ships go down under the drill's source, never as live.
        self.source = topics.check_source(source)
        # Every format of the ship's downlink (FrameBlock.stream says which a block is in).
        self.formats = definition.streams
        self.topics = {st: topics.telemetry(self.vehicle, st, source=self.source)
                       for st in self.formats}
        self.topic = self.topics[self.stream]
        self.periods = {st: round(1e9 / d.frame.rate_hz) for st, d in self.formats.items()}
        self.period_ns = self.periods[self.stream]
        # Tape a recorded frame takes, in frames of the main format (the recorder's unit):
        # an LBR frame (3.75 in/s at 5 frames/s) takes 2.5 HBR frames' tape (15 in/s at 50).
        main_ips = RECORD_IPS.get(self.stream, 1.0) / definition.frame.rate_hz
        self.tape = {st: (RECORD_IPS.get(st, 1.0) / d.frame.rate_hz) / main_ips
                     for st, d in self.formats.items()}
        self.main_rate = definition.frame.rate_hz
        self.faults = faults
        self.fpm = max(1, min(int(frames_per_message), MAX_FRAMES))
        self.pb_fpm = max(1, min(int(playback_frames_per_message or max(self.fpm, 250)),
                                 MAX_FRAMES))
        self.recorder_cap = recorder_frames
        self.playback_rate = playback_rate
        self.recorder: deque[_Run] = deque()
        self.recorded = 0  # frames on the recorder
        self.tape_used = 0.0  # ... and the tape they take, in frames of the main format
        self._pending: _Run | None = None
        self._pb_credit = 0.0
        self._link_key = (seed * 1_000_003 + VEHICLE_IDS.get(self.vehicle, 9) * 1009 + 6) % 2**64
        self.stats = LinkStats()

    # --- frames in, messages out ---------------------------------------------------------

    def feed(self, block: FrameBlock) -> list[Message]:
        out: list[Message] = []
        stream = block.stream or self.stream
        if self._pending is not None and self._pending.stream != stream:
            out += self.flush()  # the PCM changed format
        faults = [f for f in self.faults.faults if f.vehicle == self.vehicle
                  and f.start <= block.get[-1] and (f.end is None or f.end > block.get[0])]
        los = self._level(faults, "los", block.get) > 0
        live = block.aos & ~los
        frames = block.frames
        # Frames that cannot go down: recorded (Apollo) or lost.
        quiet = ~live
        if quiet.any():
            if self.recorder_cap > 0:
                for a, b in _runs(quiet):
                    self._record(_Run(block.k0 + a, int(block.times_ns[a]), frames[a:b].copy(),
                                      stream))
            else:
                self.stats.lost_out_of_coverage += int(quiet.sum())
        if not live.any():
            out += self.flush()
            return out
        sent_live = 0  # live frames after the block's last unheard one: the dump's credit
        for a, b in _runs(live):
            if a > 0:
                out += self.flush()  # an LOS boundary ends the message being filled
            chunk = frames[a:b].copy()
            keep = self._link_effects(chunk, block.k0 + a, block.get[a:b], faults)
            for c, d in _runs(keep):
                if c > 0:
                    out += self.flush()
                out += self._add_live(_Run(block.k0 + a + c, int(block.times_ns[a + c]),
                                           chunk[c:d], stream))
                sent_live += d - c
            if b < live.size:
                out += self.flush()
                sent_live = 0  # heard before an LOS: no credit for dumping what follows
        if self.recorder and sent_live:
            # The dump's credit, in main-format frames: the live time times the dump rate.
            out += self._playback(sent_live * self.main_rate
                                  / self.formats[stream].frame.rate_hz)
        return out

    def flush(self) -> list[Message]:
        """Send the partly filled live message now."""
        if self._pending is None:
            return []
        run, self._pending = self._pending, None
        return [self._message(run, playback=False)]

    # --- internals -----------------------------------------------------------------------

    def _add_live(self, run: _Run) -> list[Message]:
        out = []
        run.stream = run.stream or self.stream
        p = self._pending
        if p is not None and p.stream == run.stream and p.seq + len(p.frames) == run.seq:
            run = _Run(p.seq, p.t_ns, np.concatenate([p.frames, run.frames]), run.stream)
        elif p is not None:
            out += self.flush()
        self._pending = None
        period = self.periods[run.stream]
        while len(run.frames) >= self.fpm:
            head = _Run(run.seq, run.t_ns, run.frames[:self.fpm], run.stream)
            out.append(self._message(head, playback=False))
            run = _Run(run.seq + self.fpm, run.t_ns + self.fpm * period,
                       run.frames[self.fpm:], run.stream)
        if len(run.frames):
            self._pending = run
        return out

    def _message(self, run: _Run, playback: bool) -> Message:
        n = len(run.frames)
        self.stats.messages += 1
        if playback:
            self.stats.playback_frames += n
        else:
            self.stats.live_frames += n
        return Message(self.topics[run.stream], pack(self.vehicle, run.stream, run.seq,
                                                     run.t_ns, run.frames, playback), n,
                       "playback" if playback else "live", run.seq, run.t_ns)

    def _record(self, run: _Run) -> None:
        run.stream = run.stream or self.stream
        last = self.recorder[-1] if self.recorder else None
        if last is not None and last.stream == run.stream and \
                last.seq + len(last.frames) == run.seq:
            self.recorder[-1] = _Run(last.seq, last.t_ns,
                                     np.concatenate([last.frames, run.frames]), run.stream)
        else:
            self.recorder.append(run)
        self.recorded += len(run.frames)
        self.tape_used += len(run.frames) * self.tape[run.stream]
        self.stats.recorded_frames += len(run.frames)
        while self.tape_used > self.recorder_cap + 1e-9 and self.recorder:
            # A full recorder keeps the newest data (the oldest is written over).
            first = self.recorder[0]
            cost = self.tape[first.stream]
            drop = min(math.ceil((self.tape_used - self.recorder_cap) / cost - 1e-9),
                       len(first.frames))
            self.stats.recorder_overwritten += drop
            self._take(drop)

    def _take(self, n: int) -> None:
        """The first n frames of the recording are gone (dumped or written over)."""
        first = self.recorder[0]
        self.recorded -= n
        self.tape_used -= n * self.tape[first.stream]
        if n == len(first.frames):
            self.recorder.popleft()
        else:
            self.recorder[0] = _Run(first.seq + n,
                                    first.t_ns + n * self.periods[first.stream],
                                    first.frames[n:], first.stream)
        if not self.recorder:
            self.tape_used = 0.0

    def _playback(self, live_frames: float) -> list[Message]:
        """Dump up to playback_rate frames' tape of the recording per live frame sent (in
        frames of the main format): the tape runs at one speed, so an LBR recording comes
        down at 4x as many of its frames' worth of time as an HBR one (32x against 8x)."""
        self._pb_credit += live_frames * self.playback_rate
        out = []
        while self.recorder:
            first = self.recorder[0]
            cost = self.tape[first.stream]
            n = int(min(self._pb_credit / cost + 1e-9, self.pb_fpm, len(first.frames)))
            if n < 1:
                break
            run = _Run(first.seq, first.t_ns, first.frames[:n], first.stream)
            out.append(self._message(run, playback=True))
            self._pb_credit -= n * cost
            self._take(n)
        if not self.recorder:
            self._pb_credit = 0.0
        return out

    @staticmethod
    def _level(faults: list[Fault], name: str, get: NDArray[np.float64]) -> NDArray[np.float64]:
        level = np.zeros(get.size)
        for f in faults:
            if f.name != name:
                continue
            on = (get >= f.start) & ((get < f.end) if f.end is not None else True)
            ramp = np.clip((get - f.start) / f.ramp_s, 0, 1) if f.ramp_s > 0 else 1.0
            level = np.maximum(level, np.where(on, ramp, 0.0))
        return level

    def _link_effects(self, frames: NDArray[np.uint8], k0: int, get: NDArray[np.float64],
                      faults: list[Fault]) -> NDArray[np.bool_]:
        """Bit errors and lost frames, in place; returns which frames survive."""
        keep = np.ones(len(frames), dtype=bool)
        ber = np.zeros(get.size)
        loss = np.zeros(get.size)
        for f in faults:
            if f.name == "bit_errors":
                ber = np.maximum(ber, self._level([f], "bit_errors", get) * f.params["ber"])
            elif f.name == "frame_loss":
                loss = np.maximum(loss, self._level([f], "frame_loss", get)
                                  * f.params["probability"])
        if not ber.any() and not loss.any():
            return keep
        bg = np.random.Philox(key=self._link_key)
        bg.advance(k0 * LINK_DRAWS // 4)
        u = np.random.Generator(bg).random((len(frames), LINK_DRAWS))
        keep = u[:, 0] >= loss
        self.stats.lost_link += int((~keep).sum())
        if ber.any():
            bits = frames.shape[1] * 8
            lam = ber * bits
            # Number of errors in each frame by inverting the Poisson CDF with one uniform.
            cdf = np.zeros(get.size)
            count = np.zeros(get.size, dtype=np.int64)
            term = np.exp(-lam)
            for k in range(MAX_BIT_ERRORS + 1):
                cdf = cdf + term
                count += (u[:, 1] > cdf).astype(np.int64)
                term = term * lam / (k + 1)
            count = np.minimum(count, MAX_BIT_ERRORS)
            hit = np.flatnonzero(count)
            self.stats.corrupted_frames += int(hit.size)
            for r in hit:
                pos = (u[r, 2:2 + count[r]] * bits).astype(np.int64)
                for b in pos:
                    frames[r, b // 8] ^= np.uint8(1 << (7 - b % 8))
        return keep


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not mask.any():
        return []
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))


def auto_frames_per_message(rate_hz: float, speed: float) -> int:
    """About ten messages a second per ship, never fewer than 5 frames a message."""
    return int(min(MAX_FRAMES, max(5, math.ceil(rate_hz * speed / 10.0))))
