"""The drill debrief: which expected alarms were raised and when, who acknowledged them and
how quickly, what was missed, what was raised with no fault behind it, and a score.

Times are on the mission clock: GET (and the 1975 UTC) of the data that raised an alarm,
and reaction times in mission seconds. A reaction time is the mission time between the
drill runner receiving the alarm and receiving its acknowledgement, both read off the
simulators' clock, so the pipeline's latency cancels out and a pause (which freezes the
mission clock) does not count; at speed 1 mission seconds are wall seconds.

The scoring rule (also in simulators/scenarios/README.md):

* Each expected alarm is worth its weight (default 1).
* Raised by the system in time (within `within_s` of its injection, at least at the expected
  severity) and acknowledged within `ack_within_s` of being raised: full credit (1).
  Acknowledged later: half credit (0.5). Never acknowledged: nothing ("missed by the
  trainee").
* Not raised in time ("missed by the system") is a scenario or limit problem, not the
  trainee's: it is left out of the score and listed for the instructor.
* Alarms raised without a fault (no injected fault expects them or lists them as
  collateral, no fault the instructor added during the run was on their ship before them,
  and the scenario does not tolerate them) cost nothing: the trainee did not
  cause them. They are listed, because a drill that raises them needs fixing (or the ground
  system does).
* score = 100 x credit / weight of the scored expectations, rounded; none when nothing
  could be scored.
* Timed calls (a call the trainee should make on cues that raise no alarm, by a time) are
  listed with when their cues showed (when known), and are not scored yet: that needs the
  console's call key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundstation.core import topics
from groundstation.core.mission_time import format_get, format_utc
from groundstation.drills.scenario import SEVERITY_RANK, Call, Scenario

RAISES = ("raised", "escalated")
NOT_SCORED_CALL = "not scored yet: needs the console's call key"
LATE_CREDIT = 0.5
# Frame times of the alarm's data and the injection GET are on the same clock; a sample
# can sit a fraction of a physics step before the fault's GET.
TOLERANCE_S = 1.0


@dataclass
class Injection:
    """A fault as injected in a run: from the scenario or by the instructor."""

    id: str
    vehicle: str
    fault: str
    params: dict[str, Any]
    get: float  # GET the fault started
    origin: str = "scenario"  # or "instructor"
    expect: list[dict[str, Any]] = field(default_factory=list)
    collateral: list[str] = field(default_factory=list)
    sim_id: str = ""  # the simulator's fault id (F1, ...)
    clock: float | None = None  # mission clock when it was injected

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "vehicle": self.vehicle, "fault": self.fault,
                "params": self.params, "get": self.get, "get_text": format_get(self.get),
                "utc": format_utc(self.get), "origin": self.origin, "sim_id": self.sim_id,
                "expect": self.expect, "collateral": self.collateral}


def scenario_injections(sc: Scenario) -> list[Injection]:
    """The scenario's faults, planned at their GETs (before a run says when they started)."""
    return [Injection(f.id, f.vehicle, f.fault, dict(f.params), f.start_get,
                      expect=[{"parameter": e.parameter,
                               "vehicle": sc.expected_vehicle(f, e),
                               "severity": e.severity, "within_s": e.within_s,
                               "ack_within_s": sc.ack_within(e), "weight": e.weight}
                              for e in f.expect],
                      collateral=list(f.collateral)) for f in sc.faults]


def _rank(severity: str | None) -> int:
    return {"nominal": 0, "yellow": 1, "red": 2}.get(severity or "", 0)


