"""Closed-loop drills: scenarios' expected and harmful actions (checked against the command
definitions), the offline flight that takes each expected action at its due time and sees
its effect in the telemetry, and the debrief's scoring of the commands a run sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from groundstation.core import messages
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import get_to_utc_ns
from groundstation.drills.debrief import (
    build_debrief,
    command_record,
    markdown,
    scenario_injections,
)
from groundstation.drills.offline import action_problems, fly_offline
from groundstation.drills.scenario import ScenarioError, load_scenario, parse_scenario
from groundstation.drills.scenario import scenario_files as shipped

WITH_ACTIONS = [p for p in shipped() if "actions:" in p.read_text(encoding="utf-8")]


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_the_closed_loop_drills() -> None:
    assert {p.stem for p in WITH_ACTIONS} >= {"o2-tank-spike", "lightning-sync-loss",
                                               "soyuz-cabin-leak", "entry-rcs-fumes"}


@pytest.mark.parametrize("path", WITH_ACTIONS, ids=[p.stem for p in WITH_ACTIONS])
def test_the_right_action_at_the_last_moment_saves_the_ship(
        path: Path, defs: dict[str, VehicleDefinition]) -> None:
    sc = load_scenario(path, defs)
    result = fly_offline(sc, defs, actions=True)
    assert action_problems(sc, result) == []
    for a in sc.actions:
        flown = result.actions[a.id]
        assert flown.heard and flown.act is not None
        assert flown.act >= flown.due  # the crew's delay
        assert [w for w in flown.watches if w.what.startswith("effect")]
        assert all(w.ok for w in flown.watches)


def test_without_the_action_the_o2_tank_ruptures_with_it_not(
        defs: dict[str, VehicleDefinition]) -> None:
    sc = load_scenario(next(p for p in WITH_ACTIONS if p.stem == "o2-tank-spike"), defs)
    alone = fly_offline(sc, defs)
    helped = fly_offline(sc, defs, actions=True)
    raised = {(e["parameter"], e["severity"]) for e in alone.events
              if e["transition"] in ("raised", "escalated")}
    assert {("main_bus_b_volts", "red"), ("fc3_volts", "red")} <= raised
    act = helped.actions["heaters-off"].act
    assert act is not None
    late = {e["parameter"] for e in helped.events if e["transition"] == "raised"
            and e["get"] > act + 1}
    assert not late & {"main_bus_b_volts", "fc3_volts", "o2_tank1_press"}


BASE = """\
schema: 1
id: t
title: T
briefing: B
start: "049:12:00"
ships: [apollo]
duration: 8m
faults:
  - id: trip
    vehicle: apollo
    fault: fuel_cell_trip
    params: {cell: 1}
    at: +30s
    expect:
      - {parameter: cw_fc_bus_disc, severity: red, within_s: 60, prevented_by: [reset]}
actions:
  - id: reset
    command: fuel_cell_reset
    args: {cell: 1}
    position: EECOM
    within_s: 120
    effect:
      - {parameter: fc1_amps, above: 5, within_s: 30, hold: true}
harmful:
  - command: fuel_cell_shutdown
    args: {cell: 2}
    reason: a healthy cell
    weight: 2
