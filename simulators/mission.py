"""The mission: both ships' models stepped together on one clock, coupled where they touch
(the docking module's gas joins the CM's or Soyuz's), the timeline's events fired at their
GET, faults applied, and each step's true values kept for the frame generators.

Physics steps are 1 s of mission time. A start later than the earliest GET is reached by a
coarse spin-up (120 s steps, no faults) from the pads, so tanks, canisters and propellant
are where the mission would have left them. Both ships are always simulated, whichever of
them transmit, so the pair stays consistent (the DM pressure seen by Apollo is the gas
Soyuz's orbital module shares during a transfer).

Everything is reproducible from the seed and the start: the process noise has its own
random stream, consumed the same way at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groundstation.core import flightplan as tl
from groundstation.core import messages
from groundstation.core.definitions import Parameter, VehicleDefinition, load_all
from groundstation.core.mission_time import EARLIEST_GET, format_get, format_utc
from simulators import orbit
from simulators.apollo import (
    DM_CM_PRESS,
    DM_N2_TARGET,
    V_DM,
    ApolloModel,
    Env,
    dm_stage,
    tunnel_stage,
)
from simulators.faults import Fault, FaultError, FaultManager, FaultView
from simulators.faults import _when as when
from simulators.physics import exchange, merge, pv_per_kg
from simulators.soyuz import SoyuzModel

DT = 1.0
LBR_STREAM = "lbr"  # a ship's low-bit-rate format (telemetry_defs/apollo_csm_lbr.yaml)
PV_N2 = pv_per_kg("n2", 293.0)  # mm Hg m^3 per kg
PV_O2 = pv_per_kg("o2", 293.0)
COARSE_DT = 120.0
HISTORY = 16384  # steps kept for the frame generators (~4.5 h)
BLOCK = 600  # steps of geometry computed at once

EventListener = Callable[[tl.Event, float], None]


class History:
    """A ring of the true values at each step: floats, and state names as small codes."""

    def __init__(self, capacity: int = HISTORY):
        self.capacity = capacity
        self.keys: list[str] = []
        self.column: dict[str, int] = {}
        self.states: dict[str, list[str]] = {}  # key -> state names by code
        self.data = np.zeros((capacity, 0))
        self.t0 = 0.0  # time of step index 0
        self.first = 0  # oldest step index kept
        self.count = 0  # steps recorded (indices first .. count-1)

    def record(self, index: int, values: dict[str, Any]) -> None:
        if not self.keys:
            self.keys = list(values)
            self.column = {k: i for i, k in enumerate(self.keys)}
            self.data = np.zeros((self.capacity, len(self.keys)))
            self._state_cols = [i for i, k in enumerate(self.keys)
                                if isinstance(values[k], str)]
            for i in self._state_cols:
                self.states[self.keys[i]] = []
            self._codes: list[dict[str, int]] = [{} for _ in self._state_cols]
        row = list(values.values())
        for n, i in enumerate(self._state_cols):
            codes = self._codes[n]
            code = codes.get(row[i])
            if code is None:
                code = codes[row[i]] = len(codes)
                self.states[self.keys[i]].append(row[i])
            row[i] = code
        self.data[index % self.capacity] = row
        self.count = index + 1
        self.first = max(self.first, self.count - self.capacity)

    def rows(self, index: NDArray[np.int64]) -> NDArray[np.float64]:
        if index.size and (index.min() < self.first or index.max() >= self.count):
            raise IndexError(f"steps {index.min()}..{index.max()} are not in the history "
                             f"({self.first}..{self.count - 1})")
        return self.data[index % self.capacity]

    def value(self, key: str, index: int) -> Any:
        v = self.data[index % self.capacity, self.column[key]]
        names = self.states.get(key)
        return names[int(v)] if names is not None else float(v)


class Mission:
    """Both ships through the ASTP timeline. Not thread-safe; one owner steps it."""

    def __init__(self, start: float = tl.APOLLO_LAUNCH - 3600.0, *, seed: int = 0,
                 historical: bool = True,
                 definitions: dict[str, VehicleDefinition] | None = None):
        if start < EARLIEST_GET:
            raise ValueError(f"start {format_get(start)} is before the earliest GET "
                             f"{format_get(EARLIEST_GET)}")
        self.seed = seed
        self.historical = historical
        # The definitions let sensor faults name and check their parameter.
        self.definitions = definitions if definitions is not None else load_all()
        self.start = float(math.floor(start))
        self.faults = FaultManager(self._parameter)
        # (vehicle, parameter) pairs any limit context looks at, e.g. a hatch's state.
        self._context_keys = sorted({
            tuple(c.when.parameter.split(".", 1)) if "." in c.when.parameter
            else (d.vehicle, c.when.parameter)
            for d in self.definitions.values() if d.vehicle in tl.VEHICLES  # not a fleet's
            for e in [*d.parameters, *d.derived]
            for c in (e.limits.contexts if e.limits else []) if c.when.parameter})
        self.apollo = ApolloModel(historical)
        self.soyuz = SoyuzModel(historical)
        self.models: dict[str, ApolloModel | SoyuzModel] = {tl.APOLLO: self.apollo,
                                                            tl.SOYUZ: self.soyuz}
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))
        self.listeners: list[EventListener] = []
        self.fired: list[tuple[tl.Event, float]] = []
        self.history = {v: History() for v in tl.VEHICLES}
        self._geo: dict[str, orbit.Geometry] = {}
        self._geo_block = -1
        self._env_cache: dict[tuple[str, float], Env] = {}
        # Commands and procedures waiting for their time: (GET, order, vehicle, name, args).
        self.actions: list[tuple[float, int, str, str, dict[str, Any]]] = []
        self.applied: list[tuple[float, str, str, dict[str, Any]]] = []
        self._action_order = 0
        # Instructor switches of a ship's PCM mode: (GET, "HBR" | "LBR"), in time order.
        self.pcm_switches: dict[str, list[tuple[float, str]]] = {v: [] for v in tl.VEHICLES}
        self._spin_up()
        self.t = self.start
        self.step_index = 0
        for v in tl.VEHICLES:
            self.history[v].t0 = self.start
        self._record()

    # --- public API ---------------------------------------------------------------------

    def phase(self, vehicle: str, get: float | None = None) -> str:
        return tl.phase_at(vehicle, self.t if get is None else get)

    def docked(self, get: float | None = None) -> bool:
        return tl.docked_at(self.t if get is None else get)

    def ended(self, vehicle: str, get: float | None = None) -> bool:
        return (self.t if get is None else get) >= tl.MISSION_END[vehicle]

    def inject(self, vehicle: str, fault: str, params: dict[str, Any] | None = None, *,
               at: Any = "now", ramp_s: float = 0.0, duration_s: float | None = None
               ) -> Fault:
        """Schedule a fault (raises FaultError and changes nothing when the request is bad).

        'now' means the next physics step: frames already generated are not rewritten."""
        return self.faults.inject(vehicle, fault, params, now=self.t, at=at, ramp_s=ramp_s,
                                  duration_s=duration_s)

    def clear(self, vehicle: str | None = None, *, fault_id: str | None = None,
              fault: str | None = None) -> list[Fault]:
        return self.faults.clear(self.t, vehicle=vehicle, fault_id=fault_id, name=fault)

    def command(self, vehicle: str, name: str, args: dict[str, Any], at: float) -> float:
        """A command's or a procedure's effect on a ship, at the first physics step at or
        after GET `at` (the next one if `at` has passed: frames already made are not
        rewritten). Returns the GET it takes effect. The arguments are the definitions',
        checked (simulators/commands.py checks them)."""
        model = self.models[vehicle]
        if name not in model.COMMANDS:
            raise KeyError(f"{vehicle} has no command {name!r}")
        when = self.t if at <= self.t else self.t + math.ceil((at - self.t) / DT - 1e-9) * DT
        self._action_order += 1
        self.actions.append((when, self._action_order, vehicle, name, dict(args)))
        self.actions.sort()
        return when

    def pcm_mode(self, vehicle: str, get: float | None = None) -> str:
        """The ship's PCM mode at a GET: "HBR" or "LBR" (the flight plan's, or the latest
        instructor switch since)."""
        return tl.pcm_mode_at(vehicle, self.t if get is None else get,
                              self.pcm_switches[vehicle])

    def downlink_stream(self, vehicle: str, get: float | None = None) -> str:
        """The stream the ship's frames go down on at a GET: its low-bit-rate definition's
        in LBR (Apollo's `lbr`), else its main one."""
        main = self.definitions[vehicle]
        if self.pcm_mode(vehicle, get) == "LBR" and LBR_STREAM in main.streams:
            return LBR_STREAM
        return main.stream

    def set_pcm_mode(self, vehicle: str, mode: str, at: Any = "now") -> tuple[float, str]:
        """An instructor switches the ship's PCM mode from `at` on ("now": the next frames
        not yet made). Returns the GET and the stream it goes down on. Raises FaultError
        for a ship with one format or a bad mode or time."""
        if mode not in ("HBR", "LBR"):
            raise FaultError(f"pcm_mode: mode must be HBR or LBR, got {mode!r}")
        if LBR_STREAM not in self.definitions[vehicle].streams:
            raise FaultError(f"pcm_mode: {vehicle} has one PCM format "
                             f"({self.definitions[vehicle].stream})")
        get = max(self.t, when(at, self.t))
        switches = self.pcm_switches[vehicle]
        switches.append((get, mode))
        switches.sort(key=lambda x: x[0])
        return get, self.downlink_stream(vehicle, get)

    def _apply_actions(self, t: float) -> None:
        while self.actions and self.actions[0][0] <= t + 1e-9:
            _, _, vehicle, name, args = self.actions.pop(0)
            self.models[vehicle].command(name, args, t)
            self.applied.append((t, vehicle, name, args))

    def advance_to(self, get: float) -> None:
        """Step the physics until its clock is at or past get."""
        while self.t < get - 1e-9:
            self._step(DT, coarse=False)
            self.step_index += 1
            self._record()

    def fast_forward(self, get: float, dt: float = 10.0) -> None:
        """Fly to get in larger steps with faults and events as usual but no telemetry
        kept: frames can only be generated again from get on (TelemetryStream.skip_to).
        For drills and tests that need hours to pass quickly."""
        while self.t < get - 1e-9:
            self._step(min(dt, get - self.t), coarse=False)
        self.t = float(round(self.t))
        self.step_index = 0
        for v in tl.VEHICLES:
            self.history[v] = History()
            self.history[v].t0 = self.t
        self._geo_block = -1
        self._env_cache.clear()
        self.start = self.t
        self._record()

    def context(self, vehicle: str, get: float) -> dict[str, Any]:
        """The limit context the ingest would use for a frame at get: the phase and the
        discretes other limit sets look at (from the true values at that step)."""
        ctx: dict[str, Any] = {"phase": tl.phase_at(vehicle, get)}
        for v, pid in self._context_keys:
            h = self.history[v]
            if pid in h.column:
                ctx[f"{v}.{pid}"] = h.value(pid, math.floor((get - h.t0) / DT + 1e-9))
        return ctx

    def env(self, vehicle: str, get: float) -> Env:
        key = (vehicle, get)
        hit = self._env_cache.get(key)
        if hit is None:
            if len(self._env_cache) > 8:
                self._env_cache.clear()
            hit = self._env_cache[key] = self._env(vehicle, get, self._geometry_at(vehicle, get))
        return hit

    def find_coverage(self, vehicle: str, after: float, seconds: float, aos: bool = True,
                      step: float = 10.0, horizon: float = 12 * 3600.0) -> float:
        """The first GET at or after `after` from which the ship stays in (aos=True) or out
        of contact for `seconds`: for drills that want a pass or a gap."""
        times = np.arange(after, after + horizon, step)
        geo = orbit.geometry(vehicle, times)
        heard = np.array([self._env(vehicle, float(t), _pick(geo, i)).aos
                          for i, t in enumerate(times)])
        want = heard if aos else ~heard
        need = math.ceil(seconds / step) + 1
        run = np.convolve(want.astype(np.int64), np.ones(need, dtype=np.int64), "valid")
        hits = np.flatnonzero(run == need)
        if hits.size == 0:
            raise ValueError(f"no {'contact' if aos else 'gap'} of {seconds:g} s within "
                             f"{horizon / 3600:g} h after {format_get(after)}")
        return float(times[hits[0]])

    def state(self, vehicle: str, get: float | None = None) -> messages.SimState:
        """The simulator's state for the retained sim/state/<vehicle> message, as of get
        (default: the physics clock; the runner gives the time of its newest frame)."""
        t = self.t if get is None else get
        e = self.env(vehicle, t)
        return messages.SimState(
            vehicle=vehicle, get=t, get_text=format_get(t), utc=format_utc(t),
            phase=self.phase(vehicle, t), docked=bool(self.docked(t)), aos=bool(e.aos),
            station=e.station, relay=bool(e.relay), ended=bool(self.ended(vehicle, t)),
            faults=[f.describe() for f in self.faults.pending_or_active(vehicle, t)],
            pcm_mode=(self.pcm_mode(vehicle, t)
                      if LBR_STREAM in self.definitions[vehicle].streams else None),
            stream=self.downlink_stream(vehicle, t))

    # --- stepping -----------------------------------------------------------------------

    def _spin_up(self) -> None:
        """From the pads to the start in coarse steps: no faults, no telemetry."""
        t = EARLIEST_GET
        times = np.arange(t, self.start, COARSE_DT)
        if times.size == 0:
            self.t = self.start
            return
        geo = {v: orbit.geometry(v, times) for v in tl.VEHICLES}
        self.t = t
        for i, t0 in enumerate(times):
            dt = min(COARSE_DT, self.start - t0)
            self.t = float(t0)
            envs = {v: self._env(v, self.t, _pick(geo[v], i)) for v in tl.VEHICLES}
            self._step(dt, coarse=True, envs=envs)
        self.t = self.start

    def _step(self, dt: float, coarse: bool, envs: dict[str, Env] | None = None) -> None:
        t = self.t
        if envs is None:
            envs = {v: self.env(v, t) for v in tl.VEHICLES}
        views = {v: FaultView([] if coarse else self.faults.active(v, t), t)
                 for v in tl.VEHICLES}
        if not coarse:
            self._apply_actions(t)
        self.soyuz.step(t, dt, envs[tl.SOYUZ], views[tl.SOYUZ], self.rng, coarse)
        self.apollo.step(t, dt, envs[tl.APOLLO], views[tl.APOLLO], self.rng, coarse)
        self._couple_dm(t, dt)
        if not coarse:
            for e in tl.events_between(t, t + dt):
                self.fired.append((e, t + dt))
                for listener in self.listeners:
                    listener(e, t + dt)
        self.t = t + dt

    def _couple_dm(self, t: float, dt: float) -> None:
        """The docking module's gas with the CM's or Soyuz's, by the stage of its cycle."""
        a, s, dm = self.apollo, self.soyuz, self.apollo.dm
        stage = dm_stage(t)
        soyuz_side = [s.sa, s.bo] if s.hatch_open(t) else [s.bo]
        if stage == "cm":
            merge(a.cm, dm)
        elif stage == "press_n2":
            add = min(15.0 / 60.0 * dt, max(DM_N2_TARGET - dm.press, 0.0)) * V_DM
            add = min(add, a.dm_n2 * PV_N2)  # from the DM's N2 spheres
            dm.n2 += add
            a.dm_n2 -= add / PV_N2
        elif stage == "equalise_bo":
            exchange(dm, s.bo, dt, 60.0)
            if len(soyuz_side) == 2:
                merge(*soyuz_side)
        elif stage == "soyuz":
            merge(dm, *soyuz_side)
        elif stage == "vent":
            over = dm.press - (DM_CM_PRESS - 1.0)
            if over > 0:
                dm.vent_to(DM_CM_PRESS - 1.0, dt, max(over / (20.0 / 60.0), dt))
        elif stage == "flush":
            # Flow-through O2 flush at constant pressure: 15 min time constant.
            k = 1.0 - math.exp(-dt / 900.0)
            dm.remove_fraction(k)
            add = min(max(DM_CM_PRESS * V_DM - dm.total, 0.0), a.dm_o2 * PV_O2)
            dm.o2 += add  # from the DM's O2 spheres
            a.dm_o2 -= add / PV_O2
        elif stage == "equalise_cm":
            exchange(dm, a.cm, dt, 60.0)
        # The volume between the DM's and Soyuz's hatches: vented before undocking, filled
        # from the DM at hard dock (the leak check; estimate), the DM's gas while the hatch
        # valves are open, then sealed at whatever it was left at.
        where = tunnel_stage(t)
        if where == "vacuum":
            a.tunnel_gas = 0.0
        elif where == "dm" or a.tunnel_gas == 0.0:
            a.tunnel_gas = dm.press

    def _record(self) -> None:
        t = self.t
        for v, model in self.models.items():
            e = self.env(v, t)
            values = model.truth(t, e)
            if "pcm_mode" in values:
                values["pcm_mode"] = self.pcm_mode(v, t)
            values["_aos"] = 1.0 if e.aos and not self.ended(v, t) else 0.0
            values["_relay"] = 1.0 if e.relay else 0.0
            self.history[v].record(self.step_index, values)

    # --- geometry ----------------------------------------------------------------------

    def _geometry_at(self, vehicle: str, get: float) -> orbit.Geometry:
        i = math.floor((get - self.start) / DT + 1e-9)
        block = i // BLOCK
        if block != self._geo_block:
            times = (self.start + (block * BLOCK + np.arange(BLOCK)) * DT).astype(np.float64)
            self._geo = {v: orbit.geometry(v, times) for v in tl.VEHICLES}
            self._geo_block = block
        return _pick(self._geo[vehicle], i - block * BLOCK)

    def _env(self, vehicle: str, get: float, g: orbit.Geometry) -> Env:
        sunlit = float(g.sunlit[0])
        station = int(g.station[0])
        elevation = float(g.elevation[0])
        code = orbit.NETWORK[vehicle][station].code if station >= 0 else ""
        aos, relay = station >= 0, False
        if vehicle == tl.APOLLO:
            if not aos and tl.docked_at(get) and bool(g.ats6[0]):
                aos, relay, code = True, True, "ATS-6"
            if get < tl.APOLLO_ORBIT:
                aos, elevation, code = True, 45.0, "MIL"  # pad hardline, launch tracking
            elif tl.BLACKOUT[0] <= get < tl.BLACKOUT[1]:
                aos, code = False, ""
            elif get >= tl.BLACKOUT[1]:
                aos, elevation, code = True, 30.0, "HAW"  # recovery forces near Hawaii
        else:
            if get < tl.SOYUZ_ORBIT:
                aos, elevation, code = True, 45.0, "NIP-1"  # Baikonur
            elif tl.SOYUZ_MODULE_SEP + 300 <= get < tl.SOYUZ_MODULE_SEP + 600:
                aos, code = False, ""  # entry blackout (estimate)
            elif get >= tl.SOYUZ_MODULE_SEP + 600:
                aos, elevation, code = True, 30.0, "NIP-4"  # descent and landing
            if get < tl.SOYUZ_LAUNCH:
                sunlit = 1.0
        if get < 0 and vehicle == tl.APOLLO:
            sunlit = 1.0  # on the pad in the afternoon
        return Env(sunlit=sunlit, aos=aos, elevation=elevation, relay=relay, station=code)

    def _parameter(self, vehicle: str, pid: str) -> Parameter:
        d = self.definitions.get(vehicle)
        if d is None:
            raise KeyError(pid)
        return d.parameter(pid)


def _pick(g: orbit.Geometry, i: int) -> orbit.Geometry:
    return orbit.Geometry(g.sunlit[i:i + 1], g.elevation[i:i + 1], g.station[i:i + 1],
                          g.ats6[i:i + 1])