def build_debrief(sc: Scenario, drill_id: str, injections: list[Injection],
                  events: list[dict[str, Any]], *, speed: float, started_get: float,
                  ended_get: float, pauses: list[dict[str, Any]] | None = None,
                  commands: list[dict[str, Any]] | None = None,
                  stopped_early: bool = False, wall_s: float | None = None,
                  cues: dict[tuple[int, int], float] | None = None,
                  calls_together: dict[int, float] | None = None) -> dict[str, Any]:
    """Match the alarm events of a run against what each injected fault expected."""
    order = {id(e): i for i, e in enumerate(events)}
    used: set[int] = set()
    faults_out: list[dict[str, Any]] = []
    total_w = credit = 0.0
    counts = {"expected": 0, "acknowledged": 0, "late": 0, "missed_by_trainee": 0,
              "missed_by_system": 0}
    for inj in injections:
        rows = []
        for exp in inj.expect:
            row = _match(inj, exp, events, order, used)
            rows.append(row)
            counts["expected"] += 1
            st = row["status"]
            if st == "missed_by_system":
                counts["missed_by_system"] += 1
                continue
            total_w += exp.get("weight", 1.0)
            credit += exp.get("weight", 1.0) * row["credit"]
            counts[{"acknowledged": "acknowledged", "late": "late",
                    "not_acknowledged": "missed_by_trainee"}[st]] += 1
        faults_out.append({**inj.to_dict(), "alarms": rows})
    unexplained = _unexplained(sc, injections, events)
    calls = call_rows(sc, injections, cues, calls_together)
    score = None if total_w == 0 else round(100.0 * credit / total_w)
    operators = sorted({e["operator"] for e in events
                        if e["transition"] == "acknowledged" and e.get("operator")})
    return {
        "version": 1, "drill": drill_id, "source": topics.training(drill_id),
        "scenario": {"id": sc.id, "title": sc.title, "file": sc.path,
                     "start": format_get(sc.start_get), "duration_s": sc.duration_s,
                     "ships": sc.ships, "positions": sc.positions,
                     "ack_within_s": sc.ack_within_s,
                     "calls": [c if isinstance(c, str) else c.call for c in sc.calls],
                     "history": sc.history},
        "timed_calls": calls,
        "speed": speed, "started_get": started_get, "started": format_get(started_get),
        "started_utc": format_utc(started_get), "ended_get": ended_get,
        "ended": format_get(ended_get), "ended_utc": format_utc(ended_get),
        "stopped_early": stopped_early, "wall_s": wall_s,
        "pauses": pauses or [], "commands": commands or [],
        "faults": faults_out, "raised_without_fault": unexplained,
        "operators": operators, "counts": counts,
        "score": score, "score_rule": "full credit for an ack within ack_within_s, half for "
                                      "a later ack, none without; alarms the system did not "
                                      "raise in time are not scored; alarms without a fault "
                                      "cost nothing (simulators/scenarios/README.md)",
        "events": [{k: v for k, v in e.items() if k != "seq"} for e in events],
    }


