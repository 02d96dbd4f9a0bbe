"""The ingest's parts on their own, without a broker: operator requests, limit contexts,
alarm-state checkpoints and the state file, the outputs, the rejects, the task supervisor
and the line protocol of alarms, link quality and self-telemetry."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from groundstation.core import messages, topics
from groundstation.core.alarms import AlarmEngine
from groundstation.core.decom import StreamDecoder
from groundstation.core.definitions import VehicleDefinition, load_definition
from groundstation.core.encoder import FrameEncoder
from groundstation.ingest import operator, outputs
from groundstation.ingest.alarm_state import AlarmStateStore
from groundstation.ingest.batching import Flusher
from groundstation.ingest.context import LimitContexts
from groundstation.ingest.rejects import Rejects
from groundstation.ingest.stream import Quarantined, Stream
from groundstation.ingest.tasks import WorkerDied, Workers, cancel_all
from groundstation.storage.influx.lineprotocol import alarm_line, link_line, self_line
from tests.paths import MINI

T0 = 174_845_349_000_000_000
BASE = {"cabin_press": 5.0, "hatch": "CLOSED", "dm_press": 258.0, "temp": 66.0}


@pytest.fixture
def mini() -> VehicleDefinition:
    return load_definition(MINI)


def stream(defn: VehicleDefinition, source: str = "live") -> Stream:
    return Stream(source, defn, StreamDecoder(defn), AlarmEngine(defn, source), None,
                  persist=source != "replay/s1")


def feed(s: Stream, n: int, first: int = 0, **values: Any) -> list[Any]:
    """n frames of values through the stream's decoder and alarm engine."""
    enc = FrameEncoder(s.definition)
    c = s.definition.frame.counter
    frames = enc.encode({**BASE, **values}, n, c.first + first % c.modulus)
    times = T0 + (first + np.arange(n, dtype=np.int64)) * enc.period_ns
    batch = s.decoder.decode(frames, times, None, seq=first)
    s.latest.update(batch.live().latest())
    s.latest_dirty = True
    s.last_frame_ns = int(times[-1])
    return s.alarms.process(batch.live(), None)


def raised(s: Stream) -> None:
    events = feed(s, 6, cabin_press=6.0)
    assert [e.transition.value for e in events] == ["raised"]


# --- operator requests -------------------------------------------------------------------


def request(**fields: Any) -> messages.OperatorRequest:
    req = operator.parse(json.dumps({"request_id": "c1-7", "parameter": "cabin_press",
                                     **fields}).encode())
    assert isinstance(req, messages.OperatorRequest)
    return req


def test_an_acknowledgement_gives_its_event_and_a_reply_naming_the_request(
        mini: VehicleDefinition) -> None:
    s = stream(mini)
    raised(s)
    out = operator.handle(request(), "flight", "mini", s.alarms)
    assert out.event is not None and out.event.transition.value == "acknowledged"
    assert out.event.operator == "flight"
    assert out.reply.ok and out.reply.request_id == "c1-7" and out.reply.event == out.event
    # Again: nothing left to acknowledge, refused by the engine's reason.
    again = operator.handle(request(), "flight", "mini", s.alarms)
    assert again.event is None and not again.reply.ok and again.reply.reason


def test_shelving_unshelving_and_no_data(mini: VehicleDefinition) -> None:
    s = stream(mini)
    raised(s)
    out = operator.handle(request(action="shelve", duration_s=60), "eecom", "mini", s.alarms)
    assert out.event is not None and out.event.transition.value == "shelved"
    out = operator.handle(request(action="unshelve"), "eecom", "mini", s.alarms)
    assert out.event is not None and out.event.transition.value == "unshelved"
    none = operator.handle(request(), "eecom", "soyuz", None)
    assert none.event is None and none.reply.reason == "no_data"
    assert none.reply.request_id == "c1-7" and "soyuz" in (none.reply.error or "")


