"""The drill's timeline picture: one panel per key parameter in Houston's display unit with
its yellow and red limits (the limit set of the drill's phase), the injections as vertical
lines, alarm raises and acknowledgements (with the operator) as markers, the commands sent
as diamonds on every panel, and a last panel with every alarm of the drill on one time line
and, below them, each expected action (its due time, when it was sent, by whom, and how it
scored) and the harmful and other commands, then each timed call (due, when it was made
with the console's call key and by whom, or missing) and the other calls. x is GET."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a console server or in CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, MultipleLocator

from groundstation.core import flightplan as tl
from groundstation.core import presentation as pr
from groundstation.core.definitions import Parameter, VehicleDefinition
from groundstation.core.mission_time import format_get

SEVERITY_COLOUR = {"yellow": "#e0a800", "red": "#d62728", "nominal": "#7f7f7f"}
ACK_COLOUR = "#2ca02c"
INJECT_COLOUR = "#1f4e9c"
ACTION_COLOUR = {"in_time": "#2ca02c", "late": "#ff7f0e", "wrong": "#7f7f7f",
                 "missing": "#d62728", "harmful": "#d62728", "other": "#9467bd"}


def _entry(d: VehicleDefinition, pid: str) -> pr.Entry | None:
    return next((r.entry for r in pr.parameter_refs(d) if r.pid == pid), None)


def _display(d: VehicleDefinition, e: pr.Entry) -> tuple[str, float, float]:
    """(unit label, scale, offset) from the canonical unit to Houston's display unit, as
    Houston's consoles show it."""
    r = pr.ParameterRef(d, e)
    scale, offset = pr.display_conversion(r, pr.HOUSTON)
    return pr.unit_text(pr.display_unit(r, pr.HOUSTON), "en"), scale, offset


def plot_timeline(path: Path, debrief: dict[str, Any],
                  series: dict[tuple[str, str], list[tuple[float, float]]],
                  definitions: dict[str, VehicleDefinition],
                  key: dict[str, list[str]]) -> Path:
    """Write the PNG. series: (vehicle, parameter) -> [(GET, value in the canonical unit)]."""
    panels = [(v, pid) for v, pids in key.items() for pid in pids
              if v in definitions and _entry(definitions[v], pid) is not None]
    events = debrief["events"]
    alarmed = sorted({(e["vehicle"], e["parameter"]) for e in events
                      if e["transition"] in ("raised", "escalated")})
    commands = _command_marks(debrief)
    rows = len(alarmed) + len(commands)
    n = len(panels) + 1
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(11, 2.2 * n + 1.2),
                             gridspec_kw={"height_ratios": [3] * (n - 1)
                                          + [max(1.5, 0.45 * rows + 0.8)]})
    axes = np.atleast_1d(axes)
    t0, t1 = debrief["started_get"], debrief["ended_get"]
    for ax, (v, pid) in zip(axes[:-1], panels, strict=True):
        _panel(ax, v, pid, definitions[v], series.get((v, pid), []), events, t0)
    _alarm_panel(axes[-1], alarmed, events, commands)
    for ax in axes:
        for f in debrief["faults"]:
            ax.axvline(f["get"], color=INJECT_COLOUR, lw=1.4, ls="-", alpha=0.8)
        for row in commands:
            for marker, when, colour, _ in row[1]:
                if when is not None and marker in ("D", "X", "d"):
                    ax.axvline(when, color=colour, lw=1.0, ls=":", alpha=0.7)
        ax.grid(True, alpha=0.25)
        ax.set_xlim(t0, max(t1, t0 + 1))
    top = axes[0]
    for i, f in enumerate(sorted(debrief["faults"], key=lambda f: f["get"])):
        # Staggered, so injections close together stay readable.
        top.annotate(f["id"], (f["get"], 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, -11 - 10 * (i % 3)), textcoords="offset points",
                     fontsize=8, color=INJECT_COLOUR, va="bottom",
                     bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                           "alpha": 0.8})
    axes[-1].xaxis.set_major_locator(MultipleLocator(_tick_step(t1 - t0)))
    axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_get(x)))
    axes[-1].set_xlabel("GET (hhh:mm:ss)")
    score = debrief.get("score")
    fig.suptitle(f"{debrief['scenario']['title']}\n"
                 f"drill {debrief['drill']} - score "
                 f"{'n/a' if score is None else score}/100", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _tick_step(span_s: float) -> float:
    """Whole minutes (or hours) between GET ticks, about six ticks across."""
    for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600):
        if span_s / step <= 8:
            return float(step)
    return 86400.0


def _when(ev: dict[str, Any]) -> float:
    # An acknowledgement is drawn where the debrief puts it (raise + reaction time).
    return float(ev.get("acked_get", ev["get"])) if ev["transition"] == "acknowledged" \
        else float(ev["get"])


