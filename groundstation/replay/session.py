"""The replay session handshake: which definitions the ingest uses for a replay session.

Topics (groundstation/core/topics.py) and payloads (groundstation/core/messages.py:
ReplaySession, ReplayControl, ReplayStatus); the ACL in deploy/mosquitto/acl says who may
use each:

``replay/session/<session>``  (retained, QoS 1; written by ``replay``, read by ``ingest``)
    Published by the replay tool *before* the session's first frame::

        {"v": 1, "session": "s1", "state": "open", "limits": "recorded",
         "definitions": {"apollo_csm": {"stream": "hbr", "sha256": "<hex>",
                                        "text": "<the YAML file, exactly as recorded>"}},
         "pass": "apollo_csm/hbr/1975-07-17T16:09Z", "from_ns": ..., "to_ns": ...}

    ``limits: "recorded"`` carries, per vehicle, the definition file in force when the
    frames were recorded (the archive keeps it by SHA-256); the ingest builds that
    session's decoder, limits and alarm engine from it. ``limits: "current"`` carries no
    definitions: the ingest uses the ones it runs with. A vehicle missing from
    ``definitions`` also gets the ingest's current ones. Published again (same topic)
    when the recorded definitions change inside the replayed span; the ingest then ends
    that vehicle's stream state and starts it anew with the new definitions.

    An **empty** payload ends the session (the tool clears its retained message when it
    finishes, and the broker does the same through the tool's MQTT will if the tool dies):
    the ingest processes what it holds of the session, then drops the session's decoders,
    alarm engines, archive writers, limit context and retained console messages.

    Ordering: the broker delivers one publisher's QoS 1 messages to a subscriber in the
    order they were published, and the tool waits for the broker's PUBACK of the session
    message before its first frame, so the ingest has the definitions before it decodes
    a frame of the session. If the ingest restarts mid-session, the retained message is
    delivered again on its subscription; frames redelivered before it (at most the
    unacknowledged ones) are decoded with the current definitions.

``replay/control/<session>``  (written by operators and the instructor, read by ``replay``)
    ``{"command": "pause"}``, ``{"command": "resume"}``, ``{"command": "speed", "speed":
    10}`` (1, 10, 100, any positive number, or ``"max"``), ``{"command": "seek", "to":
    "1975-07-17T16:12:00Z"}`` (UTC, ``GET 044:22:00`` or ns; ``"by_s": -30`` for a relative
    seek), ``{"command": "stop"}``. Plain text works too: ``pause``, ``speed 100``,
    ``seek GET 044:22:00``.

``replay/status/<session>``  (retained; written by ``replay``, read by everyone)
    The tool's state: running/paused/finished/stopped, speed, position (UTC and GET),
    frames sent and total, and the answer to the last control command.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundstation.core import messages, topics
from groundstation.core.definitions import DefinitionError, VehicleDefinition, parse_definition
from groundstation.storage.archive import hash_definition

SESSION_SUBSCRIPTION = topics.REPLAY_SESSION_SUBSCRIPTION
VERSION = messages.REPLAY_SESSION_VERSION
LIMITS = messages.REPLAY_LIMITS

_SESSION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_session(name: str) -> str:
    """A session id usable as a topic level, an InfluxDB tag and an archive directory."""
    if not isinstance(name, str) or not _SESSION_RE.fullmatch(name):
        raise ValueError(f"replay session {name!r}: use letters, digits, '_', '.', '-' "
                         "(not first), at most 64")
    return name


def session_topic(session: str) -> str:
    return topics.replay_session(session)


def control_topic(session: str) -> str:
    return topics.replay_control(session)


def status_topic(session: str) -> str:
    return topics.replay_status(session)


def session_message(session: str, limits: messages.ReplayLimits,
                    definitions: dict[str, tuple[str, str, str]],
                    **info: Any) -> bytes:
    """The retained session message. definitions: vehicle -> (stream, sha256, text);
    info: pass, from_ns, to_ns, started_ns."""
    if limits not in LIMITS:
        raise ValueError(f"limits must be one of {LIMITS}")
    return messages.ReplaySession(
        session=session, limits=limits,
        definitions={v: messages.ReplayDefinition(stream=s, sha256=sha, text=text)
                     for v, (s, sha, text) in definitions.items()},
        **info).to_json()


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
            raise ValueError(f"definitions[{vehicle!r}] define vehicle {defn.vehicle!r}")
        out[vehicle] = defn
        shas[vehicle] = sha
    return SessionInfo(session, topics.replay(session), msg.limits, out, shas, msg)
