"""From the models' true values to a ship's PCM minor frames, through its sensors.

For a run of frames the generator takes the true values at the physics steps around each
frame (interpolated for smooth quantities, held for discretes and switched signals), adds
the fast per-frame quantities (attitude and rates, VHF range, SPS chamber pressure), then
applies the sensors: sensor faults, Gaussian noise in the raw-count domain (a fraction of a
count, so an 8-bit reading dithers between neighbouring counts as real ones did), the
sensor's range (nothing leaves it), and channels whose module is gone reading zero. The
definitions' FrameEncoder then quantises and packs the frames, so what is sent is exactly
what the ingest's decoder expects.

All vectorised over the frames of a run: a run of 500 Apollo frames is a few numpy calls per
parameter, not a Python loop per frame. Noise comes from the stream's own random generator
drawn frame by frame, so the frames do not depend on how the runs are cut: generating 1000
frames at once or in pieces gives the same bytes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import flightplan as tl
from groundstation.core.definitions import Parameter, VehicleDefinition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.mission_time import (
    FRAME_EPOCH_NS,
    LIFTOFF_NS,
    NS,
    frame_index,
    utc_ns_to_get,
)
from simulators.apollo import ApolloModel
from simulators.attitude import attitude, gimbal_excursions
from simulators.downlink import nominal_value
from simulators.faults import Fault
from simulators.mission import DT, Mission

log = logging.getLogger(__name__)

NOISE_COUNTS = 0.35  # default sensor noise, in raw counts (estimate)
NOISE_OVERRIDES = {  # raw counts
    tl.APOLLO: {"roll_att": 2.0, "pitch_att": 2.0, "yaw_att": 2.0, "vhf_range": 3.0,
                "sps_chamber_press": 0.8, "bmag1_temp": 0.4, "bmag2_temp": 0.4},
    tl.SOYUZ: {"att_roll": 3.0, "att_pitch": 3.0, "att_yaw": 3.0, "sa_press": 0.6,
               "cmd_count": 0.0, "kdu_prop_qty": 0.4},
}
HOLD = frozenset({"sband_signal", "rf_signal", "cmd_count", "_aos", "_relay"})
VEHICLE_IDS = {tl.APOLLO: 1, tl.SOYUZ: 2}
GARBLE_WORDS = 16  # uint64 of random bytes drawn per garbled frame (128 bytes)
LINK_DRAWS = 4  # uniforms per frame for the garble decision


@dataclass
class FrameBlock:
    """Consecutive minor frames of one stream, as the ship's PCM produced them."""

    vehicle: str
    k0: int  # index (= sequence number) of the first frame
    frames: NDArray[np.uint8]  # (n, frame bytes)
    times_ns: NDArray[np.int64]  # (n,) UTC ns
    get: NDArray[np.float64]  # (n,) GET seconds
    aos: NDArray[np.bool_]  # (n,) the ground (or the relay) can hear the ship
    garbled: NDArray[np.bool_]  # (n,) frames of random bytes (sync loss)
    stream: str = ""  # the format they are in ("" = the vehicle's main stream)

    @property
    def n(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class _Layout:
    rows: dict[str, NDArray[np.int64]]  # frames of a run where each parameter is sampled
    noise_pos: dict[str, NDArray[np.int64]]  # each analog sample's place in the run's draws
    draws: int


class _Sensor:
    """Count-domain conversions for one analog parameter."""

    def __init__(self, p: Parameter):
        self.raw = np.arange(p.raw_max + 1, dtype=np.float64)
        eng = np.asarray(p.calibrate(self.raw), dtype=np.float64)
        self.increasing = bool(eng[-1] >= eng[0])
        self.eng = eng if self.increasing else eng[::-1]
        self.raw_sorted = self.raw if self.increasing else self.raw[::-1]
        self.raw_max = float(p.raw_max)

    def to_counts(self, v: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(v, self.eng, self.raw_sorted)

    def to_eng(self, c: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.increasing:
            return np.interp(c, self.raw, self.eng)
        return np.interp(c, self.raw, self.eng[::-1])


class TelemetryStream:
    """One ship's PCM frames, generated in order from the mission's true values."""

    def __init__(self, mission: Mission, definition: VehicleDefinition, *,
                 noise: bool = True):
        self.mission = mission
        self.definition = definition
        self.vehicle = definition.vehicle
        if self.vehicle not in VEHICLE_IDS:
            raise ValueError(f"no simulator for vehicle {self.vehicle!r}")
        self.model = mission.models[self.vehicle]
        self.encoder = FrameEncoder(definition)
        self.rate = definition.frame.rate_hz
        self.period_ns = self.encoder.period_ns
        self.frame_bytes = definition.frame.bytes_per_frame
        self.k = frame_index(mission.t, self.rate)
        self.noise = noise
        self._noise_rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([mission.seed, VEHICLE_IDS[self.vehicle], 2, self.k])))
        self.params = list(definition.parameters)
        self.analog = [p for p in self.params if p.type != "discrete"]
        self.sensors = {p.id: _Sensor(p) for p in self.analog}
        over = NOISE_OVERRIDES.get(self.vehicle, {})
        self.sigma = np.array([over.get(p.id, 0.0 if p.type == "counter" else NOISE_COUNTS)
                               for p in self.analog]) * (1.0 if noise else 0.0)
        self._state_maps: dict[str, tuple[tuple[int, int], NDArray[np.int64]]] = {}
        self._layouts: dict[tuple[int, int], _Layout] = {}
        self.minor_frames = definition.frame.minor_frames
        self._unmodelled_logged = False

    @property
    def next_time_ns(self) -> int:
        """UTC ns of the next frame to be generated."""
        return FRAME_EPOCH_NS + self.k * self.period_ns

    @property
    def next_get(self) -> float:
        return utc_ns_to_get(self.next_time_ns)

    # --- generation -----------------------------------------------------------------------

    def end_index(self) -> int:
        """Index of the first frame after the ship's mission ends (landing, splashdown)."""
        return frame_index(tl.MISSION_END[self.vehicle], self.rate)

    def skip_to(self, get: float) -> None:
        """Continue from the first frame at or after get (after Mission.fast_forward)."""
        self.k = max(self.k, frame_index(get, self.rate))

    def frames_until(self, get_end: float) -> FrameBlock | None:
        """Frames from the current position up to (not including) get_end."""
        k_end = min(frame_index(get_end, self.rate), self.end_index())
        if k_end <= self.k:
            return None
        return self.generate(k_end - self.k)

    def generate(self, n: int) -> FrameBlock:
        """The next n frames (advancing the mission's physics as far as they need)."""
        ks = self.k + np.arange(n, dtype=np.int64)
        times_ns = FRAME_EPOCH_NS + ks * self.period_ns
        get = (times_ns - LIFTOFF_NS) / NS
        self.mission.advance_to(float(get[-1]) + DT)
        hist = self.mission.history[self.vehicle]
        pos = (get - hist.t0) / DT
        j = np.floor(pos + 1e-9).astype(np.int64)
        frac = np.clip(pos - j, 0.0, 1.0)
        j0 = int(j[0])
        steps = hist.rows(np.arange(j0, int(j[-1]) + 2))  # the few physics steps involved
        jj = j - j0
        layout = self._layout(int(ks[0] % self.minor_frames), n)
        col = hist.column
        faults = [f for f in self.mission.faults.faults if f.vehicle == self.vehicle
                  and f.start <= get[-1] and (f.end is None or f.end > get[0])]
        fast, quiet = self._fast(get, faults)
        dead_first = self.model.dead_params(float(get[0]))
        dead_last = self.model.dead_params(float(get[-1]))
        noise = (self._noise_rng.standard_normal(layout.draws) if self.noise
                 else np.zeros(layout.draws))
        values: dict[str, Any] = {}
        unmodelled = []
        # Analog and counter parameters, each at the frames where it is sampled only.
        for i, p in enumerate(self.analog):
            r = layout.rows[p.id]
            if p.id in fast:
                v = fast[p.id][r]
            elif p.id in col:
                c, a = col[p.id], jj[r]
                v = steps[a, c]
                if p.id not in HOLD:
                    v = v + (steps[a + 1, c] - v) * frac[r]
            else:
                v = np.full(r.size, float(nominal_value(p)))
                unmodelled.append(p.id)
            g = get[r]
            v = self._analog_faults(p, v, g, ks[r], faults)
            sensor = self.sensors[p.id]
            z = noise[layout.noise_pos[p.id]] * self.sigma[i]
            if p.id in quiet:
                z = np.where(quiet[p.id][r], 0.0, z)  # no signal, no noise
            counts = sensor.to_counts(v) + z
            counts = np.clip(counts, 0.0, sensor.raw_max)
            counts = self._override_counts(p, counts, g, faults, sensor.raw_max)
            counts = self._dead(p.id, counts, g, dead_first, dead_last, 0.0)
            full = np.zeros(n)
            full[r] = sensor.to_eng(counts)
            values[p.id] = full
        # Discretes: state codes.
        sync_loss = self._sync_loss_level(get, faults)
        for p in self.params:
            if p.type != "discrete":
                continue
            r = layout.rows[p.id]
            if p.id in col:
                codes = self._codes(p, hist, steps[jj[r], col[p.id]])
            else:
                codes = np.full(r.size, p.state_code(str(nominal_value(p))), dtype=np.int64)
                unmodelled.append(p.id)
            g = get[r]
            if p.id == "pcm_sync":
                codes = np.where(sync_loss[r] > 0, p.state_code("NOSYNC"), codes)
            codes = self._discrete_faults(p, codes, g, faults)
            codes = self._dead(p.id, codes, g, dead_first, dead_last, 0)
            full_codes = np.full(n, codes[0] if codes.size else 0, dtype=np.int64)
            full_codes[r] = codes
            values[p.id] = full_codes
        if unmodelled and not self._unmodelled_logged:
            self._unmodelled_logged = True
            log.warning("%s: no model for %s; sending nominal values", self.vehicle,
                        ", ".join(unmodelled))
        counter = self.definition.frame.counter
        frames = self.encoder.encode(values, n, counter.first + self.k % counter.modulus)
        garbled = self._garble(frames, ks, get, sync_loss)
        aos = steps[jj, col["_aos"]] > 0.5
        self.k += n
        return FrameBlock(self.vehicle, int(ks[0]), frames, times_ns, get, aos, garbled,
                          self.definition.stream)

    def _layout(self, m0: int, n: int) -> _Layout:
        """Where each parameter is sampled in a run of n frames starting at minor frame m0,
        and where its noise comes from in the run's draws (frame by frame, parameters in
        definition order, so the draws do not depend on how runs are cut)."""
        key = (m0, n)
        hit = self._layouts.get(key)
        if hit is not None:
            return hit
        mf = self.minor_frames
        minor = (m0 + np.arange(n)) % mf
        sampled = {p.id: np.ones(mf, bool) if p.frames is None
                   else np.isin(np.arange(mf), p.frames) for p in self.params}
        per_minor = np.zeros(mf, dtype=np.int64)
        rank: dict[str, NDArray[np.int64]] = {}
        for p in self.analog:
            rank[p.id] = per_minor.copy()
            per_minor += sampled[p.id]
        counts = per_minor[minor]
        start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rows, noise_pos = {}, {}
        for p in self.params:
            r = np.flatnonzero(sampled[p.id][minor])
            rows[p.id] = r
            if p.id in rank:
                noise_pos[p.id] = start[r] + rank[p.id][minor[r]]
        layout = _Layout(rows, noise_pos, int(counts.sum()))
        if len(self._layouts) > 16:
            self._layouts.clear()
        self._layouts[key] = layout
        return layout

    # --- fast quantities ------------------------------------------------------------------

    def _fast(self, get: NDArray[np.float64], faults: list[Fault]
              ) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.bool_]]]:
        """Per-frame values, and where a channel carries no signal (so no noise either)."""
        ang, rate = attitude(self.vehicle, get)
        if self.vehicle == tl.APOLLO:
            exc, exc_rate = gimbal_excursions(faults, get)  # a gimbal_lock fault's yaw
            ang[:, 2] += exc
            rate[:, 2] += exc_rate
            out = {"roll_att": ang[:, 0] % 360.0, "pitch_att": ang[:, 1] % 360.0,
                   "yaw_att": ang[:, 2] % 360.0, "roll_rate": rate[:, 0],
                   "pitch_rate": rate[:, 1], "yaw_rate": rate[:, 2]}
            vhf, ranging = _vhf(get)
            out.update(vhf)
            out.update(_sps(get))
            off = ~ranging
            return out, {"vhf_range": off, "vhf_range_rate": off}
        wrap = (ang + 180.0) % 360.0 - 180.0
        return {"att_roll": wrap[:, 0], "att_pitch": wrap[:, 1], "att_yaw": wrap[:, 2],
                "rate_roll": rate[:, 0], "rate_pitch": rate[:, 1], "rate_yaw": rate[:, 2]}, {}

    # --- sensors --------------------------------------------------------------------------

    @staticmethod
    def _levels(f: Fault, get: NDArray[np.float64]) -> NDArray[np.float64]:
        on = (get >= f.start) & ((get < f.end) if f.end is not None else True)
        ramp = np.clip((get - f.start) / f.ramp_s, 0.0, 1.0) if f.ramp_s > 0 else 1.0
        return np.where(on, ramp, 0.0)

    def _analog_faults(self, p: Parameter, v: NDArray[np.float64],
                       get: NDArray[np.float64], ks: NDArray[np.int64],
                       faults: list[Fault]) -> NDArray[np.float64]:
        for f in faults:
            if f.params.get("parameter") != p.id:
                continue
            lvl = self._levels(f, get)
            if f.name == "sensor_bias":
                v = v + f.params["offset"] * lvl
            elif f.name == "sensor_drift":
                v = v + f.params["rate_per_h"] * np.maximum(get - f.start, 0.0) / 3600.0 \
                    * (lvl > 0)
            elif f.name == "sensor_noisy":
                # Its own counter-based stream (4 uniforms a frame, Box-Muller), so neither
                # the base noise nor the way runs are cut changes the frames.
                v = v + f.params["sigma"] * lvl * self._frame_normals(ks, 5 + int(f.id[1:]))
        return v

    def _override_counts(self, p: Parameter, c: NDArray[np.float64],
                         get: NDArray[np.float64], faults: list[Fault], raw_max: float
                         ) -> NDArray[np.float64]:
        for f in faults:
            if f.params.get("parameter") != p.id or f.name not in ("sensor_stuck",
                                                                   "sensor_dropout"):
                continue
            on = self._levels(f, get) > 0
            if not on.any():
                continue
            if f.name == "sensor_dropout":
                c = np.where(on, raw_max if f.params.get("to") == "high" else 0.0, c)
                continue
            if "counts" not in f.memo:
                value = f.params.get("value")
                if value is None:
                    # The reading when the fault starts (as the noise left it).
                    value = float(self.sensors[p.id].to_eng(c[np.argmax(on)]))
                f.memo["counts"] = float(np.clip(
                    np.rint(self.sensors[p.id].to_counts(np.array([value]))[0]), 0, raw_max))
            c = np.where(on, f.memo["counts"], c)
        return c

    def _discrete_faults(self, p: Parameter, codes: NDArray[np.int64],
                         get: NDArray[np.float64], faults: list[Fault]) -> NDArray[np.int64]:
        states = sorted((p.calibration.states or {}) if p.calibration else {0: ""})
        for f in faults:
            if f.params.get("parameter") != p.id:
                continue
            on = self._levels(f, get) > 0
            if not on.any():
                continue
            if f.name == "sensor_dropout":
                codes = np.where(on, states[-1] if f.params.get("to") == "high" else states[0],
                                 codes)
            elif f.name == "sensor_stuck":
                if "code" not in f.memo:
                    value = f.params.get("value")
                    f.memo["code"] = (p.state_code(value) if isinstance(value, str)
                                      else int(codes[np.argmax(on)]))
                codes = np.where(on, f.memo["code"], codes)
        return codes

    def _dead(self, pid: str, c: NDArray[Any], get: NDArray[np.float64],
              dead_first: frozenset[str], dead_last: frozenset[str], zero: float
              ) -> NDArray[Any]:
        if pid not in dead_first and pid not in dead_last:
            return c
        if pid in dead_first and pid in dead_last:
            return np.full_like(c, zero)
        mask = np.array([pid in self.model.dead_params(float(g)) for g in get])
        return np.where(mask, zero, c)

    def _codes(self, p: Parameter, hist: Any, column: NDArray[np.float64]
               ) -> NDArray[np.int64]:
        names = hist.states.get(p.id, [])
        key = (id(names), len(names))  # a new History (fast_forward) has new name lists
        cached = self._state_maps.get(p.id)
        if cached is None or cached[0] != key:
            lut = np.array([p.state_code(nm) for nm in names], dtype=np.int64)
            self._state_maps[p.id] = (key, lut)
            cached = self._state_maps[p.id]
        return cached[1][column.astype(np.int64)]

    # --- sync loss: frames of random bytes ----------------------------------------------------

    def _sync_loss_level(self, get: NDArray[np.float64], faults: list[Fault]
                         ) -> NDArray[np.float64]:
        level = np.zeros(get.size)
        for f in faults:
            if f.name == "sync_loss":
                level = np.maximum(level, self._levels(f, get) * f.params["fraction"])
        if isinstance(self.model, ApolloModel) and self.model.sce_aux_at is not None:
            # SCE to AUX: the signal conditioner on its spare supply, the garbling gone.
            level = np.where(get >= self.model.sce_aux_at, 0.0, level)
        if isinstance(self.model, ApolloModel) and self.model.rupture_time is not None:
            # The 1.8 s dropout when the Apollo 13 pattern's tank lets go.
            since = get - self.model.rupture_time
            level = np.where((since > -1e-6) & (since < 1.8 - 1e-6), 1.0, level)
        return level

    def _garble(self, frames: NDArray[np.uint8], ks: NDArray[np.int64],
                get: NDArray[np.float64], level: NDArray[np.float64]) -> NDArray[np.bool_]:
        if not level.any():
            return np.zeros(ks.size, dtype=bool)
        u = self._frame_uniforms(ks, 4)[:, 0]
        garbled = u < level
        rows = np.flatnonzero(garbled)
        if rows.size:
            first, last = int(rows[0]), int(rows[-1])
            bg = np.random.Philox(key=self._key(3))
            bg.advance(int(ks[first]) * GARBLE_WORDS // 4)
            raw = bg.random_raw((last - first + 1) * GARBLE_WORDS)
            junk = np.asarray(raw, dtype=np.uint64).view(np.uint8).reshape(
                last - first + 1, GARBLE_WORDS * 8)[:, :self.frame_bytes]
            frames[rows] = junk[rows - first]
        return garbled

    def _frame_uniforms(self, ks: NDArray[np.int64], salt: int) -> NDArray[np.float64]:
        """Four uniforms per frame, tied to the frame's index (not to how runs are cut)."""
        out = np.empty((ks.size, LINK_DRAWS))
        # Runs of consecutive indices share one positioned generator.
        breaks = np.flatnonzero(np.diff(ks) != 1) + 1
        for a, b in zip(np.concatenate(([0], breaks)), np.concatenate((breaks, [ks.size])),
                        strict=True):
            bg = np.random.Philox(key=self._key(salt))
            bg.advance(int(ks[a]) * LINK_DRAWS // 4)
            out[a:b] = np.random.Generator(bg).random((b - a, LINK_DRAWS))
        return out

    def _frame_normals(self, ks: NDArray[np.int64], salt: int) -> NDArray[np.float64]:
        u = self._frame_uniforms(ks, salt)
        return np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2 * math.pi * u[:, 1])

    def _key(self, salt: int) -> int:
        seed, vid = self.mission.seed, VEHICLE_IDS[self.vehicle]
        return (seed * 1_000_003 + vid * 1009 + salt) % (2**64)


class ShipDownlink:
    """A ship's PCM in whichever format the mission has it in at each moment (Apollo: high
    or low bit rate, Mission.downlink_stream), each format generated by its own
    TelemetryStream with its own definition (VehicleDefinition.streams). The blocks of a
    call follow each other in time; a format's frames start at its first frame at or after
    the switch."""

    def __init__(self, mission: Mission, definition: VehicleDefinition, *,
                 noise: bool = True):
        self.mission = mission
        self.definition = definition
        self.vehicle = definition.vehicle
        self.streams = {st: TelemetryStream(mission, d, noise=noise)
                        for st, d in definition.streams.items()}
        self.main = self.streams[definition.stream]
        self.position = self.main.next_get  # GET the frames have been generated to

    @property
    def next_get(self) -> float:
        return self.position

    @property
    def next_time_ns(self) -> int:
        return LIFTOFF_NS + round(self.position * NS)

    def skip_to(self, get: float) -> None:
        self.position = max(self.position, get)

    def _switches(self, a: float, b: float) -> list[float]:
        """Times in (a, b) the format may change: the flight plan's and the instructor's."""
        times = [t for w in (tl.APOLLO_LBR if self.vehicle == tl.APOLLO else ()) for t in w]
        times += [t for t, _ in self.mission.pcm_switches.get(self.vehicle, [])]
        return sorted(t for t in set(times) if a < t < b)

    def frames_until(self, get_end: float) -> list[FrameBlock]:
        """The frames from the current position up to (not including) get_end, one block
        per stretch of one format."""
        end = min(get_end, tl.MISSION_END[self.vehicle])
        out: list[FrameBlock] = []
        if len(self.streams) == 1:
            block = self.main.frames_until(end)
            self.position = max(self.position, self.main.next_get, end)
            return [block] if block is not None else []
        t = self.position
        for cut in [*self._switches(t, end), end]:
            if cut <= t:
                continue
            stream = self.streams[self.mission.downlink_stream(self.vehicle, t)]
            stream.skip_to(t)
            block = stream.frames_until(cut)
            if block is not None:
                out.append(block)
            t = cut
        self.position = max(self.position, t)
        return out


def _vhf(get: NDArray[np.float64]
         ) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.bool_]]:
    """VHF ranging: range (km) and range rate (m/s, negative closing) while it is on."""
    kt = np.array([t for t, _ in tl.RANGE_KNOTS])
    kr = np.array([r for _, r in tl.RANGE_KNOTS])
    rng = np.interp(get, kt, kr)
    i = np.clip(np.searchsorted(kt, get, side="right") - 1, 0, kt.size - 2)
    slope = (kr[i + 1] - kr[i]) / (kt[i + 1] - kt[i]) * 1000.0
    active = ((get >= tl.VHF_RANGING) & (get < tl.DOCKING_1)) | (
        (get >= tl.UNDOCKING_1) & (get < tl.DOCKING_2)) | (
        (get >= tl.UNDOCKING_2) & (get < tl.RANGING_OFF))
    return {"vhf_range": np.where(active, rng, 0.0),
            "vhf_range_rate": np.where(active, slope, 0.0)}, active


def _sps(get: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """SPS chamber pressure (~97 psia firing, 80 ms rise, 150 ms tail-off) and gimbals."""
    pc = np.zeros(get.size)
    active = np.zeros(get.size)
    for b in tl.BURNS:
        if b.vehicle != tl.APOLLO or b.engine != "SPS":
            continue
        on = (get >= b.get) & (get < b.end)
        tail = (get >= b.end) & (get < b.end + 1.0)
        rise = np.clip(get - b.get, 0.0, 10.0)
        fall = np.clip(get - b.end, 0.0, 10.0)
        pc = np.where(on, 97.0 * (1.0 - np.exp(-rise / 0.08)), pc)
        pc = np.where(tail, 97.0 * np.exp(-fall / 0.15), pc)
        active = np.maximum(active, on)
    wob = 0.3 * np.sin(2 * math.pi * get / 2.1) * active
    return {"sps_chamber_press": pc, "sps_pitch_gimbal": 0.6 + wob,
            "sps_yaw_gimbal": -0.4 - 0.7 * wob}