def test_a_malformed_request_is_refused_with_its_id_when_it_has_one() -> None:
    bad = operator.parse(b'{"request_id": "x9", "parameter": "p", "action": "explode"}')
    assert isinstance(bad, operator.Outcome)
    assert not bad.reply.ok and bad.reply.request_id == "x9"
    assert bad.reply.reason == "bad_request"
    garbage = operator.parse(b"\xff")
    assert isinstance(garbage, operator.Outcome) and garbage.reply.request_id is None


# --- limit contexts ----------------------------------------------------------------------


def test_limit_context_by_source_with_a_replay_borrowing_the_live_phase(
        mini: VehicleDefinition) -> None:
    ctx = LimitContexts({"mini": mini})
    live, replay = stream(mini), stream(mini, "replay/s1")
    state = messages.SimState(vehicle="mini", phase="docked").to_json()
    ctx.on_sim_state(topics.parse(topics.sim_state("mini")), state)  # type: ignore[arg-type]
    assert ctx.for_stream(live) == {"phase": "docked"}
    assert ctx.for_stream(replay) == {"phase": "docked"}  # announces none: borrows live's
    ctx.phase[("replay/s1", "mini")] = "entry"
    assert ctx.for_stream(replay) == {"phase": "entry"}
    ctx.drop_source("replay/s1")
    assert ("replay/s1", "mini") not in ctx.phase
    with pytest.raises(messages.MessageError):
        ctx.on_sim_state(topics.parse(topics.sim_state("mini")), b"{")  # type: ignore[arg-type]


# --- alarm state ---------------------------------------------------------------------------


def test_the_saved_state_is_the_one_after_the_last_acknowledged_batch(
        mini: VehicleDefinition, tmp_path: Path) -> None:
    store = AlarmStateStore(tmp_path / "alarms.json")
    s = stream(mini)
    raised(s)
    first = store.checkpoint(s, True)
    feed(s, 3, first=6)
    second = store.checkpoint(s, False)
    assert s.saveable is None
    second(True)  # acknowledged, but an earlier batch is not: nothing saveable yet
    assert s.saveable is None and not store.dirty.is_set()
    first(True)
    assert s.saveable is not None and store.dirty.is_set()
    store.save([(("live", "mini", "hbr"), s)])
    assert store.saves == 1
    again = AlarmStateStore(tmp_path / "alarms.json")
    restored = again.restore({"mini": mini}, with_archive=False)
    assert [x.alarms.active()["alarms"][0]["parameter"] for x in restored] == ["cabin_press"]
    assert again.restored == [("live", "mini", "hbr")]


def test_an_unacknowledged_batch_at_shutdown_keeps_the_state_before_it(
        mini: VehicleDefinition, tmp_path: Path) -> None:
    stopping = False
    store = AlarmStateStore(tmp_path / "alarms.json", stopping=lambda: stopping)
    s = stream(mini)
    done = store.checkpoint(s, True)
    raised(s)
    stopping = True
    store.checkpoint(s, True)(False)
    done(True)
    assert s.saveable is not None and s.saveable["seq"] == 0  # before the raise


