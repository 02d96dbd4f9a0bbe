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
  scored like actions, each worth its weight: the first call made with the console's call
  key after the fault's injection whose words match the call's `keywords` (the drill clock
  when the runner heard it), made within `within_s` full credit, later half, never
  "missing" (none). Calls that answer no timed call cost nothing and are listed. The
  offline flight adds when the call's cues showed.
* Expected actions (a command or procedure, by a time after its fault, from a position) are
  scored like acknowledgements, each worth its weight: sent in time (the first matching
  command the commanding service queued, by the mission clock) full credit, later half,
  the right command with other arguments or from another position "wrong" (none), never
  "missing" (none). A command the scenario lists as harmful costs its weight. Other
  commands cost nothing and are listed; refused ones never reached the ship and are listed
  apart. An expected alarm that a taken action prevents (its `prevented_by`) and that did
  not come is "prevented": not scored.
* score = 100 x max(0, credit - harm) / (weight of the scored alarms, actions and calls).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundstation.core import topics
from groundstation.core.mission_time import format_get, format_utc
from groundstation.drills.scenario import SEVERITY_RANK, Call, Scenario, same_args

RAISES = ("raised", "escalated")
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
                               "ack_within_s": sc.ack_within(e), "weight": e.weight,
                               "prevented_by": list(e.prevented_by)}
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
                  calls_together: dict[int, float] | None = None,
                  command_events: list[dict[str, Any]] | None = None,
                  calls_made: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Match the alarm events of a run against what each injected fault expected, the
    commands sent against the actions the scenario expects, and the calls made (the
    console's call key, as call_record keeps them) against its timed calls."""
    order = {id(e): i for i, e in enumerate(events)}
    used: set[int] = set()
    faults_out: list[dict[str, Any]] = []
    total_w = credit = 0.0
    counts = {"expected": 0, "acknowledged": 0, "late": 0, "missed_by_trainee": 0,
              "missed_by_system": 0, "prevented": 0}
    acts = score_actions(sc, injections, command_events or [])
    taken = {r["id"] for r in acts["actions"] if r["status"] in ("in_time", "late")}
    for inj in injections:
        rows = []
        for exp in inj.expect:
            row = _match(inj, exp, events, order, used)
            rows.append(row)
            counts["expected"] += 1
            st = row["status"]
            if st == "missed_by_system" and row.get("raised_get") is None \
                    and taken & set(exp.get("prevented_by") or ()):
                # The trainee's action stopped it from coming: a success, not scored.
                row.update(status="prevented", note="prevented by "
                           + ", ".join(sorted(taken & set(exp["prevented_by"]))))
                counts["prevented"] += 1
                continue
            if st == "missed_by_system":
                counts["missed_by_system"] += 1
                continue
            total_w += exp.get("weight", 1.0)
            credit += exp.get("weight", 1.0) * row["credit"]
            counts[{"acknowledged": "acknowledged", "late": "late",
                    "not_acknowledged": "missed_by_trainee"}[st]] += 1
        faults_out.append({**inj.to_dict(), "alarms": rows})
    unexplained = _unexplained(sc, injections, events)
    calls, other_calls = score_calls(sc, injections, calls_made or [], cues,
                                     calls_together)
    for r in calls:
        total_w += r["weight"]
        credit += r["weight"] * r["credit"]
        counts[f"calls_{r['status']}"] = counts.get(f"calls_{r['status']}", 0) + 1
    counts["calls_expected"] = len(calls)
    for r in acts["actions"]:
        total_w += r["weight"]
        credit += r["weight"] * r["credit"]
        counts[f"actions_{r['status']}"] = counts.get(f"actions_{r['status']}", 0) + 1
    harm = sum(h["weight"] for h in acts["harmful"])
    counts["actions_expected"] = len(acts["actions"])
    counts["harmful"] = len(acts["harmful"])
    score = None if total_w == 0 else round(100.0 * max(0.0, credit - harm) / total_w)
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
        "timed_calls": calls, "other_calls": other_calls, "calls_made": calls_made or [],
        "callers": sorted({c["operator"] for c in calls_made or [] if c.get("operator")}),
        "speed": speed, "started_get": started_get, "started": format_get(started_get),
        "started_utc": format_utc(started_get), "ended_get": ended_get,
        "ended": format_get(ended_get), "ended_utc": format_utc(ended_get),
        "stopped_early": stopped_early, "wall_s": wall_s,
        "pauses": pauses or [], "commands": commands or [],
        "faults": faults_out, "raised_without_fault": unexplained,
        "actions": acts["actions"], "harmful_actions": acts["harmful"],
        "other_commands": acts["other"], "refused_commands": acts["refused"],
        "operators": operators, "commanders": acts["commanders"], "counts": counts,
        "score": score, "score_rule": "full credit for an ack within ack_within_s, half for "
                                      "a later ack, none without; an expected action sent "
                                      "in time full credit, late half, wrong or missing "
                                      "none; a timed call made in time full credit, late "
                                      "half, missing none; "
                                      "a harmful command costs its weight; alarms the "
                                      "system did not raise in time are not scored, nor "
                                      "those an action prevented; alarms without a fault "
                                      "cost nothing (simulators/scenarios/README.md)",
        "events": [{k: v for k, v in e.items() if k != "seq"} for e in events],
        "command_events": command_events or [],
    }


