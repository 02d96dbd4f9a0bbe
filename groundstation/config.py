"""Service configuration: one schema, three sources.

A value comes from the config file (TOML), then the environment (`GS_<SECTION>_<KEY>`),
then the command line (`--<section>-<key>`), each overriding the one before. The schema
below is the only list of options: the environment names, the flags and `--help` are all
generated from it, so they cannot disagree. A bad value is reported with where it came
from (file and key, variable, or flag) and what is allowed.

Secrets (passwords, tokens) are `SecretStr`: masked in `repr`, in `--print-config` and in
error messages, read with `get_secret_value()` only where they are handed to a client
library. Each secret `<key>` has a sibling `<key>_file` naming a file that holds it (so
`GS_MQTT_PASSWORD_FILE=/run/secrets/mqtt_password`, as compose secrets are mounted): the
two are one option with two spellings, so the later source wins whichever spelling it
uses, and one source setting both is an error. A secret never needs a command line, where
every user of the machine can read it (`ps`, `docker inspect`).
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from groundstation import paths
from groundstation.core import fleet as core_fleet

ENV_PREFIX = "GS_"
MASK = "**********"  # what a secret looks like wherever it is shown
MQTT_PORT, MQTTS_PORT = 1883, 8883


class ConfigError(ValueError):
    pass


def is_secret(model: type[BaseModel], key: str) -> bool:
    """Whether the option is a secret (a SecretStr), shown only masked."""
    field = model.model_fields.get(key)
    return field is not None and "SecretStr" in str(field.annotation)


def secret_file_of(model: type[BaseModel], key: str) -> str | None:
    """The secret a `<key>_file` option holds the file of, or None."""
    if key.endswith("_file") and is_secret(model, key.removesuffix("_file")):
        return key.removesuffix("_file")
    return None


def read_secret_file(path: Path) -> SecretStr:
    """A secret from a file (a compose secret, say): its text, less the final newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read the file {path}: {why}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"the file {path} is empty")
    return SecretStr(text)


def reveal(secret: SecretStr | str | None) -> str | None:
    """A secret's value, to hand to a client library (and nowhere else)."""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _secrets_from_files(self) -> _Section:
        # load() reads the files itself (to say where a bad one was named); this is for
        # a section made in code with only the file given.
        for key in type(self).model_fields:
            secret = secret_file_of(type(self), key)
            path = getattr(self, key)
            if secret is not None and path is not None and getattr(self, secret) is None:
                setattr(self, secret, read_secret_file(path))
        return self


def _secret_help(section: str, key: str, what: str) -> str:
    return (f"{what}: a secret, never printed; give it in {ENV_PREFIX}{section.upper()}_"
            f"{key.upper()} or in a file ({key}_file)")


