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
import json
import random
from pathlib import Path

import pytest

from groundstation.commands import console as console_cmd
from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.console import pages as console_pages
from groundstation.console.feed import ConsoleModel, parse_topic
from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from tests.console_helpers import SIZE, page_value
from tests.harness import wait_for

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


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


def test_values_the_downlink_no_longer_carries_go_stale() -> None:
    """Apollo in LBR: the parameters only HBR carries keep their last value, shown stale."""
    m = ConsoleModel()
    t = 10**18
    m.on_message("params/live/apollo_csm", json.dumps(
        {"vehicle": A, "source": "live", "time_ns": t, "values": {
            "cabin_press": [t, 5.0, 0], "vhf_range": [t, 12.0, 0]}}).encode(), now=1.0)
    lbr = t + 30 * 10**9  # 30 s later, from the LBR stream
    m.on_message("params/live/apollo_csm", json.dumps(
        {"vehicle": A, "source": "live", "time_ns": lbr, "values": {
            "cabin_press": [lbr, 5.1, 0]}}).encode(), now=31.0)
    v = m.source("live").vehicle(A)
    assert v.values["vhf_range"][1] == 12.0 and v.values["cabin_press"][1] == 5.1
    assert v.stale("vhf_range") and not v.stale("cabin_press")


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="groundstation")
    sub = parser.add_subparsers(dest="command")
    console_cmd.add_parser(sub)
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
    assert console_cmd.run(bad) == 1
    assert "choose one of" in capsys.readouterr().err


def test_the_header_names_apollos_format(defs: dict[str, VehicleDefinition]) -> None:
    app = console.ConsoleApp(centre="houston", position="gnc",
                             mqtt=MqttConfig(host="127.0.0.1", port=1), operator="flight",
                             definitions=defs)
    app.model.on_connected()
    t = 174_845_349_000_000_000
    for vid, stream in ((A, "lbr"), (S, "tm")):
        app.model.on_message(f"params/live/{vid}", json.dumps(
            {"vehicle": vid, "source": "live", "time_ns": t, "values": {}}).encode(), now=1.0)
        app.model.on_message(f"ingest/link/live/{vid}", json.dumps(
            {"frames_good": 100, "last_frame_ns": t, "stream": stream}).encode(), now=1.0)
    text = app.header_text(app.model.source("live"), 1.5).plain
    assert " LBR" in text and " TM" not in text  # Soyuz has one format: nothing to say
