"""A replay session's definitions, as the ingest reads them from the retained
`replay/session/<session>` message (the protocol: groundstation/replay/session.py).

Pure: a message in, the session's own parsed definitions out (or None when the message
ends the session). Here, not in the replay package, because the ingest needs it and the
ingest does not depend on the replay tool.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from groundstation.core import fleet, messages, topics
from groundstation.core.definitions import (
    DefinitionError,
    VehicleDefinition,
    hash_definition,
    parse_definition,
)

_SESSION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_session(name: str) -> str:
    """A session id usable as a topic level, an InfluxDB tag and an archive directory."""
    if not isinstance(name, str) or not _SESSION_RE.fullmatch(name):
        raise ValueError(f"replay session {name!r}: use letters, digits, '_', '.', '-' "
                         "(not first), at most 64")
    return name


@dataclass
class SessionInfo:
    session: str
    source: str  # the session's source text, topics.replay(session)
    limits: str
    definitions: dict[str, VehicleDefinition]  # the session's own, by vehicle
    shas: dict[str, str] = field(default_factory=dict)
    message: messages.ReplaySession | None = None


# Parsed definitions by SHA-256: a long replay re-announcing its session, or many sessions
# of the same recording, parse each file once, and the same SHA gives the same object.
_PARSED: OrderedDict[str, VehicleDefinition] = OrderedDict()
_PARSED_MAX = 32


def _parse_cached(sha: str, text: str, session: str) -> VehicleDefinition:
    hit = _PARSED.get(sha)
    if hit is not None:
        _PARSED.move_to_end(sha)
        return hit
    defn = parse_definition(text, f"<replay session {session}: definition {sha[:12]}>")
    _PARSED[sha] = defn
    while len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return defn


def _file_sha(defn: VehicleDefinition) -> str:
    try:
        return hash_definition(Path(defn.path).read_bytes()) if defn.path else ""
    except OSError:
        return ""


def parse_session_message(topic: str, payload: bytes,
                          known: dict[str, VehicleDefinition] | None = None
                          ) -> SessionInfo | None:
    """The session a ``replay/session/<session>`` message opens, or None if it closes it.

    known: the definitions the ingest runs with; one whose file has the recorded SHA-256
    is used as it is (the same object, no second parse).

    Untrusted input: ValueError says what is wrong (bad JSON, a SHA-256 that does not match
    the text, a definition that does not validate, a vehicle that does not match it).
    """
    session = check_session(topics.parse_replay_session(topic).session)
    if not payload:
        return None
    try:
        msg = messages.ReplaySession.from_json(payload)
    except messages.MessageError as exc:
        raise ValueError(f"session message: {exc}") from None
    if msg.session != session:
        raise ValueError(f"session message names session {msg.session!r}, its topic "
                         f"{session!r}")
    if msg.state == "closed":
        return None
    out: dict[str, VehicleDefinition] = {}
    shas: dict[str, str] = {}
    for vehicle, d in msg.definitions.items():
        sha, text = d.sha256, d.text
        if hash_definition(text) != sha:
            raise ValueError(f"definitions[{vehicle!r}]: the text does not hash to {sha}")
        current = (known or {}).get(vehicle)
        if current is not None and _file_sha(current) == sha:
            defn = current
        else:
            try:
                defn = _parse_cached(sha, text, session)
            except DefinitionError as exc:
                raise ValueError(f"definitions[{vehicle!r}] do not validate: {exc}") from None
        if defn.vehicle != vehicle:
            if fleet.base_of(vehicle) != defn.vehicle:
                raise ValueError(f"definitions[{vehicle!r}] define vehicle "
                                 f"{defn.vehicle!r}")
            # A fleet member's recording holds its base's file: the member's definition is
            # that file under the member's id, whatever fleet this ingest runs with.
            defn = fleet.member_definition(defn, vehicle)
        out[vehicle] = defn
        shas[vehicle] = sha
    return SessionInfo(session, topics.replay(session), msg.limits, out, shas, msg)
