"""The shipped drill scenarios load, and really raise the alarms they expect, in time and
nothing else, and show the cues of their timed calls in time, when flown offline (the
mission, the ships' frames, the real decoder and alarm engine with the phase context; only
the frames a ground station hears live). Bad scenario files are refused with every problem
named by file, fault and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.mission_time import parse_get
from groundstation.drills.debrief import (
    build_debrief,
    markdown,
    scenario_injections,
)
from groundstation.drills.offline import fly_offline
from groundstation.drills.scenario import (
    ScenarioError,
    find_scenario,
    load_scenario,
    parse_scenario,
    scenario_files,
)

SHIPPED = scenario_files()


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_five_scenarios_ship() -> None:
    ids = {p.stem for p in SHIPPED}
    assert {"o2-tank-spike", "lightning-sync-loss", "entry-rcs-fumes", "dm-trapped-gas",
            "soyuz-cabin-leak"} <= ids


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_scenario_raises_what_it_expects(path: Path, defs: dict[str, VehicleDefinition]
                                         ) -> None:
    sc = load_scenario(path, defs)
    assert sc.id == path.stem
    result = fly_offline(sc, defs)
    # Every frame of the drill reaches the ground live: the alarms come when they happen.
    assert all(n == 0 for n in result.frames_not_heard.values()), result.frames_not_heard
    d = build_debrief(sc, "offline", scenario_injections(sc), result.events, speed=0.0,
                      started_get=sc.start_get, ended_get=sc.end_get + sc.grace,
                      cues=result.cues, calls_together=result.calls)
    for f in d["faults"]:
        assert f["get"] == pytest.approx(result.injected[f["id"]])
        for row in f["alarms"]:
            assert row["status"] != "missed_by_system", (f["id"], row)
            assert 0 <= row["raised_after_s"] <= row["within_s"]
            # Nobody acknowledged: each counts as missed by the trainee.
            assert row["status"] == "not_acknowledged"
    # Every timed call's cues show together, after the injection, before the call is due.
    for c in d["timed_calls"]:
        assert c["cues_in_time"], c
        assert 0 <= c["cues_together_after_s"] <= c["within_s"]
        # Nobody made it (the offline flight has no console): missing.
        assert c["status"] == "missing" and c["credit"] == 0
    assert d["raised_without_fault"] == []
    # Nobody sent anything either: every expected action is missing.
    assert all(a["status"] == "missing" for a in d["actions"])
    scored = sum(len(f["alarms"]) for f in d["faults"]) + len(d["actions"]) \
        + len(d["timed_calls"])
    assert d["score"] == (0 if scored else None)


def test_entry_drill_is_the_real_one(defs: dict[str, VehicleDefinition]) -> None:
    """ASTP's entry (JSC-10638): the ELS AUTO switch missed before the arming at 30,000 ft,
    no alarm at all (no C&W cue; the CM RCS stays regulated), two calls on the real cues:
    ELS AUTO still in MAN at the arming, and the RCS firing under the hand-deployed drogues
    while the cabin takes in outside air, ~217:25 GET (~21:15 UTC)."""
    sc = load_scenario(find_scenario("entry-rcs-fumes"), defs)
    f = sc.faults[0]
    assert f.fault == "entry_rcs_fumes" and f.expect == []
    assert tl.CM_SM_SEP <= f.start_get < tl.ELS_ARM
    assert tl.BLACKOUT[1] <= sc.start_get and sc.end_get <= tl.SPLASHDOWN
    result = fly_offline(sc, defs)
    assert result.events == []  # no caution-and-warning cue, no ground alarm
    calls = sc.timed_calls
    assert len(calls) == 2
    els, rcs = (result.calls[sc.calls.index(c)] for c in calls)
    # ELS AUTO still in MAN once ELS LOGIC is on at 30,000 ft (217:24:06)...
    assert tl.ELS_ARM <= els <= tl.ELS_ARM + 5
    # ... and the thrusters firing under the drogues, deployed by hand at 18,550 ft, with
    # the cabin above 6 psia: before the RCS was disabled at 9,600 ft (~217:25:06).
    assert tl.entry_time_at_ft(tl.ASTP_DROGUES_FT) <= rcs < tl.entry_time_at_ft(
        tl.ASTP_RCS_OFF_FT)
    assert parse_get("217:24:30") < rcs < parse_get("217:25:10")
    d = build_debrief(sc, "offline", scenario_injections(sc), result.events, speed=0.0,
                      started_get=sc.start_get, ended_get=sc.end_get + sc.grace,
                      cues=result.cues, calls_together=result.calls)
    # The calls are scored (the console's call key), and so are the procedures that act on
    # them: nobody made or sent any here.
    assert [a["status"] for a in d["actions"]] == ["missing", "missing"]
    assert [c["status"] for c in d["timed_calls"]] == ["missing", "missing"]
    assert d["score"] == 0
    text = markdown(d, None)
    assert text.count("**missing (never called)**") == 2  # each call, marked missing
    # The calls a trainee would make answer each its own timed call: the ELS, then the RCS.
    inj = d["faults"][0]["get"]
    made = [{"operator": "eecom", "text": "ELS AUTO now, the ELS is in MAN",
             "position": "EECOM", "request_id": "1", "clock": els + 5,
             "get_text": ""},
            {"operator": "gnc", "text": "RCS off now, fumes", "position": "GNC",
             "request_id": "2", "clock": inj + 400, "get_text": ""}]
    d = build_debrief(sc, "offline", scenario_injections(sc), result.events, speed=0.0,
                      started_get=sc.start_get, ended_get=sc.end_get + sc.grace,
                      calls_made=made)
    assert [(c["status"], c["by"]) for c in d["timed_calls"]] == [("in_time", "eecom/EECOM"),
                                                                   ("late", "gnc/GNC")]
    assert d["score"] == round(100 * (1 + 0.5) / 4)  # two actions missing, two calls


def test_dm_drill_is_the_night_of_17_18_july(defs: dict[str, VehicleDefinition]) -> None:
    """The false leak: the gas between the DM and Soyuz hatches warms, its pressure rises,
    on the night of 17-18 July (GET ~51-58 h), both crews asleep; not at the second docking
    and not a cooling."""
    sc = load_scenario(find_scenario("dm-trapped-gas"), defs)
    f = sc.faults[0]
    assert f.fault == "dm_trapped_gas" and f.params["delta_k"] > 0
    assert parse_get("051:00:00") <= f.start_get and sc.end_get <= parse_get("058:00:00")
    assert tl.crew_asleep(tl.APOLLO, f.start_get) and tl.crew_asleep(tl.SOYUZ, f.start_get)
    assert [(e.parameter, e.severity) for e in f.expect] == [("dm_tunnel_press", "yellow")]
    raised = [e for e in fly_offline(sc, defs).events if e["transition"] == "raised"]
    assert [(e["parameter"], e["side"]) for e in raised] == [("dm_tunnel_press", "high")]


TIMED = """\
schema: 1
id: t
title: T
briefing: B
start: "217:18:00"
ships: [apollo]
duration: 10m
calls:
  - "a sentence"
  - call: "RCS off"
    within_s: 300
    cues:
      - {parameter: cm_rcs_jets, state: FIRING}
      - {parameter: cabin_press, above: 6}
