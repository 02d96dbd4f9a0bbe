"""Every command, as an operator gets it wrong: a missing file, an output that cannot be
written, a reader that closed the pipe, a wrong option. Each ends in one line saying what
to do (or, for a closed pipe, quietly) with exit status 1 (failed) or 2 (usage), never in a
Python traceback.

The commands are run as processes, as from a shell. A test fails when `groundstation
--help` lists a command that has no cases here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.archive_helpers import T0, record

MISSING, UNWRITABLE, CLOSED_PIPE, WRONG_OPTION = "missing", "unwritable", "closed", "option"
FULL = "/dev/full"  # every write fails with ENOSPC: an output that cannot be written


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    status: int
    stdout: str | None = None  # FULL, or CLOSED_PIPE (a pipe whose reader has gone)
    says: str = "error: "  # in stderr ("" for nothing in particular)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NOWHERE = "/nonexistent/groundstation"
# The archive the archive and replay cases read: one pass of the test vehicle.
ARCHIVE = "{archive}"

CASES: dict[str, dict[str, Case]] = {
    "demo": {
        MISSING: Case(("demo", "--defs", NOWHERE, "--no-console"), 1),
        UNWRITABLE: Case(("demo", "--data-dir", "/proc/groundstation-demo", "--no-console"), 1,
                         says="check the path"),
        # Not a terminal, so it says it prints values instead: to a closed pipe.
        CLOSED_PIPE: Case(("demo", "--start", "044:25:30"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("demo", "--speeed", "10"), 2, says="unrecognized arguments"),
    },
    "ingest": {
        MISSING: Case(("ingest", "--config", f"{NOWHERE}.toml"), 1, says="cannot read it"),
        UNWRITABLE: Case(("ingest", "--ingest-archive-dir", "/proc/groundstation-archive",
                          "--influx-api", "none", "--mqtt-port", "{port}"), 1,
                         says="check the path"),
        CLOSED_PIPE: Case(("ingest", "--print-config"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("ingest", "--mqtt-hots", "x"), 2, says="unrecognized arguments"),
    },
    "defs": {
        MISSING: Case(("defs", "check", f"{NOWHERE}.yaml"), 1, says="cannot read the file"),
        UNWRITABLE: Case(("defs", "show", "apollo_csm"), 1, stdout=FULL,
                         says="No space left on device"),
        CLOSED_PIPE: Case(("defs", "show", "apollo_csm"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("defs", "shw", "apollo_csm"), 2, says="invalid choice"),
    },
    "dashboards": {
        MISSING: Case(("dashboards", "build", "--defs", NOWHERE), 1),
        UNWRITABLE: Case(("dashboards", "build", "--out", "/proc/groundstation-dashboards"),
                         1, says="check the path"),
        CLOSED_PIPE: Case(("dashboards", "build", "--check"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("dashboards", "build", "--chek"), 2,
                           says="unrecognized arguments"),
    },
    "sim": {
        MISSING: Case(("sim", "both", "--defs", NOWHERE), 1),
        UNWRITABLE: Case(("sim", "both", "--list-events"), 1, stdout=FULL,
                         says="No space left on device"),
        CLOSED_PIPE: Case(("sim", "both", "--list-events"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("sim", "both", "--sped", "10"), 2, says="unrecognized arguments"),
    },
    "archive": {
        MISSING: Case(("archive", "ls", "--config", f"{NOWHERE}.toml"), 1,
                      says="cannot read it"),
        UNWRITABLE: Case(("archive", "export", "1", "--archive-dir", ARCHIVE,
                          "-o", f"{NOWHERE}/pass.csv"), 1, says="check the path"),
        CLOSED_PIPE: Case(("archive", "ls", "--archive-dir", ARCHIVE), 1,
                          stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("archive", "ls", "--json", "--vehicule", "x"), 2,
                           says="unrecognized arguments"),
    },
    "replay": {
        MISSING: Case(("replay", "1", "--archive-dir", NOWHERE, "--mqtt-port", "{port}"), 1),
        # replay writes to no file: what it cannot write to is the broker.
        UNWRITABLE: Case(("replay", "1", "--archive-dir", ARCHIVE, "--mqtt-port", "{port}",
                          "--no-progress"), 1, says="error: broker"),
        CLOSED_PIPE: Case(("replay", "1", "--archive-dir", ARCHIVE, "--mqtt-port", "{port}",
                           "--no-progress"), 1, stdout=CLOSED_PIPE, says="error: broker"),
        WRONG_OPTION: Case(("replay", "1", "--speed", "fast"), 1, says="speed"),
    },
    "drill": {
        MISSING: Case(("drill", "show", f"{NOWHERE}.yaml"), 1),
        UNWRITABLE: Case(("drill", "list"), 1, stdout=FULL, says="No space left on device"),
        CLOSED_PIPE: Case(("drill", "list"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("drill", "run", "o2-tank-spike", "--sped", "2"), 2,
                           says="unrecognized arguments"),
    },
    "console": {
        MISSING: Case(("console", "houston", "--config", f"{NOWHERE}.toml"), 1,
                      says="cannot read it"),
        # The console needs a terminal; a file or a pipe is a usage error.
        UNWRITABLE: Case(("console", "houston", "--mqtt-port", "{port}"), 2, stdout=FULL,
                         says="needs a terminal"),
        CLOSED_PIPE: Case(("console", "houston", "--mqtt-port", "{port}"), 2,
                          stdout=CLOSED_PIPE, says="needs a terminal"),
        WRONG_OPTION: Case(("console", "huston"), 2, says="invalid choice"),
    },
    "commanding": {
        MISSING: Case(("commanding", "serve", "--config", f"{NOWHERE}.toml"), 1,
                      says="cannot read it"),
        UNWRITABLE: Case(("commanding", "list"), 1, stdout=FULL, says="No space left on device"),
        CLOSED_PIPE: Case(("commanding", "list"), 1, stdout=CLOSED_PIPE, says=""),
        WRONG_OPTION: Case(("commanding", "lst"), 2, says="invalid choice"),
    },
    "cluster": {
        MISSING: Case(("cluster", "status", "--config", f"{NOWHERE}.toml"), 1,
                      says="cannot read it"),
        UNWRITABLE: Case(("cluster", "status", "--mqtt-port", "{port}"), 1, stdout=FULL,
                         says="error: broker"),
        CLOSED_PIPE: Case(("cluster", "status", "--mqtt-port", "{port}"), 1,
                          stdout=CLOSED_PIPE, says="error: broker"),
        WRONG_OPTION: Case(("cluster", "statu"), 2, says="invalid choice"),
    },
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    record(root, [(T0, 500)])
    return root


def run(args: tuple[str, ...], stdout: str | None, cwd: Path,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out: int | None = None
    read_end = None
    if stdout == FULL:
        out = os.open(FULL, os.O_WRONLY)
    elif stdout == CLOSED_PIPE:
        read_end, out = os.pipe()
        os.close(read_end)  # the reader went away (`| head` after its lines)
    try:
        return subprocess.run([sys.executable, "-m", "groundstation", *args], cwd=cwd,
                              stdin=subprocess.DEVNULL,
                              stdout=out if out is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    finally:
        if out is not None:
            os.close(out)


def test_every_command_has_its_cases(tmp_path: Path) -> None:
    listed = run(("--help",), None, tmp_path).stdout
    block = listed.split("COMMAND", 2)[-1]
    commands = set(re.findall(r"^    (\w+)\s", block, re.M))
    assert commands == set(CASES), "give each command of `groundstation --help` its cases"
    for cases in CASES.values():
        assert set(cases) == {MISSING, UNWRITABLE, CLOSED_PIPE, WRONG_OPTION}


@pytest.mark.parametrize(("command", "case"),
                         [(c, k) for c, cases in CASES.items() for k in cases])
def test_bad_input_ends_in_one_line_not_a_traceback(command: str, case: str, tmp_path: Path,
                                                     archive: Path) -> None:
    c = CASES[command][case]
    port = str(_free_port())  # nothing listens there
    args = tuple(a.replace("{port}", port).replace(ARCHIVE, str(archive)) for a in c.args)
    p = run(args, c.stdout, tmp_path)
    shown = f"$ groundstation {' '.join(args)}\n-> {p.returncode}\n{p.stdout}{p.stderr}"
    assert "Traceback" not in (p.stdout or "") + p.stderr, shown
    assert "Exception ignored" not in p.stderr, shown
    assert p.returncode == c.status, shown
    assert c.says in p.stderr, shown
    if c.says.startswith("error: ") or c.says == "":
        # one line of error, not a page
        assert len([x for x in p.stderr.splitlines() if x.startswith("error:")]) <= 1, shown


def test_a_closed_pipe_with_buffered_output_is_quiet_too(tmp_path: Path) -> None:
    """Without PYTHONUNBUFFERED the broken pipe shows when the output is flushed at the end,
    not at the first write: still no traceback and no 'Exception ignored'."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([sys.executable, "-m", "groundstation", "defs", "show", "soyuz"],
                           cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=write_end,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    finally:
        os.close(write_end)
    assert (p.returncode, p.stderr) == (1, "")


def test_a_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    bad = run(("defs", "check"), None, tmp_path, env={"GS_LOG_LEVEL": "loud"})
    assert bad.returncode == 2 and "GS_LOG_LEVEL='loud'" in bad.stderr
    assert "Traceback" not in bad.stderr
