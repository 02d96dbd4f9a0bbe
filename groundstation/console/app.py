"""`groundstation console houston|moscow`: the terminal console (Textual).

Alphanumeric pages in the style of the Houston CRT displays and the Moscow consoles:
parameters grouped by position (Houston: FLIGHT, EECOM, GNC, INCO) or by ЦУП group (СОЖ,
СТР, СЭП, СУД, ДУ, ССВП, РТС), in the centre's language and units and coloured by limit
state; the active alarm list, where `a` acknowledges the selected alarm under the
operator's name, `h` shelves it for ten minutes and `u` unshelves it; GET and GMT (and
Moscow time on the Moscow console) of the newest data; AOS/LOS and link quality per ship;
trends where the curve matters more than the number, drawn against the parameter's limits;
the command history of the ship in view, where `c` opens the command line that sends a
command or a procedure (a hazardous one is armed, `x` executes it, Esc disarms it) and `v`
switches ship (groundstation/console/command_panel.py); on a drill's source, `k` opens the
call line, where a trainee makes the calls the drill scores.

Everything comes from MQTT (groundstation/console/feed.py), as the ingest publishes it for
consoles; the pages are made from the telemetry definitions (groundstation/console/pages.py).
The screen is redrawn from the model four times a second at most, never per message.
"""

from __future__ import annotations

import getpass
import io
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from groundstation.config import MqttConfig
from groundstation.console import command_panel as cmdp
from groundstation.console import pages as cp
from groundstation.console.feed import (
    SHELVE_S,
    ConsoleFeed,
    ConsoleModel,
    SourceView,
    VehicleView,
)
from groundstation.core import messages, topics
from groundstation.core.alarms import Transition
from groundstation.core.commanddefs import (
    CommandDefinitionError,
    VehicleCommands,
    load_all_commands,
)
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.messages import OperatorAction

__all__ = ["ConsoleApp"]

REFRESH_S = 0.25  # the screen is redrawn at most this often
LABEL_W = 24
VALUE_W = 10
UNIT_W = 10
CELL_GAP = 3
AMBER = "orange1"
RED = "bold red1"
DIM = "grey42"

CSS = """
Screen { background: #000000; color: #3cdc5a; layout: vertical; }
#header { height: 2; background: #050f05; color: #b8f5c0; padding: 0 1; }
#tabs { height: 1; background: #0a1a0a; padding: 0 1; }
#main { height: 1fr; }
#page-scroll { width: 1fr; scrollbar-size-vertical: 1; scrollbar-background: #000000;
               scrollbar-color: #1f5f2a; }
#page { padding: 0 1; }
#trends { width: 44; border-left: solid #1f5f2a; padding: 0 1; }
#trends .trend-label { height: 1; }
#trends Trend { height: 2; margin-bottom: 1; }
#alarm-title { height: 1; background: #0a1a0a; padding: 0 1; }
#alarms { height: 9; background: #000000; scrollbar-size-vertical: 1; }
#alarms > .datatable--header { background: #0a1a0a; color: #9bd9a5; text-style: bold; }
#alarms > .datatable--cursor { background: #1d3b78; }
#status { height: 1; background: #050f05; color: #9bd9a5; padding: 0 1; }
#cmd-title { height: 1; background: #0a1a0a; padding: 0 1; }
#commands { height: 5; background: #000000; scrollbar-size-vertical: 1; }
#commands > .datatable--header { background: #0a1a0a; color: #9bd9a5; text-style: bold; }
#cmdline { height: 1; border: none; background: #12301a; color: #e0ffe0; padding: 0 1;
           display: none; }
#cmdline.open { display: block; }
#callline { height: 1; border: none; background: #2a2410; color: #fff2c0; padding: 0 1;
            display: none; }
#callline.open { display: block; }
"""

KEYS_HELP = {
    "houston": "1-4/Tab page · ↑↓ select · a ACK · h shelve 10 min · u unshelve · s source · "
               "c command · x execute · v ship · k call (drill) · q quit",
    "moscow": "1-8/Tab страница · ↑↓ выбор · a КВИТИРОВАТЬ · h отложить на 10 мин · "
              "u вернуть · s источник · c команда · x исполнить · v корабль · "
              "k доклад (тренировка) · q выход",
}
ARMED_STYLE = "bold black on orange1"

# How each centre words an operator request: (the key's verb, the ingest's event when done,
# the refusal).
ACTION_TEXT = {
    "acknowledge": (("ACK", "ACKNOWLEDGED", "ACK REFUSED"),
                    ("КВИТ.", "КВИТИРОВАН", "КВИТ. ОТКЛОНЕНО")),
    "shelve": (("SHELVE", "SHELVED", "SHELVE REFUSED"),
               ("ОТЛОЖИТЬ", "ОТЛОЖЕН", "ОТЛОЖИТЬ НЕЛЬЗЯ")),
    "unshelve": (("UNSHELVE", "UNSHELVED", "UNSHELVE REFUSED"),
                 ("ВЕРНУТЬ", "ВОЗВРАЩЁН", "ВЕРНУТЬ НЕЛЬЗЯ")),
}
EVENT_ACTION: dict[Transition, OperatorAction] = {
    Transition.ACKNOWLEDGED: "acknowledge", Transition.SHELVED: "shelve",
    Transition.UNSHELVED: "unshelve"}

