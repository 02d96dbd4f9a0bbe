"""Configuration: file, then environment, then flags; errors say where a bad value came from."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from groundstation.commands.options import add_config_arguments
from groundstation.config import Config, ConfigError, example_toml, load


def _flags(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return vars(parser.parse_args(list(argv)))


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "gs.toml"
    f.write_text('[mqtt]\nport = 1884\nhost = "file-host"\n[influx]\nbatch_lines = 100\n'
                 '[ingest]\ndisplay_rate_hz = 4.0\n')
    env = {"GS_MQTT_HOST": "env-host", "GS_INFLUX_BATCH_LINES": "200", "HOME": "/root"}
    c = load(f, env=env, flags=_flags("--influx-batch-lines", "300"))
    assert c.mqtt.port == 1884  # file only
    assert c.mqtt.host == "env-host"  # environment over file
    assert c.influx.batch_lines == 300  # flag over environment
    assert c.ingest.display_rate_hz == 4.0
    assert c.influx.url == Config().influx.url  # untouched default


@pytest.mark.parametrize(("source", "expected"), [
    ("file", r"config file .*gs\.toml: \[mqtt\] port: .*less than or equal to 65535"),
    ("env", r"environment GS_MQTT_PORT: .*less than or equal to 65535"),
    ("flag", r"--mqtt-port: .*less than or equal to 65535"),
])
def test_a_bad_value_names_where_it_came_from(tmp_path: Path, source: str, expected: str
                                              ) -> None:
    f = tmp_path / "gs.toml"
    f.write_text("[mqtt]\nport = 99999\n" if source == "file" else "")
    env = {"GS_MQTT_PORT": "99999"} if source == "env" else {}
    flags = _flags("--mqtt-port", "99999") if source == "flag" else _flags()
    with pytest.raises(ConfigError, match=expected):
        load(f, env=env, flags=flags)


def test_unknown_options_are_errors_not_ignored(tmp_path: Path) -> None:
    f = tmp_path / "gs.toml"
    f.write_text("[influx]\nbatchlines = 5\n")
    with pytest.raises(ConfigError, match=r"\[influx\] batchlines: unknown option; known: "
                                          r"api, url"):
        load(f, env={})
    f.write_text("[influxdb]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[influxdb\]"):
        load(f, env={})
    with pytest.raises(ConfigError, match="GS_INGEST_BATCH: unknown option 'batch'"):
        load(None, env={"GS_INGEST_BATCH": "3"})


def test_bad_toml_and_missing_file_say_so(tmp_path: Path) -> None:
    f = tmp_path / "gs.toml"
    f.write_text("[mqtt\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(f, env={})
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path / "absent.toml", env={})


def test_the_example_file_loads_back_to_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "example.toml"
    f.write_text(example_toml())
    assert load(f, env={}) == Config()


def test_every_option_has_a_flag_and_help() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = parser.format_help()
    for section, model in (("mqtt", Config().mqtt), ("influx", Config().influx),
                           ("ingest", Config().ingest)):
        for key in type(model).model_fields:
            assert f"--{section}-{key.replace('_', '-')}" in text
            assert f"GS_{section.upper()}_{key.upper()}" in text
