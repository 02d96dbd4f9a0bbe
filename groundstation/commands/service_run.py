"""How a long-running service command runs: until SIGINT or SIGTERM, saying once it is
ready. Shared by `groundstation ingest` and `groundstation commanding serve`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from groundstation.tasks import TaskGroup

Service = Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, Any]]


def run_service(name: str, service: Service, ready_line: Callable[[], str]) -> None:
    """Run `service(stop, ready)` in a task group named `name`; print `ready_line()` once
    ready is set; SIGINT and SIGTERM set stop. The service's own exception is raised (not
    wrapped in a group), for the command to turn into its message."""

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:
            await ready.wait()
            print(ready_line(), flush=True)

        # The service's exception is the command's to report, in one line: not logged here.
        async with TaskGroup(name, expected=(Exception,)) as tasks:
            serving = tasks.create_task(service(stop, ready), name="service")
            announcing = tasks.create_task(announce(), name="ready")
            serving.add_done_callback(lambda _: announcing.cancel())

    try:
        asyncio.run(main())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
