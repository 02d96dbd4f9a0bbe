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

from tests.paths import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [(m[1], m[2]) for m in re.finditer(r"^([A-Z]+) (.*)$", text, re.M)]


def test_the_image_installs_the_package_not_an_editable_checkout() -> None:
    steps = instructions()
    runs = [args for kind, args in steps if kind == "RUN"]
    assert not [r for r in runs if re.search(r"pip install\b.*(\s-e\b|--editable)", r)]
    (install,) = [r for r in runs if re.search(r"pip install \.(\s|$)", r)]
    # The source is removed before the check, so the check reads the installed copies.
    assert re.search(r"pip install \. .*rm -rf /src .*groundstation defs check", install)


def test_the_dependency_layer_comes_before_the_source() -> None:
    steps = instructions()
    copies = [(i, args.split()[:-1]) for i, (kind, args) in enumerate(steps) if kind == "COPY"]
    first_source = min(i for i, srcs in copies if "groundstation/" in srcs)
    deps = [i for i, (kind, args) in enumerate(steps)
            if kind == "RUN" and "pip install -r" in args]
    assert deps and deps[0] < first_source
    before = [s for i, srcs in copies if i < deps[0] for s in srcs]
    assert before == ["pyproject.toml"], "only pyproject.toml may feed the dependency layer"


def test_the_dependency_layer_installs_the_projects_dependencies(tmp_path: Path) -> None:
    (run,) = [args for kind, args in instructions()
              if kind == "RUN" and "pip install -r" in args]
    script = re.search(r"python -c '([^']*)'", run)
    assert script, run
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    # As sh passes it: the text between single quotes, unchanged.
    out = subprocess.run([sys.executable, "-c", script[1]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    with (REPO / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert out.splitlines() == dependencies
