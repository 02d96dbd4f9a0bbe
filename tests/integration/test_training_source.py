"""A drill's ships on a real Mosquitto, into the real ingest and a real InfluxDB: their data
is stored and published under training/<drill> and never as live, the ingest checks them
against the drill's own mission phase, and pausing freezes the mission clock without a
catch-up on resume."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from groundstation.core import flightplan as tl
from groundstation.core import topics
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.envelope import decode_envelope
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.storage.influx.backends import InfluxV1
from simulators.link import Transmitter
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from simulators.telemetry import TelemetryStream
from tests.harness import Listener, flying, rows, running_ingest, wait_for

A = tl.APOLLO
DRILL = topics.training("t1")
BIAS = {"parameter": "cabin_press", "offset": 1.5}  # 6.5 psia: red in orbit, fine in entry


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


@pytest.fixture(scope="module")
def heard() -> float:
    """A GET in orbit from which a ground station hears Apollo for five minutes."""
    probe = Mission(tl.hms(30), seed=5)
    return probe.find_coverage(A, probe.t, 300)


def _count(influx: InfluxV1, source: str) -> int:
    """Frames stored (roll_att is in every frame; a frame is one point)."""
    got = rows(influx, f"SELECT count(roll_att) FROM tm WHERE vehicle='{A}' AND "
                       f"source='{source}'")
    return int(got[0]["count"]) if got else 0


async def _alarm(listen: Listener, topic: str, parameter: str) -> dict[str, Any]:
    while True:
        event = json.loads(await listen.next(topic))
        if event["parameter"] == parameter:
            return event


async def test_a_drill_flies_under_its_own_source_and_phase(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path,
        defs: dict[str, VehicleDefinition], heard: float) -> None:
    influx = InfluxV1(influxdb.url, "e2e")
    m = Mission(heard, seed=5, definitions=defs)
    assert m.phase(A) == "orbit"
    m.inject(A, "sensor_bias", BIAS)
    runner = SimRunner(m, [defs[A]], RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                                   source=DRILL, state_interval_s=0.2))
    assert runner.tx[A].topic == f"telemetry/training/t1/{A}/hbr"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        # The live ship is somewhere else in its mission (entry: cabin limits 3.5-15.2 psia).
        await client.publish(topics.sim_state(A), json.dumps({"vehicle": A,
                                                              "phase": "entry"}), qos=1,
                             retain=True)
        async with running_ingest(mosquitto, influxdb, tmp_path, defs) as ingest, \
                Listener(mosquitto, [f"params/{DRILL}/{A}", f"sim/state/{DRILL}/{A}"]
                         ) as listen, \
                Listener(mosquitto, [f"alarms/{DRILL}/{A}"]) as alarms, \
                Listener(mosquitto, ["telemetry/live/#", "sim/reply/#",
                                     f"params/live/{A}"]) as quiet:
            async with flying(runner):
                state = json.loads(await listen.next(f"sim/state/{DRILL}/{A}"))
                assert (state["source"], state["phase"], state["paused"]) == (DRILL, "orbit",
                                                                              False)
                values = json.loads(await listen.next(f"params/{DRILL}/{A}"))["values"]
                assert "cabin_press" in values
                # Judged by the drill's phase (orbit, red above 5.8 psia), not the live one.
                alarm = await _alarm(alarms, f"alarms/{DRILL}/{A}", "cabin_press")
                assert (alarm["transition"], alarm["severity"], alarm["source"]) == (
                    "raised", "red", DRILL)
                assert ingest.phase[(DRILL, A)] == "orbit"
                assert ingest.phase[(topics.LIVE, A)] == "entry"
                # A drill listens to no control topic: this changes nothing, answers nothing.
                await client.publish(topics.sim_control(A), b'{"cmd": "pause"}', qos=1)
                await wait_for(lambda: _count(influx, DRILL) >= 10, what="drill values")
                assert not runner.paused
            # The drill's last frames are stored, then its retained state is gone.
            sent = runner.tx[A].stats.live_frames
            await wait_for(lambda: _count(influx, DRILL) == sent, what="every drill frame")
            # Its retained state is cleared on the broker (a late subscriber gets nothing).
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:
                await late.subscribe(topics.sim_state(A, DRILL), qos=1)
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(1.0):
                        async for m in late.messages:
                            if m.payload:
                                break
            assert _count(influx, topics.LIVE) == 0
            assert quiet.queue.empty()  # nothing live, no replies
            assert ingest.phase[(topics.LIVE, A)] == "entry"
            # The same frames as live: judged by the live phase (entry), so no alarm.
            n_live = await _send_live(client, defs[A], heard, 4.0)
            await wait_for(lambda: _count(influx, topics.LIVE) == n_live, what="live frames")
    stored = rows(influx, f"SELECT * FROM alarms WHERE vehicle='{A}'")
    assert {(r["source"], r["parameter"]) for r in stored} == {(DRILL, "cabin_press")}
    assert _count(influx, DRILL) > 0
    # Nobody sees a stale drill state afterwards.
    async with Listener(mosquitto, [f"sim/state/{DRILL}/#"]) as late:
        with pytest.raises(TimeoutError):
            await late.next(f"sim/state/{DRILL}/{A}", timeout=0.5)


async def _send_live(client: aiomqtt.Client, d: VehicleDefinition, start: float,
                     seconds: float) -> int:
    """Frames of the same biased ship, sent as live by hand (no simulator state)."""
    m = Mission(start, seed=5, definitions={A: d})
    m.inject(A, "sensor_bias", BIAS)
    stream = TelemetryStream(m, d)
    tx = Transmitter(d, m.faults, m.seed, frames_per_message=50)
    block = stream.frames_until(start + seconds)
    assert block is not None
    frames = 0
    for msg in tx.feed(block) + tx.flush():
        assert msg.topic == f"telemetry/live/{A}/hbr"
        await client.publish(msg.topic, msg.payload, qos=1)
        frames += msg.frames
    return frames


async def test_pause_and_resume_a_drill(mosquitto: MosquittoServer,
                                        defs: dict[str, VehicleDefinition],
                                        heard: float) -> None:
    m = Mission(heard, seed=6, definitions=defs)
    runner = SimRunner(m, [defs[A]], RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                                   source=DRILL, state_interval_s=0.2))
    frames = f"telemetry/training/t1/{A}/hbr"
    state_topic = f"sim/state/{DRILL}/{A}"
    async with Listener(mosquitto, [frames, state_topic]) as listen, flying(runner):
        got = await _collect(listen, 1.0)
        assert _seqs(got)
        runner.pause()
        assert runner.paused
        await asyncio.sleep(0.3)  # the message being filled at the pause goes down
        before = _seqs(await _collect(listen, 0.0)) + _seqs(got)
        frozen = await _collect(listen, 1.2)
        assert _seqs(frozen) == [], "frames while paused"
        states = [json.loads(p) for t, p, _ in frozen if t == state_topic]
        assert len(states) >= 3 and all(s["paused"] for s in states)
        assert len({s["get"] for s in states}) == 1  # the clock stands still
        paused_get = states[-1]["get"]
        runner.resume()
        t_resume = time.monotonic()
        after = await _collect(listen, 1.5)
    seqs = _seqs(after)
    assert seqs[0] == max(before) + 1  # on from the same frame
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # No catch-up: in the first second about 50 frames (1x), not the 1.5 s paused as well.
    first_second = [s for t, payload, arrived in after
                    if t == frames and arrived - t_resume < 1.0 for s in _frame_seqs(payload)]
    assert 30 <= len(first_second) <= 70, len(first_second)
    resumed = [json.loads(p) for t, p, _ in after if t == state_topic]
    assert resumed and not resumed[-1]["paused"] and resumed[-1]["get"] > paused_get


async def _collect(listen: Listener, seconds: float) -> list[tuple[str, bytes, float]]:
    """Everything that arrives in the next `seconds` (and what is already waiting)."""
    out: list[tuple[str, bytes, float]] = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        try:
            if left > 0:
                t, p = await asyncio.wait_for(listen.queue.get(), left)
            else:
                t, p = listen.queue.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return out
        out.append((t, p, time.monotonic()))


def _frame_seqs(payload: bytes) -> list[int]:
    env = decode_envelope(payload, vehicle=A, stream="hbr", frame_bytes=128)
    return list(range(env.seq, env.seq + env.frames.shape[0]))


def _seqs(got: list[tuple[str, bytes, Any]]) -> list[int]:
    return [s for t, p, _ in got if t.startswith("telemetry/") for s in _frame_seqs(p)]

