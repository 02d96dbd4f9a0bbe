"""The `commands` measurement: one point per stage of each command.

Tags `vehicle`, `source` (live, or training/<drill>), `command`, `stage` and `command_id`
(so every (command, stage) is one point and a rewrite overwrites itself); fields `seq`,
`operator`, `position`, `kind`, `title`, `args` (JSON), `reason`, `code`, `hazardous`,
`wall_ns` (when it happened, wall clock), `act_ns` (when the ship acts), `verify` (JSON: each
condition and how it came out). The time is the event's data time (the mission time of the
ship's telemetry it belongs to, so it plots with the telemetry) where known, else the wall
clock.

    SELECT * FROM commands WHERE vehicle='apollo_csm' AND source='live' ORDER BY time DESC
"""

from __future__ import annotations

import json

from groundstation.core import messages
from groundstation.storage.influx.lineprotocol import escape_tag, fields_text

MEASUREMENT = "commands"


def command_line(ev: messages.CommandEvent) -> str:
    tags = (f"{MEASUREMENT},command={escape_tag(ev.command)},"
            f"command_id={escape_tag(ev.command_id)},source={escape_tag(str(ev.source))},"
            f"stage={escape_tag(ev.stage)},vehicle={escape_tag(ev.vehicle)}")
    fields = {"seq": ev.seq, "operator": ev.operator, "position": ev.position,
              "kind": ev.kind, "title": ev.title,
              "args": json.dumps(ev.args, sort_keys=True) if ev.args else None,
              "reason": ev.reason, "code": ev.code, "hazardous": ev.hazardous,
              "wall_ns": ev.time_ns, "act_ns": ev.act_ns,
              "verify": json.dumps([v.to_dict(compact=True) for v in ev.verify])
              if ev.verify else None}
    t = ev.data_time_ns if ev.data_time_ns is not None else ev.time_ns
    return f"{tags} {fields_text(fields)} {t}"
