"""How each control centre shows a parameter (groundstation.core.presentation), which the
terminal console and the Grafana dashboards both show through."""

from __future__ import annotations

import ast
import inspect

import pytest

from groundstation.console import pages
from groundstation.core import presentation as pr
from groundstation.core.definitions import VehicleDefinition, load_all

A, S = "apollo_csm", "soyuz"


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


def ref(defs: dict[str, VehicleDefinition], vid: str, pid: str) -> pr.ParameterRef:
    return pr.find_ref(defs, vid, pid, "test")


def test_a_psia_limit_is_shown_in_mm_hg_on_moscow(defs: dict[str, VehicleDefinition]) -> None:
    r = ref(defs, A, "cabin_press")  # canonical psia; yellow low limit 4.7 psia
    assert pr.display_unit(r, pr.HOUSTON) == "psia"
    assert pr.display_conversion(r, pr.HOUSTON) == (1.0, 0.0)
    assert pr.display_unit(r, pr.MOSCOW) == pr.display_unit(r, pr.JOINT) == "mmHg"
    scale, offset = pr.display_conversion(r, pr.MOSCOW)
    assert pr.to_display(4.7, scale, offset) == pytest.approx(243.06, abs=0.01)
    assert pr.to_display(None, scale, offset) is None  # an open end of a limit band
    assert pr.unit_text("mmHg", "ru") == "мм рт. ст."
    assert pr.unit_text("psia", "en") == "psia"


def test_decimals_come_from_the_sensor_resolution(defs: dict[str, VehicleDefinition]) -> None:
    r = ref(defs, A, "cabin_press")  # 8 bits over 0-17 psia: 0.067 psia, 3.4 mm Hg a count
    houston = pr.display_conversion(r, pr.HOUSTON)[0]
    moscow = pr.display_conversion(r, pr.MOSCOW)[0]
    assert pr.sensor_step(r, houston) == pytest.approx(17 / 255)
    assert pr.decimals(r, houston) == 2
    assert pr.decimals(r, moscow) == 0
    hatch = ref(defs, A, "dm_hatch_cm")  # a discrete: state names, never decimals
    assert hatch.discrete and hatch.states == {0: "CLOSED", 1: "OPEN"}
    assert pr.decimals(hatch, 1.0) == 0 and pr.sensor_step(hatch, 1.0) == 0.0
    assert pr.display_conversion(hatch, pr.MOSCOW) == (1.0, 0.0)
    total = ref(defs, A, "fc_total_amps")  # derived: no sensor, two decimals
    assert pr.sensor_step(total, 1.0) == 0.0 and pr.decimals(total, 1.0) == 2


def test_labels_and_names_in_each_language(defs: dict[str, VehicleDefinition]) -> None:
    e = ref(defs, A, "cabin_press").entry
    assert pr.label(e, "en") == "CABIN PRESS"
    assert pr.label(e, "ru") == "Давление в КМ"
    assert pr.label(e, "bi") == "CABIN PRESS · Давление в КМ"
    assert pr.vehicle_name(defs[S], "ru") == "Союз-19"
    assert pr.vehicle_name(defs[A], "en") == "Apollo CSM"
    no_ru = e.model_copy(update={"label": {"en": "CABIN PRESS"}})
    assert pr.label(no_ru, "ru") == "CABIN PRESS"  # English rather than nothing
    assert pr.label(e.model_copy(update={"label": {}}), "ru") == "cabin_press"


def test_grouping_orders_known_groups_first(defs: dict[str, VehicleDefinition]) -> None:
    refs = pr.parameter_refs(defs[A])
    subsystems = pr.subsystem_order(refs)
    known = [s for s in pr.SUBSYSTEMS_EN if s in subsystems]
    assert subsystems[:len(known)] == known
    assert pr.subsystem_name("ECS") == "environmental control"
    assert pr.subsystem_name("XYZ") == "xyz"
    groups = pr.moscow_group_order(pr.parameter_refs(defs[S]))
    assert groups[0] == "СОЖ" and set(groups) <= {*pr.MOSCOW_GROUPS, pr.NO_MOSCOW_GROUP}
    assert pr.moscow_group_title("СОЖ") == "СОЖ — система обеспечения жизнедеятельности"
    assert pr.moscow_group_title("НОВАЯ") == "НОВАЯ"


def test_key_value_tables_name_parameters_that_exist(
        defs: dict[str, VehicleDefinition]) -> None:
    for table in (pr.FLIGHT_STATUS, pr.FLIGHT_KEYS, pr.FLIGHT_DOCKING):
        picked = pr.pick_refs(defs, table, "FLIGHT")
        assert [(r.vid, r.pid) for r in picked] == [(v, p) for v, ps in table.items()
                                                   for p in ps]
    # A ship that is not flown is left out; a renamed parameter of one that is, is an error.
    assert pr.pick_refs({A: defs[A]}, {S: ("sa_press",)}, "FLIGHT") == []
    with pytest.raises(pr.PresentationError, match=r"FLIGHT: .* no parameter 'co2_partial'"):
        pr.pick_refs(defs, {A: ("co2_partial",)}, "FLIGHT")


def test_a_parameter_is_known_by_its_ids(defs: dict[str, VehicleDefinition]) -> None:
    a, b = ref(defs, A, "cabin_press"), pr.parameter_refs(defs[A])[0]
    assert a == b and hash(a) == hash(b) and a.vid == A and a.pid == "cabin_press"
    assert len({a, b, ref(defs, S, "sa_press")}) == 2


def test_the_console_shows_what_the_dashboards_show(
        defs: dict[str, VehicleDefinition]) -> None:
    f = pages.fields(defs, "moscow")[(A, "cabin_press")]
    assert (f.label, f.unit, f.unit_text, f.decimals) == ("Давление в КМ", "mmHg",
                                                          "мм рт. ст.", 0)
    assert f.yellow is not None and f.yellow[0] == pytest.approx(243.06, abs=0.01)


def test_the_console_imports_nothing_from_grafana() -> None:
    for module in (pages, pr):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m and m.startswith("groundstation.grafana") for m in imported)
    # core stays pure: it imports only core and paths from the package.
    tree = ast.parse(inspect.getsource(pr))
    ours = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and n.module and n.module.startswith("groundstation")}
    assert all(m.startswith("groundstation.core.") or m == "groundstation.paths" for m in ours)