def test_a_bad_state_file_is_kept_aside(mini: VehicleDefinition, tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    path.write_text("{not json")
    assert AlarmStateStore(path).restore({"mini": mini}, with_archive=False) == []
    assert list(tmp_path.glob("alarms.json.bad-*"))


# --- outputs -------------------------------------------------------------------------------


def test_the_outbox_drops_the_oldest_update_when_full() -> None:
    rejected: Counter[str] = Counter()
    box = outputs.Outbox(rejected, maxsize=2)
    for i in range(3):
        box.publish(f"t/{i}", messages.SimState(vehicle="mini", phase=str(i)))
    assert rejected["outbox_overflow"] == 1 and box.qsize() == 2
    box.clear_retained("t/x")
    assert rejected["outbox_overflow"] == 1  # clearing a retained message is not counted

    async def drain() -> list[str]:
        return [(await box.get())[0] for _ in range(2)]

    assert asyncio.run(drain()) == ["t/2", "t/x"]


def test_display_link_and_health(mini: VehicleDefinition) -> None:
    s = stream(mini)
    feed(s, 10)
    [(topic, update)] = list(outputs.display_updates([s]))
    assert topic == topics.parameters("mini", "live")
    assert update.values["cabin_press"][1] == pytest.approx(5.0, abs=0.1)
    assert list(outputs.display_updates([s])) == []  # nothing new since
    link = outputs.link_stats(s)
    assert link.frames_good == 10 and link.frames_missing == 0
    stats = messages.IngestStats(
        time_ns=T0, messages_in=1, frames_in=10, frames_stored=10, lines_submitted=10,
        messages_acked=1, inflight_messages=0, pending_frames=0, outbox=0, alarm_events=0,
        alarm_state_saves=0, alarm_state_errors=0, rejected={"bad_sync": 2},
        rejected_total=2, sink={"lines_written": 10, "db_up": True})
    published, lines = outputs.health(stats, [s])
    assert [t for t, _ in published] == [topics.ingest_stats(),
                                          topics.ingest_link("mini", "live")]
    assert lines[0].startswith("ingest,service=ingest ") and "rejected_bad_sync=2i" in lines[0]
    assert "sink_lines_written=10i" in lines[0] and "db_up" not in lines[0]
    assert lines[1].startswith("link,source=live,vehicle=mini frames_good=10i,")


def test_alarm_line_escapes_and_keys_by_seq(mini: VehicleDefinition) -> None:
    s = stream(mini)
    raised(s)
    ev = messages.AlarmEvent.from_event(s.alarms.acknowledge("cabin_press", 'o "x" y'))
    line = alarm_line(ev)
    assert line.startswith(f"alarms,parameter=cabin_press,seq={ev.seq},source=live,"
                           "transition=acknowledged,vehicle=mini ")
    assert 'operator="o \\"x\\" y"' in line and line.endswith(f" {ev.time_ns}")
    link = link_line("replay/a b", "mini", messages.LinkStats(frames_good=3), time_ns=5)
    assert link == "link,source=replay/a\\ b,vehicle=mini frames_good=3i,sync_errors=0i," \
                   "counter_errors=0i,frames_missing=0i,frames_duplicate=0i," \
                   "frames_recovered=0i,seq_jumps=0i,last_frame_ns=0i 5"
    assert self_line  # exercised in test_display_link_and_health


# --- rejects -------------------------------------------------------------------------------


def test_rejected_messages_and_frames_are_counted_and_kept(mini: VehicleDefinition) -> None:
    kept: list[Quarantined] = []
    r = Rejects(keep=2, sink=kept.append)
    r.message("telemetry/live/mini/hbr", "not_msgpack", "garbage", b"x" * 100_000, 1)
    assert r.counts == {"not_msgpack": 1} and len(kept[0].payload) == 65536
    s = stream(mini)
    enc = FrameEncoder(mini)
    frames = enc.encode(BASE, 4, 1)
    frames[1, 0] ^= 0xFF  # bad sync
    batch = s.decoder.decode(frames, T0 + np.arange(4) * enc.period_ns, None, seq=0)
    r.frames(s, batch, frames, T0 + np.arange(4) * enc.period_ns)
    assert r.counts["bad_sync"] == 1 and kept[-1].reason == "bad_sync"
    assert len(r.recent) == 2


# --- the task supervisor -------------------------------------------------------------------


def test_the_flusher_decodes_a_batch_once_due_and_sleeps_while_nothing_waits(
        mini: VehicleDefinition) -> None:
    s = stream(mini)
    looks = 0  # the flusher's looks at the streams

    def streams() -> list[Stream]:
        nonlocal looks
        looks += 1
        return [s]

    async def main() -> None:
        done: asyncio.Queue[float] = asyncio.Queue()

        def process(st: Stream) -> None:
            st.pending.clear()
            done.put_nowait(time.monotonic())

        flusher = Flusher(0.05, streams, process)
        halt = asyncio.Event()
        task = asyncio.create_task(flusher.run(halt))
        await asyncio.sleep(0.2)  # idle: no look after the first (a poll would be ~80)
        assert looks == 1
        for _ in range(2):
            flusher.queued(s)
            s.pending.append(object())  # type: ignore[arg-type]
            queued = s.oldest
            processed = await asyncio.wait_for(done.get(), 5)
            assert processed - queued >= 0.05  # not before its delay
        assert looks <= 6  # woken by each first message and at each batch's due time
        halt.set()
        task.cancel()

    asyncio.run(main())


def test_a_restartable_task_is_restarted_then_the_service_is_told(
        caplog: pytest.LogCaptureFixture) -> None:
    failures: list[WorkerDied] = []
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError(f"boom {runs}")

    async def main() -> None:
        w = Workers(failures.append, max_restarts=2)
        w.start("flaky", flaky, restart=True)
        for _ in range(50):
            await asyncio.sleep(0)
        await w.stop()

    with caplog.at_level(logging.ERROR, logger="groundstation.ingest"):
        asyncio.run(main())
    assert runs == 3  # the first run and two restarts
    assert len(failures) == 1 and failures[0].name == "flaky"
    assert "boom 3" in str(failures[0])
    assert "ingest task 'flaky' died" in caplog.text


def test_a_task_that_is_not_restartable_fails_the_service_at_once() -> None:
    failures: list[WorkerDied] = []

    async def main() -> None:
        w = Workers(failures.append)

        async def dies() -> None:
            await asyncio.sleep(0)
            raise ValueError("half-alive")

        w.start("submitter", dies)
        await asyncio.sleep(0.05)
        assert w.failure is not None and w.failure.name == "submitter"
        await w.stop()

    asyncio.run(main())
    assert [f.name for f in failures] == ["submitter"]


def test_a_task_that_swallows_its_cancellation_cannot_hang_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def main() -> float:
        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await cancel_all([task], timeout=0.2)
        took = loop.time() - t0
        release.set()
        task.cancel()
        await asyncio.sleep(0)
        return took

    with caplog.at_level(logging.ERROR, logger="groundstation.ingest"):
        assert asyncio.run(main()) < 2
    assert "task stubborn did not stop" in caplog.text


# --- issue 12: the edges -------------------------------------------------------------------


def test_link_latency_against_the_ship_clock_or_a_real_time_clock(
        mini: VehicleDefinition) -> None:
    s = stream(mini)
    now = 1_750_000_000 * 10**9  # the ingest's clock
    # Mission time (1975): the offset of the promptest frame is the ship's clock.
    for i, late_ms in enumerate([30, 10, 50, 10, 210]):
        outputs.note_latency(s, T0 + i * 10**8, now + i * 10**8 + late_ms * 10**6)
    assert [x // 10**6 for x in s.latency_ns] == [0, 0, 40, 0, 200]
    # A silence (a pause, LOS) sets the clock again.
    outputs.note_latency(s, T0 + 10**10, now + 10**12)
    assert s.latency_ns[-1] == 0
    # Real-time stamps: the delay itself.
    r = stream(mini)
    outputs.note_latency(r, now, now + 25 * 10**6)
    assert list(r.latency_ns) == [25 * 10**6]


def test_the_memory_is_given_back_once_after_a_burst() -> None:
    from groundstation.ingest.memory import IDLE_S, Memory

    t = [0.0]
    m = Memory(clock=lambda: t[0])
    m.tick(0)
    t[0] += 100
    m.tick(0)
    assert m.trims == 0  # idle, but no burst
    m.tick(1000)
    t[0] += IDLE_S / 2
    m.tick(1000)
    assert m.trims == 0
    t[0] += IDLE_S
    m.tick(1000)
    m.tick(1000)
    assert m.trims == (1 if m._trim is not None else 0)


def test_rejections_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    r = Rejects()
    t = [0.0]
    r.clock = lambda: t[0]
    with caplog.at_level(logging.WARNING, logger="groundstation.ingest"):
        for i in range(10_000):
            t[0] = i / 1000  # 10 s of 1,000 a second
            r.message("telemetry/live/mini/hbr", "not_msgpack", f"garbage {i}", b"", 0)
            r.message("telemetry/live/mini/hbr", "bad_type", "x" * 10_000, b"", 0)
        r.flush_log(final=True)
    lines = caplog.records
    assert len(lines) == 4 and r.counts == {"not_msgpack": 10_000, "bad_type": 10_000}
    assert "quarantined 9999 more messages as not_msgpack" in lines[2].getMessage() + \
        lines[3].getMessage()
    assert max(len(x.getMessage()) for x in lines) < 600


def test_the_database_check(tmp_path: Path) -> None:
    from groundstation.storage.influx.backends import DatabaseMissingError, ensure_target

    class Backend:
        url, target_name = "http://db", "database 'gs'"
        created = False

        def target_exists(self) -> bool:
            return self.created

        def create_target(self) -> None:
            self.created = True

        def create_hint(self) -> str:
            return "CREATE IT"

    b = Backend()
    with pytest.raises(DatabaseMissingError, match="no database 'gs': create it \\(CREATE IT"):
        ensure_target(b, create=False)  # type: ignore[arg-type]
    assert ensure_target(b, create=True) is True  # type: ignore[arg-type]
    assert ensure_target(b, create=False) is False  # type: ignore[arg-type]


def test_every_frame_time_is_checked_when_the_period_is_given() -> None:
    from groundstation.core.envelope import EnvelopeError, decode_envelope, encode_envelope

    frames = np.zeros((5, 16), dtype=np.uint8)

    def decode(t: int, **window: int) -> object:
        return decode_envelope(encode_envelope("mini", "hbr", 0, t, frames), vehicle="mini",
                               stream="hbr", frame_bytes=16, period_ns=10**8, **window)

    decode(2**63 - 2 - 4 * 10**8)  # the last frame at InfluxDB's last nanosecond
    for t, window in ((2**63 - 1 - 10**8, {}), (T0, {"t_min_ns": T0 + 1}),
                      (T0, {"t_max_ns": T0 + 3 * 10**8})):
        with pytest.raises(EnvelopeError) as err:
            decode(t, **window)
        assert err.value.reason == "time_range"


def test_a_jump_of_the_sequence_number_is_a_jump_not_missing_frames(
        mini: VehicleDefinition) -> None:
    s = stream(mini)
    enc = FrameEncoder(mini)
    period = enc.period_ns

    def send(seq: int, t_index: int, n: int = 5) -> None:
        frames = enc.encode(BASE, n, 1 + t_index % 50)
        s.decoder.decode(frames, T0 + (t_index + np.arange(n)) * period, None, seq=seq)

    send(0, 0)
    send(10, 10)  # 5 frames lost: their time passed too
    assert (s.decoder.frames_missing, s.decoder.seq_jumps) == (5, 0)
    send(2**63 - 100, 15)  # the numbering jumps; the time goes on by one frame
    send(2**63 - 95, 20)
    assert (s.decoder.frames_missing, s.decoder.seq_jumps) == (5, 1)
    assert s.decoder.frames_good == 20


# --- a vehicle's streams in several formats (ingest/formats.py) ------------------------------


def test_a_vehicles_streams_share_one_alarm_state(mini: VehicleDefinition) -> None:
    from groundstation.ingest import formats

    live = stream(mini)
    # A second stream of the same ship and source takes the running engine; another source
    # gets its own, judged with the main definition it is given.
    assert formats.shared_engine([live], "live", mini, mini) is live.alarms
    other = formats.shared_engine([live], "training/d1", mini, mini)
    assert other is not live.alarms and other.definition is mini
    # Restored at start-up: a running engine wins; else the newest saved, by event seq.
    older, newer = stream(mini, "training/d2"), stream(mini, "training/d2")
    raised(newer)
    assert newer.alarms.snapshot()["seq"] > older.alarms.snapshot()["seq"]
    formats.share_restored([older, newer], [])
    assert older.alarms is newer.alarms
    again = stream(mini)
    formats.share_restored([again], [live])
    assert again.alarms is live.alarms