BARS = " ▁▂▃▄▅▆▇█"


def trend_columns(samples: Sequence[tuple[float, int]], width: int
                  ) -> list[tuple[float, int]]:
    """The samples as at most `width` columns, oldest first, each (value, limit state).
    While there are fewer samples than columns each sample has a column of its own (the
    chart grows from the right, never stretched); after that the samples are shared out
    evenly over the width, so the chart fills it and only compresses as the history grows
    to its full length.

    A nominal column shows its mean; a column with an excursion shows the worst sample,
    so a short spike past a limit is neither averaged away nor drawn in the wrong colour."""
    n = len(samples)
    if width <= 0 or not n:
        return []
    if n <= width:
        return list(samples)
    cols: list[tuple[float, int]] = []
    edges = [i * n // width for i in range(width + 1)]
    for a, b in itertools.pairwise(edges):
        bucket = samples[a:b]
        worst = max(abs(st) for _, st in bucket)
        if worst == 0:
            cols.append((sum(v for v, _ in bucket) / len(bucket), 0))
        else:
            bad = [(v, st) for v, st in bucket if abs(st) == worst]
            cols.append(min(bad) if bad[-1][1] < 0 else max(bad))
    return cols


def trend_text(f: cp.Field, samples: Sequence[tuple[float, int]], width: int, height: int,
               dim: bool = False) -> Text:
    """A strip chart of canonical-unit (value, state) samples, `height` rows of eighth
    blocks on the trend's fixed scale (cp.trend_scale), each bar in its limit colour."""
    shown = [(f.convert(v), st) for v, st in samples]
    lo, hi = cp.trend_scale(f, [v for v, _ in shown])
    cols = trend_columns(shown, width)
    steps = 8 * height
    levels: list[tuple[int, int]] = []
    for v, st in cols:
        frac = (v - lo) / (hi - lo) if hi > lo else 0.5
        # Never below one eighth: an empty cell would read as no data.
        levels.append((1 + round(min(1.0, max(0.0, frac)) * (steps - 1)), st))
    styles = {st: cp.limit_colour(st) + (" dim" if dim else "") for _, st in levels}
    pad = " " * (width - len(cols))
    rows: list[Text] = []
    for r in range(height):
        base = 8 * (height - 1 - r)
        row = Text(pad)
        # One span per run of a colour, not per cell: this is redrawn a few times a second.
        run, run_state = "", levels[0][1] if levels else 0
        for level, st in levels:
            if st != run_state and run:
                row.append(run, style=styles[run_state])
                run = ""
            run_state = st
            run += BARS[min(8, max(0, level - base))]
        if run:
            row.append(run, style=styles[run_state])
        rows.append(row)
    return Text("\n").join(rows)


class Trend(Widget):
    """One parameter's recent history as a strip chart on a fixed scale (the yellow band,
    widened for the data): unlike a sparkline scaled to its own min and max, a steady
    value stays a flat line and a value nearing a limit is drawn near the edge."""

    DEFAULT_CSS = "Trend { height: 2; }"

    def __init__(self, f: cp.Field, **kwargs: Any):
        super().__init__(**kwargs)
        self.field = f
        self._samples: tuple[tuple[float, int], ...] = ()
        self._dim = False

    def show(self, samples: Sequence[tuple[float, int]], dim: bool) -> None:
        data = tuple(samples)
        if data != self._samples or dim != self._dim:
            self._samples, self._dim = data, dim
            self.refresh()

    def render(self) -> Text:
        return trend_text(self.field, self._samples, self.size.width, self.size.height or 2,
                          self._dim)


def operator_name(mqtt: MqttConfig, operator: str | None) -> str:
    """The operator on acknowledgements: with a secured broker the ACL binds ack/<user>/...
    to the authenticated user, so the MQTT user name wins; else --operator, else the login
    name."""
    name = mqtt.username or operator or _login()
    if not name or set(name) & set("/+#") or name in ("apollo_csm", "soyuz"):
        raise ValueError(f"operator name {name!r} cannot be used: it must be one MQTT topic "
                         "level (no /, + or #) and not a vehicle id")
    return name


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@dataclass(frozen=True)
class _Pending:
    """A request sent to the ingest, waiting for the reply that names its id."""

    action: OperatorAction
    vehicle: str
    parameter: str
    request_id: str
    sent: float  # monotonic


@dataclass(frozen=True)
class _CommandPending:
    """A command request sent to the commanding service, waiting for its reply."""

    vehicle: str
    text: str
    request_id: str
    sent: float  # monotonic


@dataclass(frozen=True)
class _Armed:
    """A hazardous command the service armed for this console: x executes it."""

    vehicle: str
    command_id: str
    command: str
    expires: float  # monotonic


class ConsoleApp(App[int]):
    """The console of one control centre. Reads everything from MQTT through ConsoleFeed."""

    CSS = CSS
    TITLE = "groundstation console"
    BINDINGS: ClassVar[list[BindingType]] = [
        # Textual's own quit key is Ctrl-Q; a flight controller expects Ctrl-C to work.
        Binding("ctrl+c", "quit", "Quit", priority=True, show=False),
        Binding("q", "quit", "Quit", show=False),
        Binding("a", "acknowledge", "Acknowledge", show=False),
        Binding("h", "shelve", "Shelve", show=False),
        Binding("u", "unshelve", "Unshelve", show=False),
        Binding("s", "next_source", "Source", show=False),
        Binding("c", "command_line", "Command", show=False),
        Binding("x", "execute", "Execute", show=False),
        Binding("v", "next_vehicle", "Ship", show=False),
        Binding("k", "call_line", "Call", show=False),
        Binding("escape", "escape", "Close", show=False),
        Binding("tab", "page(+1)", "Next page", priority=True, show=False),
        Binding("shift+tab", "page(-1)", "Previous page", priority=True, show=False),
        Binding("right_square_bracket", "page(+1)", show=False),
        Binding("left_square_bracket", "page(-1)", show=False),
        *[Binding(str(i), f"goto({i - 1})", show=False) for i in range(1, 10)],
    ]

    def __init__(self, centre: str = "houston", position: str | None = None,
                 mqtt: MqttConfig | None = None, operator: str | None = None,
                 source: str = topics.LIVE,
                 definitions: dict[str, VehicleDefinition] | None = None,
                 client_id: str | None = None):
        super().__init__()
        if centre not in cp.CENTRES:
            raise ValueError(f"centre must be houston or moscow, not {centre!r}")
        self.centre = centre
        self.mqtt = mqtt or MqttConfig()  # type: ignore[call-arg]
        self.operator = operator_name(self.mqtt, operator)
        self.source = topics.check_source(source)
        self.definitions = definitions if definitions is not None else load_all()
        self.pages = cp.pages(self.definitions, centre)
        self.page_index = cp.find_page(self.pages, position)
        self.fields = cp.fields(self.definitions, centre)
        self.trends = cp.trend_fields(self.definitions, centre)
        self.model = ConsoleModel([(f.vehicle, f.pid) for f in self.trends])
        self.feed = ConsoleFeed(self.mqtt, self.operator, self.model, client_id)
        self.status_text: Text = Text(KEYS_HELP[centre], style=DIM)
        # The request waiting for the ingest's answer.
        self._pending: _Pending | None = None
        self._seen_reply = 0
        self._drawn: tuple[int, int, str, bool] | None = None
        self._drawn_los: tuple[bool, ...] = ()
        self._drawn_alarms: tuple[int, str, int] | None = None
        self._blink = False
        # While the broker is away the status line says why; what it said before comes
        # back with the broker.
        self._broker_status: tuple[str, Text] | None = None
        self.title = f"{cp.word('title', centre)} — {self.operator}"
        # Commands: the definitions (for the command line and the names), the ship the
        # command panel shows and commands, the position the console sends from.
        self.position = position
        try:
            self.commands: dict[str, VehicleCommands] = load_all_commands(self.definitions)
        except CommandDefinitionError:
            self.commands = {}
        ships = [v for v in cp.VEHICLE_ORDER[centre] if v in self.commands] or \
            list(self.commands) or self._vehicles()
        self.cmd_vehicle = ships[0]
        self._cmd_pending: _CommandPending | None = None
        self._armed: _Armed | None = None
        self._seen_command_reply = 0
        self._drawn_commands: tuple[int, str, str, bool] | None = None

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="tabs")
        with Horizontal(id="main"):
            with VerticalScroll(id="page-scroll"):
                yield Static(id="page")
            with Vertical(id="trends"):
                for i, f in enumerate(self.trends):
                    yield Static(id=f"trend-label-{i}", classes="trend-label")
                    yield Trend(f, id=f"trend-{i}")
        yield Static(id="alarm-title")
        table: DataTable[Any] = DataTable(id="alarms", cursor_type="row", zebra_stripes=False)
        yield table
        yield Static(id="cmd-title")
        commands: DataTable[Any] = DataTable(id="commands", cursor_type="none",
                                             zebra_stripes=False)
        yield commands
        yield Input(id="cmdline", placeholder=self._cmdline_hint())
        yield Input(id="callline", max_length=messages.CALL_MAX)
        yield Static(id="status")

    def on_mount(self) -> None:
        table = self.query_one("#alarms", DataTable)
        for col in cp.ALARM_COLUMNS[self.centre]:
            table.add_column(col, key=col)
        commands = self.query_one("#commands", DataTable)
        for col in cmdp.COMMAND_COLUMNS[self.centre]:
            commands.add_column(col, key=col)
        table.focus()
        # The MQTT feed is the app's worker: cancelled when the app exits; if it dies (a
        # bug: the broker going away is its own business), the app exits with its error.
        self.run_worker(self.feed.run(), name="mqtt-feed", group="mqtt", exit_on_error=True)
        self.set_interval(REFRESH_S, self.redraw)
        self.redraw()

    # --- actions -------------------------------------------------------------------------

    def action_page(self, step: int) -> None:
        self.page_index = (self.page_index + step) % len(self.pages)
        self.query_one("#page-scroll", VerticalScroll).scroll_home(animate=False)
        self.redraw()

    def action_goto(self, index: int) -> None:
        if 0 <= index < len(self.pages):
            self.page_index = index
            self.query_one("#page-scroll", VerticalScroll).scroll_home(animate=False)
            self.redraw()

    def action_next_source(self) -> None:
        names = self.model.source_names()
        if self.source not in names:
            names = sorted([*names, self.source])
        names = sorted(names, key=lambda s: (s != topics.LIVE, s))
        self.source = names[(names.index(self.source) + 1) % len(names)]
        self._set_status(f"{cp.word('source', self.centre)} → {self.source}", "bold")
        self.redraw()

    async def action_acknowledge(self) -> None:
        await self._request("acknowledge")

    async def action_shelve(self) -> None:
        await self._request("shelve", SHELVE_S)

    async def action_unshelve(self) -> None:
        await self._request("unshelve")

    # --- commands ------------------------------------------------------------------------

    def _cmdline_hint(self) -> str:
        ship = cp.SHIP_SHORT[self.centre].get(self.cmd_vehicle, self.cmd_vehicle)
        if self.centre == "moscow":
            return (f"{ship}: КОМАНДА [ключ=значение ...] — Enter отправить, Esc закрыть; "
                    "опасная команда взводится, x исполняет")
        return (f"{ship}: COMMAND [key=value ...] — Enter sends, Esc closes; a hazardous "
                "command is armed, x executes it")

    def action_command_line(self) -> None:
        """Open the command line (with completion from what this position may send)."""
        line = self.query_one("#cmdline", Input)
        offered = cmdp.suggestions(self.commands, self.cmd_vehicle, self.position)
        line.suggester = SuggestFromList(offered, case_sensitive=False)
        line.placeholder = self._cmdline_hint()
        line.add_class("open")
        line.focus()
        ship = cp.SHIP_SHORT[self.centre].get(self.cmd_vehicle, self.cmd_vehicle)
        names = ", ".join(o.split()[0] for o in offered) or "—"
        self._set_status(f"{ship}: {names}", DIM)

    def _close_command_line(self, which: str = "#cmdline") -> None:
        line = self.query_one(which, Input)
        line.value = ""
        line.remove_class("open")
        self.query_one("#alarms", DataTable).focus()

    # --- calls (in a drill) --------------------------------------------------------------

    def drill(self) -> str | None:
        """The drill the console shows (its source training/<drill>), or None."""
        src = topics.Source.parse(self.source)
        return src.name if src.kind is topics.SourceKind.TRAINING else None

    def action_call_line(self) -> None:
        """Open the call line: what the trainee would say on the loop, made to the drill
        the console shows (its debrief scores it against the scenario's timed calls)."""
        ru = self.centre == "moscow"
        drill = self.drill()
        if drill is None:
            self._set_status("доклады — только на тренировке: s — источник training/…" if ru
                             else "calls are for a drill: s to a training/<drill> source",
                             AMBER)
            return
        line = self.query_one("#callline", Input)
        line.placeholder = (f"ДОКЛАД ({drill}): что вы говорите на связи — Enter отправить, "
                            "Esc закрыть" if ru else
                            f"CALL ({drill}): what you say on the loop, e.g. \"RCS off now, "
                            "fumes\" — Enter makes it, Esc closes")
        line.add_class("open")
        line.focus()

    async def _make_call(self, text: str) -> None:
        """Make a call to the drill the console shows, as the operator from its position."""
        ru = self.centre == "moscow"
        drill = self.drill()
        if drill is None:  # the source changed while the line was open
            self._set_status("нет тренировки" if ru else "no drill shown: call not made", RED)
            return
        word = "ДОКЛАД" if ru else "CALL"
        try:
            call = await self.feed.call(drill, text, self.position)
        except messages.MessageError as exc:
            self._set_status(f"✗ {word}: {exc}", RED)
            return
        except (ConnectionError, OSError) as exc:  # BrokerError is a ConnectionError
            self._set_status(f"✗ {word}: {exc}", RED)
            return
        self._set_status(f"→ {word} {drill} — {self.operator}: {call.text}", "bold green3")

    async def action_escape(self) -> None:
        if self.query_one("#callline", Input).has_class("open"):
            self._close_command_line("#callline")
        elif self.query_one("#cmdline", Input).has_class("open"):
            self._close_command_line()
        elif self._armed is not None:
            await self._send_command(f"disarm {self._armed.command_id}",
                                     self._armed.vehicle)

    def action_next_vehicle(self) -> None:
        ships = [v for v in self._vehicles() if v in self.commands] or self._vehicles()
        self.cmd_vehicle = ships[(ships.index(self.cmd_vehicle) + 1) % len(ships)] \
            if self.cmd_vehicle in ships else ships[0]
        self._drawn_commands = None
        self.redraw()

    async def action_execute(self) -> None:
        armed = self._armed
        if armed is None or time.monotonic() > armed.expires:
            self._armed = None
            self._set_status("nothing armed" if self.centre == "houston"
                             else "нет взведённой команды", AMBER)
            return
        await self._send_command(f"execute {armed.command_id}", armed.vehicle)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "callline":
            text = event.value.strip()
            self._close_command_line("#callline")
            if text:
                await self._make_call(text)
            return
        if event.input.id != "cmdline":
            return
        text = event.value.strip()
        self._close_command_line()
        if text:
            await self._send_command(text, self.cmd_vehicle)

    async def _send_command(self, text: str, vehicle: str) -> None:
        """Send a typed command line; _check_command_reply shows the service's answer."""
        request_id = self.feed.new_request_id()
        try:
            vehicle, request = cmdp.parse_command_line(
                text, vehicle, request_id, source=self.source, position=self.position,
                commands=self.commands)
        except messages.MessageError as exc:
            self._set_status(f"✗ {exc}", RED)
            return
        self._cmd_pending = _CommandPending(vehicle, text, request_id, time.monotonic())
        self._set_status(f"{text} → {self.operator} …", AMBER)
        try:
            await self.feed.command(vehicle, request)
        except (ConnectionError, OSError) as exc:  # BrokerError is a ConnectionError
            self._cmd_pending = None
            self._set_status(f"{text}: {exc}", RED)

    def _check_command_reply(self) -> None:
        """The commanding service's answer to this console's pending command request."""
        ru = self.centre == "moscow"
        new = self.model.command_reply_count - self._seen_command_reply
        self._seen_command_reply = self.model.command_reply_count
        if self._armed is not None and time.monotonic() > self._armed.expires:
            self._armed = None
        pending = self._cmd_pending
        if pending is None:
            return
        replies = list(self.model.command_replies)[-new:] if new > 0 else []
        reply = next((r for r in replies if r.request_id == pending.request_id), None)
        if reply is None:
            if time.monotonic() - pending.sent > 10:
                self._set_status("нет ответа службы команд" if ru
                                 else f"{pending.text}: no answer from the commanding "
                                      "service", RED)
                self._cmd_pending = None
            return
        self._cmd_pending = None
        name = reply.command or pending.text
        if not reply.ok:
            refused = "ОТКЛОНЕНА" if ru else "REFUSED"
            self._set_status(f"✗ {refused} {name}: {reply.error}", RED)
            return
        if reply.stage == "armed" and reply.command_id:
            self._armed = _Armed(pending.vehicle, reply.command_id, name,
                                 time.monotonic() + max(
                                     0.0, ((reply.arm_expires_ns or 0) - time.time_ns()) / 1e9))
            self._set_status(("ВЗВЕДЕНА" if ru else "ARMED") + f" {name} ({reply.command_id})"
                             + (" — x исполнить, Esc отменить" if ru
                                else " — x executes it, Esc disarms"), ARMED_STYLE)
            return
        if reply.stage == "cancelled":
            self._armed = None
            self._set_status(("ОТМЕНЕНА " if ru else "DISARMED ") + name, AMBER)
            return
        if self._armed is not None and self._armed.command_id == reply.command_id:
            self._armed = None
        self._set_status(f"→ {name} {cmdp.stage_text(reply.stage or 'queued', self.centre)} "
                         f"({reply.command_id})", "bold green3")

    def command_rows(self) -> list[tuple[str, list[Text]]]:
        """The command panel's rows: the shown source's commands of the ship in view."""
        src = self.model.source(self.source)
        return cmdp.command_rows(src.command_list(self.cmd_vehicle), self.centre,
                                 self.commands)

    def _draw_commands(self) -> None:
        key = (self.model.command_version, self.source, self.cmd_vehicle,
               self._armed is not None)
        if key == self._drawn_commands:
            return
        self._drawn_commands = key
        rows = self.command_rows()
        table = self.query_one("#commands", DataTable)
        table.clear()
        for k, cells in rows:
            table.add_row(*cells, key=k)
        ship = cp.SHIP_SHORT[self.centre].get(self.cmd_vehicle, self.cmd_vehicle)
        title = Text(f"{cmdp.word('commands', self.centre)} {ship} ", style="bold")
        if not rows:
            title.append(cmdp.word("none", self.centre), style=DIM)
        title.append(f"  {cmdp.word('keys', self.centre)}", style=DIM)
        if self._armed is not None:
            title.append(f"  ARMED {self._armed.command}", style=ARMED_STYLE)
        self.query_one("#cmd-title", Static).update(title)

    async def _request(self, action: OperatorAction, duration_s: float | None = None
                       ) -> None:
        """Send the ingest a request about the selected alarm; _check_reply shows the
        answer on the status line."""
        table = self.query_one("#alarms", DataTable)
        if table.row_count == 0:
            self._set_status("no alarm selected" if self.centre == "houston"
                             else "сигнал не выбран", AMBER)
            return
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        vehicle, _, pid = str(row_key.value).partition("/")
        f = self.fields.get((vehicle, pid))
        name = f.label if f else pid
        verb = ACTION_TEXT[action][self.centre == "moscow"][0]
        # Pending before the publish: the ingest's answer can arrive (and the redraw show
        # it) while the publish still waits for the broker's PUBACK.
        request_id = self.feed.new_request_id()
        self._pending = _Pending(action, vehicle, pid, request_id, time.monotonic())
        self._set_status(f"{verb} {name} → {self.operator} …", AMBER)
        try:
            await self.feed.request(vehicle, pid, self.source, action, duration_s,
                                    request_id=request_id)
        except (ConnectionError, OSError) as exc:  # the broker away (groundstation.mqtt)
            self._pending = None
            self._set_status(f"{verb} {name}: {exc}", RED)

    # --- drawing -------------------------------------------------------------------------

    def _set_status(self, text: str, style: str = "") -> None:
        self.status_text = Text(text, style=style)
        self.query_one("#status", Static).update(self.status_text)

    def redraw(self) -> None:
        """Bring the screen up to date with the model (the timer calls this 4 times a
        second; the page and the alarm list are rebuilt only when something changed)."""
        if not self.is_running or not self.screen.is_mounted:
            return
        try:
            self._redraw()
        except NoMatches:  # a tick while the app shuts down: nothing left to draw
            return

    def _redraw(self) -> None:
        now = time.monotonic()
        self._blink = int(now / 0.5) % 2 == 0
        src = self.model.source(self.source)
        self.query_one("#header", Static).update(self.header_text(src, now))
        self.query_one("#tabs", Static).update(self.tabs_text())
        los = tuple(bool(v.aos(now)) for v in src.vehicles.values())
        key = (self.model.version, self.page_index, self.source, self.model.connected)
        if key != self._drawn or los != self._drawn_los:
            self._drawn, self._drawn_los = key, los
            width = self.query_one("#page-scroll", VerticalScroll).size.width
            self.query_one("#page", Static).update(self.page_text(src, now, width))
            self._draw_trends(src, now)
        akey = (self.model.alarm_version, self.source, len(self.fields))
        if akey != self._drawn_alarms:
            self._drawn_alarms = akey
            self._draw_alarms(src)
        self._check_broker()
        self._check_reply()
        self._check_command_reply()
        self._draw_commands()

    def _check_broker(self) -> None:
        error = None if self.model.connected else self.model.broker_error
        shown = self._broker_status
        if error is not None and (shown is None or shown[0] != error):
            before = shown[1] if shown is not None else self.status_text
            self._broker_status = (error, before)
            self._set_status(error, RED)
        elif error is None and shown is not None:
            self._broker_status = None
            if self.status_text.plain == shown[0]:  # nothing newer said since
                self.status_text = shown[1]
                self.query_one("#status", Static).update(self.status_text)

    def screen_text(self) -> str:
        """What the screen shows, as plain text (for tests and logs)."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), record=True,
                          force_terminal=True, color_system="truecolor", legacy_windows=False)
        console.print(self.screen._compositor.render_update(
            full=True, screen_stack=self._background_screens))
        return console.export_text()

    def header_text(self, src: SourceView, now: float) -> Text:
        c = self.centre
        t = src.newest_ns()
        line1 = Text()
        line1.append(cp.word("title", c), style="bold #e0ffe0")
        sep = Text(" │ ", style=DIM)
        clocks = [("get", cp.get_text(t)), ("gmt", cp.gmt_text(t))]
        if c == "moscow":
            clocks = [("msk", cp.msk_text(t)), *clocks]
        for k, v in clocks:
            line1.append_text(sep)
            line1.append(f"{cp.word(k, c)} ", style=DIM)
            line1.append(v, style="bold #e0ffe0")
        line1.append_text(sep)
        line1.append(f"{cp.word('source', c)} ", style=DIM)
        line1.append(self.source.upper() if self.source != topics.LIVE else "LIVE",
                     style="bold" if self.source == topics.LIVE else f"bold black on {AMBER}")
        line1.append_text(sep)
        line1.append(f"{cp.word('operator', c)} {self.operator}", style=DIM)
        line1.append_text(sep)
        if self.model.connected:
            line1.append(cp.word("broker_ok", c), style="green3")
        elif self.model.ever_connected or self.model.attempts:
            lost = f" ({now - self.model.lost_at:.0f} s)" if self.model.lost_at else ""
            line1.append(f"{cp.word('broker_lost', c)}{lost}", style="bold white on red3")
        else:
            line1.append(cp.word("connecting", c), style=AMBER)
        line2 = Text()
        for i, vid in enumerate(self._vehicles()):
            view = src.vehicles.get(vid) or VehicleView()
            if i:
                line2.append_text(sep)
            line2.append(f"{cp.SHIP_SHORT[c].get(vid, vid)} ", style="bold")
            # Without the broker nothing can be said about the ships' signal.
            aos = view.aos(now) if self.model.connected else None
            if aos is None:
                line2.append(cp.word("nodata", c), style=DIM)
            elif aos:
                line2.append(cp.word("aos", c), style="bold black on green3")
            else:
                line2.append(cp.word("los", c), style="bold white on red3")
            q, fps = view.link.quality, view.link.frames_per_s
            if q is not None:
                qstyle = "green3" if q >= 99.0 else AMBER if q >= 90.0 else RED
                line2.append(f" {cp.word('quality', c)} {q:5.1f}%", style=qstyle)
            if fps is not None and aos:
                line2.append(f" {fps:4.0f} {cp.word('fps', c)}", style=DIM)
            stats = view.link.stats
            defn = self.definitions.get(vid)
            if aos and stats is not None and stats.stream and defn is not None \
                    and len(defn.streams) > 1:
                # A ship with several formats: which one is coming down (Apollo HBR, LBR).
                line2.append(f" {stats.stream.upper()}", style="bold")
        line2.append_text(sep)
        if src.master_alarm():
            line2.append(f" {cp.word('master', c)} ",
                         style="bold white on red3" if self._blink else "bold red1")
        else:
            line2.append(cp.word("no_master", c), style=DIM)
        return Text("\n").join([line1, line2])

    def tabs_text(self) -> Text:
        out = Text()
        for i, p in enumerate(self.pages):
            label = f" {i + 1} {p.key} "
            out.append(label, style="bold black on #3cdc5a" if i == self.page_index
                       else "#3cdc5a")
            out.append(" ")
        out.append(f"  {self.pages[self.page_index].title}", style=DIM)
        return out

    def _vehicles(self) -> list[str]:
        order = cp.VEHICLE_ORDER[self.centre]
        return [v for v in order if v in self.definitions] + sorted(
            set(self.definitions) - set(order))

    def page_text(self, src: SourceView, now: float, width: int) -> Text:
        page = self.pages[self.page_index]
        cell_w = LABEL_W + 1 + VALUE_W + 1 + UNIT_W
        cols = max(1, (max(width, cell_w) - 2 + CELL_GAP) // (cell_w + CELL_GAP))
        lines: list[Text] = []
        for section in page.sections:
            lines.append(Text(section.title, style="bold #9fe8ff"))
            cells = [self._cell(f, src, now) for f in section.fields]
            for r in range(0, len(cells), cols):
                line = Text()
                for j, cell in enumerate(cells[r:r + cols]):
                    if j:
                        line.append(" " * CELL_GAP)
                    line.append_text(cell)
                lines.append(line)
            lines.append(Text(""))
        if page.link_quality:
            lines.extend(self._link_lines(src, now))
        return Text("\n").join(lines)

    def _cell(self, f: cp.Field, src: SourceView, now: float) -> Text:
        v = src.vehicles.get(f.vehicle)
        item = v.values.get(f.pid) if v else None
        stale = v is None or not v.aos(now) or not self.model.connected or v.stale(f.pid)
        label = f.label[:LABEL_W].ljust(LABEL_W, ".")
        out = Text(label + " ", style=DIM if stale else "#8fd79c")
        if item is None:
            out.append("----".rjust(VALUE_W), style=DIM)
        else:
            _, value, state = item
            style = cp.limit_colour(state)
            if stale:
                style = f"{style} dim"
            text = f.text(value)
            if f.discrete and len(text) > VALUE_W:
                # A state name has no unit: a long one (НЕТ ЗАХВАТА) takes the unit's room.
                room = VALUE_W + 1 + UNIT_W
                out.append(text[:room].ljust(room), style=style)
                return out
            out.append(text[:VALUE_W].rjust(VALUE_W), style=style)
        out.append(" " + f.unit_text[:UNIT_W].ljust(UNIT_W), style=DIM)
        return out

    def _link_lines(self, src: SourceView, now: float) -> list[Text]:
        c = self.centre
        lines = [Text(cp.word("ground", c), style="bold #9fe8ff")]
        names = (("frames_good", "frames good", "кадров"), ("sync_errors", "sync err",
                                                             "ошиб. синхр."),
                 ("counter_errors", "ctr err", "ошиб. счётч."),
                 ("frames_missing", "missing", "пропущено"))
        for vid in self._vehicles():
            v = src.vehicles.get(vid)
            line = Text(f"{cp.SHIP_SHORT[c].get(vid, vid):<9}", style="bold")
            if v is None or v.link.stats is None:
                line.append(cp.word("nodata", c), style=DIM)
            else:
                counts = v.link.stats.counters()
                for key, en, ru in names:
                    n = int(counts.get(key) or 0)
                    bad = key != "frames_good" and n > 0
                    line.append(f"{ru if c == 'moscow' else en} ", style=DIM)
                    line.append(f"{n:<9,}", style=AMBER if bad else "#8fd79c")
                if v.link.quality is not None:
                    line.append(f"{cp.word('quality', c)} {v.link.quality:.1f}%", style="bold")
            lines.append(line)
        return lines

    def _draw_trends(self, src: SourceView, now: float) -> None:
        for i, f in enumerate(self.trends):
            v = src.vehicles.get(f.vehicle)
            hist = v.history.get(f.pid, ()) if v else ()
            item = v.values.get(f.pid) if v else None
            stale = v is None or not v.aos(now) or not self.model.connected
            label = Text(f"{cp.SHIP_SHORT[self.centre].get(f.vehicle, '')[:3]} ", style=DIM)
            label.append(f.label[:22].ljust(22), style="#8fd79c")
            if item is not None:
                label.append(f" {f.with_unit(item[1])}", style=cp.limit_colour(item[2]))
            self.query_one(f"#trend-label-{i}", Static).update(label)
            self.query_one(f"#trend-{i}", Trend).show(list(hist), stale)

    def alarm_rows(self, src: SourceView) -> list[tuple[str, list[Text]]]:
        """The active alarms of the shown source, newest first and shelved ones last:
        (row key, cells)."""
        return [(k, cells) for k, cells, _, _ in self._alarm_list(src)]

    def _alarm_list(self, src: SourceView) -> list[tuple[str, list[Text], str, str]]:
        """(row key, cells, severity, state) of each alarm in the list."""
        c = self.centre
        ru = c == "moscow"
        rows: list[tuple[bool, int, str, list[Text], str, str]] = []
        for vid, v in src.vehicles.items():
            for a in (v.active.alarms if v.active is not None else []):
                pid = a.parameter
                f = self.fields.get((vid, pid))
                sev = a.severity
                state = a.state.value
                shelved = state == "shelved"
                unacked = state in ("active_unacked", "normal_unacked")
                colour = {"red": "red1", "yellow": AMBER}.get(sev, "green3")
                # A shelved alarm is out of the way on purpose: listed, but greyed out.
                style = "grey58" if shelved else f"bold {colour}" + (" reverse" if unacked
                                                                    else "")
                raised = a.raised_ns
                when = cp.msk_text(raised, with_date=False) if ru else cp.get_text(raised)
                # A discrete's state in the centre's language (the ingest names it in
                # English, as the definitions do).
                value = f.text(a.value) if f and f.discrete and a.value is not None \
                    else a.value_text or (f.text(a.value) if f else str(a.value))
                # The limit is in the value's unit, so the unit is written once (it keeps
                # the list within 120 columns).
                limit = f.text(a.limit) if f and a.limit is not None else ""
                label = f.label if f else (a.label_ru if ru else a.label) or pid
                unit = f.unit_text if f and not f.discrete else ""
                state_text = cp.ALARM_STATE_TEXT.get(state, (state, state))[ru]
                until = a.shelved_until_ns
                if shelved and until:
                    # When it comes back by itself, in the centre's clock (to the minute).
                    state_text += (f" до {cp.msk_text(until, with_date=False)[:5]}" if ru
                                   else f" → {cp.get_text(until)[:-3]}")
                cells = [when, cp.SHIP_SHORT[c].get(vid, vid),
                         (f.position if f else a.console) or "",
                         label, f"{value} {unit}".strip(), limit,
                         cp.SEVERITY_TEXT.get(sev, (sev, sev))[ru], state_text,
                         a.acked_by or a.shelved_by or ""]
                rows.append((shelved, raised or 0, f"{vid}/{pid}",
                             [Text(str(x), style=style) for x in cells], sev, state))
        rows.sort(key=lambda r: (r[0], -r[1], r[2]))
        return [(k, cells, sev, state) for _, _, k, cells, sev, state in rows]

    def _draw_alarms(self, src: SourceView) -> None:
        table = self.query_one("#alarms", DataTable)
        selected = None
        if table.row_count:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        rows = self._alarm_list(src)
        table.clear()
        for k, cells, _, _ in rows:
            table.add_row(*cells, key=k)
        keys = [k for k, _, _, _ in rows]
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)
        self.query_one("#alarm-title", Static).update(self.alarm_title(rows))

    def alarm_title(self, rows: list[tuple[str, list[Text], str, str]]) -> Text:
        """The alarm list's title: how many, how many red and yellow (shelved ones aside),
        how many wait for an acknowledgement, how many are shelved."""
        c = self.centre
        out = Text(f"{cp.word('alarms', c)} ", style="bold")
        if not rows:
            out.append(cp.word("no_alarms", c), style=DIM)
            return out
        listed = [(sev, state) for _, _, sev, state in rows if state != "shelved"]
        red = sum(sev == "red" for sev, _ in listed)
        unacked = sum(state in ("active_unacked", "normal_unacked") for _, state in listed)
        shelved = len(rows) - len(listed)
        out.append(f"{len(listed)}", style="bold")
        out.append(f"  ● {red}", style=RED)
        out.append(f"  ● {sum(sev == 'yellow' for sev, _ in listed)}", style=AMBER)
        out.append(f"  {cp.word('unacked', c)} ", style=DIM)
        out.append(str(unacked), style="bold reverse" if unacked else "")
        if shelved:
            out.append(f"  {cp.word('shelved', c)} ", style=DIM)
            out.append(str(shelved), style="grey58")
        return out

    def _check_reply(self) -> None:
        """Show the ingest's answer to this console's pending request: the reply naming
        its request id (the operator's other consoles get every reply too)."""
        ru = self.centre == "moscow"
        new = self.model.reply_count - self._seen_reply
        self._seen_reply = self.model.reply_count
        pending = self._pending
        if pending is None:
            return
        replies = list(self.model.replies)[-new:] if new > 0 else []
        reply = next((r for r in replies if r.request_id == pending.request_id), None)
        if reply is None:
            if time.monotonic() - pending.sent > 10:
                verb = ACTION_TEXT[pending.action][ru][0]
                self._set_status(f"{verb}: нет ответа" if ru
                                 else f"{verb}: no answer from the ingest", RED)
                self._pending = None
            return
        self._pending = None
        ev = reply.event
        if reply.ok and ev is not None:
            action = EVENT_ACTION.get(ev.transition, pending.action)
            f = self.fields.get((ev.vehicle, ev.parameter))
            name = f.label if f else ev.parameter
            text = f"✓ {name} {ACTION_TEXT[action][ru][1]}"
            if action == "shelve" and ev.until_ns:
                minutes = (ev.until_ns - ev.time_ns) / 60e9
                text += f" на {minutes:.0f} мин" if ru else f" for {minutes:.0f} min"
            self._set_status(f"{text} — {ev.operator}", "bold green3")
        else:
            self._set_status(f"✗ {ACTION_TEXT[pending.action][ru][2]}: {reply.error}", RED)


# --- the command -------------------------------------------------------------------------

