"""`groundstation demo` as a user runs it: a child process, real servers, real ships.

The console itself is tested in tests/test_console.py; here the demo's own job: it starts
the servers it can, the ingest and both ships, values arrive through the real pipeline, and
it stops everything it started, on time or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from paho.mqtt import publish as paho_publish

from groundstation.deploy import embedded_broker
from groundstation.deploy.servers import find_binary
from groundstation.storage.archive import DATA_SUFFIX

VALUE_LINE = re.compile(r"^GET 044:\d\d:\d\d  Apollo CSM: CABIN PRESS (\d+\.\d+) psia", re.M)
SOYUZ_LINE = re.compile(r"^GET 044:\d\d:\d\d  Soyuz 19: DESC MOD PRESS (\d+\.\d+) psia", re.M)


def need(binary: str) -> None:
    if find_binary(binary) is None:
        package = "influxdb" if binary == "influxd" else binary
        msg = f"{binary} not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so this is a failure", pytrace=False)
        pytest.skip(msg)


def demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "groundstation", "demo", "--no-console",
         "--data-dir", str(tmp_path / "demo"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def until_values(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """What the demo printed up to its first Apollo value line (it is killed if none comes
    within the timeout)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if VALUE_LINE.search(line):
            return seen
    proc.kill()
    pytest.fail(f"no values within {timeout:g} s:\n{seen}")


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention the demo's data directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmd:
            found.append(cmd)
    return found


def test_demo_runs_the_real_pipeline_and_stops_everything(tmp_path: Path) -> None:
    need("mosquitto")
    need("influxd")
    t0 = time.monotonic()
    proc = demo(tmp_path, "--seconds", "12")
    out, _ = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, out
    assert "broker    Mosquitto at 127.0.0.1:" in out
    assert "database  InfluxDB at http://127.0.0.1:" in out
    # Nominal docked cabins: Apollo near 5 psia, Soyuz lowered to ~510 mm Hg (9.9 psia).
    apollo = [float(x) for x in VALUE_LINE.findall(out)]
    soyuz = [float(x) for x in SOYUZ_LINE.findall(out)]
    assert apollo and all(4.7 < x < 5.4 for x in apollo), out
    assert soyuz and all(9.0 < x < 10.5 for x in soyuz), out
    stored = {v: int(n) for n, v in re.findall(r"InfluxDB holds (\d+) frames of (\w+)", out)}
    # Apollo sends 50 frames a second in contact; at least several seconds of it arrived.
    assert stored["apollo_csm"] > 200, out
    assert stored["soyuz"] > 40, out
    assert elapsed < 60, f"the demo took {elapsed:.0f} s"
    assert processes_using(tmp_path / "demo") == []


def test_demo_without_mosquitto_or_influxdb_uses_the_embedded_broker(tmp_path: Path) -> None:
    if not embedded_broker.available():
        pytest.skip("amqtt not installed: pip install 'groundstation[embedded]'")
    proc = demo(tmp_path, "--seconds", "10", "--broker", "embedded", "--database", "none")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "broker    embedded MQTT broker (amqtt)" in out
    assert "database  none (--database none)" in out
    assert VALUE_LINE.search(out) and SOYUZ_LINE.search(out), out
    assert "InfluxDB holds" not in out
    # The archive still records every frame without a database.
    assert list((tmp_path / "demo" / "archive" / "live" / "apollo_csm").rglob("*" + DATA_SUFFIX))
    assert processes_using(tmp_path / "demo") == []


