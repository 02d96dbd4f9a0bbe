"""`groundstation sim` (simulators.cli): help that teaches, listings, argument errors, and a
short real run against a broker."""

from __future__ import annotations

import pytest

from groundstation import cli
from groundstation.deploy.servers import MosquittoServer


def test_a_short_run(mosquitto: MosquittoServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sim", "both", "--mqtt-host", mosquitto.host,
                     "--mqtt-port", str(mosquitto.port), "--start", "soyuz-launch-2m",
                     "--until", "soyuz-launch+1m", "--speed", "120"])
    assert code == 0
    out = capsys.readouterr().out
    assert "flying apollo_csm, soyuz from -007:32:01 at 120x" in out
    assert "soyuz: 1800 live and 0 playback frames" in out  # Baikonur hears it throughout
    assert "stopped at -007:29:0" in out
