"""Service configuration: one schema, three sources.

A value comes from the config file (TOML), then the environment (`GS_<SECTION>_<KEY>`),
then the command line (`--<section>-<key>`), each overriding the one before. The schema
below is the only list of options: the environment names, the flags and `--help` are all
generated from it, so they cannot disagree. A bad value is reported with where it came
from (file and key, variable, or flag) and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from groundstation import paths

ENV_PREFIX = "GS_"


class ConfigError(ValueError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Section):
    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    username: str | None = Field(None, description="user name the broker authenticates")
    password: str | None = Field(None, description="password (prefer the environment: "
                                                   "GS_MQTT_PASSWORD)")
    client_id: str = Field("groundstation-ingest", min_length=1,
                           description="client id; fixed, so the broker keeps the session "
                                       "and queued QoS 1 messages across restarts")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive, seconds")
    reconnect_max_s: float = Field(10.0, gt=0, le=300,
                                   description="longest wait between reconnect attempts")


class InfluxConfig(_Section):
    api: Literal["v1", "v2", "auto", "none"] = Field(
        "auto", description="InfluxDB HTTP API: v1 (/write, database), v2 (org, bucket, "
                            "token), auto (ask /ping), or none (no database: consoles, "
                            "alarms and the archive only, as the demo runs without InfluxDB)")
    url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    database: str = Field("groundstation", min_length=1, description="v1 database")
    retention_policy: str | None = Field(None, description="v1 retention policy")
    username: str | None = Field(None, description="v1 user")
    password: str | None = Field(None, description="v1 password")
    org: str | None = Field(None, description="v2 organisation")
    bucket: str | None = Field(None, description="v2 bucket")
    token: str | None = Field(None, description="v2 API token (prefer the environment: "
                                                "GS_INFLUX_TOKEN)")
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
    spool_dir: Path = Field(Path("var/spool"), description="where lines wait on disk "
                                                           "while InfluxDB is unreachable")
    spool_max_mb: float = Field(1024.0, gt=0, description="disk the spool may use, MB")


class IngestConfig(_Section):
    defs_dir: Path = Field(default_factory=paths.defs_dir,
                           description="telemetry definitions directory")
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


class Config(_Section):
    mqtt: MqttConfig = MqttConfig()  # type: ignore[call-arg]
    influx: InfluxConfig = InfluxConfig()  # type: ignore[call-arg]
    ingest: IngestConfig = IngestConfig()  # type: ignore[call-arg]
    commanding: CommandingConfig = CommandingConfig()  # type: ignore[call-arg]


SECTIONS: dict[str, type[_Section]] = {"mqtt": MqttConfig, "influx": InfluxConfig,
                                       "ingest": IngestConfig,
                                       "commanding": CommandingConfig}


def load(file: Path | None = None, env: Mapping[str, str] | None = None,
         flags: Mapping[str, Any] | None = None) -> Config:
    """The effective configuration: file, then environment, then flags (a command line's
    parsed values, `<section>__<key>` -> value; None means not given)."""
    env = os.environ if env is None else env
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
            for key, value in values.items():
                merged[section][key] = value
                origin[(section, key)] = _describe(name, section, key)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(x) for x in err["loc"]]
            section, key = ([*loc, "", ""])[:2]
            where = origin.get((section, key), f"[{section}] {key}")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                known = ", ".join(SECTIONS[section].model_fields) if section in SECTIONS \
                    else ", ".join(SECTIONS)
                msg = f"unknown option; known: {known}"
            lines.append(f"{where}: {msg} (got {err.get('input')!r})")
        raise ConfigError("bad configuration:\n  " + "\n  ".join(lines)) from None


def _describe(layer: str, section: str, key: str) -> str:
    if layer == "environment":
        return f"environment {ENV_PREFIX}{section.upper()}_{key.upper()}"
    if layer == "command line":
        return f"--{section}-{key.replace('_', '-')}"
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
    """A commented config file with every option at its default."""
    config = config or Config()
    lines = ["# groundstation ingest configuration: every option (commented out where unset)."]
    for section, model in SECTIONS.items():
        lines.append(f"\n[{section}]")
        values = getattr(config, section)
        for key, field in model.model_fields.items():
            lines.append(f"# {field.description}")
            v = getattr(values, key)
            lines.append(f"# {key} =" if v is None else f"{key} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

