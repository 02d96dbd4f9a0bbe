"""The drill's timeline picture: one panel per key parameter in Houston's display unit with
its yellow and red limits (the limit set of the drill's phase), the injections as vertical
lines, alarm raises and acknowledgements (with the operator) as markers, and a last panel
with every alarm of the drill on one time line. x is GET."""

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
    n = len(panels) + 1
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(11, 2.2 * n + 1.2),
                             gridspec_kw={"height_ratios": [3] * (n - 1)
                                          + [max(1.5, 0.45 * len(alarmed) + 0.8)]})
    axes = np.atleast_1d(axes)
    t0, t1 = debrief["started_get"], debrief["ended_get"]
    for ax, (v, pid) in zip(axes[:-1], panels, strict=True):
        _panel(ax, v, pid, definitions[v], series.get((v, pid), []), events, t0)
    _alarm_panel(axes[-1], alarmed, events)
    for ax in axes:
        for f in debrief["faults"]:
            ax.axvline(f["get"], color=INJECT_COLOUR, lw=1.4, ls="-", alpha=0.8)
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


def _alarm_panel(ax: Any, alarmed: list[tuple[str, str]], events: list[dict[str, Any]]
                 ) -> None:
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
    ax.set_yticks(range(len(alarmed)))
    ax.set_yticklabels([f"{v.split('_')[0]} {p}" for v, p in alarmed], fontsize=7)
    ax.set_ylim(-0.8, max(len(alarmed) - 0.2, 0.8))
    ax.set_title("alarms: ▲ raised (yellow/red), ● acknowledged (operator), × back to "
                 "normal; vertical lines: injections", fontsize=8, loc="left")
