"""Command definitions (groundstation/core/commanddefs.py, telemetry_defs/commands/): the
shipped files load, the simulators implement every command they define, arguments are
checked with their ranges, and a wrong file is refused naming the file, the command and the
field, every problem at once."""

from __future__ import annotations

import re

import pytest

from groundstation.core.commanddefs import (
    CommandArgError,
    CommandDefinitionError,
    canonical_position,
    commands_dir,
    holds,
    load_all_commands,
    parse_commands,
)
from groundstation.core.definitions import VehicleDefinition, load_all
from simulators.apollo import ApolloModel
from simulators.soyuz import SoyuzModel


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_the_shipped_commands(defs: dict[str, VehicleDefinition]) -> None:
    commands = load_all_commands(defs)
    assert set(commands) == {"apollo_csm", "soyuz"}
    assert commands_dir().name == "commands"
    # The simulators do what the definitions promise, and nothing they do is undefined.
    assert {c.id for c in commands["apollo_csm"].commands} == ApolloModel.COMMANDS
    assert {c.id for c in commands["soyuz"].commands} == SoyuzModel.COMMANDS
    for vc in commands.values():
        for c in vc.commands:
            assert c.title.get("en") and c.title.get("ru")
            assert c.source, f"{c.id}: say where the figures come from"
            if c.kind == "procedure":
                assert c.crew_delay_s is not None and "estimate" in (c.source or "")
            # Every verification window leaves room for the crew's delay and the ship.
            assert all(x.within_s >= 10 for x in c.verify)
    apollo = commands["apollo_csm"]
    assert {c.id for c in apollo.commands if c.hazardous} == {"fuel_cell_shutdown",
                                                               "power_down",
                                                               "cm_rcs_disable"}
    assert {c.id for c in apollo.for_position("INCO")} >= {"crew_alert", "sce_to_aux"}
    assert "crew_alert" not in {c.id for c in apollo.for_position("EECOM")}
    assert {c.id for c in commands["soyuz"].for_position("SOZH")} == {"close_hatch_sa_bo",
                                                                       "open_hatch_sa_bo"}


def test_arguments_are_checked_and_conditions_bound(defs: dict[str, VehicleDefinition]
                                                   ) -> None:
    apollo = load_all_commands(defs)["apollo_csm"]
    reset = apollo.by_id["fuel_cell_reset"]
    assert reset.check_args({}) == {"cell": "ALL"}
    assert reset.check_args({"cell": 2}) == {"cell": "2"}
    assert reset.check_args({"cell": "all"}) == {"cell": "ALL"}
    assert [c.describe() for c in reset.conditions({"cell": "2"})] == [
        "fc2_amps above 5 within 30 s"]
    assert [c.parameter for c in reset.conditions({"cell": "ALL"})] == [
        "cw_fc_bus_disc", "main_bus_a_volts", "main_bus_b_volts"]
    heaters = apollo.by_id["o2_tank_heaters_fans_off"]
    assert heaters.check_args({"tank": "2"}) == {"tank": 2}
    assert [c.parameter for c in heaters.conditions({"tank": 1})] == ["o2_tank1_htr",
                                                                      "o2_tank1_fan"]
    for bad, says in (({"tank": 3}, "tank: 3 is not one of 1, 2"),
                      ({"tank": True}, "tank: must be a number"),
                      ({"tank": 1.5}, "tank: must be a whole number"),
                      ({}, "tank: required (tank=1|2)"),
                      ({"tank": 1, "valve": 2}, "valve: o2_tank_heaters_fans_off takes")):
        with pytest.raises(CommandArgError, match=re.escape(says)):
            heaters.check_args(bad)
    tv = load_all_commands(defs)["soyuz"].by_id["tv_power"]
    assert [(c.parameter, c.state) for c in tv.conditions(tv.check_args({"state": "on"}))] \
        == [("tv_status", "ON")]
    p = defs["soyuz"].parameter("tv_status")
    cond = tv.conditions({"state": "ON"})[0]
    assert holds(cond, float(p.state_code("ON")), p) and not holds(cond, 0.0, p)
    assert not holds(cond, None, p)
    assert canonical_position("sozh") == "СОЖ" and canonical_position("eecom") == "EECOM"
    assert canonical_position("janitor") is None


