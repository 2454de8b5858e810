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

    A caller that finds nothing in flight runs ``fn`` on its own items at once, in its own
    task: no timer and no hand-off to another task delays it. Callers arriving meanwhile
    form the next batch, which a drain task runs. When a batch of several callers fails,
    each caller's items are tried again on their own (at the same time), so one caller's
    items that storage refuses never fail another's: every caller's items are stored all
    or none, and a caller hears only of its own failure.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._fn = fn
        self._pending: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Store ``items`` (in a batch with any concurrent callers) and return their results."""
        if not self._busy:
            self._busy = True
            try:
                return await self._fn(list(items))
            finally:
                self._next()
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        return await fut

    def _next(self) -> None:
        """The call in flight ended: run the batch that formed meanwhile, if any."""
        if self._pending:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False
            self._drainer = None

    async def _drain(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self._run(batch)
        except BaseException as e:  # every caller must hear of it
            _fail(batch, e)
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self._next()

    async def _run(self, batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]]) -> None:
        try:
            results = await self._fn([x for items, _ in batch for x in items])
        except Exception:
            if len(batch) == 1:
                raise
            # One transaction stored nothing (and should a lost reply hide a commit, the
            # items keep their ids, so trying them again cannot store any of them twice).
            await asyncio.gather(*(self._alone(items, fut) for items, fut in batch))
            return
        i = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(results[i : i + len(items)])
            i += len(items)

    async def _alone(self, items: Sequence[T], fut: asyncio.Future[list[R]]) -> None:
        """Run one caller's items as a batch of their own, unless the caller went away."""
        if fut.done():
            return
        try:
            results = await self._fn(list(items))
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        if not fut.done():
            fut.set_result(results)


def _fail(batch: Sequence[tuple[Sequence[T], asyncio.Future[list[R]]]], e: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(e)
