"""`groundstation commanding`: its teaching help, the command list, the checks, and the
configuration section it adds."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundstation.cli import main
from groundstation.config import load


def test_help_teaches_the_command_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["commanding", "--help"])
    out = capsys.readouterr().out
    for text in ("cmd/request/<user>/<vehicle>", "operators file", "arm", "verified",
                 "cmd/uplink/<source>/<vehicle>", "crew_acknowledged", "examples:",
                 "groundstation commanding send apollo_csm crew_alert"):
        assert text in out, text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "commanding" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["commanding", "serve", "--help"])
    out = capsys.readouterr().out
    assert "--commanding-operators-file" in out and "--commanding-arm-timeout-s" in out


def test_list_and_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["commanding", "list", "apollo_csm", "--position", "INCO"]) == 0
    out = capsys.readouterr().out
    assert "crew_alert" in out and "sce_to_aux" in out and "fuel_cell_reset" not in out
    assert main(["commanding", "list", "soyuz"]) == 0
    assert "close_hatch_sa_bo" in capsys.readouterr().out
    assert main(["commanding", "list", "vostok"]) == 1
    assert "no commands for 'vostok'" in capsys.readouterr().err
    assert main(["commanding", "check"]) == 0
    out = capsys.readouterr().out
    assert "apollo_csm, 10 commands (9 procedures, 3 hazardous)" in out
    assert "operators.toml: 10 operators" in out
    bad = tmp_path / "ops.toml"
    bad.write_text('[operators]\nsoyuz = ["EECOM"]\n')
    assert main(["commanding", "check", "--operators", str(bad)]) == 1
    assert "soyuz is a vehicle or a service account" in capsys.readouterr().err
    broken = tmp_path / "apollo_csm.yaml"
    broken.write_text("schema: 1\nvehicle: apollo_csm\ncommands: []\n")
    assert main(["commanding", "check", str(broken)]) == 1
    assert "commands: List should have at least 1 item" in capsys.readouterr().err


def test_the_configuration_section() -> None:
    c = load(env={"GS_COMMANDING_ARM_TIMEOUT_S": "12"},
             flags={"commanding__ack_timeout_s": "7"})
    assert c.commanding.arm_timeout_s == 12 and c.commanding.ack_timeout_s == 7
    assert c.commanding.operators_file.name == "operators.toml"
    assert c.commanding.client_id != c.mqtt.client_id  # never the ingest's session
