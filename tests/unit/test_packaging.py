"""The image installs the package as any user does (tests/e2e/test_wheel.py runs such an
install); no Docker engine here, so the Dockerfile's shape and its one inline script are
checked on their own."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.paths import REPO

DOCKERFILE = REPO / "Dockerfile"
CONSTRAINED = r"(?:-c constraints\.txt )?"


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [(m[1], m[2]) for m in re.finditer(r"^([A-Z]+) (.*)$", text, re.M)]


def test_the_image_installs_the_package_not_an_editable_checkout() -> None:
    steps = instructions()
    runs = [args for kind, args in steps if kind == "RUN"]
    assert not [r for r in runs if re.search(r"pip install\b.*(\s-e\b|--editable)", r)]
    (install,) = [r for r in runs if re.search(rf"pip install {CONSTRAINED}\.(\s|$)", r)]
    # The source is removed before the check, so the check reads the installed copies.
    assert re.search(rf"pip install {CONSTRAINED}\. .*rm -rf /src .*groundstation defs check",
                     install)


def test_the_dependency_layer_comes_before_the_source() -> None:
    steps = instructions()
    copies = [(i, args.split()[:-1]) for i, (kind, args) in enumerate(steps) if kind == "COPY"]
    first_source = min(i for i, srcs in copies if "groundstation/" in srcs)
    deps = [i for i, (kind, args) in enumerate(steps)
            if kind == "RUN" and re.search(rf"pip install {CONSTRAINED}-r", args)]
    assert deps and deps[0] < first_source
    before = [s for i, srcs in copies if i < deps[0] for s in srcs]
    assert before == ["pyproject.toml", "constraints.txt"], \
        "only pyproject.toml and the constraints may feed the dependency layer"


def test_the_dependency_layer_installs_the_projects_dependencies(tmp_path: Path) -> None:
    (run,) = [args for kind, args in instructions()
              if kind == "RUN" and re.search(rf"pip install {CONSTRAINED}-r", args)]
    script = re.search(r"python -c '([^']*)'", run)
    assert script, run
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    # As sh passes it: the text between single quotes, unchanged.
    out = subprocess.run([sys.executable, "-c", script[1]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    with (REPO / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert out.splitlines() == dependencies
    assert "pip install -c constraints.txt -r /tmp/requirements.txt" in run


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_constraints_pin_every_requirement_within_its_bounds() -> None:
    """constraints.txt (scripts/update-constraints.sh) pins what every install of ours takes:
    the core dependencies (the image), and the test, export, embedded and drills extras (CI,
    the demo, a drill instructor), each to a version its requirement allows."""
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    pins = _pins()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in ("test", "export", "embedded", "drills"):
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    checked = 0
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "groundstation":  # an extra of ours, listed in another extra
            continue
        assert name in pins, f"constraints.txt has no pin for {req.name}: run " \
                             "scripts/update-constraints.sh"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside {req}"
        checked += 1
    assert checked >= 15
    # The bench extra's peers pin our dependencies themselves: never in the constraints.
    assert "openc3" not in pins and "ait-core" not in pins


def test_every_install_uses_the_constraints() -> None:
    setup = (REPO / "scripts/setup.sh").read_text(encoding="utf-8")
    assert re.search(r"pip install -q -c constraints\.txt -e ", setup)
    ci = (REPO / ".ci/run").read_text(encoding="utf-8")
    assert "scripts/setup.sh" in ci  # .ci/run installs through setup.sh
    assert "pip install -c constraints.txt ." in (REPO / "Dockerfile").read_text(
        encoding="utf-8")


def test_matplotlib_is_an_extra_not_a_dependency_of_the_image() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    names = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert "matplotlib" not in names
    assert any(r.startswith("matplotlib") for r in project["optional-dependencies"]["drills"])
    pytest_asyncio = next(Requirement(r) for r in project["optional-dependencies"]["test"]
                          if r.startswith("pytest-asyncio"))
    assert not pytest_asyncio.specifier.contains("0.23.8")  # asyncio_default_fixture_loop_scope
