"""The decommutator: batches of raw minor frames in, engineering values and limit states out.

A definition is compiled once into slot tables. A *slot* is one parameter sample in one
minor frame: the word(s) it reads and where its lookup table starts. For each minor-frame
index the tables list the slots of every parameter sampled in that frame (every-frame
parameters first, in fixed columns, then that frame's subcommutated ones, padded to a common
width). Decoding a batch is then a handful of numpy gathers whatever the number of
parameters or subcommutation schedules:

    words  = frames.take(row_base + slot_word[minor])          # (frames, slots)
    eng    = eng_lut.take(slot_lut[minor] + words)             # raw word -> value
    limits = limit_lut.take(slot_lut[minor] + words)           # raw word -> limit state

Every value that fits in 16 bits goes through a table indexed by the whole word (or the
two words combined), so bit-field extraction, calibration and limit checking are all folded
into the table. Wider values (rare: 24/32-bit counters) are computed directly.

The output is frame-major, one row per good frame and one column per slot: exactly the
shape of a line-protocol line (one timestamp, the fields sampled then).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import limits as limit_check
from groundstation.core.definitions import MAX_LUT_BITS, Derived, Parameter, VehicleDefinition
from groundstation.core.units import conversion

PAD = -1  # parameter index of a padding slot


@dataclass
class _SlotTable:
    """Slots per minor frame: one-word values in the first n1 columns, two-word after."""

    params: NDArray[np.int32]  # (minor_frames, K) parameter index, PAD for padding
    word: NDArray[np.int64]  # (minor_frames, K) first (most significant) word's column
    word2: NDArray[np.int64]  # (minor_frames, K - n1) second word's column
    lut: NDArray[np.int64]  # (minor_frames, K) start of the slot's lookup table
    n1: int
    _cache: dict[str, NDArray[Any]] = field(default_factory=dict)

    def periodic(self, m0: int, n: int, frame_bytes: int
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
                            NDArray[np.int32]]:
        """Slot arrays for n consecutive frames starting at minor frame m0.

        In a stream without gaps the tables repeat every major frame, so they are unrolled
        once (per batch size) and a batch takes a slice instead of gathering them."""
        mf = self.params.shape[0]
        if self._cache.get("rows", np.empty(0)).size < n + mf:
            rows = np.arange(n + mf)
            minor = rows % mf
            base = rows[:, None] * frame_bytes
            self._cache = {"rows": rows, "w1": base + self.word[minor],
                           "w2": base + self.word2[minor], "lut": self.lut[minor],
                           "params": self.params[minor]}
        c = self._cache
        w1, w2 = c["w1"][m0:m0 + n], c["w2"][m0:m0 + n]
        if m0:
            # Row 0 of this batch is row m0 of the unrolled table.
            w1, w2 = w1 - m0 * frame_bytes, w2 - m0 * frame_bytes
        return w1, w2, c["lut"][m0:m0 + n], c["params"][m0:m0 + n]

    def gathered(self, minor: NDArray[np.int64], frame_bytes: int
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
                            NDArray[np.int32]]:
        """Slot arrays for frames with any minor-frame sequence (after gaps or bad frames)."""
        base = (np.arange(minor.size, dtype=np.int64) * frame_bytes)[:, None]
        return (base + self.word[minor], base + self.word2[minor], self.lut[minor],
                self.params[minor])


@dataclass
class Gap:
    after_row: int  # batch row of the last frame before the gap (-1: before the batch)
    missing: int  # minor frames lost


@dataclass
class DecodedBatch:
    """Decoded frames of one stream. Rows are the good frames, columns the slots."""

    definition: VehicleDefinition
    n_frames: int
    good: NDArray[np.bool_]  # (N,) frame passed sync and counter checks
    counter: NDArray[np.int64]  # (N,) frame counter as read (meaningless on bad frames)
    rows: NDArray[np.int64]  # (G,) batch index of each good frame
    times_ns: NDArray[np.int64]  # (G,) time of each good frame
    minor: NDArray[np.int64]  # (G,) minor-frame index of each good frame
    param_index: NDArray[np.int32]  # (G, K) which parameter each slot holds, PAD if none
    eng: NDArray[np.float64]  # (G, K) engineering values (a discrete's state code)
    limit: NDArray[np.int8]  # (G, K) limit states (see groundstation.limits)
    gaps: list[Gap]
    context: dict[str, Any] | None
    bad_sync: int
    bad_counter: int
    derived: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]] = (
        field(default_factory=dict))
    _raw: Any = None  # callable producing raw counts on demand
    # (G, table slots) positions in the decommutator's lookup tables, for formatters that
    # keep tables of their own aligned with them (see lineprotocol.LineFormatter)
    lut_index: NDArray[np.int64] | None = None
    # parameter id -> (its column when sampled every frame, else None; else its column in
    # each minor frame, -1 where it is not sampled)
    _columns: dict[str, tuple[int, NDArray[np.int64] | None]] = field(default_factory=dict)
    _series: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]] = (
        field(default_factory=dict))
    sync_ok: NDArray[np.bool_] | None = None  # (N,) frame passed the sync check
    # Frames of a StreamDecoder batch at or before the newest frame the stream had already
    # decoded (by sequence number): decoded and in the rows (first, before the live ones)
    # so that they are stored, but not part of live(). n_duplicate of them had been
    # received before; the others (n_late) arrive late, e.g. a recorder's playback.
    n_old: int = 0
    n_duplicate: int = 0
    n_late: int = 0
    _live: DecodedBatch | None = None
    # (N,) the frame had been received before (a redelivery): it counts only as a
    # duplicate, never again as a good or bad frame. None: no frame had.
    duplicate: NDArray[np.bool_] | None = None
    # Forward jumps of the sequence number that the frame times do not account for (a
    # sender restarted with a new numbering, or a corrupt seq): counted as jumps, not as
    # missing frames; the stream goes on from the new number.
    seq_jumps: int = 0

    def live(self) -> DecodedBatch:
        """The frames that move the stream on, in order: everything but duplicates and
        late frames. What alarms, displays and sample-and-hold must see; storing the whole
        batch is harmless, since a frame written again overwrites itself."""
        return self if self._live is None else self._live

    @property
    def raw(self) -> NDArray[np.uint32]:
        """(G, K) raw counts, the bit field as it was on the wire."""
        if callable(self._raw):
            self._raw = self._raw()
        return self._raw

    @property
    def n_good(self) -> int:
        return int(self.rows.size)

    @property
    def n_values(self) -> int:
        return int(np.count_nonzero(self.param_index != PAD))

    def _cells(self, pid: str) -> tuple[NDArray[np.int64] | slice, NDArray[np.int64] | int]:
        """Rows and columns holding one parameter's samples."""
        column, by_minor = self._columns[pid]
        if by_minor is None:
            return slice(None), column
        cols = by_minor[self.minor]
        rows = np.flatnonzero(cols >= 0)
        return rows, cols[rows]

    def series(self, pid: str) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
        """(times_ns, eng, limit) of one parameter, measured or derived, in time order."""
        if pid in self.derived:
            return self.derived[pid]
        hit = self._series.get(pid)
        if hit is None:
            if pid not in self._columns:
                self.definition.parameter(pid)  # raises a KeyError that names the vehicle
            r, c = self._cells(pid)
            hit = self._series[pid] = (self.times_ns[r], self.eng[r, c], self.limit[r, c])
        return hit

    def latest(self) -> dict[str, tuple[int, float, int]]:
        """Each parameter's last sample in this batch: {id: (time_ns, value, limit state)}.

        Only the last major frame's rows are looked at: every parameter that the batch
        carries at all is sampled there at least once. All parameters at once: a
        (parameters, rows) matrix of their columns in those rows, and the last row that
        has one."""
        out: dict[str, tuple[int, float, int]] = {}
        if self.rows.size == 0:
            return out
        mf = self.definition.frame.minor_frames
        tail = slice(max(0, self.rows.size - mf), None)
        minor = self.minor[tail]
        t, eng, lim = self.times_ns[tail], self.eng[tail], self.limit[tail]
        ids, by_minor = _latest_plan(self._columns, mf)
        if ids:
            cols = by_minor[:, minor]  # (parameters, rows)
            sampled = cols >= 0
            row = len(minor) - 1 - np.argmax(sampled[:, ::-1], axis=1)  # the last one
            col = cols[np.arange(len(ids)), row]
            carried: list[bool] = np.logical_or.reduce(sampled, axis=1).tolist()
            for pid, ok, ti, vi, li in zip(ids, carried,
                                           t[row].tolist(), eng[row, col].tolist(),
                                           lim[row, col].tolist(), strict=True):
                if ok:
                    out[pid] = (ti, vi, li)
        for pid, (times, values, limits) in self.derived.items():
            if values.size:
                out[pid] = (int(times[-1]), float(values[-1]), int(limits[-1]))
        return out

    def raw_series(self, pid: str) -> NDArray[np.uint32]:
        self.definition.parameter(pid)
        r, c = self._cells(pid)
        return self.raw[r, c]


