"""groundstation/paths.py: the checkout's data when this is the project's checkout, the
wheel's copies under groundstation/_data/ otherwise, never a mix. (The installed wheel
itself is run in tests/e2e/test_wheel.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from groundstation import paths
from tests.paths import REPO


@pytest.fixture
def fresh() -> Iterator[None]:
    """paths caches what it found; forget it before and after the test."""
    for f in (paths.data_root, paths._root, paths.scenarios_dir):
        f.cache_clear()
    yield
    for f in (paths.data_root, paths._root, paths.scenarios_dir):
        f.cache_clear()


def test_a_checkout_reads_its_own_directories() -> None:
    assert paths.data_root() == REPO
    assert paths.defs_dir() == REPO / "telemetry_defs"
    assert paths.dashboards_dir() == REPO / "dashboards"
    assert paths.mosquitto_dir() == REPO / "deploy" / "mosquitto"
    assert paths.scenarios_dir() == REPO / "simulators" / "scenarios"
    assert (paths.mosquitto_dir() / "acl").is_file()
    assert sorted(paths.scenarios_dir().glob("*.yaml"))


def test_only_this_projects_pyproject_makes_a_checkout(tmp_path: Path) -> None:
    assert paths.is_checkout(REPO)
    assert not paths.is_checkout(tmp_path)  # none
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n', encoding="utf-8")
    assert not paths.is_checkout(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\n", encoding="utf-8")
    assert not paths.is_checkout(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project\nname = ", encoding="utf-8")
    assert not paths.is_checkout(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "groundstation"\n',
                                             encoding="utf-8")
    assert paths.is_checkout(tmp_path)


def test_an_installed_package_reads_its_data_even_beside_stray_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None) -> None:
    # site-packages/ with another project's pyproject.toml and a stray telemetry_defs/
    # beside the installed package: neither is this project's checkout.
    site = tmp_path / "site-packages"
    package = site / "groundstation"
    for name in paths.SHIPPED:
        (package / "_data" / name).mkdir(parents=True)
    (site / "telemetry_defs").mkdir()
    (site / "pyproject.toml").write_text('[project]\nname = "other"\n', encoding="utf-8")
    monkeypatch.setattr(paths, "_PACKAGE", package)
    monkeypatch.setattr(paths, "_CHECKOUT", site)
    assert paths.data_root() == package / "_data"
    assert paths.defs_dir() == package / "_data" / "telemetry_defs"
    assert paths.dashboards_dir() == package / "_data" / "dashboards"
    assert paths.mosquitto_dir() == package / "_data" / "deploy" / "mosquitto"


def test_missing_data_says_where_it_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None) -> None:
    package = tmp_path / "site-packages" / "groundstation"
    package.mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE", package)
    monkeypatch.setattr(paths, "_CHECKOUT", package.parent)
    with pytest.raises(FileNotFoundError, match="telemetry_defs/ directory is missing from "
                       "the installed package") as exc:
        paths.defs_dir()
    assert str(package / "_data" / "telemetry_defs") in str(exc.value)
