"""A nominal ship raises no alarm: every frame of at least an orbit of each mission phase
(or the whole phase where it is shorter), decoded by the real decoder with the limit
context of its phase, is inside every limit; and no caution-and-warning light comes on.
Apollo's frames are in the format its PCM is in: the flight plan's low bit rate through the
first night is flown into and out of (tl.APOLLO_LBR), each format decoded with its own
definition.

Whole-mission flights (about a minute of CPU): here rather than in tests/unit, the inner
loop.

The definitions are telemetry_defs/ as committed; the windows are flown in two worker
processes.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from simulators.checks import nominal_window
from simulators.mission import Mission
from simulators.orbit import PERIOD_S

A, S = tl.APOLLO, tl.SOYUZ
ORBIT = PERIOD_S + 10.0
WINDOWS: list[tuple[float, float, tuple[str, ...], int]] = [
    (tl.hms(-9), tl.SOYUZ_ORBIT + 60, (S,), 1),  # Soyuz on the pad, launch, insertion
    (tl.hms(-1, 30), tl.APOLLO_ORBIT + 300, (A, S), 2),  # Apollo pad and launch
    (tl.hms(30), tl.hms(30) + ORBIT, (A, S), 3),  # free flight, day two
    (tl.RENDEZVOUS, tl.RENDEZVOUS + ORBIT, (A, S), 4),
    (tl.DM_CYCLES[0].start, tl.DM_CYCLES[0].start + ORBIT, (A, S), 5),  # transfer 1
    (tl.hms(55), tl.hms(55) + ORBIT, (A, S), 6),  # docked, between transfers
    (tl.UNDOCKING_2, tl.UNDOCKING_2 + ORBIT, (A, S), 7),  # station keeping
    (tl.SOYUZ_DEORBIT, tl.SOYUZ_LANDING, (S,), 8),  # Soyuz entry, to landing
    (tl.APOLLO_DEORBIT, tl.SPLASHDOWN, (A,), 9),  # Apollo entry, to splashdown
    (tl.APOLLO_LBR[0][0] - 600, tl.APOLLO_LBR[0][0] + ORBIT, (A,), 10),  # into LBR
    (tl.APOLLO_LBR[0][1] - ORBIT, tl.APOLLO_LBR[0][1] + 600, (A, S), 11),  # out of LBR
]
PHASE_LENGTH = {(A, "ascent"): tl.APOLLO_ORBIT, (S, "ascent"): tl.SOYUZ_ORBIT - tl.SOYUZ_LAUNCH,
                (A, "entry"): tl.SPLASHDOWN - tl.APOLLO_DEORBIT,
                (S, "entry"): tl.SOYUZ_LANDING - tl.SOYUZ_DEORBIT}
CASES = [(v, p) for v in (A, S) for p in tl.PHASES]


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture(scope="module")
def flights() -> dict[str, Any]:
    load_all()  # once, before the workers are forked from this process
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        results = list(pool.map(nominal_window, WINDOWS))
    seconds: dict[tuple[str, str], float] = {}
    violations: dict[tuple[str, str], dict[str, Any]] = {}
    frames: dict[tuple[str, str], int] = {}
    bad = 0
    for res in results:
        for v, r in res.items():
            bad += r["bad_frames"]
            for stream, n in r["frames_by_stream"].items():
                frames[(v, stream)] = frames.get((v, stream), 0) + n
            for phase, sec in r["seconds"].items():
                seconds[(v, phase)] = seconds.get((v, phase), 0.0) + sec
            for pid, x in r["violations"].items():
                violations.setdefault((v, x[3]), {})[pid] = x
    print(f"\nnominal mission: {sum(seconds.values()) / 3600:.1f} h of ship time flown, "
          + ", ".join(f"{v}/{st} {n:,} frames" for (v, st), n in sorted(frames.items())))
    return {"seconds": seconds, "violations": violations, "bad_frames": bad,
            "frames": frames}


@pytest.mark.parametrize(("vehicle", "phase"), CASES)
def test_a_nominal_ship_stays_inside_every_limit(flights: dict[str, Any], vehicle: str,
                                                 phase: str) -> None:
    flown = flights["seconds"].get((vehicle, phase), 0.0)
    need = min(PERIOD_S, PHASE_LENGTH.get((vehicle, phase), PERIOD_S))
    assert flown >= need - 1, f"only {flown:.0f} s of {vehicle} in {phase} were checked"
    assert flights["violations"].get((vehicle, phase), {}) == {}


def test_both_formats_were_flown(flights: dict[str, Any]) -> None:
    """Apollo's LBR stretches: the night's first orbit and its last, at 5 frames/s (the
    rest of the windows in HBR)."""
    assert abs(flights["frames"][(A, "lbr")] - 2 * ORBIT * 5) <= 2
    assert flights["frames"][(A, "hbr")] > 0


def test_every_frame_decoded(flights: dict[str, Any]) -> None:
    assert flights["bad_frames"] == 0
    assert flights["violations"] == {}


def test_a_nominal_flight_lights_nothing(defs: dict[str, VehicleDefinition]) -> None:
    """The new lights are dark in a nominal flight: a day in orbit, the joint flight and the
    entry, 1 s steps (beside the whole-mission limit check above)."""
    for start, seconds in ((tl.hms(30), 5400), (tl.DOCKING_1 - 600, 5400),
                           (tl.DM_CYCLES[0].start, 3600), (tl.APOLLO_DEORBIT - 60, 2500)):
        m = Mission(start, seed=5, definitions=defs, historical=False)
        seen: set[str] = set()
        while m.t < start + seconds and m.t < tl.SPLASHDOWN - 1:
            m.advance_to(m.t + 1)
            seen |= m.apollo.cw
        assert seen == set(), (start, seen)