# --- actions ---------------------------------------------------------------------------------

ACTION_CREDIT = {"in_time": 1.0, "late": LATE_CREDIT, "wrong": 0.0, "missing": 0.0}


def command_record(ev: Any, clock: float | None) -> dict[str, Any]:
    """A command stage event (messages.CommandEvent) as the debrief keeps it: the event
    plus its data time's GET and the mission clock when the drill runner received it."""
    from groundstation.core.mission_time import utc_ns_to_get

    return {"command_id": ev.command_id, "vehicle": ev.vehicle, "command": ev.command,
            "title": ev.title, "args": dict(ev.args), "operator": ev.operator,
            "position": ev.position, "stage": ev.stage, "reason": ev.reason,
            "hazardous": ev.hazardous,
            "get": None if ev.data_time_ns is None else utc_ns_to_get(ev.data_time_ns),
            "act_get": None if ev.act_ns is None else utc_ns_to_get(ev.act_ns),
            "clock": clock}


def commands_sent(command_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per command, in the order they were first heard of: what, by whom, when it
    was queued (the mission clock; its data time when the clock is unknown), its stages."""
    out: dict[str, dict[str, Any]] = {}
    for e in command_events:
        r = out.setdefault(e["command_id"], {
            "command_id": e["command_id"], "vehicle": e["vehicle"], "command": e["command"],
            "title": e.get("title") or e["command"], "args": e.get("args") or {},
            "operator": e.get("operator"), "position": e.get("position"), "stages": [],
            "sent_get": None, "final": None, "reason": None, "act_get": None})
        r["stages"].append(e["stage"])
        when = e.get("clock") if e.get("clock") is not None else e.get("get")
        if e["stage"] in ("queued", "refused") and r["sent_get"] is None:
            r["sent_get"] = when
        if e.get("act_get") is not None:
            r["act_get"] = e["act_get"]
        if e["stage"] in ("refused", "cancelled", "verified", "failed"):
            r["final"], r["reason"] = e["stage"], e.get("reason")
    for r in out.values():
        r["sent"] = None if r["sent_get"] is None else format_get(r["sent_get"])
        r["by"] = (r["operator"] or "?") + (f"/{r['position']}" if r["position"] else "")
    return list(out.values())


def score_actions(sc: Scenario, injections: list[Injection],
                  command_events: list[dict[str, Any]]) -> dict[str, Any]:
    """The expected actions against the commands sent: each in time, late, wrong or
    missing; the harmful commands taken; the other commands; the refused ones."""
    records = commands_sent(command_events)
    queued = [r for r in records if "queued" in r["stages"] and r["sent_get"] is not None]
    refused = [r for r in records if "queued" not in r["stages"]]
    got = {i.id: i.get for i in injections}
    used: set[str] = set()
    rows = []
    for a in sc.actions:
        f = sc.action_fault(a)
        v = sc.action_vehicle(a)
        inj = got.get(f.id) if f is not None else None
        row: dict[str, Any] = {"id": a.id, "command": a.command, "args": dict(a.args),
                               "action": a.describe(), "vehicle": v, "position": a.position,
                               "fault": f.id if f is not None else None,
                               "within_s": a.within_s, "weight": a.weight,
                               "due_get": None if inj is None else inj + a.within_s}
        row["due"] = None if row["due_get"] is None else format_get(row["due_get"])
        same = [r for r in queued if r["vehicle"] == v and r["command"] == a.command
                and r["command_id"] not in used
                and (inj is None or r["sent_get"] >= inj - TOLERANCE_S)]
        exact = [r for r in same if same_args(a.args, r["args"])
                 and (a.position is None or r["position"] == a.position)]
        if exact and inj is not None:
            r = exact[0]
            used.add(r["command_id"])
            after = r["sent_get"] - inj
            status = "in_time" if after <= a.within_s else "late"
            row.update(status=status, command_id=r["command_id"], sent_get=r["sent_get"],
                       sent=r["sent"], after_s=round(after, 1), by=r["by"],
                       outcome=r["final"], outcome_reason=r["reason"])
        elif same:
            r = same[0]
            used.add(r["command_id"])
            why = []
            if not same_args(a.args, r["args"]):
                why.append("arguments " + (" ".join(f"{k}={x}" for k, x in r["args"].items())
                                           or "none") + f", not {a.describe()}")
            if a.position is not None and r["position"] != a.position:
                why.append(f"sent from {r['position']}, not {a.position}")
            row.update(status="wrong", command_id=r["command_id"], sent_get=r["sent_get"],
                       sent=r["sent"], by=r["by"], outcome=r["final"],
                       note="; ".join(why))
        else:
            row.update(status="missing")
        row["credit"] = ACTION_CREDIT[row["status"]]
        rows.append(row)
    harmful = []
    other = []
    for r in queued:
        hit = next((h for h in sc.harmful if sc.harmful_vehicle(h) == r["vehicle"]
                    and h.command == r["command"] and same_args(h.args, r["args"])), None)
        if hit is not None:
            harmful.append({**r, "weight": hit.weight, "why": hit.reason.strip()})
        elif r["command_id"] not in used:
            other.append(r)
    commanders = sorted({r["operator"] for r in queued if r.get("operator")})
    return {"actions": rows, "harmful": harmful, "other": other, "refused": refused,
            "commanders": commanders}


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
                               "keywords": list(c.keywords), "weight": c.weight,
                               "cues": cue_rows, "status": "missing", "credit": 0.0}
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


def call_record(operator: str, call: Any, clock: float | None) -> dict[str, Any]:
    """A call made with the console's call key (messages.DrillCall, the operator from its
    topic) as the debrief keeps it: with the mission clock when the drill runner heard it."""
    return {"operator": operator, "text": call.text, "position": call.position,
            "request_id": call.request_id, "clock": clock,
            "get_text": None if clock is None else format_get(clock)}


def score_calls(sc: Scenario, injections: list[Injection], calls_made: list[dict[str, Any]],
                cues: dict[tuple[int, int], float] | None = None,
                together: dict[int, float] | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each timed call against the calls made, in the scenario's order: the first call
    heard after its fault's injection (by the mission clock) that says its keywords and
    answers no earlier timed call; made within `within_s` in time, later late, none
    missing. Returns the rows and the calls that answered none."""
    rows = call_rows(sc, injections, cues, together)
    timed = sc.timed_calls
    made = sorted((c for c in calls_made if c.get("clock") is not None),
                  key=lambda c: c["clock"])
    used: set[int] = set()
    for c, row in zip(timed, rows, strict=True):
        f = sc.call_fault(c)
        inj = next((i.get for i in injections if f is not None and i.id == f.id), None)
        if inj is None:
            continue  # its fault was never injected (a drill stopped early): missing
        hit = next((k for k, m in enumerate(made) if k not in used
                    and m["clock"] >= inj - TOLERANCE_S and c.matches(m["text"])), None)
        if hit is None:
            continue
        used.add(hit)
        m = made[hit]
        after = m["clock"] - inj
        status = "in_time" if after <= c.within_s else "late"
        row.update(status=status, credit=ACTION_CREDIT[status], made_get=m["clock"],
                   made=format_get(m["clock"]), after_s=round(after, 1),
                   by=m["operator"] + (f"/{m['position']}" if m.get("position") else ""),
                   said=m["text"])
    other = [{**m, "get": m["clock"],
              "by": m["operator"] + (f"/{m['position']}" if m.get("position") else "")}
             for k, m in enumerate(made) if k not in used]
    return rows, other


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
               "missed_by_system": "**missed by the system**",
               "prevented": "prevented by the trainee's action (not raised)"}
