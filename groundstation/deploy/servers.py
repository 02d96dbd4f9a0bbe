"""Start real Mosquitto, InfluxDB 1.x and RabbitMQ servers on loopback, for tests and local
runs (RabbitMQ as a cluster of nodes on one machine: ``RabbitMQCluster``).

Each server listens on ephemeral loopback ports chosen once, when the object is
created, and keeps its data directory for its whole life: ``restart()`` brings the
same server back at the same address with the same data, which is what fault tests
need (clients must be able to reconnect to the address they already know).

Only the standard library is used, so the test fixtures work before any optional
client library is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "BinaryNotFoundError",
    "EpmdServer",
    "InfluxDBServer",
    "MosquittoServer",
    "RabbitMQCluster",
    "RabbitMQNode",
    "ServerError",
    "find_binary",
    "free_port",
    "quote_ident",
]

LOOPBACK = "127.0.0.1"

# Debian installs mosquitto (and other daemons) in /usr/sbin, which is not on the PATH
# of ordinary users nor of many CI shells.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")

_LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A server could not be found, started, stopped or talked to."""


class BinaryNotFoundError(ServerError):
    """The server's executable is not installed (tests skip, or fail under CI)."""


def die_with_parent() -> None:
    """For Popen's preexec_fn: on Linux, the child gets SIGTERM when the process that
    started it dies, however it dies. A child in its own session (own_session, the demo's)
    gets no Ctrl-C from the terminal, and without this a demo killed by SIGKILL (or the
    OOM killer) would leave its broker, database, ingest and ships running for good.
    Elsewhere it does nothing. Start such children from the main thread: the signal
    follows the thread that forked, not the process."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def find_binary(name: str) -> str | None:
    """Return the absolute path of executable ``name``, or None if it is not installed.

    Looks on PATH first (so a developer's own build wins), then in the system
    directories where Debian puts daemons.
    """
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(_EXTRA_BIN_DIRS))
    return os.path.abspath(found) if found else None


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections there (a broker is ready when it does)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing was listening on a moment ago."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    # All sockets stay bound until every port is chosen, so the ports are distinct.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _tail(path: Path, offset: int, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])


# Servers still running when the interpreter exits (a test run interrupted between
# fixture setup and teardown, a script that forgot to stop one) are stopped here so
# no broker or database outlives the process that started it.
_RUNNING: set[_Server] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)


class _Server:
    """Process management shared by the concrete servers."""

    binary_name: ClassVar[str]
    package: ClassVar[str]  # the Debian package that provides binary_name
    scheme: ClassVar[str]

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        own_session: bool = False,
    ) -> None:
        # own_session: the server does not get the terminal's Ctrl-C, so whoever started it
        # (the demo) stops it last, after the clients that still talk to it.
        self.own_session = own_session
        if data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=f"gs-{self.binary_name}-"))
            self._owns_data_dir = True
        else:
            self._data_dir = Path(data_dir).resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
            self._owns_data_dir = False
        self._host = LOOPBACK
        self._port = port if port is not None else free_port(self._host)
        self._binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offsets: dict[Path, int] = {}
        self.last_start_seconds: float | None = None

    # -- addresses and files -------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self._host}:{self._port}"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def config_path(self) -> Path:
        return self._data_dir / f"{self.binary_name}.conf"

    @property
    def log_path(self) -> Path:
        """File receiving the process's stdout and stderr, appended to on every start."""
        return self._data_dir / f"{self.binary_name}.console.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.is_running() else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- to be provided by subclasses ----------------------------------------------

    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def _probe_ready(self) -> bool:
        raise NotImplementedError

    def _log_files(self) -> list[Path]:
        return [self.log_path]

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- lifecycle -----------------------------------------------------------------

    def resolve_binary(self) -> str:
        """Return the executable to run, or raise BinaryNotFoundError saying how to get it."""
        if self._binary is not None:
            if os.path.isfile(self._binary) and os.access(self._binary, os.X_OK):
                return self._binary
            where = self._binary
        else:
            found = find_binary(self.binary_name)
            if found is not None:
                return found
            where = f"PATH or {', '.join(_EXTRA_BIN_DIRS)}"
        raise BinaryNotFoundError(
            f"{self.binary_name} not found (looked in {where}); "
            f"install it with: apt-get install {self.package}"
        )

    def start(self) -> Self:
        """Start the server and return once it answers; raise ServerError otherwise."""
        if self.is_running():
            raise ServerError(f"{self.binary_name} is already running at {self.url}")
        binary = self.resolve_binary()
        self._check_ports_free()
        self._write_config()
        cmd = self._command(binary)
        for path in self._log_files():
            self._log_offsets[path] = path.stat().st_size if path.exists() else 0
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    env=self._child_env(),
                    start_new_session=self.own_session,
                    preexec_fn=die_with_parent if self.own_session else None,
                )
            except OSError as exc:
                raise ServerError(
                    f"could not run {binary}: {exc}\ncommand: {shlex.join(cmd)}\n"
                    f"Check that it is executable, or reinstall it with: "
                    f"apt-get install --reinstall {self.package}"
                ) from exc
        _RUNNING.add(self)
        try:
            self._wait_ready(cmd, started)
        except BaseException:
            self.kill()
            raise
        self.last_start_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, cmd: list[str], started: float) -> None:
        assert self._proc is not None
        deadline = started + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._start_error(
                    cmd,
                    f"exited with code {code} before it was ready",
                    "read the log lines above; a bad config line or a port already in use "
                    "are the usual causes",
                )
            # Poll the process again after a successful probe: if our server failed to
            # bind, the probe may have reached whatever else holds the port.
            if self._probe_ready() and self._proc.poll() is None:
                return
            if time.monotonic() > deadline:
                raise self._start_error(
                    cmd,
                    f"did not become ready at {self.url} within {self.start_timeout:g} s",
                    "the machine may be overloaded (raise start_timeout) or the log shows why",
                )
            time.sleep(0.005)

    def _ports(self) -> list[int]:
        return [self._port]

    def _check_ports_free(self) -> None:
        # Without this, a readiness probe could be answered by whatever else holds the
        # port (another test's server after a restart, say) while ours fails to bind.
        for port in self._ports():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # Same option the servers use, so connections of our own previous run
                # lingering in TIME_WAIT do not count as "in use".
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self._host, port))
                except OSError as exc:
                    raise ServerError(
                        f"cannot start {self.binary_name}: port {port} on {self._host} is "
                        f"taken by another process ({exc}). Next step: find it with "
                        f"`ss -ltnp 'sport = :{port}'`, or create the server without a "
                        f"fixed port so a free one is picked."
                    ) from exc

    def _start_error(self, cmd: list[str], what: str, hint: str) -> ServerError:
        parts = [f"{self.binary_name} ({cmd[0]}) {what}.", f"command: {shlex.join(cmd)}"]
        for path in self._log_files():
            tail = _tail(path, self._log_offsets.get(path, 0))
            if tail:
                parts.append(f"last lines of {path}:\n{tail}")
        parts.append(f"Next step: {hint}. Config: {self.config_path}; log: {self.log_path}.")
        return ServerError("\n".join(parts))

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully (SIGTERM), or SIGKILL after ``timeout`` seconds. Idempotent.

        A graceful stop lets Mosquitto save its persistence file and InfluxDB close
        its shards, which is what a planned restart in production would do.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: nothing is flushed or saved. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def _forget(self) -> None:
        # The process has been reaped, so its port is free for the next start().
        self._proc = None
        _RUNNING.discard(self)

    def restart(self) -> Self:
        """Stop gracefully and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete the data directory if this object created it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.url} {state} data_dir={self._data_dir}>"


class MosquittoServer(_Server):
    """A Mosquitto 2.x broker on a loopback port, with persistence in its data directory.

    ``extra_config`` lines are appended to the generated configuration, e.g.
    ``["password_file /path/pw", "acl_file /path/acl"]`` with ``allow_anonymous=False``.
    """

    binary_name = "mosquitto"
    package = "mosquitto"
    scheme = "mqtt"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        own_session: bool = False,
    ) -> None:
        super().__init__(
            data_dir,
            port=port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            own_session=own_session,
        )
        self.allow_anonymous = allow_anonymous
        self.extra_config = list(extra_config)

    @property
    def broker_log_path(self) -> Path:
        """Mosquitto's own log (connections, subscriptions, errors after startup)."""
        return self._data_dir / "mosquitto.log"

    @property
    def persistence_path(self) -> Path:
        return self._data_dir / "mosquitto.db"

    def _log_files(self) -> list[Path]:
        return [self.log_path, self.broker_log_path]

    def config_lines(self) -> list[str]:
        lines = [
            f"listener {self._port} {self._host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            # Saved on graceful shutdown (and every autosave_interval), so sessions and
            # queued QoS 1/2 messages of offline persistent clients survive restart().
            "persistence true",
            f"persistence_location {self._data_dir}{os.sep}",
            f"log_dest file {self.broker_log_path}",
            # A ground station must not lose telemetry queued for an offline persistent
            # client (the ingest, while it restarts): a queue far beyond any outage. (Not 0,
            # "unlimited": Mosquitto 2.0.11 then disconnects a client whose publish the ACL
            # denies instead of dropping the message.) The ingest
            # acknowledges only once data is durable, so it needs a wide in-flight window.
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto switches to the 'mosquitto' user, which cannot
            # write the log or persistence file in a root-owned temporary directory.
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        lines.extend(self.extra_config)
        return lines

    def _write_config(self) -> None:
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")

    def _command(self, binary: str) -> list[str]:
        return [binary, "-c", str(self.config_path)]

    def _probe_ready(self) -> bool:
        return _accepts(self._host, self._port)


class EmbeddedBroker(_Server):
    """The Python broker of groundstation.deploy.embedded_broker (amqtt) as a child process: for the
    demo on a machine without Mosquitto. Anonymous, no persistence, no ACL."""

    binary_name = "amqtt"
    package = "groundstation[embedded]"
    scheme = "mqtt"

    def resolve_binary(self) -> str:
        from groundstation.deploy import embedded_broker

        if not embedded_broker.available():
            raise BinaryNotFoundError(f"no MQTT broker: Mosquitto is not installed and the "
                                      f"embedded one needs amqtt: {embedded_broker.INSTALL_HINT}")
        return sys.executable

    def _write_config(self) -> None:
        pass

    def _command(self, binary: str) -> list[str]:
        return [binary, "-m", "groundstation.deploy.embedded_broker", "--host", self._host,
                "--port", str(self._port)]

    def _probe_ready(self) -> bool:
        return _accepts(self._host, self._port)


class InfluxDBServer(_Server):
    """An InfluxDB 1.x server (``influxd``) speaking the v1 HTTP API on a loopback port."""

    binary_name = "influxd"
    package = "influxdb"
    scheme = "http"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        rpc_port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        http_timeout: float = 30.0,
        own_session: bool = False,
    ) -> None:
        if port is None and rpc_port is None:
            port, rpc_port = _free_ports(2)
        super().__init__(
            data_dir,
            port=port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            own_session=own_session,
        )
        self._rpc_port = rpc_port if rpc_port is not None else free_port(self._host)
        self.http_timeout = http_timeout
        self.version: str | None = None

    @property
    def rpc_port(self) -> int:
        return self._rpc_port

    def _ports(self) -> list[int]:
        return [self._port, self._rpc_port]

    def config_text(self) -> str:
        d = self._data_dir
        return f"""\
# Generated by groundstation.deploy.servers.InfluxDBServer
reporting-disabled = true
# Debian's influxd is patched to read this key instead of reporting-disabled.
reporting-enabled = false
# The backup/restore RPC port: its default, 8088, collides when two instances run.
bind-address = "{self._host}:{self._rpc_port}"

[meta]
  dir = "{d / "meta"}"
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self._host}:{self._port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  log-enabled = false

[logging]
  suppress-logo = true
"""

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text())

    def _command(self, binary: str) -> list[str]:
        return [binary, "-config", str(self.config_path)]

    def _child_env(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* environment variables override the config file; one
        # left in a developer's or CI shell could move the data or the port.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as resp:
                if resp.status == 204:
                    self.version = resp.headers.get("X-Influxdb-Version")
                    return True
        except (OSError, urllib.error.URLError):
            pass
        return False

    # -- v1 HTTP API helpers -------------------------------------------------------

    def _request(
        self, path: str, params: Mapping[str, str], body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, urllib.error.URLError) as exc:
            raise ServerError(f"InfluxDB at {self.url} did not answer {path}: {exc}") from exc

    def query(self, db: str | None, influxql: str, *, epoch: str | None = "ns") -> dict[str, Any]:
        """Run InfluxQL through ``POST /query`` and return the parsed JSON answer.

        Raises ServerError if the request or any statement failed, so a typo in a
        test's query cannot pass as "no rows". Times come back as integers in
        ``epoch`` units (ns by default); ``epoch=None`` gives RFC 3339 strings.
        """
        params = {"q": influxql}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        # POST with the query in the URL: InfluxDB requires POST for statements that
        # change things (CREATE, DROP) and accepts it for SELECT and SHOW as well.
        status, raw = self._request("/query", params, b"", "application/x-www-form-urlencoded")
        try:
            answer: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise ServerError(
                f"InfluxDB /query answered HTTP {status} with non-JSON: {raw[:500]!r}"
            ) from exc
        errors = [answer["error"]] if "error" in answer else []
        errors += [r["error"] for r in answer.get("results", []) if "error" in r]
        if status != 200 or errors:
            raise ServerError(
                f"InfluxDB query failed (HTTP {status}): {'; '.join(errors) or raw[:500]!r}\n"
                f"query: {influxql}"
            )
        return answer

    def create_database(self, name: str) -> None:
        """Create database ``name`` (a no-op if it exists)."""
        self.query(None, f"CREATE DATABASE {quote_ident(name)}")

    def write(
        self,
        db: str,
        lines: str | Iterable[str],
        *,
        precision: str = "ns",
        rp: str | None = None,
    ) -> None:
        """Write line protocol through ``POST /write``; raise ServerError unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        status, raw = self._request("/write", params, body.encode(), "text/plain; charset=utf-8")
        if status != 204:
            raise ServerError(f"InfluxDB /write answered HTTP {status}: {raw[:500]!r}")


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier (database, measurement, tag or field name)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# -- RabbitMQ: a cluster of nodes on one machine ------------------------------------------

# What the tests' and the cluster profile's nodes run: MQTT for every client of the station,
# the consistent-hash exchange for partitioning the ingest (later). No management plugin.
RABBITMQ_PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange")


def _rabbitmq_scripts(binary: str) -> Path:
    """The directory of RabbitMQ's own scripts (rabbitmq-server, rabbitmqctl). Debian's
    /usr/sbin/rabbitmq-server is a wrapper that, run as root, switches to the 'rabbitmq'
    user and its home (/var/lib/rabbitmq): a node of ours must run as whoever starts it,
    with its files in its own directory, so the wrapper is stepped around."""
    real = Path(os.path.realpath(binary))
    return real.parent


class EpmdServer(_Server):
    """The Erlang port mapper of one RabbitMQ cluster, on its own loopback port: the
    cluster's nodes (and rabbitmqctl) find each other through it and through no other, so
    a test's cluster never meets another one, nor a system RabbitMQ. Run in the
    foreground as our child, so stopping it is stopping a process we own (an epmd that a
    node starts by itself daemonises and outlives everything)."""

    binary_name = "epmd"
    package = "erlang-base"
    scheme = "epmd"

    def _write_config(self) -> None:
        pass

    def _command(self, binary: str) -> list[str]:
        return [binary, "-port", str(self._port), "-address", self._host]

    def _probe_ready(self) -> bool:
        return _accepts(self._host, self._port)


class RabbitMQNode(_Server):
    """One RabbitMQ node: MQTT on ``port`` (what MQTT clients use: ``host``, ``port``),
    AMQP on ``amqp_port``, Erlang distribution on ``dist_port``, its database (mnesia, the
    quorum queues' Raft logs), log, rabbitmq.conf and enabled plugins in its data
    directory. Made by RabbitMQCluster, which gives it the cluster's Erlang cookie (through
    HOME) and port mapper (ERL_EPMD_PORT).

    The node runs in the foreground as our child (RABBITMQ_ALLOW_INPUT makes the script
    exec the Erlang VM, with -noinput), so ``pid`` is the VM's: stop() is SIGTERM (a
    graceful stop, about a second), kill() is SIGKILL (a crash)."""

    binary_name = "rabbitmq-server"
    package = "rabbitmq-server"
    scheme = "mqtt"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        nodename: str,
        home: Path,
        epmd_port: int,
        binary: str | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        own_session: bool = False,
        extra_config: Sequence[str] = (),
    ) -> None:
        mqtt, amqp, dist = _free_ports(3)
        super().__init__(data_dir, port=mqtt, binary=binary, start_timeout=start_timeout,
                         stop_timeout=stop_timeout, own_session=own_session)
        self.nodename = nodename
        self.amqp_port = amqp
        self.dist_port = dist
        self.home = home
        self.epmd_port = epmd_port
        self.extra_config = list(extra_config)

    @property
    def config_path(self) -> Path:
        return self._data_dir / "rabbitmq.conf"

    @property
    def mqtt_address(self) -> str:
        """host:port of its MQTT listener, as MqttConfig's hosts list takes it."""
        return f"{self._host}:{self._port}"

    def _ports(self) -> list[int]:
        return [self._port, self.amqp_port, self.dist_port]

    def config_lines(self) -> list[str]:
        return [
            f"listeners.tcp.default = {self._host}:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = {self._host}:{self._port}",
            # Every client of the station logs in: no guest fallback for MQTT.
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            # A persistent session's queue replicated by Raft on every node (a clean
            # session's stays a classic queue on the node it was made on).
            "mqtt.durable_queue_type = quorum",
            "log.console = false",
            "log.file.level = info",
            *self.extra_config,
        ]

    def _write_config(self) -> None:
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")
        (self._data_dir / "enabled_plugins").write_text(f"[{','.join(RABBITMQ_PLUGINS)}].\n")

    def resolve_binary(self) -> str:
        found = super().resolve_binary()
        return str(_rabbitmq_scripts(found) / "rabbitmq-server")

    def rabbitmqctl(self) -> str:
        return str(_rabbitmq_scripts(self.resolve_binary()) / "rabbitmqctl")

    def _command(self, binary: str) -> list[str]:
        return [binary]

    def _child_env(self) -> dict[str, str]:
        d = self._data_dir
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_", "CONFIG_FILE"))}
        env.update(
            HOME=str(self.home),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=self._host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONFIG_FILE=str(self.config_path),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            # exec the VM (no shell in between, so our pid is the node's), without a shell
            RABBITMQ_ALLOW_INPUT="1",
            RABBITMQ_SERVER_START_ARGS="-noinput",
            # Distribution (node to node, rabbitmqctl) on loopback only, not on every
            # interface: the cookie is all that guards it.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def ctl_env(self) -> dict[str, str]:
        """The environment rabbitmqctl needs to reach this node (cookie, port mapper)."""
        env = self._child_env()
        # The CLI's own distribution port: one nobody else holds (its default range,
        # 35672-35682, is shared by every rabbitmqctl on the machine).
        port = free_port(self._host)
        env.update(RABBITMQ_CTL_DIST_PORT_MIN=str(port), RABBITMQ_CTL_DIST_PORT_MAX=str(port))
        return env

    def _log_files(self) -> list[Path]:
        return [self.log_path, self._data_dir / "log" / f"{self.nodename}.log"]

    def _probe_ready(self) -> bool:
        # The MQTT listener opens once the broker has booted and its plugins started.
        return _accepts(self._host, self._port) and _accepts(self._host, self.amqp_port)

    def ctl(self, *args: str, timeout: float = 60.0, stdin: str | None = None) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node; its output, or ServerError."""
        cmd = [self.rabbitmqctl(), "-n", self.nodename, *args]
        try:
            done = subprocess.run(cmd, env=self.ctl_env(), cwd=self._data_dir,
                                  capture_output=True, text=True, timeout=timeout,
                                  input=stdin, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"rabbitmqctl {' '.join(args)}: no answer within {timeout:g} s"
                              ) from exc
        if done.returncode != 0:
            raise ServerError(f"rabbitmqctl -n {self.nodename} {' '.join(args[:2])} failed "
                              f"(exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<RabbitMQNode {self.nodename} mqtt {self.mqtt_address} {state}>"


class RabbitMQCluster:
    """N RabbitMQ nodes on loopback forming one cluster: each with its own node name
    (``gs-<random>-<i>@localhost``), ports (MQTT, AMQP, distribution) and data directory;
    one Erlang cookie (in the cluster directory, their HOME) and one port mapper of their
    own (EpmdServer, on an ephemeral port).

    start() starts every node at once (each boots in about 15 s here, the three together in
    about 30 s on two cores), then joins the others to the first (stop_app, join_cluster,
    start_app). ``nodes[i]`` stops, kills and starts again like the other servers; a node
    started again rejoins the cluster by itself (its database remembers it). stop() stops
    every node, then the port mapper; close() also deletes the directory it created.
    ``mqtt_hosts`` is the list of MQTT addresses a client fails over between."""

    def __init__(self, size: int = 3, data_dir: str | os.PathLike[str] | None = None, *,
                 binary: str | None = None, start_timeout: float = 180.0,
                 extra_config: Sequence[str] = ()) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        if data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="gs-rabbitmq-"))
            self._owns_data_dir = True
        else:
            self.data_dir = Path(data_dir).resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._owns_data_dir = False
        self.name = f"gs-{secrets.token_hex(3)}"
        cookie = self.data_dir / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self.epmd = EpmdServer(self.data_dir / "epmd")
        self.nodes = [
            RabbitMQNode(self.data_dir / f"node{i}", nodename=f"{self.name}-{i}@localhost",
                         home=self.data_dir, epmd_port=self.epmd.port, binary=binary,
                         start_timeout=start_timeout, extra_config=extra_config)
            for i in range(1, size + 1)]
        self.last_start_seconds: float | None = None  # every node up
        self.last_join_seconds: float | None = None  # the joins, after that

    @property
    def mqtt_hosts(self) -> list[str]:
        return [n.mqtt_address for n in self.nodes]

    def resolve_binary(self) -> str:
        return self.nodes[0].resolve_binary()

    def running_nodes(self) -> list[RabbitMQNode]:
        return [n for n in self.nodes if n.is_running()]

    def ctl(self, *args: str, stdin: str | None = None) -> str:
        """rabbitmqctl against the first running node (users, permissions and the cluster's
        metadata are the same on every node)."""
        running = self.running_nodes()
        if not running:
            raise ServerError("no node of the cluster is running")
        return running[0].ctl(*args, stdin=stdin)

    def start(self) -> Self:
        """Start every node and form the cluster; ServerError (with the failing node's log)
        when a node does not come up or join."""
        self.nodes[0].resolve_binary()  # BinaryNotFoundError before anything starts
        began = time.monotonic()
        try:
            self.epmd.start()
            errors: list[BaseException] = []

            def start(node: RabbitMQNode) -> None:
                try:
                    node.start()
                except BaseException as exc:  # reported below, with the others
                    errors.append(exc)

            threads = [threading.Thread(target=start, args=(n,), name=n.nodename)
                       for n in self.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self.last_start_seconds = time.monotonic() - began
            joined = time.monotonic()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
            self.last_join_seconds = time.monotonic() - joined
            self.check_members()
        except BaseException:
            self.stop()
            raise
        return self

    def check_members(self) -> None:
        """ServerError unless every running node sees every node of the cluster."""
        want = {n.nodename for n in self.nodes}
        for node in self.running_nodes():
            status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
            got = set(status.get("disk_nodes", [])) | set(status.get("ram_nodes", []))
            if got != want:
                raise ServerError(f"{node.nodename} sees the cluster as {sorted(got)}, "
                                  f"not {sorted(want)}")

    def stop(self) -> None:
        """Stop every node (SIGTERM, all at once), then the port mapper. Idempotent."""
        threads = [threading.Thread(target=n.stop) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.epmd.stop()
        if _accepts(LOOPBACK, self.epmd.port):
            # An epmd a node started by itself (ours was not up): it daemonised, so it is
            # no child of ours; ask it to go.
            with contextlib.suppress(OSError, ServerError, subprocess.SubprocessError):
                subprocess.run([self.epmd.resolve_binary(), "-port", str(self.epmd.port),
                                "-kill"], capture_output=True, timeout=10, check=False)

    def close(self) -> None:
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RabbitMQCluster {self.name} {self.nodes}>"