def call_rows(sc: Scenario, injections: list[Injection],
              cues: dict[tuple[int, int], float] | None,
              together: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Each timed call: by when it was due, when its cues showed, each and all together
    (None: not watched in this run), and its status. Cue times come from the offline flight
    (drill check --fly); a run against the ingest has none yet."""
    got = {i.id: i.get for i in injections}
    rows = []
    for i, c in enumerate(sc.calls):
        if not isinstance(c, Call):
            continue
        f = sc.call_fault(c)
        inj = got.get(f.id) if f is not None else None
        cue_rows = []
        for j, cue in enumerate(c.cues):
            seen = None if cues is None else cues.get((i, j))
            cue_rows.append({"cue": cue.describe(), "vehicle": sc.cue_vehicle(c, cue),
                             "seen_get": seen,
                             "seen": None if seen is None else format_get(seen),
                             "after_s": None if seen is None or inj is None else seen - inj})
        due = None if inj is None else inj + c.within_s
        row: dict[str, Any] = {"call": c.call, "fault": f.id if f is not None else None,
                               "within_s": c.within_s, "due_get": due,
                               "due": None if due is None else format_get(due),
                               "cues": cue_rows, "status": NOT_SCORED_CALL}
        if cues is not None:
            ready = (together or {}).get(i)
            row["cues_together_get"] = ready
            row["cues_together"] = None if ready is None else format_get(ready)
            row["cues_together_after_s"] = None if ready is None or inj is None else ready - inj
            row["cues_in_time"] = ready is not None and due is not None and ready <= due
            if not row["cues_in_time"]:
                row["note"] = ("its cues never showed together" if ready is None else
                               f"its cues showed together only at {format_get(ready)}, after "
                               f"the call was due ({format_get(due) if due else '-'})")
        rows.append(row)
    return rows


def _match(inj: Injection, exp: dict[str, Any], events: list[dict[str, Any]],
           order: dict[int, int], used: set[int]) -> dict[str, Any]:
    v, pid = exp.get("vehicle") or inj.vehicle, exp["parameter"]
    need = SEVERITY_RANK[exp.get("severity", "yellow")]
    within, ack_within = float(exp["within_s"]), float(exp["ack_within_s"])
    row: dict[str, Any] = {"parameter": pid, "vehicle": v, "severity": exp["severity"],
                           "within_s": within, "ack_within_s": ack_within,
                           "weight": exp.get("weight", 1.0)}
    mine = [e for e in events if e["vehicle"] == v and e["parameter"] == pid
            and e["get"] >= inj.get - TOLERANCE_S]
    first = next((e for e in mine if e["transition"] in RAISES), None)
    hit = next((e for e in mine if e["transition"] in RAISES and _rank(e["severity"]) >= need
                and id(e) not in used), None)
    if first is not None:
        row["first_raised_get"] = first["get"]
        row["first_severity"] = first["severity"]
    if hit is None or hit["get"] - inj.get > within:
        row.update(status="missed_by_system", credit=0.0,
                   raised_get=None if hit is None else hit["get"],
                   note="not raised" if hit is None else
                   f"raised {hit['get'] - inj.get:.1f} s after the injection, later than "
                   f"{within:g} s")
        if hit is not None:
            row["raised"] = format_get(hit["get"])
        return row
    used.add(id(hit))
    row.update(raised_get=hit["get"], raised=format_get(hit["get"]),
               raised_utc=format_utc(hit["get"]), raised_after_s=hit["get"] - inj.get,
               raised_severity=hit["severity"], value=hit.get("value"),
               value_text=hit.get("value_text"), limit=hit.get("limit"),
               label=hit.get("label"), unit=hit.get("unit"))
    ack = next((e for e in mine if e["transition"] == "acknowledged"
                and order[id(e)] > order[id(hit)]), None)
    if ack is None:
        row.update(status="not_acknowledged", credit=0.0, acked_by=None, reaction_s=None)
        return row
    reaction = _reaction(hit, ack)
    ack_get = hit["get"] + reaction
    status = "acknowledged" if reaction <= ack_within else "late"
    ack["acked_get"] = ack_get  # where the timeline draws it: on the same clock as the raise
    row.update(status=status, credit=1.0 if status == "acknowledged" else LATE_CREDIT,
               acked_by=ack.get("operator"), acked_get=ack_get, acked=format_get(ack_get),
               acked_utc=format_utc(ack_get), reaction_s=round(reaction, 2))
    return row


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def _reaction(raised: dict[str, Any], ack: dict[str, Any]) -> float:
    """Mission seconds from the alarm reaching the console to its acknowledgement."""
    if raised.get("clock") is not None and ack.get("clock") is not None:
        return max(0.0, float(ack["clock"]) - float(raised["clock"]))
    return max(0.0, float(ack["get"]) - float(raised["get"]))


def _unexplained(sc: Scenario, injections: list[Injection], events: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Alarms raised that no injected fault explains."""
    tolerated = {(t.vehicle, t.parameter) for t in sc.tolerate}
    out = []
    for e in events:
        if e["transition"] != "raised":
            continue
        key = (e["vehicle"], e["parameter"])
        if key in tolerated:
            continue
        why = None
        for inj in injections:
            if e["get"] < inj.get - TOLERANCE_S:
                continue
            expected = {(x.get("vehicle") or inj.vehicle, x["parameter"]) for x in inj.expect}
            if key in expected or (e["vehicle"] == inj.vehicle
                                   and e["parameter"] in inj.collateral):
                why = inj.id
                break
            if inj.origin == "instructor" and e["vehicle"] == inj.vehicle:
                # An ad-hoc fault names no collateral: its ship's alarms after it are its.
                why = inj.id
                break
        if why is None:
            out.append({"vehicle": e["vehicle"], "parameter": e["parameter"],
                        "severity": e["severity"], "get": e["get"],
                        "raised": format_get(e["get"]), "value": e.get("value"),
                        "value_text": e.get("value_text"), "label": e.get("label")})
    return out


# --- output ---------------------------------------------------------------------------------

STATUS_TEXT = {"acknowledged": "acknowledged in time", "late": "acknowledged late",
               "not_acknowledged": "**missed by the trainee** (never acknowledged)",
               "missed_by_system": "**missed by the system**"}


def markdown(d: dict[str, Any], picture: str | None = "timeline.png") -> str:
    sc = d["scenario"]
    lines = [f"# Drill debrief: {sc['title']}", "",
             f"- drill `{d['drill']}` (scenario `{sc['id']}`), data tagged "
             f"`source='{d['source']}'`",
             f"- flown {d['started']} to {d['ended']} GET ({d['started_utc']} to "
             f"{d['ended_utc']}) at {d['speed']:g}x"
             + (", stopped early by the instructor" if d["stopped_early"] else ""),
             f"- acknowledged by: {', '.join(d['operators']) or 'nobody'}",
             f"- **score: {'n/a' if d['score'] is None else d['score']} / 100** "
             f"({d['counts']['acknowledged']} in time, {d['counts']['late']} late, "
             f"{d['counts']['missed_by_trainee']} missed by the trainee, "
             f"{d['counts']['missed_by_system']} missed by the system, of "
             f"{d['counts']['expected']} expected alarms)"]
    if d.get("timed_calls"):
        lines.append(f"- {len(d['timed_calls'])} timed calls: {NOT_SCORED_CALL}")
    lines.append("")
    if d["pauses"]:
        lines.append("Paused: " + "; ".join(
            f"at {p['get_text']} for {p['wall_s']:.0f} s" for p in d["pauses"]) + " "
            "(the mission clock stood still; pauses do not count in reaction times).")
        lines.append("")
    if picture:
        lines += [f"![timeline]({picture})", ""]
    lines += ["## Faults and alarms", ""]
    for f in d["faults"]:
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items())
        lines.append(f"### {f['id']}: {f['fault']} on {f['vehicle']}"
                     + (f" ({params})" if params else "")
                     + (" - injected by the instructor" if f["origin"] == "instructor"
                        else ""))
        lines.append("")
        lines.append(f"Injected at {f['get_text']} GET ({f['utc']}).")
        lines.append("")
        if not f["alarms"]:
            answered = [c for c in d.get("timed_calls", []) if c.get("fault") == f["id"]]
            lines += ["No alarms were expected of this fault" + (
                f": {len(answered)} timed call{'s' if len(answered) != 1 else ''} below "
                "answer it." if answered else "."), ""]
            continue
        lines.append("| alarm | raised | after | acknowledged | by | reaction | result |")
        lines.append("|---|---|---|---|---|---|---|")
        for a in f["alarms"]:
            raised = a.get("raised") or "-"
            after = f"{a['raised_after_s']:.1f} s" if a.get("raised_after_s") is not None \
                else "-"
            lines.append(
                f"| {a['vehicle']} {a['parameter']} ({a['severity']}) | {raised} | {after} | "
                f"{a.get('acked') or '-'} | {a.get('acked_by') or '-'} | "
                f"{_seconds(a.get('reaction_s'))} | "
                f"{STATUS_TEXT[a['status']]}"
                + (f": {a['note']}" if a.get("note") else "") + " |")
        lines.append("")
        knock_on = sorted({e["parameter"] for e in d.get("events", [])
                           if e.get("transition") == "raised" and e.get("vehicle") == f["vehicle"]
                           and e.get("parameter") in f.get("collateral", [])
                           and e.get("get", -1e12) >= f["get"] - TOLERANCE_S})
        if knock_on:
            lines += ["Also raised as its consequences (the scenario's collateral, not "
                      "scored): " + ", ".join(knock_on) + ".", ""]
    lines += ["## Raised without a fault", ""]
    if d["raised_without_fault"]:
        lines.append("No injected fault expects these (they cost the trainee nothing; "
                     "fix the scenario, tolerate them, or look at the ground system):")
        lines.append("")
        for u in d["raised_without_fault"]:
            val = u.get("value_text") or (f"{u['value']:.4g}" if u.get("value") is not None
                                          and math.isfinite(u["value"]) else "")
            lines.append(f"- {u['raised']} {u['vehicle']} {u['parameter']} "
                         f"({u['severity']}) {val}")
    else:
        lines.append("None.")
    lines.append("")
    if sc.get("calls"):
        lines += ["## Calls the trainee should have made", ""]
        timed = {r["call"]: r for r in d.get("timed_calls", [])}
        for c in sc["calls"]:
            r = timed.get(c)
            if r is None:
                lines.append(f"- {c}")
                continue
            cues = "; ".join(x["cue"] for x in r["cues"])
            if r.get("cues_together_after_s") is not None:
                cues += (f" (together from {r['cues_together']}, "
                         f"+{r['cues_together_after_s']:.0f} s)")
            due = f"by {r['due']} GET (+{r['within_s']:g} s after {r['fault']})" \
                if r.get("due") else f"within {r['within_s']:g} s of {r['fault']}"
            lines.append(f"- {c} — {due}; cues: {cues}. **{r['status']}**"
                         + (f" ({r['note']})" if r.get("note") else ""))
        lines.append("")
    if sc.get("history"):
        lines += ["## The real event", "", sc["history"].strip(), ""]
    lines += ["## Scoring", "", d["score_rule"] + ".", ""]
    return "\n".join(lines)


def write(d: dict[str, Any], out: Path, picture: str | None = "timeline.png") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "debrief.json").write_text(json.dumps(d, indent=2, allow_nan=False,
                                                 default=_plain) + "\n", encoding="utf-8")
    (out / "debrief.md").write_text(markdown(d, picture), encoding="utf-8")


def _plain(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
