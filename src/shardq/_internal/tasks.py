"""Stopping background tasks without swallowing a cancel meant for the caller."""

from __future__ import annotations

import asyncio
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