def test_ctrl_c_stops_the_ships_the_ingest_and_the_servers(tmp_path: Path) -> None:
    need("mosquitto")
    need("influxd")
    deadline = time.monotonic() + 60  # the later steps' waits count from here
    proc = demo(tmp_path)
    seen = until_values(proc)
    assert proc.stdout is not None
    # broker, database, ingest, commanding, ships
    assert len(processes_using(tmp_path / "demo")) >= 5
    assert "commanding running: c in the console sends commands as flight" in seen
    # An instructor breaks the cabin pressure sensor through the simulator's control topic:
    # the demo prints the alarm the ingest raises.
    port = int(re.search(r"Mosquitto at 127\.0\.0\.1:(\d+)", seen)[1])  # type: ignore[index]
    paho_publish.single("sim/control/apollo_csm", hostname="127.0.0.1", port=port, qos=1,
                        payload='{"cmd": "inject", "fault": "sensor_bias", '
                                '"params": {"parameter": "cabin_press", "offset": -1.5}}')
    while time.monotonic() < deadline + 30:
        line = proc.stdout.readline()
        seen += line
        if line.startswith("ALARM "):
            assert line.strip() == "ALARM raised: apollo_csm CABIN PRESS red"
            break
    else:
        proc.kill()
        pytest.fail(f"no alarm printed:\n{seen}")
    # The demo's operator sends CREW ALERT (as the console's c key does): the commanding
    # service sends it up, the ship lights it, the telemetry verifies it.
    paho_publish.single("cmd/request/flight/apollo_csm", hostname="127.0.0.1", port=port,
                        qos=1, payload='{"request_id": "demo-1", "command": "crew_alert"}')
    stages = []
    while time.monotonic() < deadline + 90:
        line = proc.stdout.readline()
        seen += line
        if line.startswith("COMMAND "):
            stages.append(line.split(":")[0].removeprefix("COMMAND "))
            if stages[-1] in ("verified", "failed"):
                assert line.strip() == ("COMMAND verified: apollo_csm crew_alert "
                                        "(flight/FLIGHT)"), seen
                break
    else:
        proc.kill()
        pytest.fail(f"the command was not verified:\n{seen}")
    assert stages == ["queued", "sent", "received", "verified"]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, seen + rest
    assert "InfluxDB holds" in rest
    assert processes_using(tmp_path / "demo") == []


def children_of(pid: int) -> dict[int, str]:
    """The live processes whose parent is pid, with their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The parent's pid is the second field after the command name in parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry)] = cmd
    return found


def test_a_killed_demo_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives the demo no chance to stop its children, which run
    in their own sessions: they stop by themselves when it dies."""
    need("mosquitto")
    need("influxd")
    proc = demo(tmp_path)
    until_values(proc)
    children = children_of(proc.pid)
    # broker, database, ingest, commanding, ships
    assert len(children) == 5, children
    assert any(" sim both " in cmd for cmd in children.values()), children
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 30

    def alive() -> dict[int, str]:
        left = {}
        for pid, cmd in children.items():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone
            if state != "Z":  # a zombie has stopped; only its exit status waits
                left[pid] = cmd
        return left

    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive()
    for pid in left:  # do not leave them to the next test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == {}, "still running after the demo was killed:\n" + "\n".join(left.values())


ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[a-zA-Z~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\x1b[=>]")


def test_the_readme_demo_command_shows_the_houston_console_with_live_values(
        tmp_path: Path) -> None:
    """`groundstation demo` in a terminal (a pseudo-terminal here): the Houston console
    with live values within a minute; Ctrl-C stops the console and everything else."""
    need("mosquitto")
    need("influxd")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 150, 0, 0))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "groundstation", "demo", "--data-dir", str(tmp_path / "demo")],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "45"})
    os.close(slave)
    screen = b""
    value = None
    try:
        while value is None and time.monotonic() - t0 < 60:
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 1 << 16)
                text = ANSI.sub(b"", screen).decode("utf-8", "replace")
                m = re.search(r"CABIN PRESS\.+\s*(\d+\.\d+)", text)
                value = float(m.group(1)) if m else None
        shown_after = time.monotonic() - t0
        assert value is not None, ANSI.sub(b"", screen).decode("utf-8", "replace")[-3000:]
        text = ANSI.sub(b"", screen).decode("utf-8", "replace")
        assert "MCC-H" in text and "GET" in text
        assert 4.7 < value < 5.4  # the docked cabin, nominal, in psia
        assert shown_after < 60
        os.write(master, b"\x03")  # Ctrl-C, as the terminal sends it to the console
        with contextlib.suppress(OSError):
            while proc.poll() is None and select.select([master], [], [], 0.5)[0]:
                os.read(master, 1 << 16)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    assert processes_using(tmp_path / "demo") == []


def test_bad_start_is_refused_before_anything_starts(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--start", "dockingg-5m")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "--start" in out and "dockingg" in out
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())
