"""Group commit: concurrent callers share one round trip to storage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``fn`` on the items of every caller that arrived while the previous call was in
    flight, as one batch, and hands each caller its slice of the results.

    The first caller is never delayed by a timer: batches form only from the load itself.
    A failing batch fails every caller in it, and none of its items is stored.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._fn = fn
        self._pending: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Store ``items`` (in a batch with any concurrent callers) and return their results."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((items, fut))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                flat = [x for items, _ in batch for x in items]
                try:
                    results = await self._fn(flat)
                except BaseException as e:  # every caller must hear of it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                i = 0
                for items, fut in batch:
                    if not fut.done():
                        fut.set_result(results[i : i + len(items)])
                    i += len(items)
        finally:
            self._task = None
