"""An in-memory stand-in for a storage driver, for unit tests of the runner's parts.

It keeps queued jobs as refs and answers the reads the parts make; what a part then does
with the answers is what these tests check. Storage itself is tested on real engines
(tests/drivers, tests/contract).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from shardq.drivers.base import Advanced, JobRef, Outcome


class FakeDriver:
    """Queued jobs by id. ``hold`` makes a read wait until its event is set; ``entered``
    has an event per read name, set when such a read begins."""

    def __init__(self) -> None:
        self.queued: dict[int, JobRef] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.calls: list[str] = []
        self.pruned: list[int] = []
        self.advanced: list[tuple[list[Outcome], list[int]]] = []

    def add(self, *refs: JobRef) -> None:
        for r in refs:
            self.queued[r.id] = r

    async def _read(self, name: str) -> None:
        self.calls.append(name)
        self.entered.setdefault(name, asyncio.Event()).set()
        if name in self.hold:
            await asyncio.wait_for(self.hold[name].wait(), timeout=5)

    @staticmethod
    def _in(shards: Collection[int] | None, ref: JobRef) -> bool:
        return shards is None or ref.shard in shards

    async def load_refs(self, ids: Collection[int]) -> list[JobRef]:
        await self._read("load_refs")
        return [self.queued[i] for i in ids if i in self.queued]

    async def load_ready(
        self, shards: Collection[int] | None, priority: int, now: int, limit: int, after: int = 0
    ) -> list[JobRef]:
        await self._read("load_ready")
        rows = sorted(
            (r for r in self.queued.values()
             if r.key is None and r.priority == priority and r.run_at <= now and r.id > after
             and self._in(shards, r)),
            key=lambda r: r.id,
        )  # fmt: skip
        return rows[:limit]

    async def load_delayed(
        self, shards: Collection[int] | None, now: int, limit: int
    ) -> list[JobRef]:
        await self._read("load_delayed")
        rows = sorted(
            (r for r in self.queued.values() if r.key is None and r.run_at > now
             and self._in(shards, r)),
            key=lambda r: r.run_at,
        )  # fmt: skip
        return rows[:limit]

    async def load_keys(self, shards: Collection[int] | None, limit: int) -> list[str]:
        await self._read("load_keys")
        keys = {r.key for r in self.queued.values() if r.key is not None and self._in(shards, r)}
        return sorted(k for k in keys if k is not None)[:limit]

    async def load_mailbox(self, key: str, limit: int) -> list[JobRef]:
        await self._read("load_mailbox")
        return sorted((r for r in self.queued.values() if r.key == key), key=lambda r: r.id)[:limit]

    async def count_queued_by_priority(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.queued.values():
            out[r.priority] = out.get(r.priority, 0) + 1
        return out

    async def prune(self, finished_before: int, dlq_before: int, limit: int) -> int:
        self.pruned.append(finished_before)
        n = min(limit, self.to_prune)
        self.to_prune -= n
        return n

    to_prune = 0

    async def advance(
        self, outcomes: Sequence[Outcome], start: Sequence[int], owner: str, now: int
    ) -> Advanced:
        self.advanced.append((list(outcomes), list(start)))
        for i in start:
            self.queued.pop(i, None)
        return Advanced([o.id for o in outcomes], [])

    def unreachable(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the fake driver has no {name}")


def ref(
    i: int,
    *,
    key: str | None = None,
    priority: int = 2,
    run_at: int = 0,
    shard: int = 0,
    type: str = "t",
) -> JobRef:
    """A queued job's ref."""
    return JobRef(i, priority, run_at, key, shard, type)


class AllShards:
    """Ownership of every shard, for the parts that ask."""

    token = "me"

    def owned(self) -> Collection[int] | None:
        return None
