"""A replay shows the commands of its recording: the command history kept beside the
archive is republished on the replay session's topics, each command as the replay reaches
its data time, never on the live topics; the session's retained history is cleared at its
end (groundstation/replay/commands.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import msgpack

from groundstation.core import messages, topics
from groundstation.core.definitions import load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.core.mission_time import parse_time_ns
from groundstation.deploy.servers import MosquittoServer
from groundstation.replay.commands import CommandReplay
from groundstation.replay.replayer import Replayer, plan_replay
from groundstation.storage.archive import ArchiveWriter
from groundstation.storage.command_log import CommandLogWriter
from tests.harness import wait_for
from tests.paths import MINI

T0 = parse_time_ns("1975-07-17T16:09:09Z")
PERIOD = 20_000_000  # mini: 50 frames/s
N = 500  # 10 s of frames
S = 10**9


def event(n: int, stage: str, t: int | None, vehicle: str = "mini") -> messages.CommandEvent:
    return messages.CommandEvent.from_data({
        "command_id": f"c-{n}", "seq": n, "vehicle": vehicle, "source": "live",
        "command": "crew_alert", "kind": "realtime", "operator": "inco", "position": "INCO",
        "stage": stage, "time_ns": 1_700_000_000 * S + n, "data_time_ns": t})


def record(root: Path) -> list[messages.CommandEvent]:
    defn = load_definition(MINI)
    enc = FrameEncoder(defn)
    with ArchiveWriter.for_definition(root, defn) as w:
        for k in range(0, N, 10):
            w.append(k, T0 + k * PERIOD, enc.encode({"cabin_press": 5.0}, 10, 1 + k % 50),
                     T0 + k * PERIOD)
    events = [event(1, "queued", T0 - 5 * S),  # before the span: not replayed
              event(2, "queued", T0 + 2 * S), event(3, "sent", T0 + 2 * S),
              event(4, "verified", T0 + 6 * S), event(5, "queued", T0 + 3 * S, "soyuz"),
              event(6, "refused", None), event(7, "failed", T0 + 60 * S)]
    w = CommandLogWriter(root, "live")
    for e in events:
        w.append(e)
    w.close()
    return events


def test_the_span_and_a_seek(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    record(root)
    r = CommandReplay(root, "live", {"mini"}, T0, T0 + N * PERIOD, "replay/s1")
    assert [e.command_id for e in r.events] == ["c-2", "c-3", "c-4"]
    out = r.due(T0 + 3 * S)
    assert [t for t, _, _ in out] == [topics.command_events("mini", "replay/s1")] * 2 + [
        topics.command_history("mini", "replay/s1")]
    assert messages.CommandEvent.from_json(out[0][1]).source == topics.Source.replay("s1")
    assert r.due(T0 + 3 * S) == []
    hist = messages.CommandHistory.from_json(r.seek(T0 + 7 * S)[0][1])
    assert [c.command_id for c in hist.commands] == ["c-4", "c-3", "c-2"]
    assert r.end() == [(topics.command_history("mini", "replay/s1"), b"", True)]


async def test_a_replay_republishes_its_commands_in_time(mosquitto: MosquittoServer,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "archive"
    record(root)
    seen: list[tuple[str, bytes, bool]] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for sub in ("telemetry/replay/#", "cmd/#"):
            await client.subscribe(sub, qos=1)

        async def listen() -> None:
            async for m in client.messages:
                seen.append((str(m.topic), bytes(m.payload), m.retain))  # type: ignore[arg-type]

        listener = asyncio.create_task(listen())
        plan = plan_replay(root, start=T0, end=T0 + N * PERIOD)
        result = await Replayer(root, plan, host=mosquitto.host, port=mosquitto.port,
                                session="rc", speed=None, progress=False,
                                max_frames_per_message=20).run()
        await wait_for(lambda: any(t == topics.command_history("mini", "replay/rc")
                                   and p == b"" for t, p, _ in seen), 10, "the end")
        listener.cancel()
    assert result.state == "finished"
    assert not [t for t, _, _ in seen if "/live/" in t]  # never on the live topics
    events = [(i, messages.CommandEvent.from_json(p)) for i, (t, p, _) in enumerate(seen)
              if t == topics.command_events("mini", "replay/rc")]
    assert [e.command_id for _, e in events] == ["c-2", "c-3", "c-4"]
    assert all(str(e.source) == "replay/rc" for _, e in events)
    # Each comes as the replay reaches its data time: after the frames before it, before
    # those after it.
    times = [(i, msgpack.unpackb(p)["t"]) for i, (t, p, _) in enumerate(seen)
             if t.startswith("telemetry/")]
    assert times
    for i, e in events:
        assert all(t < (e.data_time_ns or 0) for j, t in times if j < i)
        assert all(t >= (e.data_time_ns or 0) for j, t in times if j > i)
    histories = [messages.CommandHistory.from_json(p) for t, p, _ in seen
                 if t == topics.command_history("mini", "replay/rc") and p]
    assert [c.command_id for c in histories[-1].commands] == ["c-4", "c-3", "c-2"]