faults:
  - id: a
    vehicle: apollo
    fault: entry_rcs_fumes
    get: "217:20:00"
"""


def test_timed_calls_are_checked(defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(TIMED, "t.yaml", defs)
    assert sc.faults[0].expect == [] and [c.call for c in sc.timed_calls] == ["RCS off"]
    bad = (TIMED.replace("state: FIRING", "state: BLAZING")
           .replace("above: 6}", "above: 6, below: 9}")
           .replace("within_s: 300", "within_s: 900"))
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(bad, "b.yaml", defs)
    problems = exc.value.problems
    assert ("calls[1]: cues[0]: state", "'BLAZING' is not a state of cm_rcs_jets "
            "(FIRING, OFF)") in problems
    assert ("calls[1]: cues[1]", "give exactly one of state, above or below") in problems
    assert any(w == "calls[1]: within_s" for w, _ in problems)
    # A fault that raises no alarm needs a timed call that answers it.
    lone = TIMED[:TIMED.index("calls:")] + TIMED[TIMED.index("faults:"):]
    with pytest.raises(ScenarioError, match=r"faults\[0\]\): expect: a fault must expect"):
        parse_scenario(lone, "l.yaml", defs)


GOOD = """\
schema: 1
id: t
title: T
briefing: B
start: "049:12:00"
ships: [apollo]
duration: 5m
faults:
  - id: a
    vehicle: apollo
    fault: fuel_cell_loss
    params: {cell: 2}
    at: +30s
    expect:
      - {parameter: fc2_volts, severity: red, within_s: 60}
