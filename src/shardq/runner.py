"""A runner: owns shards, holds their entities' mailboxes, runs handlers, writes outcomes.

Work reaches a runner as it is committed: in-process submits hand their rows over directly,
other processes' commits arrive as notifications. Nothing polls the database for work. The
runner reads storage only to catch up: when it starts or gains shards, and when an in-memory
window that overflowed has drained. What one attempt does between its start and its outcome
(the handler call) is ``_internal.attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from ._internal.attempts import Attempt, AttemptRunner, Handler
from ._internal.capacity import WeightedPicker
from ._internal.clock import now_ms
from .config import Config
from .context import JobContext
from .drivers.base import (
    Driver,
    EventKind,
    JobRef,
    Outcome,
    OutcomeKind,
    Ownership,
    StartedJob,
)
from .entity import job_entity
from .ids import Snowflake
from .mailbox import Mailbox
from .models import PRIORITIES, PRIORITY_WEIGHTS
from .observe import Metrics

log = logging.getLogger("shardq.runner")

#: Called after each transition is durable: (job id, status entered).
TransitionCallback = Callable[[int, str], None]
_STATUS_OF: dict[OutcomeKind, str] = {
    "complete": "complete",
    "retry": "queued",
    "failed": "failed",
    "cancelled": "cancelled",
}
_MAX_KEYS = 10_000
# Rows per read when a priority's window is reloaded from storage, and per turn of the event
# loop when they are taken into memory (placing a thousand holds the loop for about a
# millisecond on a slow core).
_RELOAD_CHUNK = 1_000
_OFFER_SLICE = 250
_by_priority = operator.itemgetter(1)  # JobRef.priority
# Consecutive failed steps before their outcomes are written one by one (a first failure is
# most often a connection lost), and before the runner reports itself unhealthy.
_ISOLATE_AFTER = 2
_UNHEALTHY_AFTER = 3
_MAX_FAILURE_TEXT = 500


def _safe_text(text: str) -> str:
    """``text`` as storage and logs can always take it: no lone surrogates, bounded."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= _MAX_FAILURE_TEXT else safe[:_MAX_FAILURE_TEXT] + "…"


