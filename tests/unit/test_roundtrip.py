"""Encode then decode returns every parameter of every vehicle within one count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundstation.core.decom import Decommutator
from groundstation.core.definitions import Parameter, VehicleDefinition, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.paths import defs_dir
from tests.paths import MINI

FILES = [*sorted(defs_dir().glob("*.yaml")), MINI]


def _value(p: Parameter) -> st.SearchStrategy[Any]:
    if p.type == "discrete":
        assert p.calibration is not None and p.calibration.states is not None
        return st.sampled_from(sorted(p.calibration.states.values()))
    lo, hi = p.eng_range()
    return st.floats(lo, hi, allow_nan=False)


def _one_count(p: Parameter, raw: int) -> float:
    """The engineering size of one count next to raw: the quantisation step there."""
    around = p.calibrate(np.array([max(raw - 1, 0), raw, min(raw + 1, p.raw_max)]))
    return float(np.abs(np.diff(around)).max())


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_parameter_round_trips_within_one_count(path: Path) -> None:
    defn = load_definition(path)
    enc, dec = FrameEncoder(defn), Decommutator(defn)
    n = defn.frame.minor_frames  # one major frame: every subcommutated slot once
    c = defn.frame.counter

    @settings(max_examples=60, deadline=None)
    @given(values=st.fixed_dictionaries({p.id: _value(p) for p in defn.parameters}),
           start=st.integers(0, c.modulus - 1))
    def check(values: dict[str, Any], start: int) -> None:
        batch = dec.decode(enc.encode(values, n, start_counter=c.first + start))
        assert batch.n_good == n
        for p in defn.parameters:
            _, got, _ = batch.series(p.id)
            expected_samples = n if p.frames is None else len(p.frames)
            assert got.size == expected_samples, p.id
            if p.type == "discrete":
                assert (got == p.state_code(values[p.id])).all(), p.id
                continue
            raws = batch.raw_series(p.id)
            for g, r in zip(got, raws, strict=True):
                tol = _one_count(p, int(r)) * (1 + 1e-9)
                assert abs(g - values[p.id]) <= tol, (p.id, values[p.id], g, tol)

    check()


def _definitions() -> list[VehicleDefinition]:
    return [load_definition(f) for f in FILES]


def test_each_vehicle_file_is_exercised() -> None:
    vehicles = {d.vehicle for d in _definitions()}
    assert {"apollo_csm", "soyuz", "mini"} <= vehicles
