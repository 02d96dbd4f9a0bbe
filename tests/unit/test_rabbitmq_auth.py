"""The RabbitMQ rights are the Mosquitto ACL's: for every account and every topic the ACL
names, the generated regex answers as Mosquitto's rules do (the cluster test proves the
regexes in the real broker)."""

from __future__ import annotations

import json
import re

import pytest

from groundstation.deploy import rabbitmq_auth
from groundstation.deploy.rabbitmq_auth import (
    NOTHING,
    Acl,
    definitions,
    filter_regex,
    load_acl,
    mqtt_matches,
    parse_acl,
    topic_regex,
    vhost_permissions,
)
from tests.harness import ACL_USERS

ACL = load_acl()
USERS = [*ACL_USERS, "commanding", "gnc"]


def amqp(topic: str) -> str:
    return topic.translate(str.maketrans("./", "/."))


def topics_named_by_the_acl() -> list[str]:
    """Every filter of the ACL as topics: %u as each account, '+' as a level, '#' as
    nothing and as two levels; and a few the ACL does not name."""
    filters = [r.filter for r in ACL.patterns]
    filters += [r.filter for rules in ACL.users.values() for r in rules]
    out = {"", "x", "telemetry", "params", "a.b/c", "telemetry/live/apollo_csm.hbr"}
    for f in filters:
        for user in USERS:
            t = f.replace("%u", user).replace("+", "lvl")
            out.add(t.replace("/#", "").replace("#", "x"))
            out.add(t.replace("#", "a/b"))
    return sorted(out)


TOPICS = topics_named_by_the_acl()


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("access", ["read", "write"])
def test_regex_answers_as_mosquitto_for_every_topic(user: str, access: str) -> None:
    regex = re.compile(topic_regex(ACL, user, access))  # type: ignore[arg-type]
    wrong = [t for t in TOPICS
             if bool(regex.match(amqp(t))) != ACL.allows(user, access, t)]  # type: ignore[arg-type]
    assert not wrong, f"{user} {access}: {wrong[:5]} (regex {regex.pattern})"
    assert len(TOPICS) > 100


def test_the_key_rights() -> None:
    def may(user: str, access: str, topic: str) -> bool:
        return bool(re.match(topic_regex(ACL, user, access), amqp(topic)))  # type: ignore[arg-type]

    assert may("soyuz", "write", "telemetry/live/soyuz/tm")
    assert not may("soyuz", "write", "telemetry/live/apollo_csm/hbr")
    assert may("flight", "write", "ack/flight/apollo_csm")
    assert not may("flight", "write", "ack/eecom/apollo_csm")
    assert not may("apollo_csm", "write", "ack/apollo_csm/apollo_csm")
    assert may("instructor", "write", "sim/control/apollo_csm")
    assert not any(may(u, "write", "sim/control/apollo_csm") for u in USERS
                   if u != "instructor")
    # Subscriptions are checked as filters: within a right, or refused.
    assert may("ingest", "read", "telemetry/#")
    assert may("flight", "read", "params/#")
    assert not may("flight", "read", "#")
    assert not may("apollo_csm", "read", "sim/control/#")
    assert may("apollo_csm", "read", "sim/control/apollo_csm")


def test_filters_and_matching() -> None:
    assert filter_regex("a/+/b/#") == r"a\.[^.]*\.b(?:\..*)?"
    assert filter_regex("#") == ".*"
    assert filter_regex("a.b/c") == r"a/b\.c"  # the MQTT plugin swaps '.' and '/'
    assert mqtt_matches("a/#", "a") and mqtt_matches("a/+", "a/b")
    assert not mqtt_matches("a/+", "a/b/c") and not mqtt_matches("a/b", "a")


def test_no_right_is_a_regex_that_matches_nothing() -> None:
    acl = parse_acl("pattern read x/#\nuser v\ntopic deny x/#\n")
    assert topic_regex(acl, "v", "write") == NOTHING
    assert not re.match(NOTHING, "") and not re.match(NOTHING, "x")
    assert not re.match(topic_regex(acl, "v", "read"), "x.y")
    assert re.match(topic_regex(acl, "op", "read"), "x.y")


def test_vhost_permissions_reach_the_accounts_own_queues_and_no_others() -> None:
    def may(user: str, kind: str, name: str, acl: Acl = ACL) -> bool:
        return bool(re.match(vhost_permissions(acl, user)[kind], name))

    for kind in ("configure", "write", "read"):
        assert may("flight", kind, "mqtt-subscription-flight.gs-console-1qos1")
        assert may("flight", kind, "mqtt-subscription-flight.gs-console-1qos0")
        for other in ("eecom.gs-console-1", "flightx.gs-console-1", "flight-gs-console-1",
                      "gs-console-flight"):  # another account's, or no account's
            assert not may("flight", kind, f"mqtt-subscription-{other}qos1"), other
        assert may("ingest", kind, "gs.ingest.p00") and may("ingest", kind, "gs.telemetry")
        assert not any(may(u, kind, "gs.ingest.p00") for u in USERS if u != "ingest")
        assert not any(may(u, kind, "amq.default") for u in USERS)  # reaches every queue
    assert not any(may(u, "configure", "amq.topic") for u in USERS)
    assert all(may(u, kind, "amq.topic") for u in USERS for kind in ("write", "read"))
    # amq.topic only for an account that may read (write) something.
    acl = parse_acl("user w\ntopic write y/#\nuser r\ntopic read y/#\n")
    assert may("w", "write", "amq.topic", acl) and not may("w", "read", "amq.topic", acl)
    assert may("r", "read", "amq.topic", acl) and not may("r", "write", "amq.topic", acl)
    assert may("w", "configure", "mqtt-subscription-w.1qos1", acl)  # a persistent session


def test_bad_acl_lines_and_user_names() -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_acl("topic read x\n")
    with pytest.raises(ValueError, match="unknown access"):
        parse_acl("pattern sometimes x\n")
    with pytest.raises(ValueError, match="routing-key level"):
        definitions({"fl.ight": "pw"}, ACL)
    with pytest.raises(ValueError, match="no users"):
        definitions({}, ACL)


def test_definitions_give_every_account_a_topic_permission() -> None:
    defs = definitions(ACL_USERS, ACL)
    json.dumps(defs)
    assert {u["name"] for u in defs["users"]} == set(ACL_USERS)
    assert {p["user"] for p in defs["topic_permissions"]} == set(ACL_USERS)
    assert all(p["exchange"] == "amq.topic" for p in defs["topic_permissions"])
    assert "flight-pw" not in json.dumps(defs)


def test_password_hash_is_rabbitmq_sha256() -> None:
    # RabbitMQ's rabbit_password_hashing_sha256 of "test12" with salt 908DC60A (its docs).
    encoded = rabbitmq_auth.hash_password("test12", bytes.fromhex("908DC60A"))
    assert encoded == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_main_writes_definitions_from_stdin(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("# accounts\nflight flight-pw\nsoyuz s-pw\n"))
    out = tmp_path / "defs.json"
    assert rabbitmq_auth.main([str(out)]) == 0
    defs = json.loads(out.read_text())
    assert [u["name"] for u in defs["users"]] == ["flight", "soyuz"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setattr("sys.stdin", io.StringIO("flight\n"))
    assert rabbitmq_auth.main([str(out)]) == 2
    assert rabbitmq_auth.main([]) == 2
