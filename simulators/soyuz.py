"""Soyuz 19 (7K-TM): subsystem models sharing one state.

СОЖ (life support). The descent module (СА, 4 m^3) and orbital module (БО, 6 m^3) are gas
inventories, one volume while the hatch between them is open. Launched at sea-level air;
on the second day (after "their first 28 hours") the crew vents to ~510 mm Hg while the
regenerators and the O2 reserve raise the O2 fraction to ~35 % (pO2 ~180 mm Hg): the
American transfers then need no long prebreathe. Regenerators hold pO2; LiOH cartridges,
changed each Moscow morning, take out CO2; a small leak is made up from the air reserve.

СТР (thermal). A pumped coolant loop to a radiator that swings with orbital day and night;
cabin temperatures and humidity follow the loop and the crew.

СЭП (power). Solar arrays in sunlight, nothing in eclipse; the buffer battery charges
(current limited, tapering when full) and carries the eclipse; its voltage follows its
charge. After module separation the descent module runs on its reserve battery.

ДУ (propulsion). The main engine (КДУ) burns its propellant and pressurant at each burn;
approach-and-attitude (ДПО) and attitude (ДО) thrusters use theirs by phase, most while
Soyuz flies the second docking.

ССВП (docking). The androgynous unit passive for the first docking and active for the
second: ring, capture, hooks, latches, seal; the БО-DM hatch and valve follow the DM cycles.

Commands (`command`; the list is telemetry_defs/commands/soyuz.yaml): the crew closes or
opens the СА-БО hatch (a leak in the БО then no longer draws on the СА, whose make-up air
represses it); radio commands switch the TV and the coolant loop's backup pump, and each one
received steps the command counter.

Figures not in astp-facts.md are estimates.
"""

from __future__ import annotations

import math
from typing import Any

from groundstation.core import flightplan as tl
from simulators.apollo import Env, dm_stage
from simulators.faults import FaultView
from simulators.physics import Gas, breakthrough, clamp, pv_per_kg, relax

V_SA, V_BO = 4.0, 6.0  # m^3 (estimates; ~10 m^3 habitable)
PV_O2 = pv_per_kg("o2", 293.0)  # per kg
PV_N2 = pv_per_kg("n2", 293.0)
PV_CO2 = pv_per_kg("co2", 293.0)
PV_AIR = 0.21 * PV_O2 + 0.79 * PV_N2  # per kg of air (by mole fraction, near enough)
ASTP_PRESS, SEA_PRESS = 510.0, 760.0  # mm Hg
PO2_SET = {"SEA_LEVEL": 160.0, "ASTP": 180.0}
CO2_PER_CREW, O2_PER_CREW = 0.0417, 0.035  # kg/h
SCRUB_FLOW, LIOH_CAPACITY = 30.0, 3.0  # m^3/h, kg CO2 per cartridge (estimates)
LEAK = 0.02  # kg/h at 510 mm Hg (estimate)
BATT_AH = 120.0  # buffer battery capacity (estimate)
KDU_LOAD, KDU_FLOW = 500.0, 1.48  # kg, kg/s (estimates)
DPO_LOAD, DO_LOAD = 150.0, 70.0  # kg (estimates)
SHORT_R = 0.12  # ohm

BO_PARAMS = frozenset([
    "bo_press", "bo_po2", "bo_temp", "bo_humidity", "o2_reserve_press", "water_reserve",
    "coolant_temp", "radiator_temp", "coolant_pump", "batt_current", "array_current",
    "batt_volts", "batt_charge", "array_temp", "array_deployed", "kdu_fuel_press",
    "kdu_ox_press", "dpo_press", "do_press", "dpo_qty", "do_qty", "kdu_pressurant_press",
    "kdu_tank_temp", "kdu_prop_qty", "dock_ring_pos", "dock_capture", "dock_hooks",
    "dock_latches", "dock_mode", "dock_sealed", "hatch_bo_dm", "dock_ring_travel",
    "bo_dm_valve", "sa_bo_valve"])

PHASE_LOAD = {"prelaunch": 14.0, "ascent": 16.0, "orbit": 15.0, "rendezvous": 19.0,
              "docked": 17.0, "transfer": 18.0, "undocked": 18.0, "entry": 13.0}  # A, est.
