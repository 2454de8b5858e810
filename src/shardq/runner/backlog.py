"""The queued jobs a runner holds in memory, and how they get there.

Work arrives as it is committed (``offer``): in-process submits hand their refs over, other
processes' commits arrive as notifications whose ids are read in the next step. Storage is
read only to catch up: when the runner starts or gains shards, and when a window or a
mailbox that overflowed has drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ..clock import Clock
from ..config import Config
from ..drivers.base import Driver, JobRef, Ownership
from ..models import PRIORITIES
from .gates import Gates
from .instruments import Instruments
from .mailboxes import Mailboxes
from .windows import Windows


class Backlog:
    """Unkeyed jobs in windows, keyed ones in mailboxes, and every id among them."""

    def __init__(
        self,
        config: Config,
        driver: Driver,
        ownership: Ownership,
        clock: Clock,
        instruments: Instruments,
        wake: asyncio.Event,
        on_added: Callable[[], None],
    ) -> None:
        self._driver = driver
        self._ownership = ownership
        self._clock = clock
        self._instruments = instruments
        self._wake = wake
        self._on_added = on_added
        #: Ids of the jobs in memory (queued here, or being started).
        self.known: set[int] = set()
        self.gates = Gates(driver, clock, wake, self._spill)
        self.windows = Windows(
            config.ready_window, self.known, driver, clock, wake, self.gates.excluded
        )
        self.mailboxes = Mailboxes(
            config.mailbox_capacity,
            config.shards,
            self.known,
            self.windows,
            driver,
            clock,
            wake,
            self.gates.key_concurrency,
        )
        # Ids announced by other processes, read in the next step.
        self._pending_ids: set[int] = set()
        self._recount_soon = False

    def offer(self, refs: Iterable[JobRef], *, new: bool = True) -> None:
        """Take freshly committed jobs (``new``: they join the depth gauge) or reloaded ones
        into memory; ``on_added`` is called if any is now ready or delayed here."""
        now = self._clock.now_ms()
        owned = self._ownership.owned()
        recovering = self.mailboxes.recovering
        known = self.known
        windows, mailboxes = self.windows, self.mailboxes
        added = False
        fresh = [0] * len(PRIORITIES)
        for ref in refs:
            if ref.id in known or (owned is not None and ref.shard not in owned):
                continue
            if recovering and ref.shard in recovering:
                continue  # read from storage once its shard is recovered
            if new:
                fresh[ref.priority] += 1
            if ref.key is None:
                added |= windows.place(ref, now)
            else:
                added |= mailboxes.place(ref, now)
        if new:
            self._instruments.queued_refs(fresh)
        if added:
            self._on_added()

    def _reoffer(self, refs: Iterable[JobRef]) -> None:
        self.offer(refs, new=False)

    def announced(self, ids: Iterable[int]) -> None:
        """Another process committed jobs ``ids``: read them in the next step."""
        self._pending_ids.update(i for i in ids if i not in self.known)

    def mark_ahead(self) -> None:
        """Storage may hold jobs memory lacks (a missed notification, a fenced outcome):
        read every window and key again."""
        self.windows.mark_ahead()
        self.mailboxes.mark_ahead()

    def recount_soon(self) -> None:
        """Set the depth gauge from storage in the next step."""
        self._recount_soon = True

    def put_back(self, ref: JobRef, now: int) -> None:
        """Return a picked ref whose start could not be written (it is still queued)."""
        if ref.key is None:
            self.windows.put_back(ref)
        else:
            self.mailboxes.put_back(ref, now)

    def admits(self, ref: JobRef, now: int) -> bool:
        """True if the picked ``ref`` may start now; else it is parked until its hold ends
        (an unkeyed one leaves its window; a keyed one stays its mailbox's head)."""
        if self.gates.admits(ref, now):
            return True
        if ref.key is None:
            self.windows.taken(ref)
        return False

    def _spill(self, ref: JobRef) -> None:
        # A full park leaves the job to storage; the window is read again once it drains.
        self.known.discard(ref.id)
        self.windows.overflow[ref.priority] = True

    def unpark(self, now: int) -> bool:
        """Give the parked jobs whose hold ended their turn again; True if any."""
        refs, spilled = self.gates.release(now)
        windows = self.windows
        for ref in reversed(refs):
            if ref.key is None:
                windows.put_back(ref)
            elif self.mailboxes.is_head(ref):
                windows.push_head(ref, now)
        if spilled:
            windows.mark_ahead()
        return bool(refs) or spilled

    def drop(self, ref: JobRef) -> None:
        """Forget a picked ref whose shard moved away (its next owner reads it)."""
        if ref.key is None:
            self.windows.drop(ref)
        else:
            self.mailboxes.drop(ref)

    def forget_shards(self, lost: set[int]) -> None:
        """Drop what memory holds of ``lost`` shards."""
        self.gates.forget_shards(lost, lambda ref: self.known.discard(ref.id))
        self.windows.forget_shards(lost)
        self.mailboxes.forget_shards(lost)

    def promote_due(self, now: int) -> None:
        """Make the delayed jobs due by ``now`` ready."""
        self.windows.promote_due(now, self.mailboxes.is_head)

    async def catch_up(self, now: int) -> None:
        """Read what memory lacks: announced jobs, overflowed windows and mailboxes."""
        if self._pending_ids:
            ids = [i for i in self._pending_ids if i not in self.known]
            self._pending_ids.clear()
            if ids:
                self.offer(await self._driver.load_refs(ids))
        if self._recount_soon:
            self._recount_soon = False
            await self._instruments.recount(self._driver)
        owned = self._ownership.owned()
        await self.windows.catch_up(owned, now, self._reoffer)
        await self.mailboxes.catch_up(owned, now, self._reoffer)

    async def stop(self) -> None:
        """Stop reading storage."""
        await self.windows.stop()
