"""A runner: owns shards, holds their entities' mailboxes, runs handlers, writes outcomes.

Work reaches a runner as it is committed: in-process submits hand their rows over directly,
other processes' commits arrive as notifications. Nothing polls the database for work. The
parts: ``backlog`` (what is queued in memory: ``windows`` and ``mailboxes``), ``dispatch``
(the steps that write outcomes and start jobs), ``outcomes`` (settling what a step wrote),
``maintenance`` (pruning), ``instruments`` (metrics) and ``schedules`` (a timer per schedule
of the owned shards, each tick fired as one job); what one attempt does between its
start and its outcome (the handler call) is ``_internal.attempts``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Collection, Iterable
from typing import Any

from .._internal.attempts import Attempt, AttemptRunner, Handler
from .._internal.tasks import cancel_and_wait
from ..clock import SYSTEM_CLOCK, Clock
from ..config import Config
from ..drivers.base import Driver, EventKind, JobRef, Outcome, Ownership
from ..ids import Snowflake
from ..observe import Metrics
from .backlog import Backlog
from .dispatch import Dispatcher
from .instruments import Instruments
from .maintenance import Maintenance
from .outcomes import Outcomes, TransitionCallback
from .schedules import Scheduler

log = logging.getLogger("shardq.runner")


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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._driver = driver
        self._config = config
        self._ownership = ownership
        self._clock = clock
        self._wake = asyncio.Event()
        self._instruments = Instruments(metrics)
        self._running: dict[int, Attempt] = {}
        cancel_pending: set[int] = set()
        self._backlog = Backlog(
            config, driver, ownership, clock, self._instruments, self._wake, self._on_added
        )
        self._outcomes = Outcomes(
            self._backlog,
            self._instruments,
            self._running,
            cancel_pending,
            self._wake.set,
            on_transition,
        )
        attempts = AttemptRunner(
            handlers,
            config.retry,
            metrics,
            ids,
            context_vars,
            threads=min(32, config.concurrency),
            finished=self._finished,
            clock=clock,
            handled_elsewhere=self._handled_elsewhere,
        )
        self._attempts = attempts
        self._dispatch = Dispatcher(
            config.concurrency,
            driver,
            ownership,
            clock,
            ids,
            self._backlog,
            self._outcomes,
            attempts,
            self._instruments,
            self._running,
            cancel_pending,
            self._wake,
        )
        self._maintenance = Maintenance(
            config, driver, clock, self._backlog.mailboxes, handlers.keys(), ownership.token
        )
        self._scheduler = Scheduler(
            driver, config, clock, ids, ownership, handlers, self._instruments, self.offer
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._controls_load: asyncio.Task[None] | None = None
        self._controls_again = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted jobs, load the backlog and begin dispatching."""
        recovered = await self._driver.recover(self._ownership.owned(), self._clock.now_ms())
        if recovered:
            log.info("recovered %d interrupted job(s)", recovered)
        await self._instruments.recount(self._driver)
        await self._maintenance.advertise()
        await self._backlog.gates.load()
        await self._scheduler.start()
        try:
            await self._ownership.start(self.on_shards_changed)
        except BaseException:
            await self._scheduler.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._dispatch.loop(), name="shardq-dispatch"),
            asyncio.create_task(self._maintenance.run(), name="shardq-maintenance"),
            asyncio.create_task(self._maintenance.advertising(), name="shardq-advertise"),
        ]
        self._wake.set()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop taking work, let running handlers finish (up to ``drain_timeout``), interrupt
        the rest (they are queued again), write every outcome and release the shards."""
        timeout = self._config.drain_timeout if drain_timeout is None else drain_timeout
        self._dispatch.stopping = self._outcomes.stopping = True
        self._wake.set()
        await self._scheduler.stop()
        loop_task = self._tasks[0] if self._tasks else None
        housekeeping = self._tasks[1:]
        for task in housekeeping:
            task.cancel()
        await asyncio.gather(*housekeeping, return_exceptions=True)
        await self._backlog.stop()
        if self._controls_load is not None:
            await cancel_and_wait(self._controls_load, quiet=True)
        if self._dispatch.express is not None:
            # Whatever it starts is drained below with the rest.
            await asyncio.gather(self._dispatch.express, return_exceptions=True)
        await self._drain(timeout)
        if loop_task is not None:
            # The dispatch loop writes the last outcomes, then ends. Writes are retried while
            # storage is unreachable; past the drain time give up: their jobs stay
            # "processing" and run again after recovery (at-least-once).
            self._wake.set()
            _, late = await asyncio.wait([loop_task], timeout=max(5.0, timeout))
            if late:
                unwritten = len(self._outcomes.pending) or 1
                log.error("stopping with %d outcome(s) unwritten", unwritten)
            await cancel_and_wait(loop_task)
        self._dispatch.cancel_timer()
        await self._ownership.stop()
        self._attempts.shutdown()

    def _finished(self, outcome: Outcome, attempt: Attempt) -> None:
        self._dispatch.handler_done()
        self._outcomes.finished(outcome, attempt)

    async def _drain(self, timeout: float) -> None:
        """Let running handlers finish for up to ``timeout``; interrupt the rest."""
        self._dispatch.give_back_waiting()
        tasks = [a.task for a in self._running.values() if a.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for attempt in list(self._running.values()):
            if attempt.task in pending:
                self._shut_down(attempt)
        if pending:
            await asyncio.wait(pending)

    @staticmethod
    def _shut_down(attempt: Attempt) -> None:
        """Interrupt ``attempt`` because this runner stops serving its job (it is queued
        again, not cancelled)."""
        attempt.shutdown = True
        attempt.ctx.cancel()
        if attempt.task is not None and attempt.begun:
            attempt.task.cancel()

    async def _handled_elsewhere(self, job_type: str) -> bool:
        """True if some runner has had a handler for ``job_type`` within the grace period."""
        since = self._clock.now_ms() - int(self._config.handler_grace * 1000)
        return await self._driver.handled_since(job_type, since)

    @property
    def problem(self) -> str | None:
        """Why this runner is not making progress (its steps keep failing), or None."""
        return self._dispatch.problem

    @property
    def running_count(self) -> int:
        """Handlers running now."""
        return self._dispatch.handling

    # -- work arriving -------------------------------------------------------------------

    def offer(self, refs: Iterable[JobRef], *, new: bool = True) -> None:
        """Take freshly committed jobs (``new``) or reloaded ones into memory."""
        self._backlog.offer(refs, new=new)

    def _on_added(self) -> None:
        self._wake.set()
        self._dispatch.maybe_express()

    def on_event(self, kind: EventKind, ids: list[int]) -> None:
        """A notification from another process."""
        if kind == "submitted":
            self._backlog.announced(ids)
        elif kind == "cancel":
            for i in ids:
                self.interrupt(i)
        elif kind == "rescan":
            self._backlog.mark_ahead()
            self._backlog.recount_soon()
            self._scheduler.changed(None)
        elif kind == "schedules":
            self._scheduler.changed(ids)
        elif kind == "controls":
            self._reload_controls()
        elif kind == "finished":
            self._backlog.gates.slot_freed()
        self._wake.set()

    async def reload_schedules(self, shards: Collection[int]) -> None:
        """Apply a change of the schedules of ``shards`` that this process made."""
        await self._scheduler.reload(shards)

    async def reload_controls(self) -> None:
        """Read the controls again now (this process changed them)."""
        await self._backlog.gates.load()

    def _reload_controls(self) -> None:
        """Read the controls again (another process changed them), beside the loop."""
        if self._controls_load is not None and not self._controls_load.done():
            self._controls_again = True
            return
        self._controls_load = asyncio.get_running_loop().create_task(self._load_controls())
        self._backlog.gates.loading = self._controls_load

    async def _load_controls(self) -> None:
        while True:
            self._controls_again = False
            try:
                await self._backlog.gates.load()
            except Exception:
                log.exception("reading the flow controls failed; trying again shortly")
                await self._clock.sleep(0.5)
                self._controls_again = True
            if not self._controls_again or self._dispatch.stopping:
                return

    def interrupt(self, job_id: int) -> bool:
        """Cancel the running attempt of ``job_id``; True if it runs here."""
        return self._dispatch.interrupt(job_id)

    def cancelled_queued(self, job_id: int, priority: int) -> None:
        """A queued job was cancelled: it leaves the queue-depth gauge now."""
        self._instruments.cancelled_queued(job_id, priority, job_id in self._backlog.known)

    async def on_shards_changed(self, acquired: set[int], lost: set[int]) -> None:
        """Ownership moved: forget and interrupt what was lost, catch up on what was gained.

        Nothing of an acquired shard runs before its interrupted jobs are queued again: a
        key's job that arrives meanwhile must not overtake the key's older job that the
        previous owner was running.
        """
        if lost:
            for attempt in list(self._running.values()):
                if attempt.job.shard in lost:
                    self._shut_down(attempt)
            self._dispatch.give_back_waiting()
            self._backlog.forget_shards(lost)
        self._scheduler.shards_changed(acquired, lost)
        if acquired:
            self._backlog.gates.shards_gained(acquired)
            mailboxes = self._backlog.mailboxes
            mailboxes.recovery_started(acquired)
            try:
                recovered = await self._driver.recover(
                    acquired, self._clock.now_ms(), self._ownership.token
                )
            finally:
                mailboxes.recovery_ended(acquired)
            if recovered:
                log.info("recovered %d job(s) on %d acquired shard(s)", recovered, len(acquired))
            self._backlog.mark_ahead()
            await self._instruments.recount(self._driver)
        self._wake.set()
