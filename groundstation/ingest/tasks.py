"""The ingest's background tasks: each named, none left to die unseen.

`Workers` is a small supervisor in the spirit of `asyncio.TaskGroup`: every task has a
name; a task that ends with an exception is logged with its name and traceback, then
either started again (a stateless loop, within a restart budget) or reported to the
service through `on_failure`, which stops it with that error: the service never runs on
half-alive (say, receiving and queueing with nothing left to acknowledge what is stored).

Why not TaskGroup itself: its exit waits for every task without a bound, so one task that
swallows its cancellation (Python 3.11's `wait_for` can drop one that arrives as its
awaitable completes, and aiomqtt's publish uses it) would hang the shutdown. `stop()` waits
at most `timeout` and logs what it left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("groundstation.ingest")


class WorkerDied(RuntimeError):
    """A background task of the service failed and was not restarted."""

    def __init__(self, name: str, error: BaseException):
        self.name = name
        self.error = error
        super().__init__(f"ingest task {name!r} failed: {type(error).__name__}: {error}")


@dataclass
class _Worker:
    name: str
    factory: Callable[[], Coroutine[Any, Any, None]]
    restart: bool
    task: asyncio.Task[None] | None = None
    restarts: deque[float] = field(default_factory=deque)


class Workers:
    """Named background tasks. on_failure(error) is called once, with the first failure
    that is not restarted (a WorkerDied); `failure` keeps it."""

    def __init__(self, on_failure: Callable[[WorkerDied], None], *, max_restarts: int = 3,
                 restart_window_s: float = 60.0) -> None:
        self._on_failure = on_failure
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self._workers: dict[str, _Worker] = {}
        self._stopping = False
        self.failure: WorkerDied | None = None

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]], *,
              restart: bool = False) -> asyncio.Task[None]:
        """Run factory() as the task `name`. restart: a failure starts it again (up to
        max_restarts within restart_window_s), for loops that hold no state of their own."""
        w = self._workers[name] = _Worker(name, factory, restart)
        return self._spawn(w)

    def _spawn(self, w: _Worker) -> asyncio.Task[None]:
        w.task = asyncio.create_task(w.factory(), name=f"ingest-{w.name}")
        w.task.add_done_callback(lambda t: self._ended(w, t))
        return w.task

    def _ended(self, w: _Worker, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is None:
            return  # finished its work (the loops end when the service stops)
        log.error("ingest task %r died: %s: %s", w.name, type(exc).__name__, exc,
                  exc_info=exc)
        now = time.monotonic()
        while w.restarts and now - w.restarts[0] > self.restart_window_s:
            w.restarts.popleft()
        if w.restart and len(w.restarts) < self.max_restarts:
            w.restarts.append(now)
            log.warning("ingest task %r restarted (%d of %d in %.0f s)", w.name,
                        len(w.restarts), self.max_restarts, self.restart_window_s)
            self._spawn(w)
            return
        self.fail(w.name, exc)

    def fail(self, name: str, exc: BaseException) -> None:
        """Report a failure the service cannot go on after (also for work that is not a
        task of its own, e.g. a callback). The first one wins."""
        if self.failure is None and not self._stopping:
            self.failure = WorkerDied(name, exc)
            log.error("the ingest stops: %s", self.failure)
            self._on_failure(self.failure)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [w.task for w in self._workers.values() if w.task is not None]

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait for them, at most `timeout` seconds."""
        self._stopping = True
        await cancel_all(self.tasks, timeout)


async def cancel_all(tasks: list[asyncio.Task[Any]], timeout: float = 10.0,
                     expected: tuple[type[BaseException], ...] = ()) -> None:
    """Cancel tasks and wait for them, at most `timeout` seconds: a task that swallowed its
    cancellation must not hang the service's shutdown (it is logged and left). A task
    that had failed with anything but `expected` is logged with its name."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=timeout)
    for t in stuck:
        log.error("task %s did not stop within %.0f s of being cancelled; left behind",
                  t.get_name(), timeout)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None and \
                not isinstance(t.exception(), expected):
            log.error("task %s ended with %r", t.get_name(), t.exception())


async def relay(stop: asyncio.Event, halt: asyncio.Event) -> None:
    """The caller's stop becomes the service's halt (which a failure sets too)."""
    await stop.wait()
    halt.set()
