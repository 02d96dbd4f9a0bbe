"""The terminal console, driven headless with Textual's pilot against the real pipeline: both
simulated ships flying through a real Mosquitto into the real ingest (and InfluxDB), the
console reading only what the ingest publishes on MQTT.

Each console (Houston, Moscow) is driven through: live values in its language and units; a
sensor fault injected into the simulator that crosses a red limit, shown red in the alarm
list; the acknowledgement key, answered by the ingest with the operator's name; the shelve
and unshelve keys, answered the same way; a broker restart, which the console reports and
survives by itself. A screenshot of each console is
saved (and, with GS_SAVE_SCREENSHOTS=1, written to docs/screenshots/ for the README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import random
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from groundstation import console, console_pages
from groundstation.config import MqttConfig
from groundstation.console_feed import ConsoleModel, parse_topic
from groundstation.definitions import VehicleDefinition, load_all
from groundstation.influx_writer import InfluxV1
from groundstation.servers import InfluxDBServer, MosquittoServer
from simulators import timeline as tl
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.harness import rows, running_ingest, wait_for

A, S = tl.APOLLO, tl.SOYUZ
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
SIZE = (150, 46)
SPEED = 4.0


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture(scope="module")
def both_heard(defs: dict[str, VehicleDefinition]) -> float:
    """A GET after the first docking from which both ships stay in contact for 300 s
    (Soyuz is heard only over the Soviet stations, so this is where both consoles have
    both ships)."""
    probe = Mission(tl.DOCKING_1 - 1800, seed=1, definitions=defs)
    after = probe.t
    for _ in range(50):
        t = probe.find_coverage(S, after, 300)
        with contextlib.suppress(ValueError):
            if probe.find_coverage(A, t, 300, horizon=330) == t:
                return t
        after = t + 60
    raise AssertionError("no stretch where both ships are heard")


@contextlib.asynccontextmanager
async def flying(runner: SimRunner) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass(frozen=True)
class Case:
    centre: str
    position: str
    operator: str
    vehicle: str  # the ship whose sensor fails
    pid: str
    offset: float  # sensor bias in the parameter's own unit: past the red low limit
    label: str  # how the centre labels it
    unit: str  # how the centre writes its display unit
    nominal: tuple[float, float]  # plausible display values before the fault
    other_unit: str  # a unit only this centre uses, seen on the page
    lost: str  # the header while the broker is away
    acked: str  # the status line after the ingest's answer
    red: str
    unack: str
    ack: str
    shot_text: str
    shelved: str  # the status line after shelving
    unshelved: str  # ... and after unshelving


CASES = [
    Case("houston", "EECOM", "eecom", A, "cabin_press", -1.2, "CABIN PRESS", "psia",
         (4.7, 5.4), "°F", "BROKER LOST — reconnecting", "ACKNOWLEDGED", "RED", "UNACK",
         "ACK", "CABIN PRESS", "SHELVED for 10 min", "UNSHELVED"),
    Case("moscow", "СОЖ", "tsup", S, "sa_press", -120.0, "Давление в СА", "мм рт. ст.",
         (490.0, 560.0), "°C", "БРОКЕР ПОТЕРЯН — переподключение", "КВИТИРОВАН", "КРАСН",
         "НЕ КВИТ", "КВИТ", "Давление", "ОТЛОЖЕН на 10 мин", "ВОЗВРАЩЁН"),
]


def press(app: console.ConsoleApp, *keys: str) -> None:
    """Press keys without the pilot's wait for an idle CPU after each, which never comes
    while the ships, the ingest and the console share this process (up to 2 s a key);
    the test waits for each key's effect instead."""
    for key in keys:
        app.simulate_key(key)


def page_value(app: console.ConsoleApp, label: str) -> tuple[float, str]:
    """The number and unit the page shows after a label."""
    text = str(app.query_one("#page").render())
    m = re.search(re.escape(label[:console.LABEL_W]) + r"\.*\s+(-?\d+(?:\.\d+)?) ([^\s.]+(?: "
                  r"[^\s.]+\.?)*)", text)
    assert m, f"{label!r} not on the page:\n{text}"
    return float(m[1]), m[2].strip()