BAD = """\
schema: 1
vehicle: apollo_csm
commands:
  - id: crew_alert
    kind: realtime
    title: {en: A}
    positions: [INCO, JANITOR]
    crew_delay_s: 5
    verify:
      - {parameter: cw_crew_alert, state: "BLUE", within_s: 10}
  - id: heaters
    kind: procedure
    title: {en: B}
    positions: [EECOM]
    args:
      - {name: tank, type: int, choices: [1, 2, 3]}
      - {name: rate, type: float, min: 5, max: 1}
    verify:
      - {parameter: "o2_tank{tank}_htr", state: "OFF", within_s: 20}
      - {parameter: "o2_tank{rate}_fan", state: "OFF", within_s: 20}
      - {parameter: cabin_press, state: "OFF", within_s: 20}
      - {parameter: o2_tank1_htr, above: 3, within_s: 20, when: {valve: [1]}}
  - id: heaters
    kind: procedure
    title: {en: C}
    positions: [EECOM]
    crew_delay_s: 5
    verify:
      - {parameter: no_such, below: 3, within_s: 20}
      - {parameter: cabin_press, below: 3, above: 4, within_s: 20}
  - id: typo
    kind: realtime
    title: {en: D}
    positions: [EECOM]
    verfy: []
"""


def test_a_bad_file_is_refused_naming_file_command_and_field(
        defs: dict[str, VehicleDefinition]) -> None:
    with pytest.raises(CommandDefinitionError) as e:
        parse_commands(BAD, defs, "bad.yaml")
    text = str(e.value)
    # The shape first (pydantic), every problem at once.
    assert "bad.yaml: command 'typo' (commands[3]): verfy: unknown field" in text
    assert "command 'typo' (commands[3]): verify: required field is missing" in text
    with pytest.raises(CommandDefinitionError) as e:
        parse_commands(BAD.split("  - id: typo")[0], defs, "bad.yaml")
    problems = e.value.problems
    text = str(e.value)
    for where, what in [
        ("command 'crew_alert' (commands[0]): positions[1]", "'JANITOR' is not a console "
                                                             "position"),
        ("command 'crew_alert' (commands[0]): crew_delay_s", "a real-time command acts as "
                                                             "the ship receives it"),
        ("command 'crew_alert' (commands[0]): verify[0].state", "'BLUE' is not a state of "
                                                                "cw_crew_alert"),
        ("command 'heaters' (commands[1]): crew_delay_s", "a procedure says how long"),
        ("command 'heaters' (commands[1]): args[1].min", "min 5 is above max 1"),
        ("command 'heaters' (commands[1]): verify[0].parameter",
         "apollo_csm has no parameter 'o2_tank3_htr' (with tank=3)"),
        ("command 'heaters' (commands[1]): verify[1].parameter",
         "{rate}: a templated argument needs choices"),
        ("command 'heaters' (commands[1]): verify[2].state", "apollo_csm.cabin_press is not "
                                                             "a discrete"),
        ("command 'heaters' (commands[1]): verify[3].when.valve", "heaters has no argument "
                                                                  "'valve'"),
        ("command 'heaters' (commands[2]): id", "duplicate command id"),
        ("command 'heaters' (commands[2]): verify[0].parameter", "apollo_csm has no parameter "
                                                                 "'no_such'"),
        ("command 'heaters' (commands[2]): verify[1]", "give exactly one of state, above or "
                                                       "below"),
    ]:
        assert any(p == where and what in m for p, m in problems), (where, what, text)
    assert text.startswith(f"{len(problems)} problems in command definition bad.yaml:")
    with pytest.raises(CommandDefinitionError, match="no telemetry definition for 'vostok'"):
        parse_commands(BAD.replace("apollo_csm", "vostok").split("  - id: heaters")[0], defs)
