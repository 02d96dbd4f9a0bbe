"""groundstation.mqtt without a broker: the backoff policy, TLS settings that cannot load,
client ids, refusals in words; groundstation.tasks: a dead task named."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from groundstation.config import ConfigError, MqttConfig
from groundstation.mqtt import (
    Backoff,
    BrokerError,
    MqttClient,
    _ReadAhead,
    account_client_id,
    tls_context,
    unique_id,
)
from groundstation.tasks import TaskGroup


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    low = Backoff(first=0.2, maximum=10.0, rand=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0,
                                                        5.0]
    high = Backoff(first=0.2, maximum=10.0, rand=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(8)] == [0.3, 0.6, 1.2, 2.4, 4.8, 9.6, 10.0,
                                                         10.0]
    high.reset()
    assert round(high.next(), 3) == 0.3
    with pytest.raises(ValueError):
        Backoff(first=5, maximum=1)


def test_the_maximum_wait_is_the_configured_one() -> None:
    client = MqttClient(MqttConfig(reconnect_max_s=3.0), name="x")  # type: ignore[call-arg]
    assert client.backoff.maximum == 3.0


def test_client_ids() -> None:
    # The ingest's fixed id is the schema's default: nobody else takes it unless told to.
    anyone = MqttClient(MqttConfig(), name="console")  # type: ignore[call-arg]
    assert anyone.client_id.startswith("gs-console-") and anyone.client_id != unique_id("x")
    told = MqttClient(MqttConfig(client_id="apollo-1"), name="sim")  # type: ignore[call-arg]
    assert told.client_id == "apollo-1"
    assert MqttClient(MqttConfig(), name="sim", client_id="x").client_id == "x"  # type: ignore[call-arg]


def test_tls_files_that_cannot_load_are_config_errors(tmp_path: Path) -> None:
    assert tls_context(MqttConfig()) is None  # type: ignore[call-arg]
    ctx = tls_context(MqttConfig(tls=True))  # type: ignore[call-arg]
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ConfigError, match=r"\[mqtt\] ca_file .*absent.pem: cannot load it"):
        tls_context(MqttConfig(tls=True, ca_file=tmp_path / "absent.pem"))  # type: ignore[call-arg]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ca_file .*junk\.pem: cannot load it"):
        MqttClient(MqttConfig(tls=True, ca_file=tmp_path / "junk.pem"),  # type: ignore[call-arg]
                   name="x")
    with pytest.raises(ConfigError, match=r"cert_file .*junk\.pem: cannot load the client"):
        tls_context(MqttConfig(tls=True, cert_file=tmp_path / "junk.pem"))  # type: ignore[call-arg]
    off = tls_context(MqttConfig(tls=True, tls_verify=False))  # type: ignore[call-arg]
    assert off is not None and off.verify_mode == ssl.CERT_NONE


async def test_nobody_listening_is_said_in_words_and_retried() -> None:
    errors: list[BrokerError] = []
    client = MqttClient(MqttConfig(host="127.0.0.1", port=1),  # type: ignore[call-arg]
                        name="x", on_disconnect=errors.append, fail_fast=True,
                        backoff=Backoff(first=0.01, maximum=0.02))
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop=stop))
    while len(errors) < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)  # not a refusal: fail_fast does not end it
    assert str(errors[0]) == ("broker mqtt://127.0.0.1:1: nothing is listening there "
                              "(connection refused)")
    assert not client.connected and client.failures >= 3


async def test_a_dead_task_is_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("lost the mission clock")

    with caplog.at_level(logging.ERROR), pytest.raises(BaseExceptionGroup) as err:
        async with TaskGroup("sim") as tasks:
            tasks.create_task(asyncio.sleep(10), name="fly")
            tasks.create_task(boom(), name="publish")
    assert "task sim/publish died: RuntimeError: lost the mission clock" in caplog.text
    (exc,) = err.value.exceptions
    assert "in task sim/publish" in (exc.__notes__ or [])


async def test_expected_endings_are_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    async def lost() -> None:
        raise BrokerError("broker gone")

    with caplog.at_level(logging.DEBUG), pytest.raises(BaseExceptionGroup):
        async with TaskGroup("feed", expected=(BrokerError,)) as tasks:
            tasks.create_task(lost(), name="receive")
    assert "task feed/receive ended: broker gone" in caplog.text
    assert "died" not in caplog.text


async def test_a_nested_group_of_expected_endings_is_not_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    async def session() -> None:  # its own task group, whose tasks all lost the broker
        async with TaskGroup("session", expected=(BrokerError,)) as inner:
            inner.create_task(lost(), name="receive")

    async def lost() -> None:
        raise BrokerError("broker gone")

    async def bug() -> None:
        async with TaskGroup("session", expected=(BrokerError,)) as inner:
            inner.create_task(lost(), name="receive")
            inner.create_task(asyncio.sleep(0, result=1 / 0), name="maths")

    with caplog.at_level(logging.DEBUG), pytest.raises(BaseExceptionGroup):
        async with TaskGroup("ingest", expected=(BrokerError,)) as tasks:
            tasks.create_task(session(), name="session")
    assert "task ingest/session ended" in caplog.text and "died" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(BaseExceptionGroup):
        async with TaskGroup("ingest", expected=(BrokerError,)) as tasks:
            tasks.create_task(bug(), name="session")
    assert "task ingest/session died" in caplog.text  # a bug among them: an error


# --- several brokers -----------------------------------------------------------------------


async def test_each_failure_moves_to_the_next_broker(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BrokerError] = []
    config = MqttConfig(hosts=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])  # type: ignore[call-arg]
    client = MqttClient(config, name="x", on_disconnect=errors.append,
                        backoff=Backoff(first=0.01, maximum=0.02))
    assert client.address == "mqtt://127.0.0.1:1"
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="groundstation.mqtt"):
        task = asyncio.create_task(client.run(stop=stop))
        while len(errors) < 7:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
    ports = [str(e).split(":")[2].split(" ")[0] for e in errors[:7]]
    assert ports == ["1", "2", "3", "1", "2", "3", "1"]
    assert "trying mqtt://127.0.0.1:2 in" in caplog.text
    assert "trying mqtt://127.0.0.1:1 in" in caplog.text  # round and round


async def test_connect_first_gives_up_only_when_no_broker_answers() -> None:
    errors: list[BrokerError] = []
    config = MqttConfig(hosts=["127.0.0.1:1", "127.0.0.1:2"])  # type: ignore[call-arg]
    client = MqttClient(config, name="x", on_disconnect=errors.append, connect_first=True,
                        backoff=Backoff(first=0.01, maximum=0.02))
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1:2: nothing is listening"):
        await client.run()
    assert len(errors) == 2


async def test_one_connection_tries_each_broker_once(caplog: pytest.LogCaptureFixture) -> None:
    config = MqttConfig(hosts=["127.0.0.1:1", "127.0.0.1:2"])  # type: ignore[call-arg]
    client = MqttClient(config, name="replay")
    with caplog.at_level(logging.WARNING, logger="groundstation.mqtt"), \
            pytest.raises(BrokerError, match=r"127\.0\.0\.1:2: nothing is listening"):
        async with client.connect():
            pass
    assert "127.0.0.1:1: nothing is listening there (connection refused); trying " \
           "mqtt://127.0.0.1:2" in caplog.text


def test_the_wait_between_brokers_is_short_and_leaves_the_backoff_alone() -> None:
    b = Backoff(first=0.2, maximum=10, rand=lambda: 1.0)
    assert b.short() == pytest.approx(0.3)
    assert b.next() == pytest.approx(0.3)
    assert b.short() == pytest.approx(0.3)
    assert b.next() == pytest.approx(0.6)


def test_an_ipv6_broker_is_shown_in_brackets() -> None:
    client = MqttClient(MqttConfig(hosts=["[::1]:1884"]), name="x")  # type: ignore[call-arg]
    assert client.address == "mqtt://[::1]:1884"
    assert client.destination == "mqtt://[::1]:1884"
    two = MqttClient(MqttConfig(hosts=["a:1", "b:2"]), name="x")  # type: ignore[call-arg]
    assert two.destination == "the first that answers of mqtt://a:1, mqtt://b:2"


def test_a_clean_client_takes_a_new_id_per_attempt_only_with_several_brokers() -> None:
    several = MqttConfig(hosts=["a:1", "b:2"])  # type: ignore[call-arg]
    client = MqttClient(several, name="x", client_id="console-flight")
    client._attempts = 3
    assert client.identifier() == "console-flight-3"
    kept = MqttClient(several, name="x", client_id="ingest", clean_session=False)
    assert kept.identifier() == "ingest"
    one = MqttClient(MqttConfig(host="a"), name="x", client_id="console-flight")  # type: ignore[call-arg]
    assert one.identifier() == "console-flight"


# --- retained messages on every broker (retain_on_all_hosts) --------------------------------


async def _run_until_failures(client: MqttClient, errors: list[BrokerError], n: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop=stop))
    while len(errors) < n:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_retained_copies_with_one_broker_do_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BrokerError] = []
    config = MqttConfig(host="127.0.0.1", port=1, retain_on_all_hosts=True)  # type: ignore[call-arg]
    client = MqttClient(config, name="one", on_disconnect=errors.append,
                        backoff=Backoff(first=0.01, maximum=0.02))
    with caplog.at_level(logging.DEBUG, logger="groundstation"):
        await _run_until_failures(client, errors, 3)
    assert "retain" not in caplog.text  # no side connection, no task of its own
    await asyncio.wait_for(client.retained_everywhere(), 1)  # nothing to wait for


async def test_a_dead_broker_of_the_copies_is_retried_in_the_background_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BrokerError] = []
    config = MqttConfig(hosts=["127.0.0.1:1", "127.0.0.1:2"],  # type: ignore[call-arg]
                        retain_on_all_hosts=True)
    client = MqttClient(config, name="two", on_disconnect=errors.append,
                        backoff=Backoff(first=0.01, maximum=0.02))
    with caplog.at_level(logging.INFO, logger="groundstation.mqtt"):
        await _run_until_failures(client, errors, 12)  # run() ends as ever: no exception
    side = [r for r in caplog.records if r.getMessage().startswith("[two/retain-1] ")]
    # The side connection to the second broker (the client itself tries the first),
    # retried with the client's backoff: said once as a warning, then at INFO.
    assert side and "mqtt://127.0.0.1:2: nothing is listening" in side[0].getMessage()
    assert len(side) > 1
    assert [r.levelno for r in side].count(logging.WARNING) == 1


async def test_with_retained_copies_the_errors_are_the_same() -> None:
    config = MqttConfig(hosts=["127.0.0.1:1", "127.0.0.1:2"],  # type: ignore[call-arg]
                        retain_on_all_hosts=True)
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1:2: nothing is listening"):
        async with MqttClient(config, name="replay").connect():
            pass
    client = MqttClient(config, name="x", connect_first=True,
                        backoff=Backoff(first=0.01, maximum=0.02))
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1:2: nothing is listening"):
        await client.run()


def test_a_client_presents_its_id_under_its_accounts_name() -> None:
    # The cluster lets an account subscribe only under its own prefix (rabbitmq_auth).
    assert account_client_id("flight", "gs-console-1") == "flight.gs-console-1"
    assert account_client_id("flight", "flight.gs-console-1") == "flight.gs-console-1"
    assert account_client_id("flight", "flightx") == "flight.flightx"
    assert account_client_id(None, "gs-console-1") == "gs-console-1"
    ingest = MqttClient(MqttConfig(username="ingest"), name="ingest",  # type: ignore[call-arg]
                        client_id="groundstation-ingest", clean_session=False)
    assert ingest.identifier() == "ingest.groundstation-ingest"
    several = MqttConfig(hosts=["a:1", "b:2"], username="flight")  # type: ignore[call-arg]
    console = MqttClient(several, name="x", client_id="console-flight")
    console._attempts = 3
    assert console.identifier() == "flight.console-flight-3"


class _Socket:
    """A socket that has some chunks of bytes to give, then would block."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.calls = 0

    def recv(self, n: int) -> bytes:
        self.calls += 1
        if not self.chunks:
            raise BlockingIOError
        data, rest = self.chunks[0][:n], self.chunks[0][n:]
        self.chunks[0:1] = [rest] if rest else []
        return data

    def fileno(self) -> int:
        return 7


