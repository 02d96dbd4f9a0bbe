"""Fault injection: the catalogue of faults, their parameters and validation, and the set
of active faults the models consult at every step.

A fault starts at a GET (or now), optionally ramps its severity linearly from 0 to 1 over
ramp_s, and lasts until it is cleared or for duration_s. Everything an instructor can send
is validated here, by the Python API and the MQTT control topic alike: an unknown fault, a
parameter of the wrong type or out of range, or an unknown key raises FaultError and
changes nothing.

Clearing a fault removes its cause and the physics recovers at its own pace (a cabin
repressurises, a fuel cell warms up again). Faults that destroy hardware (the Apollo 13
tank rupture) are reset by clearing: the instructor's reset puts the hardware back as it
was when the fault started.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from groundstation.core import flightplan as tl
from groundstation.core import messages
from groundstation.core.mission_time import format_get


class FaultError(ValueError):
    """A fault request that cannot be applied; the message says exactly why."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type | tuple[type, ...]  # accepted JSON types
    doc: str
    default: Any = None
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None

    def check(self, fault: str, value: Any) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise FaultError(f"{fault}: {self.name} must be {_kind_text(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise FaultError(f"{fault}: {self.name} must be {_kind_text(kinds)}, got "
                             f"{type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FaultError(f"{fault}: {self.name} must be a finite number")
        if self.choices is not None and value not in self.choices:
            raise FaultError(f"{fault}: {self.name} must be one of "
                             f"{', '.join(map(str, self.choices))}; got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.lo is not None and value < self.lo:
                raise FaultError(f"{fault}: {self.name} {value} is below {self.lo:g}")
            if self.hi is not None and value > self.hi:
                raise FaultError(f"{fault}: {self.name} {value} is above {self.hi:g}")
        return value


def _kind_text(kinds: tuple[type, ...]) -> str:
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


@dataclass(frozen=True)
class FaultSpec:
    name: str
    vehicles: tuple[str, ...]
    kind: str  # sensor | system | link
    doc: str
    params: tuple[Param, ...] = ()
    effects: str = ""


_PARAM = Param("parameter", str, "telemetry parameter id", required=True)
_LINK = (tl.APOLLO, tl.SOYUZ)

CATALOGUE: dict[str, FaultSpec] = {s.name: s for s in (
    # --- sensor faults (any measured parameter) ---------------------------------------
    FaultSpec("sensor_stuck", _LINK, "sensor", "the reading freezes",
              (_PARAM, Param("value", (float, str), "value to stick at (default: the reading "
                                                   "when the fault starts)")),
              "the parameter holds one value; noise stops"),
    FaultSpec("sensor_bias", _LINK, "sensor", "a constant offset on the reading",
              (_PARAM, Param("offset", float, "offset in the parameter's unit",
                             required=True)),
              "reading = truth + offset (ramped)"),
    FaultSpec("sensor_drift", _LINK, "sensor", "a reading that walks away from the truth",
              (_PARAM, Param("rate_per_h", float, "drift in the parameter's unit per hour",
                             required=True)),
              "reading = truth + rate x time since the fault started"),
    FaultSpec("sensor_noisy", _LINK, "sensor", "extra noise on the reading",
              (_PARAM, Param("sigma", float, "standard deviation in the parameter's unit",
                             required=True, lo=0.0)),
              "Gaussian noise of sigma added (ramped)"),
    FaultSpec("sensor_dropout", _LINK, "sensor", "the sensor's signal is lost",
              (_PARAM, Param("to", str, "reads the bottom or the top of the range",
                             default="low", choices=("low", "high"))),
              "reads raw count 0 (low) or full scale (high)"),
    # --- link faults -----------------------------------------------------------------------
    FaultSpec("bit_errors", _LINK, "link", "random bit errors on the downlink",
              (Param("ber", float, "bit error rate", default=1e-4, lo=1e-9, hi=0.05),),
              "frames with flipped bits (bad sync, wrong counters, wrong values)"),
    FaultSpec("frame_loss", _LINK, "link", "whole frames lost on the downlink",
              (Param("probability", float, "chance each frame is lost", default=0.05,
                     lo=0.0, hi=1.0),),
              "gaps in the frame counter"),
    FaultSpec("sync_loss", _LINK, "link",
              "garbled frames, the Apollo 12 lightning pattern (give duration_s for a burst)",
              (Param("fraction", float, "share of frames garbled", default=1.0, lo=0.0,
                     hi=1.0),),
              "frames of random bytes: no sync, no counter; pcm_sync reads NOSYNC"),
    FaultSpec("los", _LINK, "link", "loss of signal: nothing reaches the ground",
              (), "no frames; Apollo records and dumps the recording when the fault clears"),
    # --- Apollo system faults -----------------------------------------------------------
    FaultSpec("cabin_leak", _LINK, "system", "cabin leak at a given rate",
              (Param("rate_lb_h", float, "Apollo: leak in lb/h at 5 psia", lo=0.01, hi=300.0),
               Param("rate_kg_h", float, "Soyuz: leak in kg/h at 510 mm Hg", lo=0.01,
                     hi=100.0),
               Param("module", str, "Soyuz: sa (descent module) or bo (orbital module)",
                     default="bo", choices=("sa", "bo"))),
              "Apollo: O2 flow rises (the regulator makes up the loss; above 1.0 lb/h for "
              "16.5 s is the O2 FLOW HIGH alarm), then cabin and suit pressure fall when "
              "the leak exceeds what the regulators can supply; O2 tank quantities fall "
              "faster. Soyuz: module pressure and pO2 fall, O2 reserve is drawn down"),
    FaultSpec("fuel_cell_loss", (tl.APOLLO,), "system", "a fuel cell fails",
              (Param("cell", int, "fuel cell 1, 2 or 3", required=True, choices=(1, 2, 3)),),
              "the cell's volts fall to zero, its amps and reactant flows to zero, its skin "
              "temperature cools below limits; the other cells carry the load"),
    FaultSpec("fuel_cell_trip", (tl.APOLLO,), "system",
              "a fuel cell's overload/reverse-current relay opens (a transient such as "
              "Apollo 12's lightning): the cell is healthy but off the main buses",
              (Param("cell", int, "fuel cell 1, 2 or 3", required=True, choices=(1, 2, 3)),),
              "the cell's amps and flows to zero, its volts to the open-circuit ~32 V, FC BUS "
              "DISCONNECT; the other cells (or, with all three off, the entry batteries at "
              "~25 V: MAIN BUS A/B UNDERVOLT) carry the load. It stays off the buses until "
              "the crew resets it (the fuel_cell_reset procedure) or the fault is cleared"),
    FaultSpec("bus_undervolt", _LINK, "system", "a short on a DC main bus",
              (Param("bus", str, "Apollo: main bus A or B", default="B", choices=("A", "B")),
               Param("amps", float, "short-circuit load", default=40.0, lo=1.0, hi=100.0)),
              "Apollo: the bus falls below the 26.25 V MAIN BUS UNDERVOLT line, fuel-cell "
              "amps rise. Soyuz: bus and battery volts fall, load current rises, battery "
              "discharges"),
    FaultSpec("o2_tank_heater", (tl.APOLLO,), "system",
              "cryo O2 tank heater and fan stuck on (the Apollo 13 pattern)",
              (Param("tank", int, "O2 tank 1 or 2", default=2, choices=(1, 2)),
               Param("rate_psi_min", float, "pressure rise", default=60.0, lo=1.0, hi=200.0),
               Param("rupture", bool, "rupture at 1000 psia and play out Apollo 13",
                     default=False)),
              "tank pressure climbs past 950 psia; heater and fan discretes ON. With rupture: "
              "the tank drops to ~20 psia, a 1.8 s telemetry dropout, the other tank bleeds "
              "from ~880 to ~65 psia in two hours, main bus B undervolt after ~40 s falling "
              "to ~14 V, fuel cells 3 and 1 fail, main bus A ~25.5 V"),
    FaultSpec("glycol_loop", (tl.APOLLO,), "system", "glycol coolant pump failure",
              (), "evaporator outlet rises past 66 degF, radiator outlet falls below -30 degF "
                  "in the dark, inverter temperatures pass 190 degF, the cabin warms"),
    FaultSpec("entry_rcs_fumes", (tl.APOLLO,), "system",
              "the ASTP entry anomaly (Jul 24 1975): the crew misses the ELS AUTO switch at "
              "30,000 ft; from CM/SM separation to the ELS arming only",
              (), "no landing-system events at the 24,000 ft baroswitches (ELS ACTIVATE off, "
                  "apex cover on, drogues stowed); drogues by hand at 18,550 ft with the CM "
                  "RCS still firing (CM RCS JETS FIRING, damping the swing) while the cabin "
                  "pressure relief valve admits outside air, cabin pressure climbing from "
                  "5 psia; RCS disabled by hand at 9,600 ft. No caution and warning light "
                  "and no sensor sees the N2O4 fumes; the CM RCS pressures stay regulated. "
                  "Clearing it is the crew throwing ELS AUTO: below 24,000 ft the ELS "
                  "fires at once"),
    FaultSpec("dm_trapped_gas", (tl.APOLLO,), "system",
              "the false DM leak: the gas sealed between the DM's and Soyuz's closed hatches "
              "warms (or cools); only while hard docked with those hatches closed",
              (Param("delta_k", float, "change of the trapped gas temperature, K (positive "
                     "warms, as in ASTP); followed with a 4 min time constant", default=30.0,
                     lo=-100.0, hi=100.0),),
              "DM-SOYUZ TUNNEL PRESS rises (default: ~255 to ~280 mm Hg, past the 275 mm Hg "
              "yellow line in ~6 min) as if a hatch leaked into it, then levels off; the "
              "DM and orbital-module pressures do not move and no gas is lost. Clearing "
              "brings the reading back within ~15 min"),
    FaultSpec("inverter_overheat", (tl.APOLLO,), "system", "an inverter overheats",
              (Param("inverter", int, "inverter 1, 2 or 3 (3 is the standby spare)",
                     required=True, choices=(1, 2, 3)),),
              "that inverter's temperature climbs past 190 degF: INV n TEMP and the master "
              "alarm"),
    FaultSpec("fuel_cell_condenser", (tl.APOLLO,), "system",
              "a fuel cell's condenser exhaust runs hot or cold (its coolant bypass valve)",
              (Param("cell", int, "fuel cell 1, 2 or 3", required=True, choices=(1, 2, 3)),
               Param("to", str, "high or low", default="high", choices=("high", "low"))),
              "FC n COND TEMP past 178 degF (high) or below 150 degF (low): the FC n light"),
    FaultSpec("fuel_cell_ph", (tl.APOLLO,), "system",
              "electrolyte in a fuel cell's product water", (
                  Param("cell", int, "fuel cell 1, 2 or 3", required=True, choices=(1, 2, 3)),),
              "FC n PH reads HIGH (pH above 9): the FC n light"),
    FaultSpec("ac_bus_overload", (tl.APOLLO,), "system", "an AC bus overloads its inverter",
              (Param("bus", int, "AC bus 1 or 2", required=True, choices=(1, 2)),),
              "AC BUS n OVERLOAD and AC BUS n lights, the bus volts sag ~7 V"),
    FaultSpec("guidance_warning", (tl.APOLLO,), "system",
              "a guidance-system failure: the computer (CMC) or the inertial platform (ISS)",
              (Param("unit", str, "cmc or iss", default="cmc", choices=("cmc", "iss")),),
              "the CMC or ISS light and the master alarm"),
    FaultSpec("gimbal_lock", (tl.APOLLO,), "system",
              "an unplanned yaw toward the IMU's middle-gimbal limit (a manual manoeuvre or "
              "a thruster left on)",
              (Param("rate_deg_s", float, "yaw rate", default=0.5, lo=0.05, hi=3.0),
               Param("peak_deg", float, "where the yaw stops", default=87.0, lo=86.0,
                     hi=89.0)),
              "YAW climbs at the rate; past 85 deg the GIMBAL LOCK light and the master "
              "alarm; cleared, the crew yaws back at the same rate"),
    FaultSpec("sps_gimbal_motor", (tl.APOLLO,), "system",
              "an SPS gimbal drive motor overcurrent",
              (Param("axis", str, "pitch or yaw", default="pitch", choices=("pitch", "yaw")),
               Param("motor", int, "motor 1 or 2", default=1, choices=(1, 2))),
              "the PITCH or YAW GMBL 1/2 light while the gimbal motors are on (5 min before "
              "an SPS burn to 1 min after it)"),
    FaultSpec("suit_compressor", (tl.APOLLO,), "system", "the suit compressor fails",
              (), "SUIT COMP DELTA P falls below 0.22 psid (the SUIT COMP light); with no "
                  "flow through the LiOH canisters CO2 climbs slowly"),
    FaultSpec("sm_rcs_heater", (tl.APOLLO,), "system", "an SM RCS quad's heater sticks",
              (Param("quad", str, "quad A, B, C or D", required=True,
                     choices=("A", "B", "C", "D")),
               Param("stuck", str, "on or off", default="on", choices=("on", "off"))),
              "that quad's package temperature past 205 degF (on) or below 75 degF (off), "
              "its propellant pressure with it: the SM RCS light (CSM mode only)"),
    FaultSpec("cm_rcs_leak", (tl.APOLLO,), "system", "a CM RCS system loses pressure",
              (Param("system", int, "CM RCS system 1 or 2", required=True, choices=(1, 2)),
               Param("rate_psi_min", float, "pressure loss", default=5.0, lo=0.1,
                     hi=300.0)),
              "CM RCS n PRESS falls past 260 psia; the CM RCS n light only once the C&W "
              "watches the CM (after CM/SM separation)"),
    FaultSpec("crew_alert", (tl.APOLLO,), "system",
              "not a failure: the CREW ALERT command Houston sends up (the instructor plays "
              "the ground)",
              (), "the CREW ALERT light (and the master alarm) once the ship hears the "
                  "up-link, until cleared"),
    # --- Soyuz system faults ----------------------------------------------------------------
    FaultSpec("cabin_depress", (tl.SOYUZ,), "system", "Soyuz cabin depressurisation (a hole)",
              (Param("hole_mm", float, "hole diameter", default=10.0, lo=0.5, hi=50.0),
               Param("module", str, "sa or bo", default="sa", choices=("sa", "bo"))),
              "module pressure falls exponentially (Soyuz 11: 915 to 50 mm Hg in ~2 min), "
              "pO2 with it; O2 reserve drawn trying to hold pO2"),
    FaultSpec("coolant_loop", (tl.SOYUZ,), "system", "Soyuz thermal-control pump failure",
              (), "coolant pump OFF, coolant temperature passes 30 degC, cabin temperatures "
                  "and humidity rise"),
)}

COMMON = (
    Param("at", (str, float), "GET (HHH:MM:SS), event[+/-offset], GET seconds, or 'now'",
          default="now"),
    Param("ramp_s", float, "seconds to ramp from nothing to full severity", default=0.0,
          lo=0.0, hi=86400.0),
    Param("duration_s", float, "clears itself after this many seconds", lo=0.1, hi=1e7),
)


@dataclass
class Fault:
    id: str
    vehicle: str
    name: str
    params: dict[str, Any]
    start: float
    ramp_s: float = 0.0
    end: float | None = None
    # Scratch space for the models (e.g. the value a stuck sensor holds, a tank's state
    # before a rupture); not part of the request.
    memo: dict[str, Any] = field(default_factory=dict)

    def level(self, get: float) -> float:
        if get < self.start or (self.end is not None and get >= self.end):
            return 0.0
        if self.ramp_s <= 0:
            return 1.0
        return min(1.0, (get - self.start) / self.ramp_s)

    def active(self, get: float) -> bool:
        return self.start <= get and (self.end is None or get < self.end)

    def describe(self) -> messages.FaultInfo:
        return messages.FaultInfo(id=self.id, vehicle=self.vehicle, fault=self.name,
                                  params=self.params, start=format_get(self.start),
                                  ramp_s=self.ramp_s,
                                  end=None if self.end is None else format_get(self.end))


class FaultManager:
    """Every fault injected in a mission, active, scheduled or finished."""

    def __init__(self, parameter_check: Callable[[str, str], Any] | None = None):
        # parameter_check(vehicle, pid) -> the Parameter (raises KeyError when unknown);
        # sensor faults need it to check the parameter and the value.
        self.faults: list[Fault] = []
        self._next = 1
        self._check_parameter = parameter_check

    def validate(self, vehicle: str, name: str, params: Mapping[str, Any] | None,
                 now: float, at: Any = "now", ramp_s: Any = 0.0, duration_s: Any = None
                 ) -> Fault:
        """A Fault built from a request, or FaultError saying what is wrong with it."""
        if vehicle not in tl.VEHICLES:
            raise FaultError(f"no vehicle {vehicle!r}; vehicles are {', '.join(tl.VEHICLES)}")
        if not isinstance(name, str):
            raise FaultError(f"fault must be a string naming the fault, got "
                             f"{type(name).__name__}")
        spec = CATALOGUE.get(name)
        if spec is None:
            raise FaultError(f"no fault {name!r}; faults are {', '.join(CATALOGUE)}")
        if vehicle not in spec.vehicles:
            raise FaultError(f"{name} is a {', '.join(spec.vehicles)} fault, not {vehicle}")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise FaultError(f"{name}: params must be a map of parameter names to values")
        known = {p.name: p for p in spec.params}
        unknown = [k for k in params if k not in known]
        if unknown:
            raise FaultError(f"{name}: unknown parameter {unknown[0]!r}; it takes "
                             f"{', '.join(known) or 'no parameters'}")
        out: dict[str, Any] = {}
        for p in spec.params:
            if p.name in params:
                out[p.name] = p.check(name, params[p.name])
            elif p.required:
                raise FaultError(f"{name}: {p.name} is required ({p.doc})")
            elif p.default is not None:
                out[p.name] = p.default
        self._check_specific(vehicle, name, out)
        common = {c.name: c for c in COMMON}
        start = _when(at, now)
        _check_window(name, start)
        ramp = common["ramp_s"].check(name, ramp_s if ramp_s is not None else 0.0)
        end = None
        if duration_s is not None:
            end = start + common["duration_s"].check(name, duration_s)
        return Fault(id="", vehicle=vehicle, name=name, params=out, start=start, ramp_s=ramp,
                     end=end)

    def _check_specific(self, vehicle: str, name: str, params: dict[str, Any]) -> None:
        if name == "cabin_leak":
            unit = "rate_lb_h" if vehicle == tl.APOLLO else "rate_kg_h"
            other = "rate_kg_h" if vehicle == tl.APOLLO else "rate_lb_h"
            if other in params:
                raise FaultError(f"cabin_leak on {vehicle} takes {unit}, not {other}")
            if unit not in params:
                raise FaultError(f"cabin_leak: {unit} is required on {vehicle}")
            if vehicle == tl.APOLLO:
                params.pop("module", None)
        if name == "bus_undervolt" and vehicle == tl.SOYUZ and params.get("bus", "B") != "B":
            raise FaultError("bus_undervolt on soyuz: Soyuz has one bus; leave out 'bus'")
        if CATALOGUE[name].kind != "sensor":
            return
        pid = params["parameter"]
        if self._check_parameter is None:
            return
        try:
            p = self._check_parameter(vehicle, pid)
        except KeyError:
            raise FaultError(f"{name}: {vehicle} has no parameter {pid!r}") from None
        if name in ("sensor_bias", "sensor_drift", "sensor_noisy") and p.type != "analog":
            raise FaultError(f"{name}: {pid} is a {p.type}; only analog readings can be "
                             "biased, drift or be noisy")
        if p.type == "discrete" or p.type == "counter" or "value" not in params:
            if "value" in params and p.type == "discrete":
                states = (p.calibration.states or {}).values() if p.calibration else []
                if params["value"] not in states:
                    raise FaultError(f"{name}: {params['value']!r} is not a state of {pid} "
                                     f"({', '.join(states)})")
            return
        value = params["value"]
        if not isinstance(value, float):
            raise FaultError(f"{name}: value for {pid} must be a number")
        lo, hi = p.eng_range()
        if not lo <= value <= hi:
            raise FaultError(f"{name}: value {value} is outside {pid}'s sensor range "
                             f"{lo:g}..{hi:g} {p.unit}")

    def add(self, fault: Fault) -> Fault:
        fault.id = f"F{self._next}"
        self._next += 1
        self.faults.append(fault)
        return fault

    def inject(self, vehicle: str, name: str, params: Mapping[str, Any] | None = None, *,
               now: float, at: Any = "now", ramp_s: float = 0.0,
               duration_s: float | None = None) -> Fault:
        return self.add(self.validate(vehicle, name, params, now, at, ramp_s, duration_s))

    def clear(self, now: float, *, vehicle: str | None = None, fault_id: str | None = None,
              name: str | None = None) -> list[Fault]:
        """End matching faults now (or cancel ones not yet started). Raises FaultError when
        nothing matches."""
        if fault_id is not None and not isinstance(fault_id, str):
            raise FaultError("fault_id must be a string such as 'F3'")
        if name is not None and name not in CATALOGUE:
            raise FaultError(f"no fault {name!r}; faults are {', '.join(CATALOGUE)}")
        hit = [f for f in self.faults
               if (f.end is None or f.end > now)
               and (vehicle is None or f.vehicle == vehicle)
               and (fault_id is None or f.id == fault_id)
               and (name is None or f.name == name)]
        if not hit and (fault_id is not None or name is not None):
            what = fault_id if fault_id is not None else name
            raise FaultError(f"no active or scheduled fault {what!r}"
                             + (f" on {vehicle}" if vehicle else ""))
        for f in hit:
            f.end = max(now, f.start)
        return hit

    def active(self, vehicle: str, get: float) -> list[Fault]:
        return [f for f in self.faults if f.vehicle == vehicle and f.active(get)]

    def pending_or_active(self, vehicle: str | None, get: float) -> list[Fault]:
        return [f for f in self.faults if (vehicle is None or f.vehicle == vehicle)
                and (f.end is None or f.end > get)]


def tunnel_sealed(get: float) -> bool:
    """The gas between the DM's and Soyuz's hatches is trapped: hard docked with both
    hatches closed (apollo.tunnel_stage "sealed")."""
    from simulators.apollo import tunnel_stage

    return tunnel_stage(get) == "sealed"


# When that gas is sealed: hard docked, between the DM cycles' Soyuz-side stages.
def _sealed_spans() -> tuple[tuple[float, float], ...]:
    spans: list[tuple[float, float]] = []
    for dock, undock in ((tl.DOCKING_1 + 300, tl.UNDOCKING_1),
                         (tl.DOCKING_2 + 300, tl.UNDOCKING_2)):
        t = dock
        for c in tl.DM_CYCLES:
            if dock <= c.start < undock:
                spans.append((t, c.start + 16 * 60))
                t = c.hold_end + 15 * 60
        spans.append((t, undock))
    return tuple(spans)


TUNNEL_SEALED = _sealed_spans()


def _check_window(name: str, start: float) -> None:
    """Faults that only mean something in one part of the mission refuse any other start,
    rather than being accepted and showing nothing."""
    if name == "entry_rcs_fumes" and not tl.CM_SM_SEP <= start < tl.ELS_ARM:
        raise FaultError(f"entry_rcs_fumes: at {format_get(start)} is outside the CM's "
                         f"descent before the ELS is armed: from CM/SM separation "
                         f"({format_get(tl.CM_SM_SEP)}) to the arming at 30,000 ft "
                         f"({format_get(tl.ELS_ARM)}), e.g. at els-arm-4m")
    if name == "dm_trapped_gas" and not tunnel_sealed(start):
        spans = ", ".join(f"{format_get(a)}-{format_get(b)}" for a, b in TUNNEL_SEALED)
        raise FaultError(f"dm_trapped_gas: no gas is sealed between the DM and Soyuz "
                         f"hatches at {format_get(start)} (not hard docked, or the hatches "
                         f"are open in a transfer); it is sealed {spans}, e.g. at "
                         "052:00:00, the night of 17-18 July")


def _when(at: Any, now: float) -> float:
    if at is None or (isinstance(at, str) and at.strip().lower() == "now"):
        return now
    if isinstance(at, bool):
        raise FaultError("at must be 'now', a GET such as '055:53:00', an event such as "
                         "'docking+10m', or GET seconds")
    if isinstance(at, int | float):
        if not math.isfinite(at):
            raise FaultError("at must be a finite number of GET seconds")
        t = float(at)
    elif isinstance(at, str):
        try:
            t = tl.parse_time(at)
        except ValueError as exc:
            raise FaultError(f"at: {exc}") from None
    else:
        raise FaultError(f"at must be 'now', a GET string or GET seconds, got "
                         f"{type(at).__name__}")
    if t < now - 1e-6:
        raise FaultError(f"at {format_get(t)} is in the past (GET now {format_get(now)}); "
                         "use 'now' or a later time")
    return t


class FaultView:
    """What one ship's models see of the active faults at one step."""

    def __init__(self, faults: list[Fault], get: float):
        self.faults = faults
        self.get = get

    def level(self, name: str, **match: Any) -> float:
        """Highest severity (0..1) among active faults of this name whose params match."""
        best = 0.0
        for f in self.faults:
            if f.name == name and all(f.params.get(k) == v for k, v in match.items()):
                best = max(best, f.level(self.get))
        return best

    def each(self, name: str) -> list[tuple[Fault, float]]:
        return [(f, f.level(self.get)) for f in self.faults if f.name == name]