def _panel(ax: Any, v: str, pid: str, d: VehicleDefinition, data: list[tuple[float, float]],
           events: list[dict[str, Any]], t0: float) -> None:
    e = _entry(d, pid)
    assert e is not None
    label, scale, offset = _display(d, e)
    if data:
        t = np.array([x[0] for x in data])
        y = np.array([x[1] for x in data], dtype=float) * scale + offset
        ax.plot(t, y, color="#333333", lw=1.2, drawstyle="steps-post"
                if isinstance(e, Parameter) and e.type == "discrete" else "default")
    else:
        ax.text(0.5, 0.5, "no data received", transform=ax.transAxes, ha="center",
                color="#999999")
    if e.limits is not None:
        ls = e.limits.set_for({"phase": tl.phase_at(v, t0)}, v)
        for level, pair in (("yellow", ls.yellow), ("red", ls.red)):
            for x in pair or ():
                if x is not None:
                    ax.axhline(x * scale + offset, color=SEVERITY_COLOUR[level], lw=1,
                               ls="--")
    mine = [ev for ev in events if ev["vehicle"] == v and ev["parameter"] == pid]
    for ev in mine:
        val = ev.get("value")
        if val is None or not math.isfinite(val):
            continue
        y = val * scale + offset
        if ev["transition"] in ("raised", "escalated"):
            ax.plot(ev["get"], y, marker="^", ms=9, color=SEVERITY_COLOUR[ev["severity"]],
                    mec="black", mew=0.6, zorder=5)
        elif ev["transition"] == "acknowledged":
            ax.plot(_when(ev), y, marker="o", ms=8, color=ACK_COLOUR, mec="black",
                    mew=0.6, zorder=5)
            ax.annotate(ev.get("operator") or "?", (_when(ev), y), xytext=(4, -12),
                        textcoords="offset points", fontsize=8, color=ACK_COLOUR)
    ax.set_ylabel(f"{e.label.get('en', pid)}\n({label})", fontsize=8)
    ax.set_title(f"{v} {pid}", fontsize=8, loc="right")


def _command_marks(debrief: dict[str, Any]
                   ) -> list[tuple[str, list[tuple[str, float | None, str, str]]]]:
    """Rows of the command panel: (label, [(marker, GET, colour, text)]) for each expected
    action (its due time and the command that scored), then the harmful and other commands."""
    out: list[tuple[str, list[tuple[str, float | None, str, str]]]] = []
    for a in debrief.get("actions", []):
        marks: list[tuple[str, float | None, str, str]] = []
        if a.get("due_get") is not None:
            marks.append(("|", a["due_get"], "#555555", "due"))
        colour = ACTION_COLOUR[a["status"]]
        if a.get("sent_get") is not None:
            marks.append(("D", a["sent_get"], colour, f"{a.get('by') or ''} "
                                                     f"{a['status'].replace('_', ' ')}"))
        elif a.get("due_get") is not None:
            marks.append(("x", a["due_get"], colour, "missing"))
        out.append((f"action {a['id']}", marks))
    extra = [("X", h["sent_get"], ACTION_COLOUR["harmful"], f"{h['command']} {h['by']} HARMFUL")
             for h in debrief.get("harmful_actions", [])]
    extra += [("d", r["sent_get"], ACTION_COLOUR["other"], f"{r['command']} {r['by']}")
              for r in debrief.get("other_commands", [])]
    if extra:
        out.append(("other commands", extra))
    # The timed calls (the console's call key): due, made (★, coloured by its score) or
    # missing, then the calls that answered none.
    for i, c in enumerate(debrief.get("timed_calls", []), start=1):
        marks = []
        if c.get("due_get") is not None:
            marks.append(("|", c["due_get"], "#555555", "due"))
        colour = ACTION_COLOUR[c["status"]]
        if c.get("made_get") is not None:
            marks.append(("*", c["made_get"], colour,
                          f"{c.get('by') or ''} {c['status'].replace('_', ' ')}"))
        elif c.get("due_get") is not None:
            marks.append(("x", c["due_get"], colour, "missing"))
        out.append((f"call {i}", marks))
    said = [("P", m["get"], ACTION_COLOUR["other"], f"{m['by']}: {m['text'][:30]}")
            for m in debrief.get("other_calls", [])]
    if said:
        out.append(("other calls", said))
    return out


def _alarm_panel(ax: Any, alarmed: list[tuple[str, str]], events: list[dict[str, Any]],
                 commands: list[tuple[str, list[tuple[str, float | None, str, str]]]] | None
                 = None) -> None:
    commands = commands or []
    for i, (_, marks) in enumerate(commands, start=len(alarmed)):
        for marker, when, colour, text in marks:
            if when is None:
                continue
            ax.plot(when, i, marker=marker, ms=9, color=colour, mec="black", mew=0.6)
            if marker != "|":
                ax.annotate(text, (when, i), xytext=(5, 4), textcoords="offset points",
                            fontsize=7, color=colour)
    rows = {k: i for i, k in enumerate(alarmed)}
    for ev in events:
        k = (ev["vehicle"], ev["parameter"])
        if k not in rows:
            continue
        y = rows[k]
        if ev["transition"] in ("raised", "escalated"):
            ax.plot(ev["get"], y, marker="^", ms=9, color=SEVERITY_COLOUR[ev["severity"]],
                    mec="black", mew=0.6)
        elif ev["transition"] == "acknowledged":
            ax.plot(_when(ev), y, marker="o", ms=8, color=ACK_COLOUR, mec="black", mew=0.6)
            ax.annotate(ev.get("operator") or "?", (_when(ev), y), xytext=(5, 4),
                        textcoords="offset points", fontsize=7, color=ACK_COLOUR)
        elif ev["transition"] == "returned_to_normal":
            ax.plot(ev["get"], y, marker="x", ms=6, color="#7f7f7f")
    labels = [f"{v.split('_')[0]} {p}" for v, p in alarmed] + [c[0] for c in commands]
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(-0.8, max(len(labels) - 0.2, 0.8))
    ax.set_title("alarms: ▲ raised (yellow/red), ● acknowledged (operator), × back to "
                 "normal; actions: | due, ◆ sent (green in time, orange late, grey wrong), "
                 "x missing, ✖ harmful; calls: ★ made, + other; solid lines: injections, "
                 "dotted: commands",
                 fontsize=8, loc="left")
