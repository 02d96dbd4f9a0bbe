"""`groundstation sim` (simulators.cli): help that teaches, listings, argument errors, and a
short real run against a broker."""

from __future__ import annotations

import pytest

from groundstation import cli as gs
from groundstation.core import flightplan as tl
from simulators import cli
from simulators.mission import Mission


def test_help_shows_examples_and_topics(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        gs.main(["sim", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for text in ("groundstation sim both --speed 100", "--start docking-30m",
                 "sim/control/<vehicle>", "sim/reply/<vehicle>", "sim/state/<vehicle>",
                 '{"cmd": "inject"', "--frames-per-message", "--qos", "--backlog-frames",
                 "1975-07-15", "--seed", "--mqtt-host", "--mqtt-tls", "--mqtt-ca-file",
                 "GS_MQTT_PASSWORD", "--defs-dir", "--config"):
        assert text in out, text


def test_list_events_and_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert gs.main(["sim", "both", "--list-events"]) == 0
    out = capsys.readouterr().out
    assert "044:19:08  docking" in out and "-007:30:01  soyuz-launch" in out
    assert gs.main(["sim", "both", "--list-faults"]) == 0
    out = capsys.readouterr().out
    assert "o2_tank_heater  [system; apollo_csm]" in out and "rupture" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "tomorrow"], "neither a GET"),
    (["--start", "050:00:00", "--until", "049:00:00"], "is not after"),
    (["--speed", "0"], "--speed"),
    (["--fault", "apollo:cabin_leak:rate_lb_h=-3"], "below"),
    (["--fault", "mars:los"], "SHIP:FAULT"),
])
def test_argument_errors(capsys: pytest.CaptureFixture[str], args: list[str],
                         message: str) -> None:
    assert gs.main(["sim", "apollo", *args]) == 2
    assert message in capsys.readouterr().err


def test_fault_option() -> None:
    m = Mission(tl.hms(40), seed=1)
    f = cli._inject(m, "apollo:cabin_leak:rate_lb_h=5,at=docking+10m,ramp_s=2m")
    assert (f.vehicle, f.name, f.params) == (tl.APOLLO, "cabin_leak", {"rate_lb_h": 5.0})
    assert f.start == tl.DOCKING_1 + 600 and f.ramp_s == 120
    g = cli._inject(m, "apollo:o2_tank_heater:tank=2,rupture=true")
    assert g.params == {"tank": 2, "rate_psi_min": 60.0, "rupture": True}


def test_the_old_broker_flags_still_work_with_a_warning(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    # Nobody listens on port 1: the run ends on its own (--until), its frames unsent.
    code = gs.main(["sim", "apollo", "--host", "127.0.0.1", "--port", "1", "--start",
                    "050:00:00", "--until", "050:00:02", "--speed", "100"])
    assert code == 0
    captured = capsys.readouterr()
    assert "to mqtt://127.0.0.1:1" in captured.out
    assert "--host is deprecated: use --mqtt-host" in captured.err
