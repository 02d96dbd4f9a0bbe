"""Where the project's data files are: the telemetry definitions, the drill scenarios, the
deployment files (Mosquitto's configuration and ACL) and the generated dashboards.

The one place that knows. In a checkout (and an editable install) they are the
repository's own top-level directories, so an edit shows at once; an installed wheel
carries copies under ``groundstation/_data/`` (pyproject.toml's build step puts them
there), found through importlib.resources. The checkout wins when both exist, so a
developer never runs against a stale copy.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
# What the wheel ships, by the name of its directory in the repository.
_SHIPPED = ("telemetry_defs", "dashboards", "deploy")


@cache
def _root(name: str) -> Path:
    if (_CHECKOUT / name).is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / name
    shipped = resources.files("groundstation") / "_data" / name
    if shipped.is_dir():
        return Path(str(shipped))
    raise FileNotFoundError(
        f"groundstation's {name}/ directory is missing: neither a checkout "
        f"({_CHECKOUT / name}) nor the installed package (groundstation/_data/{name}) has "
        "it; reinstall the package (pip install groundstation) or run from a checkout")


def defs_dir() -> Path:
    """telemetry_defs/: one YAML file per vehicle."""
    return _root("telemetry_defs")


def dashboards_dir() -> Path:
    """dashboards/: the generated Grafana dashboards and their provisioning."""
    return _root("dashboards")


def mosquitto_dir() -> Path:
    """deploy/mosquitto/: the broker's configuration and ACL."""
    return _root("deploy") / "mosquitto"


def scenarios_dir() -> Path:
    """The drill scenarios: part of the simulators package, so shipped with it."""
    return Path(str(resources.files("simulators") / "scenarios"))
