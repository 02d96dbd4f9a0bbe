"""Configuration: file, then environment, then flags; errors say where a bad value came from."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from groundstation.commands.options import add_config_arguments
from groundstation.config import (
    MASK,
    Config,
    ConfigError,
    MqttConfig,
    example_toml,
    flag_name,
    load,
    reveal,
)


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
            assert flag_name(section, key) in text
            assert f"GS_{section.upper()}_{key.upper()}" in text


# --- secrets ---------------------------------------------------------------------------

PW, TOKEN = "hunter2-mqtt-pw", "t0ken-influx-s3cret"


def test_secrets_are_masked_everywhere_they_could_show(tmp_path: Path) -> None:
    c = load(None, env={"GS_MQTT_PASSWORD": PW, "GS_INFLUX_TOKEN": TOKEN})
    assert reveal(c.mqtt.password) == PW and reveal(c.influx.token) == TOKEN
    for text in (repr(c), str(c), repr(c.mqtt), example_toml(c)):
        assert PW not in text and TOKEN not in text
    assert f'# password = "{MASK}"' in example_toml(c)
    # The printed file loads back (a masked secret is commented out, never written).
    f = tmp_path / "printed.toml"
    f.write_text(example_toml(c))
    assert load(f, env={}).mqtt.password is None
    # A bad secret value is reported without its value.
    f.write_text("[mqtt]\npassword = 12345678\n")
    with pytest.raises(ConfigError) as err:
        load(f, env={})
    assert "12345678" not in str(err.value) and MASK in str(err.value)


def test_a_secret_from_a_file_named_in_the_environment_file_or_flags(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt_password"
    secret.write_text(PW + "\n")  # as `echo` writes it: the newline is not the password's
    assert reveal(load(None, env={"GS_MQTT_PASSWORD_FILE": str(secret)}).mqtt.password) == PW
    token = tmp_path / "token"
    token.write_text(TOKEN)
    conf = tmp_path / "gs.toml"
    conf.write_text(f'[influx]\ntoken_file = "{token}"\n')
    assert reveal(load(conf, env={}).influx.token) == TOKEN
    assert reveal(load(None, env={}, flags=_flags("--mqtt-password-file", str(secret))
                       ).mqtt.password) == PW
    # In code, the file alone does as well.
    assert reveal(MqttConfig(password_file=secret).password) == PW  # type: ignore[call-arg]


def test_a_secret_and_its_file_are_one_option(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    conf = tmp_path / "gs.toml"
    conf.write_text('[mqtt]\npassword = "from-toml"\n')
    # The later source wins, whichever spelling it uses.
    c = load(conf, env={"GS_MQTT_PASSWORD_FILE": str(secret)})
    assert reveal(c.mqtt.password) == "from-file"
    conf.write_text(f'[mqtt]\npassword_file = "{secret}"\n')
    assert reveal(load(conf, env={"GS_MQTT_PASSWORD": PW}).mqtt.password) == PW
    # One source giving both is a mistake.
    with pytest.raises(ConfigError, match=r"GS_MQTT_PASSWORD.* both give \[mqtt\] password"):
        load(None, env={"GS_MQTT_PASSWORD": PW, "GS_MQTT_PASSWORD_FILE": str(secret)})


def test_an_unreadable_secret_file_names_where_it_was_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment GS_INFLUX_TOKEN_FILE: cannot read "
                                          r"the file .*absent: No such file"):
        load(None, env={"GS_INFLUX_TOKEN_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"--mqtt-password-file: the file .*empty is empty"):
        load(None, env={}, flags=_flags("--mqtt-password-file", str(tmp_path / "empty")))


def test_a_secret_flag_still_works_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    from groundstation.commands.options import load_config

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    c = load_config(parser.parse_args(["--mqtt-password", PW]))
    assert reveal(c.mqtt.password) == PW
    err = capsys.readouterr().err
    assert "--mqtt-password: deprecated" in err and "GS_MQTT_PASSWORD" in err and PW not in err


# --- TLS ---------------------------------------------------------------------------------

def test_tls_settings(tmp_path: Path) -> None:
    c = load(None, env={"GS_MQTT_TLS": "true", "GS_MQTT_CA_FILE": "/etc/ca.pem"})
    assert c.mqtt.tls and c.mqtt.port == 8883 and c.mqtt.tls_verify
    assert load(None, env={"GS_MQTT_TLS": "1", "GS_MQTT_PORT": "18883"}).mqtt.port == 18883
    assert load(None, env={}, flags=_flags("--mqtt-tls", "--no-mqtt-tls-verify")
                ).mqtt.tls_verify is False
    # TLS files without TLS would send the password in clear: refused.
    with pytest.raises(ConfigError, match=r"\[mqtt\]: ca_file given but tls is off"):
        load(None, env={"GS_MQTT_CA_FILE": "/etc/ca.pem"})
    with pytest.raises(ConfigError, match="key_file given without cert_file"):
        load(None, env={"GS_MQTT_TLS": "on", "GS_MQTT_KEY_FILE": "/k.pem"})


def test_one_spelling_of_the_definitions_directory(tmp_path: Path) -> None:
    assert load(None, env={}, flags=_flags("--defs-dir", str(tmp_path))).ingest.defs_dir \
        == tmp_path
    assert load(None, env={"GS_INGEST_DEFS_DIR": str(tmp_path)}).ingest.defs_dir == tmp_path
    # The old spelling still works, out of --help.
    assert load(None, env={}, flags=_flags("--ingest-defs-dir", str(tmp_path))
                ).ingest.defs_dir == tmp_path
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert "--ingest-defs-dir" not in parser.format_help()


def test_sections_limits_what_is_read() -> None:
    env = {"GS_MQTT_PORT": "not-a-port", "GS_INGEST_DEFS_DIR": "/defs"}
    assert str(load(None, env=env, sections=["ingest"]).ingest.defs_dir) == "/defs"
    with pytest.raises(ConfigError):
        load(None, env=env)


def test_compression_of_writes_auto_is_off_for_this_machine_only() -> None:
    def compress(url: str, setting: str = "auto") -> bool:
        env = {"GS_INFLUX_URL": url, "GS_INFLUX_COMPRESS": setting}
        return load(None, env=env).influx.compress_writes()

    assert load(None, env={}).influx.compress == "auto"
    for here in ("http://127.0.0.1:8086", "http://localhost:8086", "https://[::1]:8086",
                 "http://127.0.1.1", "http://LOCALHOST.:8086/influx", "http://db.localhost"):
        assert not compress(here), here
    for away in ("http://influxdb:8086", "https://db.example.org", "http://10.0.0.7:8086",
                 "http://[2001:db8::1]:8086", "http://localhost.example:8086"):
        assert compress(away), away
    assert compress("http://127.0.0.1:8086", "on")
    assert not compress("http://influxdb:8086", "off")
    with pytest.raises(ConfigError, match="GS_INFLUX_COMPRESS"):
        load(None, env={"GS_INFLUX_COMPRESS": "yes"})


# --- several brokers (a cluster) ---------------------------------------------------------


def test_hosts_from_file_environment_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "gs.toml"
    f.write_text('[mqtt]\nhosts = ["n1:1883", "n2:1884"]\n')
    assert load(f, env={}).mqtt.brokers == [("n1", 1883), ("n2", 1884)]
    env = {"GS_MQTT_HOSTS": "n1:1883, n2 ,[::1]:1885"}
    assert load(None, env=env).mqtt.brokers == [("n1", 1883), ("n2", 1883), ("::1", 1885)]
    flags = _flags("--mqtt-hosts", "a:1,b:2", "--mqtt-port", "1999")
    assert load(None, env={}, flags=flags).mqtt.brokers == [("a", 1), ("b", 2)]
    # An entry without a port takes port (8883 with TLS).
    tls = load(None, env={"GS_MQTT_HOSTS": "a,b:1", "GS_MQTT_TLS": "true"}).mqtt
    assert tls.brokers == [("a", 8883), ("b", 1)]
    # None given: host and port, as ever.
    assert load(None, env={}).mqtt.brokers == [("127.0.0.1", 1883)]
    assert MqttConfig(host="h", port=2).brokers == [("h", 2)]  # type: ignore[call-arg]
    assert MqttConfig(host="h", port=2).where == "h:2"  # type: ignore[call-arg]
    assert load(None, env=env).mqtt.where == "one of n1:1883, n2:1883, [::1]:1885"


@pytest.mark.parametrize(("value", "expected"), [
    ("n1:0", "the port must be a number from 1 to 65535"),
    ("n1:x", "the port must be a number"),
    ("mqtt://n1:1883", "no scheme"),
    ("::1:1883", "IPv6 address goes in brackets"),
    (":1883", "no host"),
    ("n1:1,n1:1", "listed twice"),
])
def test_bad_hosts_say_which_and_why(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="environment GS_MQTT_HOSTS") as err:
        load(None, env={"GS_MQTT_HOSTS": value})
    assert expected in str(err.value)


def test_host_and_hosts_are_not_both_given() -> None:
    with pytest.raises(ConfigError, match=r"give host \(one broker\) or hosts \(several\), "
                                          "not both"):
        load(None, env={"GS_MQTT_HOSTS": "a:1,b:2", "GS_MQTT_HOST": "c"})


def test_hosts_in_the_example_file(tmp_path: Path) -> None:
    text = example_toml(Config(mqtt=MqttConfig(hosts=["a:1", "b:2"])))  # type: ignore[call-arg]
    assert 'hosts = ["a:1", "b:2"]' in text
    f = tmp_path / "example.toml"
    f.write_text(text)
    assert load(f, env={}).mqtt.brokers == [("a", 1), ("b", 2)]


def test_retain_on_all_hosts_from_file_environment_and_flags(tmp_path: Path) -> None:
    assert load(None, env={}).mqtt.retain_on_all_hosts is False
    f = tmp_path / "gs.toml"
    f.write_text('[mqtt]\nhosts = ["n1:1883", "n2:1884"]\nretain_on_all_hosts = true\n')
    assert load(f, env={}).mqtt.retain_on_all_hosts is True
    env = {"GS_MQTT_RETAIN_ON_ALL_HOSTS": "false"}
    assert load(f, env=env).mqtt.retain_on_all_hosts is False
    assert load(f, env=env, flags=_flags("--mqtt-retain-on-all-hosts")
                ).mqtt.retain_on_all_hosts is True
    assert load(f, env={}, flags=_flags("--no-mqtt-retain-on-all-hosts")
                ).mqtt.retain_on_all_hosts is False
    # One broker: accepted (the same file serves a single broker and a cluster).
    one = load(None, env={"GS_MQTT_RETAIN_ON_ALL_HOSTS": "true", "GS_MQTT_HOST": "b"}).mqtt
    assert one.retain_on_all_hosts and one.brokers == [("b", 1883)]


def test_a_bad_retain_on_all_hosts_says_where_and_what(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env={"GS_MQTT_RETAIN_ON_ALL_HOSTS": "everywhere"})
    assert "environment GS_MQTT_RETAIN_ON_ALL_HOSTS: Input should be a valid boolean" \
        in str(err.value)
    assert "(got 'everywhere')" in str(err.value)
    f = tmp_path / "gs.toml"
    f.write_text('[mqtt]\nretain_on_all_hosts = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"\[mqtt\] retain_on_all_hosts: Input should be a "
                                          "valid boolean"):
        load(f, env={})
    text = example_toml(Config(mqtt=MqttConfig(hosts=["a:1", "b:2"],  # type: ignore[call-arg]
                                               retain_on_all_hosts=True)))
    assert "retain_on_all_hosts = true" in text
    assert "RabbitMQ 3.10 keeps a retained message on the node it was published on" in text
