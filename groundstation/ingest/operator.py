"""Operator requests (acknowledge, shelve, unshelve) as a pure function: a typed request
and the alarm engine in, the event it causes and the one reply naming its request_id out.
No MQTT here: the service routes the request in and publishes what comes out.

The operator is the user level of the request's topic (`ack/<operator>/<vehicle>`), which
the broker's ACL binds to the authenticated user; never a field of the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from groundstation.core import messages
from groundstation.core.alarms import AlarmEngine, AlarmError


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: messages.OperatorReply
    event: messages.AlarmEvent | None = None  # what the request changed, if it did


def parse(payload: bytes) -> messages.OperatorRequest | Outcome:
    """The typed request, or the refusal to send for a malformed one (naming its
    request_id when it carried a readable one)."""
    try:
        return messages.OperatorRequest.from_json(payload)
    except messages.MessageError as exc:
        return Outcome(messages.OperatorReply.refused(
            exc.request_id, f"bad request: {exc}; send {messages.OPERATOR_REQUEST_FORM}",
            reason="bad_request"))


def handle(request: messages.OperatorRequest, operator: str, vehicle: str,
           engine: AlarmEngine | None) -> Outcome:
    """Carry out one request on the alarm engine of (request.source, vehicle); None when
    the ingest has no data of that stream yet."""
    if engine is None:
        return Outcome(messages.OperatorReply.refused(
            request.request_id, f"no {request.source!s} data from {vehicle!r} yet",
            reason="no_data", parameter=request.parameter))
    try:
        if request.action == "acknowledge":
            ev = engine.acknowledge(request.parameter, operator)
        elif request.action == "shelve":
            assert request.duration_s is not None  # the message requires it
            ev = engine.shelve(request.parameter, operator, request.duration_s)
        else:
            ev = engine.unshelve(request.parameter, operator)
    except AlarmError as exc:
        return Outcome(messages.OperatorReply.refused(
            request.request_id, str(exc), reason=exc.reason, parameter=request.parameter))
    msg = messages.AlarmEvent.from_event(ev)
    return Outcome(messages.OperatorReply.done(request.request_id, msg), msg)
