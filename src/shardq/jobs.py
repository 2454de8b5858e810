"""JobService: submit, inspect, cancel and replay jobs; run their handlers.

The facade the seed describes. It validates every input before anything is stored, writes
through the storage driver (one transaction per batch, concurrent submitters sharing one) and,
in a runner process, hands committed jobs straight to the local runner.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from prometheus_client import CollectorRegistry

from ._internal.attempts import Handler
from ._internal.batching import GroupCommit
from ._internal.rows import encode_spec
from ._internal.validation import (
    MAX_SECONDS,
    check_limit,
    check_name,
    check_options,
    check_seconds,
    check_text,
    encode_json,
    epoch_ms,
    parse_id,
    show,
)
from ._internal.views import dead_letter_view, status_view
from .clock import SYSTEM_CLOCK, Clock
from .cluster import ClusterSupport
from .config import Config
from .drivers import connect
from .drivers.base import Driver, EventKind, JobFilter, JobRecord, JobRef, LimitRecord, NewJob
from .entity import job_entity
from .errors import JobError
from .flow import FlowSupport
from .handlers import HandlerSupport
from .ids import Snowflake
from .models import (
    FINISHED,
    PRIORITIES,
    PRIORITY_RANK,
    DeadLetter,
    Duration,
    JobPayload,
    JobStatusResponse,
    Priority,
    QueueStats,
    Status,
    SubmitResult,
)
from .observe import Metrics, capture_context, instrument_driver, submit_span
from .runner import Runner
from .scheduling import ScheduleSupport

F = TypeVar("F", bound=Callable[..., Any])
#: Jobs of a batch encoded between two turns of the event loop.
_ENCODE_CHUNK = 250
__all__ = ["MAX_SECONDS", "JobService"]


class JobService(HandlerSupport, ClusterSupport, ScheduleSupport, FlowSupport):
    """A job system on one database: ``sqlite:///file.db`` (embedded) or ``postgresql://…``.

    Use it as ``async with JobService(url) as jobs:`` (or ``with`` for synchronous code).
    With ``runner=True`` (the default) this process also runs the handlers of the jobs it
    owns; with ``runner=False`` it only submits and reads, e.g. in a web process.
    ``context_vars`` are captured at submit and restored around the handler (values must be
    JSON-serialisable). ``clock`` is where the service reads the time and waits for it (due
    times, retries, retention, heartbeats): a ``shardq.clock.FakeClock`` lets a test move it
    forward instead of sleeping. Settings not given here come from ``Config`` defaults.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        runner: bool = True,
        config: Config | None = None,
        registry: CollectorRegistry | None = None,
        context_vars: Sequence[contextvars.ContextVar[Any]] = (),
        clock: Clock | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and (url is not None or settings):
            raise ValueError("pass either config or url/settings, not both")
        self.config = config if config is not None else Config.from_env(url, **settings)
        self.runs_jobs = runner
        self.metrics = Metrics(registry)
        self._handlers: dict[str, Handler] = {}
        #: Limits given with the handlers, stored when the runner starts.
        self._declared_limits: dict[str, LimitRecord] = {}
        self._context_vars = list(context_vars)
        #: Where this service reads the time (a ``FakeClock`` in tests).
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._ids = Snowflake(self.config.machine_id, self.clock.now_ms)
        self._driver: Driver | None = None
        self._runner: Runner | None = None
        self._inserts: GroupCommit[NewJob, tuple[int, bool]] | None = None
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._listeners: list[Callable[[str, Status], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.runner_id = uuid.uuid4().hex
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage (applying migrations) and, if this is a runner, start running jobs."""
        if self._driver is not None:
            raise RuntimeError("JobService is already started")
        cfg = self.config
        if self._started:
            # A new fencing token: jobs an earlier start left processing under the old one
            # (a stop that gave up writing) are recovered, not taken for this run's own.
            self.runner_id = uuid.uuid4().hex
        self._started = True
        driver = connect(
            cfg.database_url,
            runner=self.runs_jobs,
            pool_size=cfg.pool_size,
            heartbeat=cfg.heartbeat,
            handover_timeout=cfg.handover_timeout,
            clock=self.clock,
        )
        instrument_driver(driver, self.metrics)
        await driver.open()
        self._driver = driver
        self._loop = asyncio.get_running_loop()
        self._inserts = GroupCommit(driver.insert_jobs)
        driver.listen(self._on_event)
        if self.runs_jobs:
            self._runner = Runner(
                driver,
                self.config,
                self._handlers,
                self.metrics,
                self._ids,
                self._ownership(driver),
                self._context_vars,
                self._on_transition,
                self.clock,
            )
            try:
                if self._declared_limits:
                    await driver.controls.put_limits(
                        list(self._declared_limits.values()), self.clock.now_ms()
                    )
                await self._runner.start()
            except BaseException:
                self._runner = None
                self._driver = None
                await driver.close()
                raise

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop: running handlers may finish (up to ``drain_timeout``), then storage closes."""
        runner, driver = self._runner, self._driver
        self._runner = None
        try:
            if runner is not None:
                await runner.stop(drain_timeout)
        finally:
            self._driver = None
            if driver is not None:
                await driver.close()
        for fut in [f for futures in self._waiters.values() for f in futures if not f.done()]:
            fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> JobService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> JobService:
        """Start the service on a private event loop thread, for synchronous programs."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="shardq-loop", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._thread = None

    def health_problem(self) -> str | None:
        """Why this service cannot do its work now (storage closed, or its runner's writes
        keep failing), or None when it is healthy."""
        if self._driver is None:
            return "the JobService is not started"
        return None if self._runner is None else self._runner.problem

    @property
    def driver(self) -> Driver:
        """The open storage driver; raises if the service is not started."""
        if self._driver is None:
            raise JobError.from_runner_unavailable(
                None, "the JobService is not started (use 'async with JobService(...)')"
            )
        return self._driver

    # -- submit --------------------------------------------------------------------------

    @overload
    async def submit(
        self,
        job_type: str,
        payload: list[Any],
        *,
        priority: Priority = ...,
        dedupe_key: str | None = ...,
        max_attempts: int | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,
        delay: float = ...,
        duration: Duration = ...,
        conn: object = ...,
    ) -> list[str]: ...

    @overload
    async def submit(
        self,
        job_type: str,
        payload: Any,
        *,
        priority: Priority = ...,
        dedupe_key: str | None = ...,
        max_attempts: int | None = ...,
        key: str | None = ...,
        timeout: float | None = ...,
        delay: float = ...,
        duration: Duration = ...,
        conn: object = ...,
    ) -> str: ...

    async def submit(
        self,
        job_type: str,
        payload: Any,
        *,
        priority: Priority = "normal",
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
        key: str | None = None,
        timeout: float | None = None,
        delay: float = 0,
        duration: Duration = "short",
        conn: object = None,
    ) -> str | list[str]:
        """Store a job and return its id; a list payload is a batch (one transaction) and
        returns a list of ids. When ``submit`` returns, the jobs are committed.

        A ``dedupe_key`` already held by a retained job returns that job's id instead (in a
        batch, item ``i`` uses ``f"{dedupe_key}:{i}"``). Jobs sharing ``key`` run one at a
        time in submit order. ``timeout`` bounds each attempt; ``delay`` defers the first.
        Invalid input raises ``JobError(reason="Validation")`` and stores nothing. With
        ``conn``, the jobs join the caller's open transaction on it (see ``submit_many``).
        """
        batch = isinstance(payload, list)
        items: list[Any] = payload if batch else [payload]
        if batch and dedupe_key is not None:
            # Checked before the per-item keys are derived from it (which would make any
            # value a string).
            check_name("dedupe_key", dedupe_key)
        batch_id = uuid.uuid4().hex if batch and len(items) > 1 else None
        attempts = self.config.default_max_attempts if max_attempts is None else max_attempts
        specs = [
            JobPayload(
                type=job_type,
                payload=item,
                priority=priority,
                dedupe_key=(
                    f"{dedupe_key}:{i}" if batch and dedupe_key is not None else dedupe_key
                ),
                max_attempts=attempts,
                duration=duration,
                batch_id=batch_id,
                key=key,
                timeout=timeout,
            )
            for i, item in enumerate(items)
        ]
        if not specs:
            # An empty batch stores nothing, but its arguments are checked all the same.
            check_options(
                JobPayload(job_type, None, priority, None, attempts, duration, None, key, timeout)
            )
            check_seconds("delay", delay, zero_ok=True)
            return []
        results = await self.submit_many(specs, delay=delay, conn=conn)
        ids = [r.job_id for r in results]
        return ids if batch else ids[0]

    #: The seed's name for ``submit``, kept for existing callers.
    enqueue = submit

    async def submit_many(
        self, jobs: Sequence[JobPayload], *, delay: float = 0, conn: object = None
    ) -> list[SubmitResult]:
        """Store jobs of any types and options in one transaction; per job, its id and
        whether it was a duplicate of a retained job (by dedupe key).

        ``conn``: a connection of the application with a transaction open (asyncpg on
        PostgreSQL, ``sqlite3.Connection`` to the same file on SQLite): the jobs are inserted
        in that transaction, exist if and only if it commits, and run once it has."""
        seconds = check_seconds("delay", delay, zero_ok=True)
        if not isinstance(jobs, Sequence) or isinstance(jobs, str | bytes):
            raise JobError.from_validation(
                None, f"jobs must be a sequence of JobPayload, got {show(jobs)}"
            )
        if not jobs:
            return []
        now = self.clock.now_ms()
        run_at = now + int(seconds * 1000)
        captured = capture_context(self._context_vars)
        context = _encode_context(captured)
        checked: dict[tuple[Any, ...], tuple[int, float | None]] = {}
        ids = self._ids.take(len(jobs))
        rows: list[NewJob] = []
        for start in range(0, len(jobs), _ENCODE_CHUNK):
            if len(jobs) > _ENCODE_CHUNK:
                # A large batch is encoded in slices with the loop let go between them: a
                # runner in this process goes on meanwhile (a thousand jobs in one go held
                # its steps up for milliseconds, and with them every job's start).
                await asyncio.sleep(0)
            end = start + _ENCODE_CHUNK
            rows += [
                encode_spec(spec, job_id, now, run_at, context, checked, self.config)
                for spec, job_id in zip(jobs[start:end], ids[start:end], strict=True)
            ]
        inserts = self._inserts
        if inserts is None:
            raise JobError.from_runner_unavailable(None, "the JobService is not started")
        with submit_span(jobs[0].type, len(jobs)):
            if conn is None:
                results = await inserts.submit(rows)
            else:
                results = await self.driver.insert_jobs_within(conn, rows)
        fresh: list[JobRef] = []
        counts: dict[tuple[str, int], int] = {}
        for row, (_, duplicate) in zip(rows, results, strict=True):
            if not duplicate:
                label = (row.type, row.priority)
                counts[label] = counts.get(label, 0) + 1
                fresh.append(JobRef(row.id, row.priority, row.run_at, row.key, row.shard, row.type))
        for (job_type, priority), n in counts.items():
            self.metrics.enqueued.labels(job_type, PRIORITIES[priority]).inc(n)
        if self._runner is not None and fresh and conn is None:
            self._runner.offer(fresh)
        return [SubmitResult(str(i), dup) for i, dup in results]

    # -- reading -------------------------------------------------------------------------

    async def status(self, job_id: str) -> JobStatusResponse:
        """The job's status, attempts, full history and result, and why it waits if it is
        held back; NotFound if unknown."""
        record = await self._record(job_id)
        st = status_view(record)
        if record.state == "queued" and record.run_at <= self.clock.now_ms():
            waiting = await self._waiting(record.type, record.key)
            if waiting is not None:
                st = dataclasses.replace(st, waiting=waiting)
        return st

    async def _record(self, job_id: str) -> JobRecord:
        record = await self.driver.get_job(parse_id(job_id))
        if record is None:
            raise JobError.from_not_found(str(job_id))
        return record

    async def wait(self, job_id: str, timeout: float | None = None) -> JobStatusResponse:
        """Wait until the job is complete, failed or cancelled and return its status.

        Raises ``JobError(reason="Timeout")`` if ``timeout`` seconds pass first.
        """
        jid = parse_id(job_id)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout, zero_ok=True)
        loop = asyncio.get_running_loop()
        driver = self.driver
        backoff = 0.005
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # Register before reading, so a finish between the two is not missed.
                    fut: asyncio.Future[None] = loop.create_future()
                    self._waiters.setdefault(jid, []).append(fut)
                    if driver.announces_finished:
                        # Subscribed before reading too, for the same reason.
                        await driver.keep_watching()
                    st = status_view(await self._record(job_id))
                    if st.finished:
                        return st
                    if driver.announces_finished:
                        # Woken by the announcement; the re-read each second only covers a
                        # runner that restarted (and forgot us) meanwhile.
                        await asyncio.wait([fut], timeout=1.0)
                    else:
                        await asyncio.wait([fut], timeout=backoff)
                        backoff = min(backoff * 2, 0.25)
        except TimeoutError:
            raise JobError.from_timeout(str(job_id), f"still unfinished after {timeout}s") from None
        finally:
            futures = self._waiters.get(jid)
            if futures is not None:
                futures[:] = [f for f in futures if not f.done()]
                if not futures:
                    del self._waiters[jid]

    async def list_jobs(
        self,
        *,
        status: Status | None = None,
        type: str | None = None,
        priority: Priority | None = None,
        key: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[JobStatusResponse]:
        """Jobs matching every given filter, newest first; page with ``before`` (an id)."""
        if status is not None and (
            not isinstance(status, str) or status not in ("queued", "processing", *FINISHED)
        ):
            raise JobError.from_validation(None, f"unknown status {show(status)}")
        if priority is not None and (
            not isinstance(priority, str) or priority not in PRIORITY_RANK
        ):
            raise JobError.from_validation(None, f"unknown priority {show(priority)}")
        check_limit(limit)
        for what, text in (("type", type), ("key", key)):
            if text is not None:
                if not isinstance(text, str):
                    raise JobError.from_validation(
                        None, f"the {what} filter must be a string, got {show(text)}"
                    )
                check_text(f"the {what} filter", text)
        flt = JobFilter(
            state=status,
            type=type,
            priority=PRIORITY_RANK[priority] if priority is not None else None,
            key=key,
            created_after=epoch_ms("created_after", created_after),
            created_before=epoch_ms("created_before", created_before),
            limit=limit,
            before_id=parse_id(before) if before is not None else None,
        )
        return [status_view(r) for r in await self.driver.list_jobs(flt)]

    async def stats(self) -> QueueStats:
        """Jobs by status, queued jobs by priority, open dead letters, and what is paused."""
        d = self.driver
        by_state = await d.count_by_state()
        by_priority = await d.count_queued_by_priority()
        return QueueStats(
            by_status={
                s: by_state.get(s, 0)
                for s in ("queued", "processing", "complete", "failed", "cancelled")
            },
            queued_by_priority={p: by_priority.get(i, 0) for i, p in enumerate(PRIORITIES)},
            dead_letters=await d.count_dead_letters(),
            paused=(await self.paused()).to_dict(),
        )

    # -- cancel and dead letters ---------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        """Cancel a job: a queued one never runs, a running one is interrupted.

        Raises NotFound for an unknown id and AlreadyCancelled for a job that is already
        cancelled or finished.
        """
        jid = parse_id(job_id)
        result = await self.driver.cancel_job(jid, self.clock.now_ms())
        if result == "missing":
            raise JobError.from_not_found(str(job_id))
        if result == "finished":
            record = await self.driver.get_job(jid)
            state = record.state if record else "finished"
            raise JobError(
                "AlreadyCancelled", str(job_id), message=f"job {job_id} is already {state}"
            )
        if self._runner is not None:
            self._runner.interrupt(jid)
        if result == "cancelled":
            record = await self.driver.get_job(jid)
            if record is not None:
                self.metrics.cancelled.labels(record.type, PRIORITIES[record.priority]).inc()
                if self._runner is not None:
                    self._runner.cancelled_queued(jid, record.priority)
            self._on_transition(jid, "cancelled")

    async def dead_letters(self, limit: int = 50, before: str | None = None) -> list[DeadLetter]:
        """Dead letters, newest first; page with ``before`` (a dead-letter id)."""
        check_limit(limit)
        bound = parse_id(before) if before is not None else None
        return [dead_letter_view(r) for r in await self.driver.dead_letters(limit, bound)]

    async def dead_letter(self, dlq_id: str) -> DeadLetter:
        """One dead letter; NotFound if unknown."""
        record = await self.driver.get_dead_letter(parse_id(dlq_id))
        if record is None:
            raise JobError.from_not_found(str(dlq_id))
        return dead_letter_view(record)

    async def replay(self, dlq_id: str) -> str:
        """Submit a dead letter's job again (attempts start over) and mark it replayed.

        Returns the new job's id. NotFound for an unknown id; replaying twice raises
        ``JobError(reason="Validation")`` naming the job of the first replay.
        """
        d = self.driver
        record = await d.get_dead_letter(parse_id(dlq_id))
        if record is None:
            raise JobError.from_not_found(str(dlq_id))
        now = self.clock.now_ms()
        job_id = self._ids.next()
        job = NewJob(
            id=job_id,
            type=record.type,
            payload=record.payload,
            priority=record.priority,
            key=record.key,
            shard=job_entity(job_id, record.key, self.config.shards).shard,
            dedupe_key=None,
            max_attempts=record.max_attempts,
            timeout=None,
            duration="short",
            batch_id=None,
            run_at=now,
            created_at=now,
            context=_encode_context(capture_context(self._context_vars)),
        )
        result = await d.replay(record.id, job)
        if result == "missing":
            raise JobError.from_not_found(str(dlq_id))
        if result == "already":
            again = await d.get_dead_letter(record.id)
            first = again.replay_job_id if again else None
            raise JobError.from_validation(
                None, f"dead letter {dlq_id} was already replayed as job {first}"
            )
        self.metrics.enqueued.labels(record.type, PRIORITIES[record.priority]).inc()
        if self._runner is not None:
            self._runner.offer(
                [JobRef(job.id, job.priority, job.run_at, job.key, job.shard, job.type)]
            )
        return str(job_id)

    # -- sync wrappers -------------------------------------------------------------------

    def submit_sync(self, job_type: str, payload: Any, **options: Any) -> str | list[str]:
        """Blocking ``submit``, for synchronous code (see ``with JobService(...)``)."""
        here = options.get("conn") is not None  # a connection is used in its own thread
        result: str | list[str] = self._sync(
            lambda: self.submit(job_type, payload, **options), here
        )
        return result

    def status_sync(self, job_id: str) -> JobStatusResponse:
        """Blocking ``status``."""
        return self._sync(lambda: self.status(job_id))

    def cancel_sync(self, job_id: str) -> None:
        """Blocking ``cancel``."""
        return self._sync(lambda: self.cancel(job_id))

    def replay_sync(self, dlq_id: str) -> str:
        """Blocking ``replay``."""
        return self._sync(lambda: self.replay(dlq_id))

    # -- events --------------------------------------------------------------------------

    def _on_event(self, kind: EventKind, ids: list[int]) -> None:
        if kind == "finished":
            for i in ids:
                self._wake_waiters(i)
            if self._runner is not None:
                self._runner.on_event(kind, ids)
            return
        if kind == "rescan":
            # Notifications may have been missed: every waiter reads its job's state again.
            for i in list(self._waiters):
                self._wake_waiters(i)
        if self._runner is not None:
            self._runner.on_event(kind, ids)

    def _on_transition(self, job_id: int, status: str) -> None:
        if status in FINISHED:
            self._wake_waiters(job_id)
        for listener in self._listeners:
            listener(str(job_id), status)  # type: ignore[arg-type]

    def add_listener(self, listener: Callable[[str, Status], None]) -> None:
        """Call ``listener(job_id, status)`` on the event loop after every transition that
        this process makes durable (its runner's starts, retries and finishes, and its
        cancels). Listeners must be quick and must not raise."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, Status], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _wake_waiters(self, job_id: int) -> None:
        for fut in self._waiters.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)


def _encode_context(captured: dict[str, Any] | None) -> str | None:
    if captured is None:
        return None
    return encode_json("a captured context variable", captured)
