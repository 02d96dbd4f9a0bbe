"""The simulator on a real Mosquitto: control requests and their replies, surviving a broker
restart without losing frames, and Apollo's playback dump arriving over the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiomqtt
import msgpack
import pytest

from groundstation.core import flightplan as tl
from groundstation.core.definitions import VehicleDefinition, load_all
from groundstation.core.envelope import decode_envelope
from groundstation.core.mission_time import FRAME_EPOCH_NS, frame_index
from groundstation.deploy.servers import MosquittoServer
from simulators.link import Message
from simulators.mission import Mission
from simulators.runner import RunnerOptions, SimRunner
from tests.harness import Listener, flying

A, S = tl.APOLLO, tl.SOYUZ


@pytest.fixture(scope="module")
def defs() -> dict[str, VehicleDefinition]:
    return load_all()


async def _request(listen: Listener, client: aiomqtt.Client, msg: Any) -> dict[str, Any]:
    payload = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    await client.publish(f"sim/control/{A}", payload, qos=1)
    return json.loads(await listen.next(f"sim/reply/{A}"))


BAD = [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "a request is a JSON object"),
    ({"cmd": "explode"}, "cmd must be one of"),
    ({"cmd": "inject", "fault": "warp_drive"}, "no fault 'warp_drive'"),
    ({"cmd": "inject", "fault": "cabin_leak", "params": {"rate_lb_h": "lots"}},
     "must be a number"),
    ({"cmd": "inject", "fault": "cabin_leak", "params": {"rate_lb_h": 1e6}}, "above 300"),
    ({"cmd": "inject", "fault": "fuel_cell_loss", "params": {"cell": 9}}, "one of 1, 2, 3"),
    ({"cmd": "inject", "fault": "cabin_depress"}, "soyuz fault, not apollo_csm"),
    ({"cmd": "inject", "fault": "los", "colour": "red"}, "unknown key 'colour'"),
    ({"cmd": "inject", "fault": "los", "at": "000:01:00"}, "in the past"),
    ({"cmd": "inject", "fault": "los", "ramp_s": -5}, "below 0"),
    ({"cmd": "clear", "fault_id": "F9"}, "no active or scheduled fault 'F9'"),
    ({"cmd": "pause", "speed": 2}, "pause: unknown key 'speed'"),
    ({"cmd": "resume", "at": "now"}, "resume: unknown key 'at'"),
    ({"cmd": "inject", "fault": "dm_trapped_gas"}, "no gas is sealed between the DM and Soyuz"),
    ({"cmd": "inject", "fault": "entry_rcs_fumes"}, "before the ELS is armed"),
]


async def test_control_replies_and_bad_requests_change_nothing(
        mosquitto: MosquittoServer, defs: dict[str, VehicleDefinition]) -> None:
    m = Mission(tl.hms(30), seed=1, definitions=defs)
    runner = SimRunner(m, [defs[A]], RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                                   state_interval_s=0.2))
    async with Listener(mosquitto, [f"sim/reply/{A}", f"sim/state/{A}"]) as listen, \
            aiomqtt.Client(mosquitto.host, mosquitto.port) as client, flying(runner):
        state = json.loads(await listen.next(f"sim/state/{A}"))
        assert state["phase"] == "orbit" and state["running"] is True
        for i, (msg, error) in enumerate(BAD):
            if isinstance(msg, dict):
                msg = {**msg, "id": f"bad-{i}"}
            reply = await _request(listen, client, msg)
            assert reply["ok"] is False and error in reply["error"], reply
            assert reply["request"] == (f"bad-{i}" if isinstance(msg, dict) else None)
        assert m.faults.faults == [] and not runner.paused
        reply = await _request(listen, client, {"cmd": "inject", "fault": "fuel_cell_loss",
                                                "params": {"cell": 2}, "id": "drill-1"})
        assert reply["ok"] and reply["request"] == "drill-1" and reply["fault_id"] == "F1"
        while not any(f["id"] == "F1" for f in state["faults"]):
            state = json.loads(await listen.next(f"sim/state/{A}"))
        listing = await _request(listen, client, {"cmd": "list"})
        assert [f["fault"] for f in listing["faults"]] == ["fuel_cell_loss"]
        assert "o2_tank_heater" in {c["fault"] for c in listing["catalogue"]}
        cleared = await _request(listen, client, {"cmd": "clear", "fault": "fuel_cell_loss"})
        assert cleared["ok"] and cleared["cleared"] == ["F1"]
        status = await _request(listen, client, {"cmd": "status"})
        assert status["state"]["faults"] == [] and status["state"]["vehicle"] == A


async def test_broker_restart_costs_no_frames(mosquitto: MosquittoServer,
                                              defs: dict[str, VehicleDefinition]) -> None:
    probe = Mission(tl.hms(55), seed=2, definitions=defs)
    m = Mission(probe.find_coverage(A, probe.t, 200), seed=2, definitions=defs)
    runner = SimRunner(m, [defs[A], defs[S]],
                       RunnerOptions(host=mosquitto.host, port=mosquitto.port, speed=20.0))
    produced: list[Message] = []
    put = runner.publisher.put

    def keep(msg: Message) -> None:  # every telemetry message the ships hand over
        produced.append(msg)
        put(msg)

    runner.publisher.put = keep  # type: ignore[method-assign]
    got: dict[str, set[int]] = {A: set(), S: set()}
    # A persistent session: the broker keeps the subscription and queues for it.
    async with Listener(mosquitto, ["telemetry/live/#"], client_id="sim-test-sub") as listen:
        async with flying(runner):
            await asyncio.sleep(1.0)
            mosquitto.stop()
            await asyncio.sleep(1.0)  # the ships keep flying; frames wait in the backlog
            assert not runner.publisher.connected
            mosquitto.start()
            await asyncio.sleep(1.5)
        want = {v: {k for msg in produced if msg.topic.split("/")[2] == v
                    for k in range(msg.seq, msg.seq + msg.frames)} for v in got}
        deadline = time.monotonic() + 15
        while got != want and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                topic, payload = await asyncio.wait_for(listen.queue.get(), 1.0)
                v = topic.split("/")[2]
                d = defs[v]
                env = decode_envelope(payload, vehicle=v, stream=d.stream,
                                      frame_bytes=d.frame.bytes_per_frame)
                got[v].update(range(env.seq, env.seq + env.frames.shape[0]))
    assert runner.publisher.connections >= 2
    assert runner.publisher.max_queued_frames > 0 and runner.publisher.dropped_frames == 0
    assert len(want[A]) > 2000  # (Soyuz is heard only over the Soviet stations)
    assert got == want  # every frame sent (at least once) reached the subscriber


async def test_playback_dump_arrives_at_aos_with_original_times(
        mosquitto: MosquittoServer, defs: dict[str, VehicleDefinition]) -> None:
    probe = Mission(tl.hms(55), seed=3, definitions=defs)
    start = probe.find_coverage(A, probe.t, 400)  # heard for the whole test
    m = Mission(start, seed=3, definitions=defs)
    runner = SimRunner(m, [defs[A]], RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                                   speed=50.0))
    live: list[tuple[int, int]] = []
    played: list[tuple[int, int, int]] = []
    async with Listener(mosquitto, [f"telemetry/live/{A}/hbr", f"sim/reply/{A}",
                                    f"sim/state/{A}"]) as listen, \
            aiomqtt.Client(mosquitto.host, mosquitto.port) as client, flying(runner):
        await listen.next(f"sim/state/{A}")  # the simulator is up and listening
        await client.publish(f"sim/control/{A}", json.dumps(
            {"cmd": "inject", "fault": "los", "at": start + 60, "duration_s": 60}), qos=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(n for _, n, _ in played) < 3000:
            with contextlib.suppress(TimeoutError):
                topic, payload = await asyncio.wait_for(listen.queue.get(), 1.0)
                if topic.startswith("sim/reply"):
                    assert json.loads(payload)["ok"]
                    continue
                if topic.startswith("sim/state"):
                    continue
                env = decode_envelope(payload, vehicle=A, stream="hbr", frame_bytes=128)
                if msgpack.unpackb(payload).get("playback"):
                    played.append((env.seq, env.frames.shape[0], env.t_ns))
                else:
                    live.append((env.seq, env.frames.shape[0]))
    seqs_played = {k for s, n, _ in played for k in range(s, s + n)}
    seqs_live = {k for s, n in live for k in range(s, s + n)}
    los_frames = set(range(frame_index(start + 60, 50), frame_index(start + 120, 50)))
    assert los_frames <= seqs_played  # the minute without signal, all of it, played back
    assert not seqs_played & seqs_live
    for seq, _n, t in played:
        assert t == FRAME_EPOCH_NS + seq * 20_000_000  # their original times
    assert min(seqs_played) > max(k for k in seqs_live if k < min(seqs_played))


async def test_pause_and_resume_by_control_request(
        mosquitto: MosquittoServer, defs: dict[str, VehicleDefinition]) -> None:
    """Pause through sim/control/<vehicle>: both ships stop sending, their state says
    paused; resume: the frames go on from the next sequence number at 1x, no catch-up."""
    probe = Mission(tl.hms(55), seed=4, definitions=defs)
    m = Mission(probe.find_coverage(A, probe.t, 300), seed=4, definitions=defs)
    runner = SimRunner(m, [defs[A], defs[S]],
                       RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                     state_interval_s=0.2))
    frames = f"telemetry/live/{A}/hbr"
    async with Listener(mosquitto, [f"sim/reply/{A}"]) as replies, \
            Listener(mosquitto, [frames, f"sim/state/{A}", f"sim/state/{S}"]) as listen, \
            aiomqtt.Client(mosquitto.host, mosquitto.port) as client, flying(runner):
        first = _seqs(await listen.next(frames))
        await asyncio.sleep(0.5)
        await client.publish(f"sim/control/{S}", b'{"cmd": "pause", "id": "p"}', qos=1)
        await asyncio.sleep(0.5)  # the reply went to sim/reply/soyuz; the last frames land
        assert runner.paused
        last = max([first[-1], *(k for t, p in _drain(listen) if t == frames
                                 for k in _seqs(p))])
        await asyncio.sleep(1.5)
        quiet = _drain(listen)
        assert not [t for t, _ in quiet if t == frames]
        states = {v: [json.loads(p) for t, p in quiet if t == f"sim/state/{v}"] for v in (A, S)}
        for v in (A, S):  # one clock: both ships paused, their GET standing still
            assert len(states[v]) >= 3 and all(s["paused"] for s in states[v])
            assert len({s["get"] for s in states[v]}) == 1
        await client.publish(f"sim/control/{A}", b'{"cmd": "resume", "id": "r"}', qos=1)
        reply = json.loads(await replies.next(f"sim/reply/{A}"))
        assert reply["ok"] and reply["request"] == "r" and reply["paused"] is False
        assert reply["get"] == states[A][-1]["get"]
        await asyncio.sleep(1.0)
        after = [k for t, p in _drain(listen) if t == frames for k in _seqs(p)]
    assert after[0] == last + 1 and after == list(range(last + 1, last + 1 + len(after)))
    assert 30 <= len(after) <= 75, len(after)  # ~1 s at 50 frames/s, not the pause too


def _drain(listen: Listener) -> list[tuple[str, bytes]]:
    out = []
    while not listen.queue.empty():
        out.append(listen.queue.get_nowait())
    return out


def _seqs(payload: bytes) -> range:
    env = decode_envelope(payload, vehicle=A, stream="hbr", frame_bytes=128)
    return range(env.seq, env.seq + env.frames.shape[0])


async def test_the_instructor_switches_apollo_to_lbr_and_back(
        mosquitto: MosquittoServer, defs: dict[str, VehicleDefinition]) -> None:
    """pcm_mode through the broker: the reply names the stream, the frames move to it (40-byte
    LBR frames, numbered on their own 0.2 s period), the state says so, and back."""
    probe = Mission(tl.hms(30), seed=3, definitions=defs)
    heard = probe.find_coverage(A, probe.t, 240)
    m = Mission(heard, seed=3, definitions=defs)
    runner = SimRunner(m, [defs[A]], RunnerOptions(host=mosquitto.host, port=mosquitto.port,
                                                   state_interval_s=0.2, speed=5))
    hbr, lbr = f"telemetry/live/{A}/hbr", f"telemetry/live/{A}/lbr"
    async with Listener(mosquitto, [f"sim/reply/{A}", f"sim/state/{A}", hbr, lbr]) as listen, \
            aiomqtt.Client(mosquitto.host, mosquitto.port) as client, flying(runner):
        await listen.next(hbr)
        reply = await _request(listen, client, {"cmd": "pcm_mode", "mode": "LBR", "id": 1})
        assert (reply["ok"], reply["mode"], reply["stream"]) == (True, "LBR", "lbr"), reply
        env = decode_envelope(await listen.next(lbr), vehicle=A, stream="lbr", frame_bytes=40)
        assert env.seq == (env.t_ns - FRAME_EPOCH_NS) // 200_000_000
        while True:
            state = json.loads(await listen.next(f"sim/state/{A}"))
            if state["pcm_mode"] == "LBR":
                break
        assert state["stream"] == "lbr"
        reply = await _request(listen, client, {"cmd": "pcm_mode", "mode": "HBR"})
        assert (reply["ok"], reply["stream"]) == (True, "hbr"), reply
        # Drain the LBR frames made before the switch, then HBR again.
        while True:
            topic, payload = await asyncio.wait_for(listen.queue.get(), 10)
            if topic == hbr:
                env = decode_envelope(payload, vehicle=A, stream="hbr", frame_bytes=128)
                break
        assert env.seq == (env.t_ns - FRAME_EPOCH_NS) // 20_000_000