ACTION_TEXT = {"in_time": "sent in time", "late": "sent late", "wrong": "**wrong**",
               "missing": "**missing** (never sent)"}
CALL_TEXT = {"in_time": "called in time", "late": "called late",
             "missing": "missing (never called)"}


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
    if d.get("actions") or d.get("harmful_actions"):
        c = d["counts"]
        lines.append(f"- actions: {c.get('actions_in_time', 0)} in time, "
                     f"{c.get('actions_late', 0)} late, {c.get('actions_wrong', 0)} wrong, "
                     f"{c.get('actions_missing', 0)} missing of {c.get('actions_expected', 0)}"
                     f" expected; {c.get('harmful', 0)} harmful"
                     + (f"; sent by {', '.join(d['commanders'])}" if d.get("commanders")
                        else ""))
    if d.get("timed_calls"):
        c = d["counts"]
        lines.append(f"- calls: {c.get('calls_in_time', 0)} in time, "
                     f"{c.get('calls_late', 0)} late, {c.get('calls_missing', 0)} missing of "
                     f"{len(d['timed_calls'])} timed calls"
                     + (f"; made by {', '.join(d['callers'])}" if d.get("callers") else ""))
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
    if d.get("actions") or d.get("harmful_actions") or d.get("other_commands") \
            or d.get("refused_commands"):
        lines += _action_lines(d)
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
            result = CALL_TEXT[r["status"]]
            if r.get("made"):
                result += f": {r['by']} at {r['made']} (+{r['after_s']:.0f} s), " \
                          f"\"{r['said']}\""
            lines.append(f"- {c} — {due}; cues: {cues}. **{result}**"
                         + (f" ({r['note']})" if r.get("note") else ""))
        lines.append("")
    if d.get("other_calls"):
        lines += ["Other calls made (they answer no timed call; no credit, no cost): "
                  + "; ".join(f"{m['get_text']} {m['by']}: \"{m['text']}\""
                              for m in d["other_calls"]) + ".", ""]
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