DPO_USE = {"prelaunch": 0.0, "ascent": 0.0, "orbit": 0.05, "rendezvous": 0.4, "docked": 0.0,
           "transfer": 0.0, "undocked": 0.3, "entry": 0.5}  # kg/h
DO_USE = {"prelaunch": 0.0, "ascent": 0.0, "orbit": 0.08, "rendezvous": 0.1, "docked": 0.0,
          "transfer": 0.0, "undocked": 0.1, "entry": 0.2}  # kg/h
TV_SESSIONS = ((tl.HANDSHAKE, tl.HANDSHAKE + 3600), (tl.hms(65), tl.hms(66)),
               (tl.hms(71, 10), tl.hms(72)), (tl.hms(90), tl.hms(90, 30)))  # estimates
HATCH_OPEN = (tl.SOYUZ_ORBIT + 3600, tl.SOYUZ_DEORBIT - 5400)  # SA-BO hatch (estimates)


def sa_bo_open(get: float) -> bool:
    return HATCH_OPEN[0] <= get < HATCH_OPEN[1]


def sud_mode(phase: str, get: float) -> str:
    if phase in ("prelaunch", "ascent"):
        return "OFF"
    if tl.DOCKING_2 - 1800 <= get < tl.DOCKING_2:
        return "DOCK"
    if phase in ("docked", "transfer"):
        return "OFF"
    if phase in ("rendezvous", "undocked", "entry"):
        return "STAB"
    for b in tl.BURNS:
        if b.vehicle == tl.SOYUZ and b.get - 600 <= get < b.end + 300:
            return "STAB"
    return "ORIENT"