_PLANS: dict[int, tuple[dict[str, Any], list[str], NDArray[np.int64]]] = {}


def _latest_plan(columns: dict[str, tuple[int, NDArray[np.int64] | None]], minor_frames: int
                 ) -> tuple[list[str], NDArray[np.int64]]:
    """DecodedBatch.latest's plan for a decommutator's columns (one dict, shared by its
    batches): the parameter ids, and each one's column in each minor frame (-1: none)."""
    hit = _PLANS.get(id(columns))
    if hit is not None and hit[0] is columns:
        return hit[1], hit[2]
    ids = list(columns)
    by_minor = np.full((len(ids), minor_frames), -1, dtype=np.int64)
    for i, (column, cols) in enumerate(columns.values()):
        by_minor[i] = column if cols is None else cols
    if len(_PLANS) >= 64:  # decommutators come and go with replay sessions
        _PLANS.clear()
    _PLANS[id(columns)] = (columns, ids, by_minor)
    return ids, by_minor


class Decommutator:
    """Compiled decoder for one vehicle's stream. Stateless: see StreamDecoder for state."""

    def __init__(self, definition: VehicleDefinition):
        self.definition = definition
        frame = definition.frame
        if frame.word_bits != 8:
            raise NotImplementedError("the decommutator handles 8-bit words")
        self.frame_bytes = frame.bytes_per_frame
        self.period_ns = round(1e9 / frame.rate_hz)
        self._params = definition.parameters
        self._compile_sync()
        self._compile_luts()
        self._table = self._build_table()
        self._wide = [i for i, p in enumerate(self._params) if self._table_words(p) == 0]
        self._limit_cache: dict[tuple[int, ...], NDArray[np.int8]] = {}
        self._context_limits = [(i, p.limits.contexts) for i, p in enumerate(self._params)
                                if p.limits is not None and p.limits.contexts]
        # Every context entry a limit set's `when` may read (When.matches: the phase, or
        # a parameter under its qualified name, else its bare one).
        keys: dict[str, None] = {}
        for _, contexts in self._context_limits:
            for c in contexts:
                if c.when.phase is not None:
                    keys["phase"] = None
                else:
                    name = c.when.parameter or ""
                    keys[name if "." in name else f"{definition.vehicle}.{name}"] = None
                    keys[name] = None
        self._context_keys = list(keys)
        self._limit_choice: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._derived_order = _topological(definition.derived)
        self._columns = self._locate_columns()
        self._derived_plans = self._derive_plans()
        # The measured parameters derived ones read, and where their samples sit for each
        # minor-frame sequence of a small batch (see _prefetch).
        self._derived_inputs = list(dict.fromkeys(
            x for _, steps in self._derived_plans for x, *_ in steps if x in self._columns))
        self._input_cells: dict[bytes, tuple[NDArray[np.int64], NDArray[np.int64],
                                             list[tuple[str, int, int]]]] = {}

    # --- compilation -------------------------------------------------------------------

    def _compile_sync(self) -> None:
        f = self.definition.frame
        first, last = f.sync.words
        self._sync_cols = np.arange(first, last + 1)
        self._sync_shift = np.array([8 * (last - c) for c in self._sync_cols], dtype=np.uint64)
        self._sync_mask = np.uint64(f.sync.mask or 0)
        self._sync_even = np.uint64(f.sync.pattern)
        self._sync_odd = np.uint64(f.sync.pattern ^ f.sync.complement_odd)
        c = f.counter
        assert c.words is not None
        nbits = 8 * len(c.words)
        lsb, msb = c.bits if c.bits is not None else (0, nbits - 1)
        self._ctr_cols = np.array(c.words)
        self._ctr_shift = np.array([8 * (len(c.words) - 1 - j) for j in range(len(c.words))],
                                   dtype=np.int64)
        self._ctr_lsb, self._ctr_mask = lsb, (1 << (msb - lsb + 1)) - 1
        self._ctr_first, self._ctr_modulus = c.first, c.modulus

    @staticmethod
    def _table_words(p: Parameter) -> int:
        """1 or 2 when the parameter's words fit a lookup table, 0 when computed directly."""
        assert p.words is not None
        n = len(p.words)
        return n if n * 8 <= MAX_LUT_BITS else 0

    def _compile_luts(self) -> None:
        """One table per parameter over every value of its word(s), all in one flat array."""
        self._lut_start = np.zeros(len(self._params), dtype=np.int64)
        self._limit_variants: list[list[NDArray[np.int8]]] = []
        # Padding slots index the first PAD_SPAN entries: NaN, raw 0, nominal, so a scan of
        # the whole limit matrix (the alarm engine's first step) needs no PAD mask.
        pad_span = 1 << MAX_LUT_BITS
        eng_parts: list[NDArray[Any]] = [np.full(pad_span, np.nan)]
        raw_parts: list[NDArray[Any]] = [np.zeros(pad_span, np.uint32)]
        self._pad_limits = np.zeros(pad_span, np.int8)
        pos = pad_span
        for i, p in enumerate(self._params):
            n = self._table_words(p)
            if n == 0:
                self._limit_variants.append([])
                continue
            words = np.arange(1 << (8 * n), dtype=np.uint32)
            raw = (words >> np.uint32(p.lsb)) & np.uint32(p.raw_max)
            eng = p.calibrate(raw)
            self._lut_start[i] = pos
            pos += words.size
            eng_parts.append(eng)
            raw_parts.append(raw)
            sets = [p.limits, *(p.limits.contexts if p.limits else [])]
            self._limit_variants.append([self._limit_of(p, raw, eng, s) for s in sets])
        self._eng_lut = np.concatenate(eng_parts) if eng_parts else np.zeros(0)
        self._raw_lut = np.concatenate(raw_parts) if raw_parts else np.zeros(0, np.uint32)
        self._default_limit_lut = self._assemble_limits(tuple(0 for _ in self._params))

    @staticmethod
    def _limit_of(p: Parameter, raw: NDArray[Any], eng: NDArray[np.float64], s: Any
                  ) -> NDArray[np.int8]:
        if p.type == "discrete":
            return limit_check.check_states(raw, p, s)
        return limit_check.check(eng, s)

    def _assemble_limits(self, choice: tuple[int, ...]) -> NDArray[np.int8]:
        parts = [v[c] for v, c in zip(self._limit_variants, choice, strict=True) if v]
        return np.concatenate([self._pad_limits, *parts])

    def _build_table(self) -> _SlotTable | None:
        mf = self.definition.frame.minor_frames

        def layout(nwords: int) -> list[list[int]]:
            # Every-frame parameters first, so they keep one column in every minor frame.
            members = [i for i, p in enumerate(self._params) if self._table_words(p) == nwords]
            every = [i for i in members if self._params[i].frames is None]
            rows = [list(every) for _ in range(mf)]
            for i in members:
                for m in self._params[i].frames or ():
                    rows[m].append(i)
            width = max(len(r) for r in rows)
            return [r + [PAD] * (width - len(r)) for r in rows]

        one, two = layout(1), layout(2)
        params = np.array([a + b for a, b in zip(one, two, strict=True)], dtype=np.int32)
        if params.size == 0:
            return None
        n1 = len(one[0])
        # Padding slots read word 0 (and 1) through the padding region at the start of
        # the tables; their values are never reported because their parameter index is PAD.
        word = np.zeros(params.shape, dtype=np.int64)
        word2 = np.zeros((mf, params.shape[1] - n1), dtype=np.int64)
        lut = np.zeros(params.shape, dtype=np.int64)
        for (m, k), i in np.ndenumerate(params):
            if i == PAD:
                continue
            words = self._params[i].words
            assert words is not None
            word[m, k] = words[0]
            lut[m, k] = self._lut_start[i]
            if k >= n1:
                word2[m, k - n1] = words[1]
        return _SlotTable(params, word, word2, lut, n1)

    def _limit_lut(self, context: dict[str, Any] | None) -> NDArray[np.int8]:
        if not context:
            return self._default_limit_lut
        # The choice depends only on the context entries the limit sets read: kept by
        # them (a batch at live rates is a frame or a few, and judging every parameter's
        # sets a batch was 5 % of the ingest's CPU).
        seen = tuple(context.get(k) for k in self._context_keys)
        cacheable = True
        try:
            key = self._limit_choice.get(seen)
        except TypeError:  # an unhashable value: judge it afresh
            key, cacheable = None, False
        if key is None:
            choice = [0] * len(self._params)
            vehicle = self.definition.vehicle
            for i, contexts in self._context_limits:
                for j, c in enumerate(contexts, start=1):
                    if c.when.matches(context, vehicle):
                        choice[i] = j
                        break
            key = tuple(choice)
            if cacheable:
                if len(self._limit_choice) >= LIMIT_CHOICES_MAX:
                    self._limit_choice.clear()
                self._limit_choice[seen] = key
        if key not in self._limit_cache:
            self._limit_cache[key] = self._assemble_limits(key)
        return self._limit_cache[key]

    # --- decoding ----------------------------------------------------------------------

    def check_frames(self, frames: NDArray[np.uint8]) -> tuple[NDArray[np.bool_],
                                                                NDArray[np.int64],
                                                                NDArray[np.bool_]]:
        """(sync ok, counter, counter ok) for each frame."""
        sync = (frames[:, self._sync_cols].astype(np.uint64) << self._sync_shift).sum(
            axis=1, dtype=np.uint64)
        counter = (frames[:, self._ctr_cols].astype(np.int64) << self._ctr_shift).sum(axis=1)
        counter = (counter >> self._ctr_lsb) & self._ctr_mask
        expected = np.where(counter & 1, self._sync_odd, self._sync_even)
        sync_ok = ((sync ^ expected) & self._sync_mask) == 0
        rel = counter - self._ctr_first
        counter_ok = (rel >= 0) & (rel < self._ctr_modulus)
        return sync_ok, counter, counter_ok

    def decode(self, frames: NDArray[np.uint8] | bytes, times_ns: NDArray[np.int64] | None = None,
               *, context: dict[str, Any] | None = None, last_counter: int | None = None,
               held: dict[str, float] | None = None, seq: NDArray[np.int64] | None = None,
               last_seq: int | None = None, last_time_ns: int | None = None) -> DecodedBatch:
        """Decode a batch of minor frames (N x frame bytes).

        times_ns: time of each frame; by default frame i is at i frame periods.
        context: mission phase and other parameters' values, which choose limit sets.
        last_counter: counter of the frame before this batch, to report a gap at its start.
        held: latest value of each parameter before this batch, for derived parameters.
        seq: each frame's sequence number (from the envelope), increasing: gaps are then
        counted from it, exactly, instead of from the frame counter modulo its range;
        last_seq is the sequence number of the frame before the batch, last_time_ns its
        time: a forward jump of seq that the times do not account for is a jump, not a gap.
        """
        frames = self._as_frames(frames)
        n = frames.shape[0]
        if times_ns is None:
            times_ns = np.arange(n, dtype=np.int64) * self.period_ns
        sync_ok, counter, counter_ok = self.check_frames(frames)
        good = sync_ok & counter_ok
        rows = np.flatnonzero(good)
        all_good = rows.size == n
        sel = frames if all_good else frames[rows]
        minor = (counter[rows] - self._ctr_first) % self.definition.frame.minor_frames
        limit_lut = self._limit_lut(context)

        flat = sel.reshape(-1)
        pidx, engs, lims, luts = [], [], [], []
        t = self._table
        if t is not None:
            w1, w2, lut_base, param = (t.periodic(int(minor[0]), rows.size, self.frame_bytes)
                                       if self._consecutive(minor)
                                       else t.gathered(minor, self.frame_bytes))
            words = flat.take(w1)
            lut_index = lut_base + words
            if t.n1 < lut_index.shape[1]:
                # Two-word values index their table by first * 256 + second.
                lut_index[:, t.n1:] += words[:, t.n1:].astype(np.int64) * 255 + flat.take(w2)
            pidx.append(param)
            luts.append(lut_index)
            engs.append(self._eng_lut.take(lut_index))
            lims.append(limit_lut.take(lut_index))
        for i in self._wide:
            e, lim, col = self._decode_wide(i, sel, minor, context)
            pidx.append(col)
            engs.append(e)
            lims.append(lim)
        param_index = np.concatenate(pidx, axis=1) if len(pidx) > 1 else np.asarray(pidx[0])
        eng = np.concatenate(engs, axis=1) if len(engs) > 1 else engs[0]
        limit = np.concatenate(lims, axis=1) if len(lims) > 1 else lims[0]

        def raw() -> NDArray[np.uint32]:
            parts = [self._raw_lut.take(x) for x in luts]
            for i in self._wide:
                parts.append(self._wide_raw(i, sel, minor)[0])
            return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

        good_times = np.asarray(times_ns, dtype=np.int64)[rows]
        jumps = 0
        if seq is None:
            gaps = self._gaps(counter[rows], rows, last_counter)
        else:
            gaps, jumps = self._seq_gaps(np.asarray(seq, dtype=np.int64)[rows], rows, last_seq,
                                         good_times, last_time_ns, self.period_ns)
        batch = DecodedBatch(
            definition=self.definition, n_frames=n, good=good, counter=counter, rows=rows,
            times_ns=good_times, minor=minor,
            param_index=np.asarray(param_index), eng=eng, limit=limit,
            gaps=gaps, seq_jumps=jumps,
            context=context, bad_sync=int(n - np.count_nonzero(sync_ok)),
            bad_counter=int(np.count_nonzero(sync_ok & ~counter_ok)), _raw=raw,
            lut_index=luts[0] if luts else None,
            _columns=self._columns, sync_ok=sync_ok,
        )
        if self._derived_plans:
            self._derive(batch, context, held or {})
        return batch

    def _locate_columns(self) -> dict[str, tuple[int, NDArray[np.int64] | None]]:
        """Where each parameter's samples sit in the decoded (frames, slots) matrices."""
        mf = self.definition.frame.minor_frames
        by_minor: dict[str, NDArray[np.int64]] = {}
        start = 0
        if self._table is not None:
            for (m, k), slot in np.ndenumerate(self._table.params):
                if slot != PAD:
                    pid = self._params[int(slot)].id
                    by_minor.setdefault(pid, np.full(mf, -1, dtype=np.int64))[m] = k
            start = self._table.params.shape[1]
        for i in self._wide:
            p = self._params[i]
            by_minor[p.id] = np.full(mf, -1, dtype=np.int64)
            by_minor[p.id][p.frames if p.frames is not None else slice(None)] = start
            start += 1
        out: dict[str, tuple[int, NDArray[np.int64] | None]] = {}
        for pid, cols in by_minor.items():
            fixed = bool((cols >= 0).all() and (cols == cols[0]).all())
            out[pid] = (int(cols[0]), None) if fixed else (-1, cols)
        return out

    def table_layout(self) -> tuple[NDArray[np.int32], int]:
        """(parameter index of each lookup-table entry, -1 for padding; number of leading
        one-word table columns in DecodedBatch.lut_index)."""
        owner = np.full(self._eng_lut.size, PAD, dtype=np.int32)
        for i, p in enumerate(self._params):
            n = self._table_words(p)
            if n:
                owner[self._lut_start[i]:self._lut_start[i] + (1 << (8 * n))] = i
        return owner, (self._table.n1 if self._table is not None else 0)

    @property
    def eng_table(self) -> NDArray[np.float64]:
        return self._eng_lut

    def _consecutive(self, minor: NDArray[np.int64]) -> bool:
        if minor.size == 0:
            return False
        mf = self.definition.frame.minor_frames
        return bool(np.array_equal(minor, (minor[0] + np.arange(minor.size)) % mf))

    def _as_frames(self, frames: NDArray[np.uint8] | bytes) -> NDArray[np.uint8]:
        if isinstance(frames, bytes | bytearray | memoryview):
            buf = np.frombuffer(frames, dtype=np.uint8)
            if buf.size % self.frame_bytes:
                raise ValueError(f"{buf.size} bytes is not a whole number of "
                                 f"{self.frame_bytes}-byte frames")
            return buf.reshape(-1, self.frame_bytes)
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 2 or frames.shape[1] != self.frame_bytes:
            raise ValueError(f"frames must be (N, {self.frame_bytes}) bytes, got "
                             f"{frames.shape}")
        return frames

    def _wide_raw(self, i: int, sel: NDArray[np.uint8], minor: NDArray[np.int64]
                  ) -> tuple[NDArray[np.uint32], NDArray[np.int32]]:
        p = self._params[i]
        assert p.words is not None
        n = len(p.words)
        value = np.zeros(sel.shape[0], dtype=np.uint64)
        for j, w in enumerate(p.words):
            value |= sel[:, w].astype(np.uint64) << np.uint64(8 * (n - 1 - j))
        raw = ((value >> np.uint64(p.lsb)) & np.uint64(p.raw_max)).astype(np.uint32)
        present = np.ones(sel.shape[0], bool) if p.frames is None else np.isin(minor, p.frames)
        col = np.where(present, i, PAD).astype(np.int32)
        return raw[:, None], col[:, None]

    def _decode_wide(self, i: int, sel: NDArray[np.uint8], minor: NDArray[np.int64],
                     context: dict[str, Any] | None
                     ) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.int32]]:
        p = self._params[i]
        raw, col = self._wide_raw(i, sel, minor)
        eng = p.calibrate(raw)
        ls = p.limits.set_for(context, self.definition.vehicle) if p.limits else None
        return eng, self._limit_of(p, raw, eng, ls), col

    def _gaps(self, counter: NDArray[np.int64], rows: NDArray[np.int64],
              last_counter: int | None) -> list[Gap]:
        if counter.size == 0:
            return []
        m = self._ctr_modulus
        seq = counter
        if last_counter is not None:
            seq = np.concatenate(([last_counter], counter))
        missing = (np.diff(seq) - 1) % m
        where = np.flatnonzero(missing)
        offset = 1 if last_counter is not None else 0
        gaps = []
        for k in where:
            after = int(rows[k - offset]) if k - offset >= 0 else -1
            gaps.append(Gap(after_row=after, missing=int(missing[k])))
        return gaps

    @staticmethod
    def _seq_gaps(seq: NDArray[np.int64], rows: NDArray[np.int64], last_seq: int | None,
                  times: NDArray[np.int64] | None = None, last_time_ns: int | None = None,
                  period_ns: int = 1) -> tuple[list[Gap], int]:
        """Gaps between good frames by sequence number (no modulus: exact at any length),
        and the number of jumps: a skip of seq far larger than the frame times allow
        (more than twice the frames their interval holds, plus SEQ_JUMP_SLACK) is a jump
        of the numbering, not frames lost."""
        if seq.size == 0:
            return [], 0
        start = int(seq[0]) - 1 if last_seq is None else last_seq
        if int(seq[-1]) - start == seq.size:
            return [], 0  # increasing and as many as their span: no gap
        prev = np.empty_like(seq)
        prev[1:] = seq[:-1]
        prev[0] = start
        missing = seq - prev - 1
        where = np.flatnonzero(missing > 0)
        gaps, jumps = [], 0
        for k in where:
            if times is not None and (k > 0 or last_time_ns is not None):
                before = int(times[k - 1]) if k else int(last_time_ns)  # type: ignore[arg-type]
                held = max(0, (int(times[k]) - before) // max(1, period_ns) - 1)
                if int(missing[k]) > 2 * held + SEQ_JUMP_SLACK:
                    jumps += 1
                    continue
            gaps.append(Gap(after_row=int(rows[k - 1]) if k else -1, missing=int(missing[k])))
        return gaps, jumps

    def _same_samples(self, a: str, b: str) -> bool:
        ca, cb = self._columns.get(a), self._columns.get(b)
        if ca is None or cb is None:
            return False
        if ca[1] is None or cb[1] is None:
            return ca[1] is None and cb[1] is None
        return bool(np.array_equal(ca[1] >= 0, cb[1] >= 0))

    def _derive_plans(self) -> list[tuple[Derived, list[tuple[str, bool, float, float]]]]:
        """Per derived parameter and input: (id, sampled with the first input?, unit scale,
        unit offset). Inputs of sums, differences, means and extremes are converted to the
        derived parameter's unit first (a CM psia minus a DM mm Hg is a psia difference)."""
        units = {p.id: p.unit for p in self._params} | {d.id: d.unit for d in
                                                        self.definition.derived}
        plans = []
        for d in self._derived_order:
            steps = []
            for x in d.inputs:
                scale, offset = ((1.0, 0.0) if d.op in ("product", "ratio")
                                 else conversion(units[x], d.unit))
                steps.append((x, x == d.inputs[0] or self._same_samples(d.inputs[0], x),
                              scale, offset))
            plans.append((d, steps))
        return plans

    def _prefetch(self, batch: DecodedBatch) -> None:
        """The series of every measured input of derived parameters, for a small batch, in
        one gather: three fancy indexings in all instead of three each, and their cells
        (a function of the minor-frame sequence only) kept from batch to batch. At live
        rates a batch is a message of a few frames, and the per-call cost of ~25 series
        was half of decoding it."""
        minor = batch.minor
        if minor.size == 0 or minor.size > PREFETCH_MAX_ROWS or not self._derived_inputs:
            return
        key = minor.tobytes()
        plan = self._input_cells.get(key)
        if plan is None:
            rows, cols, spans = [], [], []
            at = 0
            for pid in self._derived_inputs:
                r, c = batch._cells(pid)
                r = np.arange(minor.size) if isinstance(r, slice) else r
                rows.append(r)
                cols.append(np.broadcast_to(c, r.shape))
                spans.append((pid, at, at + r.size))
                at += r.size
            if len(self._input_cells) >= PREFETCH_PLANS_MAX:
                self._input_cells.clear()
            plan = self._input_cells[key] = (np.concatenate(rows), np.concatenate(cols),
                                             spans)
        r_all, c_all, spans = plan
        t, eng, lim = batch.times_ns.take(r_all), batch.eng[r_all, c_all], batch.limit[r_all,
                                                                                     c_all]
        series = batch._series
        for pid, a, b in spans:
            series[pid] = (t[a:b], eng[a:b], lim[a:b])

    def _derive(self, batch: DecodedBatch, context: dict[str, Any] | None,
                held: dict[str, float]) -> None:
        self._prefetch(batch)
        for d, steps in self._derived_plans:
            t0 = batch.series(d.inputs[0])[0]
            cols = []
            for x, aligned, scale, offset in steps:
                t, v, _ = batch.series(x)
                if not aligned:
                    # Sample-and-hold: the latest value of x at or before each t0.
                    # (ufuncs and methods here: numpy's Python-level wrappers, np.clip
                    # and np.searchsorted, cost more than the work at these sizes)
                    idx = t.searchsorted(t0, side="right") - 1
                    prior = held.get(x, np.nan)
                    if not v.size:
                        v = np.full(t0.shape, prior)
                    elif not idx.size or idx[0] >= 0:  # sorted: every t0 has a sample before
                        v = v.take(idx)
                    else:
                        v = np.where(idx >= 0, v.take(np.maximum(idx, 0)), prior)
                cols.append(v * scale + offset if (scale, offset) != (1.0, 0.0) else v)
            value = _apply(d, cols)
            keep = ~np.isnan(value)
            if not keep.all():
                t0, value = t0[keep], value[keep]
            ls = d.limits.set_for(context, self.definition.vehicle) if d.limits else None
            batch.derived[d.id] = (t0, value, limit_check.check(value, ls))


def _apply(d: Derived, x: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        match d.op:
            case "sum":
                return functools.reduce(np.add, x)
            case "difference":
                return x[0] - x[1]
            case "product":
                return functools.reduce(np.multiply, x)
            case "ratio":
                out = x[0] / x[1]
                out[~np.isfinite(out)] = np.nan
                return out
            case "mean":
                return functools.reduce(np.add, x) / len(x)
            case "min":
                return functools.reduce(np.minimum, x)
            case "max":
                return functools.reduce(np.maximum, x)
    raise ValueError(f"unknown derived op {d.op!r}")


def _topological(derived: list[Derived]) -> list[Derived]:
    by_id = {d.id: d for d in derived}
    done: dict[str, Derived] = {}

    def visit(d: Derived) -> None:
        if d.id in done:
            return
        for x in d.inputs:
            if x in by_id:
                visit(by_id[x])
        done[d.id] = d

    for d in derived:
        visit(d)
    return list(done.values())


LIMIT_CHOICES_MAX = 1024  # contexts whose choice of limit sets a decommutator keeps

# Batches of at most this many good frames have their derived parameters' inputs gathered
# at once (Decommutator._prefetch), by cells kept for this many minor-frame sequences.
PREFETCH_MAX_ROWS = 64
PREFETCH_PLANS_MAX = 256

# Frames a sequence number may skip beyond what the frame times account for before the
# skip is taken for a jump of the numbering (see Decommutator._seq_gaps).
SEQ_JUMP_SLACK = 1024


class _SeqSet:
    """Sequence numbers received, as sorted disjoint closed intervals [lo, hi]. Only the
    newest `cap` intervals are kept (a contiguous stream is one interval; every gap adds
    one); anything at or below `floor` has been forgotten and counts as received."""

    def __init__(self, cap: int = 16384):
        self.cap = max(2, cap)
        self.lo = np.empty(0, dtype=np.int64)
        self.hi = np.empty(0, dtype=np.int64)
        self.floor: int | None = None

    def __len__(self) -> int:
        return int(self.lo.size)

    def contains(self, seq: NDArray[np.int64]) -> NDArray[np.bool_]:
        if self.lo.size:
            i = np.searchsorted(self.lo, seq, side="right") - 1
            hit = (i >= 0) & (seq <= self.hi[np.maximum(i, 0)])
        else:
            hit = np.zeros(seq.shape, dtype=bool)
        if self.floor is not None:
            hit |= seq <= self.floor
        return hit

    @staticmethod
    def _runs(seq: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Intervals of a sorted array of distinct numbers."""
        breaks = np.flatnonzero(np.diff(seq) != 1)
        return (seq[np.concatenate(([0], breaks + 1))],
                seq[np.concatenate((breaks, [seq.size - 1]))])

    def append(self, seq: NDArray[np.int64]) -> None:
        """Add increasing numbers all above every one already held (the live stream)."""
        if seq.size == 0:
            return
        if seq.size == int(seq[-1] - seq[0]) + 1:  # one run, the usual case
            lo, hi = seq[:1], seq[-1:]
        else:
            lo, hi = self._runs(seq)
        if self.hi.size and lo[0] == self.hi[-1] + 1:
            self.hi[-1] = hi[0]
            lo, hi = lo[1:], hi[1:]
        if lo.size:
            self.lo = np.concatenate((self.lo, lo))
            self.hi = np.concatenate((self.hi, hi))
            self._trim()

    def add(self, seq: NDArray[np.int64]) -> None:
        """Add sorted distinct numbers, old ones among them."""
        if seq.size == 0:
            return
        lo, hi = self._runs(seq)
        lo = np.concatenate((self.lo, lo))
        hi = np.concatenate((self.hi, hi))
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        reach = np.maximum.accumulate(hi)
        start = np.flatnonzero(np.concatenate(([True], lo[1:] > reach[:-1] + 1)))
        self.lo, self.hi = lo[start], np.maximum.reduceat(hi, start)
        self._trim()

    def _trim(self) -> None:
        if self.lo.size > self.cap:
            drop = self.lo.size - self.cap // 2
            self.floor = int(self.hi[drop - 1])
            self.lo, self.hi = self.lo[drop:].copy(), self.hi[drop:].copy()


class StreamDecoder:
    """A stream's decoder with the state that spans batches: the newest frame decoded (for
    gaps at batch boundaries) and each parameter's latest value (for derived parameters).

    With sequence numbers (the envelope's `seq`, the source's frame number), frames are
    told apart by them: a frame at or before the newest one the stream has decoded is not
    part of the live stream. If it was received before (a QoS 1 message the broker delivers
    again, a message overlapping one already in) it is a *duplicate*; otherwise it is
    *late* (Apollo's recorder playing back what was not heard live). Either way it is still
    decoded (batch rows, before the live ones, so that it is stored: storage is idempotent)
    but it moves nothing on: no gap, no frame counter, no held value, not in batch.live().

    Link counters: frames_good counts distinct good frames (live and late), frames_missing
    the frames the live stream skipped, counted when it skipped them, exactly (from the
    sequence numbers, whatever the counter's modulus); frames_recovered the late good
    frames that filled such a gap (so frames_missing - frames_recovered are still lost);
    frames_duplicate the frames received again (good or bad: they count nowhere else).

    A source that starts again from an earlier point (a replay seeking back, a simulator
    restarted earlier in the mission) sends nothing but old frames: after rewind_after_s
    of that, the stream restarts from them (counted in `rewinds`), so that its alarms and
    displays follow it again.

    Without sequence numbers (offline tools decoding frames in order) gaps come from the
    frame counter, modulo its range, as the frames alone allow.
    """

    def __init__(self, definition: VehicleDefinition, *, rewind_after_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic, seen_intervals: int = 16384):
        self.decom = Decommutator(definition)
        self.last_counter: int | None = None
        self.last_seq: int | None = None  # newest sequence number received
        self.last_good_seq: int | None = None  # newest good live frame's (gaps count from it)
        self.last_good_time_ns: int | None = None  # ... and its time
        self.first_seq: int | None = None  # first good live frame's
        self.held: dict[str, float] = {}
        self.frames_good = 0
        self.frames_bad_sync = 0
        self.frames_bad_counter = 0
        self.frames_missing = 0
        self.frames_duplicate = 0
        self.frames_recovered = 0
        self.seq_jumps = 0
        self.rewinds = 0
        self.rewind_after_s = rewind_after_s
        self._clock = clock
        self._seen_cap = seen_intervals
        self._seen = _SeqSet(seen_intervals)
        self._old_since: float | None = None  # when only old frames began to arrive

    def decode(self, frames: NDArray[np.uint8] | bytes, times_ns: NDArray[np.int64] | None = None,
               context: dict[str, Any] | None = None,
               seq: int | NDArray[np.int64] | None = None) -> DecodedBatch:
        """Decode a batch. seq: each frame's sequence number, or the first frame's when the
        frames are consecutive (one envelope); None for frames known to be in order."""
        if seq is None:
            batch = self.decom.decode(frames, times_ns, context=context,
                                      last_counter=self.last_counter, held=self.held)
            self._advance(batch)
            self.frames_missing += sum(g.missing for g in batch.gaps)
            return batch
        frames = self.decom._as_frames(frames)
        n = frames.shape[0]
        if isinstance(seq, int | np.integer):
            seqs = int(seq) + np.arange(n, dtype=np.int64)
        else:
            seqs = np.asarray(seq, dtype=np.int64)
            if seqs.shape != (n,):
                raise ValueError(f"{seqs.shape} sequence numbers for {n} frames")
        head = self.last_seq
        if n == 0 or ((head is None or seqs[0] > head)
                      and (n == 1 or bool((np.diff(seqs) > 0).all()))):
            # The live stream moving on: every frame is new (the usual case).
            batch = self.decom.decode(frames, times_ns, context=context, held=self.held,
                                      seq=seqs, last_seq=self.last_good_seq,
                                      last_time_ns=self.last_good_time_ns)
            self._seen.append(seqs)
            self._advance_live(batch, seqs)
            return batch
        return self._decode_mixed(frames, times_ns, context, seqs)

    def position(self) -> dict[str, Any]:
        """Where the stream is, as plain data: what another process needs to go on from
        here (a clustered ingest's partition changing owner, ingest/partition_state.py)."""
        return {"last_seq": self.last_seq, "last_good_seq": self.last_good_seq,
                "last_good_time_ns": self.last_good_time_ns, "first_seq": self.first_seq,
                "last_counter": self.last_counter, "held": dict(self.held)}

    def resume(self, position: dict[str, Any]) -> None:
        """Go on from a position(): frames at or before its newest seq count as received
        (the owner before took them: a redelivered one is a duplicate, stored again and
        alarmed no more). Raises ValueError (or KeyError, TypeError) for a malformed one."""
        def num(key: str) -> int | None:
            v = position[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"decoder position: {key} is {v!r}, not an integer")
            return v
        last_seq = num("last_seq")
        self.last_good_seq, self.last_good_time_ns = num("last_good_seq"), \
            num("last_good_time_ns")
        self.first_seq, self.last_counter = num("first_seq"), num("last_counter")
        self.held = {str(k): float(v) for k, v in dict(position["held"]).items()}
        self.last_seq = last_seq
        self._seen = _SeqSet(self._seen_cap)
        self._seen.floor = last_seq

    def _advance(self, batch: DecodedBatch) -> None:
        """State and counters after a batch of live frames."""
        if batch.n_good:
            self.last_counter = int(batch.counter[batch.rows[-1]])
            for d in self.decom._derived_order:
                for x in d.inputs:
                    _, v, _ = batch.series(x)
                    if v.size:
                        self.held[x] = float(v[-1])
        self.frames_good += batch.n_good
        self.frames_bad_sync += batch.bad_sync
        self.frames_bad_counter += batch.bad_counter

    def _advance_live(self, batch: DecodedBatch, seqs: NDArray[np.int64]) -> None:
        self._advance(batch)
        if seqs.size:
            self._old_since = None
            self.last_seq = int(seqs[-1])
        if batch.n_good:
            good = seqs[batch.rows]
            self.last_good_seq = int(good[-1])
            self.last_good_time_ns = int(batch.times_ns[-1])
            if self.first_seq is None:
                self.first_seq = int(good[0])
        self.frames_missing += sum(g.missing for g in batch.gaps)
        self.seq_jumps += batch.seq_jumps

    def switched_away(self) -> None:
        """The vehicle's downlink went over to another format (another stream of it): the
        frames this stream does not get meanwhile are not lost, so the next ones count no
        gap from the last. What was received stays known (duplicates and late frames are
        still told apart)."""
        self.last_good_seq = self.last_good_time_ns = None
        self.last_counter = None

    def _restart(self) -> None:
        """Forget where the stream was: the next frames start it anew."""
        self.last_counter = self.last_seq = self.last_good_seq = self.first_seq = None
        self.last_good_time_ns = None
        self.held = {}
        self._seen = _SeqSet(self._seen_cap)
        self._old_since = None
        self.rewinds += 1

    def _decode_mixed(self, frames: NDArray[np.uint8], times_ns: NDArray[np.int64] | None,
                      context: dict[str, Any] | None, seqs: NDArray[np.int64]) -> DecodedBatch:
        """A batch with frames at or before the newest already decoded, or out of order."""
        n = seqs.size
        if times_ns is None:
            times_ns = np.arange(n, dtype=np.int64) * self.decom.period_ns
        times_ns = np.asarray(times_ns, dtype=np.int64)
        # A frame is live when it is newer than the stream's newest and every frame before
        # it in the batch.
        before = np.empty(n, dtype=np.int64)
        before[0] = np.iinfo(np.int64).min if self.last_seq is None else self.last_seq
        np.maximum.accumulate(seqs[:-1], out=before[1:])
        np.maximum(before[1:], before[0], out=before[1:])
        live = seqs > before
        if not live.any():
            now = self._clock()
            if self._old_since is None:
                self._old_since = now
            elif now - self._old_since >= self.rewind_after_s:
                self._restart()
                return self.decode(frames, times_ns, context, seqs)
        old_idx = np.flatnonzero(~live)
        live_idx = np.flatnonzero(live)
        old_seqs = seqs[old_idx]
        # Received before: in an earlier batch, or earlier in this one.
        distinct, first, inverse = np.unique(seqs, return_index=True, return_inverse=True)
        again = first[inverse.reshape(-1)] != np.arange(n)
        dup = self._seen.contains(old_seqs) | again[old_idx]
        # Old frames decode on their own, in sequence order (their derived values hold
        # only what they carry themselves), and come first in the batch.
        order = np.argsort(old_seqs, kind="stable")
        old_idx, old_seqs, dup = old_idx[order], old_seqs[order], dup[order]
        ob = self.decom.decode(frames[old_idx], times_ns[old_idx], context=context)
        lb = self.decom.decode(frames[live_idx], times_ns[live_idx], context=context,
                               held=self.held, seq=seqs[live_idx],
                               last_seq=self.last_good_seq,
                               last_time_ns=self.last_good_time_ns)
        self._seen.add(distinct)
        for g in lb.gaps:
            g.after_row = int(live_idx[g.after_row]) if g.after_row >= 0 else -1
        # Counters: live frames as always; late ones as good or bad frames (and recovered
        # when they fill a gap counted missing); duplicates only as duplicates.
        live_seqs = seqs[live_idx]
        lb_rows = live_idx[lb.rows]
        self._advance_live(lb, live_seqs)
        assert ob.sync_ok is not None
        late = ~dup
        late_good = ob.good & late
        self.frames_good += int(np.count_nonzero(late_good))
        self.frames_bad_sync += int(np.count_nonzero(~ob.sync_ok & late))
        self.frames_bad_counter += int(np.count_nonzero(ob.sync_ok & ~ob.good & late))
        if self.first_seq is not None and self.last_good_seq is not None:
            self.frames_recovered += int(np.count_nonzero(
                late_good & (old_seqs > self.first_seq) & (old_seqs < self.last_good_seq)))
        n_dup = int(np.count_nonzero(dup))
        self.frames_duplicate += n_dup
        duplicate = np.zeros(n, dtype=bool)
        duplicate[old_idx] = dup
        # One batch of all the frames, old rows first, with the live part as its own.
        good = np.zeros(n, dtype=bool)
        counter = np.zeros(n, dtype=np.int64)
        sync_ok = np.zeros(n, dtype=bool)
        for idx, b in ((old_idx, ob), (live_idx, lb)):
            good[idx], counter[idx] = b.good, b.counter
            assert b.sync_ok is not None
            sync_ok[idx] = b.sync_ok
        ob_rows = old_idx[ob.rows]
        lb.rows, lb.n_frames, lb.good, lb.counter, lb.sync_ok = lb_rows, n, good, counter, sync_ok
        derived = {}
        for pid in lb.derived.keys() | ob.derived.keys():
            parts = [b.derived[pid] for b in (ob, lb) if pid in b.derived]
            derived[pid] = tuple(np.concatenate(x) for x in zip(*parts, strict=True))

        def raw() -> NDArray[np.uint32]:
            return np.concatenate((ob.raw, lb.raw))

        return DecodedBatch(
            definition=lb.definition, n_frames=n, good=good, counter=counter,
            rows=np.concatenate((ob_rows, lb_rows)),
            times_ns=np.concatenate((ob.times_ns, lb.times_ns)),
            minor=np.concatenate((ob.minor, lb.minor)),
            param_index=np.concatenate((ob.param_index, lb.param_index)),
            eng=np.concatenate((ob.eng, lb.eng)), limit=np.concatenate((ob.limit, lb.limit)),
            gaps=lb.gaps, context=context, bad_sync=ob.bad_sync + lb.bad_sync,
            bad_counter=ob.bad_counter + lb.bad_counter,
            derived=derived,  # type: ignore[arg-type]
            _raw=raw,
            lut_index=(None if lb.lut_index is None or ob.lut_index is None
                       else np.concatenate((ob.lut_index, lb.lut_index))),
            _columns=lb._columns, sync_ok=sync_ok, n_old=ob.n_good, n_duplicate=n_dup,
            n_late=int(old_idx.size) - n_dup, _live=lb, duplicate=duplicate,
            seq_jumps=lb.seq_jumps,
        )
