"""Alarms: instantaneous limit states in, alarm events a flight controller can trust out.

One `AlarmEngine` per (source, vehicle) consumes decoded batches in time order. The
decommutator has already said, for every sample, whether it is out of limits (yellow or
red, low or high, under the active limit context). The engine turns that into alarms:

* **Persistence.** A violation becomes an alarm only after `persistence` consecutive
  out-of-limit samples, or once it has been out of limits for `persistence_s` seconds
  (its first out-of-limit sample is at least that much older than the current one). Each
  level persists on its own: a yellow alarm escalates to red only after red itself has
  persisted, so one noisy sample cannot turn an alarm red. Streaks carry across batches.
* **Deadband.** An alarm clears only once the value is back inside the limit by the
  deadband (red high 950, deadband 5: clears at 945 or below). A discrete clears when it
  leaves the bad state. Clearing needs no persistence: a good value is good news at once.
* **Latching** (Apollo's master alarm; ISA-18.2's states). An alarm stays listed until it
  is both acknowledged and back to normal; the condition itself (the status light) is not
  latched and is always shown as it is now.

  state before        event (cause)                         state after
  ------------------  ------------------------------------  ------------------
  normal (none)       raised (violation persisted)          active_unacked
  active_unacked      acknowledged (operator)               active_acked
  active_*            escalated (yellow to red persisted)   active_unacked
  active_*            raised (the other side persisted)     active_unacked
  active_*            deescalated (red cleared, yellow not) unchanged
  active_unacked      returned_to_normal (deadband cleared) normal_unacked
  active_acked        returned_to_normal                    normal (removed)
  normal_unacked      acknowledged (operator)               normal (removed)
  normal_unacked      raised (violation again)              active_unacked
  any                 shelved (operator)                    shelved
  shelved             unshelved (operator, or expiry)       active_unacked if the
                                                            condition is active,
                                                            else normal (removed)

  An acknowledgement covers what the operator saw: escalation needs a new one, while
  de-escalation keeps the one it had.
* **Shelving.** An operator may shelve a parameter's alarm for a time (at most
  `max_shelve_s`). While shelved its transitions are tracked but not emitted; at expiry or
  an explicit unshelve it is re-evaluated: an active condition comes back as a new
  unacknowledged alarm, a normal one leaves nothing behind.

Every transition is an `AlarmEvent`; `event.state` is the alarm's state afterwards, and
`state == "normal"` means the alarm has left the active list.

Cost. Parameters that are nominal and carry no state cost nothing but one pass of numpy
over the batch's limit matrix. For the few others (any non-nominal sample in the batch, or
a streak or an active condition carried from earlier batches) the persistence and
hysteresis logic runs vectorised over their samples: run lengths from running maxima of
indices, set/reset latches from a forward fill, and Python only at the transitions.

Times: every time the engine sees is on the stream's clock (frame times). Acknowledgement
and shelving default to the latest data time, so replay sessions (whose frames are dated
1975) shelve and expire on the same clock as their data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core.decom import PAD, DecodedBatch
from groundstation.core.definitions import Derived, Limits, LimitSet, Parameter, VehicleDefinition

SEVERITIES = ("nominal", "yellow", "red")
SNAPSHOT_VERSION = 2  # 2 added each track's limits fingerprint; 1 is still read

# Masks of the per-side, per-level streaks: (side, level). Index j into _Track.runs.
_MASKS = ((1, 1), (1, 2), (-1, 1), (-1, 2))


class Transition(StrEnum):
    """What happened to an alarm: an event's `transition` on MQTT, in InfluxDB and in the
    debrief."""

    RAISED = "raised"
    ESCALATED = "escalated"
    DEESCALATED = "deescalated"
    RETURNED_TO_NORMAL = "returned_to_normal"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"


class AlarmState(StrEnum):
    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    NORMAL_UNACKED = "normal_unacked"  # latched: back to normal, still waiting for an ack
    SHELVED = "shelved"
    NORMAL = "normal"  # not in the active list


class AlarmError(ValueError):
    """An operator request the engine refuses; nothing was changed.

    `reason` is a stable code for the ingest to report back: unknown_parameter, no_limits,
    no_alarm, already_acknowledged, shelved, not_shelved, bad_operator, bad_duration."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    time_ns: int
    seq: int  # per engine, increasing in emission order: a key for idempotent storage
    vehicle: str
    source: str
    parameter: str
    transition: Transition
    state: AlarmState  # the alarm's state after this event
    severity: str  # the condition after this event: nominal, yellow or red
    side: str | None  # low or high (for returned_to_normal: the side that cleared)
    value: float | None  # the sample that caused the transition (latest known for others)
    value_text: str | None  # a discrete's state name
    limit: float | None  # the limit crossed (raised/escalated) or still exceeded
    onset_ns: int | None = None  # raised/escalated: first out-of-limit sample of the streak
    operator: str | None = None  # acknowledged/shelved/unshelved by an operator
    until_ns: int | None = None  # shelved: when the shelf expires
    label: str = ""
    label_ru: str | None = None
    unit: str = ""
    console: str | None = None  # Houston position, for routing to consoles
    subsystem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, float, None): ready for JSON, msgpack and InfluxDB."""
        return {
            "time_ns": self.time_ns, "seq": self.seq, "vehicle": self.vehicle,
            "source": self.source, "parameter": self.parameter,
            "transition": str(self.transition.value),
            "state": str(self.state.value), "severity": self.severity, "side": self.side,
            "value": _finite(self.value), "value_text": self.value_text,
            "limit": _finite(self.limit), "onset_ns": self.onset_ns, "operator": self.operator,
            "until_ns": self.until_ns, "label": self.label, "label_ru": self.label_ru,
            "unit": self.unit, "console": self.console, "subsystem": self.subsystem,
        }


def _finite(x: float | None) -> float | None:
    # JSON has no NaN; a missing value is None.
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class _Spec:
    """What the engine needs to know about one limited parameter, resolved once."""

    pid: str
    order: int  # definition order: measured parameters, then derived
    index: int  # index in definition.parameters, -1 for a derived parameter
    limits: Limits
    discrete: bool
    states: dict[int, str]
    persistence: int
    persistence_ns: int | None
    deadband: float
    label: str
    label_ru: str | None
    unit: str
    console: str | None
    subsystem: str | None
    fingerprint: str = ""  # of what decides its condition: limits, states, persistence


@dataclass
class _Track:
    """Per-parameter state that spans batches. Exists only while there is something to
    remember (a streak, an active condition, a listed or shelved alarm)."""

    cond: int = 0  # confirmed signed level (-2..2) after persistence and hysteresis
    runs: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # trailing streak lengths
    starts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # ... and their starts
    value: float = math.nan  # latest sample
    limit: float | None = None  # limit of the current condition
    listed: bool = False  # in the active list (not shelved)
    acked: bool = False
    peak: int = 0  # highest severity since raised: what the ack covers
    raised_ns: int | None = None
    acked_by: str | None = None
    acked_ns: int | None = None
    shelved_by: str | None = None
    shelved_ns: int | None = None
    shelved_until: int | None = None

    @property
    def state(self) -> AlarmState:
        if self.shelved_until is not None:
            return AlarmState.SHELVED
        if self.cond:
            return AlarmState.ACTIVE_ACKED if self.acked else AlarmState.ACTIVE_UNACKED
        return AlarmState.NORMAL_UNACKED if self.listed else AlarmState.NORMAL

    @property
    def pending(self) -> bool:
        """Must be evaluated against the next batch even if it is all nominal."""
        return bool(self.cond) or any(self.runs)

    @property
    def idle(self) -> bool:
        return not (self.pending or self.listed or self.shelved_until is not None)


_TRACK_FIELDS = ("cond", "runs", "starts", "value", "limit", "listed", "acked", "peak",
                 "raised_ns", "acked_by", "acked_ns", "shelved_by", "shelved_ns",
                 "shelved_until")


class AlarmEngine:
    """Alarm state of one vehicle from one source (live or a replay session)."""

    def __init__(self, definition: VehicleDefinition, source: str = "live", *,
                 max_shelve_s: float = 8 * 3600.0):
        self.definition = definition
        self.vehicle = definition.vehicle
        self.source = source
        self.max_shelve_s = max_shelve_s
        self.now_ns = 0  # latest data time seen
        self.suppressed: Counter[str] = Counter()  # transitions withheld while shelved
        self._seq = 0
        self._tracks: dict[str, _Track] = {}
        self._specs: dict[str, _Spec] = {}
        entries: list[Parameter | Derived] = [*definition.parameters, *definition.derived]
        n_measured = len(definition.parameters)
        for order, e in enumerate(entries):
            if e.limits is not None:
                self._specs[e.id] = self._spec(e, order, order if order < n_measured else -1)
        # Lookup by the decommutator's parameter index, for the limit-matrix scan.
        self._by_index: list[_Spec | None] = [self._specs.get(p.id)
                                              for p in definition.parameters]
        self._limited = np.array([s is not None for s in self._by_index], dtype=bool)
        self._derived = [s for s in self._specs.values() if s.index < 0]
        self._thresholds: dict[int, tuple[LimitSet, tuple[float | None, ...]]] = {}
        self._ids: dict[str, Parameter | Derived] = {e.id: e for e in entries}
        # Batches of the vehicle's other formats (definition.streams, e.g. Apollo's low bit
        # rate): their parameter index -> this definition's, -1 where it has none.
        self._index_maps: dict[int, tuple[VehicleDefinition, NDArray[np.int64]]] = {}

    def _index_map(self, other: VehicleDefinition) -> NDArray[np.int64] | None:
        """How a batch decoded with another definition of this vehicle (another format of
        its downlink, with the same parameters in other places) indexes its parameters."""
        if other is self.definition:
            return None
        hit = self._index_maps.get(id(other))
        if hit is None or hit[0] is not other:
            if other.vehicle != self.vehicle:
                raise ValueError(f"a batch of {other.vehicle} given to {self.vehicle}'s "
                                 "alarms")
            mine = {p.id: i for i, p in enumerate(self.definition.parameters)}
            hit = (other, np.array([mine.get(p.id, -1) for p in other.parameters] + [-1],
                                   dtype=np.int64))
            self._index_maps[id(other)] = hit
        return hit[1]

    @staticmethod
    def _spec(e: Parameter | Derived, order: int, index: int) -> _Spec:
        lim = e.limits
        assert lim is not None
        states = {}
        if isinstance(e, Parameter) and e.calibration is not None and e.calibration.states:
            states = dict(e.calibration.states)
        key = json.dumps([lim.model_dump(mode="json"), isinstance(e, Parameter) and
                          e.type == "discrete", sorted(states.items())], sort_keys=True)
        return _Spec(
            fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
            pid=e.id, order=order, index=index, limits=lim,
            discrete=isinstance(e, Parameter) and e.type == "discrete", states=states,
            persistence=lim.persistence,
            persistence_ns=(None if lim.persistence_s is None
                            else round(lim.persistence_s * 1e9)),
            deadband=lim.deadband, label=e.label.get("en", e.id), label_ru=e.label.get("ru"),
            unit=e.unit, console=e.console.get("houston"), subsystem=e.subsystem,
        )

    # --- telemetry ---------------------------------------------------------------------

    def process(self, batch: DecodedBatch, context: dict[str, Any] | None = None
                ) -> list[AlarmEvent]:
        """Alarm events caused by one batch (and shelves expiring by its last frame time).

        context: the same context the batch was decoded with. The batch's limit states
        already reflect it; the engine needs the limit values themselves for the deadband.
        """
        out: list[tuple[int, int, AlarmEvent]] = []
        t_end = self.now_ns
        if batch.n_good:
            t_end = max(t_end, int(batch.times_ns[-1]))
        for spec in self._candidates(batch):
            if spec.pid not in batch._columns and spec.pid not in batch.derived:
                continue  # a format of the downlink that does not carry it
            t, v, s = batch.series(spec.pid)
            if t.size:
                self._evaluate(spec, t, v, s, context, out)
        self.now_ns = t_end
        self._expire(t_end, out)
        self._prune()
        return self._emit(out)

    def tick(self, now_ns: int) -> list[AlarmEvent]:
        """Advance the clock without data (loss of signal): shelves still expire."""
        out: list[tuple[int, int, AlarmEvent]] = []
        self.now_ns = max(self.now_ns, now_ns)
        self._expire(self.now_ns, out)
        self._prune()
        return self._emit(out)

    def _prune(self) -> None:
        # Forget parameters with nothing left to remember, so the per-batch walk over
        # tracks stays as short as the active list.
        for pid in [p for p, tr in self._tracks.items() if tr.idle]:
            del self._tracks[pid]

    def _candidates(self, batch: DecodedBatch) -> list[_Spec]:
        """The limited parameters with a non-nominal sample in the batch or carried state."""
        found: dict[str, _Spec] = {}
        lim = batch.limit
        # Padding slots carry whatever their dummy lookup gives, so they are masked out.
        if lim.size and lim.any():
            cells = (lim != 0) & (batch.param_index != PAD)
            if cells.any():
                index = batch.param_index[cells]
                remap = self._index_map(batch.definition)
                if remap is not None:
                    index = remap[index]
                    index = index[index >= 0]
                hits = np.bincount(index, minlength=self._limited.size)
                for i in np.flatnonzero((hits[: self._limited.size] > 0) & self._limited):
                    spec = self._by_index[i]
                    assert spec is not None
                    found[spec.pid] = spec
        for spec in self._derived:
            d = batch.derived.get(spec.pid)
            if d is not None and d[2].size and d[2].any():
                found[spec.pid] = spec
        for pid, tr in self._tracks.items():
            if tr.pending and pid not in found:
                found[pid] = self._specs[pid]
        return sorted(found.values(), key=lambda s: s.order)

    def _evaluate(self, spec: _Spec, t: NDArray[np.int64], v: NDArray[np.float64],
                  s: NDArray[np.int8], context: dict[str, Any] | None,
                  out: list[tuple[int, int, AlarmEvent]]) -> None:
        """Persistence and hysteresis over one parameter's samples, then its transitions."""
        tr = self._tracks.get(spec.pid)
        if tr is None:
            tr = self._tracks[spec.pid] = _Track()
        ls = spec.limits.set_for(context, self.vehicle)
        thr = self._thresholds_of(ls)
        n = s.size
        idx = np.arange(n)
        # Most masks are empty (a parameter out on one side, at one level): the extremes
        # of the states rule them out without building them.
        smax, smin = int(s.max()), int(s.min())
        if smax == smin == tr.cond:
            # Steady: every sample in the state the condition already holds (an alarm
            # that stays out, or a broken streak with nothing active). No set or reset
            # can change the condition; only the streaks move on.
            for j, (side, level) in enumerate(_MASKS):
                if side * smax < level:
                    tr.runs[j] = tr.starts[j] = 0
                elif tr.runs[j]:
                    tr.runs[j] += n
                else:
                    tr.runs[j], tr.starts[j] = n, int(t[0])
            tr.value = float(v[-1])
            self._expire_one(spec, tr, int(t[-1]), t, v, out)
            return
        latches: list[NDArray[np.bool_] | None] = []
        starts: list[NDArray[np.int64] | None] = []
        for j, (side, level) in enumerate(_MASKS):
            start: NDArray[np.int64] | None = None
            set_: NDArray[np.bool_] | None = None
            if (smax >= level) if side > 0 else (smin <= -level):
                m = (s >= level) if side > 0 else (s <= -level)
                # Run length ending at each sample: distance to the last good sample
                # (from a running maximum of indices), plus the streak carried in when no
                # good sample has come yet in this batch.
                last_good = np.maximum.accumulate(np.where(m, -1, idx))
                run = idx - last_good
                head = last_good < 0
                start = t[np.minimum(last_good + 1, n - 1)]
                if tr.runs[j]:
                    run = run + np.where(head, tr.runs[j], 0)
                    start = np.where(head, tr.starts[j], start)
                ok = (run >= spec.persistence if spec.persistence_ns is None
                      else t - start >= spec.persistence_ns)
                set_ = m & ok
                tr.runs[j] = int(run[-1]) if m[-1] else 0
                tr.starts[j] = int(start[-1]) if m[-1] else 0
                if not set_.any():
                    set_ = None
            else:
                tr.runs[j] = tr.starts[j] = 0
            starts.append(start)
            latch_in = side * tr.cond >= level
            if set_ is None and not latch_in:
                latches.append(None)  # never on in this batch: skip the reset test
                continue
            reset = self._reset(spec, side, level, thr[j], v, s)
            latches.append(_hold(set_, reset, latch_in, idx))
        # Red persisting implies yellow persisting and clearing yellow implies clearing
        # red, so level 2 latches only where level 1 does; and a sample beyond one side
        # resets the other. The highest latched level is the condition; taking the
        # maximum keeps that true even against a limit set inconsistent with the states.
        sides: dict[int, NDArray[np.int8]] = {}
        for x, (side, lv) in zip(latches, _MASKS, strict=True):
            if x is not None:
                lvl = x.astype(np.int8) * np.int8(lv)
                sides[side] = np.maximum(sides[side], lvl) if side in sides else lvl
        high, low = sides.get(1), sides.get(-1)
        if high is not None and low is not None:
            cond = np.where(high > 0, high, -low).astype(np.int8)
        elif high is not None:
            cond = high
        elif low is not None:
            cond = -low
        else:
            cond = np.zeros(n, dtype=np.int8)
        prev = np.empty_like(cond)
        prev[0] = tr.cond
        prev[1:] = cond[:-1]
        for i in np.flatnonzero(cond != prev):
            ti, new = int(t[i]), int(cond[i])
            self._expire_one(spec, tr, ti, t, v, out)
            j = _mask_index(new, max(abs(new), 1))
            run_start = starts[j]
            onset = int(run_start[i]) if new and run_start is not None else None
            limit = thr[j] if new else tr.limit
            self._transition(spec, tr, new, ti, float(v[i]), limit, onset, out)
        tr.value = float(v[-1])
        self._expire_one(spec, tr, int(t[-1]), t, v, out)

    @staticmethod
    def _reset(spec: _Spec, side: int, level: int, threshold: float | None,
               v: NDArray[np.float64], s: NDArray[np.int8]) -> NDArray[np.bool_]:
        """Samples at which a (side, level) condition clears."""
        if spec.discrete:
            # Leaving the bad state clears it: a discrete has no deadband.
            return (s < level) if side > 0 else (s > -level)
        if threshold is None:
            # The active limit set has no limit here (a context relaxed it): nothing to hold.
            return np.ones(v.shape, dtype=bool)
        if side > 0:
            return (v <= threshold - spec.deadband) | (s < 0)
        return (v >= threshold + spec.deadband) | (s > 0)

    def _thresholds_of(self, ls: LimitSet) -> tuple[float | None, ...]:
        """Clearing limit per mask: for level 1 the innermost limit on that side (yellow, or
        red when there is no yellow), for level 2 red."""
        hit = self._thresholds.get(id(ls))
        if hit is not None and hit[0] is ls:
            return hit[1]
        y, r = ls.yellow or (None, None), ls.red or (None, None)
        hi1 = y[1] if y[1] is not None else r[1]
        lo1 = y[0] if y[0] is not None else r[0]
        thr = (hi1, r[1], lo1, r[0])
        self._thresholds[id(ls)] = (ls, thr)
        return thr

    # --- the state machine -------------------------------------------------------------

    def _transition(self, spec: _Spec, tr: _Track, new: int, t: int, value: float,
                    limit: float | None, onset: int | None,
                    out: list[tuple[int, int, AlarmEvent]]) -> None:
        old = tr.cond
        tr.cond, tr.value = new, value
        if new:
            tr.limit = limit
        if new == 0:
            transition = Transition.RETURNED_TO_NORMAL
        elif old == 0 or (old > 0) != (new > 0):
            transition = Transition.RAISED  # a new condition, or one on the other side
        elif abs(new) > abs(old):
            transition = Transition.ESCALATED
        else:
            transition = Transition.DEESCALATED
        if tr.shelved_until is not None:
            # Tracked, not announced: unshelving re-evaluates from the condition then.
            self.suppressed[transition.value] += 1
            return
        if transition is Transition.RAISED:
            tr.listed, tr.acked, tr.peak, tr.raised_ns = True, False, abs(new), t
            tr.acked_by = tr.acked_ns = None
        elif transition is Transition.ESCALATED:
            tr.acked, tr.peak = False, max(tr.peak, abs(new))
            tr.acked_by = tr.acked_ns = None
        elif transition is Transition.RETURNED_TO_NORMAL and tr.acked:
            tr.listed = False  # acknowledged and normal: it leaves the list
        side = new or old
        out.append((t, spec.order, self._event(
            spec, tr, transition, t, side=side, value=value, limit=limit if new else tr.limit,
            onset_ns=onset if transition in (Transition.RAISED, Transition.ESCALATED)
            else None)))
        if transition is Transition.RETURNED_TO_NORMAL:
            tr.limit = None

    def _expire_one(self, spec: _Spec, tr: _Track, upto: int, t: NDArray[np.int64],
                    v: NDArray[np.float64], out: list[tuple[int, int, AlarmEvent]]) -> None:
        """Unshelve at its expiry if that falls at or before `upto` (within this batch)."""
        until = tr.shelved_until
        if until is None or until > upto:
            return
        k = int(np.searchsorted(t, until, side="right")) - 1
        if k >= 0:
            tr.value = float(v[k])
        self._unshelve(spec, tr, until, None, out)

    def _expire(self, upto: int, out: list[tuple[int, int, AlarmEvent]]) -> None:
        for pid, tr in list(self._tracks.items()):
            if tr.shelved_until is not None and tr.shelved_until <= upto:
                self._unshelve(self._specs[pid], tr, tr.shelved_until, None, out)

    def _unshelve(self, spec: _Spec, tr: _Track, t: int, operator: str | None,
                  out: list[tuple[int, int, AlarmEvent]]) -> AlarmEvent:
        tr.shelved_until = tr.shelved_by = tr.shelved_ns = None
        # Re-evaluate: an active condition is announced afresh and needs an ack.
        tr.listed = bool(tr.cond)
        tr.acked, tr.acked_by, tr.acked_ns = False, None, None
        tr.peak = abs(tr.cond)
        tr.raised_ns = t if tr.cond else None
        ev = self._event(spec, tr, Transition.UNSHELVED, t, side=tr.cond, value=tr.value,
                         limit=tr.limit, operator=operator)
        out.append((t, spec.order, ev))
        return ev

    def _event(self, spec: _Spec, tr: _Track, transition: Transition, t: int, *, side: int,
               value: float | None, limit: float | None, onset_ns: int | None = None,
               operator: str | None = None, until_ns: int | None = None) -> AlarmEvent:
        text = None
        if spec.discrete and value is not None and math.isfinite(value):
            text = spec.states.get(int(value))
        return AlarmEvent(
            time_ns=t, seq=0, vehicle=self.vehicle, source=self.source, parameter=spec.pid,
            transition=transition, state=tr.state, severity=SEVERITIES[abs(tr.cond)],
            side=None if side == 0 else ("high" if side > 0 else "low"),
            value=value, value_text=text, limit=limit, onset_ns=onset_ns, operator=operator,
            until_ns=until_ns, label=spec.label, label_ru=spec.label_ru, unit=spec.unit,
            console=spec.console, subsystem=spec.subsystem)

    def _emit(self, out: list[tuple[int, int, AlarmEvent]]) -> list[AlarmEvent]:
        # Time order across parameters; within a time, definition order; within a
        # parameter, the order they happened (sort is stable).
        out.sort(key=lambda x: (x[0], x[1]))
        events = []
        for _, _, ev in out:
            self._seq += 1
            events.append(replace(ev, seq=self._seq))
        return events

    # --- operators ---------------------------------------------------------------------

    def acknowledge(self, parameter: str, operator: str, time_ns: int | None = None
                    ) -> AlarmEvent:
        """Acknowledge a listed alarm in the name of `operator` (the user name the broker
        authenticated). Raises AlarmError, changing nothing, when there is nothing to ack."""
        spec, tr = self._lookup(parameter, operator)
        if tr is None or tr.state is AlarmState.NORMAL:
            raise AlarmError("no_alarm", f"{self.vehicle}.{parameter} has no alarm to "
                                         "acknowledge")
        if tr.shelved_until is not None:
            raise AlarmError("shelved", f"{self.vehicle}.{parameter} is shelved by "
                                        f"{tr.shelved_by}; unshelve it first")
        if tr.acked:
            raise AlarmError("already_acknowledged", f"{self.vehicle}.{parameter} was "
                             f"already acknowledged by {tr.acked_by}")
        t = self.now_ns if time_ns is None else time_ns
        tr.acked, tr.acked_by, tr.acked_ns = True, operator, t
        if not tr.cond:
            tr.listed = False  # normal and acknowledged: it leaves the list
        ev = self._event(spec, tr, Transition.ACKNOWLEDGED, t, side=tr.cond, value=tr.value,
                         limit=tr.limit, operator=operator)
        if tr.idle:
            del self._tracks[parameter]
        return self._emit([(t, spec.order, ev)])[0]

    def shelve(self, parameter: str, operator: str, duration_s: float,
               time_ns: int | None = None) -> AlarmEvent:
        """Shelve a parameter's alarm (present or not) for duration_s seconds; shelving a
        shelved one restarts its time."""
        spec, tr = self._lookup(parameter, operator)
        if not (isinstance(duration_s, int | float) and math.isfinite(duration_s)
                and 0 < duration_s <= self.max_shelve_s):
            raise AlarmError("bad_duration", f"shelve for more than 0 and at most "
                                             f"{self.max_shelve_s:g} s, not {duration_s!r}")
        if tr is None:
            tr = self._tracks[parameter] = _Track()
        t = self.now_ns if time_ns is None else time_ns
        until = t + round(duration_s * 1e9)
        tr.shelved_until, tr.shelved_by, tr.shelved_ns = until, operator, t
        tr.listed, tr.acked, tr.acked_by, tr.acked_ns = False, False, None, None
        ev = self._event(spec, tr, Transition.SHELVED, t, side=tr.cond, value=tr.value,
                         limit=tr.limit, operator=operator, until_ns=until)
        return self._emit([(t, spec.order, ev)])[0]

    def unshelve(self, parameter: str, operator: str, time_ns: int | None = None
                 ) -> AlarmEvent:
        spec, tr = self._lookup(parameter, operator)
        if tr is None or tr.shelved_until is None:
            raise AlarmError("not_shelved", f"{self.vehicle}.{parameter} is not shelved")
        t = self.now_ns if time_ns is None else time_ns
        out: list[tuple[int, int, AlarmEvent]] = []
        self._unshelve(spec, tr, t, operator, out)
        if tr.idle:
            del self._tracks[parameter]
        return self._emit(out)[0]

    def _lookup(self, parameter: str, operator: str) -> tuple[_Spec, _Track | None]:
        if not isinstance(operator, str) or not operator.strip():
            raise AlarmError("bad_operator", "an operator request must name the operator")
        spec = self._specs.get(parameter)
        if spec is None:
            if parameter in self._ids:
                raise AlarmError("no_limits", f"{self.vehicle}.{parameter} has no limits, "
                                              "so it never alarms")
            raise AlarmError("unknown_parameter", f"{self.vehicle} has no parameter "
                                                  f"{parameter!r}")
        return spec, self._tracks.get(parameter)

    # --- summaries and persistence -----------------------------------------------------

    def active(self) -> dict[str, Any]:
        """The active list (listed and shelved alarms) for a retained summary message.

        master_alarm: some alarm waits for an acknowledgement (Apollo's master alarm
        light). Unacknowledged first, then red before yellow, then oldest first."""
        alarms = []
        for pid, tr in self._tracks.items():
            state = tr.state
            if state is AlarmState.NORMAL:
                continue
            spec = self._specs[pid]
            text = (spec.states.get(int(tr.value)) if spec.discrete and math.isfinite(tr.value)
                    else None)
            alarms.append({
                "parameter": pid, "label": spec.label, "label_ru": spec.label_ru,
                "unit": spec.unit, "console": spec.console, "subsystem": spec.subsystem,
                "state": str(state.value), "severity": SEVERITIES[abs(tr.cond)],
                "peak_severity": SEVERITIES[tr.peak],
                "side": None if not tr.cond else ("high" if tr.cond > 0 else "low"),
                "value": _finite(tr.value), "value_text": text, "limit": _finite(tr.limit),
                "raised_ns": tr.raised_ns, "acked_by": tr.acked_by, "acked_ns": tr.acked_ns,
                "shelved_by": tr.shelved_by, "shelved_until_ns": tr.shelved_until,
            })
        unacked = (AlarmState.ACTIVE_UNACKED.value, AlarmState.NORMAL_UNACKED.value)
        alarms.sort(key=lambda a: (a["state"] not in unacked, a["state"] == "shelved",
                                   -SEVERITIES.index(a["peak_severity"]),
                                   a["raised_ns"] or 0, a["parameter"]))
        return {
            "vehicle": self.vehicle, "source": self.source, "time_ns": self.now_ns,
            "master_alarm": any(a["state"] in unacked for a in alarms),
            "counts": {
                "red": sum(a["severity"] == "red" and a["state"] != "shelved" for a in alarms),
                "yellow": sum(a["severity"] == "yellow" and a["state"] != "shelved"
                              for a in alarms),
                "unacked": sum(a["state"] in unacked for a in alarms),
                "shelved": sum(a["state"] == "shelved" for a in alarms),
            },
            "alarms": alarms,
        }

    def snapshot(self) -> dict[str, Any]:
        """The engine's state as plain data (JSON/msgpack), for restore() after a restart.

        Cheap when little is going on: one small dict per parameter with something to
        remember (a streak, an active condition, a listed or shelved alarm)."""
        tracks = {}
        for pid, tr in self._tracks.items():
            d = {k: getattr(tr, k) for k in _TRACK_FIELDS}
            d["runs"], d["starts"] = list(tr.runs), list(tr.starts)
            d["value"] = _finite(tr.value)
            d["limits"] = self._specs[pid].fingerprint
            tracks[pid] = d
        return {"version": SNAPSHOT_VERSION, "vehicle": self.vehicle, "source": self.source,
                "now_ns": self.now_ns, "seq": self._seq, "tracks": tracks}

    def restore(self, snap: dict[str, Any]) -> list[str]:
        """Replace the state with a snapshot of an engine for the same vehicle and source
        (ValueError, changing nothing, for another engine's or an unreadable snapshot).

        A snapshot taken under other definitions restores what still applies. Returns a
        warning for each thing dropped:

        * a parameter that no longer exists or no longer has limits: its alarm is dropped;
        * a parameter whose limits (or states, persistence, deadband) changed: its
          condition and streaks are dropped, since they were judged against the old
          limits, and the next data re-evaluate it. What the operators did stays where it
          still means something: an alarm waiting for an acknowledgement stays listed
          (latched) and a shelf stays until its expiry; an acknowledged alarm is dropped,
          so if the new limits are still violated it is raised afresh for a new ack;
        * a malformed track (wrong types): dropped.
        """
        if not isinstance(snap, dict):
            raise ValueError("alarm snapshot is not a mapping")
        if snap.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(f"alarm snapshot version {snap.get('version')!r}; this engine "
                             f"reads versions 1 and {SNAPSHOT_VERSION}")
        if (snap.get("vehicle"), snap.get("source")) != (self.vehicle, self.source):
            raise ValueError(f"alarm snapshot is for {snap.get('vehicle')}/{snap.get('source')}"
                             f", not {self.vehicle}/{self.source}")
        now_ns, seq, raw = snap.get("now_ns", 0), snap.get("seq", 0), snap.get("tracks", {})
        if not (_is_int(now_ns) and _is_int(seq) and seq >= 0 and isinstance(raw, dict)):
            raise ValueError("alarm snapshot has a malformed now_ns, seq or tracks")
        where = f"{self.source}/{self.vehicle}"
        warnings: list[str] = []
        tracks = {}
        for pid, d in raw.items():
            spec = self._specs.get(pid)
            if spec is None:
                why = ("has no limits any more" if pid in self._ids
                       else "is no longer in the definition")
                warnings.append(f"{where}: dropped the alarm state of {pid}: it {why}")
                continue
            tr = _track_from(d)
            if tr is None:
                warnings.append(f"{where}: dropped the alarm state of {pid}: malformed")
                continue
            fp = d.get("limits")
            if fp is not None and fp != spec.fingerprint:
                kept = []
                if tr.listed and not tr.acked:
                    kept.append("still listed, unacknowledged")
                elif tr.listed:
                    tr.listed = False
                if tr.shelved_until is not None:
                    kept.append(f"still shelved by {tr.shelved_by}")
                tr.cond, tr.limit = 0, None
                tr.runs, tr.starts = [0, 0, 0, 0], [0, 0, 0, 0]
                tr.acked, tr.acked_by, tr.acked_ns = False, None, None
                if not tr.listed and tr.shelved_until is None:
                    tr.peak, tr.raised_ns = 0, None
                warnings.append(f"{where}: the limits of {pid} changed: its condition is "
                                "judged again from the next data ("
                                + ("; ".join(kept) or "its alarm state is dropped") + ")")
                if tr.idle:
                    continue
            tracks[pid] = tr
        self._tracks = tracks
        self.now_ns = now_ns
        self._seq = seq
        return warnings


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _opt_int(x: Any) -> bool:
    return x is None or _is_int(x)


