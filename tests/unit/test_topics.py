"""The topic layout (groundstation/core/topics.py): every builder's topic parses back to what
built it, the strings are the ones the broker ACL names, and a topic that is not of the
layout is refused saying what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundstation.core import topics
from groundstation.core.topics import Source, SourceKind

# One topic level as the builders take it: no '/', '+', '#' (or NUL), not empty.
LEVEL = st.text(st.characters(blacklist_characters="/+#\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=12)
SOURCES = st.one_of(st.just(Source.live()), st.builds(Source.replay, LEVEL),
                    st.builds(Source.training, LEVEL))


def test_sources() -> None:
    assert Source.parse("live") == Source.live() and Source.live().is_live
    s = Source.parse("replay/s1")
    assert (s.kind, s.name, str(s), s.is_live) == (SourceKind.REPLAY, "s1", "replay/s1", False)
    d = Source.parse("training/o2-tank-20260101T000000Z")
    assert d == Source.training("o2-tank-20260101T000000Z") and d.kind is SourceKind.TRAINING
    assert Source.parse(d) is d
    assert topics.training("t1") == "training/t1" and topics.replay("s") == "replay/s"
    assert topics.check_source("live") == "live"
    assert {Source.parse("replay/a"), Source.replay("a")} == {Source.replay("a")}  # hashable
    for bad in ("", "LIVE", "live/x", "replay", "replay/", "replay/a/b", "replay/+",
                "training/#", "recorded/x", "/live"):
        with pytest.raises(ValueError, match="must be 'live', 'replay/<session>' or "
                                             "'training/<drill>'"):
            Source.parse(bad)
    with pytest.raises(ValueError, match="the live source has no name"):
        Source(SourceKind.LIVE, "x")
    with pytest.raises(ValueError, match="needs its drill"):
        Source(SourceKind.TRAINING)


@given(SOURCES)
def test_a_source_is_its_text(source: Source) -> None:
    assert Source.parse(str(source)) == source
    assert "/".join(source.levels) == str(source)


def test_the_topic_strings_are_the_ones_the_acl_and_deployments_use() -> None:
    # deploy/mosquitto/acl and existing deployments depend on these exact strings.
    assert topics.telemetry("apollo_csm", "hbr") == "telemetry/live/apollo_csm/hbr"
    assert topics.telemetry("soyuz", "tm", "s1") == "telemetry/replay/s1/soyuz/tm"
    assert topics.telemetry("soyuz", "tm", source="training/d") == \
        "telemetry/training/d/soyuz/tm"
    assert topics.sim_state("apollo_csm") == "sim/state/apollo_csm"
    assert topics.sim_state("soyuz", "training/d") == "sim/state/training/d/soyuz"
    assert topics.sim_state("soyuz", Source.replay("s")) == "sim/state/replay/s/soyuz"
    assert topics.sim_control("soyuz") == "sim/control/soyuz"
    assert topics.sim_reply("soyuz") == "sim/reply/soyuz"
    assert topics.parameters("soyuz") == "params/live/soyuz"
    assert topics.alarms("soyuz", "replay/s") == "alarms/replay/s/soyuz"
    assert topics.active_alarms("soyuz") == "alarms/live/soyuz/active"
    assert topics.acknowledgements("eecom", "apollo_csm") == "ack/eecom/apollo_csm"
    assert topics.alarm_replies("eecom") == "alarms/replies/eecom"
    assert topics.ingest_stats() == topics.INGEST_STATS == "ingest/stats"
    assert topics.ingest_link("soyuz", "training/d") == "ingest/link/training/d/soyuz"
    assert topics.replay_session("s") == "replay/session/s"
    assert topics.replay_control("s") == "replay/control/s"
    assert topics.replay_status("s") == "replay/status/s"
    assert topics.drill_control("d") == "drill/control/d"
    assert topics.drill_status("d") == "drill/status/d"
    assert topics.parameters_subscription("live") == "params/live/+"
    assert topics.alarms_subscription("training/d") == "alarms/training/d/+"
    assert topics.TELEMETRY_SUBSCRIPTIONS == (
        "telemetry/live/+/+", "telemetry/replay/+/+/+", "telemetry/training/+/+/+")
    assert topics.ACTIVE_ALARMS_SUBSCRIPTIONS == (
        "alarms/live/+/active", "alarms/replay/+/+/active", "alarms/training/+/+/active")
    assert topics.ACK_SUBSCRIPTION == "ack/+/+"


# Each family: (builder from (source, name, name2), parser, the value's fields).
FAMILIES: list[tuple[str, Callable[..., str], Callable[[str], object]]] = [
    ("telemetry", lambda s, a, b: topics.telemetry(a, b, source=s), topics.parse_telemetry),
    ("sim_state", lambda s, a, b: topics.sim_state(a, s), topics.parse_sim_state),
    ("params", lambda s, a, b: topics.parameters(a, s), topics.parse_parameters),
    ("alarms", lambda s, a, b: topics.alarms(a, s), topics.parse_alarms),
    ("active", lambda s, a, b: topics.active_alarms(a, s), topics.parse_active_alarms),
    ("link", lambda s, a, b: topics.ingest_link(a, s), topics.parse_ingest_link),
]
NAMED: list[tuple[Callable[[str], str], Callable[[str], object], str]] = [
    (topics.sim_control, topics.parse_sim_control, "vehicle"),
    (topics.sim_reply, topics.parse_sim_reply, "vehicle"),
    (topics.alarm_replies, topics.parse_alarm_replies, "operator"),
    (topics.replay_session, topics.parse_replay_session, "session"),
    (topics.replay_control, topics.parse_replay_control, "session"),
    (topics.replay_status, topics.parse_replay_status, "session"),
    (topics.drill_control, topics.parse_drill_control, "drill"),
    (topics.drill_status, topics.parse_drill_status, "drill"),
]


@given(SOURCES, LEVEL, LEVEL)
def test_every_sourced_topic_parses_back(source: Source, a: str, b: str) -> None:
    for _, build, parse in FAMILIES:
        topic = build(source, a, b)
        where = parse(topic)
        assert where.source == source and where.vehicle == a  # type: ignore[attr-defined]
        assert str(where) == topic
        assert topics.parse(topic) == where  # the general parser finds the same family
    t = topics.parse_telemetry(topics.telemetry(a, b, source=source))
    assert t.stream == b


@given(LEVEL, LEVEL)
def test_every_named_topic_parses_back(a: str, b: str) -> None:
    for build, parse, field in NAMED:
        where = parse(build(a))
        assert getattr(where, field) == a and str(where) == build(a)
        assert topics.parse(build(a)) == where
    ack = topics.parse_acknowledgements(topics.acknowledgements(a, b))
    assert (ack.operator, ack.vehicle) == (a, b)
    assert topics.parse(str(ack)) == ack


def test_the_general_parser_tells_the_families_apart() -> None:
    # A vehicle named "active" or "replies" is still a vehicle: the level count decides.
    assert isinstance(topics.parse("alarms/live/active"), topics.AlarmsTopic)
    assert isinstance(topics.parse("alarms/live/active/active"), topics.ActiveAlarmsTopic)
    assert isinstance(topics.parse("alarms/replay/active/active"), topics.AlarmsTopic)
    assert isinstance(topics.parse("alarms/replies/eecom"), topics.AlarmRepliesTopic)
    assert isinstance(topics.parse("ingest/stats"), topics.IngestStatsTopic)
    assert topics.parse("sim/state/replay") == topics.SimStateTopic(Source.live(), "replay")
    assert topics.is_telemetry("telemetry/garbage") and not topics.is_telemetry("params/x")


@pytest.mark.parametrize(("parser", "topic", "expected"), [
    (topics.parse_telemetry, "telemetry/live/apollo_csm", "telemetry/live/<vehicle>/<stream>"),
    (topics.parse_telemetry, "telemetry/replay/apollo_csm/hbr", "replay/<session>"),
    (topics.parse_telemetry, "telemetry/recorded/s/apollo_csm/hbr", "training/<drill>"),
    (topics.parse_telemetry, "telemetry/live/apollo_csm/", "<stream>"),
    (topics.parse_sim_state, "sim/state/live/soyuz", "sim/state/<vehicle>"),
    (topics.parse_parameters, "params/soyuz", "params/<source>/<vehicle>"),
    (topics.parse_alarms, "alarms/live/soyuz/active", "alarms/<source>/<vehicle>"),
    (topics.parse_active_alarms, "alarms/live/soyuz", "alarms/<source>/<vehicle>/active"),
    (topics.parse_acknowledgements, "ack/eecom", "ack/<operator>/<vehicle>"),
    (topics.parse_acknowledgements, "ack//soyuz", "ack/<operator>/<vehicle>"),
    (topics.parse_alarm_replies, "alarms/replies/a/b", "alarms/replies/<operator>"),
    (topics.parse_ingest_link, "ingest/link/soyuz", "ingest/link/<source>/<vehicle>"),
    (topics.parse_replay_control, "replay/control", "replay/control/<session>"),
    (topics.parse_drill_status, "drill/status/a/b", "drill/status/<drill>"),
    (topics.parse, "weather/live/x", "not a groundstation topic"),
])
def test_a_bad_topic_is_refused_saying_what_was_expected(
        parser: Callable[[str], object], topic: str, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        parser(topic)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x+y"])
def test_a_name_must_be_one_topic_level(bad: str) -> None:
    # A name with a wildcard or a slash would widen a subscription or escape its subtree.
    for build in (lambda n: topics.telemetry(n, "hbr"), lambda n: topics.telemetry("v", n),
                  lambda n: topics.acknowledgements(n, "v"), topics.alarm_replies,
                  topics.sim_control, topics.replay_control, topics.drill_status):
        with pytest.raises(ValueError, match="must be one topic level"):
            build(bad)
    with pytest.raises(ValueError, match="must be one topic level"):
        Source.replay(bad)
