"""Where the project's data files are: the telemetry definitions, the drill scenarios, the
deployment files (Mosquitto's configuration and ACL) and the generated dashboards.

The one place that knows. Where this package was imported from decides:

- from a checkout (or an editable install, which imports from the checkout), they are the
  repository's own top-level directories, so an edit shows at once;
- from an installed wheel, they are the copies the wheel carries in ``groundstation/_data/``
  (pyproject.toml's ``[tool.hatch.build.targets.wheel.sources]`` puts them there).

A checkout is recognised by its pyproject.toml naming this project beside the package, not
by a directory name, so a wheel installed where a stray ``telemetry_defs/`` or another
project's pyproject.toml happens to lie still uses its own copies. Never a mix of the two.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path

PROJECT = "groundstation"
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
# What the wheel ships under groundstation/_data/, by the name of its directory in the
# repository (pyproject.toml maps each one).
SHIPPED = ("telemetry_defs", "dashboards", "deploy")


def is_checkout(root: Path) -> bool:
    """Whether root is this project's source tree: a pyproject.toml naming the project."""
    try:
        with (root / "pyproject.toml").open("rb") as f:
            project = tomllib.load(f).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(project, dict) and project.get("name") == PROJECT


@cache
def data_root() -> Path:
    """The directory holding telemetry_defs/, dashboards/ and deploy/: the checkout, or
    groundstation/_data/ of the installed package."""
    return _CHECKOUT if is_checkout(_CHECKOUT) else _PACKAGE / "_data"


@cache
def _root(name: str) -> Path:
    path = data_root() / name
    if path.is_dir():
        return path
    where = ("the checkout" if data_root() == _CHECKOUT else
             "the installed package (built without its data?)")
    raise FileNotFoundError(
        f"groundstation's {name}/ directory is missing from {where}: {path}; "
        "reinstall the package (pip install groundstation) or restore the checkout")


def defs_dir() -> Path:
    """telemetry_defs/: one YAML file per vehicle."""
    return _root("telemetry_defs")


def dashboards_dir() -> Path:
    """dashboards/: the generated Grafana dashboards and their provisioning."""
    return _root("dashboards")


def mosquitto_dir() -> Path:
    """deploy/mosquitto/: the broker's configuration and ACL."""
    return _root("deploy") / "mosquitto"


def operators_file() -> Path:
    """deploy/commanding/operators.toml: who may command from which positions."""
    return _root("deploy") / "commanding" / "operators.toml"


@cache
def scenarios_dir() -> Path:
    """The drill scenarios: part of the simulators package (non-Python files that the
    wheel carries with it), so found wherever that package was imported from."""
    path = Path(str(resources.files("simulators") / "scenarios"))
    if not path.is_dir():
        raise FileNotFoundError(
            f"the drill scenarios are missing: {path}; reinstall the package "
            "(pip install groundstation) or restore the checkout")
    return path
