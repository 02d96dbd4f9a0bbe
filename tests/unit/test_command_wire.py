"""The command path's wire contract (core/topics.py, core/messages.py): the topic strings
the ACL names, each parses back, and the messages refuse what they should."""

from __future__ import annotations

import pytest

from groundstation.core import messages, topics
from groundstation.core.topics import Source


def test_command_topics_are_the_acls_and_parse_back() -> None:
    d = Source.training("d1")
    built = {
        topics.command_requests("eecom", "apollo_csm"): "cmd/request/eecom/apollo_csm",
        topics.command_replies("eecom"): "cmd/replies/eecom",
        topics.command_uplink("soyuz"): "cmd/uplink/live/soyuz",
        topics.command_uplink("soyuz", d): "cmd/uplink/training/d1/soyuz",
        topics.command_acks("apollo_csm", d): "cmd/ack/training/d1/apollo_csm",
        topics.command_events("apollo_csm", "replay/s"): "cmd/events/replay/s/apollo_csm",
        topics.command_history("soyuz"): "cmd/history/live/soyuz",
    }
    for topic, text in built.items():
        assert topic == text
        assert str(topics.parse(topic)) == topic
    assert topics.parse("cmd/request/eecom/apollo_csm") == topics.CommandRequestTopic(
        "eecom", "apollo_csm")
    assert topics.parse("cmd/ack/training/d1/soyuz") == topics.CommandAckTopic(d, "soyuz")
    assert topics.command_events_subscription(d) == "cmd/events/training/d1/+"
    assert topics.COMMAND_REQUEST_SUBSCRIPTION == "cmd/request/+/+"
    for bad in ("cmd/request/eecom", "cmd/request/a/b/c", "cmd/uplink/soyuz",
                "cmd/events/training/soyuz", "cmd/nothing/x"):
        with pytest.raises(ValueError):
            topics.parse(bad)
    with pytest.raises(ValueError, match="one topic level"):
        topics.command_requests("ee/com", "apollo_csm")


def test_command_messages() -> None:
    req = messages.CommandRequest.parse_line("arm power_down", "r1", position="EECOM")
    assert (req.action, req.command, req.args, req.position) == ("arm", "power_down", {},
                                                                "EECOM")
    req = messages.CommandRequest.parse_line("fuel_cell_reset cell=2", "r2",
                                             source="training/d1")
    assert req.args == {"cell": 2} and str(req.source) == "training/d1"
    assert messages.CommandRequest.from_json(req.to_json()) == req
    req = messages.CommandRequest.parse_line("execute ab12-3", "r3")
    assert (req.action, req.command_id) == ("execute", "ab12-3")
    assert messages.CommandRequest.from_json(req.to_json()) == req
    for line, says in (("", "type a command"), ("execute", "execute COMMAND_ID"),
                       ("crew_alert now", "'now' is not key=value")):
        with pytest.raises(messages.MessageError, match=says):
            messages.CommandRequest.parse_line(line, "r")
    for payload, says in (
            ('{"request_id": "a", "action": "send"}', "command: required to send"),
            ('{"request_id": "a", "action": "execute", "command": "x"}', "unknown field"),
            ('{"request_id": "a", "command": "x", "args": {"v": NaN}}', "finite"),
            ('{"request_id": "a", "command": "x", "operator": "flight"}', "operator: unknown"),
    ):
        with pytest.raises(messages.MessageError, match=says) as e:
            messages.CommandRequest.from_json(payload)
        assert e.value.request_id == "a"
    reply = messages.CommandReply(ok=False, request_id=None, error="x", reason="bad_request")
    assert messages.CommandReply.from_json(reply.to_json()) == reply
    with pytest.raises(ValueError):
        messages.CommandReply(ok=False, request_id="a")
    ack = messages.CommandAck(command_id="c", stage="received", time_ns=1, act_ns=2)
    assert messages.CommandAck.from_json(ack.to_json()) == ack
    assert b"reason" not in ack.to_json()
    assert set(messages.FINAL_STAGES) < set(messages.COMMAND_STAGES)
