"""The console's command panel and command line, without a broker: the history of the ship
in view with each command's stage and who sent it, a refusal saying why, a hazardous
command armed by the command line and executed with x."""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import Input

from groundstation.config import MqttConfig
from groundstation.console import app as console
from groundstation.console import command_panel as cmdp
from groundstation.core import messages, topics
from groundstation.core.commanddefs import load_all_commands
from groundstation.core.definitions import VehicleDefinition, load_all
from tests.console_helpers import SIZE

A, S = "apollo_csm", "soyuz"
T = 174_845_349_000_000_000


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def event(n: int, stage: str, vehicle: str = A, command: str = "crew_alert",
          source: str = "live", **kw: object) -> bytes:
    return json.dumps({"command_id": f"c-{n}", "seq": kw.pop("seq", n), "vehicle": vehicle,
                       "source": source, "command": command, "kind": "realtime",
                       "operator": "inco", "position": "INCO", "stage": stage,
                       "time_ns": 1, "data_time_ns": T, **kw}).encode()


def test_the_command_line(defs: dict[str, VehicleDefinition]) -> None:
    commands = load_all_commands(defs)
    v, req = cmdp.parse_command_line("power_down", A, "r1", source="live", position="EECOM",
                                     commands=commands)
    assert (v, req.action, req.command, req.position) == (A, "arm", "power_down", "EECOM")
    v, req = cmdp.parse_command_line("soyuz tv_power state=ON", A, "r2",
                                     source="training/d1", position="SOZH", commands=commands)
    assert (v, req.command, req.args, req.position, str(req.source)) == (
        S, "tv_power", {"state": "ON"}, "СОЖ", "training/d1")
    with pytest.raises(messages.MessageError):
        cmdp.parse_command_line("crew_alert loud", A, "r3", source="live", position=None,
                                commands=commands)
    assert "crew_alert" in cmdp.suggestions(commands, A, "INCO")
    assert "crew_alert" not in cmdp.suggestions(commands, A, "EECOM")
    assert cmdp.suggestions(commands, S, "SOZH") == ["close_hatch_sa_bo", "open_hatch_sa_bo"]


async def test_the_panel_and_the_keys(defs: dict[str, VehicleDefinition]) -> None:
    app = console.ConsoleApp(centre="houston", position="EECOM",
                             mqtt=MqttConfig(host="127.0.0.1", port=1),  # nobody listens
                             operator="eecom", definitions=defs)
    m = app.model
    hist = messages.CommandHistory.from_data({
        "vehicle": A, "source": "live", "time_ns": 1,
        "commands": [json.loads(event(2, "failed", command="fuel_cell_reset",
                                      args={"cell": "2"}, reason="fc2_amps not above 5")),
                     json.loads(event(1, "verified"))]})
    m.on_message(topics.command_history(A), hist.to_json())
    m.on_message(topics.command_events(A), event(3, "queued", seq=3))
    m.on_message(topics.command_events(A), event(3, "sent", seq=4))
    m.on_message(topics.command_events(A), event(3, "queued", seq=3))  # late: ignored
    m.on_message(topics.command_events(S, "training/d1"), event(9, "sent", vehicle=S))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(2 * console.REFRESH_S)
        rows = [[c.plain for c in cells] for _, cells in app.command_rows()]
        assert [r[2:5] for r in rows] == [["CREW ALERT", "SENT", "inco/INCO"],
                                          ["FUEL CELL RESET cell=2", "FAILED", "inco/INCO"],
                                          ["CREW ALERT", "VERIFIED", "inco/INCO"]]
        assert rows[1][5] == "fc2_amps not above 5"
        screen = app.screen_text()
        assert "COMMANDS CSM" in screen and "FUEL CELL RESET cell=2" in screen
        # v: the other ship, whose live history is empty (its drill's is not shown).
        await pilot.press("v")
        await pilot.pause(2 * console.REFRESH_S)
        assert app.cmd_vehicle == S and app.command_rows() == []
        await pilot.press("v")
        # c opens the command line; without a broker the request cannot go.
        await pilot.press("c")
        line = app.query_one("#cmdline", Input)
        assert line.has_class("open") and app.focused is line
        assert "o2_tank_heaters_fans_off" in app.status_text.plain
        for ch in "power_down":
            await pilot.press(ch)
        await pilot.press("enter")
        assert not line.has_class("open")
        assert "no broker connection" in app.status_text.plain
        # The service's answers, as the feed files them: an arm, then a refusal.
        app._cmd_pending = console._CommandPending(A, "power_down", "rq-1", 0.0)
        m.on_message(topics.command_replies("eecom"), messages.CommandReply(
            ok=True, request_id="rq-1", command_id="c-7", command="power_down", vehicle=A,
            stage="armed", arm_expires_ns=time.time_ns() + 30 * 10**9
        ).to_json())
        await pilot.pause(2 * console.REFRESH_S)
        assert app.status_text.plain.startswith("ARMED power_down (c-7)")
        assert app._armed is not None and app._armed.command_id == "c-7"
        await pilot.press("x")  # execute: no broker, said so
        assert "no broker connection" in app.status_text.plain
        app._cmd_pending = console._CommandPending(A, "crew_alert", "rq-2", 0.0)
        m.on_message(topics.command_replies("eecom"), messages.CommandReply(
            ok=False, request_id="rq-2", command="crew_alert", vehicle=A,
            error="crew_alert is sent from INCO, CAPCOM, FLIGHT; eecom holds EECOM",
            reason="wrong_position").to_json())
        await pilot.pause(2 * console.REFRESH_S)
        assert app.status_text.plain == ("✗ REFUSED crew_alert: crew_alert is sent from INCO, "
                                         "CAPCOM, FLIGHT; eecom holds EECOM")
        await pilot.press("ctrl+c")


async def test_the_call_key_is_for_a_drill(defs: dict[str, VehicleDefinition]) -> None:
    """k opens the call line only on a drill's source; without the broker the call is not
    made and the status line says why; Esc closes the line."""
    app = console.ConsoleApp(centre="houston", position="GNC",
                             mqtt=MqttConfig(host="127.0.0.1", port=1),  # nobody listens
                             operator="gnc", definitions=defs)
    async with app.run_test(size=SIZE) as pilot:
        # The broker's refusal first (it takes the status line when it comes), then the key.
        for _ in range(200):
            if "nothing is listening" in app.status_text.plain:
                break
            await pilot.pause(0.05)
        assert "nothing is listening" in app.status_text.plain
        await pilot.press("k")
        assert "calls are for a drill" in app.status_text.plain
        line = app.query_one("#callline", Input)
        assert not line.has_class("open")
        app.source = "training/d1"
        await pilot.press("k")
        assert line.has_class("open") and line.has_focus and "CALL (d1)" in line.placeholder
        await pilot.press("escape")
        assert not line.has_class("open") and line.value == ""
        await pilot.press("k")
        line.value = "RCS off now"
        await pilot.press("enter")
        await pilot.pause()
        assert "✗ CALL: no broker connection" in app.status_text.plain
        assert not line.has_class("open")
        await pilot.press("k", "enter")  # an empty line makes no call
        assert not line.has_class("open")
