"""The root command's own options: --version, the log level (-v anywhere, GS_LOG_LEVEL),
and the exit codes of its error handler. Every command's bad input, run as a process, is in
tests/e2e/test_cli_errors.py."""

from __future__ import annotations

import argparse
import errno
import logging
import tomllib
from typing import Any

import pytest

from groundstation import __version__, cli
from tests.paths import REPO


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    with (REPO / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == __version__
    assert capsys.readouterr().out.strip() == f"groundstation {__version__}"


@pytest.fixture
def levels(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The level main() configures logging with, for a command that does nothing."""
    seen: list[int] = []

    def basic_config(**kw: Any) -> None:
        seen.append(kw["level"])

    monkeypatch.setattr(logging, "basicConfig", basic_config)
    monkeypatch.setattr(cli.COMMANDS["defs"], "run", lambda args: 0)
    monkeypatch.delenv("GS_LOG_LEVEL", raising=False)
    return seen


@pytest.mark.parametrize(("argv", "env", "level"), [
    (["defs", "check"], None, logging.WARNING),
    (["-v", "defs", "check"], None, logging.INFO),
    (["defs", "-v", "check"], None, logging.INFO),
    (["defs", "check", "-v"], None, logging.INFO),
    (["defs", "check", "-vv"], None, logging.DEBUG),
    (["-v", "defs", "check", "-v"], None, logging.DEBUG),
    (["defs", "check"], "debug", logging.DEBUG),
    (["defs", "check"], "ERROR", logging.ERROR),
    (["defs", "check"], "10", logging.DEBUG),
    (["defs", "check", "-v"], "error", logging.INFO),  # the flag wins
])
def test_log_level(argv: list[str], env: str | None, level: int, levels: list[int],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    if env is not None:
        monkeypatch.setenv("GS_LOG_LEVEL", env)
    assert cli.main(argv) == 0
    assert levels == [level]


def test_a_bad_log_level_is_a_usage_error(levels: list[int], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GS_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["defs", "check"])
    assert exit_.value.code == 2
    assert "GS_LOG_LEVEL='loud': use debug, info, warning or error" in capsys.readouterr().err


def test_every_subcommand_takes_v() -> None:
    parser = cli.build_parser()
    for argv in (["demo", "-v"], ["archive", "ls", "-v"], ["drill", "run", "x", "-v"],
                 ["dashboards", "push", "-vv"], ["sim", "both", "-v"]):
        assert cli.verbosity(parser.parse_args(argv)) >= 1


@pytest.mark.parametrize(("exc", "expected"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y.csv"),
     "/x/y.csv: No such file or directory; check the path"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"),
     "/root/x: Permission denied; choose a place you may read or write"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "No space left on device; the disk is full"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
     "Connection refused; nothing listens there"),
])
def test_os_errors_say_what_to_do(exc: OSError, expected: str) -> None:
    assert cli.os_error_text(exc).startswith(expected)


def test_an_os_error_in_a_command_is_one_line_and_status_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/out")

    monkeypatch.setattr(cli.COMMANDS["defs"], "run", fail)
    assert cli.main(["defs", "check"]) == 1
    assert capsys.readouterr().err == ("error: /srv/out: Permission denied; choose a place "
                                       "you may read or write, or change its permissions\n")
