"""The console's command panel: the command history of the ship in view (each command's stage
and who sent it, why it was refused or failed) and the command line that sends one.

The command line takes what `groundstation commanding send` takes: `COMMAND [key=value
...]`, optionally after a ship's id (`soyuz tv_power state=ON`); a hazardous command typed
so is armed (the service's first step), and the console's `x` key executes it, Esc disarms
it. `execute ID` and `disarm ID` are accepted too.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from groundstation.console import pages as cp
from groundstation.core import messages
from groundstation.core.commanddefs import VehicleCommands, canonical_position
from groundstation.core.topics import Source

COMMAND_COLUMNS = {
    "houston": ("GET", "SHIP", "COMMAND", "STAGE", "BY", "WHY"),
    "moscow": ("GET", "КА", "КОМАНДА", "ЭТАП", "КТО", "ПРИЧИНА"),
}
STAGE_TEXT: dict[str, tuple[str, str]] = {
    "refused": ("REFUSED", "ОТКЛОНЕНА"), "armed": ("ARMED", "ВЗВЕДЕНА"),
    "cancelled": ("CANCELLED", "ОТМЕНЕНА"), "queued": ("QUEUED", "В ОЧЕРЕДИ"),
    "sent": ("SENT", "ПЕРЕДАНА"), "received": ("RECEIVED", "ПРИНЯТА"),
    "crew_acknowledged": ("CREW ACK", "ЭКИПАЖ ПРИНЯЛ"), "verified": ("VERIFIED", "ИСПОЛНЕНА"),
    "failed": ("FAILED", "НЕ ИСПОЛНЕНА"),
}
STAGE_STYLE = {"refused": "bold red1", "failed": "bold red1", "cancelled": "grey58",
               "armed": "bold black on orange1", "verified": "bold green3"}
WORDS = {
    "commands": ("COMMANDS", "КОМАНДЫ"),
    "none": ("no commands", "команд нет"),
    "keys": ("c command · x execute armed · v ship", "c команда · x исполнить · v корабль"),
}


def word(key: str, centre: str) -> str:
    en, ru = WORDS[key]
    return ru if centre == "moscow" else en


def stage_text(stage: str, centre: str) -> str:
    en, ru = STAGE_TEXT.get(stage, (stage.upper(), stage))
    return ru if centre == "moscow" else en


def command_label(ev: messages.CommandEvent, centre: str,
                  commands: Mapping[str, VehicleCommands]) -> str:
    d = commands.get(ev.vehicle)
    c = d.get(ev.command) if d is not None else None
    name = (c.label_in("ru" if centre == "moscow" else "en") if c is not None
            else ev.title or ev.command)
    args = " ".join(f"{k}={v}" for k, v in ev.args.items())
    return f"{name} {args}".strip()


def command_rows(events: list[messages.CommandEvent], centre: str,
                 commands: Mapping[str, VehicleCommands]) -> list[tuple[str, list[Text]]]:
    """(command id, cells) of each command, newest first."""
    rows = []
    for ev in events:
        style = STAGE_STYLE.get(ev.stage, "bold #e0ffe0")
        when = cp.get_text(ev.data_time_ns) if ev.data_time_ns else "—"
        by = ev.operator + (f"/{ev.position}" if ev.position else "")
        why = ev.reason or ""
        if ev.stage == "verified" and ev.verify:
            why = "; ".join(f"{v.parameter} {v.value_text or _num(v.value)}"
                            for v in ev.verify)
        cells = [Text(when, style="#8fd79c"),
                 Text(cp.SHIP_SHORT[centre].get(ev.vehicle, ev.vehicle), style="#8fd79c"),
                 Text(command_label(ev, centre, commands), style="bold #e0ffe0"),
                 Text(stage_text(ev.stage, centre), style=style),
                 Text(by, style="#8fd79c"), Text(why, style=style if why else "")]
        rows.append((ev.command_id, cells))
    return rows


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def parse_command_line(text: str, vehicle: str, request_id: str, *, source: str,
                       position: str | None, commands: Mapping[str, VehicleCommands]
                       ) -> tuple[str, messages.CommandRequest]:
    """(ship, request) for a typed line; a hazardous command typed plainly is armed.
    Raises MessageError saying what is wrong with the line."""
    words = text.split()
    if words and words[0] in commands:
        vehicle, words = words[0], words[1:]
    line = " ".join(words)
    request = messages.CommandRequest.parse_line(
        line, request_id, source=Source.parse(source),
        position=canonical_position(position) if position else None)
    vc = commands.get(vehicle)
    c = vc.get(request.command) if vc is not None and request.command else None
    if c is not None and c.hazardous and request.action == "send":
        request = request.model_copy(update={"action": "arm"})
    return vehicle, request


def suggestions(commands: Mapping[str, VehicleCommands], vehicle: str,
                position: str | None) -> list[str]:
    """What the command line offers to complete: the ship's commands this position may
    send (all of them when the console has no position of its own)."""
    vc = commands.get(vehicle)
    if vc is None:
        return []
    pos = canonical_position(position) if position else None
    return [c.usage() for c in vc.for_position(pos)]
