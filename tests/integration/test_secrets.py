"""Secrets (issue 14): the test passwords and token appear nowhere a person or a log
collector reads: not in `groundstation ingest --print-config`, not in the logs of a client
that logs in (verbose), not in the errors of a refused login or a bad configuration. They
come from the environment or from files (GS_*_FILE); `groundstation sim` takes them as
every other command does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from groundstation.deploy.servers import MosquittoServer
from tests.harness import ACL_USERS, secure_mosquitto

MQTT_PW = ACL_USERS["apollo_csm"]
WRONG_PW = "wr0ng-but-still-s3cret"
INFLUX_TOKEN = "infl-t0ken-s3cret-9f2"
SECRETS = (MQTT_PW, WRONG_PW, INFLUX_TOKEN)


def _run(*argv: str, env: dict[str, str], timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GS_")}
    return subprocess.run([sys.executable, "-m", "groundstation", *argv],
                          env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout)


def _nowhere(run: subprocess.CompletedProcess[str]) -> None:
    for secret in SECRETS:
        assert secret not in run.stdout and secret not in run.stderr, secret


def test_print_config_shows_no_secret(tmp_path: Path) -> None:
    token = tmp_path / "influx_token"
    token.write_text(INFLUX_TOKEN + "\n")
    run = _run("ingest", "--print-config",
               env={"GS_MQTT_PASSWORD": MQTT_PW, "GS_INFLUX_TOKEN_FILE": str(token)})
    assert run.returncode == 0, run.stderr
    _nowhere(run)
    assert '# password = "**********"' in run.stdout
    assert '# token = "**********"' in run.stdout
    assert f'token_file = "{token}"' in run.stdout


def test_logs_and_errors_of_a_login_show_no_secret(tmp_path: Path) -> None:
    with secure_mosquitto(tmp_path, ACL_USERS) as broker:
        password = tmp_path / "apollo_password"
        password.write_text(MQTT_PW)
        # Logged in from a file named in the environment, verbose: the logs say what it
        # does, never the password.
        ok = _sim(broker, {"GS_MQTT_USERNAME": "apollo_csm",
                           "GS_MQTT_PASSWORD_FILE": str(password)})
        assert ok.returncode == 0, ok.stderr
        assert "apollo_csm: 250 live" in ok.stdout
        _nowhere(ok)
        # Refused: the error names the user and where the password comes from, not it.
        refused = _sim(broker, {"GS_MQTT_USERNAME": "apollo_csm",
                                "GS_MQTT_PASSWORD": WRONG_PW})
        assert refused.returncode == 1
        assert "refused the connection" in refused.stderr and "apollo_csm" in refused.stderr
        assert "Traceback" not in refused.stderr
        _nowhere(refused)
        # The deprecated flag still works, with a warning that does not repeat it.
        flag = _sim(broker, {}, "--mqtt-username", "apollo_csm", "--password", WRONG_PW)
        assert flag.returncode == 1 and "--password is deprecated" in flag.stderr
        _nowhere(flag)


def test_configuration_errors_show_no_secret(tmp_path: Path) -> None:
    conf = tmp_path / "gs.toml"
    conf.write_text(f'[mqtt]\npassword = "{MQTT_PW}"\nport = 99999\n'
                    f'[influx]\ntoken = ["{INFLUX_TOKEN}"]\n')
    run = _run("ingest", "--config", str(conf), env={})
    assert run.returncode != 0 and "port" in run.stderr and "token" in run.stderr
    assert "Traceback" not in run.stderr
    _nowhere(run)
    both = _run("sim", "apollo", "--start", "050:00:00",
                env={"GS_MQTT_PASSWORD": MQTT_PW, "GS_MQTT_PASSWORD_FILE": str(conf)})
    assert both.returncode != 0 and "both give [mqtt] password" in both.stderr
    _nowhere(both)


def _sim(broker: MosquittoServer, env: dict[str, str], *flags: str
         ) -> subprocess.CompletedProcess[str]:
    return _run("-v", "sim", "apollo", "--mqtt-host", broker.host, "--mqtt-port",
                str(broker.port), "--start", "044:25:30", "--until", "044:25:35", "--speed",
                "20", *flags, env=env)