def _opt_str(x: Any) -> bool:
    return x is None or isinstance(x, str)


def _track_from(d: Any) -> _Track | None:
    """A track from its snapshot, or None if the snapshot is malformed (any wrong type)."""
    if not isinstance(d, dict):
        return None
    try:
        tr = _Track(**{k: d[k] for k in _TRACK_FIELDS if k in d})
    except TypeError:
        return None
    four = (isinstance(tr.runs, list) and isinstance(tr.starts, list)
            and len(tr.runs) == len(tr.starts) == 4
            and all(_is_int(x) and x >= 0 for x in (*tr.runs, *tr.starts)))
    if not (four and _is_int(tr.cond) and -2 <= tr.cond <= 2 and _is_int(tr.peak)
            and 0 <= tr.peak <= 2 and isinstance(tr.listed, bool)
            and isinstance(tr.acked, bool) and all(_opt_int(getattr(tr, k)) for k in (
                "raised_ns", "acked_ns", "shelved_ns", "shelved_until"))
            and all(_opt_str(getattr(tr, k)) for k in ("acked_by", "shelved_by"))
            and (tr.value is None or isinstance(tr.value, int | float))
            and (tr.limit is None or isinstance(tr.limit, int | float))):
        return None
    tr.runs, tr.starts = list(tr.runs), list(tr.starts)
    tr.value = math.nan if tr.value is None else float(tr.value)
    tr.limit = None if tr.limit is None else float(tr.limit)
    return tr


def _mask_index(cond: int, level: int) -> int:
    return (0 if cond >= 0 else 2) + level - 1


def _hold(set_: NDArray[np.bool_] | None, reset: NDArray[np.bool_], initial: bool,
          idx: NDArray[np.int64]) -> NDArray[np.bool_]:
    """A set/reset latch over samples: each sample holds the last event at or before it
    (set wins over reset at the same sample), `initial` before the first event."""
    if set_ is None:
        # Only a carried-in latch, held until the first reset: no forward fill needed.
        first = int(reset.argmax()) if reset.any() else idx.size
        return idx < first if initial else np.zeros(idx.size, dtype=bool)
    ev = np.where(reset, 0, -1).astype(np.int8)
    ev[set_] = 1
    last = np.maximum.accumulate(np.where(ev >= 0, idx, -1))
    held = ev[np.maximum(last, 0)] == 1
    return np.where(last >= 0, held, initial)