"""


def test_actions_are_checked_against_the_command_definitions(
        defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(BASE, "t.yaml", defs)
    assert sc.actions[0].position == "EECOM" and sc.faults[0].expect[0].prevented_by == [
        "reset"]
    bad = (BASE.replace("command: fuel_cell_reset", "command: fuel_cell_rest")
           .replace("prevented_by: [reset]", "prevented_by: [resett]")
           .replace("    args: {cell: 2}", "    args: {cell: 5}")
           .replace("      - {parameter: fc1_amps, above: 5", "      - {parameter: fc1_amp, "
                                                             "above: 5")
           + "  - command: tv_power\n    vehicle: soyuz\n    reason: x\n")
    with pytest.raises(ScenarioError) as e:
        parse_scenario(bad, "b.yaml", defs)
    problems = e.value.problems
    assert ("action 'reset' (actions[0]): command", "apollo_csm has no command "
            "'fuel_cell_rest' (its commands: crew_alert, o2_tank_heaters_fans_off, "
            "o2_tank_heaters_auto, fuel_cell_reset, fuel_cell_shutdown, power_down, "
            "power_up, sce_to_aux, els_auto, cm_rcs_disable; groundstation commanding "
            "list)") in problems
    assert ("fault 'trip' (faults[0]): expect[0]: prevented_by[0]", "no action 'resett' in "
            "this scenario") in problems
    assert ("harmful[0]: args.cell", "5 is not one of 1, 2, 3") in problems
    assert ("action 'reset' (actions[0]): effect[0]: parameter", "apollo_csm has no "
            "parameter 'fc1_amp'") in problems
    assert ("harmful[1]: vehicle", "soyuz does not fly in this drill, so it cannot be "
            "commanded; add it to 'ships'") in problems
    with pytest.raises(ScenarioError, match="GNC may not send fuel_cell_reset"):
        parse_scenario(BASE.replace("position: EECOM", "position: GNC"), "p.yaml", defs)
    with pytest.raises(ScenarioError, match=r"actions\[0\]\): within_s: 900 s after"):
        parse_scenario(BASE.replace("within_s: 120", "within_s: 900"), "w.yaml", defs)


def _events(sc: Any, *sent: tuple[str, str, dict[str, Any], str, float, str]
            ) -> list[dict[str, Any]]:
    """Command stage records as the runner keeps them: (id, command, args, operator and
    position, clock GET, final stage)."""
    out = []
    for n, (cid, command, args, by, clock, final) in enumerate(sent):
        operator, _, position = by.partition("/")
        for stage in (["queued", "sent", final] if final != "refused" else ["refused"]):
            ev = messages.CommandEvent(
                command_id=cid, seq=n, vehicle="apollo_csm", source="training/x",
                command=command, args=args, operator=operator, position=position,
                stage=stage, time_ns=0, data_time_ns=get_to_utc_ns(clock),
                reason="no" if stage in ("refused", "failed") else None)
            out.append(command_record(ev, clock))
    return out


def test_the_debrief_scores_actions_like_acknowledgements(
        defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(BASE, "t.yaml", defs)
    inj = scenario_injections(sc)
    t0 = inj[0].get

    def debrief(*sent: tuple[str, str, dict[str, Any], str, float, str]) -> dict[str, Any]:
        return build_debrief(sc, "x", inj, [], speed=1, started_get=sc.start_get,
                             ended_get=sc.end_get, command_events=_events(sc, *sent))

    # In time: full credit; the alarm it prevents did not come: not scored.
    d = debrief(("c1", "fuel_cell_reset", {"cell": "1"}, "eecom/EECOM", t0 + 60, "verified"))
    a = d["actions"][0]
    assert (a["status"], a["by"], a["after_s"], a["outcome"]) == ("in_time", "eecom/EECOM",
                                                                   60.0, "verified")
    assert d["faults"][0]["alarms"][0]["status"] == "prevented"
    assert d["score"] == 100 and d["commanders"] == ["eecom"]
    # Late: half.
    d = debrief(("c1", "fuel_cell_reset", {"cell": "1"}, "eecom/EECOM", t0 + 200, "verified"))
    assert d["actions"][0]["status"] == "late" and d["score"] == 50
    # The right command with another argument, or from another position: wrong.
    d = debrief(("c1", "fuel_cell_reset", {"cell": "ALL"}, "eecom/EECOM", t0 + 10, "verified"))
    assert d["actions"][0]["status"] == "wrong" and "not fuel_cell_reset cell=1" in \
        d["actions"][0]["note"]
    d = debrief(("c1", "fuel_cell_reset", {"cell": "1"}, "flight/FLIGHT", t0 + 10,
                 "verified"))
    assert d["actions"][0]["note"] == "sent from FLIGHT, not EECOM" and d["score"] == 0
    # Harmful: costs its weight (never below zero); other commands cost nothing; refused
    # ones never reached the ship.
    d = debrief(("c1", "fuel_cell_reset", {"cell": "1"}, "eecom/EECOM", t0 + 10, "verified"),
                ("c2", "fuel_cell_shutdown", {"cell": 2}, "eecom/EECOM", t0 + 20, "verified"),
                ("c3", "crew_alert", {}, "inco/INCO", t0 + 30, "verified"),
                ("c4", "power_down", {}, "gnc/GNC", t0 + 40, "refused"))
    assert [h["command_id"] for h in d["harmful_actions"]] == ["c2"]
    assert [o["command_id"] for o in d["other_commands"]] == ["c3"]
    assert [r["command_id"] for r in d["refused_commands"]] == ["c4"]
    assert d["score"] == 0  # 1 in time - 2 harmful, never below 0
    assert d["counts"]["harmful"] == 1 and d["counts"]["actions_in_time"] == 1
    md = markdown(d)
    assert "## Actions" in md and "sent in time" in md and "a healthy cell" in md
    assert "Never sent" in md and "crew_alert by inco/INCO" in md
    # Nothing sent: missing; the alarm not prevented and not raised: missed by the system.
    d = debrief()
    assert d["actions"][0]["status"] == "missing" and d["score"] == 0
    assert d["faults"][0]["alarms"][0]["status"] == "missed_by_system"
