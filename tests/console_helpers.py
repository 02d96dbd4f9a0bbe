"""What the console tests share: the terminal size and ways to drive and read a console."""

from __future__ import annotations

import re

from groundstation.console import app as console

SIZE = (150, 46)


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
