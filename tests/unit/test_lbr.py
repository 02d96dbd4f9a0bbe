"""Apollo's low-bit-rate format: its definition (a subset of the HBR one, checked as such),
the switch between HBR and LBR (flight plan and instructor), the frames of each, the one
tape that records both and dumps each at its real speed, and one alarm state over both."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import DefinitionError, VehicleDefinition, load_all
from groundstation.core.encoder import FrameEncoder
from groundstation.core.mission_time import FRAME_EPOCH_NS, parse_time_ns
from groundstation.paths import defs_dir
from groundstation.storage.archive import ArchiveWriter
from groundstation.storage.export import export_pass
from groundstation.storage.passes import Catalogue
from simulators import control, recorder
from simulators.link import Transmitter
from simulators.mission import Mission
from simulators.telemetry import FrameBlock, ShipDownlink

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def test_the_lbr_definition_is_a_smaller_format_of_apollo(
        defs: dict[str, VehicleDefinition]) -> None:
    apollo = defs[A]
    assert list(defs) == [A, S]  # still one entry per vehicle: its main stream
    assert list(apollo.streams) == ["hbr", "lbr"] and list(defs[S].streams) == ["tm"]
    lbr = apollo.stream_definition("lbr")
    assert lbr is not None and lbr.subset_of == "hbr" and apollo.stream_definition("x") is None
    f = lbr.frame
    assert f.words * f.word_bits * f.rate_hz == 1600  # 1.6 kbit/s
    assert f.words * f.rate_hz == 200  # 200 words a second
    hbr = apollo.frame
    assert hbr.words * hbr.word_bits * hbr.rate_hz == 51_200
    ids = {p.id for p in lbr.parameters}
    assert ids < {p.id for p in apollo.parameters}
    assert {"cabin_press", "pcm_mode", "main_bus_a_volts", "dm_attached"} <= ids
    assert {"sps_chamber_press", "vhf_range"}.isdisjoint(ids)  # high bit rate only
    for p in lbr.parameters:  # the same measurement, in another place
        assert p.limits == apollo.parameter(p.id).limits
        assert p.calibration == apollo.parameter(p.id).calibration


def _defs_copy(tmp_path: Path, old: str, new: str) -> Path:
    d = tmp_path / "defs"
    shutil.copytree(defs_dir(), d, ignore=shutil.ignore_patterns("commands"))
    lbr = d / "apollo_csm_lbr.yaml"
    text = lbr.read_text(encoding="utf-8")
    assert old in text
    lbr.write_text(text.replace(old, new, 1), encoding="utf-8")
    return d


@pytest.mark.parametrize(("old", "new", "where"), [
    ("    yellow: [4.7, 5.4]", "    yellow: [4.6, 5.4]", "parameter 'cabin_press': limits"),
    ("  unit: psia", "  unit: kPa", "parameter 'cabin_press': unit"),
    ("subset_of: hbr", "subset_of: tm", "subset_of"),
    ("- id: co2_pp", "- id: co2_pp_lbr", "parameter 'co2_pp_lbr'"),
])
def test_a_format_that_differs_from_the_main_one_is_refused(
        tmp_path: Path, old: str, new: str, where: str) -> None:
    with pytest.raises(DefinitionError) as exc:
        load_all(_defs_copy(tmp_path, old, new))
    assert exc.value.path.endswith("apollo_csm_lbr.yaml")
    assert exc.value.problems[0][0] == where, exc.value


def test_two_main_definitions_of_a_vehicle_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as exc:
        load_all(_defs_copy(tmp_path, "subset_of: hbr\n", ""))
    assert "already defined" in str(exc.value)


def test_the_flight_plan_and_the_instructor_switch_the_pcm_mode(
        defs: dict[str, VehicleDefinition]) -> None:
    night, morning = tl.APOLLO_LBR[0]
    assert [tl.pcm_mode_at(A, t) for t in (night - 1, night, morning - 1, morning)] == [
        "HBR", "LBR", "LBR", "HBR"]
    assert tl.pcm_mode_at(S, night + 60) == "HBR"
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    reply = control.handle(m, A, json.dumps({"cmd": "pcm_mode", "mode": "LBR",
                                             "id": 3}).encode())
    assert reply["ok"] and (reply["mode"], reply["stream"], reply["get"]) == ("LBR", "lbr",
                                                                              m.t)
    assert m.pcm_mode(A) == "LBR" and m.downlink_stream(A) == "lbr"
    state = m.state(A)
    assert (state.pcm_mode, state.stream) == ("LBR", "lbr")
    # An instructor's LBR lasts until the flight plan next changes the mode.
    m.set_pcm_mode(A, "LBR", at=tl.hms(31))
    assert tl.pcm_mode_at(A, night + 10, [(night - 100, "HBR")]) == "LBR"
    assert tl.pcm_mode_at(A, night + 10, [(night + 5, "HBR")]) == "HBR"
    for bad, error in (({"mode": "MBR"}, "mode"), ({"mode": "LBR", "speed": 2}, "speed")):
        got = control.handle(m, A, json.dumps({"cmd": "pcm_mode", **bad}).encode())
        assert not got["ok"] and error in got["error"]
    got = control.handle(m, S, b'{"cmd": "pcm_mode", "mode": "LBR"}')
    assert not got["ok"] and "one PCM format" in got["error"]


def test_frames_follow_the_switch_in_their_own_format(
        defs: dict[str, VehicleDefinition]) -> None:
    night = tl.APOLLO_LBR[0][0]
    m = Mission(night - 10, seed=2, definitions=defs)
    ship = ShipDownlink(m, defs[A])
    m.set_pcm_mode(A, "HBR", at=night + 6)
    blocks = ship.frames_until(night + 10)
    assert [(b.stream, b.n) for b in blocks] == [("hbr", 500), ("lbr", 30), ("hbr", 200)]
    # Back to back in time: each format starts with its first frame at the switch.
    assert (blocks[0].get[-1] < night <= blocks[1].get[0], blocks[1].get[0]) == (True, night)
    assert blocks[2].get[0] == night + 6
    for b in blocks:
        d = defs[A].streams[b.stream]
        batch = StreamDecoder(d).decode(b.frames, b.times_ns)
        assert batch.n_good == b.n
        _, codes, _ = batch.series("pcm_mode")
        states = d.parameter("pcm_mode").calibration.states  # type: ignore[union-attr]
        assert {states[int(c)] for c in codes} == {b.stream.upper()}


def _block(d: VehicleDefinition, start_s: float, seconds: float, heard: bool) -> FrameBlock:
    rate = d.frame.rate_hz
    k0 = round((start_s * 1e9) / (1e9 / rate))
    n = round(seconds * rate)
    times = FRAME_EPOCH_NS + (k0 + np.arange(n)) * round(1e9 / rate)
    frames = FrameEncoder(d).encode({}, n, d.frame.counter.first + k0 % d.frame.counter.modulus)
    return FrameBlock(d.vehicle, k0, frames, times, np.zeros(n), np.full(n, heard),
                      np.zeros(n, bool), d.stream)


def test_one_tape_dumps_lbr_at_32x_and_hbr_at_8x(defs: dict[str, VehicleDefinition]) -> None:
    hbr, lbr = defs[A], defs[A].streams["lbr"]
    cap = int(recorder.HBR_CAPACITY_S * hbr.frame.rate_hz)
    tx = Transmitter(hbr, Mission(tl.hms(30), seed=1, definitions=defs).faults, 1,
                     frames_per_message=50, recorder_frames=cap,
                     playback_frames_per_message=10_000)
    # Out of contact: 8 min of LBR, then 1 min of HBR, recorded.
    assert tx.feed(_block(lbr, 100_000, 480, False)) == []
    assert tx.feed(_block(hbr, 100_600, 60, False)) == []
    assert tx.recorded == 2400 + 3000
    assert tx.tape_used == pytest.approx(2400 * 2.5 + 3000)  # in HBR frames' tape
    # Heard again, live in HBR: 1 s of live time dumps 32 s of LBR (160 of its frames).
    out = tx.feed(_block(hbr, 100_700, 1, True))
    dumped = [m for m in out if m.kind == "playback"]
    assert {m.topic for m in dumped} == {f"telemetry/live/{A}/lbr"}
    assert sum(m.frames for m in dumped) == 160 == recorder.LBR_DUMP_RATE * 5
    # The rest of the LBR (448 s at 32x = 14 s), then the HBR at 8x: 60 s in 7.5 s.
    out = tx.feed(_block(hbr, 100_701, 14, True))
    assert sum(m.frames for m in out if m.kind == "playback") == 2240
    out = tx.feed(_block(hbr, 100_715, 7.5, True))
    dumped = [m for m in out if m.kind == "playback"]
    assert {m.topic for m in dumped} == {f"telemetry/live/{A}/hbr"}
    assert sum(m.frames for m in dumped) == 3000 and tx.recorded == 0
    # A full tape is 2 h of LBR, or 30 min of HBR.
    tx.feed(_block(lbr, 200_000, 3 * 3600, False))
    assert tx.recorded == recorder.LBR_CAPACITY_S * 5


def test_one_alarm_state_judges_both_formats(defs: dict[str, VehicleDefinition]) -> None:
    """An LBR batch goes to the alarm engine built from the HBR definition."""
    lbr = defs[A].streams["lbr"]
    engine = AlarmEngine(defs[A])
    n = 5 * 6  # six 1-sps samples of cabin pressure
    frames = FrameEncoder(lbr).encode({"cabin_press": 6.5, "roll_rate": 0.0}, n)
    batch = StreamDecoder(lbr).decode(frames, FRAME_EPOCH_NS + np.arange(n) * 200_000_000,
                                      {"phase": "orbit"})
    events = engine.process(batch, {"phase": "orbit"})
    # (The parameters not given read raw zero: red too.)
    assert [(e.transition, e.severity) for e in events if e.parameter == "cabin_press"] == [
        ("raised", "red")]
    assert "cabin_press" in [a["parameter"] for a in engine.active()["alarms"]]
    # Nothing the LBR does not carry: the SPS chamber pressure has no limits, and VHF
    # ranging and the SPS quantities are not judged from LBR.
    assert not {"vhf_range", "sps_ox_qty"} & {e.parameter for e in events}


def test_the_catalogue_and_export_take_a_change_of_format(
        tmp_path: Path, defs: dict[str, VehicleDefinition]) -> None:
    """HBR 10 s, LBR 20 s, HBR 10 s in the archive: one HBR pass over the LBR stretch (a
    change of format, no gap, nothing missing), one LBR pass; each exported with its own
    definition, recorded or current."""
    root = tmp_path / "archive"
    t0 = parse_time_ns("1975-07-16T06:00:00Z")
    for stream, a, b in (("hbr", 0, 10), ("lbr", 10, 30), ("hbr", 30, 40)):
        d = defs[A].streams[stream]
        period = round(1e9 / d.frame.rate_hz)
        seq0 = (t0 - FRAME_EPOCH_NS + a * 10**9) // period
        n = round((b - a) * d.frame.rate_hz)
        frames = FrameEncoder(d).encode({"cabin_press": 5.0}, n, d.frame.counter.first
                                        + seq0 % d.frame.counter.modulus)
        with ArchiveWriter.for_definition(root, d) as w:
            w.append(seq0, t0 + a * 10**9, frames, t0 + a * 10**9)
    cat = Catalogue(root)
    hbr, lbr = sorted(cat.passes, key=lambda p: p.stream)
    assert (hbr.stream, hbr.frames, hbr.missing, hbr.gaps, hbr.expected) == (
        "hbr", 1000, 0, [], 1000)
    assert [(f.stream, round((f.end_ns - f.start_ns) / 1e9)) for f in hbr.formats] == [
        ("lbr", 20)]
    assert (lbr.stream, lbr.frames, lbr.missing, lbr.formats) == ("lbr", 100, 0, [])
    for limits in ("recorded", "current"):
        out = tmp_path / f"lbr-{limits}.csv"
        export_pass(root, lbr, out, limits=limits, progress=False)
        rows = out.read_text().splitlines()
        assert len(rows) == 101 and "cabin_press" in rows[0] and "vhf_range" not in rows[0]


def test_defs_show_and_check_name_the_lbr_format(capsys: pytest.CaptureFixture[str]) -> None:
    from groundstation.cli import main

    assert main(["defs", "show", "apollo_csm/lbr"]) == 0
    out = capsys.readouterr().out
    assert "cabin_press" in out and "vhf_range" not in out
    assert main(["defs", "show", "apollo_csm/xbr"]) == 1
    assert "its streams: hbr, lbr" in capsys.readouterr().err
    assert main(["defs", "check"]) == 0
    assert "apollo_csm_lbr.yaml: apollo_csm, 114 parameters, 5 derived, 40-word frames at " \
           "5/s, stream lbr (a subset of hbr)" in capsys.readouterr().out


def test_the_lbr_file_is_what_its_script_writes() -> None:
    """telemetry_defs/apollo_csm_lbr.yaml is generated: after a change to apollo_csm.yaml,
    run scripts/make-lbr-definition.py."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "make-lbr-definition.py"
    text, _ = runpy.run_path(str(script))["build"]()
    assert text == (defs_dir() / "apollo_csm_lbr.yaml").read_text(encoding="utf-8"), \
        "run scripts/make-lbr-definition.py"
