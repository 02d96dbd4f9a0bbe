"""Named task groups: every background task of a client has a name, "<group>/<task>", and
its failure is logged under that name the moment it happens, then raised out of the group.

An `asyncio.TaskGroup` already ties its tasks' lifetimes to a block (a failure cancels the
others and is raised when the block ends); what it does not do is say which task failed,
and a task left to `asyncio.create_task` dies silently until someone awaits it. Here a
dead task reads, in the log and in the traceback's notes:

    task sim/receive died: ValueError: ...

`expected` exceptions (the broker going away, for a client that reconnects) are logged at
debug level only: they are the owner's to handle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TaskGroup"]

log = logging.getLogger("groundstation.tasks")

T = TypeVar("T")


class TaskGroup:
    """`asyncio.TaskGroup` with named tasks whose failures are reported by name."""

    def __init__(self, name: str, *, expected: tuple[type[BaseException], ...] = (),
                 logger: logging.Logger | None = None) -> None:
        self.name = name
        self.expected = expected
        self.log = logger or log
        self._group = asyncio.TaskGroup()
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> TaskGroup:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._group.__aexit__(et, exc, tb)

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        task = self._group.create_task(coro, name=f"{self.name}/{name}")
        task.add_done_callback(self._report)
        self.tasks.append(task)
        return task

    def _report(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        exc.add_note(f"in task {task.get_name()}")
        if _expected(exc, self.expected):
            self.log.debug("task %s ended: %s", task.get_name(), exc)
        else:
            self.log.error("task %s died: %s: %s", task.get_name(), type(exc).__name__, exc,
                           exc_info=exc)


def _expected(exc: BaseException, expected: tuple[type[BaseException], ...]) -> bool:
    """An expected exception, or a group of nothing else (a nested task group's tasks that
    all lost the same connection)."""
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(expected)
        return match is not None and rest is None
    return isinstance(exc, expected)