class SoyuzModel:
    def __init__(self, historical: bool = True):
        self.historical = historical
        self.sa = Gas.at(V_SA, SEA_PRESS, 0.21, 0.3)
        self.bo = Gas.at(V_BO, SEA_PRESS, 0.21, 0.3)
        self.mode = "SEA_LEVEL"
        self.lowered = False
        self.o2_reserve = 30.0  # kg; 10 atm per kg in the bottles (estimate)
        self.air_reserve = 20.0  # kg, for make-up and repress (not telemetered)
        self.repress = False
        self.lioh = 0.4
        self.next_lioh = tl.hms(8, 30)  # Moscow mornings (estimate)
        self.rh = 45.0
        self.sa_temp, self.bo_temp = 21.0, 20.0
        self.coolant, self.radiator = 13.0, -10.0
        self.array_temp, self.tank_temp = 20.0, 17.0
        self.soc = 0.95
        self.batt_i, self.batt_v, self.array_i, self.load = 0.0, 29.3, 0.0, 14.0
        self.bus = 29.2
        self.kdu = KDU_LOAD
        self.dpo, self.do = DPO_LOAD, DO_LOAD
        self.water = 95.0
        self.cmd_count = 0.0
        self.load_jitter = 0.0
        self.crew = 0
        self.activity = 1.0
        self.pump_on = True
        self.kdu_burning = False
        # What the ground's commands and the crew's procedures set (`command`).
        self.hatch_crew: str | None = None  # the СА-БО hatch as the crew left it
        self.tv_cmd: str | None = None  # the TV switched by radio command
        self.backup_pump = False  # the coolant loop on its backup pump

    COMMANDS = frozenset({"close_hatch_sa_bo", "open_hatch_sa_bo", "tv_power",
                          "coolant_backup_pump"})
    RADIO = frozenset({"tv_power", "coolant_backup_pump"})

    def command(self, name: str, args: dict[str, Any], t: float) -> None:
        """A radio command or a procedure takes effect at t (arguments checked)."""
        if name == "close_hatch_sa_bo":
            self.hatch_crew = "CLOSED"
        elif name == "open_hatch_sa_bo":
            self.hatch_crew = "OPEN"
        elif name == "tv_power":
            self.tv_cmd = str(args["state"]).upper()
        elif name == "coolant_backup_pump":
            self.backup_pump = True
        else:
            raise KeyError(f"soyuz has no command {name!r}")
        if name in self.RADIO:
            self.cmd_count += 1.0  # the on-board counter of radio commands received

    def hatch_open(self, get: float) -> bool:
        """The СА-БО hatch: the timeline's, unless the crew closed or opened it (while the
        timeline has it open: it is closed for good before the deorbit)."""
        if self.hatch_crew is not None and sa_bo_open(get):
            return self.hatch_crew == "OPEN"
        return sa_bo_open(get)

    def cabin(self, get: float) -> list[Gas]:
        """The gas volumes the crew breathes (one or both modules)."""
        return [self.sa, self.bo] if self.hatch_open(get) else [self.sa]

    def step(self, t: float, dt: float, env: Env, fx: FaultView, rng: Any, coarse: bool
             ) -> None:
        h = dt / 3600.0
        phase = tl.phase_at(tl.SOYUZ, t)
        self.crew = tl.crew_aboard(tl.SOYUZ, t)
        asleep = tl.crew_asleep(tl.SOYUZ, t)
        self.activity = 1.3 if phase == "transfer" else (0.75 if asleep else 1.05)
        self.load_jitter = (self.load_jitter * math.exp(-dt / 300.0)
                            + 0.4 * math.sqrt(1 - math.exp(-2 * dt / 300.0))
                            * float(rng.standard_normal()))
        self._atmosphere(t, dt, h, fx)
        self._thermal(t, dt, env, fx)
        self._power(t, h, phase, env, fx)
        self._propulsion(t, dt, h, phase)
        if env.aos:
            self.cmd_count += dt / 45.0  # ground commands during a pass (estimate)

    # --- life support ---------------------------------------------------------------------

    def _atmosphere(self, t: float, dt: float, h: float, fx: FaultView) -> None:
        if t < tl.SOYUZ_LAUNCH:
            # The ground holds sea-level air until the hatch is closed for launch.
            for g in (self.sa, self.bo):
                fresh = Gas.at(g.volume, SEA_PRESS, 0.21, 0.0)
                g.o2, g.n2 = fresh.o2, fresh.n2
        if t >= tl.SOYUZ_MODULE_SEP:
            self.bo.o2 = self.bo.n2 = self.bo.co2 = 0.0
        cabin = self.cabin(t)
        # The modules the crew shares are one pool of gas for this step.
        pool = Gas(sum(g.volume for g in cabin), sum(g.o2 for g in cabin),
                   sum(g.n2 for g in cabin), sum(g.co2 for g in cabin))
        members = {"sa": pool, "bo": pool if len(cabin) == 2 else self.bo}
        if t >= tl.SOYUZ_MODULE_SEP:
            members["bo"] = Gas(V_BO)  # gone: nothing to leak
        # Leaks and holes: choked flow, so the loss goes with the pressure.
        for name, g in members.items():
            rate = LEAK * (V_SA if name == "sa" else V_BO) / (V_SA + V_BO)
            rate += sum(f.params["rate_kg_h"] * lvl for f, lvl in fx.each("cabin_leak")
                        if f.params.get("module", "bo") == name)
            g.remove_amount(rate * PV_AIR * h * g.press / ASTP_PRESS)
            for f, lvl in fx.each("cabin_depress"):
                if f.params["module"] == name and lvl > 0:
                    # m'/m = Cd A 0.0404 R sqrt(T) / V for air through a hole.
                    area = math.pi * (f.params["hole_mm"] / 2000.0) ** 2
                    k = 0.8 * 0.0404 * area * math.sqrt(293.0) * 287.0 / g.volume * lvl
                    g.remove_fraction(1.0 - math.exp(-k * dt))
        # Metabolism and the LiOH cartridge.
        pool.co2 += self.crew * CO2_PER_CREW * self.activity * PV_CO2 * h
        pool.o2 = max(pool.o2 - self.crew * O2_PER_CREW * self.activity * PV_O2 * h, 0.0)
        if t >= self.next_lioh:
            self.lioh = 0.0
            self.next_lioh += 86400.0
        eff = breakthrough(self.lioh, LIOH_CAPACITY)
        before = pool.co2
        pool.co2 *= math.exp(-SCRUB_FLOW * eff * h / pool.volume)
        self.lioh += (before - pool.co2) / PV_CO2
        # Lowering the cabin for ASTP: vent at ~3 mm Hg a minute while O2 is raised.
        total = pool.press
        if t >= tl.SOYUZ_LOWERING and not self.lowered:
            pool.vent_to(ASTP_PRESS - 2.0, dt, 60.0 * (total - ASTP_PRESS + 20) / 3.0)
            total = pool.press
            if total <= 540.0:
                self.mode = "ASTP"
            if total <= ASTP_PRESS + 1.0:
                self.lowered = True
        # pO2 control: regenerators (up to 0.25 kg/h), the O2 reserve when they cannot keep
        # up or while the cabin is being enriched during the lowering.
        lowering = t >= tl.SOYUZ_LOWERING and not self.lowered
        set_po2 = PO2_SET["ASTP"] if t >= tl.SOYUZ_LOWERING else PO2_SET["SEA_LEVEL"]
        want = (set_po2 - pool.po2) * pool.volume / PV_O2  # kg to reach the set point
        if want > 0 and t >= tl.SOYUZ_LAUNCH:
            regen = min(want, 0.25 * h)
            from_reserve = 0.0
            if lowering or pool.po2 < set_po2 - 15:
                from_reserve = min(want - regen, 3.0 * h, self.o2_reserve)
            self.o2_reserve -= from_reserve
            pool.o2 += (regen + from_reserve) * PV_O2
        # Total-pressure make-up from the air reserve: slow for the normal leak, a repress
        # after a leak is stopped (20 mm Hg a minute, estimate).
        set_p = ASTP_PRESS if self.mode == "ASTP" else SEA_PRESS
        # Holed: a leak or a hole in a module the crew's gas shares (a leak in the БО
        # behind a closed hatch does not stop the СА's make-up).
        shared = {"sa", "bo"} if len(cabin) == 2 else {"sa"}
        holed = any(lvl > 0 and f.params.get("module", "bo") in shared
                    for f, lvl in fx.each("cabin_leak")) \
            or any(lvl > 0 and f.params.get("module", "sa") in shared
                   for f, lvl in fx.each("cabin_depress"))
        total = pool.press
        if t >= tl.SOYUZ_LAUNCH and (self.lowered or t < tl.SOYUZ_LOWERING):
            # Topped up from 10 below to 5 below the set point (510 -> 500..505 mm Hg).
            if total < set_p - 10.0 and not holed:
                self.repress = True
            if self.repress:
                add = min((set_p - 5.0 - total) * pool.volume,
                          20.0 / 60.0 * dt * pool.volume)
                add = min(max(add, 0.0), self.air_reserve * PV_AIR)
                self.air_reserve -= add / PV_AIR
                pool.o2 += 0.21 * add
                pool.n2 += 0.79 * add
                if total >= set_p - 6.0 or holed:
                    self.repress = False
        for g in cabin:
            share = g.volume / pool.volume
            g.o2, g.n2, g.co2 = pool.o2 * share, pool.n2 * share, pool.co2 * share

    # --- thermal ---------------------------------------------------------------------------

    def _thermal(self, t: float, dt: float, env: Env, fx: FaultView) -> None:
        s = env.sunlit
        fail = 0.0 if self.backup_pump else fx.level("coolant_loop")
        self.pump_on = fail < 0.5
        self.radiator = relax(self.radiator, (1 - fail) * (-30.0 + 40.0 * s)
                              + fail * (-55.0 + 70.0 * s), dt, 600.0)
        self.coolant = relax(self.coolant, (1 - fail) * (13.0 + 1.0 * (s - 0.58)) + fail * 36.0,
                             dt, 900.0 if fail < 0.5 else 1500.0)
        crew_heat = 0.5 * (self.crew - 2)
        self.sa_temp = relax(self.sa_temp, 21.0 + 0.8 * (s - 0.58) + crew_heat + fail * 12.0,
                             dt, 5400.0)
        self.bo_temp = relax(self.bo_temp, 20.0 + 1.5 * (s - 0.58) + crew_heat + fail * 12.0,
                             dt, 5400.0)
        self.rh = relax(self.rh, 45.0 + 6.0 * (self.crew - 2) * (self.crew > 0) + fail * 30.0,
                        dt, 3600.0)
        self.array_temp = relax(self.array_temp, -75.0 + 125.0 * s, dt, 360.0)
        self.tank_temp = relax(self.tank_temp, 17.0 + 2.0 * (s - 0.58), dt, 3600.0)

    # --- power -----------------------------------------------------------------------------

    def _power(self, t: float, h: float, phase: str, env: Env, fx: FaultView) -> None:
        load = PHASE_LOAD[phase] + 1.5 * (1.0 - env.sunlit) + self.load_jitter
        load += 1.0 if self.activity > 1.0 else 0.0
        load += 2.0 if self.tv(t) == "ON" else 0.0
        short = sum(f.params["amps"] * lvl for f, lvl in fx.each("bus_undervolt"))
        self.load = max(load, 0.0) + short
        if t >= tl.SOYUZ_MODULE_SEP:
            self.array_i = self.batt_i = 0.0
            self.bus = 30.5 - 0.1 * self.load - 0.2 - SHORT_R * short
            return
        deployed = t >= tl.SOYUZ_ORBIT + 120
        # ~32 A in full sun: ~0.5 kW averaged over an orbit (facts sheet).
        self.array_i = (32.0 * env.sunlit * (0.97 + 0.03 * math.sin(t / 4000.0))
                        if deployed else 0.0)
        net = self.array_i - self.load
        if t < tl.SOYUZ_LAUNCH:
            net = 0.0  # ground power on the pad
        if net >= 0:
            taper = clamp((1.0 - self.soc) / 0.05, 0.1, 1.0)
            self.batt_i = min(net, 15.0 * taper)
            self.soc += self.batt_i * 0.97 * h / BATT_AH
        else:
            self.batt_i = net
            self.soc += net * h / BATT_AH
        self.soc = clamp(self.soc, 0.0, 1.0)
        self.batt_v = 26.8 + 2.8 * self.soc + 0.06 * self.batt_i
        self.bus = self.batt_v - 0.1 - SHORT_R * short

    # --- propulsion ------------------------------------------------------------------------

    def _propulsion(self, t: float, dt: float, h: float, phase: str) -> None:
        self.kdu_burning = False
        for b in tl.BURNS:
            if b.vehicle != tl.SOYUZ:
                continue
            overlap = max(0.0, min(t + dt, b.end) - max(t, b.get))
            if overlap > 0:
                self.kdu = max(self.kdu - KDU_FLOW * overlap, 0.0)
                self.kdu_burning = True
        dpo = DPO_USE[phase]
        if tl.DOCKING_2 - 1800 <= t < tl.DOCKING_2:
            dpo = 3.0  # Soyuz flies the second docking
        self.dpo = max(self.dpo - dpo * h, 0.0)
        self.do = max(self.do - DO_USE[phase] * h, 0.0)
        self.water = max(self.water - 0.2 * self.crew * h, 0.0)  # % of the tank per hour

    # --- telemetry -------------------------------------------------------------------------

    def tv(self, t: float) -> str:
        if self.historical and t < tl.SOYUZ_TV_REPAIRED:
            return "FAIL"
        if self.tv_cmd is not None:
            return self.tv_cmd
        return "ON" if any(a <= t < b for a, b in TV_SESSIONS) else "OFF"

    def dead_params(self, t: float) -> frozenset[str]:
        return BO_PARAMS if t >= tl.SOYUZ_MODULE_SEP else frozenset()

    def truth(self, t: float, env: Env) -> dict[str, Any]:
        phase = tl.phase_at(tl.SOYUZ, t)
        stage = dm_stage(t)
        docked = tl.docked_at(t)
        mode = sud_mode(phase, t)
        active = tl.DOCKING_2 - 1800 <= t < tl.UNDOCKING_2
        ring_out = tl.DOCKING_2 - 1200 <= t < tl.DOCKING_2 + 150
        travel = 0.0
        if tl.DOCKING_2 - 1200 <= t < tl.DOCKING_2:
            travel = 0.40
        elif tl.DOCKING_2 <= t < tl.DOCKING_2 + 150:
            travel = 0.40 * (1.0 - (t - tl.DOCKING_2) / 150.0)
        hooks = (tl.DOCKING_1 + 300 <= t < tl.UNDOCKING_1
                 or tl.DOCKING_2 + 300 <= t < tl.UNDOCKING_2)
        sealed = (tl.DOCKING_1 + 360 <= t < tl.UNDOCKING_1
                  or tl.DOCKING_2 + 360 <= t < tl.UNDOCKING_2)
        pressurant = 250.0 * (1.0 - 0.5 * (KDU_LOAD - self.kdu) / KDU_LOAD)
        feed = 9.8 if self.kdu_burning else 10.6 + 0.075 * (self.tank_temp - 17.0)
        return {
            "sud_mode": mode,
            "ikv_lock": "LOCK" if mode == "ORIENT" else "NOLOCK",
            "sa_press": self.sa.press,
            "bo_press": self.bo.press,
            "sa_po2": self.sa.po2,
            "pco2": self.cabin(t)[-1].pco2,
            "bo_po2": self.bo.po2,
            "sa_temp": self.sa_temp,
            "bo_temp": self.bo_temp,
            "sa_humidity": self.rh + 1.5,
            "bo_humidity": self.rh,
            "o2_reserve_press": 10.0 * self.o2_reserve,
            "water_reserve": self.water,
            "fan_sa": "ON" if t >= tl.SOYUZ_CREW_INGRESS else "OFF",
            "sa_bo_valve": "OPEN" if HATCH_OPEN[0] - 300 <= t < HATCH_OPEN[0] else "CLOSED",
            "coolant_temp": self.coolant,
            "radiator_temp": self.radiator,
            "coolant_pump": "ON" if self.pump_on else "OFF",
            "bus_volts": self.bus,
            "batt_current": self.batt_i,
            "array_current": self.array_i,
            "load_current": self.load,
            "batt_volts": self.batt_v,
            "batt_charge": 100.0 * self.soc,
            "reserve_batt_volts": 30.5 - (0.1 * self.load if t >= tl.SOYUZ_MODULE_SEP else 0.0),
            "array_temp": self.array_temp,
            "array_deployed": "DEPLOYED" if t >= tl.SOYUZ_ORBIT + 120 else "STOWED",
            "kdu_engine": "FIRING" if self.kdu_burning else "OFF",
            "kdu_fuel_press": feed,
            "kdu_ox_press": feed + 0.2,
            "dpo_press": 22.0 + 10.0 * self.dpo / DPO_LOAD,
            "do_press": 22.0 + 10.0 * self.do / DO_LOAD,
            "dpo_qty": self.dpo,
            "do_qty": self.do,
            "kdu_pressurant_press": pressurant,
            "kdu_tank_temp": self.tank_temp,
            "kdu_prop_qty": self.kdu,
            "dock_ring_pos": "EXTENDED" if ring_out else "RETRACTED",
            "dock_capture": "CAPTURE" if docked else "NOCAPTURE",
            "dock_hooks": "CLOSED" if hooks else "OPEN",
            "dock_latches": "LATCHED" if hooks else "UNLATCHED",
            "dock_mode": "ACTIVE" if active else "PASSIVE",
            "dock_sealed": "SEALED" if sealed else "UNSEALED",
            "hatch_sa_bo": "OPEN" if self.hatch_open(t) else "CLOSED",
            "hatch_bo_dm": "OPEN" if stage == "soyuz" else "CLOSED",
            "dock_ring_travel": travel,
            "bo_dm_valve": "OPEN" if stage in ("equalise_bo", "soyuz") else "CLOSED",
            "cmd_link_lock": "LOCK" if env.aos else "NOLOCK",
            "tv_status": self.tv(t),
            "tm_mode": "REALTIME",
            "rf_signal": (-105.0 + 25.0 * math.sin(math.radians(max(env.elevation, 0.0)))
                          if env.aos else -128.5),
            "cmd_count": float(int(self.cmd_count) % 256),
            "vhf_voice": "ON" if tl.RENDEZVOUS <= t < tl.RANGING_OFF else "OFF",
            "vhf_ranging": "ON" if tl.ranging_active(t) else "OFF",
            "cabin_press_mode": self.mode,
        }