"""


def test_good_minimal_scenario(defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(GOOD, "good.yaml", defs)
    assert sc.ships == ["apollo_csm"] and sc.faults[0].vehicle == "apollo_csm"
    assert sc.faults[0].start_get == parse_get("049:12:30")
    assert sc.duration_s == 300 and sc.ack_within_s == 60
    assert sc.plot_parameters() == {"apollo_csm": ["fc2_volts"]}


BAD = """\
schema: 1
id: Bad Id
title: T
briefing: B
start: "049:12:00"
ships: [apollo_csm]
duration: 5m
faults:
  - id: leak
    vehicle: apollo_csm
    fault: cabin_leak
    params: {rate_kg_h: 3}
    at: +30s
    get: "049:13:00"
    expect:
      - {parameter: cabin_pres, within_s: 60}
  - id: cell
    vehicle: apollo_csm
    fault: fuel_cell_loss
    params: {cell: 4}
    at: +10m
    expect:
      - {parameter: fc2_volts, severity: red, within_s: 60}
  - id: soyuz-bit
    vehicle: soyuz
    fault: warp_drive
    at: 1m
    expect:
      - {parameter: sa_press, within_s: 60}
  - id: cell
    vehicle: apollo_csm
    fault: fuel_cell_loss
    params: {cell: 1}
    at: +1m
    expect:
      - {parameter: dock_ring_latch, severity: purple, within_s: 60}
"""


def test_bad_scenario_reports_every_problem_with_file_fault_and_field(
        defs: dict[str, VehicleDefinition]) -> None:
    # Shape errors first (pydantic): all of them at once, named by fault and field.
    with pytest.raises(ScenarioError) as shape:
        parse_scenario(BAD, "bad.yaml", defs)
    text = str(shape.value)
    assert text.startswith("1 problem in drill scenario bad.yaml")
    assert "bad.yaml: fault 'cell' (faults[3]): expect[0].severity: Input should be " \
           "'yellow' or 'red'" in text
    # With the shape fixed, the whole-file checks find the rest, again all at once.
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(BAD.replace("purple", "red"), "bad.yaml", defs)
    problems = exc.value.problems
    where = [w for w, _ in problems]
    text = str(exc.value)
    assert "bad.yaml: id: must be 1-64 lower-case letters" in text
    assert ("fault 'leak' (faults[0]): at", "give exactly one of 'at' (after the drill "
            "starts, e.g. '+2m') or 'get' (a GET such as '055:53:00' or an event such as "
            "'docking+10m')") in problems
    assert any(w == "fault 'leak' (faults[0]): params" and "takes rate_lb_h" in m
               for w, m in problems)
    assert ("fault 'leak' (faults[0]): expect[0]: parameter",
            "apollo_csm has no parameter 'cabin_pres'") in problems
    assert any(w == "fault 'cell' (faults[1]): at" and "not before the drill ends" in m
               for w, m in problems)
    assert any(w == "fault 'cell' (faults[1]): params" and "must be one of 1, 2, 3" in m
               for w, m in problems)
    assert any(w == "fault 'soyuz-bit' (faults[2]): fault" and "no fault 'warp_drive'" in m
               for w, m in problems)
    assert any(w == "fault 'soyuz-bit' (faults[2]): expect[0]: vehicle"
               and "does not transmit" in m for w, m in problems)
    assert "fault 'cell' (faults[3]): id" in where  # duplicate id
    assert ("fault 'cell' (faults[3]): expect[0]: parameter",
            "apollo_csm.dock_ring_latch has no limits, so it never raises an alarm") in problems
    assert len(problems) == 10, text


def test_bad_times_and_yaml(defs: dict[str, VehicleDefinition]) -> None:
    with pytest.raises(ScenarioError, match=r"x.yaml: not valid YAML"):
        parse_scenario("a: [", "x.yaml", defs)
    late = GOOD.replace('start: "049:12:00"', 'start: "217:25:00"')
    with pytest.raises(ScenarioError, match=r"duration: the drill would end at 217:30:00, "
                                            r"after apollo_csm's mission ended"):
        parse_scenario(late, "late.yaml", defs)
    with pytest.raises(ScenarioError, match=r"start: 'nonsense' is neither a GET"):
        parse_scenario(GOOD.replace('"049:12:00"', "nonsense"), "s.yaml", defs)
    with pytest.raises(ScenarioError, match=r"expect\[0\]: severity: apollo_csm.master_alarm "
                                            r"has no red limit; expect yellow"):
        parse_scenario(GOOD.replace("fc2_volts", "master_alarm"), "r.yaml", defs)
    with pytest.raises(ScenarioError, match=r"faults\[0\]\): colour: unknown field"):
        parse_scenario(GOOD.replace("    at: +30s", "    at: +30s\n    colour: red"),
                       "u.yaml", defs)


def test_find_scenario_says_what_exists() -> None:
    with pytest.raises(FileNotFoundError, match="o2-tank-spike"):
        find_scenario("no-such-drill")
    assert find_scenario("o2-tank-spike").name == "o2-tank-spike.yaml"
