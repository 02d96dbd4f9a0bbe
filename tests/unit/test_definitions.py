"""The telemetry definition loader: a valid file loads and is normalised; each kind of
mistake the README lists is rejected with a message naming the file, the parameter and the
field; the real vehicle files load and carry the published figures."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from groundstation.core.definitions import (
    DefinitionError,
    Parameter,
    VehicleDefinition,
    load_all,
    load_definition,
    parse_definition,
)
from groundstation.paths import defs_dir

# --- a small valid definition ------------------------------------------------------------

# 32 words of 8 bits, 10 minor frames. Sync in words 0..3 leaves the low 6 bits of word 3
# to the frame counter (as on the Apollo PCM), so the counter and the sync share a word.
VALID: dict[str, Any] = {
    "schema": 1,
    "vehicle": "testcraft",
    "name": {"en": "Test craft", "ru": "Испытательный аппарат"},
    "stream": "hbr",
    "source": "estimate",
    "frame": {
        "words": 32,
        "word_bits": 8,
        "rate_hz": 50,
        "minor_frames": 10,
        "sync": {"words": [0, 3], "pattern": 0xABCDEF00, "mask": 0xFFFFFFC0,
                 "complement_odd": 0x07FFF000},
        "counter": {"word": 3, "bits": [0, 5], "first": 1, "modulus": 10},
    },
    "parameters": [
        {"id": "cabin_press", "type": "analog", "word": 10,
         "calibration": {"linear": [0.0, 17.0]}, "unit": "psia",
         "limits": {"yellow": [4.8, 5.2], "red": [4.6, 5.4], "deadband": 0.05},
         "console": {"houston": "EECOM"}, "subsystem": "ECS",
         "label": {"en": "CABIN PRESS", "ru": "Давление в кабине"},
         "display": {"houston": "psia", "moscow": "mmHg"}},
        # 10-bit value across two words, subcommutated every 5th minor frame from frame 2.
        {"id": "o2_tank_press", "type": "analog", "words": [11, 12], "bits": [2, 11],
         "every": 5, "offset": 2, "calibration": {"linear": [50.0, 1050.0]}, "unit": "psia",
         "limits": {"red": [800.0, 950.0]}},
        # Subcommutated on word 16 in minor frames 0 and 5 (given out of order).
        {"id": "cabin_temp", "type": "analog", "word": 16, "frames": [5, 0],
         "calibration": {"table": [[0, 40.0], [128, 70.0], [255, 125.0]]}, "unit": "degF",
         "display": {"houston": "degF", "moscow": "degC"}},
        # Shares word 16 with cabin_temp, in other minor frames.
        {"id": "glycol_temp", "type": "analog", "word": 16, "frames": [1, 3],
         "calibration": {"linear": [25.0, 75.0]}, "unit": "degF"},
        {"id": "co2_pp", "type": "analog", "word": 17, "calibration": {"poly": [0.0, 0.1]},
         "unit": "mmHg", "limits": {"red": [None, 7.6]}},
        # Two bit fields in word 13.
        {"id": "valve", "type": "discrete", "word": 13, "bits": [0, 0],
         "calibration": {"states": {0: "CLOSED", 1: "OPEN"}}, "limits": {"red_states": ["CLOSED"]}},
        {"id": "mode", "type": "discrete", "word": 13, "bits": [1, 2],
         "calibration": {"states": {0: "STBY", 1: "AUTO", 2: "MAN", 3: "FAIL"}}},
        {"id": "fc1_amps", "type": "analog", "word": 14, "calibration": {"linear": [0, 100]},
         "unit": "A"},
        {"id": "fc2_amps", "type": "analog", "word": 15, "calibration": {"linear": [0, 100]},
         "unit": "A"},
    ],
    "derived": [
        {"id": "fc_total_amps", "op": "sum", "inputs": ["fc1_amps", "fc2_amps"], "unit": "A"},
        {"id": "fc_amps_diff", "op": "difference", "inputs": ["fc1_amps", "fc2_amps"],
         "unit": "A"},
    ],
}


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def param(d: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in d["parameters"] if p["id"] == pid)


def derived(d: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in d["derived"] if p["id"] == pid)


def write(tmp_path: Path, d: dict[str, Any] | str) -> Path:
    path = tmp_path / "testcraft.yaml"
    text = d if isinstance(d, str) else yaml.safe_dump(d, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, d: dict[str, Any] | str) -> VehicleDefinition:
    return load_definition(write(tmp_path, d))


def rejected(tmp_path: Path, d: dict[str, Any] | str) -> tuple[Path, DefinitionError]:
    path = write(tmp_path, d)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    return path, info.value


def assert_reported(err: DefinitionError, path: Path, who: str | None, field: str,
                    *words: str) -> None:
    """One line of the message names the file, `who` (the entry), the field, and says what
    is wrong (every regex in `words`)."""
    msg = str(err)
    lines = [ln for ln in msg.splitlines()
             if str(path) in ln and (who is None or who in ln) and field in ln
             and all(re.search(w, ln, re.IGNORECASE) for w in words)]
    assert lines, f"no line names {path}, {who}, {field!r} and {words}:\n{msg}"


# --- the valid definition ------------------------------------------------------------------


def test_valid_definition_loads_and_is_normalised(tmp_path: Path) -> None:
    path = write(tmp_path, valid())
    d = load_definition(path)
    assert d.vehicle == "testcraft"
    assert d.path == str(path)
    assert d.frame.bytes_per_frame == 32
    assert [p.id for p in d.parameters] == [p["id"] for p in VALID["parameters"]]

    cabin = d.parameter("cabin_press")
    assert cabin.words == [10]  # `word` becomes `words`
    assert (cabin.lsb, cabin.width, cabin.raw_max) == (0, 8, 255)
    assert cabin.frames is None  # every minor frame
    assert cabin.eng_range() == pytest.approx((0.0, 17.0))
    assert cabin.calibrate([0, 255]).tolist() == pytest.approx([0.0, 17.0])
    assert cabin.limits is not None and cabin.limits.red == (4.6, 5.4)
    assert cabin.label["ru"] == "Давление в кабине"

    o2 = d.parameter("o2_tank_press")
    assert o2.words == [11, 12]
    assert (o2.lsb, o2.width, o2.raw_max) == (2, 10, 1023)
    assert o2.frames == [2, 7]  # every 5 from offset 2 over 10 minor frames
    assert o2.every is None and o2.offset is None
    assert o2.eng_range() == pytest.approx((50.0, 1050.0))

    temp = d.parameter("cabin_temp")
    assert temp.frames == [0, 5]
    assert temp.eng_range() == pytest.approx((40.0, 125.0))
    assert float(temp.calibrate([128])[0]) == pytest.approx(70.0)
    assert d.parameter("glycol_temp").frames == [1, 3]

    assert (d.parameter("valve").lsb, d.parameter("valve").width) == (0, 1)
    assert (d.parameter("mode").lsb, d.parameter("mode").width) == (1, 2)
    assert d.parameter("mode").state_code("FAIL") == 3

    assert [x.id for x in d.derived] == ["fc_total_amps", "fc_amps_diff"]
    assert d.all_ids[-2:] == ["fc_total_amps", "fc_amps_diff"]


def test_parse_definition_names_the_path_it_is_given() -> None:
    text = yaml.safe_dump(valid(), allow_unicode=True)
    assert parse_definition(text, "x/testcraft.yaml").path == "x/testcraft.yaml"
    bad = valid()
    param(bad, "cabin_press")["unit"] = "psi"
    with pytest.raises(DefinitionError) as info:
        parse_definition(yaml.safe_dump(bad, allow_unicode=True), "x/testcraft.yaml")
    assert info.value.path == "x/testcraft.yaml"
    assert "x/testcraft.yaml" in str(info.value)


def test_yaml_on_off_state_names_stay_strings(tmp_path: Path) -> None:
    # yaml.safe_dump would quote ON/OFF, so write the heater by hand, unquoted, as an author
    # would; YAML 1.1 reads bare ON/OFF/Yes/no as booleans unless the loader prevents it.
    base = yaml.safe_dump({k: v for k, v in valid().items() if k != "derived"},
                          allow_unicode=True, sort_keys=False)
    heater = (
        "- id: heater\n"
        "  type: discrete\n"
        "  word: 18\n"
        "  bits: [0, 1]\n"
        "  calibration: {states: {0: OFF, 1: ON, 2: Yes, 3: no}}\n"
        "  limits: {red_states: [OFF], yellow_states: [no]}\n"
    )
    assert "\nparameters:\n- id: cabin_press\n" in base  # safe_dump's list indentation
    assert base.rstrip().endswith("unit: A")  # so the heater lands in `parameters`
    d = load(tmp_path, base + heater)
    p = d.parameter("heater")
    assert p.calibration is not None
    assert p.calibration.states == {0: "OFF", 1: "ON", 2: "Yes", 3: "no"}
    assert all(type(s) is str for s in p.calibration.states.values())
    assert p.limits is not None
    assert p.limits.red_states == ["OFF"]
    assert p.limits.yellow_states == ["no"]
    assert p.state_code("ON") == 1


def test_state_labels_name_every_state_in_russian(tmp_path: Path) -> None:
    base = yaml.safe_dump({k: v for k, v in valid().items() if k != "derived"},
                          allow_unicode=True, sort_keys=False)
    heater = (
        "- id: heater\n"
        "  type: discrete\n"
        "  word: 18\n"
        "  bits: [0, 0]\n"
        "  calibration: {states: {0: OFF, 1: ON}}\n"
        "  state_labels: {ru: {OFF: \"ВЫКЛ\", ON: \"ВКЛ\"}}\n"
    )
    p = load(tmp_path, base + heater).parameter("heater")
    assert (p.state_label("ON", "ru"), p.state_label("ON", "en")) == ("ВКЛ", "ON")
    bad = heater.replace('ON: \"ВКЛ\"', 'ONN: \"ВКЛ\"').replace("{ru:", "{fr: {}, ru:")
    with pytest.raises(DefinitionError) as exc:
        load(tmp_path, base + bad)
    text = str(exc.value)
    assert "parameter 'heater': state_labels.fr: state labels are 'en' and 'ru'" in text
    assert "state_labels.ru: 'ONN' is not one of the states ['OFF', 'ON']" in text
    assert "state_labels.ru: no ru name for the state 'ON': name every state" in text


def test_two_bit_fields_in_one_word_do_not_overlap(tmp_path: Path) -> None:
    d = load(tmp_path, valid())
    valve, mode = d.parameter("valve"), d.parameter("mode")
    assert valve.words == mode.words == [13]
    assert set(range(valve.lsb, valve.lsb + valve.width)).isdisjoint(
        range(mode.lsb, mode.lsb + mode.width))


def test_subcommutated_parameters_share_a_word_in_different_minor_frames(
        tmp_path: Path) -> None:
    d = valid()
    # A third tenant of word 16, in the minor frames cabin_temp and glycol_temp leave free.
    d["parameters"].append({"id": "suit_temp", "type": "analog", "word": 16,
                            "frames": [2, 4, 6, 7, 8, 9],
                            "calibration": {"linear": [0, 100]}, "unit": "degF"})
    loaded = load(tmp_path, d)
    tenants = [p for p in loaded.parameters if p.words == [16]]
    assert [p.id for p in tenants] == ["cabin_temp", "glycol_temp", "suit_temp"]
    frames = [f for p in tenants for f in p.frames or []]
    assert sorted(frames) == list(range(10))


# --- what the loader rejects ---------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def _add_param(**fields: Any) -> Mutation:
    entry = {"type": "analog", "calibration": {"linear": [0, 100]}, "unit": "A", **fields}
    return lambda d: d["parameters"].append(entry)


def _rename_key(entry: dict[str, Any], old: str, new: str) -> None:
    entry[new] = entry.pop(old)


# (mutation, entry named in the message, field named, words saying what is wrong)
REJECTIONS: dict[str, tuple[Mutation, str | None, str, tuple[str, ...]]] = {
    "word outside the frame": (
        lambda d: param(d, "cabin_press").update(word=32),
        "parameter 'cabin_press'", "words", (r"word 32 is outside the frame", r"0\.\.31")),
    "multi-word value reaching outside the frame": (
        lambda d: param(d, "o2_tank_press").update(words=[31, 32]),
        "parameter 'o2_tank_press'", "words", (r"word 32 is outside the frame",)),
    "two parameters on the same bit in every minor frame": (
        lambda d: param(d, "fc2_amps").update(word=14),
        "parameter 'fc2_amps'", "word 14 bit", (r"also used by parameter 'fc1_amps'",)),
    "subcommutated parameters clash in one minor frame": (
        lambda d: param(d, "glycol_temp").update(frames=[1, 5]),
        "parameter 'glycol_temp'", "word 16 bit",
        (r"minor frame 5", r"also used by parameter 'cabin_temp'")),
    "bit field overlapping another bit field": (
        lambda d: param(d, "mode").update(bits=[0, 1]),
        "parameter 'mode'", "word 13 bit 0", (r"also used by parameter 'valve'",)),
    "parameter on the sync pattern": (
        _add_param(id="intruder", word=1),
        "parameter 'intruder'", "word 1 bit", (r"also used by the sync pattern",)),
    "parameter on the sync bits of the counter word": (
        _add_param(id="intruder", word=3, bits=[6, 7]),
        "parameter 'intruder'", "word 3 bit 6", (r"also used by the sync pattern",)),
    "parameter on the frame counter": (
        _add_param(id="intruder", word=3, bits=[0, 0]),
        "parameter 'intruder'", "word 3 bit 0", (r"also used by the frame counter",)),
    "bit field wider than its word": (
        lambda d: param(d, "valve").update(bits=[0, 8]),
        "parameter 'valve'", "bits", (r"\[0, 8\]", r"wider than its 1 word")),
    "bit field wider than its two words": (
        lambda d: param(d, "o2_tank_press").update(bits=[2, 16]),
        "parameter 'o2_tank_press'", "bits", (r"wider than its 2 word",)),
    "duplicate parameter id": (
        lambda d: param(d, "fc2_amps").update(id="fc1_amps"),
        "parameter 'fc1_amps'", "id", (r"duplicate id",)),
    "table raw points not increasing": (
        lambda d: param(d, "cabin_temp")["calibration"].update(
            table=[[0, 40.0], [128, 70.0], [100, 125.0]]),
        "parameter 'cabin_temp'", "calibration.table", (r"raw points", r"strictly increasing")),
    "table engineering values not monotonic": (
        lambda d: param(d, "cabin_temp")["calibration"].update(
            table=[[0, 40.0], [128, 70.0], [255, 60.0]]),
        "parameter 'cabin_temp'", "calibration.table",
        (r"engineering values", r"not monotonic")),
    "polynomial not monotonic over the raw range": (
        lambda d: param(d, "co2_pp")["calibration"].update(poly=[0.0, 1.0, -0.01]),
        "parameter 'co2_pp'", "calibration.poly", (r"not monotonic", r"0\.\.255")),
    "states on an analog": (
        lambda d: param(d, "cabin_press").update(
            calibration={"states": {0: "LOW", 1: "HIGH"}}),
        "parameter 'cabin_press'", "calibration.states", (r"for discretes", r"analog")),
    "red low inside yellow low": (
        lambda d: param(d, "cabin_press")["limits"].update(red=[4.9, 5.4]),
        "parameter 'cabin_press'", "limits.red",
        (r"red low 4\.9 is inside the yellow low 4\.8",)),
    "red high inside yellow high": (
        lambda d: param(d, "cabin_press")["limits"].update(red=[4.6, 5.1]),
        "parameter 'cabin_press'", "limits.red",
        (r"red high 5\.1 is inside the yellow high 5\.2",)),
    "low limit above high limit": (
        lambda d: param(d, "cabin_press")["limits"].update(yellow=[5.2, 4.8]),
        "parameter 'cabin_press'", "limits.yellow", (r"low 5\.2 is above high 4\.8",)),
    "unknown state in red_states": (
        lambda d: param(d, "valve")["limits"].update(red_states=["JAMMED"]),
        "parameter 'valve'", "limits.red_states", (r"'JAMMED' is not one of the states",)),
    "unknown state in yellow_states": (
        lambda d: param(d, "mode").update(limits={"yellow_states": ["MANUAL"]}),
        "parameter 'mode'", "limits.yellow_states", (r"'MANUAL' is not one of the states",)),
    "unknown unit": (
        lambda d: param(d, "cabin_press").update(unit="psi"),
        "parameter 'cabin_press'", "unit", (r"unknown unit 'psi'",)),
    "display unit that does not convert": (
        lambda d: param(d, "cabin_press")["display"].update(moscow="degC"),
        "parameter 'cabin_press'", "display.moscow",
        (r"cannot convert 'psia'", r"pressure", r"'degC'", r"temperature")),
    "subcommutation frame beyond the major frame": (
        lambda d: param(d, "cabin_temp").update(frames=[0, 10]),
        "parameter 'cabin_temp'", "frames", (r"minor frame 10 does not fit", r"0\.\.9")),
    "negative subcommutation frame": (
        lambda d: param(d, "cabin_temp").update(frames=[-1, 5]),
        "parameter 'cabin_temp'", "frames", (r"minor frame -1 does not fit",)),
    "every that does not divide minor_frames": (
        lambda d: param(d, "o2_tank_press").update(every=3, offset=0),
        "parameter 'o2_tank_press'", "every", (r"every 3", r"10 minor frames", r"divide")),
    "counter modulus not a multiple of minor_frames": (
        lambda d: d["frame"]["counter"].update(modulus=15),
        None, "frame.counter.modulus", (r"15 is not a multiple of minor_frames \(10\)",)),
    "derived input that does not exist": (
        lambda d: derived(d, "fc_total_amps").update(inputs=["fc1_amps", "fc9_amps"]),
        "derived parameter 'fc_total_amps'", "inputs", (r"no parameter 'fc9_amps'",)),
    "derived inputs forming a cycle": (
        lambda d: d["derived"].extend([
            {"id": "loop_a", "op": "sum", "inputs": ["fc1_amps", "loop_b"], "unit": "A"},
            {"id": "loop_b", "op": "max", "inputs": ["loop_a"], "unit": "A"}]),
        "derived parameter 'loop_a'", "inputs", (r"cycle", r"loop_a -> loop_b -> loop_a")),
    "derived input referring to itself": (
        lambda d: derived(d, "fc_total_amps")["inputs"].append("fc_total_amps"),
        "derived parameter 'fc_total_amps'", "inputs", (r"cycle",)),
    "difference with three inputs": (
        lambda d: derived(d, "fc_amps_diff")["inputs"].append("fc_total_amps"),
        "derived parameter 'fc_amps_diff'", "inputs",
        (r"'difference' takes exactly two inputs",)),
    "misspelt field": (
        lambda d: _rename_key(param(d, "cabin_press"), "calibration", "calibraton"),
        "parameter 'cabin_press'", "calibraton", (r"unknown field",)),
    "misspelt field in the frame": (
        lambda d: _rename_key(d["frame"]["counter"], "modulus", "modulo"),
        None, "frame.counter.modulo", (r"unknown field",)),
    "limit outside the calibrated range": (
        lambda d: param(d, "cabin_press")["limits"].update(red=[4.6, 18.0]),
        "parameter 'cabin_press'", "limits.red", (r"limit 18", r"outside", r"0\.\.17")),
    "missing required field in a parameter": (
        lambda d: param(d, "cabin_press").pop("type"),
        "parameter 'cabin_press'", "type", (r"required field is missing",)),
    "missing required top-level field": (
        lambda d: d.pop("stream"),
        None, "stream", (r"required field is missing",)),
}


@pytest.mark.parametrize("case", list(REJECTIONS), ids=list(REJECTIONS))
def test_rejects(case: str, tmp_path: Path) -> None:
    mutate, who, field, words = REJECTIONS[case]
    d = valid()
    mutate(d)
    path, err = rejected(tmp_path, d)
    assert err.path == str(path)
    assert err.problems, "DefinitionError without problems"
    assert_reported(err, path, who, field, *words)


def test_rejects_text_that_is_not_yaml(tmp_path: Path) -> None:
    path, err = rejected(tmp_path, "schema: 1\nframe: {words: [32\nparameters: -\n")
    assert len(err.problems) == 1
    assert_reported(err, path, None, "", r"not valid YAML")


def test_rejects_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path, err = rejected(tmp_path, "- just\n- a list\n")
    assert_reported(err, path, None, "", r"must be a mapping")


def test_reports_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(DefinitionError) as info:
        load_definition(missing)
    assert_reported(info.value, missing, None, "", r"cannot read the file")


def test_reports_every_problem_in_a_file(tmp_path: Path) -> None:
    d = valid()
    param(d, "cabin_press")["word"] = 40                              # outside the frame
    param(d, "cabin_temp")["calibration"]["table"] = [[0, 40.0], [128, 70.0], [255, 60.0]]
    param(d, "valve")["bits"] = [0, 8]                                # wider than its word
    derived(d, "fc_amps_diff")["inputs"] = ["fc1_amps", "fc2_amps", "fc_total_amps"]
    path, err = rejected(tmp_path, d)
    assert len(err.problems) == 4, err.problems
    assert_reported(err, path, "parameter 'cabin_press'", "words", r"outside the frame")
    assert_reported(err, path, "parameter 'cabin_temp'", "calibration.table", r"not monotonic")
    assert_reported(err, path, "parameter 'valve'", "bits", r"wider")
    assert_reported(err, path, "derived parameter 'fc_amps_diff'", "inputs", r"exactly two")
    assert str(err).startswith(f"4 problems in telemetry definition {path}")


def test_reports_every_shape_and_unit_problem_in_a_file(tmp_path: Path) -> None:
    d = valid()
    param(d, "cabin_press")["unit"] = "furlongs"
    param(d, "fc2_amps")["id"] = "fc1_amps"
    param(d, "cabin_temp")["display"]["moscow"] = "V"
    path, err = rejected(tmp_path, d)
    # The renamed fc2_amps also leaves two derived entries without an input: reported too.
    assert len(err.problems) == 5, err.problems
    assert_reported(err, path, "derived parameter 'fc_amps_diff'", "inputs", r"'fc2_amps'")
    assert_reported(err, path, "parameter 'cabin_press'", "unit", r"unknown unit 'furlongs'")
    assert_reported(err, path, "parameter 'fc1_amps'", "id", r"duplicate")
    assert_reported(err, path, "parameter 'cabin_temp'", "display.moscow", r"cannot convert")


def test_reports_several_pydantic_problems_at_once(tmp_path: Path) -> None:
    d = valid()
    _rename_key(param(d, "cabin_press"), "calibration", "calibraton")
    param(d, "fc1_amps").pop("type")
    path, err = rejected(tmp_path, d)
    assert len(err.problems) == 2, err.problems
    assert_reported(err, path, "parameter 'cabin_press'", "calibraton", r"unknown field")
    assert_reported(err, path, "parameter 'fc1_amps'", "type", r"required field is missing")


def test_reports_problems_from_both_passes_at_once(tmp_path: Path) -> None:
    d = valid()
    param(d, "cabin_press")["unit"] = "psi"
    param(d, "fc1_amps")["word"] = 40
    path, err = rejected(tmp_path, d)
    assert_reported(err, path, "parameter 'cabin_press'", "unit", r"unknown unit")
    assert_reported(err, path, "parameter 'fc1_amps'", "words", r"outside the frame")


# --- the real vehicle files ----------------------------------------------------------------

APOLLO = defs_dir() / "apollo_csm.yaml"
SOYUZ = defs_dir() / "soyuz.yaml"
needs_real_files = pytest.mark.skipif(
    not (APOLLO.exists() and SOYUZ.exists()),
    reason="telemetry_defs/apollo_csm.yaml and soyuz.yaml are not written yet")


@pytest.fixture(scope="module")
def real_defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture(scope="module")
def apollo(real_defs: dict[str, VehicleDefinition]) -> VehicleDefinition:
    return next(d for d in real_defs.values() if d.path == str(APOLLO))


@pytest.fixture(scope="module")
def soyuz(real_defs: dict[str, VehicleDefinition]) -> VehicleDefinition:
    return next(d for d in real_defs.values() if d.path == str(SOYUZ))


def _label(p: Any) -> str:
    return " ".join(p.label.get("en", "").upper().replace("_", " ").split())


def _find(defn: VehicleDefinition, *, channels: tuple[str, ...] = (),
          label: str | None = None, unit: str | None = None) -> list[Any]:
    """Parameters (and derived) by channel, or whose English label matches `label` (the
    whole label) and whose unit is `unit`."""
    def by_label(p: Any) -> bool:
        return (label is not None and re.fullmatch(label, _label(p)) is not None
                and (unit is None or p.unit == unit))

    return [p for p in [*defn.parameters, *defn.derived]
            if (channels and getattr(p, "channel", None) in channels) or by_label(p)]


def _claims_cw(p: Any) -> bool:
    """The parameter's limits say (some of) their figures come from the Apollo caution and
    warning table."""
    src = (p.limits.source if p.limits else None) or ""
    return bool(re.search(r"C&W|caution", src, re.IGNORECASE))


@needs_real_files
def test_real_files_load(real_defs: dict[str, VehicleDefinition],
                         apollo: VehicleDefinition, soyuz: VehicleDefinition) -> None:
    assert {"apollo_csm", "soyuz"} <= set(real_defs)
    assert (apollo.vehicle, soyuz.vehicle) == ("apollo_csm", "soyuz")
    assert len(apollo.parameters) >= 80
    assert len(soyuz.parameters) >= 50


@needs_real_files
def test_apollo_frame_is_the_hbr_pcm_format(apollo: VehicleDefinition) -> None:
    f = apollo.frame
    assert (f.words, f.word_bits, f.rate_hz, f.minor_frames) == (128, 8, 50, 50)
    assert f.sync.complement_odd == 0x07FFF000
    assert f.counter.modulus % f.minor_frames == 0


@needs_real_files
def test_every_parameter_is_labelled_and_has_display_units(
        apollo: VehicleDefinition, soyuz: VehicleDefinition) -> None:
    for defn in (apollo, soyuz):
        for p in [*defn.parameters, *defn.derived]:
            assert p.label.get("en"), f"{defn.vehicle}.{p.id} has no label.en"
            assert set(p.display) == {"houston", "moscow"}, f"{defn.vehicle}.{p.id}"
    for p in [*soyuz.parameters, *soyuz.derived]:
        assert p.label.get("ru"), f"soyuz {p.id} has no label.ru"
        assert re.search("[А-Яа-яЁё]", p.label["ru"]), f"soyuz {p.id}: {p.label['ru']!r}"


@needs_real_files
def test_apollo_has_subcommutated_multiword_and_bitfield_parameters(
        apollo: VehicleDefinition) -> None:
    def is_bit_field(p: Parameter) -> bool:
        return p.width < apollo.frame.word_bits * len(p.words or [])

    assert any(p.frames is not None for p in apollo.parameters), "no subcommutated parameter"
    assert any(len(p.words or []) > 1 for p in apollo.parameters), "no multi-word parameter"
    assert any(is_bit_field(p) for p in apollo.parameters), "no bit-field parameter"


@needs_real_files
def test_apollo_o2_flow_alarm_persists_16_5_seconds(apollo: VehicleDefinition) -> None:
    flows = _find(apollo, label=r"(CABIN |ECS )?O2 FLOW( RATE)?", unit="lb/h")
    assert flows, "no (non-fuel-cell) O2 flow parameter in lb/h"
    for p in flows:
        assert p.limits is not None, p.id
        assert p.limits.persistence_s == 16.5, (p.id, p.limits)
        assert p.limits.red is not None and p.limits.red[1] == pytest.approx(1.0), p.id


Red = tuple[float | None, float | None]

# The caution-and-warning table in /work/shared/astp-facts.md: (condition, the whole English
# label as a regex, unit, red [low, high] where the table gives that side).
CW_TABLE: list[tuple[str, str, str, Red]] = [
    ("DC main bus undervolt", r"MAIN BUS [AB]( VOLTS)?", "V", (26.25, None)),
    ("AC bus", r"AC BUS \d( VOLTS)?", "V", (96.0, 130.0)),
    ("inverter temperature", r"INV(ERTER)? \d TEMP", "degF", (None, 190.0)),
    ("CO2 partial pressure", r"PP ?CO2|CO2 (PP|PARTIAL PRESS)", "mmHg", (None, 7.6)),
    ("O2 flow high", r"(CABIN |ECS )?O2 FLOW( RATE)?", "lb/h", (None, 1.0)),
    ("cryo O2 tank pressure", r"O2 (TK|TANK) \d PRESS", "psia", (800.0, 950.0)),
    ("cryo H2 tank pressure", r"H2 (TK|TANK) \d PRESS", "psia", (220.0, 270.0)),
    ("SPS pressure", r"SPS (OX|OXID|FU|FUEL) (TK|TANK) PRESS", "psia", (157.0, 200.0)),
    ("SM RCS package temperature", r"SM RCS [A-D] PKG TEMP", "degF", (75.0, 205.0)),
    ("SM RCS propellant pressure", r"SM RCS [A-D] (PRPLNT|PROP) PRESS", "psia", (145.0, 215.0)),
    ("CM RCS pressure", r"CM RCS \d PRESS", "psia", (260.0, 330.0)),
    ("glycol radiator outlet", r"(GLY |GLYCOL )?RAD OUT TEMP", "degF", (-30.0, None)),
    ("suit compressor delta-P", r"SUIT COMP DELTA ?P", "psid", (0.22, None)),
    ("BMAG temperature", r"BMAG \d TEMP", "degF", (168.0, 172.0)),
    ("fuel-cell H2 flow", r"FC \d H2 FLOW", "lb/h", (None, 0.161)),
    ("fuel-cell O2 flow", r"FC \d O2 FLOW", "lb/h", (None, 1.276)),
    # December 2026 additions (NASSP's C&W logic citing the AOH): skin red high ~475 degF;
    # the condenser exhaust band is NASSP's sensor volts on an estimated range.
    ("fuel-cell skin temperature", r"FC \d SKIN TEMP", "degF", (None, 475.0)),
    ("fuel-cell condenser exhaust", r"FC \d COND TEMP", "degF", (150.0, 178.0)),
]


def _red_sides(red: Red | None, want: Red) -> Red:
    """The sides of `red` that the C&W row constrains (None where it says nothing)."""
    assert red is not None
    lo, hi = red
    return (lo if want[0] is not None else None, hi if want[1] is not None else None)


@needs_real_files
def test_apollo_red_limits_claimed_from_the_cw_table_match_it(
        apollo: VehicleDefinition) -> None:
    claimed = [p for p in [*apollo.parameters, *apollo.derived] if _claims_cw(p)]
    assert len(claimed) >= 3
    for p in [p for p in claimed if isinstance(p, Parameter) and p.type == "discrete"]:
        # A light with no analog measurement: its discrete is red (or yellow) when lit.
        assert p.limits is not None and (p.limits.red_states or p.limits.yellow_states), p.id
    for p in [p for p in claimed if not (isinstance(p, Parameter) and p.type == "discrete")]:
        rows = [row for row in CW_TABLE if re.fullmatch(row[1], _label(p)) and p.unit == row[2]]
        assert len(rows) == 1, f"{p.id} ({_label(p)!r}, {p.unit}) claims C&W; table rows: {rows}"
        condition, _, _, red = rows[0]
        assert p.limits is not None
        assert _red_sides(p.limits.red, red) == pytest.approx(red), (p.id, condition)


@needs_real_files
def test_apollo_main_bus_undervolt_is_red_below_26_25(apollo: VehicleDefinition) -> None:
    buses = _find(apollo, channels=("11A57", "11A58"), label=r"MAIN BUS [AB]( VOLTS)?",
                  unit="V")
    assert len(buses) >= 2, [p.id for p in buses]
    for p in buses:
        assert p.limits is not None and p.limits.red is not None, p.id
        assert p.limits.red[0] == pytest.approx(26.25), p.id


@needs_real_files
def test_apollo_co2_is_red_at_7_6_mmhg(apollo: VehicleDefinition) -> None:
    co2 = _find(apollo, channels=("10A3",), label=r"PP ?CO2|CO2 (PP|PARTIAL PRESS)",
                unit="mmHg")
    assert co2
    for p in co2:
        assert p.limits is not None and p.limits.red is not None, p.id
        assert p.limits.red[1] == pytest.approx(7.6), p.id


@needs_real_files
def test_apollo_cryo_o2_tanks_are_red_outside_800_950_psia(apollo: VehicleDefinition) -> None:
    tanks = _find(apollo, label=r"O2 (TK|TANK) \d PRESS", unit="psia")
    assert len(tanks) >= 2, [p.id for p in tanks]
    for p in tanks:
        assert p.limits is not None and p.limits.red is not None, p.id
        assert p.limits.red == pytest.approx((800.0, 950.0)), p.id
