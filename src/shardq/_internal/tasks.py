"""Background tasks: stopped without swallowing a cancel meant for the caller, and work
that runs one at a time however often it is asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any], *, quiet: bool = False) -> None:
    """Cancel ``task`` and wait until it has ended.

    The task's own cancellation is absorbed; its failure is raised unless ``quiet``. A
    cancel of the *caller* while it waits is always raised: ``suppress(CancelledError)``
    around ``await task`` would eat it too, and leave the caller running for ever.
    """
    task.cancel()
    await asyncio.wait([task])
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not quiet:
        raise error


class Coalesced:
    """Runs ``work`` in a task of its own when asked (``request``), never two at once: asked
    while it runs, it runs once more afterwards, however many times it was asked. ``work``
    returns True to be run once more itself (it failed, say, and waited before retrying)."""

    def __init__(self, work: Callable[[], Awaitable[bool | None]]) -> None:
        self._work = work
        self._again = False
        #: The run in flight, if any.
        self.task: asyncio.Task[None] | None = None

    def request(self) -> asyncio.Task[None]:
        """Run ``work`` now, or once more after the run in flight; returns that run's task."""
        if self.task is not None and not self.task.done():
            self._again = True
            return self.task
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self.task

    async def _run(self) -> None:
        while True:
            self._again = False
            if await self._work():
                self._again = True
            if not self._again:
                return

    async def stop(self) -> None:
        """Cancel the run in flight, if any, and wait for it to end."""
        if self.task is not None:
            await cancel_and_wait(self.task, quiet=True)
            self.task = None