def _action_lines(d: dict[str, Any]) -> list[str]:
    lines = ["## Actions", ""]
    if d.get("actions"):
        lines.append("| action | due | sent | by | result | the ship |")
        lines.append("|---|---|---|---|---|---|")
        for a in d["actions"]:
            outcome = a.get("outcome") or ("-" if a["status"] == "missing" else "pending")
            if a.get("outcome_reason") and outcome == "failed":
                outcome += f": {a['outcome_reason']}"
            lines.append(f"| {a['action']} ({a['vehicle']}"
                         + (f", {a['position']}" if a.get("position") else "") + ") | "
                         f"{a.get('due') or '-'} | {a.get('sent') or '-'} | "
                         f"{a.get('by') or '-'} | {ACTION_TEXT[a['status']]}"
                         + (f": {a['note']}" if a.get("note") else "") + f" | {outcome} |")
        lines.append("")
    if d.get("harmful_actions"):
        lines.append("Harmful (each costs its weight):")
        lines.append("")
        for h in d["harmful_actions"]:
            args = " ".join(f"{k}={v}" for k, v in h["args"].items())
            lines.append(f"- {h['sent']} {h['command']} {args} by {h['by']}: {h['why']}")
        lines.append("")
    if d.get("other_commands"):
        lines.append("Other commands sent (not called for; no credit, no cost): "
                     + "; ".join(f"{r['sent']} {r['command']} by {r['by']} "
                                 f"({r['final'] or 'pending'})"
                                 for r in d["other_commands"]) + ".")
        lines.append("")
    if d.get("refused_commands"):
        lines.append("Never sent (refused by the commanding service, or armed and not "
                     "executed): "
                     + "; ".join(f"{r['command']} by {r['by']}: {r['reason']}"
                                 for r in d["refused_commands"]) + ".")
        lines.append("")
    return lines
