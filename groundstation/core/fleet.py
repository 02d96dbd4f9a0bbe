"""A fleet: more vehicles flying under the telemetry definitions of the ones defined.

The station's vehicles are its definitions' (telemetry_defs/, keyed by
`VehicleDefinition.vehicle`). A fleet setting (`[ingest] fleet`, `GS_INGEST_FLEET`,
`--fleet apollo_csm=4,soyuz=4`) adds members to some of them: `apollo_csm=4` is four more
Apollo CSMs, `apollo_csm-1` .. `apollo_csm-4`, each with the base's definitions (every
stream: Apollo's HBR and LBR) under its own vehicle id. A member is a vehicle like any
other from there on: its own topics (`telemetry/live/apollo_csm-3/hbr`), its own `vehicle`
tag in InfluxDB, its own archive directory, its own alarm state and limit context, its own
broker account (the user name is the vehicle id, as for the base).

A member's name is `<base>-<n>`: one topic level, an InfluxDB tag value that needs no
escaping, an archive directory and a broker user name (at most 64 characters, letters,
digits, '_' and '-'), and never the id of a defined vehicle (those have no '-').

Limit contexts: a member's references to its own parameters (`parameter: dm_attached`) are
its own, since the ingest keys them by the definition's vehicle. A reference to another
vehicle's parameter (`parameter: apollo_csm.dm_hatch_soyuz` in Soyuz's file) keeps pointing
at that base vehicle: a member's definition is a function of its base's and its name alone,
so it does not change with the rest of the fleet, and an archived member's definition (the
base's file text) means the same when it is replayed. The load generator flies every member
on the base ships' mission, so the base partner's values are the member's partner's anyway.

Pure: no I/O; `expand` takes loaded definitions and returns the dict with the members.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from groundstation.core import topics

if TYPE_CHECKING:
    from groundstation.core.definitions import VehicleDefinition

__all__ = ["MAX_MEMBERS", "FleetError", "base_of", "check", "expand", "member_definition",
           "member_id", "members", "parse", "text"]

# A base vehicle id: what a member's name is built on (no '-', so "<base>-<n>" splits one
# way only).
_BASE_RE = re.compile(r"[a-z][a-z0-9_]*")
_MEMBER_RE = re.compile(r"([a-z][a-z0-9_]*)-([1-9][0-9]*)")
# Broker user names (Mosquitto's password file, RabbitMQ's) are at most 64 characters.
_MAX_ID = 64
MAX_MEMBERS = 999  # of one base: a bound on typing mistakes, far beyond what 2 cores fly


class FleetError(ValueError):
    """A fleet setting that cannot be: the message names the bad entry."""


def parse(spec: str) -> dict[str, int]:
    """"apollo_csm=4,soyuz=4" (the environment's and the command line's spelling) as
    {"apollo_csm": 4, "soyuz": 4}; "" is no fleet. FleetError names the bad entry."""
    out: dict[str, int] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        base, sep, count = (x.strip() for x in entry.partition("="))
        if not sep or not base or not count:
            raise FleetError(f"fleet entry {entry!r}: write BASE=COUNT, e.g. apollo_csm=4")
        if not count.isdigit():
            raise FleetError(f"fleet entry {entry!r}: the count {count!r} is not a whole "
                             "number")
        if base in out:
            raise FleetError(f"fleet entry {entry!r}: {base!r} is given twice")
        out[base] = int(count)
    return check(out)


def check(fleet: Mapping[str, int]) -> dict[str, int]:
    """The fleet as {base: count} if every entry can be (a base id a member's name can be
    built on, a count of 0..MAX_MEMBERS whose members' names fit); else FleetError naming
    the entry."""
    out: dict[str, int] = {}
    for base, count in fleet.items():
        entry = f"fleet entry {base}={count}"
        if not isinstance(base, str) or not _BASE_RE.fullmatch(base):
            raise FleetError(f"{entry}: {base!r} is not a vehicle id (lower-case letters, "
                             "digits and '_', starting with a letter)")
        if isinstance(count, bool) or not isinstance(count, int):
            raise FleetError(f"{entry}: the count must be a whole number")
        if not 0 <= count <= MAX_MEMBERS:
            raise FleetError(f"{entry}: the count must be 0 to {MAX_MEMBERS}")
        if count and len(member_id(base, count)) > _MAX_ID:
            raise FleetError(f"{entry}: the member {member_id(base, count)!r} is longer than "
                             f"{_MAX_ID} characters (a broker user name)")
        out[base] = count
    return out


def text(fleet: Mapping[str, int]) -> str:
    """The fleet in the spelling `parse` reads: "apollo_csm=4,soyuz=4"."""
    return ",".join(f"{base}={count}" for base, count in fleet.items())


def member_id(base: str, n: int) -> str:
    """The n-th member of a base vehicle (n from 1): "apollo_csm-3"."""
    return topics.check_level("fleet member", f"{base}-{n}")


def base_of(vehicle: str) -> str | None:
    """The base vehicle a member's name is built on ("apollo_csm-3" -> "apollo_csm"); None
    for a name that is no member's."""
    m = _MEMBER_RE.fullmatch(vehicle)
    return m.group(1) if m else None


def members(fleet: Mapping[str, int]) -> dict[str, str]:
    """Every member of the fleet and its base, in order: {"apollo_csm-1": "apollo_csm", ...}."""
    return {member_id(base, n): base for base, count in check(fleet).items()
            for n in range(1, count + 1)}


def member_definition(base: VehicleDefinition, member: str) -> VehicleDefinition:
    """The base's definition (every stream of it) under a member's vehicle id. The
    parameters are the base's own objects: a member costs a few small objects, not a copy
    of the file."""
    if base_of(member) != base.vehicle:
        raise FleetError(f"{member!r} is not a member's name of {base.vehicle!r} "
                         f"({base.vehicle}-<n>, n from 1)")
    n = member.rpartition("-")[2]
    name = {lang: f"{label} #{n}" for lang, label in base.name.items()}

    def renamed(d: VehicleDefinition) -> VehicleDefinition:
        copy = d.model_copy(update={"vehicle": member, "name": name})
        copy._others = {}  # model_copy shares the base's dict of other streams
        return copy

    main = renamed(base)
    for stream, other in base.streams.items():
        if stream != base.stream:
            main._others[stream] = renamed(other)
    return main


def expand(definitions: Mapping[str, VehicleDefinition], fleet: Mapping[str, int]
           ) -> dict[str, VehicleDefinition]:
    """The definitions with the fleet's members added (a new dict; the base definitions
    are the same objects). FleetError names an entry whose base is not defined, or a
    member whose name a definition already has."""
    out = dict(definitions)
    for member, base in members(fleet).items():
        defn = definitions.get(base)
        if defn is None:
            known = ", ".join(sorted(definitions)) or "none"
            raise FleetError(f"fleet entry {base}={fleet[base]}: no telemetry definition of "
                             f"a vehicle {base!r} (defined: {known})")
        if member in definitions:
            raise FleetError(f"fleet entry {base}={fleet[base]}: its member {member!r} is "
                             f"already a defined vehicle ({definitions[member].path})")
        out[member] = member_definition(defn, member)
    return out
