"""The unkeyed jobs a runner holds in memory: a ready window per priority and a delayed one.

Each window is bounded; what does not fit stays in storage (the window's *overflow*) and is
read back, oldest first, as the window drains. A keyed job never sits here on its own: only
the head of its key's mailbox is handed to a window when its turn comes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable

from ..clock import Clock
from ..drivers.base import Driver, JobRef
from ..models import PRIORITIES

log = logging.getLogger("shardq.runner")

# Rows per read when a priority's window is reloaded from storage, and per turn of the event
# loop when they are taken into memory: placing rows holds the loop, and every job due to
# start waits meanwhile, so a read is placed in slices with the loop let go between them.
_RELOAD_CHUNK = 1_000
_OFFER_SLICE = 250

#: Takes reloaded refs into memory (``Runner.offer`` with ``new=False``).
Offer = Callable[[Iterable[JobRef]], None]


class Windows:
    """Ready jobs per priority in id order, delayed jobs in due order, and their reloads."""

    def __init__(
        self,
        size: int,
        known: set[int],
        driver: Driver,
        clock: Clock,
        wake: asyncio.Event,
        excluded: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        """``excluded()``: the job types reads of the ready windows skip (held back)."""
        n = len(PRIORITIES)
        self._excluded = excluded
        self.size = size
        self._known = known
        self._driver = driver
        self._clock = clock
        self._wake = wake
        #: Per priority, the refs ready to start (unkeyed jobs and scheduled mailbox heads).
        self.ready: list[deque[JobRef]] = [deque() for _ in range(n)]
        #: Per priority, how many of ``ready`` are unkeyed (those count against the window).
        self.unkeyed = [0] * n
        self.overflow = [True] * n
        # Reloads of a priority's window run beside the dispatch loop (one per priority at a
        # time), so picks of other work go on meanwhile; a window is refilled once it is down
        # to a quarter, before it runs dry.
        self.loading = [False] * n
        self._refill_below = max(1, size // 4)
        self._loads: set[asyncio.Task[None]] = set()
        # Jobs started while a reload was in flight: its rows may show them still queued.
        self._started_while_loading: set[int] = set()
        self.delayed: list[tuple[int, int, JobRef]] = []
        self._delayed_unkeyed = 0
        self._delayed_overflow_at: int | None = 0

    # -- placing -------------------------------------------------------------------------

    def place(self, ref: JobRef, now: int) -> bool:
        """Take the unkeyed ``ref`` into its window; False if it stays in storage for now."""
        if ref.run_at > now:
            if self._delayed_unkeyed >= self.size:
                at = self._delayed_overflow_at
                self._delayed_overflow_at = ref.run_at if at is None else min(at, ref.run_at)
                return False
            self._known.add(ref.id)
            heapq.heappush(self.delayed, (ref.run_at, ref.id, ref))
            self._delayed_unkeyed += 1
            return True
        p = ref.priority
        if self.overflow[p] or self.unkeyed[p] >= self.size:
            # Storage holds older jobs of this priority: they go first, in id order.
            self.overflow[p] = True
            return False
        self._known.add(ref.id)
        self.ready[p].append(ref)
        self.unkeyed[p] += 1
        return True

    def push_head(self, head: JobRef, now: int) -> None:
        """Hand a mailbox's head over: ready if due, else delayed until it is."""
        if head.run_at > now:
            heapq.heappush(self.delayed, (head.run_at, head.id, head))
        else:
            self.ready[head.priority].append(head)

    def put_back(self, ref: JobRef) -> None:
        """Return an unkeyed ref whose start could not be written to the front."""
        self.ready[ref.priority].appendleft(ref)
        self.unkeyed[ref.priority] += 1

    def taken(self, ref: JobRef) -> None:
        """An unkeyed ref was taken from ``ready`` (to start, or dropped)."""
        self.unkeyed[ref.priority] -= 1

    def drop(self, ref: JobRef) -> None:
        """Forget an unkeyed ref taken from ``ready`` whose shard moved away."""
        self.unkeyed[ref.priority] -= 1
        self._known.discard(ref.id)

    def promote_due(self, now: int, is_head: Callable[[JobRef], bool]) -> None:
        """Move the delayed refs due by ``now`` to ``ready`` (a mailbox head only while
        ``is_head`` says it still is one)."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, ref = heapq.heappop(delayed)
            if ref.key is None:
                self._delayed_unkeyed -= 1
                self.ready[ref.priority].append(ref)
                self.unkeyed[ref.priority] += 1
            elif is_head(ref):
                self.ready[ref.priority].append(ref)

    def next_due(self) -> int | None:
        """When the soonest delayed ref falls due (Unix ms), if any."""
        return self.delayed[0][0] if self.delayed else None

    def note_started(self, job_id: int) -> None:
        """A job started while a reload is in flight: the reload must not take it for
        queued."""
        self._started_while_loading.add(job_id)

    def mark_ahead(self) -> None:
        """Storage may hold jobs these windows lack: read them all again."""
        self.overflow = [True] * len(self.overflow)
        self._delayed_overflow_at = 0

    def forget_shards(self, lost: set[int]) -> None:
        """Drop every unkeyed ref of ``lost`` shards (their new owner reads them)."""
        for p, q in enumerate(self.ready):
            keep = deque(r for r in q if r.shard not in lost)
            for r in q:
                if r.shard in lost:
                    self._known.discard(r.id)
            self.ready[p] = keep
            self.unkeyed[p] = sum(1 for r in keep if r.key is None)
        kept = [(t, i, r) for t, i, r in self.delayed if r.shard not in lost]
        for _, i, r in self.delayed:
            if r.shard in lost:
                self._known.discard(i)
        heapq.heapify(kept)
        self.delayed = kept
        self._delayed_unkeyed = sum(1 for _, _, r in kept if r.key is None)

    # -- reading storage -----------------------------------------------------------------

    async def catch_up(self, owned: Collection[int] | None, now: int, offer: Offer) -> None:
        """Read the delayed window if it overflowed, and start the reloads of ready windows
        that drained below a quarter while storage holds more."""
        # Each reload clears its overflow mark before reading, so whatever arrives during the
        # read is taken into memory (or marks the overflow again): nothing slips between.
        overflow_at = self._delayed_overflow_at
        if overflow_at is not None and (overflow_at <= now or self._delayed_unkeyed == 0):
            if overflow_at <= now:
                self.overflow = [True] * len(self.overflow)
            self._delayed_overflow_at = None
            rows = await self._driver.load_delayed(owned, self._clock.now_ms(), self.size)
            offer(rows)
            if len(rows) >= self.size:
                at = self._delayed_overflow_at
                last = rows[-1].run_at
                self._delayed_overflow_at = last if at is None else min(at, last)
        for p in range(len(self.ready)):
            if self.overflow[p] and self.unkeyed[p] < self._refill_below and not self.loading[p]:
                self.overflow[p] = False
                self.loading[p] = True
                task = asyncio.create_task(self._reload_ready(p, owned, offer))
                self._loads.add(task)
                task.add_done_callback(self._loads.discard)

    async def _reload_ready(self, p: int, owned: Collection[int] | None, offer: Offer) -> None:
        """Read the oldest due jobs of priority ``p`` from storage into its window.

        The read goes in chunks, each taken into memory before the next is asked for: a
        whole window at once holds the event loop (decoding, placing) and the server for
        tens of milliseconds, and critical jobs arriving meanwhile wait that long. A chunk
        is placed in slices, the loop let go between them, for the same reason. The
        overflow mark is cleared before every chunk, so a job committed during the reload
        is either in a later chunk or slice or taken into memory as it arrives.
        """
        chunk = min(_RELOAD_CHUNK, self.size)
        after = 0
        try:
            while True:
                self.overflow[p] = False
                # "Due" as of now, not as of the step's start: a job dropped while an
                # earlier read was in flight may be due only since then.
                now, excluded = self._clock.now_ms(), self._excluded()
                if excluded:
                    rows = await self._driver.load_ready(owned, p, now, chunk, after, excluded)
                else:
                    rows = await self._driver.load_ready(owned, p, now, chunk, after)
                for i in range(0, len(rows), _OFFER_SLICE):
                    if i:
                        await asyncio.sleep(0)  # let critical work through between slices
                    started = self._started_while_loading
                    offer(r for r in rows[i : i + _OFFER_SLICE] if r.id not in started)
                if len(rows) < chunk:
                    break
                if self.overflow[p] or self.unkeyed[p] >= self.size:
                    self.overflow[p] = True
                    break
                after = rows[-1].id
        except Exception:
            log.exception("reading queued jobs failed; trying again shortly")
            self.overflow[p] = True
            await self._clock.sleep(0.5)
        finally:
            self.loading[p] = False
            if not any(self.loading):
                self._started_while_loading.clear()
            self._wake.set()

    async def stop(self) -> None:
        """Cancel the reloads in flight."""
        for load in list(self._loads):
            load.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)
