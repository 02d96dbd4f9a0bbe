"""Commands and procedures in the ships' physics (simulators/commands.py and the models'
`command`): each shows in the PCM frames, judged through the real decoder, and a ship that
does not hear the ground does not answer."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core import messages
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import LIFTOFF_NS, get_to_utc_ns, parse_get
from simulators.checks import check_blocks
from simulators.commands import ShipCommands
from simulators.mission import Mission
from simulators.telemetry import TelemetryStream

APOLLO, SOYUZ = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def series(m: Mission, s: TelemetryStream, pid: str, until: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """(GET, value) of one parameter over the stream's next frames, decoded."""
    got: list[tuple[np.ndarray, np.ndarray]] = []
    block = s.frames_until(until)
    assert block is not None
    check_blocks(m, s.definition, [block], StreamDecoder(s.definition),
                 on_batch=lambda b, _: got.append(b.series(pid)[:2]))
    t = np.concatenate([g[0] for g in got])
    return (t - LIFTOFF_NS) / 1e9, np.concatenate([g[1] for g in got])


def uplink(command: str, kind: str, **args: object) -> bytes:
    return messages.CommandUplink(command_id="c-1", command=command, kind=kind, args=args,
                                  operator="eecom", sent_ns=0).to_json()


@pytest.fixture(scope="module")
def tank(defs: dict[str, VehicleDefinition]) -> Mission:
    """The o2-tank-spike drill's ship a minute into the stuck heater (ATS-6 relay, docked)."""
    m = Mission(parse_get("055:45:00"), seed=3, definitions=defs, historical=False)
    m.inject(APOLLO, "o2_tank_heater", {"tank": 2, "rate_psi_min": 30, "rupture": True},
             at="055:46:00")
    m.fast_forward(parse_get("055:47:00"))
    return m


def test_heaters_off_stops_the_stuck_heater_and_the_rupture(
        tank: Mission, defs: dict[str, VehicleDefinition]) -> None:
    for act in (False, True):
        m = copy.deepcopy(tank)
        ship = ShipCommands(m)
        s = TelemetryStream(m, defs[APOLLO])
        if act:
            ack = ship.receive(APOLLO, uplink("o2_tank_heaters_fans_off", "procedure",
                                              tank=2), m.t)
            assert ack is not None and ack.stage == "crew_acknowledged"
            assert ack.act_ns == get_to_utc_ns(m.t + 15)  # the crew's 15 s
        get, press = series(m, s, "o2_tank2_press", m.t + 600)
        if act:
            # The climb stops once the crew has thrown the switches, and never ruptures.
            after = press[get > get[0] + 30]
            assert after.max() < press[get < get[0] + 20].max() + 3
            assert m.apollo.rupture_time is None and m.apollo.o2_switch[1] == "OFF"
            assert (m.applied[0][1], m.applied[0][2]) == (APOLLO, "o2_tank_heaters_fans_off")
        else:
            assert press.max() > 990 or m.apollo.rupture_time is not None


def test_a_tripped_fuel_cell_stays_off_until_reset(defs: dict[str, VehicleDefinition]
                                                   ) -> None:
    m = Mission(parse_get("049:12:00"), seed=5, definitions=defs, historical=False)
    for cell in (1, 2, 3):
        m.inject(APOLLO, "fuel_cell_trip", {"cell": cell}, at="049:13:00")
    s = TelemetryStream(m, defs[APOLLO])
    get, bus = series(m, s, "main_bus_a_volts", parse_get("049:16:00"))
    assert bus[get > parse_get("049:13:10")].max() < 26.25  # on the entry batteries
    assert m.apollo.fc_tripped == [True, True, True]
    # Healthy cells off the buses read their open-circuit voltage, not zero.
    assert 30 < m.apollo.fc_volts[0] < 33
    ship = ShipCommands(m)
    ack = ship.receive(APOLLO, uplink("fuel_cell_reset", "procedure", cell="ALL"),
                       parse_get("049:16:00"))
    assert ack is not None and ack.stage == "crew_acknowledged"
    get, bus = series(m, s, "main_bus_a_volts", parse_get("049:18:00"))
    assert bus[get > parse_get("049:16:25")].min() > 27.0
    assert m.apollo.fc_tripped == [False, False, False]
    _, disc = series(m, s, "cw_fc_bus_disc", parse_get("049:18:30"))
    assert set(disc.tolist()) == {defs[APOLLO].parameter("cw_fc_bus_disc").state_code("OFF")}


