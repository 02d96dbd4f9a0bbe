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

from typing import Any

from groundstation.core import messages, topics
from groundstation.core.definitions import hash_definition
from groundstation.core.replay_session import (
    SessionInfo,
    check_session,
    parse_session_message,
)

__all__ = ["LIMITS", "SESSION_SUBSCRIPTION", "VERSION", "SessionInfo", "check_session",
           "control_topic", "hash_definition", "parse_session_message", "session_message",
           "session_topic", "status_topic"]

SESSION_SUBSCRIPTION = topics.REPLAY_SESSION_SUBSCRIPTION
VERSION = messages.REPLAY_SESSION_VERSION
LIMITS = messages.REPLAY_LIMITS

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
