"""The simulator on a real Mosquitto: control requests and their replies, surviving a broker
restart without losing frames, and Apollo's playback dump arriving over the broker."""

from __future__ import annotations

import pytest

from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from simulators import control
from simulators.mission import Mission

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_pause_needs_a_runner(defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    reply = control.handle(m, A, b'{"cmd": "pause", "id": 4}')
    assert reply == {"ok": False, "request": 4,
                     "error": "pause: this simulator has no clock to pause (no runner)"}
