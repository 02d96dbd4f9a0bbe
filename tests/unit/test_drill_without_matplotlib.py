"""matplotlib is an extra (`groundstation[drills]`), left out of the ingest's image: without
it a drill's debrief is still written, as Markdown and JSON, and the runner says how to get
the picture."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from groundstation.core.definitions import load_all
from groundstation.drills import runner as drill_runner
from groundstation.drills.runner import DrillOptions, DrillRunner
from groundstation.drills.scenario import load_scenario
from tests.paths import DATA


def test_the_debrief_is_written_without_matplotlib(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    assert not drill_runner.plot_available()
    defs = load_all()
    sc = load_scenario(DATA / "drill_short.yaml", defs)
    said = io.StringIO()
    runner = DrillRunner(sc, defs, DrillOptions(out_dir=tmp_path, out_exact=True,
                                                progress=said, drill_id="nompl"))
    debrief = runner._debrief(sc.start_get, 0.0)
    files = runner._write(debrief)
    assert [f.name for f in files] == ["debrief.md", "debrief.json"]
    assert not (tmp_path / "timeline.png").exists()
    assert json.loads((tmp_path / "debrief.json").read_text())["drill"] == "nompl"
    assert "timeline.png" not in (tmp_path / "debrief.md").read_text()
    assert "pip install 'groundstation[drills]'" in said.getvalue()
