"""The `groundstation` command: the root parser; each command in groundstation/commands/
adds its own subparser and runs itself.

What every command shares is here: `--version`, the log level (`-v` anywhere on the line,
or `GS_LOG_LEVEL`), and one handler that turns what an operator can get wrong (a missing
file, a place that cannot be written, a closed pipe, bad input) into one line saying what
to do instead of a traceback. Exit codes: 0 done, 1 failed, 2 usage (a wrong option or
value: argparse's own), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import stat
import sys
from types import ModuleType

from groundstation import __version__
from groundstation.commands import (
    archive,
    cluster,
    commanding,
    console,
    dashboards,
    defs,
    demo,
    drill,
    ingest,
    replay,
    sim,
)
from groundstation.config import ConfigError
from groundstation.core.definitions import FileProblems

EPILOG = """\
examples:
  groundstation demo                      the whole station: broker, InfluxDB, ingest, both
                                          ships docked, and the Houston console
  groundstation demo --start docking-30m --speed 10
                                          watch the final approach and docking at 10x
  groundstation defs check                validate every file in telemetry_defs/
  groundstation defs check my_ship.yaml   validate one file
  groundstation defs show apollo_csm      list a vehicle's parameters, units and limits
  groundstation dashboards build          regenerate dashboards/*.json from telemetry_defs/
  groundstation archive ls                recorded passes, with AOS/LOS in UTC and GET
  groundstation replay 1 --speed 10       replay the first pass at 10x as a replay session
  groundstation console houston --position EECOM
                                          the Houston terminal console on a running station
  groundstation drill list                training drills, with their titles
  groundstation drill run o2-tank-spike   run a drill; the debrief is written at the end
  groundstation commanding serve          the commanding service: commands and crew
                                          procedures from the consoles, verified in telemetry
  groundstation commanding list apollo_csm
                                          what each position may send a ship
  groundstation cluster status            a clustered station's ingest instances and the
                                          partitions each owns
  groundstation sim both --start docking-30m --speed 10
                                          fly both ships from 30 min before docking, 10x

logging: -v (info) or -vv (debug), before or after the command; or GS_LOG_LEVEL=debug,
info, warning (the default) or error in the environment. -v wins over GS_LOG_LEVEL.
exit codes: 0 done, 1 failed, 2 wrong usage, 130 interrupted.
"""

# In the order `groundstation --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "demo": demo, "ingest": ingest, "defs": defs, "dashboards": dashboards, "sim": sim,
    "archive": archive, "replay": replay, "drill": drill, "console": console,
    "commanding": commanding, "cluster": cluster,
}

LOG_LEVEL_ENV = "GS_LOG_LEVEL"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}

FAILED, USAGE, INTERRUPTED = 1, 2, 130

log = logging.getLogger("groundstation")


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every command's subparser, each taking -v as well."""
    parser = argparse.ArgumentParser(
        prog="groundstation",
        description="Mission-control telemetry ground station for the Apollo-Soyuz Test "
                    "Project: PCM frames over MQTT, decommutated, limit-checked, stored in "
                    "InfluxDB.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"groundstation {__version__}")
    _add_verbose(parser, "verbose", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    for child in _subparsers(parser):
        _add_verbose(child, "verbose_after", default=argparse.SUPPRESS)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, dest: str, default: object) -> None:
    # After the command, -v counts apart (argparse would reset the root's count), and
    # verbosity() adds the two: `-v defs show x` and `defs show x -v` mean the same.
    if "-v" not in parser._option_string_actions:
        parser.add_argument("-v", "--verbose", dest=dest, action="count", default=default,
                            help=f"log more: -v info, -vv debug (or {LOG_LEVEL_ENV}=...)")


def verbosity(args: argparse.Namespace) -> int:
    """How many -v were given, before and after the command."""
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "verbose_after", 0) or 0)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases once
                found.append(child)
                found += _subparsers(child)
    return found


def log_level(verbose: int, env: str | None) -> int:
    """The log level: -v (info) or -vv (debug) if given, else GS_LOG_LEVEL (a name or a
    number), else warning. A bad GS_LOG_LEVEL is a ValueError naming what it may be."""
    if verbose:
        return logging.INFO if verbose == 1 else logging.DEBUG
    if not env:
        return logging.WARNING
    value = env.strip().lower()
    if value in LOG_LEVELS:
        return LOG_LEVELS[value]
    if value.isdigit():
        return int(value)
    raise ValueError(f"{LOG_LEVEL_ENV}={env!r}: use debug, info, warning or error")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. Raises only SystemExit, from
    argparse: 0 after --help or --version, 2 for a usage error."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _closed_output()
    except OSError as exc:  # a file, a directory, stdout itself (a full disk)
        _error(os_error_text(exc))
        log.debug("where it failed", exc_info=True)  # the traceback, with -vv
        _drop_stdout()
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED
    except SystemExit:
        _flush_stdout()  # --help into a closed pipe or a full disk: say so, as above
        raise


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        level = log_level(verbosity(args), os.environ.get(LOG_LEVEL_ENV))
    except ValueError as exc:
        parser.error(str(exc))  # exits 2
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return USAGE
    try:
        status = int(COMMANDS[args.command].run(args))
    except (FileProblems, ConfigError) as exc:  # definitions, scenarios, configuration
        _error(str(exc))
        status = FAILED
    sys.stdout.flush()  # a closed pipe or a full disk shows here, not at the interpreter's exit
    return status


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _closed_output()
        raise SystemExit(FAILED) from None
    except OSError as exc:
        _error(os_error_text(exc))
        _drop_stdout()
        raise SystemExit(FAILED) from None


def os_error_text(exc: OSError) -> str:
    """One line for an OSError: what failed, where, and what to do about it."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    text = f"{where}: {what}" if where is not None else what
    if exc.filename2 is not None:
        text += f" ({exc.filename2})"
    hint = {
        errno.ENOENT: "check the path: a file to read must exist, and so must the directory "
                      "of a file to write",
        errno.EACCES: "choose a place you may read or write, or change its permissions",
        errno.EPERM: "choose a place you may read or write, or change its permissions",
        errno.EISDIR: "name a file, not a directory",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EROFS: "that file system is read-only: choose another place",
        errno.ENOSPC: "the disk is full: free space or choose another place",
        errno.ECONNREFUSED: "nothing listens there: is the server running, and the host "
                            "and port right?",
    }.get(exc.errno or 0)
    return f"{text}; {hint}" if hint else text


def _error(text: str) -> None:
    with contextlib.suppress(OSError):  # stderr closed as well: nobody to tell
        print(f"error: {text}", file=sys.stderr, flush=True)


def _closed_output() -> int:
    """The reader of our output went away (`groundstation defs show x | head`): stop
    quietly, exit 1 (the output is incomplete)."""
    try:
        st = os.fstat(sys.stdout.fileno())
        pipe = stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
    except (OSError, ValueError):
        pipe = True
    _drop_stdout()
    if not pipe:  # not our output: some other pipe broke (a server went away)
        _error("a connection was closed by the other side (broken pipe)")
    return FAILED


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be
    written fails no more (it would print 'Exception ignored' and exit 120)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
