"""Instantaneous limit states, shared by the decommutator's lookup tables and derived values.

A limit state is a small signed integer: its magnitude is the severity (1 yellow, 2 red),
its sign says which side was crossed (negative low, positive high; a discrete's bad state
counts as high). A value is out of limits when it lies strictly beyond the limit.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from groundstation.core.definitions import LimitSet, Parameter


class LimitState(IntEnum):
    RED_LOW = -2
    YELLOW_LOW = -1
    NOMINAL = 0
    YELLOW_HIGH = 1
    RED_HIGH = 2

    @property
    def severity(self) -> str:
        return ("nominal", "yellow", "red")[abs(self.value)]


def check(values: NDArray[np.float64], limits: LimitSet | None) -> NDArray[np.int8]:
    """Limit state of each value against a numeric limit set (NaN is nominal: no data)."""
    state = np.zeros(np.shape(values), dtype=np.int8)
    if limits is None:
        return state
    # Yellow first, red last, so a red crossing overrides a yellow one.
    for pair, level in ((limits.yellow, 1), (limits.red, 2)):
        if pair is None:
            continue
        low, high = pair
        if low is not None:
            state[values < low] = -level
        if high is not None:
            state[values > high] = level
    return state


def check_states(codes: NDArray[np.integer], param: Parameter, limits: LimitSet | None
                 ) -> NDArray[np.int8]:
    """Limit state of each discrete code: yellow or red when its state is listed as such."""
    state = np.zeros(np.shape(codes), dtype=np.int8)
    if limits is None or param.calibration is None or param.calibration.states is None:
        return state
    for names, level in ((limits.yellow_states, 1), (limits.red_states, 2)):
        for name in names or ():
            state[codes == param.state_code(name)] = level
    return state
