"""The package as a user installs it: `pip install groundstation`, no checkout anywhere.

Builds the sdist and, from the sdist (as an index would), the wheel; installs the wheel and
its dependencies into a fresh virtualenv outside the checkout; then runs the commands a
user runs first from another directory. This venv has nothing of this checkout: the test
venv's editable install is a .pth file in the test venv's site-packages, which a new
virtualenv never reads, and the working directory holds decoy `groundstation` and
`simulators` packages that fail on import, so a process that picked up the working
directory instead of the installed wheel (`python -m` does) fails loudly.

Needs the package index (the build backend and the dependencies come from it, or pip's
cache): about a minute in all, most of it pip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from groundstation.core.definitions import load_all
from groundstation.core.mission_time import format_get
from groundstation.deploy.servers import find_binary
from groundstation.drills.scenario import load_scenario
from groundstation.paths import SHIPPED
from tests.paths import REPO

DECOY = 'raise SystemExit("imported the decoy in the working directory, not the wheel")\n'


def need(binary: str) -> None:
    if find_binary(binary) is None:
        package = "influxdb" if binary == "influxd" else binary
        msg = f"{binary} not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so this is a failure", pytrace=False)
        pytest.skip(msg)


@dataclass
class Installed:
    venv: Path
    site_packages: Path
    wheel: Path
    sdist: Path
    cwd: Path  # where the commands run: outside the checkout, with the decoys
    env: dict[str, str]
    seconds: dict[str, float]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "groundstation"), *args],
                              cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _step(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    try:
        import build  # noqa: F401  (the `build` front end, from the test extra)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the `build` package is not installed (CI is set): "
                        "pip install -e '.[test]'", pytrace=False)
        pytest.skip("the `build` package is not installed: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO.resolve())
    # Nothing from this process's environment that could point Python at the checkout or
    # change the station's configuration.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "GS_", "PIP_TARGET", "PIP_PREFIX"))
           and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    env["TMPDIR"] = str(root)  # the demo's temporary directory, kept with the test's
    seconds: dict[str, float] = {}

    t0 = time.monotonic()
    dist = root / "dist"
    # sdist, then the wheel built from the unpacked sdist, each backend in an isolated env.
    _step([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], root, env, 300)
    (wheel,) = dist.glob("groundstation-*.whl")
    (sdist,) = dist.glob("groundstation-*.tar.gz")
    seconds["build"] = time.monotonic() - t0

    t0 = time.monotonic()
    venv = root / "venv"
    # A plain virtualenv of the base interpreter: no --system-site-packages, and no pip of
    # its own (ensurepip costs seconds); this process's pip installs into it by --python.
    _step([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env, 120)
    _step([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
           "--quiet", "--no-input", str(wheel)], root, env, 600)
    seconds["install"] = time.monotonic() - t0
    (site_packages,) = venv.glob("lib/python3.*/site-packages")

    cwd = root / "elsewhere"
    for decoy in ("groundstation", "simulators"):
        (cwd / decoy).mkdir(parents=True)
        (cwd / decoy / "__init__.py").write_text(DECOY, encoding="utf-8")
    yield Installed(venv, site_packages, wheel, sdist, cwd, env, seconds)
    print(f"\nwheel test: build {seconds['build']:.0f} s, install {seconds['install']:.0f} s")


def test_the_distributions_carry_the_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        in_wheel = set(whl.namelist())
    with tarfile.open(installed.sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in SHIPPED:
        files = [p.relative_to(REPO).as_posix() for p in (REPO / name).rglob("*")
                 if p.is_file()]
        assert files, name
        for f in files:
            assert f"groundstation/_data/{f}" in in_wheel, f
            assert f in in_sdist, f
    for f in ("groundstation/py.typed", "simulators/README.md",
              "simulators/scenarios/README.md"):
        assert f in in_wheel, f
    scenarios = sorted((REPO / "simulators/scenarios").glob("*.yaml"))
    assert scenarios
    for f in scenarios:
        assert f"simulators/scenarios/{f.name}" in in_wheel, f
    # Nothing of the checkout's other top-level directories, no bytecode.
    assert not [n for n in in_wheel
                if n.split("/")[0] in ("tests", "benchmarks", "docs", "scripts")
                or n.endswith(".pyc")]
    assert {"pyproject.toml", "README.md", "tests/data/mini.yaml"} <= in_sdist


def test_the_wheel_not_the_checkout_is_what_runs(installed: Installed) -> None:
    probe = ("import json, groundstation, simulators; from groundstation import paths; "
             "print(json.dumps({'groundstation': groundstation.__file__, "
             "'simulators': simulators.__file__, 'defs': str(paths.defs_dir()), "
             "'dashboards': str(paths.dashboards_dir()), "
             "'mosquitto': str(paths.mosquitto_dir()), "
             "'scenarios': str(paths.scenarios_dir())}))")
    # -I: no working directory, PYTHONPATH or user site on sys.path; only the venv.
    proc = subprocess.run([str(installed.venv / "bin" / "python"), "-I", "-c", probe],
                          cwd=installed.cwd, env=installed.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    found = {k: Path(v) for k, v in json.loads(proc.stdout).items()}
    package = installed.site_packages / "groundstation"
    assert found["groundstation"] == package / "__init__.py"
    assert found["simulators"] == installed.site_packages / "simulators" / "__init__.py"
    assert found["defs"] == package / "_data" / "telemetry_defs"
    assert found["dashboards"] == package / "_data" / "dashboards"
    assert found["mosquitto"] == package / "_data" / "deploy" / "mosquitto"
    assert found["scenarios"] == installed.site_packages / "simulators" / "scenarios"
    # The editable install's .pth (and so the checkout) is not on this venv's path.
    for pth in installed.site_packages.glob("*.pth"):
        assert str(REPO) not in pth.read_text(encoding="utf-8"), pth


def test_defs_check_reads_the_shipped_definitions(installed: Installed) -> None:
    proc = installed.run("defs", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    defs = installed.site_packages / "groundstation" / "_data" / "telemetry_defs"
    checked = dict(re.findall(r"^ok  (\S+): (\w+), \d+ parameters, \d+ derived, ",
                              proc.stdout, re.M))
    assert checked == {str(defs / "apollo_csm.yaml"): "apollo_csm",
                       str(defs / "apollo_csm_lbr.yaml"): "apollo_csm",
                       str(defs / "soyuz.yaml"): "soyuz"}, proc.stdout
    assert str(REPO) not in proc.stdout + proc.stderr


def test_drill_list_reads_the_shipped_scenarios(installed: Installed) -> None:
    proc = installed.run("drill", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    expected = {p.stem for p in (REPO / "simulators/scenarios").glob("*.yaml")}
    assert set(listed) == expected, proc.stdout
    # Each parsed against the shipped definitions: start GET, duration, ships, title.
    sc = load_scenario(REPO / "simulators/scenarios/o2-tank-spike.yaml", load_all())
    assert re.match(rf"o2-tank-spike +{format_get(sc.start_get)} +\d+:\d\d  apollo_csm +\S",
                    listed["o2-tank-spike"]), proc.stdout
    assert "invalid" not in proc.stdout and not proc.stderr


def test_dashboards_check_compares_the_shipped_dashboards(installed: Installed) -> None:
    proc = installed.run("dashboards", "build", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipped = installed.site_packages / "groundstation" / "_data" / "dashboards"
    assert f"ok  {shipped}: every dashboard matches the definitions" in proc.stdout


def test_demo_runs_from_the_wheel(installed: Installed) -> None:
    """The whole station from the installed package: its ingest and ships are child
    processes (`python -m groundstation`), started in the decoys' directory."""
    need("mosquitto")
    need("influxd")
    proc = installed.run("demo", "--no-console", "--seconds", "10", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "broker    Mosquitto at 127.0.0.1:" in out
    assert "database  InfluxDB at http://127.0.0.1:" in out
    apollo = [float(x) for x in re.findall(
        r"^GET \d{3}:\d\d:\d\d  Apollo CSM: CABIN PRESS (\d+\.\d+) psia", out, re.M)]
    soyuz = [float(x) for x in re.findall(
        r"^GET \d{3}:\d\d:\d\d  Soyuz 19: DESC MOD PRESS (\d+\.\d+) psia", out, re.M)]
    assert apollo and all(4.7 < x < 5.4 for x in apollo), out
    assert soyuz and all(9.0 < x < 10.5 for x in soyuz), out
    stored = {v: int(n) for n, v in re.findall(r"InfluxDB holds (\d+) frames of (\w+)", out)}
    assert stored.get("apollo_csm", 0) > 100 and stored.get("soyuz", 0) > 20, out
    assert "decoy" not in out