def test_sce_to_aux_clears_the_garbled_telemetry(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(parse_get("049:12:00"), seed=5, definitions=defs, historical=False)
    m.inject(APOLLO, "sync_loss", {"fraction": 0.7}, at="049:12:30")
    s = TelemetryStream(m, defs[APOLLO])
    nosync = defs[APOLLO].parameter("pcm_sync").state_code("NOSYNC")
    _, sync = series(m, s, "pcm_sync", parse_get("049:13:00"))
    assert nosync in sync.tolist()
    block = s.frames_until(parse_get("049:13:10"))
    assert block is not None and block.garbled.any()
    ShipCommands(m).receive(APOLLO, uplink("sce_to_aux", "procedure"), parse_get("049:13:10"))
    s.frames_until(parse_get("049:13:25"))  # the crew's 10 s
    block = s.frames_until(parse_get("049:14:00"))
    assert block is not None and not block.garbled.any()
    _, sync = series(m, s, "pcm_sync", parse_get("049:14:30"))
    assert nosync not in sync.tolist()


def test_closing_the_hatch_saves_the_descent_module(defs: dict[str, VehicleDefinition]
                                                   ) -> None:
    start = parse_get("066:35:30")
    base = Mission(start, seed=5, definitions=defs, historical=False)
    base.inject(SOYUZ, "cabin_leak", {"rate_kg_h": 20, "module": "bo"}, at=start + 60)
    end = start + 540
    runs = {}
    for act in (False, True):
        m = copy.deepcopy(base)
        s = TelemetryStream(m, defs[SOYUZ])
        if act:
            s.frames_until(start + 120)
            ack = ShipCommands(m).receive(SOYUZ, uplink("close_hatch_sa_bo", "procedure"),
                                          start + 120)
            assert ack is not None and ack.stage == "crew_acknowledged"
        runs[act] = series(m, s, "sa_press", end)
        assert m.soyuz.hatch_open(m.t) is not act
    (get0, sa0), (get1, sa1) = runs[False], runs[True]
    assert sa0[-1] < 440  # left open: the СА follows the БО down
    assert sa1[-1] > 495  # closed at +2 min (+1 min for the crew): repressed from the reserve
    assert sa1[get1 > start + 300].min() > sa0[get0 > start + 300].min() + 40


def test_radio_commands_switch_the_tv_and_the_pump_and_step_the_counter(
        defs: dict[str, VehicleDefinition]) -> None:
    start = parse_get("066:36:30")  # in a Soviet pass
    m = Mission(start - 1500, seed=5, definitions=defs, historical=False)
    m.inject(SOYUZ, "coolant_loop", {}, at=start - 1490)
    m.fast_forward(start)
    assert m.soyuz.coolant > 25 and not m.soyuz.pump_on
    ship = ShipCommands(m)
    count = m.soyuz.cmd_count
    ack = ship.receive(SOYUZ, uplink("coolant_backup_pump", "realtime"), m.t)
    assert ack is not None and ack.stage == "received" and ack.act_ns == ack.time_ns
    ship.receive(SOYUZ, uplink("tv_power", "realtime", state="ON"), m.t)
    m.advance_to(m.t + 2)
    assert m.soyuz.pump_on and m.soyuz.tv(m.t) == "ON"
    assert m.soyuz.cmd_count == pytest.approx(count + 2, abs=0.1)


def test_crew_alert_lights_for_a_minute(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(parse_get("044:25:30"), seed=5, definitions=defs, historical=False)
    s = TelemetryStream(m, defs[APOLLO])
    on = defs[APOLLO].parameter("cw_crew_alert").state_code("ON")
    ShipCommands(m).receive(APOLLO, uplink("crew_alert", "realtime"), m.t)
    get, light = series(m, s, "cw_crew_alert", m.t + 90)
    lit = get[light == on]
    assert lit.size and 55 <= lit.max() - lit.min() <= 61


def test_a_ship_out_of_contact_does_not_answer_and_a_bad_uplink_is_rejected(
        defs: dict[str, VehicleDefinition]) -> None:
    start = parse_get("030:00:00")
    m = Mission(start, seed=5, definitions=defs, historical=False)
    ship = ShipCommands(m)
    los = m.find_coverage(APOLLO, start, 60, aos=False)
    assert ship.receive(APOLLO, uplink("crew_alert", "realtime"), los + 10) is None
    aos = m.find_coverage(APOLLO, start, 60, aos=True)
    for payload, why in (
            (uplink("fly_to_mars", "realtime"), "apollo_csm has no command 'fly_to_mars'"),
            (uplink("crew_alert", "procedure"), "crew_alert is a realtime command"),
            (uplink("o2_tank_heaters_fans_off", "procedure", tank=9), "tank: 9 is not one of"),
            (uplink("tv_power", "realtime", state="ON"), "apollo_csm has no command")):
        ack = ship.receive(APOLLO, payload, aos + 10)
        assert ack is not None and ack.stage == "rejected" and why in (ack.reason or "")
    assert ship.receive(APOLLO, b"not json", aos + 10) is None
    assert m.actions == [] and m.applied == []