class Runner:
    """Runs the jobs of the shards it owns, at most ``config.concurrency`` at a time."""

    def __init__(
        self,
        driver: Driver,
        config: Config,
        handlers: dict[str, Handler],
        metrics: Metrics,
        ids: Snowflake,
        ownership: Ownership,
        context_vars: Collection[contextvars.ContextVar[Any]] = (),
        on_transition: TransitionCallback | None = None,
    ) -> None:
        self._driver = driver
        self._config = config
        self._metrics = metrics
        self._ownership = ownership
        self._on_transition = on_transition
        self._attempts = AttemptRunner(
            handlers,
            config.retry,
            metrics,
            ids,
            context_vars,
            threads=min(32, config.concurrency),
            finished=self._finished,
        )
        n = len(PRIORITIES)
        self._window = config.ready_window
        self._ready: list[deque[JobRef]] = [deque() for _ in range(n)]
        self._ready_unkeyed = [0] * n
        self._ready_overflow = [True] * n
        # Reloads of a priority's window run beside the dispatch loop (one per priority at a
        # time), so picks of other work go on meanwhile; a window is refilled once it is down
        # to a quarter, before it runs dry.
        self._ready_loading = [False] * n
        self._refill_below = max(1, self._window // 4)
        self._loads: set[asyncio.Task[None]] = set()
        # Jobs started while a reload was in flight: its rows may show them still queued.
        self._started_while_loading: set[int] = set()
        self._delayed: list[tuple[int, int, JobRef]] = []
        self._delayed_unkeyed = 0
        self._delayed_overflow_at: int | None = 0
        self._mailboxes: dict[str, Mailbox] = {}
        # Keys whose mailbox ran empty while storage holds more of their jobs, for the next
        # step to read (so a step never walks every mailbox to find them). Kept in the order
        # they ran empty, which is about id order: their jobs then start in id order, and
        # the writes that start them touch neighbouring pages (in hash order, SQLite
        # processed a 1,000-key backlog 25% slower).
        self._to_refill: dict[str, None] = {}
        self._keys_overflow = True
        # True while every key with queued jobs on the owned shards is known (a key read
        # that no catch-up mark or recovery overlapped). Until then a key first seen in an
        # arrival may have older jobs in storage: its mailbox is read before it runs.
        self._keys_complete = False
        self._marks = 0
        # Shards being recovered after their acquisition: their jobs are not taken into
        # memory until the recovery has queued the interrupted ones again (they come first).
        self._recovering: set[int] = set()
        self._recoveries = 0
        self._known: set[int] = set()
        self._running: dict[int, Attempt] = {}
        self._cancel_pending: set[int] = set()
        # Cancelled while queued and already taken out of the depth gauge; their refs may
        # still sit in memory until their turn comes (and is skipped).
        self._counted_out: set[int] = set()
        self._pending_ids: set[int] = set()
        self._free = config.concurrency
        # Slots that only critical jobs may take, so that one arriving behind a backlog of
        # lower priorities starts at once instead of waiting for a running job to finish.
        self._reserve = config.concurrency // 16
        self._picker = WeightedPicker([PRIORITY_WEIGHTS[p] for p in PRIORITIES])
        self._outcomes: list[tuple[Outcome, Attempt]] = []
        # Jobs whose start was sent but not confirmed (the write failed, maybe after its
        # commit): storage may hold them as processing here although no handler runs them.
        # Undone before anything else is started.
        self._unconfirmed: set[int] = set()
        self._stepping = False
        self._express: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._depth = [0] * n
        self._stopping = False
        self._recount_soon = False
        self._loop_task: asyncio.Task[None] | None = None
        self._label_cache: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._ids = ids
        self._failed_steps = 0
        self._last_failure = ""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted jobs, load the backlog and begin dispatching."""
        recovered = await self._driver.recover(self._ownership.owned(), now_ms())
        if recovered:
            log.info("recovered %d interrupted job(s)", recovered)
        await self._recount()
        await self._ownership.start(self.on_shards_changed)
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="shardq-dispatch")
        self._maintenance = asyncio.create_task(self._maintain(), name="shardq-maintenance")
        self._wake.set()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop taking work, let running handlers finish (up to ``drain_timeout``), interrupt
        the rest (they are queued again), write every outcome and release the shards."""
        timeout = self._config.drain_timeout if drain_timeout is None else drain_timeout
        self._stopping = True
        self._wake.set()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        for load in list(self._loads):
            load.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)
        if self._express is not None:
            # Whatever it starts is drained below with the rest.
            await asyncio.gather(self._express, return_exceptions=True)
        tasks = [a.task for a in self._running.values() if a.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for attempt in list(self._running.values()):
                if attempt.task in pending:
                    attempt.shutdown = True
                    attempt.ctx.cancel()
                    attempt.task.cancel()
            if pending:
                await asyncio.wait(pending)
        loop_task = self._loop_task
        if loop_task is not None:
            # The dispatch loop writes the last outcomes, then ends. Writes are retried while
            # storage is unreachable; past the drain time give up: their jobs stay
            # "processing" and run again after recovery (at-least-once).
            self._wake.set()
            _, late = await asyncio.wait([loop_task], timeout=max(5.0, timeout))
            if late:
                log.error("stopping with %d outcome(s) unwritten", len(self._outcomes) or 1)
                loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        if self._timer is not None:
            self._timer.cancel()
        await self._ownership.stop()
        self._attempts.shutdown()

    @property
    def problem(self) -> str | None:
        """Why this runner is not making progress (its steps keep failing), or None."""
        if self._failed_steps < _UNHEALTHY_AFTER:
            return None
        return (
            f"the runner's last {self._failed_steps} steps failed, the latest with"
            f" {self._last_failure}"
        )

    @property
    def running_count(self) -> int:
        """Handlers running now."""
        return len(self._running)

    # -- work arriving -------------------------------------------------------------------

    def offer(self, refs: Iterable[JobRef], *, new: bool = True) -> None:
        """Take freshly committed jobs (``new``) or reloaded ones into memory."""
        now = now_ms()
        owned = self._ownership.owned()
        recovering = self._recovering
        added = False
        fresh = [0] * len(self._depth)
        for ref in refs:
            if ref.id in self._known or (owned is not None and ref.shard not in owned):
                continue
            if recovering and ref.shard in recovering:
                continue  # read from storage once its shard is recovered
            if new:
                fresh[ref.priority] += 1
            added |= self._place(ref, now)
        for p, n in enumerate(fresh):
            if n:
                self._depth_add(p, n)
        if added:
            self._wake.set()
            if (
                self._stepping
                and self._ready[0]
                and self._free > 0
                and self._express is None
                and not self._stopping
                and not self._unconfirmed
            ):
                # A step is writing (on a server, that takes a round trip or more): start
                # the critical arrivals beside it rather than after it.
                self._express = asyncio.get_running_loop().create_task(self._start_urgent())

    def on_event(self, kind: EventKind, ids: list[int]) -> None:
        """A notification from another process."""
        if kind == "submitted":
            self._pending_ids.update(i for i in ids if i not in self._known)
        elif kind == "cancel":
            for i in ids:
                self.interrupt(i)
        elif kind == "rescan":
            self._mark_storage_ahead()
            self._recount_soon = True
        self._wake.set()

    def interrupt(self, job_id: int) -> bool:
        """Cancel the running attempt of ``job_id``; True if it runs here."""
        attempt = self._running.get(job_id)
        if attempt is None:
            if job_id in self._known:
                # It may be starting right now: cancel it as soon as it is registered.
                self._cancel_pending.add(job_id)
            return False
        if not attempt.cancel_requested:
            attempt.cancel_requested = True
            attempt.ctx.cancel()
            if attempt.task is not None:
                attempt.task.cancel()
        return True

    def cancelled_queued(self, job_id: int, priority: int) -> None:
        """A queued job was cancelled: it leaves the queue-depth gauge now."""
        if job_id in self._counted_out:
            return
        self._depth_add(priority, -1)
        if job_id in self._known:
            self._counted_out.add(job_id)

    async def on_shards_changed(self, acquired: set[int], lost: set[int]) -> None:
        """Ownership moved: forget and interrupt what was lost, catch up on what was gained.

        Nothing of an acquired shard runs before its interrupted jobs are queued again: a
        key's job that arrives meanwhile must not overtake the key's older job that the
        previous owner was running.
        """
        if lost:
            self._forget_shards(lost)
        if acquired:
            self._recovering |= acquired
            self._recoveries += 1
            self._mark_storage_ahead()
            try:
                recovered = await self._driver.recover(acquired, now_ms(), self._ownership.token)
            finally:
                self._recovering -= acquired
                self._recoveries += 1
            if recovered:
                log.info("recovered %d job(s) on %d acquired shard(s)", recovered, len(acquired))
            self._reread_keys_of(acquired)
            self._mark_storage_ahead()
            await self._recount()
        self._wake.set()

    def _reread_keys_of(self, shards: set[int]) -> None:
        """Read again from storage every mailbox of ``shards``: what memory holds of them
        predates the recovery that may have queued older jobs of their keys."""
        count = self._config.shards
        for key, mb in list(self._mailboxes.items()):
            if job_entity(0, key, count).shard not in shards:
                continue
            if mb.busy:
                for ref in mb.drop_after(0):
                    self._known.discard(ref.id)
                self._to_refill[key] = None
            else:
                self._reread_mailbox(mb, keep=True)

    def _forget_shards(self, lost: set[int]) -> None:
        for attempt in list(self._running.values()):
            if attempt.job.shard in lost and attempt.task is not None:
                attempt.shutdown = True
                attempt.ctx.cancel()
                attempt.task.cancel()
        for p, q in enumerate(self._ready):
            keep = deque(r for r in q if r.shard not in lost)
            for r in q:
                if r.shard in lost:
                    self._known.discard(r.id)
            self._ready[p] = keep
            self._ready_unkeyed[p] = sum(1 for r in keep if r.key is None)
        kept = [(t, i, r) for t, i, r in self._delayed if r.shard not in lost]
        for _, i, r in self._delayed:
            if r.shard in lost:
                self._known.discard(i)
        heapq.heapify(kept)
        self._delayed = kept
        self._delayed_unkeyed = sum(1 for _, _, r in kept if r.key is None)
        for key, mb in list(self._mailboxes.items()):
            head = mb.head()
            if head is not None and head.shard in lost and not mb.busy:
                while mb.head() is not None:
                    self._known.discard(mb.take().id)
                del self._mailboxes[key]

    # -- placing refs in memory -----------------------------------------------------------

    def _place(self, ref: JobRef, now: int) -> bool:
        """Put ``ref`` where it belongs; False if it stays in storage for now."""
        if ref.key is not None:
            mb = self._mailboxes.get(ref.key)
            if mb is None:
                mb = self._mailboxes[ref.key] = Mailbox(
                    ref.key, self._config.mailbox_capacity, time.monotonic()
                )
                if not self._keys_complete:
                    # Storage may hold older jobs of this key: they are read first.
                    mb.overflow = True
                    self._to_refill[ref.key] = None
                    self._wake.set()
            self._known.add(ref.id)
            dropped = mb.offer(ref)
            if dropped is not None:
                self._known.discard(dropped.id)
            head = mb.head()
            if mb.scheduled and head is ref:
                # A smaller id arrived late and became the head: schedule it instead.
                mb.scheduled = False
            return self._schedule_mailbox(mb, now)
        if ref.run_at > now:
            if self._delayed_unkeyed >= self._window:
                at = self._delayed_overflow_at
                self._delayed_overflow_at = ref.run_at if at is None else min(at, ref.run_at)
                return False
            self._known.add(ref.id)
            heapq.heappush(self._delayed, (ref.run_at, ref.id, ref))
            self._delayed_unkeyed += 1
            return True
        p = ref.priority
        if self._ready_overflow[p] or self._ready_unkeyed[p] >= self._window:
            # Storage holds older jobs of this priority: they go first, in id order.
            self._ready_overflow[p] = True
            return False
        self._known.add(ref.id)
        self._ready[p].append(ref)
        self._ready_unkeyed[p] += 1
        return True

    def _schedule_mailbox(self, mb: Mailbox, now: int) -> bool:
        head = mb.head()
        if mb.busy or mb.scheduled or head is None:
            return False
        mb.scheduled = True
        if head.run_at > now:
            heapq.heappush(self._delayed, (head.run_at, head.id, head))
        else:
            self._ready[head.priority].append(head)
        return True

    def _mark_storage_ahead(self) -> None:
        self._ready_overflow = [True] * len(self._ready_overflow)
        self._delayed_overflow_at = 0
        self._keys_overflow = True
        self._keys_complete = False
        self._marks += 1

    def _promote_due(self, now: int) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, ref = heapq.heappop(self._delayed)
            if ref.key is None:
                self._delayed_unkeyed -= 1
                self._ready[ref.priority].append(ref)
                self._ready_unkeyed[ref.priority] += 1
            else:
                mb = self._mailboxes.get(ref.key)
                if mb is not None and mb.head() is ref and mb.scheduled:
                    self._ready[ref.priority].append(ref)

    # -- catching up from storage ----------------------------------------------------------

    async def _catch_up(self, now: int) -> None:
        owned = self._ownership.owned()
        if self._pending_ids:
            ids = [i for i in self._pending_ids if i not in self._known]
            self._pending_ids.clear()
            if ids:
                self.offer(await self._driver.load_refs(ids))
        if self._recount_soon:
            self._recount_soon = False
            await self._recount()
        # Each reload clears its overflow mark before reading, so whatever arrives during the
        # read is taken into memory (or marks the overflow again): nothing slips between.
        overflow_at = self._delayed_overflow_at
        if overflow_at is not None and (overflow_at <= now or self._delayed_unkeyed == 0):
            if overflow_at <= now:
                self._ready_overflow = [True] * len(self._ready_overflow)
            self._delayed_overflow_at = None
            rows = await self._driver.load_delayed(owned, now_ms(), self._window)
            self.offer(rows, new=False)
            if len(rows) >= self._window:
                at = self._delayed_overflow_at
                last = rows[-1].run_at
                self._delayed_overflow_at = last if at is None else min(at, last)
        for p in range(len(self._ready)):
            if (
                self._ready_overflow[p]
                and self._ready_unkeyed[p] < self._refill_below
                and not self._ready_loading[p]
            ):
                self._ready_overflow[p] = False
                self._ready_loading[p] = True
                task = asyncio.create_task(self._reload_ready(p, owned))
                self._loads.add(task)
                task.add_done_callback(self._loads.discard)
        if self._keys_overflow and len(self._mailboxes) < _MAX_KEYS // 2:
            await self._load_keys(owned)
        await self._refill_mailboxes(now)

    async def _load_keys(self, owned: Collection[int] | None) -> None:
        """Give every key with queued jobs a mailbox to be read from storage."""
        # Cleared before the read: a mark made during it (a recovery, a rescan) stays.
        self._keys_overflow = False
        marks = self._marks
        keys = await self._driver.load_keys(owned, _MAX_KEYS)
        if len(keys) >= _MAX_KEYS:
            self._keys_overflow = True
        self._keys_complete = (
            not self._keys_overflow and marks == self._marks and not self._recovering
        )
        for key in keys:
            mb = self._mailboxes.get(key)
            if mb is None:
                mb = self._mailboxes[key] = Mailbox(
                    key, self._config.mailbox_capacity, time.monotonic()
                )
            mb.overflow = True
            if mb.needs_refill():
                self._to_refill[key] = None

    async def _refill_mailboxes(self, now: int) -> None:
        """Read the keys whose mailboxes ran empty while storage holds more of their jobs."""
        for key in list(self._to_refill):
            mb = self._mailboxes.get(key)
            if mb is None or not mb.needs_refill():
                self._to_refill.pop(key, None)
                continue
            mb.overflow = False
            recoveries = self._recoveries
            try:
                rows = await self._driver.load_mailbox(key, mb.capacity)
            except BaseException:
                mb.overflow = True  # still to be read: the next step tries again
                raise
            if recoveries != self._recoveries:
                # A recovery began or ended during the read: its rows may miss a job it
                # queued again, so neither they nor what arrived meanwhile may run yet.
                # Read the key again next step.
                for ref in mb.drop_after(0):
                    self._known.discard(ref.id)
                mb.scheduled = False
                self._wake.set()
                continue
            self._to_refill.pop(key, None)
            self.offer(rows, new=False)
            # (Re-read: an empty mailbox may have been evicted during the read.)
            mb = self._mailboxes.get(key)
            if mb is not None and len(rows) >= mb.capacity:
                # Storage holds more of this key after the rows read. A job of the key that
                # reached memory meanwhile with a later id waits there too: it would overtake
                # them (the rows can also come up short of the capacity in memory, when
                # some were in flight and already known).
                head = mb.head()
                for ref in mb.drop_after(rows[-1].id):
                    self._known.discard(ref.id)
                if mb.head() is not head and not mb.busy:
                    mb.scheduled = False  # the head scheduled went back to storage
                    self._schedule_mailbox(mb, now)
                if mb.needs_refill():
                    self._to_refill[key] = None

    async def _reload_ready(self, p: int, owned: Collection[int] | None) -> None:
        """Read the oldest due jobs of priority ``p`` from storage into its window.

        The read goes in chunks, each taken into memory before the next is asked for: a
        whole window at once holds the event loop (decoding, placing) and the server for
        tens of milliseconds, and critical jobs arriving meanwhile wait that long. A chunk
        is placed in slices, the loop let go between them, for the same reason. The
        overflow mark is cleared before every chunk, so a job committed during the reload
        is either in a later chunk or slice or taken into memory as it arrives.
        """
        chunk = min(_RELOAD_CHUNK, self._window)
        after = 0
        try:
            while True:
                self._ready_overflow[p] = False
                # "Due" as of now, not as of the step's start: a job dropped while an
                # earlier read was in flight may be due only since then.
                rows = await self._driver.load_ready(owned, p, now_ms(), chunk, after)
                for i in range(0, len(rows), _OFFER_SLICE):
                    if i:
                        await asyncio.sleep(0)  # let critical work through between slices
                    started = self._started_while_loading
                    self.offer(
                        (r for r in rows[i : i + _OFFER_SLICE] if r.id not in started), new=False
                    )
                if len(rows) < chunk:
                    break
                if self._ready_overflow[p] or self._ready_unkeyed[p] >= self._window:
                    self._ready_overflow[p] = True
                    break
                after = rows[-1].id
        except Exception:
            log.exception("reading queued jobs failed; trying again shortly")
            self._ready_overflow[p] = True
            await asyncio.sleep(0.5)
        finally:
            self._ready_loading[p] = False
            if not any(self._ready_loading):
                self._started_while_loading.clear()
            self._wake.set()

    async def _recount(self) -> None:
        counts = await self._driver.count_queued_by_priority()
        for p, name in enumerate(PRIORITIES):
            self._depth[p] = counts.get(p, 0)
            self._metrics.queue_depth.labels(name).set(self._depth[p])

    def _depth_add(self, priority: int, n: int) -> None:
        self._depth[priority] += n
        gauge = self._child(self._metrics.queue_depth, PRIORITIES[priority])
        gauge.set(max(0, self._depth[priority]))

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered (a lookup per job adds up)."""
        key = (metric, labels)
        child = self._label_cache.get(key)
        if child is None:
            child = self._label_cache[key] = metric.labels(*labels)
        return child

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping and not self._outcomes and not self._running:
                return
            try:
                self._stepping = True
                try:
                    await self._step()
                finally:
                    self._stepping = False
                if self._failed_steps:
                    log.info("the runner's steps succeed again")
                    self._failed_steps = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._failed_steps += 1
                self._last_failure = _safe_text(f"{type(e).__name__}: {e}")
                self._metrics.step_failures.inc()
                delay = min(5.0, 0.05 * 2**self._failed_steps)
                log.exception("dispatch failed; trying again in %.2fs", delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def _step(self) -> None:
        """One turn: catch up, pick what the free slots allow, then write the outcomes
        waiting and start the picks in one transaction.

        The slots of the outcomes being written count as free for the picks: they are free
        once the transaction commits, which is also when the picks start. A keyed job's
        successor is not among the picks (its mailbox stays busy until the outcome is
        written), so a key's jobs still run one at a time, in order.
        """
        now = now_ms()
        if self._unconfirmed:
            await self._undo_unconfirmed(now)
        if not self._stopping:
            await self._catch_up(now)
            self._promote_due(now)
        batch, self._outcomes = self._outcomes, []
        if batch and self._failed_steps >= _ISOLATE_AFTER:
            # Writing this batch failed more than once: write its outcomes one by one, so
            # that one storage refuses cannot hold back the others (or the runner).
            await self._write_singly(batch, now)
            batch = []
        ready = self._ready[0]
        if batch and ready and len(ready) <= self._reserve and not self._stopping:
            # A few critical jobs wait: they start in a small transaction of their own (in the
            # slots already free, which the reserve keeps for them), and their handlers begin
            # before the write of a whole batch of outcomes, not after it.
            try:
                started = await self._advance_urgent(now)
            except BaseException:
                self._outcomes = batch + self._outcomes
                raise
            if started:
                await asyncio.sleep(0)
        self._free += len(batch)
        starts = [] if self._stopping else self._pick(now)
        if batch or starts:
            await self._advance(batch, starts, now)
        if self._delayed:
            self._arm_timer(time.monotonic() + max(0, self._delayed[0][0] - now_ms()) / 1000)

    async def _write_singly(self, batch: list[tuple[Outcome, Attempt]], now: int) -> None:
        """Write each outcome of ``batch`` in a transaction of its own. One that storage
        refuses (as opposed to one it cannot be reached for) is replaced by a failure of
        the job saying why, so the job ends, visibly, instead of being retried for ever."""
        token = self._ownership.token
        owned = self._ownership.owned()
        for i, (original, attempt) in enumerate(batch):
            outcome = original
            try:
                try:
                    done = await self._driver.advance([outcome], [], token, now)
                except Exception as e:
                    if self._driver.unreachable(e):
                        raise
                    outcome = self._refused(outcome, e)
                    done = await self._driver.advance([outcome], [], token, now)
            except BaseException:
                self._outcomes = batch[i:] + self._outcomes
                raise
            self._free += 1
            written = outcome.id in done.written
            self._settle(outcome, attempt, written, now_ms(), time.monotonic(), owned)

    def _refused(self, outcome: Outcome, error: Exception) -> Outcome:
        """A failure of ``outcome``'s job, in place of an outcome storage refused."""
        text = _safe_text(f"{type(error).__name__}: {error}")
        log.error("job %d: storage refused its outcome (%s); the job fails", outcome.id, text)
        self._metrics.outcomes_refused.inc()
        return Outcome(
            outcome.id,
            outcome.attempt,
            "failed",
            outcome.at,
            error=f"its outcome ({outcome.kind}) could not be stored: {text}",
            reason="Processing",
            dlq_id=self._ids.next(),
        )

    async def _undo_unconfirmed(self, now: int) -> None:
        """Put the jobs of unconfirmed starts back in the queue (a start that did commit has
        left its job processing here with no handler), and take them into memory again."""
        ids = list(self._unconfirmed)
        refs = await self._driver.undo_starts(ids, self._ownership.token, now)
        self._unconfirmed.difference_update(ids)
        if refs:
            log.warning("%d start(s) were not confirmed; their jobs are queued again", len(refs))
            self._recount_soon = True
            self.offer(refs, new=False)

    async def _advance_urgent(self, now: int) -> bool:
        """Start the critical jobs waiting (in the slots free now) in a transaction of their
        own; False if there were none to start."""
        urgent = self._pick(now, critical_only=True)
        if urgent:
            await self._advance([], urgent, now)
        return bool(urgent)

    async def _start_urgent(self) -> None:
        """The task form of ``_advance_urgent``, beside a step in flight."""
        try:
            await self._advance_urgent(now_ms())
        except Exception:
            # The picks are back in memory; the next step starts them.
            log.exception("starting critical jobs failed")
        finally:
            self._express = None

    async def _advance(
        self, batch: list[tuple[Outcome, Attempt]], starts: list[JobRef], now: int
    ) -> None:
        """Write ``batch`` and start ``starts`` in one transaction, then settle and launch."""
        try:
            done = await self._driver.advance(
                [o for o, _ in batch], [r.id for r in starts], self._ownership.token, now
            )
        except BaseException:
            self._unconfirmed.update(r.id for r in starts)
            self._restore(starts)
            self._free -= len(batch)
            self._outcomes = batch + self._outcomes
            raise
        written = set(done.written)
        settled = now_ms()
        mono = time.monotonic()
        owned = self._ownership.owned()
        for outcome, attempt in batch:
            self._settle(outcome, attempt, outcome.id in written, settled, mono, owned)
        if starts:
            self._launch(starts, done.started)
        self._metrics.running.set(len(self._running))
        if self._outcomes or (self._free > 0 and any(self._ready)):
            self._wake.set()

    def _arm_timer(self, at: float) -> None:
        if self._timer is not None:
            if self._timer_at <= at and not self._timer.cancelled():
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + max(0.0, at - time.monotonic()), self._on_timer
        )

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    def _pick(self, now: int, *, critical_only: bool = False) -> list[JobRef]:
        starts: list[JobRef] = []
        ready = self._ready
        owned = self._ownership.owned()
        reserve = self._free if critical_only else self._reserve
        while self._free > 0:
            if self._free > reserve:
                p = self._picker.pick([bool(q) for q in ready])
            else:
                # The last few slots are kept for critical work, so it never waits for a
                # slot to free up behind a backlog of lower priorities.
                p = 0 if ready[0] else -1
            if p < 0:
                break
            ref = ready[p].popleft()
            if owned is not None and ref.shard not in owned:
                self._drop_unowned(ref)
                continue
            if ref.key is None:
                self._ready_unkeyed[p] -= 1
            else:
                mb = self._mailboxes.get(ref.key)
                if mb is None or mb.busy or mb.head() is not ref:
                    if mb is not None and not mb.busy:
                        mb.scheduled = False
                        self._schedule_mailbox(mb, now)
                    continue
                mb.take()
                if mb.needs_refill():
                    self._to_refill[mb.key] = None
            self._free -= 1
            starts.append(ref)
        return starts

    def _drop_unowned(self, ref: JobRef) -> None:
        """Forget a ref whose shard moved away (its next owner reads it from storage)."""
        if ref.key is None:
            self._ready_unkeyed[ref.priority] -= 1
            self._known.discard(ref.id)
            return
        mb = self._mailboxes.get(ref.key)
        if mb is None:
            return
        mb.scheduled = False
        if not mb.busy:
            while mb.head() is not None:
                self._known.discard(mb.take().id)
            del self._mailboxes[ref.key]

    def _restore(self, starts: list[JobRef]) -> None:
        """Put back jobs whose start could not be written (they are still queued)."""
        for ref in reversed(starts):
            self._free += 1
            if ref.key is None:
                self._ready[ref.priority].appendleft(ref)
                self._ready_unkeyed[ref.priority] += 1
            else:
                mb = self._mailboxes.get(ref.key)
                if mb is not None:
                    mb.put_back(ref)
                    mb.release(time.monotonic())
                    mb.scheduled = False
                    self._schedule_mailbox(mb, now_ms())

    def _launch(self, starts: list[JobRef], rows: list[StartedJob]) -> None:
        """Run the started ``rows`` of the picked ``starts``; release the picks not started."""
        by_id = {row.id: row for row in rows}
        loop = asyncio.get_running_loop()
        metrics = self._metrics
        child = self._child
        self._attempts.check_tracing()
        left = [0] * len(self._depth)
        for ref in starts:
            if ref.id in self._counted_out:
                self._counted_out.discard(ref.id)
            else:
                left[ref.priority] += 1
        for p, n in enumerate(left):
            if n:
                self._depth_add(p, -n)
        now = now_ms()
        loading = any(self._ready_loading)
        # Tasks run in the order they are created: higher priorities' handlers go first.
        for ref in sorted(starts, key=_by_priority):
            row = by_id.get(ref.id)
            if row is None:
                # Cancelled (or moved) between delivery and start.
                self._release(ref.id, ref.key)
                continue
            name = PRIORITIES[row.priority]
            child(metrics.started, row.type, name).inc()
            due = max(row.created_at, row.run_at)
            child(metrics.start_latency, name).observe(max(0, now - due) / 1000)
            ctx = JobContext(str(row.id), row.type, row.attempts, row.max_attempts, row.key)
            attempt = Attempt(row, ctx)
            self._running[row.id] = attempt
            if loading:
                self._started_while_loading.add(row.id)
            attempt.task = loop.create_task(self._attempts.run(attempt))
            if row.id in self._cancel_pending:
                self._cancel_pending.discard(row.id)
                self.interrupt(row.id)
            if self._on_transition is not None:
                self._on_transition(row.id, "processing")

    def _release(self, job_id: int, key: str | None) -> None:
        self._free += 1
        self._known.discard(job_id)
        self._cancel_pending.discard(job_id)
        if key is not None:
            mb = self._mailboxes.get(key)
            if mb is not None:
                mb.release(time.monotonic())
                self._schedule_mailbox(mb, now_ms())
        self._wake.set()

    def _finished(self, outcome: Outcome, attempt: Attempt) -> None:
        """An attempt is over: its outcome goes out with the next step."""
        self._outcomes.append((outcome, attempt))
        self._wake.set()

    # -- after an outcome is written ------------------------------------------------------

    def _settle(
        self,
        outcome: Outcome,
        attempt: Attempt,
        written: bool,
        now: int,
        mono: float,
        owned: Collection[int] | None,
    ) -> None:
        """Forget a finished attempt whose outcome was just written (or fenced out); its slot
        was already counted free by the step that wrote it."""
        job = attempt.job
        self._running.pop(job.id, None)
        labels = (job.type, PRIORITIES[job.priority])
        m = self._metrics
        retry_ref = None
        if written:
            kind = outcome.kind
            if kind == "complete":
                self._child(m.completed, *labels).inc()
            elif kind == "retry":
                self._child(m.retried, *labels).inc()
                self._depth_add(job.priority, 1)
                run_at = outcome.run_at if outcome.run_at is not None else outcome.at
                retry_ref = JobRef(job.id, job.priority, run_at, job.key, job.shard)
            elif kind == "failed":
                m.dead_lettered.labels(*labels).inc()
            else:
                m.cancelled.labels(*labels).inc()
        moved = owned is not None and job.shard not in owned
        if moved:
            retry_ref = None  # the shard moved on: its next owner runs the retry
        elif not written:
            # Fenced out (the job was recovered meanwhile): storage may hold it queued again.
            self._mark_storage_ahead()
        self._known.discard(job.id)
        self._cancel_pending.discard(job.id)
        mb = self._mailboxes.get(job.key) if job.key is not None else None
        if retry_ref is not None and not self._stopping:
            if mb is not None:
                # A retry keeps the head of its mailbox: nothing of its key overtakes it.
                self._known.add(job.id)
                mb.put_back(retry_ref)
            elif job.key is None:
                self._place(retry_ref, now)
        if mb is not None:
            if moved or not written:
                # The key's jobs in memory no longer tell what comes next: the shard went to
                # another runner, or came back to this one after a recovery that queued this
                # job again, ahead of them. Storage says, in id order.
                self._reread_mailbox(mb, keep=not moved)
            else:
                mb.release(mono)
                self._schedule_mailbox(mb, now)
        if written and self._on_transition is not None:
            self._on_transition(job.id, _STATUS_OF[outcome.kind])

    def _reread_mailbox(self, mb: Mailbox, *, keep: bool) -> None:
        """Forget the jobs ``mb`` holds; if ``keep``, read its key from storage again (else
        drop it: the key's shard belongs to another runner now)."""
        for ref in mb.drop_after(0):
            self._known.discard(ref.id)
        mb.release(time.monotonic())
        mb.scheduled = False
        if keep:
            self._to_refill[mb.key] = None
        elif self._mailboxes.get(mb.key) is mb:
            del self._mailboxes[mb.key]

    # -- housekeeping --------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Prune finished jobs past retention, in small batches; evict idle mailboxes."""
        cfg = self._config
        while True:
            await asyncio.sleep(cfg.prune_interval)
            try:
                now = now_ms()
                while True:
                    n = await self._driver.prune(
                        now - int(cfg.retention * 1000),
                        now - int(cfg.dlq_retention * 1000),
                        cfg.prune_batch,
                    )
                    if n < cfg.prune_batch:
                        break
                    await asyncio.sleep(0)
                mono = time.monotonic()
                for key, mb in list(self._mailboxes.items()):
                    if mb.evictable(mono, cfg.max_idle):
                        del self._mailboxes[key]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance failed")
