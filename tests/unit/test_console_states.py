"""Discrete states in each centre's language (issue 15): every state of both ships has a
Russian name; the Moscow console and its Grafana dashboards show it, Houston's the English
one; Soyuz bottles and tanks in kgf/cm² on the Moscow views.

The console is driven headless (Textual's pilot) with its model filled from real frames:
both simulated ships docked, their PCM frames decoded by the decommutator, each ship's
newest values filed as the ingest's parameter messages. With GS_SAVE_SCREENSHOTS=1 the
Moscow screen is written to docs/screenshots/moscow-console.svg for the README.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.console import pages as console_pages
from groundstation.core import flightplan as tl
from groundstation.core import messages, presentation, topics
from groundstation.core.decom import Decommutator
from groundstation.core.definitions import VehicleDefinition, load_all
from simulators.mission import Mission
from simulators.telemetry import TelemetryStream
from tests.console_helpers import SIZE
from tests.paths import REPO

A, S = tl.APOLLO, tl.SOYUZ
SCREENSHOT = REPO / "docs" / "screenshots" / "moscow-console.svg"


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


Values = dict[str, dict[str, tuple[int, float, int]]]


@pytest.fixture(scope="module")
def docked_values(defs: dict[str, VehicleDefinition]) -> list[Values]:
    """Each ship's newest values second by second for 20 s, half an hour after the first
    docking: the frames the simulators make, through the decommutator."""
    mission = Mission(tl.DOCKING_1 + 1800, seed=1, definitions=defs)
    streams = {v: TelemetryStream(mission, defs[v]) for v in (A, S)}
    decoders = {v: Decommutator(defs[v]) for v in (A, S)}
    out: list[Values] = []
    start = mission.t
    for second in range(1, 21):
        got: Values = {}
        for v in (A, S):
            block = streams[v].frames_until(start + 1.6 * second)
            assert block is not None
            got[v] = decoders[v].decode(block.frames, block.times_ns,
                                        context=mission.context(v, float(block.get[-1]))
                                        ).latest()
        out.append(got)
    return out


def test_every_discrete_state_has_a_russian_name(defs: dict[str, VehicleDefinition]) -> None:
    """What the consoles show: every state of every discrete of both ships, in Russian for
    Moscow (Cyrillic, from state_labels.ru, never the English name), in English for
    Houston, both on the joint view."""
    missing = []
    for d in defs.values():
        for r in presentation.parameter_refs(d):
            if not r.discrete:
                continue
            assert r.states, f"{r.vid}.{r.pid}: a discrete without states"
            ru = presentation.state_names(r, "ru")
            en = presentation.state_names(r, "en")
            assert en == r.states
            for code, name in r.states.items():
                said = ru[code]
                if said == name or not any("А" <= ch <= "я" or ch in "Ёё" for ch in said):
                    missing.append(f"{r.vid}.{r.pid} {name}")
                assert presentation.state_names(r, "bi")[code] == f"{name} · {said}"
    assert not missing, "no Russian name (state_labels.ru) for: " + ", ".join(missing)


def test_console_fields_and_dashboards_name_states_in_the_centres_language(
        defs: dict[str, VehicleDefinition]) -> None:
    moscow = console_pages.fields(defs, "moscow")
    houston = console_pages.fields(defs, "houston")
    hatch = moscow[(S, "hatch_bo_dm")]
    code = next(c for c, n in hatch.states.items() if n == "ЗАКРЫТ")
    assert hatch.text(code) == "ЗАКРЫТ" and houston[(S, "hatch_bo_dm")].text(code) == "CLOSED"
    # Bottles and tanks in kgf/cm² on Moscow's console, psia on Houston's.
    assert moscow[(S, "kdu_fuel_press")].unit_text == "кгс/см²"
    assert houston[(S, "kdu_fuel_press")].unit_text == "psia"
    # The generated dashboards (dashboards/*.json, checked against the generator by
    # tests/unit/test_dashboards.py) map each state code to the console's language.
    tsup = json.loads((REPO / "dashboards" / "tsup.json").read_text(encoding="utf-8"))
    eecom = json.loads((REPO / "dashboards" / "eecom.json").read_text(encoding="utf-8"))
    texts = json.dumps(tsup, ensure_ascii=False)
    assert '"text": "ЗАКРЫТ"' in texts and '"text": "CLOSED"' not in texts
    assert "кгс/см²" in texts
    assert '"text": "CLOSED"' in json.dumps(eecom, ensure_ascii=False)


async def _screen(centre: str, position: str, defs: dict[str, VehicleDefinition],
                  values_by_second: list[Values], tmp_path: Path
                  ) -> tuple[console.ConsoleApp, str, Path]:
    app = console.ConsoleApp(centre=centre, position=position,
                             mqtt=MqttConfig(host="127.0.0.1", port=1), operator="tsup"
                             if centre == "moscow" else "flight", definitions=defs)
    connected = asyncio.Event()

    async def no_broker() -> None:  # the model is fed here, not from MQTT
        app.model.on_connected()
        connected.set()
        await asyncio.Event().wait()

    app.feed.run = no_broker  # type: ignore[method-assign]

    rates = {A: 50, S: 10}  # frames a second

    tv = defs[S].parameter("tv_status")
    fail = float(tv.state_code("FAIL"))

    def feed(values: Values, now: float, second: int) -> None:
        # Soyuz's TV has failed, as it did in 1975: its yellow state, in the alarm list too,
        # acknowledged by Moscow.
        t = max(x[0] for x in values[S].values())
        values = {**values, S: {**values[S], "tv_status": (t, fail, 1)}}
        for v, vals in values.items():
            t = max(x[0] for x in vals.values())
            update = messages.ParamsUpdate(vehicle=v, source=topics.Source.live(),
                                           time_ns=t, values=vals)
            app.model.on_message(topics.parameters(v), update.to_json(), now)
            stats = messages.LinkStats(vehicle=v, source=topics.Source.live(),
                                       frames_good=rates[v] * (600 + second),
                                       last_frame_ns=t)
            app.model.on_message(topics.ingest_link(v), stats.to_json(), now)
        active = messages.ActiveAlarms.from_data({
            "vehicle": S, "source": "live", "time_ns": t, "master_alarm": False,
            "counts": {"yellow": 1}, "alarms": [{
                "parameter": "tv_status", "label": tv.label["en"], "console": "РТС",
                "state": "active_acked", "severity": "yellow", "peak_severity": "yellow",
                "value": fail, "value_text": "FAIL",
                "raised_ns": t - 95 * 10**9, "acked_by": "tsup",
                "acked_ns": t - 60 * 10**9}]})
        app.model.on_message(topics.active_alarms(S), active.to_json(), now)

    def feed_all() -> None:
        # A second of data per second up to now: a trend, and each link's frame rate.
        now = time.monotonic()
        for i, values in enumerate(values_by_second):
            feed(values, now - len(values_by_second) + 1 + i, i)

    async with app.run_test(size=SIZE) as pilot:
        await connected.wait()
        feed_all()
        await pilot.pause(2 * console.REFRESH_S)
        feed_all()  # fresh arrivals: both ships in AOS for the picture
        app.redraw()
        await pilot.pause()
        text = app.screen_text()
        path = Path(app.save_screenshot(f"{centre}-console.svg", str(tmp_path)))
    return app, text, path


async def test_moscow_console_shows_russian_state_names(
        defs: dict[str, VehicleDefinition],
        docked_values: list[Values], tmp_path: Path) -> None:
    _, text, path = await _screen("moscow", "ОБЗОР", defs, docked_values, tmp_path)
    svg = html.unescape(path.read_text(encoding="utf-8")).replace("\xa0", " ")
    fields = console_pages.fields(defs, "moscow")
    for v, pid in presentation.FLIGHT_DOCKING.items():
        for p in pid:
            f = fields[(v, p)]
            state = f.text(docked_values[-1][v][p][1])
            assert any("А" <= ch <= "я" for ch in state), (v, p, state)
            assert state[:console.VALUE_W + 1 + console.UNIT_W] in text, (v, p, state)
    # Docked: captured, latched, hatches open; the ship's own words, in the picture too.
    assert "ЗАХВАТ" in text and "ОТКРЫТ" in text
    for word in ("ЗАХВАТ", "ОТКРЫТ", "СОЮЗ-19", "мм рт. ст."):
        assert word in svg, word
    # The alarm list says a discrete's state in Russian too (the ingest names it in English).
    assert "ОТКАЗ" in text and "FAIL" not in text
    for english in ("CAPTURED", "LATCHED", "OPEN ", "CLOSED"):
        assert english not in text, english
    if os.environ.get("GS_SAVE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


async def test_moscow_propulsion_page_in_kgf_cm2_and_houston_in_english(
        defs: dict[str, VehicleDefinition],
        docked_values: list[Values], tmp_path: Path) -> None:
    _, text, _ = await _screen("moscow", "ДУ", defs, docked_values, tmp_path)
    assert "кгс/см²" in text
    _, text, _ = await _screen("houston", "FLIGHT", defs, docked_values, tmp_path)
    assert "CAPTURED" in text and "OPEN" in text
    assert "ЗАХВАТ" not in text and "ОТКРЫТ" not in text