def split_address(entry: str) -> tuple[str, int | None]:
    """"host:port", "host", "[v6]:port" or "[v6]" as (host, port or None); ValueError
    saying what is wrong."""
    text = entry.strip()
    if not text or "/" in text or any(c.isspace() for c in text):
        raise ValueError(f"broker {entry!r}: expected host:port (no scheme, no spaces)")
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"broker {entry!r}: expected [address]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"broker {entry!r}: an IPv6 address goes in brackets: "
                         "[address]:port")
    else:
        host = text
    if not host:
        raise ValueError(f"broker {entry!r}: no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"broker {entry!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


class MqttConfig(_Section):
    """How to reach the broker: every MQTT client of the station (groundstation.mqtt) takes
    this section as it is."""

    host: str = Field("127.0.0.1", description="broker host")
    hosts: list[str] = Field(
        default_factory=list,
        description="several brokers (a cluster's nodes), \"host:port\" each (the port "
                    "defaults to port), comma-separated in the environment and on the "
                    "command line: the client connects to the first that answers and moves "
                    "to the next on each failed attempt or lost connection; empty: host "
                    "and port")
    retain_on_all_hosts: bool = Field(
        False,
        description="publish every retained message (the ships' state, active alarms, link "
                    "quality, command history) to every broker of hosts, not only the one "
                    "connected to, and again to a broker whenever it comes back: RabbitMQ "
                    "3.10 keeps a retained message on the node it was published on only, so "
                    "a console on another node would not get the station's state, and a node "
                    "that was down would keep a stale one (one more connection to each other "
                    "node; nothing with one broker)")
    port: int = Field(MQTT_PORT, ge=1, le=65535,
                      description=f"broker port ({MQTTS_PORT} when tls is on and no port is "
                                  "given)")
    username: str | None = Field(None, description="user name the broker authenticates")
    password: SecretStr | None = Field(None, description=_secret_help("mqtt", "password",
                                                                      "password"))
    password_file: Path | None = Field(None, description="file holding the password (a "
                                                         "compose secret, say)")
    client_id: str = Field("groundstation-ingest", min_length=1,
                           description="client id: the ingest's is fixed, so the broker "
                                       "keeps its session and queued QoS 1 messages across "
                                       "restarts; the other commands make a unique one "
                                       "unless this is given")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive, seconds")
    reconnect_max_s: float = Field(10.0, gt=0, le=300,
                                   description="longest wait between reconnect attempts")
    tls: bool = Field(False, description="connect with TLS (the broker's TLS listener)")
    ca_file: Path | None = Field(None, description="CA certificate(s), PEM, that signed the "
                                                   "broker's certificate (default: the "
                                                   "system's trusted CAs)")
    cert_file: Path | None = Field(None, description="client certificate, PEM, for a broker "
                                                     "that asks for one (with key_file)")
    key_file: Path | None = Field(None, description="the client certificate's private key, "
                                                    "PEM (default: in cert_file)")
    key_password: SecretStr | None = Field(None, description=_secret_help(
        "mqtt", "key_password", "passphrase of an encrypted key_file"))
    key_password_file: Path | None = Field(None, description="file holding the key "
                                                             "passphrase")
    tls_verify: bool = Field(True, description="check the broker's certificate and that it "
                                               "names the host (off only to try something "
                                               "out: anyone in between can then read the "
                                               "password)")

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment and the command line: comma-separated
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        seen: set[tuple[str, int | None]] = set()
        for entry in value:
            address = split_address(entry)
            if address in seen:
                raise ValueError(f"broker {entry!r} is listed twice")
            seen.add(address)
        return value

    @property
    def brokers(self) -> list[tuple[str, int]]:
        """The brokers to connect to, in order: hosts (each with its port, or port), or
        host and port alone."""
        if not self.hosts:
            return [(self.host, self.port)]
        out = []
        for entry in self.hosts:
            host, port = split_address(entry)
            out.append((host, self.port if port is None else port))
        return out

    @property
    def where(self) -> str:
        """The broker, or the brokers, in words: "host:port", "one of h1:p1, h2:p2"."""
        text = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.brokers)
        return text if len(self.brokers) == 1 else f"one of {text}"

    @model_validator(mode="after")
    def _tls_settings(self) -> MqttConfig:
        if self.hosts and "host" in self.model_fields_set:
            raise ValueError(f"host {self.host!r} and hosts {','.join(self.hosts)!r} both "
                             "given: give host (one broker) or hosts (several), not both")
        if self.tls and "port" not in self.model_fields_set:
            self.port = MQTTS_PORT
        if not self.tls:
            given = [k for k in ("ca_file", "cert_file", "key_file", "key_password",
                                 "key_password_file") if getattr(self, k) is not None]
            if given or not self.tls_verify:
                what = ", ".join(given) or "tls_verify"
                raise ValueError(f"{what} given but tls is off: turn it on (tls = true, "
                                 f"{ENV_PREFIX}MQTT_TLS=true or --mqtt-tls), or the "
                                 "connection (and the password) goes in clear")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file given without cert_file")
        return self


class InfluxConfig(_Section):
    api: Literal["v1", "v2", "auto", "none"] = Field(
        "auto", description="InfluxDB HTTP API: v1 (/write, database), v2 (org, bucket, "
                            "token), auto (ask /ping), or none (no database: consoles, "
                            "alarms and the archive only, as the demo runs without InfluxDB)")
    url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    database: str = Field("groundstation", min_length=1, description="v1 database")
    retention_policy: str | None = Field(None, description="v1 retention policy")
    username: str | None = Field(None, description="v1 user")
    password: SecretStr | None = Field(None, description=_secret_help("influx", "password",
                                                                      "v1 password"))
    password_file: Path | None = Field(None, description="file holding the v1 password")
    org: str | None = Field(None, description="v2 organisation")
    bucket: str | None = Field(None, description="v2 bucket")
    token: SecretStr | None = Field(None, description=_secret_help("influx", "token",
                                                                   "v2 API token"))
    token_file: Path | None = Field(None, description="file holding the v2 API token")
    create_database: bool = Field(
        False, description="at start-up, create the v1 database (or the v2 bucket) if it "
                           "does not exist; off, the ingest refuses to start without it and "
                           "says what to run (a misspelt name is not created by mistake)")
    batch_lines: int = Field(20_000, ge=1, le=1_000_000,
                             description="lines per write request, at most")
    batch_max_mb: float = Field(8.0, gt=0, le=256,
                                description="uncompressed line protocol per write request, "
                                            "at most, MB (fewer, larger requests are what "
                                            "InfluxDB writes fastest)")
    queue_max_mb: float = Field(64.0, gt=0, description="line protocol waiting in memory "
                                                        "for the database, at most, MB; "
                                                        "beyond it the ingest waits")
    write_concurrency: int = Field(2, ge=1, le=16,
                                   description="write requests in flight (more keeps the "
                                               "database busy while the next body is "
                                               "compressed; order only matters for the "
                                               "spool, and rewrites are idempotent)")
    flush_interval_ms: int = Field(100, ge=1, le=60_000,
                                   description="longest a line waits before it is written")
    compress: Literal["auto", "on", "off"] = Field(
        "auto", description="gzip write requests: on, off, or auto: off when the URL's host "
                            "is this machine (localhost, a loopback address), where gzip "
                            "would only cost the ingest and InfluxDB CPU, on otherwise (off "
                            "suits a fast network too; on sends ~8x fewer bytes)")
    spool_dir: Path = Field(Path("var/spool"), description="where lines wait on disk "
                                                           "while InfluxDB is unreachable")
    spool_max_mb: float = Field(1024.0, gt=0, description="disk the spool may use, MB")


    def compress_writes(self) -> bool:
        """Whether write requests are gzip'd (`compress`, with auto resolved)."""
        if self.compress != "auto":
            return self.compress == "on"
        return not is_loopback_url(self.url)


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is this machine by name or address: localhost (and
    *.localhost), 127.0.0.0/8, ::1. A name that merely resolves here is not looked up."""
    import ipaddress
    import urllib.parse

    try:
        host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IngestConfig(_Section):
    defs_dir: Path = Field(default_factory=paths.defs_dir,
                           description="telemetry definitions directory (every command "
                                       "that reads them takes --defs-dir)",
                           json_schema_extra={"flag": "--defs-dir"})
    fleet: dict[str, int] = Field(
        default_factory=dict,
        description="more vehicles under the definitions of the ones defined: how many "
                    "members each base vehicle has, BASE=COUNT comma-separated in the "
                    "environment and on the command line (apollo_csm=4,soyuz=4 adds "
                    "apollo_csm-1..4 and soyuz-1..4, each its own vehicle id); every command "
                    "that reads the definitions takes --fleet",
        json_schema_extra={"flag": "--fleet"})
    archive_dir: Path = Field(Path("var/archive"), description="raw frame archive directory")
    alarm_state_dir: Path | None = Field(
        None, description="where the alarm state of live and training streams (latched, "
                          "acknowledged and shelved alarms, event seq) is kept across "
                          "restarts, as alarms.json (default: <archive_dir>/state)")
    batch_max_frames: int = Field(4096, ge=1, le=65536,
                                  description="frames of one stream decoded together, at most")
    batch_max_delay_ms: int = Field(5, ge=0, le=10_000,
                                    description="longest a frame waits for its batch to fill")
    queue_max_messages: int = Field(10_000, ge=1, description="received messages waiting to "
                                                              "be processed, at most")
    display_rate_hz: float = Field(2.0, gt=0, le=50, description="rate of processed "
                                                                 "parameters published for "
                                                                 "consoles")
    stats_interval_s: float = Field(1.0, gt=0, description="self-telemetry period")
    frame_time_min: datetime = Field(
        datetime(1975, 7, 1, tzinfo=UTC),
        description="frames stamped before this (UTC) are rejected as time_range: the start "
                    "of the sanity window, two weeks before the ASTP launches; set it earlier "
                    "to ingest older recordings")
    frame_time_max_ahead_s: float = Field(
        86_400.0, ge=0, description="frames stamped more than this many seconds ahead of "
                                    "the ingest's clock are rejected as time_range (the end "
                                    "of the window; never past 2262-04-11, the last time "
                                    "InfluxDB stores)")

    @field_validator("fleet", mode="before")
    @classmethod
    def _parse_fleet(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment and the command line
            return core_fleet.parse(value)
        return value

    @field_validator("fleet")
    @classmethod
    def _check_fleet(cls, value: dict[str, int]) -> dict[str, int]:
        return core_fleet.check(value)

    @field_validator("frame_time_min")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class CommandingConfig(_Section):
    """The commanding service (groundstation commanding serve)."""

    operators_file: Path = Field(default_factory=paths.operators_file,
                                 description="who may command from which positions (TOML)")
    commands_dir: Path | None = Field(None, description="command definitions directory "
                                                        "(default: <defs_dir>/commands)")
    history_dir: Path | None = Field(None, description="the archive root the command "
                                                       "history goes under, as "
                                                       "commands/<source>/commands.gsc "
                                                       "(default: [ingest] archive_dir)")
    spool_dir: Path = Field(Path("var/spool-commanding"),
                            description="where command events wait on disk while InfluxDB "
                                        "is unreachable (not the ingest's spool)")
    client_id: str = Field("groundstation-commanding", min_length=1,
                           description="MQTT client id of the commanding service")
    arm_timeout_s: float = Field(30.0, gt=0, le=3600, description="a hazardous command "
                                                                  "armed must be executed "
                                                                  "within this, seconds")
    ack_timeout_s: float = Field(15.0, gt=0, le=3600, description="the ship must answer "
                                                                  "within this, seconds")
    verify_grace_s: float = Field(30.0, gt=0, le=3600,
                                  description="wall seconds past a command's verification "
                                              "windows before it fails for want of "
                                              "telemetry")


class ClusterConfig(_Section):
    """A clustered station (docs/cluster.md): the ingest takes telemetry from its partitions'
    queues over AMQP, one active instance per partition, the others standing by. Empty
    amqp_hosts: the single ingest of the default setup (telemetry over MQTT)."""

    amqp_hosts: list[str] = Field(
        default_factory=list,
        description="the cluster's nodes for AMQP, \"host:port\" each (the port defaults to "
                    "amqp_port), comma-separated in the environment and on the command line; "
                    "empty: no cluster")
    amqp_port: int = Field(5672, ge=1, le=65535, description="AMQP port of a node listed "
                                                              "without one")
    username: str | None = Field(None, description="AMQP user (default: the [mqtt] "
                                                   "username)")
    password: SecretStr | None = Field(None, description=_secret_help(
        "cluster", "password", "AMQP password (default: the [mqtt] password)"))
    password_file: Path | None = Field(None, description="file holding the AMQP password")
    vhost: str = Field("/", min_length=1, description="the broker's virtual host (the MQTT "
                                                       "plugin's)")
    instance: str = Field(default_factory=lambda: socket.gethostname(), min_length=1,
                          description="this ingest instance's name, unique in the cluster "
                                      "(default: the host name)")
    partitions: int = Field(16, ge=1, le=100,
                            description="partitions the telemetry is divided into (by "
                                        "vehicle); the same on every instance")
    prefetch: int = Field(2000, ge=1, le=65535,
                          description="messages the broker sends ahead, per connection")
    tick_s: float = Field(1.0, gt=0, le=60,
                          description="how often each instance signs in on every partition "
                                      "(how the owners count the instances and share the "
                                      "partitions out)")
    reconnect_max_s: float = Field(10.0, gt=0, le=300,
                                   description="longest wait between reconnect attempts")

    @field_validator("amqp_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("amqp_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            split_address(entry)
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.amqp_hosts)

    @property
    def nodes(self) -> list[tuple[str, int]]:
        out = []
        for entry in self.amqp_hosts:
            host, port = split_address(entry)
            out.append((host, self.amqp_port if port is None else port))
        return out

    def with_credentials_of(self, mqtt: MqttConfig) -> ClusterConfig:
        """The AMQP login, the [mqtt] one where not given."""
        return self.model_copy(update={
            "username": self.username or mqtt.username,
            "password": self.password or mqtt.password})


class Config(_Section):
    mqtt: MqttConfig = MqttConfig()  # type: ignore[call-arg]
    influx: InfluxConfig = InfluxConfig()  # type: ignore[call-arg]
    ingest: IngestConfig = IngestConfig()  # type: ignore[call-arg]
    commanding: CommandingConfig = CommandingConfig()  # type: ignore[call-arg]
    cluster: ClusterConfig = ClusterConfig()  # type: ignore[call-arg]


SECTIONS: dict[str, type[_Section]] = {"mqtt": MqttConfig, "influx": InfluxConfig,
                                       "ingest": IngestConfig,
                                       "commanding": CommandingConfig,
                                       "cluster": ClusterConfig}


def load(file: Path | None = None, env: Mapping[str, str] | None = None,
         flags: Mapping[str, Any] | None = None, *,
         sections: Iterable[str] | None = None) -> Config:
    """The effective configuration: file, then environment, then flags (a command line's
    parsed values, `<section>__<key>` -> value; None means not given). With `sections`,
    only those are read (the others keep their defaults): a command that needs only the
    definitions directory is not stopped by a bad broker variable."""
    env = os.environ if env is None else env
    wanted = set(SECTIONS if sections is None else sections)
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = []
    if file is not None:
        layers.append((f"config file {file}", _from_file(file)))
    layers.append(("environment", _from_env(env)))
    if flags is not None:
        layers.append(("command line", _from_flags(flags)))
    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origin: dict[tuple[str, str], str] = {}
    for name, layer in layers:
        for section, values in layer.items():
            if section not in wanted:
                continue
            model = SECTIONS[section]
            for key, value in values.items():
                # A secret and its _file are one option: the later source wins, whichever
                # spelling it uses; one source giving both is an error.
                twin = _twin(model, key)
                if twin is not None and twin in merged[section]:
                    if origin[(section, twin)].startswith(_layer_prefix(name)):
                        raise ConfigError(
                            f"bad configuration:\n  {_describe(name, section, key)} and "
                            f"{origin[(section, twin)]} both give [{section}] "
                            f"{key.removesuffix('_file')}: give one")
                    del merged[section][twin]
                merged[section][key] = value
                origin[(section, key)] = _describe(name, section, key)
    for section, values in merged.items():
        model = SECTIONS[section]
        for key in list(values):
            secret = secret_file_of(model, key)
            if secret is not None:
                try:
                    values[secret] = read_secret_file(Path(values[key]))
                except ValueError as exc:
                    raise ConfigError(f"bad configuration:\n  {origin[(section, key)]}: "
                                      f"{exc}") from None
                origin[(section, secret)] = origin[(section, key)]
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(x) for x in err["loc"]]
            section, key = ([*loc, "", ""])[:2]
            where = origin.get((section, key), f"[{section}] {key}".strip())
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            if err["type"] == "extra_forbidden":
                known = ", ".join(SECTIONS[section].model_fields) if section in SECTIONS \
                    else ", ".join(SECTIONS)
                lines.append(f"{where}: unknown option; known: {known}")
            elif not key or isinstance(got, dict):
                lines.append(f"{where}: {msg}")  # the section's own rule: no one value
            else:
                masked = section in SECTIONS and is_secret(SECTIONS[section], key)
                lines.append(f"{where}: {msg} (got {MASK if masked else repr(got)})")
        raise ConfigError("bad configuration:\n  " + "\n  ".join(lines)) from None


def _twin(model: type[BaseModel], key: str) -> str | None:
    """The other spelling of a secret: password <-> password_file."""
    if secret_file_of(model, key) is not None:
        return key.removesuffix("_file")
    if is_secret(model, key):
        return f"{key}_file"
    return None


def _layer_prefix(layer: str) -> str:
    return {"environment": "environment", "command line": "--"}.get(layer, layer)


def flag_name(section: str, key: str) -> str:
    """The option's command-line flag: --<section>-<key>, unless the schema names another
    (the definitions directory is --defs-dir for every command)."""
    extra = SECTIONS[section].model_fields[key].json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
        return str(extra["flag"])
    return f"--{section}-{key.replace('_', '-')}"


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _describe(layer: str, section: str, key: str) -> str:
    if layer == "environment":
        return f"environment {env_name(section, key)}"
    if layer == "command line":
        return flag_name(section, key)
    return f"{layer}: [{section}] {key}"


def _from_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"config file {path}: unknown section [{unknown[0]}]; sections "
                          f"are {', '.join(f'[{s}]' for s in SECTIONS)}")
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"config file {path}: [{bad[0]}] must be a table of options")
    return {k: dict(v) for k, v in data.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section, model in SECTIONS.items():
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                if key in model.model_fields:
                    out.setdefault(section, {})[key] = value
                else:
                    raise ConfigError(
                        f"environment {name}: unknown option {key!r} for [{section}]; known: "
                        f"{', '.join(model.model_fields)}")
    return out


def _from_flags(flags: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dest, value in flags.items():
        if "__" in dest and value is not None:
            section, key = dest.split("__", 1)
            if section in SECTIONS:
                out.setdefault(section, {})[key] = value
    return out


def example_toml(config: Config | None = None) -> str:
    """A commented config file with every option at its value (commented out where unset).
    A secret is never written: a set one shows as a commented-out mask."""
    config = config or Config()
    lines = ["# groundstation configuration: every option (commented out where unset)."]
    for section, model in SECTIONS.items():
        lines.append(f"\n[{section}]")
        values = getattr(config, section)
        for key, field in model.model_fields.items():
            lines.append(f"# {field.description}")
            v = getattr(values, key)
            if is_secret(model, key):
                lines.append(f"# {key} =" if v is None else f'# {key} = "{MASK}"')
            elif isinstance(values, MqttConfig) and key == "host" and values.hosts:
                lines.append(f"# {key} = {_toml(v)}  (hosts below)")  # one or the other
            else:
                lines.append(f"# {key} =" if v is None else f"{key} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
