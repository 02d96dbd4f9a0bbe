"""The archive catalogue and export, and everything after a crash: an archive file cut off
mid-record still lists, exports and replays everything before the tear."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from groundstation.cli import main
from groundstation.core.definitions import load_definition
from groundstation.core.envelope import encode_envelope
from groundstation.core.mission_time import LIFTOFF_NS, format_get_ns, format_utc_ns, parse_time_ns
from groundstation.progress import Progress
from groundstation.replay import session as rs
from groundstation.replay.replayer import ReplayControl, parse_speed
from groundstation.storage import export
from groundstation.storage.archive import QuarantineWriter
from groundstation.storage.passes import Catalogue, find_pass
from tests.archive_helpers import PERIOD, T0, record
from tests.paths import MINI


def cli(*argv: str) -> int:
    """The `groundstation` command."""
    return main(list(argv))


# -- times ---------------------------------------------------------------------------------


def test_times_in_utc_and_get() -> None:
    assert format_get_ns(LIFTOFF_NS) == "000:00:00"
    assert format_utc_ns(LIFTOFF_NS) == "1975-07-15T19:50:01Z"
    assert format_get_ns(T0) == "044:19:08"
    assert parse_time_ns("GET 044:19:08") == T0 == parse_time_ns("044:19:08")
    assert parse_time_ns("1975-07-17 16:09:09") == T0 == parse_time_ns(str(T0))
    assert parse_time_ns("1975-07-17T16:09:09.25Z") == T0 + 250_000_000
    assert format_get_ns(LIFTOFF_NS - 90 * 10**9) == "-000:01:30"
    with pytest.raises(ValueError, match="cannot read the time"):
        parse_time_ns("yesterday")
    with pytest.raises(ValueError, match="below 60"):
        parse_time_ns("GET 001:61:00")
    assert parse_speed("max") is None and parse_speed("10") == 10
    with pytest.raises(ValueError):
        parse_speed("-1")


# -- catalogue -----------------------------------------------------------------------------


def test_passes_gaps_and_ids_come_from_the_index_alone(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    # Pass 1: 10 s, a 3 s dropout, 10 s. Pass 2 starts 5 min later in the same hour, pass 3
    # 20 s after pass 2 ends (LOS gap 15 s: separate passes, same minute as pass 2).
    nxt = record(root, [(T0, 500), (T0 + 13 * 10**9, 500)], index_every_records=8)
    nxt = record(root, [(T0 + 300 * 10**9, 100)], start_seq=nxt)
    record(root, [(T0 + 322 * 10**9, 100)], start_seq=nxt)
    cat = Catalogue(root, los_gap_s=15)
    assert cat.reader.stats.records == 0  # not a single record read: the index sufficed
    ids = [p.id for p in cat.passes]
    assert ids == ["mini/hbr/1975-07-17T16:09:09Z", "mini/hbr/1975-07-17T16:14:09Z",
                   "mini/hbr/1975-07-17T16:14:31Z"]  # to the second: two in one minute
    p1 = cat.passes[0]
    assert (p1.frames, p1.expected, p1.missing) == (1000, 1150, 150)
    assert [(g.start_ns, g.end_ns, g.missing) for g in p1.gaps] == [
        (T0 + 499 * PERIOD, T0 + 13 * 10**9, 150)]
    assert p1.rejected is None  # no quarantine in this archive
    # Default LOS gap (60 s): the last two are one pass with a gap.
    cat60 = Catalogue(root)
    assert [p.id for p in cat60.passes] == ["mini/hbr/1975-07-17T16:09Z",
                                            "mini/hbr/1975-07-17T16:14Z"]
    assert len(cat60.passes[1].gaps) == 1 and cat60.passes[1].frames == 200
    # Lookup by id, number, and a time inside (UTC or GET).
    assert find_pass(cat.passes, "2") is cat.passes[1] is find_pass(cat.passes, "#2")
    assert find_pass(cat.passes, "mini/hbr/1975-07-17T16:09:15Z") is p1
    assert find_pass(cat.passes, "mini/hbr/GET 044:19:20") is p1
    with pytest.raises(LookupError, match="no pass #9"):
        find_pass(cat.passes, "9")
    with pytest.raises(LookupError):
        find_pass(cat.passes, "mini/hbr/1975-07-18T00:00Z")


def test_rejects_are_attributed_from_the_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    record(root, [(T0, 100)])
    record(root, [(T0 + 600 * 10**9, 100)], start_seq=100)
    with QuarantineWriter(root) as q:
        topic = "telemetry/live/mini/hbr"
        q.append(topic, "bad_sync", f"frame at {T0 + 10 * PERIOD} ns, counter 7: bad sync",
                 b"\0" * 16, T0 + 10**9)
        bad = encode_envelope("mini", "hbr", 5, T0, [b"\0" * 15] * 3)  # wrong frame length
        q.append(topic, "frame_length", "frame 0 is 15 bytes", bad, T0 + 600 * 10**9 + 10**9)
        q.append("telemetry/live/nobody/hbr", "unknown_stream", "no definition", b"x", T0)
        q.append("garbage", "bad_topic", "not a telemetry topic", b"x", T0)
    cat = Catalogue(root)
    p1, p2 = cat.passes
    assert p1.rejected is not None and p2.rejected is not None
    assert (p1.rejected.frames, p1.rejected.messages) == (1, 0)
    assert (p2.rejected.frames, p2.rejected.messages, dict(p2.rejected.reasons)) == \
        (3, 1, {"frame_length": 1})
    assert dict(cat.unattributed.reasons) == {"unknown_stream": 1, "bad_topic": 1}


def test_cli_ls_show_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "archive"
    record(root, [(T0, 100), (T0 + 5 * 10**9, 100)])
    assert cli("archive", "ls", "--archive-dir", str(root)) == 0
    out = capsys.readouterr().out
    assert "mini/hbr/1975-07-17T16:09Z" in out and "044:19:08" in out
    assert "rejected: n/a, no quarantine" in out
    assert cli("archive", "ls", "--archive-dir", str(root), "--json") == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["frames"] == 200 and summary["gaps"][0]["missing_frames"] == 150
    assert cli("archive", "show", "1", "--archive-dir", str(root)) == 0
    out = capsys.readouterr().out
    assert "GET 044:19:08.000" in out and "(stored in the archive)" in out
    assert cli("archive", "show", "7", "--archive-dir", str(root)) == 1
    assert "no pass #7" in capsys.readouterr().err
    out_csv = tmp_path / "p.csv"
    assert cli("archive", "export", "1", "--archive-dir", str(root), "-o", str(out_csv),
               "--no-progress") == 0
    with out_csv.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 200 and table[0]["hatch"] == "CLOSED"
    assert float(table[0]["cabin_press"]) == pytest.approx(5.0, abs=0.04)
    assert table[0]["temp"] == "" and table[1]["temp"] != ""  # subcommutated: every 5th
    assert cli("replay", "--archive-dir", str(root)) == 1
    assert "give either a PASS or --from and --to" in capsys.readouterr().err


def test_export_wide_and_long_csv_and_parquet(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    record(root, [(T0, 400)])
    p = Catalogue(root).passes[0]
    wide = export.export_pass(root, p, tmp_path / "w.csv", progress=False, chunk_frames=64)
    assert (wide.rows, wide.frames) == (400, 400)
    with (tmp_path / "w.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seq"]) for r in rows] == list(range(400))
    assert [float(r["range"]) for r in rows[:3]] == pytest.approx([0, 0.01, 0.02], abs=0.007)
    long = export.export_pass(root, p, tmp_path / "l.csv", layout="long", progress=False,
                              parameters=["cabin_press", "hatch"])
    with (tmp_path / "l.csv").open() as f:
        lrows = list(csv.DictReader(f))
    assert long.rows == 800 == len(lrows)
    assert lrows[1]["parameter"] == "hatch" and lrows[1]["text"] == "CLOSED"
    assert lrows[0]["limit"] == "nominal" and lrows[0]["unit"] == "psia"
    pq = pytest.importorskip("pyarrow.parquet")
    export.export_pass(root, p, tmp_path / "w.parquet", fmt="parquet", progress=False,
                       chunk_frames=100)
    table = pq.read_table(tmp_path / "w.parquet")
    assert table.num_rows == 400 and table.column("hatch")[0].as_py() == "CLOSED"
    assert table.column("temp")[0].as_py() is None  # not sampled in that frame: null
    assert pq.ParquetFile(tmp_path / "w.parquet").num_row_groups == 4  # one per chunk
    export.export_pass(root, p, tmp_path / "l.parquet", fmt="parquet", layout="long",
                       progress=False)
    assert pq.read_table(tmp_path / "l.parquet").num_rows > 400


def test_repeated_frames_are_replayed_and_exported_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    nxt = record(root, [(T0, 100)])
    # The last 50 frames again (a redelivery after a reconnect), then the rest.
    record(root, [(T0 + 50 * PERIOD, 50)], start_seq=50)
    record(root, [(T0 + 100 * PERIOD, 50)], start_seq=nxt)
    (p,) = Catalogue(root).passes
    assert (p.frames, p.duplicates, p.archived, p.missing) == (150, 50, 200, 0)
    assert p.out_of_order == 1
    r = export.export_pass(root, p, tmp_path / "r.csv", progress=False)
    assert (r.rows, r.repeats) == (150, 50)


def test_control_commands_and_progress() -> None:
    c = ReplayControl(1.0, T0, T0 + 10**12)
    assert c.apply(b"pause")["ok"] and c.paused
    assert c.apply(json.dumps({"command": "resume"}).encode())["ok"] and not c.paused
    assert c.apply(b"speed max")["ok"] and c.speed is None
    assert c.apply(b"speed 100")["ok"] and c.speed == 100
    assert c.apply(b"seek GET 044:19:18")["ok"] and c.seek_to == T0 + 10 * 10**9
    assert c.apply(b'{"command": "seek", "by_s": -3600}')["ok"] and c.seek_to == T0  # clamped
    assert not c.apply(b"speed fast")["ok"]
    assert not c.apply(b"{not json")["ok"]
    assert "unknown command" in c.apply(b"jump")["error"]
    assert c.apply(b"stop")["ok"] and c.stopped

    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    sink = Sink()
    bar = Progress(1000, desc="replay x", stream=sink)  # type: ignore[arg-type]
    bar.update(250)
    bar.close(note="finished")
    assert "25.0%" in sink.text and "250/1,000 frames" in sink.text and "finished" in sink.text


def test_a_bad_session_message_is_refused_with_the_reason() -> None:
    text = MINI.read_text()
    sha = rs.hash_definition(text)
    ok = rs.session_message("s", "recorded", {"mini": ("hbr", sha, text)})
    info = rs.parse_session_message("replay/session/s", ok)
    assert info is not None and info.definitions["mini"].vehicle == "mini"
    assert rs.parse_session_message("replay/session/s", b"") is None
    # The ingest already runs with that very file: its definition is used as it is.
    current = load_definition(MINI)
    again = rs.parse_session_message("replay/session/s", ok, {"mini": current})
    assert again is not None and again.definitions["mini"] is current
    for payload, why in (
            (b"nope", "not JSON"),
            (rs.session_message("s", "recorded", {"mini": ("hbr", "0" * 64, text)}),
             "does not hash"),
            (rs.session_message("s", "recorded", {"soyuz": ("hbr", sha, text)}),
             "define vehicle 'mini'"),
            (rs.session_message("s", "recorded", {"mini": ("hbr", rs.hash_definition("a: 1"),
                                                            "a: 1")}), "do not validate")):
        with pytest.raises(ValueError, match=why):
            rs.parse_session_message("replay/session/s", payload)
    with pytest.raises(ValueError):
        rs.check_session("a/b")
