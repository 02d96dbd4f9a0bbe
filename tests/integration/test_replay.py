"""Replay through the real broker, ingest and InfluxDB: a live run with faults is recorded by
the ingest, replayed at max, and the replay session's values and alarms equal the live ones
(with the limits in force at recording time, even after the ingest's definitions changed),
while the live series and live consoles see nothing of it; the control topic pauses,
changes speed, seeks and stops a running replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack
import numpy as np

from groundstation.core import messages, topics
from groundstation.core.definitions import VehicleDefinition, load_definition
from groundstation.core.mission_time import parse_time_ns
from groundstation.deploy.servers import InfluxDBServer, MosquittoServer
from groundstation.replay import session as rs
from groundstation.replay.replayer import Replayer, plan_replay
from groundstation.storage.archive import ArchiveReader
from groundstation.storage.influx.backends import InfluxV1
from groundstation.storage.passes import Catalogue
from simulators.downlink import Downlink
from tests.harness import rows, running_ingest, wait_for
from tests.paths import MINI

T0 = parse_time_ns("1975-07-17T16:09:09Z")
PERIOD = 20_000_000  # mini: 50 frames/s
FPM = 5  # frames per live message, as the downlink sends them
# Two passes: 600 frames with a 3 s dropout inside, then LOS for two minutes, then 200.
PASS1 = [(T0, 300), (T0 + 9 * 10**9, 300)]
PASS2 = [(T0 + 150 * 10**9, 200)]
N_GOOD = 800 - 1  # one frame is sent with a broken sync pattern


def cabin_press(seq: int, n: int) -> np.ndarray:
    """Nominal 5.0 psia; 5.3 (yellow high) for frames 100-159; 6.0 (red) for 400-429;
    4.7 (yellow low) for 650-680."""
    i = seq + np.arange(n)
    v = np.full(n, 5.0)
    v[(i >= 100) & (i < 160)] = 5.3
    v[(i >= 400) & (i < 430)] = 6.0
    v[(i >= 650) & (i < 681)] = 4.7
    return v


def values(seq: int, n: int) -> dict[str, Any]:
    i = seq + np.arange(n)
    hatch = np.where((i >= 250) & (i < 260), "OPEN", "CLOSED")
    return {"cabin_press": cabin_press(seq, n), "hatch": hatch, "range": 12.5 + 0.01 * i,
            "temp": 70 + 40 * ((i >= 500) & (i < 560)), "uptime": i * 0.5, "dm_press": 258.0}


def mini(tmp: Path, red_high: float | None = None) -> VehicleDefinition:
    """The mini vehicle; with red_high, a copy with a tighter cabin pressure red limit."""
    if red_high is None:
        return load_definition(MINI)
    text = MINI.read_text().replace("red: [4.6, 5.4]", f"red: [4.6, {red_high}]")
    path = tmp / "mini_new.yaml"
    path.write_text(text)
    return load_definition(path)


async def fly_live(broker: MosquittoServer) -> None:
    """The recorded run: the downlink's messages through the broker, with faults: one
    garbage message and one frame with a broken sync pattern."""
    link = Downlink(load_definition(MINI), broker.host, broker.port, frames_per_message=FPM,
                    values=values)
    async with aiomqtt.Client(broker.host, broker.port, identifier="sim-mini") as client:
        for start, n in PASS1 + PASS2:
            for k in range(0, n, FPM):
                topic, payload = link.next_message(start + k * PERIOD)
                if link.seq == 40:  # the 8th message: its third frame loses sync
                    msg = msgpack.unpackb(payload)
                    bad = bytearray(msg["frames"][2])
                    bad[0] ^= 0xFF
                    msg["frames"][2] = bytes(bad)
                    payload = msgpack.packb(msg, use_bin_type=True)
                await client.publish(topic, payload, qos=1)
                if link.seq == 100:
                    await client.publish(topic, b"\xc1 not msgpack", qos=1)


def tm(influx: InfluxV1, source: str) -> list[dict[str, Any]]:
    out = rows(influx, f"SELECT * FROM tm WHERE source='{source}'")
    return [{k: v for k, v in r.items() if k != "source"} for r in out]


def alarms(influx: InfluxV1, source: str) -> list[dict[str, Any]]:
    out = rows(influx, f"SELECT * FROM alarms WHERE source='{source}'")
    return [{k: v for k, v in r.items() if k != "source"} for r in out]


def count(influx: InfluxV1, source: str) -> int:
    r = rows(influx, f"SELECT count(cabin_press) FROM tm WHERE source='{source}'")
    return int(r[0]["count"]) if r else 0


MARKER_USER = "marker"


class Watch:
    """A console on the live subtree: every message that is not a retained replay."""

    def __init__(self, broker: MosquittoServer, subs: tuple[str, ...]) -> None:
        self.client = aiomqtt.Client(broker.host, broker.port, identifier="watch")
        self.subs = subs
        self.messages: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        await self.client.__aenter__()
        for s in self.subs:
            await self.client.subscribe(s, qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self.client.messages:
            if not m.retain:
                self.messages.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.client.__aexit__(None, None, None)

    async def until_marker(self, broker: MosquittoServer) -> list[tuple[str, bytes]]:
        """Every message before the ingest's answer to a marker request (an acknowledgement
        of an alarm nobody has): the ingest processes messages in order and publishes
        through one ordered outbox, so what it would have published because of anything
        before the marker arrives before the answer. Clears what it returns."""
        request = messages.OperatorRequest(request_id=f"marker-{len(self.messages)}",
                                           parameter="cabin_press")
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(topics.acknowledgements(MARKER_USER, "mini"),
                                 request.to_json(), qos=1)
        reply_topic = topics.alarm_replies(MARKER_USER)
        await wait_for(lambda: any(t == reply_topic and messages.OperatorReply.from_json(p)
                                   .request_id == request.request_id
                                   for t, p in self.messages), what="the marker's answer")
        i = next(i for i, (t, _) in enumerate(self.messages) if t == reply_topic)
        before, self.messages = self.messages[:i], self.messages[i + 1:]
        return before


@asynccontextmanager
async def ingest(broker: MosquittoServer, influxdb: InfluxDBServer, tmp: Path,
                 defn: VehicleDefinition) -> AsyncIterator[Any]:
    async with running_ingest(broker, influxdb, tmp, {"mini": defn}, database="replay",
                              batch_max_frames=4096) as service:
        yield service


async def replay(broker: MosquittoServer, root: Path, session: str, **kw: Any) -> Any:
    plan = plan_replay(root, start=T0, end=T0 + 3600 * 10**9)
    return await Replayer(root, plan, host=broker.host, port=broker.port, session=session,
                          speed=None, progress=False, **kw).run()


async def test_replay_at_max_equals_live_with_the_limits_of_the_time(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    influx = InfluxV1(influxdb.url, "replay")
    root = tmp_path / "archive"

    # The live run, recorded by the ingest.
    async with ingest(mosquitto, influxdb, tmp_path, mini(tmp_path)) as live:
        await fly_live(mosquitto)
        await wait_for(lambda: live.frames_stored == N_GOOD, what="the live frames")
        await wait_for(lambda: count(influx, "live") == N_GOOD, what="live frames stored")
        await wait_for(lambda: live.acked >= 160, what="every live message acknowledged")
    assert live.rejected == {"not_msgpack": 1, "bad_sync": 1}
    live_tm, live_alarms = tm(influx, "live"), alarms(influx, "live")
    kinds = [(a["parameter"], a["transition"], a["severity"]) for a in live_alarms]
    assert ("cabin_press", "raised", "yellow") in kinds
    assert ("cabin_press", "escalated", "red") in kinds or \
        ("cabin_press", "raised", "red") in kinds
    assert ("hatch", "raised", "red") in kinds and ("temp", "raised", "red") in kinds

    # The catalogue finds both passes, the dropout and the rejects, from the index.
    cat = Catalogue(root)
    assert [p.id for p in cat.passes] == ["mini/hbr/1975-07-17T16:09Z",
                                          "mini/hbr/1975-07-17T16:11Z"]
    p1, p2 = cat.passes
    assert (p1.frames, p1.missing, len(p1.gaps), p2.frames) == (600, 150, 1, 200)
    assert p1.rejected is not None and p1.rejected.reasons == {"bad_sync": 1, "not_msgpack": 1}
    assert p2.rejected is not None and not p2.rejected.reasons

    # Another ingest (its own archive, no definitions file of the recording) now runs with
    # a tighter red limit, 5.25 psia: 5.3 psia would be red.
    new = mini(tmp_path, red_high=5.25)
    live_subtree = (topics.alarms_subscription(topics.LIVE),
                    topics.parameters_subscription(topics.LIVE))
    async with ingest(mosquitto, influxdb, tmp_path / "b", new) as service, \
            Watch(mosquitto, (*live_subtree, topics.alarm_replies(MARKER_USER))) as watch:
        result = await replay(mosquitto, root, "s1")  # limits of the time (the default)
        assert (result.state, result.frames_sent) == ("finished", 800)
        assert result.definitions["mini"] == p1.definitions[0]
        await wait_for(lambda: count(influx, "replay/s1") == N_GOOD, what="replay stored")
        # No live console saw a thing: everything up to the ingest's answer to a marker
        # request, which leaves through the same ordered outbox as anything it publishes.
        assert await watch.until_marker(mosquitto) == []
        # The session is over: the ingest dropped its state.
        await wait_for(lambda: not any(s.source == "replay/s1"
                                       for s in service.streams.values()))
        assert "replay/s1" not in service.replay_sessions

        # What-if: the same frames with today's limits.
        result2 = await replay(mosquitto, root, "s2", limits="current")
        assert result2.definitions == {"mini": ""}
        await wait_for(lambda: count(influx, "replay/s2") == N_GOOD, what="what-if stored")
        assert await watch.until_marker(mosquitto) == []  # every frame judged by now
        assert service.rejected == {"bad_sync": 2}  # the same broken frame, once per replay

    # Value for value, alarm for alarm; the live series untouched.
    assert tm(influx, "replay/s1") == live_tm
    assert alarms(influx, "replay/s1") == live_alarms
    assert tm(influx, "live") == live_tm and alarms(influx, "live") == live_alarms
    assert tm(influx, "replay/s2") == live_tm
    what_if = [(a["parameter"], a["transition"], a["severity"]) for a in alarms(influx, "replay/s2")
               if a["parameter"] == "cabin_press"]
    assert kinds[0] == ("cabin_press", "raised", "yellow")
    assert what_if[0] == ("cabin_press", "raised", "red")  # red at once where live was yellow
    # The replaying ingest archived each session apart from live.
    keys = {(k.source, k.vehicle) for k in ArchiveReader(tmp_path / "b" / "archive").streams()}
    assert keys == {("replay/s1", "mini"), ("replay/s2", "mini")}


async def test_control_topic_pauses_changes_speed_seeks_and_stops(
        mosquitto: MosquittoServer, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    from groundstation.core.encoder import FrameEncoder
    from groundstation.storage.archive import ArchiveWriter

    defn = load_definition(MINI)
    enc = FrameEncoder(defn)
    with ArchiveWriter.for_definition(root, defn) as w:  # 60 s at 50 frames/s
        for seq in range(0, 3000, FPM):
            frames = enc.encode({"cabin_press": 5.0, "hatch": "CLOSED"}, FPM,
                                start_counter=1 + seq % 50)
            w.append(seq, T0 + seq * PERIOD, frames, T0 + seq * PERIOD)
    plan = plan_replay(root, pass_spec="1")
    rep = Replayer(root, plan, host=mosquitto.host, port=mosquitto.port, session="ctl",
                   speed=1, progress=False)
    got: list[tuple[int, int]] = []  # (seq, frames) as received
    status: list[dict[str, Any]] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topics.telemetry("mini", "hbr", "ctl"), qos=1)
        await client.subscribe(rs.status_topic("ctl"), qos=1)

        async def listen() -> None:
            async for m in client.messages:
                if str(m.topic).startswith("replay/status/"):
                    if m.payload:
                        status.append(json.loads(bytes(m.payload)))  # type: ignore[arg-type]
                else:
                    msg = msgpack.unpackb(m.payload)
                    got.append((msg["seq"], len(msg["frames"])))

        listener = asyncio.create_task(listen())
        task = asyncio.create_task(rep.run())

        async def command(text: str) -> None:
            await client.publish(rs.control_topic("ctl"), text, qos=1)

        await wait_for(lambda: len(got) >= 3, what="frames at speed 1")
        assert all(n == FPM for _, n in got)  # speed 1: the live downlink's batching
        await command(json.dumps({"command": "pause"}))
        await wait_for(lambda: rep.state == "paused")
        n_paused = len(got)
        await asyncio.sleep(0.4)
        assert len(got) <= n_paused + 1  # at most a message already on its way
        await command("resume")
        await wait_for(lambda: len(got) > n_paused + 2, what="frames after resume")
        await command("speed 10")
        await wait_for(lambda: got[-1][1] == 50, what="bigger messages at speed 10")
        await command(json.dumps({"command": "seek", "to": "1975-07-17T16:09:40Z"}))
        await wait_for(lambda: any(s == 1550 for s, _ in got), what="the frames after the seek")
        await command("bogus")
        await wait_for(lambda: any("unknown command 'bogus'" in
                                   (s.get("last_command") or {}).get("error", "")
                                   for s in status), what="the refusal on the status topic")
        await command("stop")
        result = await asyncio.wait_for(task, 10)
        listener.cancel()
    assert result.state == "stopped"
    seqs = [s for s, _ in got]
    assert seqs[0] == 0 and 1550 in seqs and seqs[-1] < 2995
    # The frames sent after the seek start there and come in order.
    after = seqs[seqs.index(1550):]
    assert after == sorted(after) and seqs[seqs.index(1550) - 1] < 1550


async def test_the_session_is_announced_before_its_frames_and_ended_after(
        mosquitto: MosquittoServer, tmp_path: Path) -> None:
    """The ingest reads the definitions before the frames, and the end clears them."""
    root = tmp_path / "archive"
    from groundstation.core.encoder import FrameEncoder
    from groundstation.storage.archive import ArchiveWriter

    defn = load_definition(MINI)
    with ArchiveWriter.for_definition(root, defn) as w:
        w.append(0, T0, FrameEncoder(defn).encode({"cabin_press": 5.0}, FPM, 1), T0)
    seen: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("replay/session/+", qos=1)
        await client.subscribe("telemetry/replay/#", qos=1)

        async def listen() -> None:
            async for m in client.messages:
                seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]

        listener = asyncio.create_task(listen())
        plan = plan_replay(root, pass_spec="mini/hbr/1975-07-17T16:09Z")
        await Replayer(root, plan, host=mosquitto.host, port=mosquitto.port, session="hs",
                       speed=None, progress=False).run()
        await wait_for(lambda: len(seen) >= 3)
        listener.cancel()
    assert [t for t, _ in seen] == ["replay/session/hs", "telemetry/replay/hs/mini/hbr",
                                    "replay/session/hs"]
    info = rs.parse_session_message(*seen[0])
    assert info is not None and info.limits == "recorded"
    assert info.definitions["mini"].vehicle == "mini"
    assert info.shas["mini"] == ArchiveReader(root).files("mini", "hbr")[0].header \
        .definition_sha256
    assert rs.parse_session_message(*seen[2]) is None  # empty: the session ended


async def test_acl_replay_control_and_sessions(tmp_path: Path) -> None:
    """deploy/mosquitto/acl: operators and the instructor control a replay; the replay
    account reads control and announces sessions; the ingest reads sessions; a vehicle
    does neither."""
    from groundstation.deploy.broker_auth import secure_broker_config
    from tests.harness import ACL_USERS as USERS
    from tests.harness import MARK, login, received_until_mark, start_or_skip

    extra = secure_broker_config(tmp_path / "auth", USERS)
    server = MosquittoServer(tmp_path / "secure", allow_anonymous=False, extra_config=extra)
    start_or_skip(server)
    try:
        async with login(server, "replay", "replay/control/#") as rep, \
                login(server, "ingest", "replay/session/#") as ing, \
                login(server, "flight", "replay/#") as flight:
            for user in ("apollo_csm", "ingest", "flight", "instructor"):
                async with login(server, user) as c:
                    await c.publish("replay/control/s1", user.encode(), qos=1)
            async with login(server, "instructor") as c:
                await c.publish("replay/control/s1", MARK, qos=1)
            got = [p for _, p in await received_until_mark(rep)]
            assert got == [b"flight", b"instructor", MARK]

            await rep.publish("replay/session/s1", b"definitions", qos=1)
            await rep.publish("replay/session/s1", MARK, qos=1)
            assert [p for _, p in await received_until_mark(ing)] == [b"definitions", MARK]
            await rep.publish("replay/status/s1", b"status", qos=1)
            await rep.publish("replay/status/s1", MARK, qos=1)
            # Operators see the status, never the session's definitions.
            assert await received_until_mark(flight) == [("replay/status/s1", b"status"),
                                                         ("replay/status/s1", MARK)]
            # Nobody but the replay account announces a session or a status.
            for user in ("soyuz", "flight", "ingest"):
                async with login(server, user) as c:
                    await c.publish("replay/session/s1", b"forged", qos=1)
                    await c.publish("replay/status/s1", b"forged", qos=1)
            await rep.publish("replay/session/s1", MARK, qos=1)
            await rep.publish("replay/status/s1", MARK, qos=1)
            assert [p for _, p in await received_until_mark(ing)] == [MARK]
            assert [p for _, p in await received_until_mark(flight)] == [MARK]
    finally:
        server.stop()


async def test_a_session_is_judged_in_the_mission_phase_of_its_recording(
        mosquitto: MosquittoServer, influxdb: InfluxDBServer, tmp_path: Path) -> None:
    """Apollo's cabin climbing to 14 psia on the parachutes is normal in entry and a red
    alarm in orbit. Recorded during entry, replayed while the live ships are docked: the
    session is judged as entry (the phase of its own time), so no alarm."""
    from groundstation.core import flightplan as tl
    from groundstation.core.definitions import load_all
    from groundstation.core.mission_time import get_to_utc_ns
    from simulators.downlink import nominal_values

    defn = load_all()[tl.APOLLO]
    entry_ns = get_to_utc_ns(tl.CABIN_REPRESS + 120)
    assert tl.phase_at(tl.APOLLO, tl.CABIN_REPRESS + 120) == "entry"
    repress = {**nominal_values(defn), "cabin_press": 14.0, "suit_press": 14.0}
    link = Downlink(defn, mosquitto.host, mosquitto.port, frames_per_message=50,
                    values=lambda _seq, _n: repress)
    period = round(1e9 / defn.frame.rate_hz)

    def live_state(phase: str) -> bytes:
        return json.dumps({"vehicle": tl.APOLLO, "phase": phase}).encode()

    influx = InfluxV1(influxdb.url, "phase")
    async with running_ingest(mosquitto, influxdb, tmp_path, {tl.APOLLO: defn}, "phase",
                              batch_max_frames=4096) as service, \
            aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sim") as sim:
        # Recorded live during entry: no alarm then.
        await sim.publish(topics.sim_state(tl.APOLLO), live_state("entry"), qos=1, retain=True)
        await wait_for(lambda: service.phase.get((topics.LIVE, tl.APOLLO)) == "entry")
        for k in range(10):
            topic, payload = link.next_message(entry_ns + k * 50 * period)
            await sim.publish(topic, payload, qos=1)
        # CABIN PRESS is sampled every fifth frame: 100 samples in 500 frames.
        await wait_for(lambda: count(influx, "live") == 100, what="the entry pass stored")
        assert alarms(influx, "live") == []
        # Now the live ships are docked, where 14 psia is far above the red limit.
        await sim.publish(topics.sim_state(tl.APOLLO), live_state("docked"), qos=1,
                          retain=True)
        await wait_for(lambda: service.phase.get((topics.LIVE, tl.APOLLO)) == "docked")
        root = tmp_path / "archive"
        plan = plan_replay(root, start=entry_ns, end=entry_ns + 3600 * 10**9)
        async with Watch(mosquitto, ("sim/state/replay/+/+",)) as watch:
            result = await Replayer(root, plan, host=mosquitto.host, port=mosquitto.port,
                                    session="entry1", speed=None, progress=False).run()
            await wait_for(lambda: count(influx, "replay/entry1") == 100,
                           what="the session stored")
    assert result.frames_sent == 500
    states = [json.loads(p) for t, p in watch.messages if p]
    assert [(s["phase"], s["source"]) for s in states] == [("entry", "replay/entry1")]
    assert alarms(influx, "replay/entry1") == []
    # The same frames under the live (docked) phase would have raised CABIN PRESS red:
    # proven on the live stream itself.
    async with running_ingest(mosquitto, influxdb, tmp_path / "again", {tl.APOLLO: defn},
                              "phase", batch_max_frames=4096), \
            aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sim") as sim:
        for k in range(10, 14):
            topic, payload = link.next_message(entry_ns + k * 50 * period)
            await sim.publish(topic, payload, qos=1)
        await wait_for(lambda: any(a["parameter"] == "cabin_press" and a["transition"] == "raised"
                                   for a in alarms(influx, "live")), what="the live alarm")
