"""A RabbitMQ cluster on one machine, for the cluster profile's tests (issue 16): N nodes
on loopback, each with its own node name, ports (MQTT, AMQP, distribution), data directory
and rabbitmq.conf, one Erlang cookie and a port mapper (epmd) of their own; joined with
rabbitmqctl; a node can be stopped, killed and started again, as the other servers of
groundstation.deploy.servers."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from groundstation.deploy.servers import (
    LOOPBACK,
    ServerError,
    _accepts,
    _free_ports,
    _Server,
    free_port,
)

__all__ = ["RABBITMQ_PLUGINS", "EpmdServer", "RabbitMQCluster", "RabbitMQNode"]


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