def test_read_ahead_gives_paho_the_same_bytes_in_one_recv_and_says_what_is_pending() -> None:
    # Two PUBLISH packets and a PINGRESP as the broker sent them, in one segment.
    stream = (b"\x30\x07\x00\x01a" + b"xyzw" + b"\x30\x81\x01\x00\x01b" + bytes(126)
              + b"\xd0\x00")
    sock = _Socket(stream)
    ahead = _ReadAhead(sock)
    got = b""
    for n in (1, 1, 7, 1, 1, 1, 129, 1, 1):  # paho's reads: type, length byte(s), the rest
        got += ahead.recv(n)
        assert ahead.pending() == len(stream) - len(got)  # read ahead, not yet taken
    assert got == stream and sock.calls == 1
    with pytest.raises(BlockingIOError):  # nothing more: as the socket says
        ahead.recv(1)
    assert ahead.fileno() == 7  # everything else is the socket's

    # A packet split across two segments: the first part, then the rest when it comes.
    sock = _Socket(b"\x30\x07\x00\x01a", b"xyzw")
    ahead = _ReadAhead(sock)
    assert ahead.recv(1) + ahead.recv(1) + ahead.recv(7) == b"\x30\x07\x00\x01a"
    assert ahead.pending() == 0
    assert ahead.recv(4) == b"xyzw"
