"""The ships' side of the command path: an uplinked command in, the ship's answer out, the
effect into the physics at its time.

    cmd/uplink/<source>/<vehicle>   messages.CommandUplink, from the commanding service
    cmd/ack/<source>/<vehicle>      messages.CommandAck, the ship's answer

(topics.command_uplink and topics.command_acks name the topics.)

A ship hears a command only in contact (Apollo's up-link lock, Soyuz's command radio link in
a Soviet pass; the crew's voice link alike): out of contact it does not answer at all, and
the commanding service fails the command for want of an answer. Heard, a real-time command
acts at the next physics step (`received`); a procedure is read back at once
(`crew_acknowledged`) and carried out `crew_delay_s` later, both from the command
definitions (telemetry_defs/commands/). What each command does is the models' `command`
(simulators/apollo.py, simulators/soyuz.py). A command the ship cannot do (not its own, not
in the definitions, bad arguments: a forged or mistaken uplink) is answered `rejected` and
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from groundstation.core import messages
from groundstation.core.commanddefs import (
    CommandArgError,
    VehicleCommands,
    load_all_commands,
)
from groundstation.core.mission_time import format_get, get_to_utc_ns
from simulators.mission import Mission

log = logging.getLogger(__name__)

MAX_UPLINK = 16 * 1024


class ShipCommands:
    """What a mission's ships do with the commands sent to them."""

    def __init__(self, mission: Mission,
                 commands: Mapping[str, VehicleCommands] | None = None):
        self.mission = mission
        self.commands = dict(commands) if commands is not None else \
            load_all_commands(mission.definitions)
        self.received: list[tuple[str, messages.CommandUplink, messages.CommandAck]] = []

    def hears(self, vehicle: str, get: float) -> bool:
        """Whether the ship hears the ground at `get` (the up-link, or the voice link)."""
        return bool(self.mission.env(vehicle, get).aos) and not self.mission.ended(vehicle, get)

    def receive(self, vehicle: str, payload: bytes, now: float
                ) -> messages.CommandAck | None:
        """An uplinked command at ship time `now` (GET of the newest frame): the answer, or
        None when the ship did not hear it."""
        if len(payload) > MAX_UPLINK:
            log.warning("%s: an uplink of %d bytes ignored", vehicle, len(payload))
            return None
        try:
            up = messages.CommandUplink.from_json(payload)
        except messages.MessageError as exc:
            log.warning("%s: a malformed uplink ignored: %s", vehicle, exc)
            return None
        if not self.hears(vehicle, now):
            log.info("%s: %s %s not heard (out of contact at %s)", vehicle, up.command,
                     up.command_id, format_get(now))
            return None
        return self.apply(vehicle, up, now)

    def apply(self, vehicle: str, up: messages.CommandUplink, now: float
              ) -> messages.CommandAck:
        """Carry out a command the ship heard at `now`."""
        t_ns = get_to_utc_ns(now)
        vc = self.commands.get(vehicle)
        c = vc.get(up.command) if vc is not None else None
        reason = None
        args = {}
        if c is None:
            reason = f"{vehicle} has no command {up.command!r}"
        elif c.kind != up.kind:
            reason = f"{up.command} is a {c.kind} command, not {up.kind}"
        else:
            try:
                args = c.check_args(up.args)
            except CommandArgError as exc:
                reason = str(exc)
        if c is None or reason is not None:
            ack = messages.CommandAck(command_id=up.command_id, stage="rejected", time_ns=t_ns,
                                      get=format_get(now), reason=reason)
            log.warning("%s: rejected %s: %s", vehicle, up.command_id, reason)
        else:
            act = self.mission.command(vehicle, c.id, dict(args), now + c.delay_s)
            ack = messages.CommandAck(
                command_id=up.command_id,
                stage="crew_acknowledged" if c.kind == "procedure" else "received",
                time_ns=t_ns, act_ns=get_to_utc_ns(act), get=format_get(now))
            log.info("%s: %s %s %s (acts at %s)", vehicle, ack.stage, c.id,
                     " ".join(f"{k}={v}" for k, v in args.items()), format_get(act))
        self.received.append((vehicle, up, ack))
        return ack
