"""The Apollo CSM (with the docking module): subsystem models that share one state, so a
fault shows up everywhere a flight controller would look for it.

ECS. The CM cabin is a gas inventory (O2, N2, CO2). The pad atmosphere is 60/40 O2/N2 at
14.7 psia; in ascent the relief valve vents it to ~5.2 psia; in orbit the O2 regulator
holds ~5.0 psia against a 0.1 lb/h leak and the crew's O2 use, while a slow purge replaces
the launch nitrogen with O2 over the first day. The crew's CO2 is taken out by two LiOH
canisters in parallel, changed alternately every 12 h; their efficiency falls as they
load, so pCO2 rises between changes and with visitors aboard. The O2 flow meter reads what
the regulators deliver. The glycol loop carries heat to radiators that swing with orbital
day and night; the evaporator boils waste water when the radiators run warm.

EPS. Three fuel cells in parallel share the load (a polarisation line each, reactant flows
by Faraday's law: 0.0204 lb/h O2 and 0.00258 lb/h H2 per amp) onto two main buses; loads
change with phase, night heaters and burns. After CM/SM separation three entry batteries
carry the CM. Three inverters (two feeding the AC buses, the third on standby) are cooled by
the glycol. Each fuel cell's condenser exhaust temperature and product-water pH are watched.

CRYO. Two O2 and two H2 tanks; the fuel cells and the ECS draw on them (the higher-pressure
tank of a pair supplies more), heaters cycle to hold pressure, quantities fall.

PROP. SPS propellant and helium are used by each burn; SM RCS quads by attitude control,
more in rendezvous and for the separation burn; quads are heater-controlled.

DM. The docking module's gas joins the CM's when the tunnel hatches are open; each
transfer cycle raises it to ~485 mm Hg with N2 from its spheres, shares it with Soyuz's
orbital module, vents it back to ~255 and flushes it with O2 before the CM hatch opens
again. The small volume between the DM's Soyuz-end hatch and Soyuz's hatch is pressurised
from the DM at hard dock, shares the DM's gas while those hatches are open, and is sealed
at DM pressure once they are closed: its gas then follows its own temperature.

ENTRY. The earth landing system (ELS) and the CM RCS through the descent (JSC-10638): armed
at 30,000 ft, the 24,000 ft baroswitches disable the RCS and deploy the apex cover and the
drogues, the mains come out at 10,000 ft; the cabin pressure relief valve admits outside
air once outside pressure passes the cabin's 5 psia, until the crew closes it under the
mains. The entry_rcs_fumes fault is the ASTP sequence: ELS AUTO missed, nothing at
24,000 ft, drogues by hand at 18,550 ft with the thrusters still firing, RCS off at 9,600 ft.

C&W. The caution and warning lights from the AOH thresholds (as NASSP implements them),
SM lights only in CSM mode (until CM/SM separation), CM RCS lights only in CM mode.

COMMANDS. What the ground's commands and the crew's procedures do (`command`; the list is
telemetry_defs/commands/apollo_csm.yaml): CREW ALERT lights its light; the cryo O2 heater and
fan switches take the power off a tank (a stuck heater with it); FUEL CELL RESET puts a
tripped cell back on the buses, closing its reactant valves stops it for good; the power
down sheds load; SCE to AUX clears the lightning's garbled telemetry; ELS AUTO and CM RCS
OFF by hand in the entry.

Figures not in astp-facts.md are estimates and are named as such where they are set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from groundstation.core import flightplan as tl
from simulators.attitude import gimbal_excursion, middle_gimbal_deg
from simulators.faults import Fault, FaultView
from simulators.physics import (
    LB,
    MMHG_PER_PSI,
    Gas,
    Thermostat,
    breakthrough,
    clamp,
    pv_per_kg,
    relax,
    standard_atmosphere_psia,
)

V_CM = 6.17  # m^3, CM habitable volume (218 ft^3)
V_DM = 4.0  # m^3, DM free volume (estimate; 4.85 m^3 gross)
PV_O2 = pv_per_kg("o2", 295.0) * LB  # per lb
PV_N2 = pv_per_kg("n2", 295.0) * LB
PV_CO2 = pv_per_kg("co2", 295.0) * LB
CO2_PER_CREW = 0.0919  # lb/h (1.0 kg/day)
O2_PER_CREW = 0.0772  # lb/h (0.84 kg/day)
SCRUB_FLOW = 59.0  # m^3/h through the LiOH canisters (~35 cfm suit-loop flow)
LIOH_CAPACITY = 3.4  # lb CO2 per canister (estimate)
CABIN_LEAK = 0.10  # lb/h at 5 psia (estimate)
PURGE = 0.35  # lb/h, post-insertion cabin purge (estimate)
REG_SET, REG_K, REG_MAX = 5.0, 7.0, 1.4  # psia, lb/h per psi, lb/h
EMER_SET, EMER_K, EMER_MAX = 4.6, 100.0, 40.0
RELIEF_DP = 5.2  # psid, ascent relief (estimate: the cabin settles near 5.2 psia)
O2_CAP, H2_CAP = 326.0, 28.1  # lb per tank
POTABLE_CAP, WASTE_CAP = 36.0, 56.0  # lb
SPS_FULL = 18400.0  # kg of propellant in full SPS tanks
SPS_LOAD = 4000.0  # kg loaded for ASTP (estimate)
SPS_FLOW = 29.5  # kg/s
RCS_QUAD = 150.0  # kg usable per quad
FC_E0 = (32.05, 31.80, 31.90)  # V, open-circuit of each cell (estimates)
FC_R = 0.11  # ohm
FEED_R = 0.012  # ohm, fuel cells to each main bus
SHORT_R = 0.05  # ohm, path of a bus short
DM_N2_TARGET, DM_CM_PRESS = 485.0, 255.0  # mm Hg
# DM gas supply: 18.9 kg N2 and 21.7 kg O2 in four external spheres (facts sheet); full at
# ~3000 psia (estimate: four ~0.04 m^3 spheres hold those masses at that pressure).
DM_N2_FULL, DM_O2_FULL, DM_SPHERE_PSIA = 18.9, 21.7, 3000.0
TUNNEL_GAS_TAU = 240.0  # s, the gas between the DM and Soyuz hatches following a change
CM_RCS_NOMINAL = (291.0, 291.5)  # psia, CM RCS 1 and 2 regulated (facts sheet: ~291)
CPRV_TAU = 3.0  # s, the cabin pressure relief valve letting outside air in (estimate)
INV_STANDBY = 2  # inverter 3 is the spare, off line (estimate)
FC_COND_NOMINAL = 160.0  # degF, condenser exhaust of a working cell (estimate)
GIMBAL_LOCK_DEG = 85.0  # IMU middle gimbal angle that lights GIMBAL LOCK (AOH, via NASSP)
CREW_ALERT_S = 60.0  # the crew answers a CREW ALERT and resets the light (estimate)
POWER_DOWN_A = 20.0  # load the emergency power-down list sheds (estimate)

SM_PARAMS = frozenset(
    [f"fc{k}_{x}" for k in (1, 2, 3) for x in ("volts", "amps", "o2_flow", "h2_flow",
                                              "skin_temp", "cond_temp", "ph")]
    + [f"{g}_tank{k}_{x}" for g in ("o2", "h2") for k in (1, 2) for x in ("press", "qty",
                                                                         "htr", "fan")]
    + ["sps_ox_tank_press", "sps_fuel_tank_press", "sps_he_press", "sps_chamber_press",
       "sps_ox_qty", "sps_fuel_qty", "sps_pitch_gimbal", "sps_yaw_gimbal",
       "glycol_rad_out_temp"]
    + [f"sm_rcs_{q}_{x}" for q in "abcd" for x in ("pkg_temp", "prop_press", "qty")])
DM_PARAMS = frozenset(["dm_press", "dm_hatch_cm", "dm_hatch_soyuz", "dock_ring_pos",
                       "dock_capture_latch", "dock_ring_latch", "dm_n2_press", "dm_o2_press",
                       "dm_temp", "dm_tunnel_press"])

_FC_KEYS = tuple(tuple(f"fc{k}_{x}" for x in ("volts", "amps", "o2_flow", "h2_flow",
                                                "skin_temp")) for k in (1, 2, 3))
_TANK_KEYS = tuple(tuple(f"{g}_tank{k}_{x}" for g in ("o2", "h2")
                         for x in ("press", "qty", "htr", "fan")) for k in (1, 2))
_RCS_KEYS = tuple(tuple(f"sm_rcs_{q}_{x}" for x in ("pkg_temp", "prop_press", "qty"))
                  for q in "abcd")

PHASE_LOAD = {"prelaunch": 52.0, "ascent": 62.0, "orbit": 58.0, "rendezvous": 72.0,
              "docked": 64.0, "transfer": 68.0, "undocked": 70.0, "entry": 62.0}  # A, est.
RCS_USE = {"prelaunch": 0.0, "ascent": 0.0, "orbit": 0.12, "rendezvous": 2.5,
           "docked": 0.08, "transfer": 0.08, "undocked": 1.5, "entry": 0.5}  # kg/h/quad


@dataclass
class Env:
    """What the ship sees around it at one step."""

    sunlit: float
    aos: bool  # a ground station or the ATS-6 relay hears it
    elevation: float  # deg, best ground station
    relay: bool  # heard through ATS-6
    station: str


def dm_stage(get: float) -> str:
    """cm (open to the CM), isolated, press_n2, equalise_bo, soyuz, vent, flush,
    equalise_cm, or none (no DM)."""
    if not tl.dm_attached(get):
        return "none"
    c = tl.dm_cycle_at(get)
    if c is None:
        return "cm" if tl.tunnel_open(get) else "isolated"
    if get < c.start + 16 * 60:
        return "press_n2"
    if get < c.hold_start:
        return "equalise_bo"
    if get < c.hold_end:
        return "soyuz"
    if get < c.hold_end + 15 * 60:
        return "vent"
    if get < c.end - 3 * 60:
        return "flush"
    return "equalise_cm"


def tunnel_stage(get: float) -> str:
    """The volume between the DM's Soyuz-end hatch and Soyuz's hatch: vacuum (not hard
    docked: open to space), dm (its hatches' valves open: it shares the DM's gas, while the
    DM is worked with Soyuz's orbital module and vented back), or sealed (both hatches
    closed, at the pressure it was left at)."""
    if not tl.dm_attached(get) or not tl.hard_docked(get):
        return "vacuum"
    if dm_stage(get) in ("equalise_bo", "soyuz", "vent"):
        return "dm"
    return "sealed"


def cw_mode(get: float) -> str:
    """Which module the caution and warning system monitors: CSM (SM lights live) until
    CM/SM separation, then CM (CM RCS lights live; AOH 2.10.6, as NASSP implements it)."""
    return "CM" if get >= tl.CM_SM_SEP else "CSM"


class ApolloModel:
    def __init__(self, historical: bool = True):
        self.historical = historical
        self.cm = Gas.at(V_CM, 14.7 * MMHG_PER_PSI, 0.60, 0.4)
        # The DM is launched with a 255 mm Hg O2 fill (estimate).
        self.dm = Gas.at(V_DM, DM_CM_PRESS, 1.0, 0.05)
        self.dm_temp = 293.0
        self.dm_n2 = DM_N2_FULL  # kg left in the DM's N2 spheres
        self.dm_o2 = DM_O2_FULL  # kg left in the DM's O2 spheres
        self.tunnel_gas = 0.0  # mm Hg at 293 K between the DM and Soyuz hatches
        self.tunnel_dt = 0.0  # K, the dm_trapped_gas fault's warming of that gas
        self.cm_rcs_loss = [0.0, 0.0]  # psi lost through a cm_rcs_leak
        self.lioh = [0.3, 1.9]  # lb absorbed; staggered so they are changed alternately
        self.next_lioh = tl.hms(12)
        self.o2_flow = 0.2
        self.o2_high_s = 0.0
        self.purged = False
        self.cabin_temp = 72.0
        self.rad_out, self.evap_out = 40.0, 45.0
        self.inv_temp = [101.0, 103.5, 74.0]
        self.bmag = [Thermostat(169.9, 169.6, 170.4, 0.05, 0.012),
                     Thermostat(170.2, 169.6, 170.4, 0.05, 0.011, on=False)]
        self.fc_skin = [416.0, 414.0, 417.0]
        self.fc_cond = [160.0, 159.5, 160.5]
        self.fc_online = [True, True, True]
        self.fc_amps = [20.0, 20.0, 20.0]
        self.fc_volts = [29.7, 29.7, 29.7]
        self.bus = {"A": 29.3, "B": 29.3}
        self.batt = [37.0, 36.95, 37.05]
        self.ac = [115.6, 115.1]
        self.o2_mass = [316.0, 315.0]
        self.o2_press = [892.0, 884.0]
        self.o2_heater = [False, False]
        self.o2_fans = [False, False]
        self.h2_mass = [26.7, 26.6]
        self.h2_press = [246.0, 242.0]
        self.h2_heater = [False, False]
        self.potable, self.waste, self.dumping = 0.90 * POTABLE_CAP, 0.25 * WASTE_CAP, False
        self.sps_prop = SPS_LOAD
        self.sps_press = [177.5, 178.0]
        self.rcs = [142.5, 141.0, 143.5, 142.0]
        self.rcs_temp = [138.0, 140.0, 137.0, 139.0]
        self.load_jitter = 0.0
        self.cw: set[str] = set()
        self.master_until = -math.inf
        self.ruptures: dict[str, Fault] = {}
        self.rupture_time: float | None = None
        self.bus_b_collapse = 0.0  # volts lost on bus B in the Apollo 13 pattern
        self.fc_fail = [False, False, False]  # cells lost in the Apollo 13 pattern
        self.o2_flow_pv = 0.0
        self.activity = 1.0
        self.crew = 0
        self.gimbal_motors = False  # the SPS gimbal motors powered for a burn
        self.compressor_loss = 0.0  # a failed suit compressor (0..1)
        self.ph_high = [False, False, False]
        self.middle_gimbal = 0.0  # deg, the IMU's middle gimbal (the yaw CDU angle)
        self.crew_alert = False
        # Earth landing system and the CM's descent.
        self.els_logic = self.els_auto = self.els_active = False
        self.els_time = math.inf
        self.apex_jett = False
        self.drogues = "STOWED"
        self.mains = False
        self.cm_rcs_active = False
        self.rcs_off = False  # the CM RCS disabled (the ELS relay or by hand)
        self.jets_firing = False
        self.cprv_open = False  # the relief valve set to let outside air in (BOOST/ENTRY)
        self.cprv_closed_at = math.inf
        # Switches the ground's commands and the crew's procedures throw (`command`).
        self.crew_alert_until = -math.inf  # the CREW ALERT command's light
        self.o2_switch = ["AUTO", "AUTO"]  # cryo O2 tank heaters and fans: AUTO or OFF
        self.fc_tripped = [False, False, False]  # off the buses (fuel_cell_trip) until reset
        self.fc_shutdown = [False, False, False]  # reactant valves closed: stopped for good
        self.trips: dict[str, Fault] = {}
        self.load_shed = 0.0  # A, the emergency power down
        self.sce_aux_at: float | None = None  # SCE to AUX: the signal conditioner's spare supply
        self.els_auto_crew = False  # ELS AUTO thrown by the crew
        self.rcs_off_crew = False  # the CM RCS disabled by hand

    # --- commands -----------------------------------------------------------------------

    COMMANDS = frozenset({"crew_alert", "o2_tank_heaters_fans_off", "o2_tank_heaters_auto",
                          "fuel_cell_reset", "fuel_cell_shutdown", "power_down", "power_up",
                          "sce_to_aux", "els_auto", "cm_rcs_disable"})

    def command(self, name: str, args: dict[str, Any], t: float) -> None:
        """A command or a procedure takes effect at t (the definitions' arguments, checked)."""
        if name == "crew_alert":
            self.crew_alert_until = t + CREW_ALERT_S
        elif name == "o2_tank_heaters_fans_off":
            self.o2_switch[int(args["tank"]) - 1] = "OFF"
        elif name == "o2_tank_heaters_auto":
            self.o2_switch[int(args["tank"]) - 1] = "AUTO"
        elif name == "fuel_cell_reset":
            cells = range(3) if str(args["cell"]).upper() == "ALL" else [int(args["cell"]) - 1]
            for k in cells:
                self.fc_tripped[k] = False
        elif name == "fuel_cell_shutdown":
            self.fc_shutdown[int(args["cell"]) - 1] = True
        elif name == "power_down":
            self.load_shed = POWER_DOWN_A
        elif name == "power_up":
            self.load_shed = 0.0
        elif name == "sce_to_aux":
            self.sce_aux_at = t if self.sce_aux_at is None else self.sce_aux_at
        elif name == "els_auto":
            self.els_auto_crew = True
        elif name == "cm_rcs_disable":
            self.rcs_off_crew = True
        else:
            raise KeyError(f"apollo_csm has no command {name!r}")

    # --- the step -------------------------------------------------------------------------

    def step(self, t: float, dt: float, env: Env, fx: FaultView, rng: Any, coarse: bool
             ) -> None:
        h = dt / 3600.0
        phase = tl.phase_at(tl.APOLLO, t)
        self.crew = tl.crew_aboard(tl.APOLLO, t)
        asleep = tl.crew_asleep(tl.APOLLO, t)
        self.activity = 1.3 if phase == "transfer" else (0.75 if asleep else 1.05)
        # OU jitter on the electrical load: ~0.8 A, 5 min correlation.
        self.load_jitter = (self.load_jitter * math.exp(-dt / 300.0)
                            + 0.8 * math.sqrt(1 - math.exp(-2 * dt / 300.0))
                            * float(rng.standard_normal()))
        self.compressor_loss = fx.level("suit_compressor")
        self.ph_high = [fx.level("fuel_cell_ph", cell=k + 1) > 0 for k in range(3)]
        # The SPS gimbal motors are switched on for a burn (5 min before to 1 min after).
        self.gimbal_motors = any(b.vehicle == tl.APOLLO and b.engine == "SPS"
                                 and b.get - 300 <= t < b.end + 60 for b in tl.BURNS)
        self._rupture(t, dt, fx)
        ecs_o2 = self._ecs(t, dt, h, phase, fx)
        self._eps(t, dt, phase, env, fx)
        self._cryo(t, dt, h, ecs_o2, fx, coarse)
        self._thermal(t, dt, env, fx, coarse)
        self._water(t, h, env)
        self._prop(t, dt, h, phase, env)
        self._cm_rcs(dt, fx)
        self._entry(t, fx)
        if not coarse:
            self._caution_warning(t, dt, env, fx)

    # --- ECS -----------------------------------------------------------------------------------

    def dm_connected(self, t: float) -> bool:
        return dm_stage(t) == "cm"

    def _ecs(self, t: float, dt: float, h: float, phase: str, fx: FaultView) -> float:
        """Cabin gas for one step; returns the O2 the ECS drew from the cryo tanks, lb/h."""
        cm = self.cm
        crew, act = self.crew, self.activity
        if t < 0:
            # On the pad the ground equipment holds 14.7 psia of 60/40 through the purge
            # port; only the crew's CO2 is left to the suit loop and canisters.
            co2 = cm.co2
            fresh = Gas.at(V_CM, 14.7 * MMHG_PER_PSI, 0.60, 0.0)
            cm.o2, cm.n2, cm.co2 = fresh.o2, fresh.n2, co2
            self._scrub(t, crew, act, h)
            self.o2_flow = 0.2  # suit-loop O2 from the ground supply
            return 0.0
        vol = V_CM + (V_DM if self.dm_connected(t) else 0.0)
        psi_per_lb = PV_O2 / vol / MMHG_PER_PSI
        p = cm.press / MMHG_PER_PSI
        if t < tl.APOLLO_ORBIT + 300:
            ambient = 14.7 * math.exp(-t / 30.0)
            if p > ambient + RELIEF_DP:
                cm.vent_to((ambient + RELIEF_DP) * MMHG_PER_PSI, dt, 6.0)
        leak_rate = CABIN_LEAK + sum(f.params["rate_lb_h"] * lvl
                                     for f, lvl in fx.each("cabin_leak"))
        out = leak_rate * max(p, 0.0) / 5.0
        if not self.purged and t >= tl.APOLLO_ORBIT + 600:
            # Once the launch nitrogen is down to 1.5 % (or by GET 36 h) the purge ends.
            if cm.o2_frac >= 0.985 or t >= tl.hms(36):
                self.purged = True
            else:
                out += PURGE
        cm.remove_amount(out * PV_O2 * h)
        cm.o2 = max(cm.o2 - crew * O2_PER_CREW * act * PV_O2 * h, 0.0)
        self._scrub(t, crew, act, h, fx)
        admitting = False
        if self.cprv_open and t < self.cprv_closed_at:
            # Outside air (21 % O2) comes in through the cabin pressure relief valve once the
            # outside pressure passes the cabin's (and, on ASTP, the RCS's N2O4 with it).
            outside = standard_atmosphere_psia(tl.entry_altitude_ft(t)) * MMHG_PER_PSI
            gap = (outside - cm.press) * V_CM * (1.0 - math.exp(-dt / CPRV_TAU))
            if gap > 0:
                admitting = True
                cm.o2 += 0.21 * gap
                cm.n2 += 0.79 * gap
        # Regulators, implicit in the new pressure so any step size is stable.
        p = (cm.total + (self.dm.total if self.dm_connected(t) else 0.0)) / vol / MMHG_PER_PSI
        q = clamp(REG_K * (REG_SET - p) / (1 + psi_per_lb * REG_K * h), 0.0, REG_MAX)
        p2 = p + psi_per_lb * q * h
        qe = clamp(EMER_K * (EMER_SET - p2) / (1 + psi_per_lb * EMER_K * h), 0.0, EMER_MAX)
        if admitting:
            q = qe = 0.0
        cm.o2 += (q + qe) * PV_O2 * h * (V_CM / vol)
        if self.dm_connected(t):
            self.dm.o2 += (q + qe) * PV_O2 * h * (V_DM / vol)
        self.o2_flow = q + qe
        return q + qe

    def _scrub(self, t: float, crew: int, act: float, h: float, fx: FaultView | None = None
               ) -> None:
        if t >= self.next_lioh:
            # The crew changes the more loaded canister; A and B alternate every 12 h.
            self.lioh[self.lioh.index(max(self.lioh))] = 0.0
            self.next_lioh += 12 * 3600.0
        cm = self.cm
        cm.co2 += crew * CO2_PER_CREW * act * PV_CO2 * h
        eff = [breakthrough(u, LIOH_CAPACITY) for u in self.lioh]
        mean = sum(eff) / 2
        before = cm.co2
        # The suit compressor drives the flow through the canisters.
        flow = SCRUB_FLOW * (1.0 - (fx.level("suit_compressor") if fx is not None else 0.0))
        cm.co2 *= math.exp(-flow * mean * h / V_CM)
        absorbed = (before - cm.co2) / PV_CO2
        for i in range(2):
            self.lioh[i] += absorbed * (eff[i] / (2 * mean) if mean > 0 else 0.5)

    # --- EPS -----------------------------------------------------------------------------------

    def _load(self, t: float, phase: str, env: Env) -> float:
        load = PHASE_LOAD[phase] + 3.0 * (1.0 - env.sunlit) + self.load_jitter
        load += 2.0 if self.activity > 1.0 else 0.0
        for b in tl.BURNS:
            if b.vehicle == tl.APOLLO and b.engine == "SPS" and b.get - 300 <= t < b.end + 60:
                load += 12.0  # gimbal motors, SCS and the G&N powered for the burn
        if t >= tl.CM_SM_SEP:
            load = 34.0 + self.load_jitter * 0.5
        # The emergency power down, never below the essentials (estimate: 15 A).
        return max(load - self.load_shed, min(load, 15.0))

    def _eps(self, t: float, dt: float, phase: str, env: Env, fx: FaultView) -> None:
        load = self._load(t, phase, env)
        shorts = {"A": 0.0, "B": 0.0}
        for f, lvl in fx.each("bus_undervolt"):
            shorts[f.params["bus"]] += f.params["amps"] * lvl
        total = load + shorts["A"] + shorts["B"]
        if t >= tl.CM_SM_SEP:
            each = total / 3
            self.batt = [37.0 - 0.55 * each + d for d in (0.0, -0.05, 0.05)]
            node = sum(self.batt) / 3 - 0.9
            self.fc_amps = [0.0, 0.0, 0.0]
            self.fc_volts = [0.0, 0.0, 0.0]
            self.fc_online = [False, False, False]
        else:
            health = [1.0 - fx.level("fuel_cell_loss", cell=k + 1) for k in range(3)]
            health = [0.0 if self.fc_fail[k] or self.fc_shutdown[k] else health[k]
                      for k in range(3)]
            if t >= 0 and max(self.o2_press) < 100.0:
                health = [0.0, 0.0, 0.0]  # no oxygen left for the cells
            self._trip(t, fx)
            online = [k for k in range(3) if health[k] > 0.05 and not self.fc_tripped[k]]
            e = [FC_E0[k] * (0.75 + 0.25 * health[k]) for k in range(3)]
            r = [FC_R / max(health[k], 0.05) for k in range(3)]
            node = 0.0
            while online:
                g = sum(1 / r[k] for k in online)
                node = (sum(e[k] / r[k] for k in online) - total) / g
                low = [k for k in online if e[k] - node < 0]
                if not low:
                    break
                online = [k for k in online if k not in low]
            # A cell off the buses (its reverse-current relay opened): FC BUS DISCONNECT.
            self.fc_online = [k in online for k in range(3)]
            if not online:
                # No cell left: the entry batteries carry the buses through their diodes.
                node = sum(self.batt) / 3 - 0.55 * total / 3 - 0.9
            for k in range(3):
                if k in online:
                    self.fc_amps[k] = (e[k] - node) / r[k]
                    self.fc_volts[k] = node + 0.05 * k
                else:
                    self.fc_amps[k] = 0.0
                    # A healthy cell off the buses reads its open-circuit voltage; a dead
                    # one runs down.
                    ocv = e[k] if health[k] > 0.05 else 0.0
                    self.fc_volts[k] = relax(self.fc_volts[k], ocv, dt, 60.0)
            self.batt = [relax(v, 37.0 + d, dt, 3600.0)
                         for v, d in zip(self.batt, (0.0, -0.05, 0.05), strict=True)]
        for bus in ("A", "B"):
            v = node - FEED_R * (load / 2 + shorts[bus]) - SHORT_R * shorts[bus]
            if bus == "B":
                v -= self.bus_b_collapse
            self.bus[bus] = max(v, 0.0)
        for i, bus in enumerate(("A", "B")):
            v = self.bus[bus]
            self.ac[i] = (115.6 - 0.5 * i) - (8.0 * (25.0 - v) if v < 25.0 else 0.0)
            # An overloaded inverter output sags (estimate: ~7 V at the overload trip).
            self.ac[i] -= 7.0 * fx.level("ac_bus_overload", bus=i + 1)

    def _trip(self, t: float, fx: FaultView) -> None:
        """fuel_cell_trip: the cell's overload/reverse-current relay opens once as the fault
        starts; the cell stays off the buses until the crew resets it (fuel_cell_reset), or
        the instructor clears the fault."""
        for f, lvl in fx.each("fuel_cell_trip"):
            if lvl > 0 and f.id not in self.trips:
                self.trips[f.id] = f
                self.fc_tripped[f.params["cell"] - 1] = True
        for fid, f in list(self.trips.items()):
            if not f.active(t):
                self.fc_tripped[f.params["cell"] - 1] = False  # the instructor's reset
                del self.trips[fid]

    # --- cryogenics ----------------------------------------------------------------------------

    def _cryo(self, t: float, dt: float, h: float, ecs_o2: float, fx: FaultView,
              coarse: bool) -> None:
        if t >= tl.CM_SM_SEP:
            return
        if t < 0:
            fc_o2 = fc_h2 = 0.0  # the ground tops the tanks up on the pad
        else:
            fc_o2 = sum(a * 0.0204 for a in self.fc_amps)
            fc_h2 = sum(a * 0.00258 for a in self.fc_amps)
        heat = [0.0, 0.0]
        fans = [False, False]
        powered = [sw != "OFF" for sw in self.o2_switch]
        for f, lvl in fx.each("o2_tank_heater"):
            k = f.params["tank"] - 1
            if not powered[k]:
                continue  # the crew took the power off: a stuck heater heats no more
            heat[k] += f.params["rate_psi_min"] * 60.0 * lvl  # psi/h
            fans[k] = fans[k] or lvl > 0
        self.o2_fans = fans
        self._tanks(self.o2_mass, self.o2_press, self.o2_heater, fc_o2 + ecs_o2, h, dt,
                    (868.0, 905.0), 300.0, 60.0, O2_CAP, heat, coarse, powered)
        self._tanks(self.h2_mass, self.h2_press, self.h2_heater, fc_h2, h, dt,
                    (238.0, 252.0), 150.0, 250.0, H2_CAP, [0.0, 0.0], coarse, [True, True])
        # Relief valves at ~1008 psia (O2) and ~280 psia (H2) vent gas and hold pressure.
        for k in range(2):
            if self.o2_press[k] > 1008.0:
                self.o2_mass[k] -= 2.0 * h
                self.o2_press[k] = relax(self.o2_press[k], 1008.0, dt, 20.0)
        if self.rupture_time is not None:
            self._rupture_tanks(t, dt, h)

    def _tanks(self, mass: list[float], press: list[float], heater: list[bool], draw: float,
               h: float, dt: float, band: tuple[float, float], heat_rate: float,
               k_draw: float, cap: float, fault_heat: list[float], coarse: bool,
               powered: list[bool]) -> None:
        live = [press[k] > 100.0 for k in range(2)]
        share = clamp(0.5 + (press[0] - press[1]) / 80.0, 0.0, 1.0)
        if not live[0]:
            share = 0.0
        if not live[1]:
            share = 1.0
        for k in range(2):
            d = draw * (share if k == 0 else 1.0 - share)
            mass[k] = max(mass[k] - d * h, 0.0)
            if not live[k]:
                continue
            q = mass[k] / cap
            if coarse:
                press[k] = relax(press[k], sum(band) / 2, dt, 600.0)
                heater[k] = False
            else:
                if not powered[k]:
                    heater[k] = False  # the heaters' switch OFF: no thermostat either
                elif press[k] < band[0]:
                    heater[k] = True
                elif press[k] > band[1]:
                    heater[k] = False
                rate = (heat_rate if heater[k] else 0.0) - k_draw * (1.0 + 0.6 * (1 - q)) * d
                press[k] += (rate + fault_heat[k]) * h

    # --- the Apollo 13 pattern -----------------------------------------------------------

    def _rupture(self, t: float, dt: float, fx: FaultView) -> None:
        for f, _lvl in fx.each("o2_tank_heater"):
            if f.params.get("rupture") and f.id not in self.ruptures:
                f.memo["before"] = {"o2_mass": list(self.o2_mass),
                                    "o2_press": list(self.o2_press)}
                self.ruptures[f.id] = f
        for fid, f in list(self.ruptures.items()):
            k = f.params["tank"] - 1
            if not f.active(t):
                # The instructor's reset: tanks, cells and bus as they were before.
                before = f.memo["before"]
                self.o2_mass, self.o2_press = list(before["o2_mass"]), list(before["o2_press"])
                self.fc_fail = [False, False, False]
                self.bus_b_collapse = 0.0
                self.rupture_time = None
                f.memo.pop("ruptured", None)
                del self.ruptures[fid]
                continue
            if "ruptured" not in f.memo and self.o2_press[k] >= 1000.0:
                f.memo["ruptured"] = t
                self.rupture_time = t
                self.rupture_tank = k

    def _rupture_tanks(self, t: float, dt: float, h: float) -> None:
        assert self.rupture_time is not None
        since = t - self.rupture_time
        k = self.rupture_tank
        other = 1 - k
        self.o2_mass[k] = relax(self.o2_mass[k], 0.0, dt, 5.0)
        self.o2_press[k] = relax(self.o2_press[k], 20.0, dt, 5.0)
        # The other tank bleeds through damaged lines: ~880 to ~65 psia in two hours.
        tau = 7200.0 / math.log(880.0 / 65.0)
        self.o2_press[other] = relax(self.o2_press[other], 0.0, dt, tau)
        self.o2_mass[other] = relax(self.o2_mass[other], 0.0, dt, tau)
        if since >= 150:
            self.fc_fail[2] = True
        if since >= 180:
            self.fc_fail[0] = True
        if since >= 40:
            self.bus_b_collapse = relax(self.bus_b_collapse, 14.0, dt, 60.0)

    # --- thermal -------------------------------------------------------------------------------

    def _thermal(self, t: float, dt: float, env: Env, fx: FaultView, coarse: bool) -> None:
        s = env.sunlit
        flow = 1.0 - fx.level("glycol_loop")
        sm = t < tl.CM_SM_SEP
        rad_eq = flow * (-5.0 + 55.0 * s) + (1 - flow) * (-60.0 + 150.0 * s)
        # Without flow the fluid in the thin radiator tubes follows the panels quickly.
        self.rad_out = relax(self.rad_out, rad_eq, dt, 360.0 if flow > 0.5 else 300.0)
        evap_nom = 45.0 + 0.03 * (self.rad_out - 20.0) if sm else 46.5
        self.evap_out = relax(self.evap_out, flow * evap_nom + (1 - flow) * 78.0, dt,
                              120.0 if flow > 0.5 else 700.0)
        target = 71.0 + 1.5 * (s - 0.58) + 0.8 * (self.crew - 3) + (1 - flow) * 22.0
        if t < 0:
            target = 72.0
        elif t >= tl.CM_SM_SEP:
            target = 72.0 + 8.0 * clamp((t - tl.CM_SM_SEP) / 1600.0, 0, 1)
        self.cabin_temp = relax(self.cabin_temp, target, dt, 5400.0)
        for i in range(3):
            # Inverters 1 and 2 carry the AC buses; 3 is the standby spare, near the cold
            # plate's temperature (estimates).
            on = i != INV_STANDBY
            eq = ((100.0 + 2.5 * i) if on else 72.0) + (1 - flow) * (130.0 if on else 40.0)
            eq += 150.0 * fx.level("inverter_overheat", inverter=i + 1)
            self.inv_temp[i] = relax(self.inv_temp[i], eq, dt, 2100.0)
        for b in self.bmag:
            b.step(dt, coarse=coarse)
        for k in range(3):
            running = self.fc_amps[k] > 0.5
            eq = 392.0 + 1.1 * self.fc_amps[k] if running else 150.0
            self.fc_skin[k] = relax(self.fc_skin[k], eq, dt, 1200.0 if eq > 200 else 3600.0)
            # Condenser exhaust: the product water and gas leaving the cell's condenser,
            # held by its coolant bypass valve; a dead cell cools (estimates).
            eq = FC_COND_NOMINAL + 0.08 * (self.fc_amps[k] - 21.0) if running else 90.0
            for f, lvl in fx.each("fuel_cell_condenser"):
                if f.params["cell"] == k + 1:
                    eq += (30.0 if f.params["to"] == "high" else -25.0) * lvl
            self.fc_cond[k] = relax(self.fc_cond[k], eq, dt, 600.0 if running else 1800.0)
        for q in range(4):
            eq = 138.0 + 8.0 * (s - 0.58) + (-1.0, 1.5, -1.5, 0.5)[q]
            for f, lvl in fx.each("sm_rcs_heater"):
                if f.params["quad"] == "ABCD"[q]:
                    # Heater stuck on: the package climbs past 205 degF; stuck off (in the
                    # cold): it falls below 75 degF (estimates).
                    eq += ((240.0 if f.params["stuck"] == "on" else 40.0) - eq) * lvl
            self.rcs_temp[q] = relax(self.rcs_temp[q], eq, dt, 1800.0)
        self.dm_temp = relax(self.dm_temp, 293.0 + 3.0 * (s - 0.58), dt, 1200.0)
        warm = sum(f.params["delta_k"] * lvl for f, lvl in fx.each("dm_trapped_gas"))
        self.tunnel_dt = relax(self.tunnel_dt, warm, dt, TUNNEL_GAS_TAU)

    # --- water ---------------------------------------------------------------------------------

    def _water(self, t: float, h: float, env: Env) -> None:
        if t < 0 or t >= tl.CM_SM_SEP:
            return
        made = sum(self.fc_amps) * 0.023  # lb/h: the fuel cells' product water
        drink = 0.2 * self.crew * (0.5 if self.activity < 1.0 else 1.0)
        self.potable += (made - drink) * h
        if self.potable > 0.98 * POTABLE_CAP:
            self.waste += self.potable - 0.98 * POTABLE_CAP
            self.potable = 0.98 * POTABLE_CAP
        if self.rad_out > 46.0:
            # The evaporator boils waste water to cool the glycol when the radiators are warm.
            self.waste -= 1.2 * clamp((self.rad_out - 46.0) / 4.0, 0, 1) * h
        if self.waste > 0.78 * WASTE_CAP:
            self.dumping = True
        if self.dumping:
            self.waste -= 40.0 * h
            if self.waste < 0.30 * WASTE_CAP:
                self.dumping = False
        self.potable = clamp(self.potable, 0.0, POTABLE_CAP)
        self.waste = clamp(self.waste, 0.0, WASTE_CAP)

    # --- propulsion ----------------------------------------------------------------------------

    def _prop(self, t: float, dt: float, h: float, phase: str, env: Env) -> None:
        if t >= tl.CM_SM_SEP:
            return
        burning = False
        for b in tl.BURNS:
            if b.vehicle != tl.APOLLO:
                continue
            overlap = max(0.0, min(t + dt, b.end) - max(t, b.get))
            if overlap <= 0:
                continue
            if b.engine == "SPS":
                self.sps_prop = max(self.sps_prop - SPS_FLOW * overlap, 0.0)
                burning = True
            else:
                for q in range(4):
                    self.rcs[q] -= 0.32 * overlap
        for q in range(4):
            self.rcs[q] = max(self.rcs[q] - RCS_USE[phase] * (1 + 0.05 * (q - 1.5)) * h, 0.0)
        for i in range(2):
            eq = 171.0 if burning else 177.5 + 0.5 * i + 1.2 * (env.sunlit - 0.58)
            self.sps_press[i] = relax(self.sps_press[i], eq, dt, 3.0 if burning else 30.0)

    def _cm_rcs(self, dt: float, fx: FaultView) -> None:
        """The CM RCS pressures: regulated (~291 psia); only a cm_rcs_leak moves them."""
        for k in range(2):
            rate = sum(f.params["rate_psi_min"] * lvl for f, lvl in fx.each("cm_rcs_leak")
                       if f.params["system"] == k + 1)
            if rate > 0:
                self.cm_rcs_loss[k] = min(self.cm_rcs_loss[k] + rate * dt / 60.0,
                                          CM_RCS_NOMINAL[k])
            else:
                # Cleared: the instructor's reset puts the helium back.
                self.cm_rcs_loss[k] = relax(self.cm_rcs_loss[k], 0.0, dt, 30.0)

    def cm_rcs_press(self, k: int, sunlit: float) -> float:
        return max(CM_RCS_NOMINAL[k] + 1.5 * (sunlit - 0.58) - self.cm_rcs_loss[k], 0.0)

    # --- the CM's descent ----------------------------------------------------------------------

    def _entry(self, t: float, fx: FaultView) -> None:
        """The earth landing system, the CM RCS and the cabin relief valve (JSC-10638)."""
        if t < tl.CM_SM_SEP:
            self.els_logic = self.els_auto = self.els_active = False
            self.els_time = math.inf
            self.apex_jett, self.drogues, self.mains = False, "STOWED", False
            self.cm_rcs_active = self.jets_firing = self.cprv_open = self.rcs_off = False
            self.cprv_closed_at = math.inf
            return
        alt = tl.entry_altitude_ft(t)
        # The CM RCS takes over at separation; the relief valve is set to let air in.
        self.cprv_open = True
        # ELS AUTO not thrown (ASTP), until the crew throws it (the els_auto procedure).
        missed = fx.level("entry_rcs_fumes") > 0 and not self.els_auto_crew
        if alt <= tl.ELS_ARM_FT:
            self.els_logic = True
            if not missed:
                self.els_auto = True  # on time, or late when the instructor clears the fault
        if self.els_auto_crew:
            self.els_auto = True
        if self.els_logic and self.els_auto and alt <= tl.BAROSWITCH_FT and not self.els_active:
            # The baroswitches (closed since 24,000 ft) latch the ELS activate relay.
            self.els_active, self.els_time = True, t
        if self.els_active:
            self.rcs_off = True  # the RCS disable relay
            self.apex_jett = self.apex_jett or t >= self.els_time + 0.4
            if self.drogues == "STOWED" and t >= self.els_time + 2.0:
                self.drogues = "DEPLOYED"
            if not self.mains and t >= self.els_time + 14.0 and alt <= tl.MAIN_CHUTES_FT:
                self.drogues, self.mains = "RELEASED", True
        else:
            # Nothing automatic: the crew's hands (the ASTP sequence, JSC-10638).
            if self.drogues == "STOWED" and alt <= tl.ASTP_DROGUES_FT:
                self.apex_jett, self.drogues = True, "DEPLOYED"
            if self.drogues == "DEPLOYED" and not self.mains and alt <= tl.MAIN_CHUTES_FT:
                self.drogues, self.mains = "RELEASED", True  # by hand (estimate)
            if alt <= tl.ASTP_RCS_OFF_FT:
                self.rcs_off = True
        if self.rcs_off_crew:
            self.rcs_off = True  # disabled by hand on the ground's call
        self.cm_rcs_active = not self.rcs_off
        if self.mains and not self.cm_rcs_active and self.cprv_closed_at == math.inf:
            # Under the mains, RCS off: the crew closes the relief valve (before the
            # propellant dump) a few seconds later (estimate).
            self.cprv_closed_at = t + 5.0
        # Thruster activity (a 1 s duty pattern, estimates): holding attitude before entry
        # interface, bank control in the entry, damping the swing under the parachutes.
        if not self.cm_rcs_active:
            self.jets_firing = False
        elif self.drogues != "STOWED" or self.mains:
            self.jets_firing = int(t) % 3 != 2
        elif t >= tl.ENTRY_INTERFACE:
            self.jets_firing = int(t) % 10 < 3
        else:
            self.jets_firing = int(t) % 20 == 0

    # --- caution and warning -------------------------------------------------------------------

    def _caution_warning(self, t: float, dt: float, env: Env, fx: FaultView) -> None:
        """The lights from the AOH thresholds (as NASSP's C&W logic implements them)."""
        self.o2_high_s = self.o2_high_s + dt if self.o2_flow >= 1.0 else 0.0
        on: set[str] = set()
        for bus in ("A", "B"):
            if self.bus[bus] < 26.25:
                on.add(f"MAIN BUS {bus} UNDERVOLT")
        for i, v in enumerate(self.ac):
            if not 96.0 <= v <= 130.0:
                on.add(f"AC BUS {i + 1}")
            if fx.level("ac_bus_overload", bus=i + 1) > 0:
                on.update((f"AC BUS {i + 1} OVERLOAD", f"AC BUS {i + 1}"))
        for i, temp in enumerate(self.inv_temp):
            if temp > 190.0:
                on.add(f"INV {i + 1} TEMP")
        if self.cm.pco2 >= 7.6:
            on.add("CO2 PP HI")
        if self.o2_high_s > 16.5:
            on.add("O2 FLOW HI")
        for i, b in enumerate(self.bmag):
            if not 168.0 <= b.value <= 172.0:
                on.add(f"BMAG {i + 1} TEMP")
        if self.suit_comp_dp() < 0.22:
            on.add("SUIT COMP")
        for unit in ("cmc", "iss"):
            if fx.level("guidance_warning", unit=unit) > 0:
                on.add(unit.upper())
        self.middle_gimbal = middle_gimbal_deg(t) + gimbal_excursion(fx.faults, t)
        if abs(self.middle_gimbal) > GIMBAL_LOCK_DEG:
            on.add("GIMBAL LOCK")
        if fx.level("crew_alert") > 0:
            # The ground's up-link command: it lights once heard, and stays until cleared.
            self.crew_alert = self.crew_alert or env.aos
        else:
            self.crew_alert = False
        if t < self.crew_alert_until:
            self.crew_alert = True  # the crew_alert command (heard: it was received)
        if self.crew_alert:
            on.add("CREW ALERT")
        if cw_mode(t) == "CM":
            for k in range(2):
                if not 260.0 <= self.cm_rcs_press(k, env.sunlit) <= 330.0:
                    on.add(f"CM RCS {k + 1}")
        elif t >= 0:
            if not all(800.0 <= p <= 950.0 for p in self.o2_press):
                on.add("CRYO PRESS")
            if not all(220.0 <= p <= 270.0 for p in self.h2_press):
                on.add("CRYO PRESS")
            if not all(157.0 <= p <= 200.0 for p in self.sps_press):
                on.add("SPS PRESS")
            if self.rad_out < -30.0:
                on.add("GLYCOL TEMP LOW")
            for k in range(3):
                amps = self.fc_amps[k]
                if (not 360.0 <= self.fc_skin[k] <= 475.0
                        or not 150.0 <= self.fc_cond[k] <= 178.0
                        or 0.0204 * amps > 1.276 or 0.00258 * amps > 0.161
                        or self.fc_ph(k) == "HIGH"):
                    on.add(f"FC {k + 1}")
            if not all(self.fc_online):
                on.add("FC BUS DISCONNECT")
            for q in range(4):
                if (not 75.0 <= self.rcs_temp[q] <= 205.0
                        or not 145.0 <= self.sm_rcs_press(q) <= 215.0):
                    on.add(f"SM RCS {'ABCD'[q]}")
            if self.gimbal_motors:
                for f, lvl in fx.each("sps_gimbal_motor"):
                    if lvl > 0:
                        on.add(f"{f.params['axis'].upper()} GMBL {f.params['motor']}")
        if on - self.cw:
            self.master_until = t + 12.0  # the crew resets the master alarm (estimate)
        self.cw = on
        if self.historical and tl.FALSE_GNC_ALARM <= t < tl.FALSE_GNC_ALARM + 30:
            self.master_until = max(self.master_until, tl.FALSE_GNC_ALARM + 30)

    def suit_comp_dp(self) -> float:
        """Suit compressor delta P (psid): ~0.38 at 5 psia; a failed compressor ~0.05."""
        p = self.cm.press / MMHG_PER_PSI
        return 0.38 * clamp(p / 5.0, 0.5, 3.0) * (1.0 - self.compressor_loss) \
            + 0.05 * self.compressor_loss

    def fc_ph(self, k: int) -> str:
        return "HIGH" if self.ph_high[k] else "NORMAL"

    def sm_rcs_press(self, q: int) -> float:
        return 181.0 + (self.rcs_temp[q] - 138.0) / 8.0

    # --- telemetry -----------------------------------------------------------------------------

    def dead_params(self, t: float) -> frozenset[str]:
        """Channels whose sensors are gone (the SM after separation, the DM when absent):
        they read raw zero."""
        dead: frozenset[str] = frozenset()
        if t >= tl.CM_SM_SEP:
            dead = dead | SM_PARAMS
        if not tl.dm_attached(t):
            dead = dead | DM_PARAMS
        return dead

    def truth(self, t: float, env: Env) -> dict[str, Any]:
        cm = self.cm
        p_cm = cm.press / MMHG_PER_PSI
        stage = dm_stage(t)
        docked = tl.docked_at(t)
        v: dict[str, Any] = {
            "cabin_press": p_cm,
            "suit_press": p_cm - (0.10 if t >= 0 else -0.05),
            "co2_pp": cm.pco2,
            "o2_flow": self.o2_flow,
            "suit_comp_dp": self.suit_comp_dp(),
            "glycol_evap_out_temp": self.evap_out,
            "glycol_rad_out_temp": self.rad_out,
            "cabin_o2_pp": cm.po2 / MMHG_PER_PSI,
            "potable_h2o_qty": 100.0 * self.potable / POTABLE_CAP,
            "waste_h2o_qty": 100.0 * self.waste / WASTE_CAP,
            "cabin_temp": self.cabin_temp,
            "main_bus_a_volts": self.bus["A"],
            "main_bus_b_volts": self.bus["B"],
            "batt_a_volts": self.batt[0],
            "batt_b_volts": self.batt[1],
            "batt_c_volts": self.batt[2],
            "ac_bus1_volts": self.ac[0],
            "ac_bus2_volts": self.ac[1],
            "inv1_temp": self.inv_temp[0],
            "inv2_temp": self.inv_temp[1],
            "inv3_temp": self.inv_temp[2],
            "sps_ox_tank_press": self.sps_press[0],
            "sps_fuel_tank_press": self.sps_press[1],
            "sps_he_press": 3550.0 * (1.0 - 0.55 * (SPS_LOAD - self.sps_prop) / SPS_LOAD),
            "sps_ox_qty": 100.0 * self.sps_prop / SPS_FULL,
            "sps_fuel_qty": 100.0 * self.sps_prop / SPS_FULL + 0.4,
            "cm_rcs1_press": self.cm_rcs_press(0, env.sunlit),
            "cm_rcs2_press": self.cm_rcs_press(1, env.sunlit),
            "bmag1_temp": self.bmag[0].value,
            "bmag2_temp": self.bmag[1].value,
            # Sealed between closed hatches the DM's gas warms and cools with the sun; open,
            # it shares one pressure.
            "dm_press": self.dm.press * (self.dm_temp / 293.0 if stage == "isolated"
                                         else 1.0),
            "dm_n2_press": DM_SPHERE_PSIA * self.dm_n2 / DM_N2_FULL * self.dm_temp / 293.0,
            "dm_o2_press": DM_SPHERE_PSIA * self.dm_o2 / DM_O2_FULL * self.dm_temp / 293.0,
            "dm_temp": (self.dm_temp - 273.15) * 1.8 + 32.0,
            # Between the DM's and Soyuz's closed hatches: the gas the false leak was in.
            "dm_tunnel_press": self.tunnel_press(),
            "dm_hatch_cm": "OPEN" if stage == "cm" else "CLOSED",
            "dm_hatch_soyuz": "OPEN" if stage == "soyuz" else "CLOSED",
            "cm_fwd_hatch": "OPEN" if tl.tunnel_open(t) else "CLOSED",
            "dock_ring_pos": "EXTENDED" if tl.hms(43, 50) <= t < tl.DOCKING_1 + 150
            else "RETRACTED",
            "dock_capture_latch": "CAPTURED" if docked else "FREE",
            "dock_ring_latch": "LATCHED" if tl.hard_docked(t) else "UNLATCHED",
            "sband_signal": self._sband(env),
            "pcm_mode": "HBR",
            "pcm_sync": "SYNC",
            "uplink_lock": "LOCK" if env.aos else "NOLOCK",
            "master_alarm": "ON" if t < self.master_until else "OFF",
            "dm_attached": "YES" if tl.dm_attached(t) else "NO",
            # Caution and warning lights with no analog measurement of their own.
            "cw_fc_bus_disc": _on("FC BUS DISCONNECT" in self.cw),
            "ac_bus1_overload": _on("AC BUS 1 OVERLOAD" in self.cw),
            "ac_bus2_overload": _on("AC BUS 2 OVERLOAD" in self.cw),
            "cw_cmc": _on("CMC" in self.cw),
            "cw_iss": _on("ISS" in self.cw),
            "cw_gimbal_lock": _on("GIMBAL LOCK" in self.cw),
            "cw_pitch_gmbl1": _on("PITCH GMBL 1" in self.cw),
            "cw_pitch_gmbl2": _on("PITCH GMBL 2" in self.cw),
            "cw_yaw_gmbl1": _on("YAW GMBL 1" in self.cw),
            "cw_yaw_gmbl2": _on("YAW GMBL 2" in self.cw),
            "cw_crew_alert": _on("CREW ALERT" in self.cw),
            # The CM's descent: the landing system, the CM RCS, the trajectory's altitude.
            "els_logic": _on(self.els_logic),
            "els_auto": "AUTO" if self.els_auto else "MAN",
            "els_activate": _on(self.els_active),
            "apex_cover": "JETT" if self.apex_jett else "ON",
            "drogue_chutes": self.drogues,
            "main_chutes": "DEPLOYED" if self.mains else "STOWED",
            "cm_rcs_active": _on(self.cm_rcs_active),
            "cm_rcs_jets": "FIRING" if self.jets_firing else "OFF",
            "cm_altitude": tl.entry_altitude_ft(t),
        }
        for k, (kv, ka, ko, kh, ks) in enumerate(_FC_KEYS):
            amps = self.fc_amps[k]
            v[kv], v[ka], v[ko], v[kh], v[ks] = (self.fc_volts[k], amps, 0.0204 * amps,
                                                  0.00258 * amps, self.fc_skin[k])
            v[f"fc{k + 1}_cond_temp"] = self.fc_cond[k]
            v[f"fc{k + 1}_ph"] = self.fc_ph(k)
        fans = self.o2_fans
        for k, (op, oq, oh, of, hp, hq, hh, hf) in enumerate(_TANK_KEYS):
            v[op], v[oq] = self.o2_press[k], 100.0 * self.o2_mass[k] / O2_CAP
            v[oh] = "ON" if self.o2_heater[k] or fans[k] else "OFF"
            v[of] = "ON" if fans[k] else "OFF"
            v[hp], v[hq] = self.h2_press[k], 100.0 * self.h2_mass[k] / H2_CAP
            v[hh], v[hf] = "ON" if self.h2_heater[k] else "OFF", "OFF"
        for q, (kt, kp, kq) in enumerate(_RCS_KEYS):
            v[kt] = self.rcs_temp[q]
            v[kp] = self.sm_rcs_press(q)
            v[kq] = 100.0 * self.rcs[q] / RCS_QUAD
        return v

    def tunnel_press(self) -> float:
        """mm Hg between the DM's and Soyuz's hatches: its gas at its temperature."""
        return self.tunnel_gas * (self.dm_temp + self.tunnel_dt) / 293.0

    @staticmethod
    def _sband(env: Env) -> float:
        """Up-link receiver AGC: stronger high in the sky; the noise floor with no up-link."""
        if not env.aos:
            return -133.5
        if env.relay:
            return -108.0
        return -112.0 + 30.0 * math.sin(math.radians(max(env.elevation, 0.0)))


def _on(flag: bool) -> str:
    return "ON" if flag else "OFF"
