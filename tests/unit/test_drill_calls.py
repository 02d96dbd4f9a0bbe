"""Calls in a drill: the console's call key makes a `DrillCall` on calls/<operator>/<drill>,
the drill runner stamps it with the mission clock, and the debrief scores the scenario's
timed calls against the calls made (in time, late, missing), as it scores actions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from groundstation.core import messages, topics
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.drills.debrief import (
    build_debrief,
    call_record,
    markdown,
    scenario_injections,
    score_calls,
)
from groundstation.drills.scenario import ScenarioError, parse_scenario

SCENARIO = """\
schema: 1
id: t
title: T
briefing: B
start: "217:18:00"
ships: [apollo]
duration: 10m
calls:
  - "a sentence, not scored"
  - call: "ELS AUTO now"
    within_s: 270
    keywords: [els]
    cues:
      - {parameter: els_auto, state: MAN}
  - call: "RCS off now (fumes)"
    within_s: 300
    keywords: ["rcs|рсу", "off|disable|выкл"]
    weight: 2
    cues:
      - {parameter: cm_rcs_jets, state: FIRING}
faults:
  - id: a
    vehicle: apollo
    fault: entry_rcs_fumes
    get: "217:20:00"
"""


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def made(operator: str, text: str, clock: float, position: str | None = None
         ) -> dict[str, Any]:
    call = messages.DrillCall(request_id=f"{operator}-{clock}", text=text, position=position)
    return call_record(operator, call, clock)


def test_the_wire_call_topic_and_message() -> None:
    assert topics.drill_calls("eecom", "d1") == "calls/eecom/d1"
    assert topics.drill_calls_subscription("d1") == "calls/+/d1"
    assert topics.parse("calls/eecom/d1") == topics.DrillCallTopic("eecom", "d1")
    for bad in ("calls/eecom", "calls/eecom/d1/x", "calls//d1"):
        with pytest.raises(ValueError, match="calls/<operator>/<drill>"):
            topics.parse_drill_calls(bad)
    with pytest.raises(ValueError, match="one topic level"):
        topics.drill_calls("ee/com", "d1")
    call = messages.DrillCall.from_json(b'{"request_id": "r1", "text": "  RCS off  ", '
                                        b'"position": "GNC"}')
    assert call.text == "RCS off" and call.position == "GNC"
    assert messages.DrillCall.from_json(call.to_json()) == call
    # The operator is whom the broker authenticated (the topic), never a field.
    with pytest.raises(messages.MessageError, match="operator: unknown field") as exc:
        messages.DrillCall.from_json(b'{"request_id": "r2", "text": "x", "operator": "fd"}')
    assert exc.value.request_id == "r2"
    with pytest.raises(messages.MessageError, match="text"):
        messages.DrillCall.from_json(b'{"request_id": "r3", "text": "   "}')
    with pytest.raises(messages.MessageError, match="text"):
        messages.DrillCall.from_data({"request_id": "r4",
                                      "text": "x" * (messages.CALL_MAX + 1)})


def test_keywords_are_checked_and_matched(defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(SCENARIO, "t.yaml", defs)
    els, rcs = sc.timed_calls
    assert els.matches("ELS AUTO now") and not els.matches("RCS off")
    assert rcs.matches("the RCS, OFF now") and rcs.matches("РСУ выключить")
    assert not rcs.matches("RCS looks fine")
    with pytest.raises(ScenarioError, match=re.escape("keyword ' | ' is empty")):
        parse_scenario(SCENARIO.replace("keywords: [els]", "keywords: [' | ']"), "b.yaml",
                       defs)


def test_calls_are_scored_in_time_late_or_missing(defs: dict[str, VehicleDefinition]
                                                  ) -> None:
    sc = parse_scenario(SCENARIO, "t.yaml", defs)
    inj = scenario_injections(sc)
    t0 = inj[0].get
    calls = [made("eecom", "cabin pressure climbing", t0 + 10, "EECOM"),  # answers none
             made("eecom", "ELS in MAN: ELS AUTO now", t0 + 200, "EECOM"),
             made("gnc", "RCS off, fumes", t0 + 350, "GNC"),
             made("gnc", "RCS off, again", t0 + 360, "GNC")]  # already answered
    rows, other = score_calls(sc, inj, calls)
    assert [(r["status"], r["credit"], r.get("by"), r.get("after_s")) for r in rows] == [
        ("in_time", 1.0, "eecom/EECOM", 200.0), ("late", 0.5, "gnc/GNC", 350.0)]
    assert [m["text"] for m in other] == ["cabin pressure climbing", "RCS off, again"]
    d = build_debrief(sc, "d1", inj, [], speed=1.0, started_get=sc.start_get,
                      ended_get=sc.end_get, calls_made=calls)
    # weights 1 and 2: (1 + 2 x 0.5) / 3
    assert d["score"] == round(100 * 2 / 3)
    assert d["counts"]["calls_in_time"] == 1 and d["counts"]["calls_late"] == 1
    assert d["callers"] == ["eecom", "gnc"]
    text = markdown(d, None)
    assert '**called in time: eecom/EECOM at' in text and '"ELS in MAN: ELS AUTO now"' in text
    assert "**called late: gnc/GNC" in text
    assert "- calls: 1 in time, 1 late, 0 missing of 2 timed calls; made by eecom, gnc" \
        in text
    assert 'Other calls made' in text and '"RCS off, again"' in text
    json.dumps(d, allow_nan=False)  # the debrief.json


def test_a_call_before_the_fault_or_never_made_is_missing(
        defs: dict[str, VehicleDefinition]) -> None:
    sc = parse_scenario(SCENARIO, "t.yaml", defs)
    inj = scenario_injections(sc)
    early = [made("eecom", "ELS AUTO", inj[0].get - 60)]  # before the fault: no answer
    d = build_debrief(sc, "d1", inj, [], speed=1.0, started_get=sc.start_get,
                      ended_get=sc.end_get, calls_made=early)
    assert [c["status"] for c in d["timed_calls"]] == ["missing", "missing"]
    assert d["score"] == 0 and len(d["other_calls"]) == 1
    assert markdown(d, None).count("**missing (never called)**") == 2
    # A fault never injected (the drill stopped early): its calls are missing too.
    d = build_debrief(sc, "d1", [], [], speed=1.0, started_get=sc.start_get,
                      ended_get=sc.end_get, calls_made=early)
    assert [c["status"] for c in d["timed_calls"]] == ["missing", "missing"]


def test_the_timeline_marks_the_calls(defs: dict[str, VehicleDefinition], tmp_path: Path
                                      ) -> None:
    pytest.importorskip("matplotlib")
    from groundstation.drills import plot

    sc = parse_scenario(SCENARIO, "t.yaml", defs)
    inj = scenario_injections(sc)
    calls = [made("eecom", "ELS AUTO", inj[0].get + 30), made("fd", "hello", inj[0].get + 40)]
    d = build_debrief(sc, "d1", inj, [], speed=1.0, started_get=sc.start_get,
                      ended_get=sc.end_get, calls_made=calls)
    rows = dict(plot._command_marks(d))
    assert [m[0] for m in rows["call 1"]] == ["|", "*"]
    assert rows["call 1"][1][2] == plot.ACTION_COLOUR["in_time"]
    assert [m[0] for m in rows["call 2"]] == ["|", "x"]
    assert [m[0] for m in rows["other calls"]] == ["P"]
    path = plot.plot_timeline(tmp_path / "t.png", d, {}, defs, {"apollo_csm": ["cabin_press"]})
    assert path.stat().st_size > 10_000
