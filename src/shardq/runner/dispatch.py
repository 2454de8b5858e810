"""The dispatch loop: each step writes the outcomes waiting and starts what the free slots
allow, in one transaction, then launches the handlers of the jobs started."""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import deque

from .._internal.attempts import Attempt, AttemptRunner
from .._internal.capacity import WeightedPicker
from .._internal.validation import safe_text
from ..clock import Clock, Timer
from ..context import JobContext
from ..drivers.base import Driver, JobRef, Outcome, Ownership, StartedJob
from ..ids import Snowflake
from ..models import PRIORITIES, PRIORITY_WEIGHTS
from .backlog import Backlog
from .instruments import Instruments
from .outcomes import Outcomes

log = logging.getLogger("shardq.runner")

_by_priority = operator.itemgetter(1)  # JobRef.priority
# Consecutive failed steps before their outcomes are written one by one (a first failure is
# most often a connection lost), and before the runner reports itself unhealthy.
_ISOLATE_AFTER = 2
_UNHEALTHY_AFTER = 3
# The longest failure text kept (in a refused job's error, and in ``problem``).
_MAX_FAILURE_TEXT = 500


class Dispatcher:
    """Steps of one runner, at most ``concurrency`` handlers at a time."""

    def __init__(
        self,
        concurrency: int,
        driver: Driver,
        ownership: Ownership,
        clock: Clock,
        ids: Snowflake,
        backlog: Backlog,
        outcomes: Outcomes,
        attempts: AttemptRunner,
        instruments: Instruments,
        running: dict[int, Attempt],
        cancel_pending: set[int],
        wake: asyncio.Event,
    ) -> None:
        self._driver = driver
        self._ownership = ownership
        self._clock = clock
        self._ids = ids
        self._backlog = backlog
        self._outcomes = outcomes
        self._attempts = attempts
        self._instruments = instruments
        self.running = running
        self.cancel_pending = cancel_pending
        self._wake = wake
        self._concurrency = concurrency
        # Jobs started ahead of a free handler slot: a slot that frees runs one of them at
        # once, instead of after the round trip of the step that writes its outcome and
        # starts its next job (the largest loss of a slot's cycle). Enough for the slots
        # that free during one step even when a busy server makes its round trip long.
        self._ahead = concurrency // 2
        # Slots beyond ``concurrency`` that only critical jobs may take, so that one arriving
        # behind a backlog of lower priorities starts at once instead of waiting for a
        # running job to finish.
        self._reserve = concurrency // 16
        self.free = concurrency + self._reserve + self._ahead
        #: Handlers running now (at most ``concurrency``, and the reserve for critical jobs),
        #: and started jobs waiting for one.
        self.handling = 0
        self._waiting: deque[Attempt] = deque()
        self._picker = WeightedPicker([PRIORITY_WEIGHTS[p] for p in PRIORITIES])
        # Jobs whose start was sent but not confirmed (the write failed, maybe after its
        # commit): storage may hold them as processing here although no handler runs them.
        # Undone before anything else is started.
        self._unconfirmed: set[int] = set()
        self.stepping = False
        self.stopping = False
        self.express: asyncio.Task[None] | None = None
        self._timer: Timer | None = None
        self._timer_at = 0.0
        self.failed_steps = 0
        self._last_failure = ""

    @property
    def problem(self) -> str | None:
        """Why no step succeeds now (they keep failing), or None."""
        if self.failed_steps < _UNHEALTHY_AFTER:
            return None
        return (
            f"the runner's last {self.failed_steps} steps failed, the latest with"
            f" {self._last_failure}"
        )

    # -- the loop --------------------------------------------------------------------------

    async def loop(self) -> None:
        """Step whenever woken, until stopping and nothing is left to write."""
        while True:
            await self._wake.wait()
            # One turn of the loop first: handlers begun in slots freed just now (jobs
            # started ahead) that return at once then end in this step, not in one of
            # their own.
            await asyncio.sleep(0)
            self._wake.clear()
            if self.stopping and not self._outcomes.pending and not self.running:
                return
            try:
                self.stepping = True
                try:
                    await self._step()
                finally:
                    self.stepping = False
                if self.failed_steps:
                    log.info("the runner's steps succeed again")
                    self.failed_steps = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failed_steps += 1
                self._last_failure = safe_text(f"{type(e).__name__}: {e}", _MAX_FAILURE_TEXT)
                self._instruments.step_failed()
                delay = min(5.0, 0.05 * 2**self.failed_steps)
                log.exception("dispatch failed; trying again in %.2fs", delay)
                await self._clock.sleep(delay)
                self._wake.set()

    def maybe_express(self) -> None:
        """Critical jobs arrived while a step writes (on a server, that takes a round trip
        or more): start them beside it rather than after it."""
        if (
            self.stepping
            and self._backlog.windows.ready[0]
            and self.free > 0
            and self.express is None
            and not self.stopping
            and not self._unconfirmed
        ):
            self.express = asyncio.get_running_loop().create_task(self._start_urgent())

    async def _step(self) -> None:
        """One turn: catch up, pick what the free slots allow, then write the outcomes
        waiting and start the picks in one transaction.

        The slots of the outcomes being written count as free for the picks: they are free
        once the transaction commits, which is also when the picks start. A keyed job's
        successor is not among the picks (its mailbox stays busy until the outcome is
        written), so a key's jobs still run one at a time, in order.
        """
        now = self._clock.now_ms()
        if self._unconfirmed:
            await self._undo_unconfirmed(now)
        if not self.stopping:
            await self._backlog.gates.settled()
            await self._backlog.catch_up(now)
            self._backlog.promote_due(now)
            if self._backlog.gates.active:
                self._backlog.unpark(now)
                self._instruments.held(self._backlog.gates.parked_count())
        batch = self._outcomes.take()
        if batch and self.failed_steps >= _ISOLATE_AFTER:
            # Writing this batch failed more than once: write its outcomes one by one, so
            # that one storage refuses cannot hold back the others (or the runner).
            await self._write_singly(batch, now)
            batch = []
        ready = self._backlog.windows.ready[0]
        if batch and ready and len(ready) <= self._reserve and not self.stopping:
            # A few critical jobs wait: they start in a small transaction of their own (in the
            # slots already free, which the reserve keeps for them), and their handlers begin
            # before the write of a whole batch of outcomes, not after it.
            try:
                started = await self._advance_urgent(now)
            except BaseException:
                self._outcomes.put_back(batch)
                raise
            if started:
                await asyncio.sleep(0)
        self.free += len(batch)
        if batch and self._backlog.gates.active and not self.stopping:
            self._slots_freed(batch, now)
        starts = [] if self.stopping else self._pick(now)
        if batch or starts:
            await self._advance(batch, starts, now)
        self._arm_next()

    def _arm_next(self) -> None:
        """Wake when the next delayed job falls due or the next hold ends."""
        due = self._backlog.windows.next_due()
        if self._backlog.gates.active:
            release = self._backlog.gates.next_release()
            if release is not None:
                due = release if due is None else min(due, release)
        if due is not None:
            delay = max(0, due - self._clock.now_ms()) / 1000
            self._arm_timer(self._clock.monotonic() + delay)

    def _slots_freed(self, batch: list[tuple[Outcome, Attempt]], now: int) -> None:
        """The slots of ``batch``'s jobs are free in this step's admission already (storage
        does not count a job whose outcome the same step writes): their types may start."""
        self._backlog.gates.slot_freed({attempt.job.type for _, attempt in batch})
        self._backlog.unpark(now)

    # -- writing ---------------------------------------------------------------------------

    async def _advance(
        self, batch: list[tuple[Outcome, Attempt]], starts: list[JobRef], now: int
    ) -> None:
        """Write ``batch`` and start ``starts`` in one transaction, then settle and launch."""
        limited = self._backlog.gates.limited(starts) if starts else frozenset()
        try:
            if limited:
                done = await self._driver.advance(
                    [o for o, _ in batch],
                    [r.id for r in starts],
                    self._ownership.token,
                    now,
                    limited,
                )
            else:
                done = await self._driver.advance(
                    [o for o, _ in batch], [r.id for r in starts], self._ownership.token, now
                )
        except BaseException:
            self._unconfirmed.update(r.id for r in starts)
            self._put_back(starts)
            self.free -= len(batch)
            self._outcomes.put_back(batch)
            raise
        written = set(done.written)
        settled = self._clock.now_ms()
        owned = self._ownership.owned()
        for outcome, attempt in batch:
            self._outcomes.settle(outcome, attempt, outcome.id in written, settled, owned)
        if done.held:
            self._backlog.gates.hold(done.held)
        if starts:
            self._launch(starts, done.started, done.held)
        self._instruments.running(self.handling)
        if self._outcomes.pending or (self.free > 0 and any(self._backlog.windows.ready)):
            self._wake.set()

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
                self._outcomes.put_back(batch[i:])
                raise
            self.free += 1
            written = outcome.id in done.written
            self._outcomes.settle(outcome, attempt, written, self._clock.now_ms(), owned)

    def _refused(self, outcome: Outcome, error: Exception) -> Outcome:
        """A failure of ``outcome``'s job, in place of an outcome storage refused."""
        text = safe_text(f"{type(error).__name__}: {error}", _MAX_FAILURE_TEXT)
        log.error("job %d: storage refused its outcome (%s); the job fails", outcome.id, text)
        self._instruments.outcome_refused()
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
            self._backlog.recount_soon()
            self._backlog.offer(refs, new=False)

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
            await self._backlog.gates.settled()
            await self._advance_urgent(self._clock.now_ms())
        except Exception:
            # The picks are back in memory; the next step starts them.
            log.exception("starting critical jobs failed")
        finally:
            self.express = None

    # -- timers ----------------------------------------------------------------------------

    def _arm_timer(self, at: float) -> None:
        """Wake the loop at monotonic time ``at`` (or at an earlier time already armed)."""
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._clock.call_later(at - self._clock.monotonic(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    def cancel_timer(self) -> None:
        """Disarm the wake-up timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- picking and launching -------------------------------------------------------------

    def _pick(self, now: int, *, critical_only: bool = False) -> list[JobRef]:
        """Take from the ready windows what the free slots allow, by the priorities'
        weights; the last few slots only for critical jobs."""
        starts: list[JobRef] = []
        windows, mailboxes = self._backlog.windows, self._backlog.mailboxes
        ready = windows.ready
        owned = self._ownership.owned()
        reserve = self.free if critical_only else self._reserve
        gated = self._backlog.gates.active
        while self.free > 0:
            if self.free > reserve:
                p = self._picker.pick([bool(q) for q in ready])
            else:
                # The reserve is kept for critical work, so it never waits for a
                # slot to free up behind a backlog of lower priorities.
                p = 0 if ready[0] else -1
            if p < 0:
                break
            ref = ready[p].popleft()
            if owned is not None and ref.shard not in owned:
                self._backlog.drop(ref)
                continue
            if gated and not self._backlog.admits(ref, now):
                continue
            if ref.key is None:
                windows.taken(ref)
            elif not mailboxes.take(ref, now):
                continue
            self.free -= 1
            starts.append(ref)
        return starts

    def _put_back(self, starts: list[JobRef]) -> None:
        """Put back jobs whose start could not be written (they are still queued)."""
        now = self._clock.now_ms()
        for ref in reversed(starts):
            self.free += 1
            self._backlog.put_back(ref, now)

    def _launch(self, starts: list[JobRef], rows: list[StartedJob], held: dict[str, int]) -> None:
        """Run the started ``rows`` of the picked ``starts``; release the picks not started
        (those of a ``held`` type stay queued, and are parked at their next pick)."""
        by_id = {row.id: row for row in rows}
        loop = asyncio.get_running_loop()
        self._attempts.check_tracing()
        self._instruments.picked(starts)
        now = self._clock.now_ms()
        windows = self._backlog.windows
        loading = any(windows.loading)
        # Tasks run in the order they are created: higher priorities' handlers go first.
        for ref in sorted(starts, key=_by_priority):
            row = by_id.get(ref.id)
            if row is None:
                if ref.type in held:
                    self.free += 1
                    self._backlog.put_back(ref, now)
                else:
                    # Cancelled (or moved) between delivery and start.
                    self._release(ref.id, ref.key)
                continue
            self._instruments.started(row, now)
            ctx = JobContext(str(row.id), row.type, row.attempts, row.max_attempts, row.key)
            attempt = Attempt(row, ctx)
            self.running[row.id] = attempt
            if loading:
                windows.note_started(row.id)
            if self.handling < self._handler_slots(row.priority):
                self._begin(attempt, loop)
            else:
                self._waiting.append(attempt)
            if row.id in self.cancel_pending:
                self.cancel_pending.discard(row.id)
                self.interrupt(row.id)
            self._outcomes.transition(row.id, "processing")

    def _begin(self, attempt: Attempt, loop: asyncio.AbstractEventLoop) -> None:
        self.handling += 1
        attempt.started = time.perf_counter()
        attempt.task = loop.create_task(self._attempts.run(attempt))

    def _handler_slots(self, priority: int) -> int:
        """The handler slots a job of ``priority`` may take: critical jobs also the reserve
        (so one started ahead never waits behind lower priorities)."""
        return self._concurrency + self._reserve if priority == 0 else self._concurrency

    def handler_done(self) -> None:
        """A handler ended: its slot runs the next job started ahead, if one waits (a
        critical one first)."""
        self.handling -= 1
        waiting = self._waiting
        if not waiting or self.handling >= self._concurrency + self._reserve:
            return
        pick = next((a for a in waiting if a.job.priority == 0), None)
        if pick is None and self.handling < self._concurrency:
            pick = waiting[0]
        if pick is not None:
            waiting.remove(pick)
            self._begin(pick, asyncio.get_running_loop())

    def give_back_waiting(self) -> None:
        """The jobs started ahead end without running (queued again at once): the runner
        stops, or their shards are being handed over (``Attempt.shutdown`` set)."""
        loop = asyncio.get_running_loop()
        keep: deque[Attempt] = deque()
        while self._waiting:
            attempt = self._waiting.popleft()
            if attempt.shutdown or attempt.cancel_requested or self.stopping:
                attempt.shutdown = attempt.shutdown or not attempt.cancel_requested
                self._begin(attempt, loop)
            else:
                keep.append(attempt)
        self._waiting = keep

    def _release(self, job_id: int, key: str | None) -> None:
        self.free += 1
        self._backlog.known.discard(job_id)
        self.cancel_pending.discard(job_id)
        if key is not None:
            self._backlog.mailboxes.release(key, self._clock.now_ms())
        self._wake.set()

    def interrupt(self, job_id: int) -> bool:
        """Cancel the running attempt of ``job_id``; True if it runs here."""
        attempt = self.running.get(job_id)
        if attempt is None:
            if job_id in self._backlog.known:
                # It may be starting right now: cancel it as soon as it is registered.
                self.cancel_pending.add(job_id)
            return False
        if not attempt.cancel_requested:
            attempt.cancel_requested = True
            attempt.ctx.cancel()
            if attempt.task is None:
                self.give_back_waiting()  # started ahead: it ends now, cancelled
            elif attempt.begun:
                attempt.task.cancel()
        return True
