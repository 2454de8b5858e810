"""Per-entity mailboxes: the ordered, bounded in-memory queue of one keyed entity."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from .drivers.base import JobRef


class Mailbox:
    """The jobs of one entity, delivered one at a time in submit (id) order.

    At most ``capacity`` jobs are held in memory; more stay in storage (``overflow``) and are
    loaded as the mailbox drains, so capacity bounds memory, never data. While a job runs the
    mailbox is ``busy``; a job that is retried goes back to the head, so it keeps its place.
    """

    __slots__ = (
        "_ids",
        "_refs",
        "capacity",
        "idle_since",
        "key",
        "limit",
        "overflow",
        "running",
        "scheduled",
    )

    def __init__(self, key: str, capacity: int, now: float) -> None:
        self.key = key
        self.capacity = capacity
        self._refs: list[JobRef] = []
        self._ids: list[int] = []
        #: Jobs of the entity running now, and how many may (its key concurrency).
        self.running = 0
        self.limit = 1
        #: The head has been handed to the scheduler and not yet taken back or started.
        self.scheduled = False
        self.overflow = False
        self.idle_since = now

    @property
    def busy(self) -> bool:
        """True while a job of the entity runs."""
        return self.running > 0

    @property
    def full(self) -> bool:
        """True while no further job of the entity may start."""
        return self.running >= self.limit

    def __len__(self) -> int:
        return len(self._refs)

    def offer(self, ref: JobRef) -> JobRef | None:
        """Take ``ref`` in id order; returns the ref left to storage when over capacity
        (possibly ``ref`` itself), else None."""
        if self.overflow and (not self._ids or ref.id > self._ids[-1]):
            # Storage holds earlier jobs of this entity: memory must stay a prefix of the
            # entity's order, so a later job waits in storage until they are loaded.
            return ref
        i = bisect.bisect(self._ids, ref.id)
        self._ids.insert(i, ref.id)
        self._refs.insert(i, ref)
        if len(self._refs) > self.capacity:
            self.overflow = True
            self._ids.pop()
            return self._refs.pop()
        return None

    def extend(self, refs: Iterable[JobRef]) -> list[JobRef]:
        """Offer many; returns those that did not fit."""
        out = []
        for r in refs:
            dropped = self.offer(r)
            if dropped is not None:
                out.append(dropped)
        return out

    def drop_after(self, job_id: int) -> list[JobRef]:
        """Leave the jobs after ``job_id`` to storage (marking the overflow); returns them."""
        i = bisect.bisect(self._ids, job_id)
        dropped = self._refs[i:]
        del self._ids[i:]
        del self._refs[i:]
        self.overflow = True
        return dropped

    def head(self) -> JobRef | None:
        """The next job to deliver, if any."""
        return self._refs[0] if self._refs else None

    def take(self) -> JobRef:
        """Remove the head and count it running."""
        self._ids.pop(0)
        self.running += 1
        self.scheduled = False
        return self._refs.pop(0)

    def put_back(self, ref: JobRef) -> None:
        """Return a job to the head (a retry keeps its place)."""
        self._ids.insert(0, ref.id)
        self._refs.insert(0, ref)

    def discard(self, job_id: int) -> bool:
        """Remove a job (e.g. cancelled) if present."""
        try:
            i = self._ids.index(job_id)
        except ValueError:
            return False
        del self._ids[i]
        del self._refs[i]
        return True

    def release(self, now: float) -> None:
        """A running job is done with."""
        self.running = max(0, self.running - 1)
        self.idle_since = now

    def needs_refill(self) -> bool:
        """True when memory is empty but storage may hold more of this entity's jobs."""
        return not self._refs and self.overflow

    def evictable(self, now: float, max_idle: float) -> bool:
        """True when the mailbox is empty, idle and has been for ``max_idle`` seconds."""
        return (
            not self._refs
            and not self.busy
            and not self.overflow
            and now - self.idle_since >= max_idle
        )
