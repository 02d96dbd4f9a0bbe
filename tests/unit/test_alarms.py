"""The alarm engine against frames built by the encoder and decoded by the real decoder:
persistence, deadband, escalation, latching, acknowledgement, shelving, discretes and
derived parameters, each checked as an exact sequence of events at exact frame times."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundstation.core.alarms import AlarmEngine, AlarmError, AlarmEvent, AlarmState, Transition
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.paths import defs_dir
from simulators.downlink import nominal_values
from tests.paths import DATA

T0 = 174_845_349_000_000_000  # 1975-07-17 16:09:09 UTC, first docking
MS = 1_000_000
S = 1_000_000_000


class Feed:
    """A stream: encodes values frame by frame, decodes them and feeds the alarm engine,
    keeping the frame counter and the time running across batches (50 frames/s)."""

    def __init__(self, definition: VehicleDefinition, base: Mapping[str, Any]):
        self.definition = definition
        self.enc = FrameEncoder(definition)
        self.dec = StreamDecoder(definition)
        self.engine = AlarmEngine(definition, "live")
        self.base = dict(base)
        self.frame = 0  # index of the next frame to send

    def t(self, frame: int) -> int:
        return T0 + frame * self.enc.period_ns

    def send(self, n: int, context: dict[str, Any] | None = None, **values: Any
             ) -> list[AlarmEvent]:
        c = self.definition.frame.counter
        frames = self.enc.encode({**self.base, **values}, n,
                                 c.first + self.frame % c.modulus)
        times = self.t(self.frame) + np.arange(n, dtype=np.int64) * self.enc.period_ns
        self.frame += n
        batch = self.dec.decode(frames, times, context)
        return self.engine.process(batch, context)

    def frame_of(self, t: int) -> int:
        return (t - T0) // self.enc.period_ns


def brief(feed: Feed, events: list[AlarmEvent]) -> list[tuple[Any, ...]]:
    """(transition, parameter, frame, severity, side, state) of each event: the shape most
    assertions need."""
    return [(e.transition.value, e.parameter, feed.frame_of(e.time_ns), e.severity, e.side,
             e.state.value) for e in events]


MINI_BASE = {"cabin_press": 5.0, "hatch": "CLOSED", "dm_press": 258.0, "temp": 66.0}


@pytest.fixture
def mini() -> Feed:
    return Feed(load_definition(DATA / "mini.yaml"), MINI_BASE)


TANK = load_definition(DATA / "alarms_tank.yaml")
TANK_BASE = {"o2_tank_press": 900.0, "pump": "ON", "glycol_temp": 40.0, "h2_tank_press": 245.0}


@pytest.fixture
def tank() -> Feed:
    return Feed(TANK, TANK_BASE)


@pytest.fixture(scope="module")
def apollo_def() -> VehicleDefinition:
    return load_definition(defs_dir() / "apollo_csm.yaml")


@pytest.fixture
def apollo(apollo_def: VehicleDefinition) -> Feed:
    return Feed(apollo_def, nominal_values(apollo_def))


# cabin_press is 8 bits over 0..17 psia: count k is k/15 psia exactly, so 5.2 is count 78
# (at the yellow limit: nominal), 79 = 5.2667 is yellow high, 82 = 5.4667 red high.
YH, RH = 79 / 15, 82 / 15


# --- persistence -------------------------------------------------------------------------


def test_persistence_in_samples_and_a_streak_broken_by_one_good_sample(mini: Feed) -> None:
    assert mini.send(5) == []
    # One violating sample, then good: persistence 2 is not met.
    assert mini.send(4, cabin_press=[YH, 5.0, YH, 5.0]) == []
    # Violating, good, violating, good: still never two in a row.
    assert mini.send(4, cabin_press=[YH, 5.0, YH, 5.0]) == []
    events = mini.send(4, cabin_press=[5.0, YH, YH, YH])  # frames 13..16
    assert brief(mini, events) == [("raised", "cabin_press", 15, "yellow", "high",
                                    "active_unacked")]
    e = events[0]
    assert e.time_ns == mini.t(15) and e.onset_ns == mini.t(14)
    assert e.value == pytest.approx(YH) and e.limit == 5.2 and e.operator is None
    assert e.vehicle == "mini" and e.source == "live" and e.unit == "psia"


def test_a_streak_spanning_two_batches_counts(mini: Feed) -> None:
    assert mini.send(3, cabin_press=[5.0, 5.0, YH]) == []  # streak of 1 at the end
    events = mini.send(3, cabin_press=[YH, YH, YH])  # ... continued by the first frame
    assert brief(mini, events) == [("raised", "cabin_press", 3, "yellow", "high",
                                    "active_unacked")]
    assert events[0].onset_ns == mini.t(2)


def test_a_streak_broken_at_a_batch_boundary_does_not_count(mini: Feed) -> None:
    assert mini.send(3, cabin_press=[5.0, 5.0, YH]) == []
    assert mini.send(3, cabin_press=[5.0, YH, 5.0]) == []
    assert mini.engine.active()["alarms"] == []


def test_persistence_in_seconds_o2_flow(apollo: Feed) -> None:
    # O2 FLOW HIGH: >= 1.0 lb/h for more than 16.5 s. o2_flow is sampled in minor frames
    # 3, 8, 13, ... (10 samples/s); from frame 100 on it reads 1.2 lb/h, so the first
    # violating sample is frame 103 and 16.5 s (825 frames) later is frame 928.
    flow = lambda n: np.full(n, 1.2)  # noqa: E731
    assert apollo.send(100) == []
    # Up to frame 903: the violation has lasted exactly 16.0 s. No alarm.
    assert apollo.send(804, o2_flow=flow(804)) == []
    assert apollo.engine.active()["alarms"] == []
    # 16.4 s at frame 923 is still not enough; 16.5 s at frame 928 is.
    events = apollo.send(100, o2_flow=flow(100))
    assert brief(apollo, events) == [("raised", "o2_flow", 928, "red", "high",
                                      "active_unacked")]
    assert events[0].onset_ns == apollo.t(103)
    assert events[0].time_ns - events[0].onset_ns == 16_500 * MS
    assert events[0].limit == 1.0 and events[0].label == "O2 FLOW"


def test_persistence_in_seconds_restarts_after_a_good_sample(apollo: Feed) -> None:
    # 16.4 s of violation, one good sample, then 16.4 s again: never 16.5 s continuous.
    flow = np.concatenate([np.full(825, 1.2), np.full(5, 0.5), np.full(825, 1.2)])
    assert apollo.send(flow.size, o2_flow=flow) == []
    events = apollo.send(10, o2_flow=np.full(10, 1.2))  # and now it has: 835 + 825 = 1660
    assert brief(apollo, events) == [("raised", "o2_flow", 1658, "red", "high",
                                      "active_unacked")]
    assert events[0].onset_ns == apollo.t(833)


def test_main_bus_undervolt(apollo: Feed) -> None:
    # MAIN BUS A UNDERVOLT < 26.25 V, persistence 5 samples (every frame), deadband 0.2.
    volts = np.concatenate([np.full(10, 25.5), np.full(3, 26.9), np.full(2, 28.0)])
    events = apollo.send(volts.size, main_bus_a_volts=volts)
    # 26.9 V (26.82 after 8-bit quantisation) is nominal, and more than 0.2 V above red
    # low, but not 0.2 V above yellow low 26.75: red clears, yellow holds until 28 V.
    assert brief(apollo, events) == [
        ("raised", "main_bus_a_volts", 4, "red", "low", "active_unacked"),
        ("deescalated", "main_bus_a_volts", 10, "yellow", "low", "active_unacked"),
        ("returned_to_normal", "main_bus_a_volts", 13, "nominal", "low", "normal_unacked"),
    ]
    assert events[0].limit == 26.25 and events[0].onset_ns == apollo.t(0)
    assert [e.limit for e in events[1:]] == [26.75, 26.75]
    # Red straight back to well inside the limits is one transition.
    volts = np.concatenate([np.full(6, 25.5), np.full(2, 28.0)])  # frames 15..22
    events = apollo.send(volts.size, main_bus_a_volts=volts)
    assert brief(apollo, events) == [
        ("raised", "main_bus_a_volts", 19, "red", "low", "active_unacked"),
        ("returned_to_normal", "main_bus_a_volts", 21, "nominal", "low", "normal_unacked"),
    ]


# --- deadband and escalation -------------------------------------------------------------


def test_deadband_red_high_950(tank: Feed) -> None:
    # Red high 950 psia, deadband 5: red clears only at 945 or below. 949, 946 and 945.1
    # are back inside the red limit but within its deadband: still red. At 944.9 red
    # clears, to yellow (it is still above yellow high 935).
    press = [960.0, 949.0, 946.0, 945.1, 944.9, 944.9]
    events = tank.send(len(press), o2_tank_press=press)
    assert brief(tank, events) == [
        ("raised", "o2_tank_press", 0, "red", "high", "active_unacked"),
        ("deescalated", "o2_tank_press", 4, "yellow", "high", "active_unacked"),
    ]
    assert events[0].value == pytest.approx(960.0) and events[0].limit == 950
    assert events[1].value == pytest.approx(944.9) and events[1].limit == 935


def test_deadband_each_level_clears_on_its_own_limit(tank: Feed) -> None:
    press = [960.0, 949.0, 944.0, 936.0, 931.0, 930.0, 920.0]
    events = tank.send(len(press), o2_tank_press=press)
    # 949: red within the deadband, still red. 944: 6 psia inside red: de-escalate to
    # yellow (still > 935). 936, 931: yellow, or within 5 of it. 930: clears.
    assert brief(tank, events) == [
        ("raised", "o2_tank_press", 0, "red", "high", "active_unacked"),
        ("deescalated", "o2_tank_press", 2, "yellow", "high", "active_unacked"),
        ("returned_to_normal", "o2_tank_press", 5, "nominal", "high", "normal_unacked"),
    ]
    assert [e.limit for e in events] == [950, 935, 935]


def test_deadband_cabin_press_at_the_limit_does_not_clear(mini: Feed) -> None:
    # 5.2 psia is at the yellow limit (nominal) but not 0.05 inside it; 77/15 = 5.1333 is.
    events = mini.send(7, cabin_press=[YH, YH, 5.2, 5.2, 5.2, 77 / 15, 5.0])
    assert brief(mini, events) == [
        ("raised", "cabin_press", 1, "yellow", "high", "active_unacked"),
        ("returned_to_normal", "cabin_press", 5, "nominal", "high", "normal_unacked"),
    ]


def test_escalation_needs_red_to_persist_and_unacks(mini: Feed) -> None:
    events = mini.send(4, cabin_press=[YH, YH, RH, YH])  # one red sample: no escalation
    assert brief(mini, events) == [("raised", "cabin_press", 1, "yellow", "high",
                                    "active_unacked")]
    ack = mini.engine.acknowledge("cabin_press", "eecom_liebergot", mini.t(4))
    assert ack.state is AlarmState.ACTIVE_ACKED
    events = mini.send(4, cabin_press=[RH, RH, 5.4, 80 / 15])  # frames 4..7
    # Red twice: escalated (the ack no longer covers it). 5.4 is within 0.05 of red:
    # stays red. 5.333 clears red by the deadband: back to yellow, still unacked.
    assert brief(mini, events) == [
        ("escalated", "cabin_press", 5, "red", "high", "active_unacked"),
        ("deescalated", "cabin_press", 7, "yellow", "high", "active_unacked"),
    ]
    assert events[0].limit == 5.4 and events[0].onset_ns == mini.t(4)
    events = mini.send(2, cabin_press=[RH, RH])  # frames 8, 9
    assert [e.transition for e in events] == [Transition.ESCALATED]
    mini.engine.acknowledge("cabin_press", "eecom_liebergot", mini.t(10))
    events = mini.send(1, cabin_press=80 / 15)
    # De-escalation keeps the acknowledgement: red was acknowledged, yellow is less.
    assert brief(mini, events) == [("deescalated", "cabin_press", 10, "yellow", "high",
                                    "active_acked")]


def test_red_persisting_from_the_start_raises_red_directly(mini: Feed) -> None:
    events = mini.send(3, cabin_press=[RH, RH, RH])
    assert brief(mini, events) == [("raised", "cabin_press", 1, "red", "high",
                                    "active_unacked")]


def test_low_side_and_a_jump_to_the_other_side(mini: Feed) -> None:
    events = mini.send(4, cabin_press=[4.0, 4.0, 6.0, 6.0])
    # A jump from red low to red high: the low condition has cleared at once (by far
    # more than the deadband), the high one is raised when it has persisted.
    assert brief(mini, events) == [
        ("raised", "cabin_press", 1, "red", "low", "active_unacked"),
        ("returned_to_normal", "cabin_press", 2, "nominal", "low", "normal_unacked"),
        ("raised", "cabin_press", 3, "red", "high", "active_unacked"),
    ]
    assert [e.limit for e in events] == [4.6, 4.6, 5.4]


def test_a_jump_to_the_other_side_without_persistence_is_raised_again(tank: Feed) -> None:
    events = tank.send(2, o2_tank_press=[700.0, 990.0])  # persistence 1
    assert brief(tank, events) == [
        ("raised", "o2_tank_press", 0, "red", "low", "active_unacked"),
        ("raised", "o2_tank_press", 1, "red", "high", "active_unacked"),
    ]


# --- latching and acknowledgement --------------------------------------------------------


def test_latching_normal_unacked_stays_until_acked(mini: Feed) -> None:
    events = mini.send(4, cabin_press=[YH, YH, 5.0, 5.0])
    assert [e.state for e in events] == [AlarmState.ACTIVE_UNACKED, AlarmState.NORMAL_UNACKED]
    summary = mini.engine.active()
    assert summary["master_alarm"] is True
    assert [(a["parameter"], a["state"], a["severity"], a["peak_severity"])
            for a in summary["alarms"]] == [("cabin_press", "normal_unacked", "nominal",
                                             "yellow")]
    assert mini.send(20) == []  # still latched, however long it stays normal
    assert len(mini.engine.active()["alarms"]) == 1
    ack = mini.engine.acknowledge("cabin_press", "eecom_aaron", mini.t(30))
    assert (ack.transition, ack.state, ack.operator, ack.time_ns) == (
        Transition.ACKNOWLEDGED, AlarmState.NORMAL, "eecom_aaron", mini.t(30))
    assert mini.engine.active()["alarms"] == [] and not mini.engine.active()["master_alarm"]


def test_acked_alarm_is_removed_when_it_returns_to_normal(mini: Feed) -> None:
    mini.send(2, cabin_press=[YH, YH])
    ack = mini.engine.acknowledge("cabin_press", "eecom_aaron", mini.t(2))
    assert ack.state is AlarmState.ACTIVE_ACKED and ack.severity == "yellow"
    summary = mini.engine.active()
    assert summary["master_alarm"] is False
    assert summary["alarms"][0]["acked_by"] == "eecom_aaron"
    events = mini.send(2, cabin_press=[5.0, 5.0])
    assert brief(mini, events) == [("returned_to_normal", "cabin_press", 2, "nominal",
                                    "high", "normal")]
    assert mini.engine.active()["alarms"] == []


def test_a_latched_alarm_that_returns_is_raised_again(mini: Feed) -> None:
    mini.send(3, cabin_press=[YH, YH, 5.0])
    events = mini.send(2, cabin_press=[RH, RH])
    assert brief(mini, events) == [("raised", "cabin_press", 4, "red", "high",
                                    "active_unacked")]


def test_ack_refusals_change_nothing(mini: Feed) -> None:
    engine = mini.engine
    with pytest.raises(AlarmError) as err:
        engine.acknowledge("cabin_press", "eecom", mini.t(0))
    assert err.value.reason == "no_alarm" and "cabin_press" in str(err.value)
    mini.send(2, cabin_press=[YH, YH])
    before = (engine.snapshot(), engine.active())
    for pid, operator, reason in [("no_such_thing", "eecom", "unknown_parameter"),
                                  ("range", "eecom", "no_limits"),
                                  ("cabin_press", "", "bad_operator")]:
        with pytest.raises(AlarmError) as err:
            engine.acknowledge(pid, operator, mini.t(3))
        assert err.value.reason == reason
    assert (engine.snapshot(), engine.active()) == before
    engine.acknowledge("cabin_press", "eecom", mini.t(3))
    before = (engine.snapshot(), engine.active())
    with pytest.raises(AlarmError) as err:
        engine.acknowledge("cabin_press", "gnc", mini.t(4))
    assert err.value.reason == "already_acknowledged" and "eecom" in str(err.value)
    assert (engine.snapshot(), engine.active()) == before
    assert engine.active()["alarms"][0]["acked_by"] == "eecom"


def test_ack_defaults_to_the_stream_clock(mini: Feed) -> None:
    mini.send(5, cabin_press=[5.0, 5.0, 5.0, YH, YH])
    assert mini.engine.acknowledge("cabin_press", "eecom").time_ns == mini.t(4)


# --- shelving ----------------------------------------------------------------------------


def test_shelving_suppresses_and_expires_with_an_unshelved_event(mini: Feed) -> None:
    mini.send(10)
    ev = mini.engine.shelve("cabin_press", "eecom", 1.0, mini.t(10))  # until frame 60
    assert (ev.transition, ev.state, ev.operator, ev.until_ns) == (
        Transition.SHELVED, AlarmState.SHELVED, "eecom", mini.t(60))
    # Raised and escalated while shelved: nothing reaches the consoles.
    assert mini.send(30, cabin_press=np.r_[np.full(10, YH), np.full(20, RH)]) == []
    assert mini.engine.suppressed == {"raised": 1, "escalated": 1}
    summary = mini.engine.active()
    assert summary["master_alarm"] is False and summary["counts"]["shelved"] == 1
    assert summary["alarms"][0]["state"] == "shelved"
    assert summary["alarms"][0]["severity"] == "red"  # the condition is still tracked
    with pytest.raises(AlarmError) as err:
        mini.engine.acknowledge("cabin_press", "eecom", mini.t(40))
    assert err.value.reason == "shelved"
    # The shelf expires at frame 60, inside the next batch; the condition is still red,
    # so it comes back as a new unacknowledged alarm. The later clearing is announced.
    events = mini.send(30, cabin_press=np.r_[np.full(25, RH), np.full(5, 5.0)])
    assert brief(mini, events) == [
        ("unshelved", "cabin_press", 60, "red", "high", "active_unacked"),
        ("returned_to_normal", "cabin_press", 65, "nominal", "high", "normal_unacked"),
    ]
    assert events[0].operator is None and events[0].value == pytest.approx(RH)


def test_a_condition_that_came_and_went_while_shelved_leaves_nothing(mini: Feed) -> None:
    mini.engine.shelve("cabin_press", "eecom", 0.5, mini.t(0))
    assert mini.send(10, cabin_press=[YH] * 5 + [5.0] * 5) == []
    events = mini.send(20)
    assert brief(mini, events) == [("unshelved", "cabin_press", 25, "nominal", None,
                                    "normal")]
    assert mini.engine.active()["alarms"] == []


def test_explicit_unshelve_and_expiry_without_data(mini: Feed) -> None:
    mini.send(3, cabin_press=[YH, YH, YH])
    mini.engine.shelve("cabin_press", "eecom", 60.0, mini.t(3))
    ev = mini.engine.unshelve("cabin_press", "flight_frank", mini.t(4))
    assert (ev.transition, ev.state, ev.operator, ev.severity) == (
        Transition.UNSHELVED, AlarmState.ACTIVE_UNACKED, "flight_frank", "yellow")
    with pytest.raises(AlarmError) as err:
        mini.engine.unshelve("cabin_press", "flight_frank", mini.t(5))
    assert err.value.reason == "not_shelved"
    # Loss of signal: no batches, but the shelf still expires on tick().
    mini.engine.shelve("hatch", "eecom", 2.0, mini.t(5))
    assert mini.engine.tick(mini.t(5) + S) == []
    events = mini.engine.tick(mini.t(5) + 3 * S)
    assert [(e.transition, e.parameter, e.time_ns, e.state) for e in events] == [
        (Transition.UNSHELVED, "hatch", mini.t(5) + 2 * S, AlarmState.NORMAL)]
    for duration in (0, -1, float("nan"), 9 * 3600):
        with pytest.raises(AlarmError) as err:
            mini.engine.shelve("hatch", "eecom", duration, mini.t(6))
        assert err.value.reason == "bad_duration"


# --- discretes, derived parameters, contexts ----------------------------------------------


def test_discrete_red_state_and_clearing(mini: Feed) -> None:
    events = mini.send(4, hatch=["CLOSED", "OPEN", "OPEN", "CLOSED"])
    assert brief(mini, events) == [
        ("raised", "hatch", 1, "red", "high", "active_unacked"),
        ("returned_to_normal", "hatch", 3, "nominal", "high", "normal_unacked"),
    ]
    assert [(e.value_text, e.limit) for e in events] == [("OPEN", None), ("CLOSED", None)]


def test_discrete_yellow_and_red_states_with_persistence(tank: Feed) -> None:
    pump = ["DEGRADED", "ON", "DEGRADED", "DEGRADED", "FAIL", "FAIL", "DEGRADED", "OFF"]
    events = tank.send(len(pump), pump=pump)
    assert brief(tank, events) == [
        ("raised", "pump", 3, "yellow", "high", "active_unacked"),
        ("escalated", "pump", 5, "red", "high", "active_unacked"),
        ("deescalated", "pump", 6, "yellow", "high", "active_unacked"),
        ("returned_to_normal", "pump", 7, "nominal", "high", "normal_unacked"),
    ]
    assert [e.value_text for e in events] == ["DEGRADED", "FAIL", "DEGRADED", "OFF"]


def test_derived_parameter_alarm(mini: Feed) -> None:
    # cm_dm_dp = cabin_press - dm_press (mm Hg converted to psi): red low -1 psid. The
    # derived value is computed at every cabin_press sample from the latest dm_press,
    # which is sampled in minor frames 1 and 6.
    events = mini.send(10, dm_press=400.0)  # 5.0 - 7.73 = -2.7 psid from frame 1 on
    assert brief(mini, events) == [("raised", "cm_dm_dp", 1, "red", "low",
                                    "active_unacked")]
    assert events[0].limit == -1 and events[0].unit == "psid"
    assert events[0].value == pytest.approx(5.0 - 400 / 51.715, abs=0.05)  # 51.7 mmHg/psi
    events = mini.send(10, dm_press=258.0)
    assert brief(mini, events) == [("returned_to_normal", "cm_dm_dp", 11, "nominal", "low",
                                    "normal_unacked")]


def test_limit_context_relaxes_and_clears_an_alarm(tank: Feed) -> None:
    # glycol_temp: red high 80 by default, 100 in entry (no yellow); persistence 0.2 s.
    events = tank.send(20, glycol_temp=90.0)
    assert brief(tank, events) == [("raised", "glycol_temp", 10, "red", "high",
                                    "active_unacked")]
    assert events[0].time_ns - events[0].onset_ns == 200 * MS
    entry = {"phase": "entry"}
    events = tank.send(5, entry, glycol_temp=90.0)
    # 90 is nominal under the entry limits (and 10 inside red 100): it clears at once.
    assert brief(tank, events) == [("returned_to_normal", "glycol_temp", 20, "nominal",
                                    "high", "normal_unacked")]
    events = tank.send(20, entry, glycol_temp=101.0)
    assert brief(tank, events) == [("raised", "glycol_temp", 35, "red", "high",
                                    "active_unacked")]
    assert events[0].limit == 100


def test_events_of_several_parameters_are_in_time_order(mini: Feed) -> None:
    events = mini.send(6, cabin_press=[5.0, 5.0, 5.0, YH, YH, YH],
                       hatch=["CLOSED", "OPEN", "OPEN", "OPEN", "CLOSED", "CLOSED"])
    assert [(e.parameter, mini.frame_of(e.time_ns)) for e in events] == [
        ("hatch", 1), ("cabin_press", 4), ("hatch", 4)]
    assert [e.seq for e in events] == [1, 2, 3]


# --- the vectorised engine against a sample-by-sample reference ---------------------------


def reference(t: list[int], v: list[float], s: list[int], limits: Any,
              discrete: bool) -> list[tuple[str, int]]:
    """The same rules written the obvious way, one sample at a time: (transition, sample)."""
    masks = ((1, 1), (1, 2), (-1, 1), (-1, 2))
    y, r = limits.yellow or (None, None), limits.red or (None, None)
    thr = (y[1] if y[1] is not None else r[1], r[1], y[0] if y[0] is not None else r[0], r[0])
    p_ns = None if limits.persistence_s is None else round(limits.persistence_s * 1e9)
    runs, starts, latch = [0] * 4, [0] * 4, [False] * 4
    cond, out = 0, []
    for i in range(len(s)):
        for j, (side, level) in enumerate(masks):
            if (s[i] >= level) if side > 0 else (s[i] <= -level):
                starts[j] = t[i] if runs[j] == 0 else starts[j]
                runs[j] += 1
                persisted = (runs[j] >= limits.persistence if p_ns is None
                             else t[i] - starts[j] >= p_ns)
            else:
                runs[j], persisted = 0, False
            if discrete:
                reset = s[i] < level if side > 0 else s[i] > -level
            elif thr[j] is None:
                reset = True
            elif side > 0:
                reset = v[i] <= thr[j] - limits.deadband or s[i] < 0
            else:
                reset = v[i] >= thr[j] + limits.deadband or s[i] > 0
            latch[j] = True if persisted else (False if reset else latch[j])
        high = 2 if latch[1] else int(latch[0])
        low = 2 if latch[3] else int(latch[2])
        new = high if high else -low
        if new != cond:
            transition = ("returned_to_normal" if new == 0 else
                          "raised" if cond == 0 or (cond > 0) != (new > 0) else
                          "escalated" if abs(new) > abs(cond) else "deescalated")
            out.append((transition, i))
            cond = new
    return out


PALETTES = {
    # Values on both sides of every limit and of every clearing point (limit - deadband).
    "h2_tank_press": [190.0, 199.0, 201.0, 205.0, 219.0, 221.0, 223.0, 245.0, 267.0, 269.0,
                      271.0, 288.5, 291.0, 295.0],
    "o2_tank_press": [700.0, 779.0, 782.0, 790.0, 799.0, 803.0, 900.0, 931.0, 936.0, 946.0,
                      951.0],
    "glycol_temp": [-45.0, -39.5, -35.0, -30.5, -28.5, 40.0, 59.5, 61.0, 79.5, 81.0],
    "pump": ["OFF", "ON", "DEGRADED", "FAIL"],
}


@settings(max_examples=150, deadline=None)
@given(pid=st.sampled_from(sorted(PALETTES)), data=st.data())
def test_engine_matches_the_sample_by_sample_reference(pid: str, data: Any) -> None:
    palette = PALETTES[pid]
    # Runs of repeated values, so persistence is reached as well as broken.
    runs = data.draw(st.lists(st.tuples(st.sampled_from(palette), st.integers(1, 14)),
                              min_size=1, max_size=12))
    values = [x for x, k in runs for _ in range(k)]
    n = len(values)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4)))
    whole = Feed(TANK, TANK_BASE)
    t, v, s = whole.dec.decom.decode(
        whole.enc.encode({**TANK_BASE, pid: values}, n),
        T0 + np.arange(n, dtype=np.int64) * whole.enc.period_ns).series(pid)
    param = TANK.parameter(pid)
    assert param.limits is not None
    expected = reference(list(t), list(v), list(s), param.limits, param.type == "discrete")
    feed = Feed(TANK, TANK_BASE)
    got: list[AlarmEvent] = []
    for a, b in zip([0, *cuts], [*cuts, n], strict=True):
        if b > a:
            got += feed.send(b - a, **{pid: values[a:b]})
    assert [(e.transition.value, feed.frame_of(e.time_ns)) for e in got] == expected
    assert all(e.parameter == pid for e in got)


# --- the whole Apollo definition -----------------------------------------------------------


def test_nominal_apollo_batch_produces_no_events(apollo: Feed) -> None:
    assert apollo.send(4096) == []
    assert apollo.send(4096) == []
    assert apollo.engine.active()["alarms"] == []
    assert apollo.engine.snapshot()["tracks"] == {}  # nothing remembered either


# --- serialisation and restart -----------------------------------------------------------


def test_events_and_summary_serialise(mini: Feed) -> None:
    events = mini.send(3, hatch=["OPEN", "OPEN", "OPEN"], cabin_press=[YH, YH, YH])
    events.append(mini.engine.acknowledge("hatch", "eecom", mini.t(3)))
    for e in events:
        d = e.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert msgpack.unpackb(msgpack.packb(d)) == d
        assert isinstance(d["transition"], str) and type(d["transition"]) is str
    assert events[-1].to_dict()["operator"] == "eecom"
    summary = mini.engine.active()
    assert json.loads(json.dumps(summary)) == summary


def test_snapshot_restore_continues_a_streak(mini: Feed) -> None:
    other = Feed(mini.definition, MINI_BASE)
    for f in (mini, other):
        f.send(3, cabin_press=[5.0, 5.0, YH])
    # Restart `other`'s engine from a JSON round trip of its snapshot.
    snap = json.loads(json.dumps(other.engine.snapshot()))
    other.engine = AlarmEngine(mini.definition, "live")
    other.engine.restore(snap)
    a, b = mini.send(2, cabin_press=YH), other.send(2, cabin_press=YH)
    assert brief(mini, a) == brief(other, b) == [("raised", "cabin_press", 3, "yellow",
                                                 "high", "active_unacked")]
    assert [e.seq for e in a] == [e.seq for e in b]
    with pytest.raises(ValueError, match="live"):
        AlarmEngine(mini.definition, "replay-1").restore(snap)


# --- cost (reported, not asserted) -------------------------------------------------------


def _best_of(f: Any, n: int = 20) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def test_process_cost_is_reported(apollo_def: VehicleDefinition,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Run with -s to see the numbers; they are for the report, not a pass mark.
    enc = FrameEncoder(apollo_def)
    nominal = nominal_values(apollo_def)
    lines = []
    for n in (4096, 10):
        times = T0 + np.arange(n, dtype=np.int64) * enc.period_ns
        bad = {**nominal, "o2_flow": 1.2, "main_bus_a_volts": 25.5, "cabin_press": 5.6,
               "fc1_o2_flow": np.r_[np.full(n // 2, 0.5), np.full(n - n // 2, 1.4)]}
        dec = StreamDecoder(apollo_def)
        batches = {name: dec.decode(enc.encode(values, n), times)
                   for name, values in (("nominal", nominal), ("4 violating", bad))}
        frames = enc.encode(nominal, n)
        decode_s = _best_of(lambda d=dec, f=frames, tm=times: d.decode(f, tm), 5)
        for name, batch in batches.items():
            # First batch of a violation (fresh engines, built outside the timing), then
            # the steady state of the same violation continuing.
            fresh = iter([AlarmEngine(apollo_def) for _ in range(20)])
            first = _best_of(lambda b=batch, f=fresh: next(f).process(b), 20)
            steady_engine = AlarmEngine(apollo_def)
            events = steady_engine.process(batch)
            steady = _best_of(lambda b=batch, e=steady_engine: e.process(b), 20)
            lines.append(f"alarms: process() of a {n}-frame Apollo batch, {name}: first "
                         f"{first * 1e6:.0f} us, steady {steady * 1e6:.0f} us "
                         f"({len(events)} events; decode alone {decode_s * 1e3:.2f} ms)")
            if name == "nominal":
                assert events == []
            elif n == 4096:
                assert {e.parameter for e in events} == {
                    "o2_flow", "main_bus_a_volts", "cabin_press", "fc1_o2_flow"}
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_restore_under_changed_definitions_keeps_what_still_applies(
        mini: Feed, tmp_path: Path) -> None:
    mini.send(12, hatch=["OPEN"] * 2 + ["CLOSED"] * 10, cabin_press=[YH] * 2 + [5.0] * 10,
              temp=110.0)
    mini.engine.acknowledge("temp", "eecom", mini.t(12))
    assert {a["parameter"]: a["state"] for a in mini.engine.active()["alarms"]} == {
        "hatch": "normal_unacked", "cabin_press": "normal_unacked", "temp": "active_acked"}
    snap = json.loads(json.dumps(mini.engine.snapshot()))
    snap["tracks"]["gone"] = snap["tracks"]["range"] = dict(snap["tracks"]["hatch"])
    snap["tracks"]["cm_dm_dp"] = {"cond": "red", "listed": True}
    # New definitions: cabin pressure and temperature limits changed, hatch's did not.
    text = (DATA / "mini.yaml").read_text()
    text = text.replace("red: [4.6, 5.4]", "red: [4.6, 5.6]")
    text = text.replace("red: [null, 100]", "red: [null, 105]")
    (tmp_path / "mini.yaml").write_text(text)
    new = Feed(load_definition(tmp_path / "mini.yaml"), MINI_BASE)
    new.frame = mini.frame
    warnings = new.engine.restore(snap)
    assert len(warnings) == 5, warnings
    text = "\n".join(warnings)
    assert "gone: it is no longer in the definition" in text
    assert "range: it has no limits any more" in text
    assert "cm_dm_dp: malformed" in text
    assert "limits of cabin_press changed" in text and "still listed, unacknowledged" in text
    assert "limits of temp changed" in text and "its alarm state is dropped" in text
    # hatch as it was; cabin pressure still waits for its ack; temperature's acknowledged
    # alarm is gone, and is raised afresh under its new limit.
    summary = new.engine.active()
    assert {a["parameter"]: a["state"] for a in summary["alarms"]} == {
        "hatch": "normal_unacked", "cabin_press": "normal_unacked"}
    assert new.engine.snapshot()["seq"] == mini.engine.snapshot()["seq"]
    events = new.send(10, temp=110.0)
    assert [(e.transition.value, e.parameter, e.state.value) for e in events] == [
        ("raised", "temp", "active_unacked")]
    assert events[0].seq == mini.engine.snapshot()["seq"] + 1


def test_restore_refuses_a_malformed_snapshot_and_changes_nothing(mini: Feed) -> None:
    mini.send(2, hatch=["OPEN", "OPEN"])
    before = mini.engine.snapshot()
    good = json.loads(json.dumps(before))
    for bad in ([], {**good, "version": 99}, {**good, "seq": "7"}, {**good, "tracks": []},
                {**good, "vehicle": "soyuz"}):
        with pytest.raises(ValueError):
            mini.engine.restore(bad)  # type: ignore[arg-type]
        assert mini.engine.snapshot() == before
    # A version 1 snapshot (no limits fingerprints) is read as it stands.
    v1 = {**good, "version": 1,
          "tracks": {k: {f: x for f, x in t.items() if f != "limits"}
                     for k, t in good["tracks"].items()}}
    engine = AlarmEngine(mini.definition, "live")
    assert engine.restore(v1) == []
    assert engine.snapshot() == before
