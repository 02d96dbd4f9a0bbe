"""Commands from the terminal console, through the secured broker, the ingest, the
commanding service and both ships flying: INCO types CREW ALERT on the command line and
watches it go to VERIFIED in the command panel; GNC's console is refused, saying why; EECOM
arms a hazardous procedure with the command line and executes it with x."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.commanding_helpers import USERS, running_commanding
from tests.console_helpers import SIZE, press
from tests.harness import flying, running_ingest, secure_mosquitto, wait_for

APOLLO = tl.APOLLO


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture
def broker(mosquitto: MosquittoServer, tmp_path: Path) -> Iterator[MosquittoServer]:
    with secure_mosquitto(tmp_path, USERS) as server:
        yield server


def app_for(broker: MosquittoServer, user: str, position: str,
            defs: dict[str, VehicleDefinition]) -> console.ConsoleApp:
    return console.ConsoleApp(centre="houston", position=position, definitions=defs,
                              mqtt=MqttConfig(host=broker.host, port=broker.port,  # type: ignore[call-arg]
                                              username=user, password=USERS[user]))


def stage_of(app: console.ConsoleApp, label: str) -> str | None:
    return next((cells[3].plain for _, cells in app.command_rows()
                 if cells[2].plain.startswith(label)), None)


async def type_line(app: console.ConsoleApp, text: str) -> None:
    """c, the line, Enter: as a person types, the line once the command line is open."""
    line = app.query_one("#cmdline", Input)
    press(app, "c")
    await wait_for(lambda: app.focused is line, 10, "the command line")
    for ch in text:  # as a terminal sends them: each key with its character
        app.post_message(events.Key(_character_to_key(ch), ch))
    await wait_for(lambda: line.value == text, 10, f"{text!r} typed")
    press(app, "enter")


async def test_commands_from_the_console(broker: MosquittoServer, influxdb: InfluxDBServer,
                                         tmp_path: Path, defs: dict[str, VehicleDefinition]
                                         ) -> None:
    m = Mission(tl.parse_time("044:25:30"), seed=3, historical=False, definitions=defs)
    ships = SimRunner(m, [defs[APOLLO]], RunnerOptions(
        host=broker.host, port=broker.port, username=APOLLO, password=USERS[APOLLO],
        speed=4, client_id="sim-console-cmd"))
    inco = app_for(broker, "inco", "INCO", defs)
    gnc = app_for(broker, "gnc", "GNC", defs)
    eecom = app_for(broker, "eecom", "EECOM", defs)
    async with (
        running_ingest(broker, influxdb, tmp_path, defs, "con", ("ingest", USERS["ingest"]),
                       display_rate_hz=4),
        running_commanding(broker, influxdb, tmp_path, defs, database="con"),
        flying(ships), inco.run_test(size=SIZE), gnc.run_test(size=SIZE),
        eecom.run_test(size=SIZE),
    ):
        await wait_for(lambda: all(a.model.connected for a in (inco, gnc, eecom)), 20,
                       "the consoles' broker")
        await type_line(inco, "crew_alert")
        await wait_for(lambda: stage_of(inco, "CREW ALERT") == "VERIFIED", 60,
                       f"CREW ALERT verified on INCO's console ({inco.status_text.plain})")
        assert "QUEUED" in inco.status_text.plain or "CREW ALERT" in inco.screen_text()
        # Every console sees it, with who sent it.
        await wait_for(lambda: stage_of(gnc, "CREW ALERT") == "VERIFIED", 10, "on GNC's")
        row = next(cells for _, cells in gnc.command_rows()
                   if cells[2].plain == "CREW ALERT")
        assert row[4].plain == "inco/INCO" and "cw_crew_alert ON" in row[5].plain
        # GNC may not send it: the console says why.
        await type_line(gnc, "crew_alert")
        await wait_for(lambda: "REFUSED" in gnc.status_text.plain, 15, "GNC's refusal")
        assert gnc.status_text.plain == ("✗ REFUSED crew_alert: crew_alert is sent from INCO, "
                                         "CAPCOM, FLIGHT, not from GNC")
        # A hazardous procedure: typed, it is armed; x executes it.
        await type_line(eecom, "fuel_cell_shutdown cell=3")
        await wait_for(lambda: eecom.status_text.plain.startswith("ARMED"), 15, "the arm")
        assert stage_of(eecom, "FUEL CELL REACTANT VALVES CLOSED cell=3") in ("ARMED", None)
        press(eecom, "x")
        await wait_for(lambda: stage_of(eecom, "FUEL CELL REACTANT VALVES CLOSED cell=3")
                       == "VERIFIED", 60, "the shutdown verified")
        assert m.apollo.fc_shutdown == [False, False, True]
