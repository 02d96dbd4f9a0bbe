"""A vehicle's PCM downlink over MQTT: frames built by the shared encoder, batched into
msgpack envelopes, published at the definition's frame rate.

This is the walking skeleton's simulator: every parameter holds a steady nominal value
(see nominal_values), or whatever a `values` callable returns. The demo, the end-to-end
tests and the benchmarks use it. The mission simulators (`groundstation sim`) fly the ASTP
timeline with subsystem models instead: see mission.py, telemetry.py, link.py, runner.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from groundstation.config import MqttConfig
from groundstation.core import topics
from groundstation.core.definitions import Parameter, VehicleDefinition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.envelope import encode_envelope
from groundstation.mqtt import MqttClient

ValueSource = Callable[[int, int], Mapping[str, Any]]  # (first frame seq, n frames) -> values


def nominal_value(p: Parameter) -> float | str:
    """A healthy reading: the middle of the yellow band where there is one, else of the
    sensor's range; a discrete's first state that is not flagged yellow or red."""
    if p.type == "discrete":
        states = p.calibration.states if p.calibration and p.calibration.states else {0: ""}
        bad = set()
        if p.limits:
            bad = set(p.limits.red_states or []) | set(p.limits.yellow_states or [])
        return next((s for s in states.values() if s not in bad), next(iter(states.values())))
    lo, hi = p.eng_range()
    band = p.limits.yellow or p.limits.red if p.limits else None
    if band is not None:
        lo = band[0] if band[0] is not None else lo
        hi = band[1] if band[1] is not None else hi
    if p.limits and band and (band[0] is None) != (band[1] is None):
        # One-sided limit: sit well on the safe side of it, not at the band's middle.
        low, high = band
        return float(high - 0.25 * (high - lo)) if high is not None else \
            float(low + 0.25 * (hi - low)) if low is not None else float((lo + hi) / 2)
    return float((lo + hi) / 2)


def nominal_values(defn: VehicleDefinition) -> dict[str, Any]:
    return {p.id: nominal_value(p) for p in defn.parameters}


@dataclass
class Downlink:
    definition: VehicleDefinition
    host: str
    port: int
    frames_per_message: int = 5
    qos: int = 1
    values: ValueSource | None = None
    username: str | None = None
    password: str | None = None
    seq: int = 0
    sent_frames: int = 0
    sent_messages: int = 0
    _encoder: FrameEncoder = field(init=False)

    def __post_init__(self) -> None:
        self._encoder = FrameEncoder(self.definition)
        if self.values is None:
            steady = nominal_values(self.definition)
            self.values = lambda _seq, _n: steady

    def next_message(self, t_ns: int) -> tuple[str, bytes]:
        n = self.frames_per_message
        c = self.definition.frame.counter
        start_counter = c.first + self.seq % c.modulus
        assert self.values is not None
        frames = self._encoder.encode(self.values(self.seq, n), n, start_counter)
        payload = encode_envelope(self.definition.vehicle, self.definition.stream, self.seq,
                                  t_ns, frames)
        self.seq += n
        return topics.telemetry(self.definition.vehicle, self.definition.stream), payload

    async def run(self, duration_s: float | None = None, stop: asyncio.Event | None = None
                  ) -> None:
        """Publish in real time until duration_s has passed or stop is set."""
        period_ns = self._encoder.period_ns
        step_ns = period_ns * self.frames_per_message
        broker = MqttConfig(host=self.host, port=self.port, username=self.username,  # type: ignore[call-arg]
                            password=self.password)  # type: ignore[arg-type]
        async with MqttClient(broker, name="downlink",
                              client_id=f"sim-{self.definition.vehicle}").connect() as client:
            t0 = time.time_ns()
            t_next = t0
            end = None if duration_s is None else t0 + int(duration_s * 1e9)
            while (stop is None or not stop.is_set()) and (end is None or t_next < end):
                topic, payload = self.next_message(t_next)
                await client.publish(topic, payload, qos=self.qos)
                self.sent_frames += self.frames_per_message
                self.sent_messages += 1
                t_next += step_ns
                await asyncio.sleep(max(0.0, (t_next - time.time_ns()) / 1e9))
