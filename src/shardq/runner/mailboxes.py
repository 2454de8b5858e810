"""The keyed jobs a runner holds in memory: one mailbox per key, and their reads from storage.

A key's jobs run one at a time in submit order. A mailbox holds a prefix of its key's queued
jobs (at most its capacity); the rest stay in storage and are read as it drains. A key first
seen in an arrival while the runner does not yet know every key with stored jobs (after it
starts, gains shards or misses notifications) may have older jobs in storage: its mailbox is
read from storage before any of its jobs runs. Shards being recovered after their gain take
nothing into memory until the previous owner's interrupted jobs are queued again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from ..clock import Clock
from ..drivers.base import Driver, JobRef
from ..entity import job_entity
from ..mailbox import Mailbox
from .windows import Offer, Windows

#: Keys read at most per catch-up: more stay in storage until memory holds fewer.
MAX_KEYS = 10_000


class Mailboxes:
    """Every key's mailbox on the owned shards, and what is known about the keys stored."""

    def __init__(
        self,
        capacity: int,
        shards: int,
        known: set[int],
        windows: Windows,
        driver: Driver,
        clock: Clock,
        wake: asyncio.Event,
        key_limit: Callable[[str], int] = lambda job_type: 1,
    ) -> None:
        """``key_limit(job_type)``: how many jobs of one key may run at once while its next
        job is of that type."""
        self._capacity = capacity
        self._key_limit = key_limit
        self._shards = shards
        self._known = known
        self._windows = windows
        self._driver = driver
        self._clock = clock
        self._wake = wake
        self.boxes: dict[str, Mailbox] = {}
        # Keys whose mailbox ran empty while storage holds more of their jobs, for the next
        # step to read (so a step never walks every mailbox to find them). Kept in the order
        # they ran empty, which is about id order: their jobs then start in id order, and
        # the writes that start them touch neighbouring pages (hash order would scatter
        # them over the table, and every step's write would touch more pages).
        self._to_refill: dict[str, None] = {}
        # Keys with a job left in storage on arrival (its mailbox held earlier ones back).
        self._held_back: set[str] = set()
        self._keys_overflow = True
        # True while every key with queued jobs on the owned shards is known (a key read
        # that no mark or recovery overlapped).
        self._keys_complete = False
        self._marks = 0
        #: Shards being recovered after their gain: their jobs stay in storage meanwhile.
        self.recovering: set[int] = set()
        self._recoveries = 0

    # -- placing -------------------------------------------------------------------------

    def place(self, ref: JobRef, now: int) -> bool:
        """Take the keyed ``ref`` into its key's mailbox; True if that scheduled a head."""
        key = ref.key
        assert key is not None
        mb = self.boxes.get(key)
        if mb is None:
            mb = self.boxes[key] = Mailbox(key, self._capacity, self._clock.monotonic())
            if not self._keys_complete:
                # Storage may hold older jobs of this key: they are read first.
                mb.overflow = True
                self._to_refill[key] = None
                self._wake.set()
        self._known.add(ref.id)
        dropped = mb.offer(ref)
        if dropped is not None:
            self._known.discard(dropped.id)
            self._held_back.add(key)
        if mb.scheduled and mb.head() is ref:
            # A smaller id arrived late and became the head: schedule it instead.
            mb.scheduled = False
        return self.schedule(mb, now)

    def schedule(self, mb: Mailbox, now: int) -> bool:
        """Hand ``mb``'s head to the windows unless it is full, scheduled or empty."""
        head = mb.head()
        if mb.scheduled or head is None:
            return False
        mb.limit = self._key_limit(head.type)
        if mb.full:
            return False
        mb.scheduled = True
        self._windows.push_head(head, now)
        return True

    def is_head(self, ref: JobRef) -> bool:
        """True while ``ref`` is its mailbox's scheduled head."""
        mb = self.boxes.get(ref.key) if ref.key is not None else None
        return mb is not None and mb.head() is ref and mb.scheduled

    def take(self, ref: JobRef, now: int) -> bool:
        """Take ``ref`` out of its mailbox to start it; False if it is no longer the head
        of an idle mailbox (then the mailbox's current head is scheduled instead)."""
        mb = self.boxes.get(ref.key) if ref.key is not None else None
        if mb is None or mb.full or mb.head() is not ref:
            if mb is not None and not mb.full:
                mb.scheduled = False
                self.schedule(mb, now)
            return False
        mb.take()
        if mb.needs_refill():
            self._to_refill[mb.key] = None
        elif mb.limit > 1:
            # Room for more of the key at once: its next job is due its turn too.
            self.schedule(mb, now)
        return True

    def put_back(self, ref: JobRef, now: int) -> None:
        """Return ``ref``, whose start could not be written, to the head of its mailbox."""
        mb = self.boxes.get(ref.key) if ref.key is not None else None
        if mb is not None:
            mb.put_back(ref)
            mb.release(self._clock.monotonic())
            mb.scheduled = False
            self.schedule(mb, now)

    def release(self, key: str, now: int) -> None:
        """The key's running job is done with: schedule its next one."""
        mb = self.boxes.get(key)
        if mb is not None:
            mb.release(self._clock.monotonic())
            self.schedule(mb, now)

    def retry(self, ref: JobRef) -> bool:
        """Put a retried job back at its mailbox's head (nothing of its key overtakes it);
        False if the mailbox is gone."""
        mb = self.boxes.get(ref.key) if ref.key is not None else None
        if mb is None:
            return False
        self._known.add(ref.id)
        mb.put_back(ref)
        return True

    def drop(self, ref: JobRef) -> None:
        """Forget the mailbox of ``ref``, whose shard moved away, unless a job of it runs."""
        mb = self.boxes.get(ref.key) if ref.key is not None else None
        if mb is None:
            return
        mb.scheduled = False
        if not mb.busy:
            self._forget(mb)

    def _forget(self, mb: Mailbox) -> None:
        while mb.head() is not None:
            self._known.discard(mb.take().id)
        del self.boxes[mb.key]

    def forget_shards(self, lost: set[int]) -> None:
        """Drop the idle mailboxes of ``lost`` shards (their new owner reads them)."""
        for mb in list(self.boxes.values()):
            head = mb.head()
            if head is not None and head.shard in lost and not mb.busy:
                self._forget(mb)

    def reread(self, key: str, *, keep: bool) -> None:
        """Forget the jobs ``key``'s mailbox holds; if ``keep``, read the key from storage
        again (else drop the mailbox: its shard belongs to another runner now)."""
        mb = self.boxes.get(key)
        if mb is None:
            return
        for ref in mb.drop_after(0):
            self._known.discard(ref.id)
        mb.release(self._clock.monotonic())
        mb.scheduled = False
        if keep:
            self._to_refill[key] = None
        else:
            del self.boxes[key]

    def evict_idle(self, max_idle: float) -> None:
        """Drop the mailboxes empty and idle for ``max_idle`` seconds."""
        mono = self._clock.monotonic()
        for key, mb in list(self.boxes.items()):
            if mb.evictable(mono, max_idle):
                del self.boxes[key]

    # -- recovery and catching up ----------------------------------------------------------

    def mark_ahead(self) -> None:
        """Storage may hold jobs of any key that memory lacks (a notification missed, a
        recovery): no mailbox takes a later arrival before its key is read again."""
        self._keys_overflow = True
        self._keys_complete = False
        self._marks += 1
        for key, mb in list(self.boxes.items()):
            if not mb.busy and mb.head() is None:
                # Nothing to keep: an arrival makes a new mailbox, read before it runs.
                del self.boxes[key]
                continue
            # Memory still holds a prefix of the key's jobs; later ones wait in storage
            # until it drains and the key is read.
            mb.overflow = True
            if mb.needs_refill():
                self._to_refill[key] = None

    def recovery_started(self, shards: set[int]) -> None:
        """``shards`` are being recovered: take nothing of them into memory until done."""
        self.recovering |= shards
        self._recoveries += 1
        self.mark_ahead()

    def recovery_ended(self, shards: set[int]) -> None:
        """The recovery of ``shards`` is over: read their keys again from storage."""
        self.recovering -= shards
        self._recoveries += 1
        for key, mb in list(self.boxes.items()):
            if job_entity(0, key, self._shards).shard not in shards:
                continue
            if mb.busy:
                for ref in mb.drop_after(0):
                    self._known.discard(ref.id)
                self._to_refill[key] = None
            else:
                self.reread(key, keep=True)
        self.mark_ahead()

    async def catch_up(self, owned: Collection[int] | None, now: int, offer: Offer) -> None:
        """Read the keys with stored jobs if memory may lack some, then the mailboxes that
        ran empty while storage holds more of their jobs."""
        if self._keys_overflow and len(self.boxes) < MAX_KEYS // 2:
            await self._load_keys(owned)
        await self._refill(now, offer)

    async def _load_keys(self, owned: Collection[int] | None) -> None:
        """Give every key with queued jobs a mailbox to be read from storage."""
        # Cleared before the read: a mark made during it (a recovery, a rescan) stays.
        self._keys_overflow = False
        marks = self._marks
        keys = await self._driver.load_keys(owned, MAX_KEYS)
        if len(keys) >= MAX_KEYS:
            self._keys_overflow = True
        self._keys_complete = (
            not self._keys_overflow and marks == self._marks and not self.recovering
        )
        for key in keys:
            mb = self.boxes.get(key)
            if mb is None:
                mb = self.boxes[key] = Mailbox(key, self._capacity, self._clock.monotonic())
            mb.overflow = True
            if mb.needs_refill():
                self._to_refill[key] = None

    async def _refill(self, now: int, offer: Offer) -> None:
        for key in list(self._to_refill):
            mb = self.boxes.get(key)
            if mb is None or not mb.needs_refill():
                self._to_refill.pop(key, None)
                continue
            # The overflow mark stays up during the read: a job of the key arriving meanwhile
            # is later than the stored ones the read is for, and must not run before them
            # (a critical one would be started beside this step). It waits in storage, and
            # the key is read again once the mailbox drains.
            self._held_back.discard(key)
            recoveries = self._recoveries
            rows = await self._driver.load_mailbox(key, mb.capacity)
            if recoveries != self._recoveries:
                # A recovery began or ended during the read: its rows may miss a job it
                # queued again, so neither they nor what arrived meanwhile may run yet.
                for ref in mb.drop_after(0):
                    self._known.discard(ref.id)
                mb.scheduled = False
                self._wake.set()
                continue
            self._to_refill.pop(key, None)
            mb.overflow = False
            offer(rows)
            if key in self._held_back:
                self._held_back.discard(key)
                mb.overflow = True
                if mb.needs_refill():
                    self._to_refill[key] = None
                    self._wake.set()
            self._trim(key, rows, now)

    def _trim(self, key: str, rows: list[JobRef], now: int) -> None:
        """After a read of ``key`` that filled its mailbox, leave to storage whatever
        reached memory meanwhile with a later id: it would overtake the jobs not read."""
        mb = self.boxes.get(key)  # an empty mailbox may have been evicted during the read
        if mb is None or len(rows) < mb.capacity:
            return
        # (The rows can also come up short of the capacity in memory, when some were in
        # flight and already known.)
        head = mb.head()
        for ref in mb.drop_after(rows[-1].id):
            self._known.discard(ref.id)
        if mb.head() is not head and not mb.full:
            mb.scheduled = False  # the head scheduled went back to storage
            self.schedule(mb, now)
        if mb.needs_refill():
            self._to_refill[key] = None