@pytest.mark.parametrize("case", CASES, ids=[c.centre for c in CASES])
async def test_console_through_fault_ack_and_broker_restart(
        case: Case, mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition], both_heard: float) -> None:
    mission = Mission(both_heard, seed=1, definitions=defs)
    runner = SimRunner(mission, [defs[A], defs[S]],
                       RunnerOptions(host=mosquitto.host, port=mosquitto.port, speed=SPEED))
    app = console.ConsoleApp(centre=case.centre, position=case.position,
                             mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
                             operator=case.operator, definitions=defs)
    field = app.fields[(case.vehicle, case.pid)]
    key = f"{case.vehicle}/{case.pid}"
    live = app.model.source("live")
    async with running_ingest(mosquitto, influxdb, tmp_path, defs, "console",
                              display_rate_hz=4) as ingest, flying(runner), \
            app.run_test(size=SIZE) as pilot:
        # 1. Live values of both ships, in the centre's language and units.
        await wait_for(lambda: all(live.vehicle(v).values and live.vehicle(v).aos(
            time.monotonic()) for v in (A, S)), 20, "both ships on the console")
        await pilot.pause(2 * console.REFRESH_S)
        shown, unit = page_value(app, case.label)
        canonical = live.vehicle(case.vehicle).values[case.pid][1]
        assert canonical is not None
        assert unit == case.unit
        assert case.nominal[0] <= shown <= case.nominal[1]
        # The page shows the ingest's value converted to the centre's unit (the value may
        # have moved on by one update since the page was drawn).
        assert abs(shown - field.convert(canonical)) < 0.03 * abs(shown) + 1.0
        screen = app.screen_text()
        assert case.other_unit in screen
        ships = console_pages.SHIP_SHORT[case.centre]
        header = screen.splitlines()[1]
        assert header.index(ships[A if case.centre == "houston" else S]) < header.index(
            ships[S if case.centre == "houston" else A])  # each centre's own ship first
        assert header.count(console_pages.word("aos", case.centre)) == 2
        if case.centre == "moscow":
            gmt = re.search(r"GMT \d{3}:(\d\d):(\d\d)", screen)
            msk = re.search(r"МСК \d\d\.07\.1975 (\d\d):(\d\d)", screen)
            assert gmt and msk and (int(msk[1]) - int(gmt[1])) % 24 == 3
        else:
            assert re.search(r"GET 0\d\d:\d\d:\d\d │ GMT 19\d:", screen)

        # 2. A sensor fault past the red limit: a red, unacknowledged alarm in the list.
        mission.inject(case.vehicle, "sensor_bias", {"parameter": case.pid,
                                                     "offset": case.offset})

        def alarm() -> list[str] | None:
            for k, cells in app.alarm_rows(live):
                if k == key:
                    return [c.plain for c in cells] + [str(cells[0].style)]
            return None

        await wait_for(lambda: (a := alarm()) is not None and a[6] == case.red, 20,
                       "the red alarm on the console")
        row = alarm()
        assert row is not None and row[7] == case.unack and "red1" in row[-1]
        assert "reverse" in row[-1]  # unacknowledged: highlighted
        value, limit = float(row[4].split()[0]), float(row[5].split()[0])
        assert value < limit < case.nominal[0]  # below the red low limit, in display units
        assert row[4].endswith(case.unit)
        await pilot.pause(2 * console.REFRESH_S)
        assert case.label in app.screen_text().split(console_pages.word(
            "alarms", case.centre))[-1]

        # 3. Select it and acknowledge: the ingest answers with the operator's name.
        table = app.query_one("#alarms")
        keys = [k for k, _ in app.alarm_rows(live)]
        steps = keys.index(key) - table.cursor_row  # type: ignore[attr-defined]
        press(app, *(["down"] * steps if steps > 0 else ["up"] * -steps))
        press(app, "a")
        await wait_for(lambda: any(e["kind"] == "acknowledged" and e["parameter"] == case.pid
                                   and e["operator"] == case.operator for e in live.events),
                       10, "the acknowledged event")
        await wait_for(lambda: case.acked in app.status_text.plain, 5, "the ingest's answer")
        assert case.operator in app.status_text.plain
        await wait_for(lambda: (a := alarm()) is not None and a[7] == case.ack
                       and a[8] == case.operator, 5, "the alarm shown acknowledged")
        await wait_for(lambda: bool(rows(InfluxV1(influxdb.url, "console"),
                                         "SELECT operator FROM alarms WHERE "
                                         f"event='acknowledged' AND parameter='{case.pid}'")),
                       10, "the acknowledgement stored")

        # 3b. Shelve it for the default ten minutes, then unshelve it: each through the
        # ingest, each event coming back on the alarm topic with the operator's name.
        def event(kind: str) -> dict[str, object] | None:
            return next((e for e in live.events if e["kind"] == kind
                         and e["parameter"] == case.pid), None)

        press(app, "h")
        await wait_for(lambda: (e := event("shelved")) is not None
                       and e["operator"] == case.operator, 10, "the shelved event")
        shelved = event("shelved")
        assert shelved is not None
        assert shelved["until_ns"] - shelved["time_ns"] == 600 * 10**9  # type: ignore[operator]
        await wait_for(lambda: case.shelved in app.status_text.plain, 5, "the shelve answer")
        shelved_text = console_pages.ALARM_STATE_TEXT["shelved"][case.centre == "moscow"]
        await wait_for(lambda: (a := alarm()) is not None and a[7].startswith(shelved_text)
                       and a[8] == case.operator, 5, "the alarm shown shelved")
        row = alarm()
        assert row is not None and "red1" not in row[-1] and "reverse" not in row[-1]
        assert app.alarm_rows(live)[-1][0] == key  # shelved alarms go last
        await pilot.pause(2 * console.REFRESH_S)
        title = app.screen_text().split(console_pages.word("alarms", case.centre))[-1]
        assert f"{console_pages.word('shelved', case.centre)} 1" in title.splitlines()[0]
        # The cursor stayed on the shelved alarm as it moved down the list: u unshelves it.
        press(app, "u")
        await wait_for(lambda: event("unshelved") is not None, 10, "the unshelved event")
        await wait_for(lambda: case.unshelved in app.status_text.plain, 5,
                       "the unshelve answer")
        # Still past its limit: back in the list as a fresh alarm, to be acknowledged again.
        await wait_for(lambda: (a := alarm()) is not None and a[7] == case.unack
                       and a[6] == case.red, 5, "the alarm back after unshelving")
        press(app, "u")  # not shelved any more: the ingest refuses, the console says so
        await wait_for(lambda: "✗" in app.status_text.plain
                       and "not shelved" in app.status_text.plain, 5, "the refusal")
        app._set_status("")
        press(app, "a")
        await wait_for(lambda: (a := alarm()) is not None and a[7] == case.ack, 5,
                       "the alarm acknowledged again")
        await wait_for(lambda: case.acked in app.status_text.plain, 5, "the second answer")

        # 4. The broker goes away and comes back: the console says so, reconnects by
        # itself, and fresh values arrive.
        # Frames made after this moment can only reach the console through the new broker.
        after_stop = runner.streams[case.vehicle].next_time_ns + 1_000_000_000
        connections = app.model.connections
        mosquitto.stop()
        await wait_for(lambda: case.lost in app.screen_text(), 10, "the broker-lost banner")
        await asyncio.sleep(1.0)
        mosquitto.start()
        await wait_for(lambda: app.model.connections > connections, 20, "a reconnection")
        try:
            await wait_for(lambda: (live.vehicle(case.vehicle).time_ns or 0) > after_stop
                           and live.vehicle(case.vehicle).aos(time.monotonic()), 20,
                           "fresh values after the restart")
        except AssertionError:
            pub = runner.publisher
            raise AssertionError(
                f"no fresh values after the broker restart: simulator connected "
                f"{pub.connected}, sent {pub.sent_frames} frames, {pub.queued_frames} queued; "
                f"ingest connected {ingest.connected.is_set()}, {ingest.frames_in} frames "
                f"in, {ingest.frames_stored} stored; console connected "
                f"{app.model.connected}") from None
        await pilot.pause(2 * console.REFRESH_S)
        screen = app.screen_text()
        assert case.lost not in screen and console_pages.word("broker_ok", case.centre) in screen
        shown, unit = page_value(app, case.label)
        assert unit == case.unit
        assert shown < case.nominal[0]  # still biased: the fault outlived the restart

        # 5. A screenshot of the console as it stands, once the link figures have settled
        # (the broker's redelivery after the restart shows as a short dip in quality).
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: all((live.vehicle(v).link.quality or 0) > 99
                                       for v in (A, S)), 7)
        await pilot.pause(2 * console.REFRESH_S)
        header = app.screen_text().splitlines()[1]
        assert header.count(console_pages.word("aos", case.centre)) == 2, header
        assert case.acked in app.status_text.plain  # the last answer stays on the status line
        path = Path(app.save_screenshot(f"console-{case.centre}.svg", str(tmp_path)))
        svg = html.unescape(path.read_text(encoding="utf-8")).replace("\xa0", " ")
        assert case.shot_text in svg and case.label in svg
        if os.environ.get("GS_SAVE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        assert ingest.rejected.get("bad_ack", 0) == 0


# --- without the pipeline: pages, sources, keys, the command line --------------------------


async def test_pages_sources_and_keys_without_a_broker(defs: dict[str, VehicleDefinition]
                                                       ) -> None:
    app = console.ConsoleApp(centre="houston", position="gnc",
                             mqtt=MqttConfig(host="127.0.0.1", port=1),  # nobody listens
                             operator="flight", definitions=defs)
    t = 174_845_349_000_000_000
    for source in ("live", "replay/r1", "training/d1"):
        app.model.on_message(f"params/{source}/{A}", json.dumps(
            {"vehicle": A, "source": source, "time_ns": t,
             "values": {"cabin_press": [t, 5.0 if source == "live" else 4.0, 0]}}).encode())
    async with app.run_test(size=SIZE) as pilot:
        assert app.pages[app.page_index].key == "GNC"
        await pilot.press("1")
        assert app.pages[app.page_index].key == "FLIGHT"
        await pilot.press("tab", "tab")
        assert app.pages[app.page_index].key == "GNC"
        await pilot.press("shift+tab")
        assert app.pages[app.page_index].key == "EECOM"
        await pilot.pause(2 * console.REFRESH_S)
        assert page_value(app, "CABIN PRESS") == (5.0, "psia")
        # The console never had a broker: it says so and keeps trying.
        await wait_for(lambda: "BROKER LOST — reconnecting" in app.screen_text(), 5)
        assert app.model.attempts >= 1
        await pilot.press("s")
        assert app.source == "replay/r1"
        await pilot.pause(2 * console.REFRESH_S)
        assert "REPLAY/R1" in app.screen_text().splitlines()[0]
        assert page_value(app, "CABIN PRESS") == (4.0, "psia")
        await pilot.press("s", "s")
        assert app.source == "live"
        await pilot.press("a")  # nothing selected: a message, no request
        assert "no alarm selected" in app.status_text.plain
        app._set_status("")
        await pilot.press("h")
        assert "no alarm selected" in app.status_text.plain
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert not app.is_running


def test_moscow_pages_speak_russian_in_metric(defs: dict[str, VehicleDefinition]) -> None:
    pages = console_pages.pages(defs, "moscow")
    assert [p.key for p in pages][:8] == ["ОБЗОР", "СОЖ", "СТР", "СЭП", "СУД", "ДУ", "ССВП",
                                          "РТС"]
    assert console_pages.find_page(pages, "SOZH") == 1
    soj = pages[1]
    assert soj.sections[0].title == "СОЮЗ-19"  # Soyuz first
    f = {x.pid: x for s in soj.sections for x in s.fields}
    assert f["cabin_press"].label == "Давление в КМ"
    # 5 psia is 258.6 mm Hg; one count of the sensor is 3.4 mm Hg, so no decimals
    assert f["cabin_press"].with_unit(5.0) == "259 мм рт. ст."
    assert f["sa_temp"].unit_text == "°C"
    with pytest.raises(ValueError, match="choose one of: FLIGHT, EECOM, GNC, INCO"):
        console_pages.find_page(console_pages.pages(defs, "houston"), "RETRO")
    houston = console_pages.fields(defs, "houston")
    assert houston[(S, "sa_temp")].with_unit(20.0) == "68.0 °F"


def trend_levels(text: str) -> list[int | None]:
    """The height of each column of a two-row trend, in eighths (None: no sample)."""
    top, bottom = text.splitlines()
    return [None if b == " " else console.BARS.index(b) + console.BARS.index(t)
            for t, b in zip(top, bottom, strict=True)]


def test_trends_are_drawn_against_the_limits(defs: dict[str, VehicleDefinition]) -> None:
    f = console_pages.fields(defs, "houston")[(A, "cabin_press")]
    assert f.yellow == (4.7, 5.4) and f.count == pytest.approx(0.1 / 1.5)
    # A steady cabin with two counts of noise: a flat line (one step of wobble at most),
    # not bars jumping between the bottom and the top as a min-max scale would draw it.
    rng = random.Random(1)
    steady = [(5.0 + rng.choice((-2, -1, 0, 1, 2)) * f.count, 0) for _ in range(240)]
    lo, hi = console_pages.trend_scale(f, [v for v, _ in steady])
    assert lo < 4.7 and hi > 5.4  # the yellow band, and at least 32 counts
    levels = trend_levels(console.trend_text(f, steady, 40, 2).plain)
    assert len(levels) == 40 and None not in levels
    assert max(levels) - min(levels) <= 1 and 6 <= levels[0] <= 10  # mid-scale
    # A leak through the yellow and red limits: the scale widens to take in the data, the
    # bars step down, green, then amber, then red.
    leak = [(5.0 - 0.01 * i, 0 if 5.0 - 0.01 * i >= 4.7 else -1 if 5.0 - 0.01 * i >= 4.3
             else -2) for i in range(90)]
    lo, hi = console_pages.trend_scale(f, [v for v, _ in leak])
    assert lo <= 4.11
    text = console.trend_text(f, leak, 40, 2)
    levels = trend_levels(text.plain)
    shown = [x for x in levels if x is not None]
    assert len(shown) == 40  # 90 samples shared out over the width
    assert shown == sorted(shown, reverse=True) and shown[0] - shown[-1] >= 5
    # Each row is a run of green, then amber, then red bars.
    assert [str(span.style) for span in text.spans] == ["green3", "orange1", "bold red1"] * 2
    # A short history is not stretched: one sample a column, the newest at the right.
    levels = trend_levels(console.trend_text(f, leak[:25], 40, 2).plain)
    assert levels[:15] == [None] * 15 and None not in levels[15:]


def test_topics_and_model() -> None:
    assert parse_topic("params/live/soyuz") == ("params", "live", "soyuz")
    assert parse_topic("alarms/replay/r1/apollo_csm/active") == ("active", "replay/r1",
                                                                 "apollo_csm")
    assert parse_topic("ingest/link/training/d1/soyuz") == ("link", "training/d1", "soyuz")
    assert parse_topic("alarms/replies/eecom") is None
    m = ConsoleModel()
    m.on_message("params/live/soyuz", b"not json")
    m.on_message("params/live/soyuz", b'{"values": 3}')
    assert m.bad_messages == 2
    m.on_message("ingest/link/live/soyuz", json.dumps(
        {"frames_good": 100, "sync_errors": 0, "counter_errors": 0, "frames_missing": 0,
         "last_frame_ns": 1}).encode(), now=10.0)
    m.on_message("ingest/link/live/soyuz", json.dumps(
        {"frames_good": 190, "sync_errors": 5, "counter_errors": 0, "frames_missing": 5,
         "last_frame_ns": 2}).encode(), now=11.0)
    link = m.source("live").vehicle("soyuz").link
    assert link.quality == pytest.approx(90.0) and link.frames_per_s == pytest.approx(90.0)
    v = m.source("live").vehicle("soyuz")
    assert v.aos(11.5) and not v.aos(11.0 + 3.5)  # LOS: no new frame for a few seconds


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="groundstation")
    sub = parser.add_subparsers(dest="command")
    console.add_parser(sub)
    args = parser.parse_args(["console", "moscow", "--position", "SOZH", "--mqtt-port", "1884",
                              "--mqtt-username", "kravets", "--operator", "other"])
    assert (args.centre, args.position, args.mqtt__port) == ("moscow", "SOZH", 1884)
    with pytest.raises(SystemExit):
        parser.parse_args(["console", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "groundstation console houston --position EECOM" in out
    assert "shelve the selected alarm for 10 minutes" in out and "unshelve" in out
    assert console.operator_name(MqttConfig(username="kravets"), "other") == "kravets"
    assert console.operator_name(MqttConfig(), "eecom") == "eecom"
    with pytest.raises(ValueError, match="one MQTT topic level"):
        console.operator_name(MqttConfig(), "a/b")
    bad = parser.parse_args(["console", "houston", "--position", "RETRO"])
    assert console.run(bad) == 1
    assert "choose one of" in capsys.readouterr().err
