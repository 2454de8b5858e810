"""The storage driver interface: the domain operations shardq needs from a database.

Drivers speak in rows of plain values (ids as ints, times as Unix milliseconds, JSON as text);
the JobService lifts them into the public models. A driver owns its SQL, its migrations and
its notifications (how a commit in one process wakes the runner that owns the work).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Literal, NamedTuple, Protocol

#: Stored job states; the same words as the public statuses.
QUEUED, PROCESSING, COMPLETE, FAILED, CANCELLED = (
    "queued",
    "processing",
    "complete",
    "failed",
    "cancelled",
)


@dataclass(slots=True)
class NewJob:
    """A job to insert, fully validated and encoded."""

    id: int
    type: str
    payload: str
    priority: int
    key: str | None
    shard: int
    dedupe_key: str | None
    max_attempts: int
    timeout: float | None
    duration: str
    batch_id: str | None
    run_at: int
    created_at: int
    context: str | None


class JobRef(NamedTuple):
    """What a runner needs to schedule a queued job, without its payload.

    A tuple of plain values: a runner holds tens of thousands of them. (Being a subclass of
    tuple, each one stays tracked by the garbage collector, which untracks exact tuples
    only: a full collection walks every one.)
    """

    id: int
    priority: int
    run_at: int
    key: str | None
    shard: int
    type: str


def job_refs(rows: Iterable[Iterable[Any]]) -> list[JobRef]:
    """``JobRef``s of rows holding (id, priority, run_at, key, shard, type), in that order.

    Built by ``tuple.__new__`` directly: the named constructor costs three times as much, and
    a runner refilling its window converts thousands of rows while its event loop waits.
    """
    return list(map(tuple.__new__, repeat(JobRef), rows))


@dataclass(slots=True)
class StartedJob:
    """A job a runner has just moved to ``processing``, with what its handler needs."""

    id: int
    type: str
    payload: str
    priority: int
    key: str | None
    shard: int
    attempts: int
    max_attempts: int
    timeout: float | None
    duration: str
    run_at: int
    created_at: int
    context: str | None


#: How an attempt ended; "snooze" and "throttle" put the job off without using the attempt
#: (their history entries say ``snoozed`` and ``throttled``).
OutcomeKind = Literal["complete", "retry", "snooze", "throttle", "failed", "cancelled"]


@dataclass(slots=True)
class Outcome:
    """The end of one attempt, to be written only if the attempt still owns the job."""

    id: int
    attempt: int
    kind: OutcomeKind
    at: int
    result: str | None = None
    error: str | None = None
    reason: str | None = None
    run_at: int | None = None
    dlq_id: int | None = None


@dataclass(slots=True)
class Advanced:
    """What one ``Driver.advance`` wrote: the outcomes the fence let in, the jobs started."""

    written: list[int]
    started: list[StartedJob]
    #: Limited types some of whose starts were refused, each with when to ask again: a
    #: Unix ms (a rate's next token, a throttle's end) or 0 (when one of its slots frees,
    #: or it is resumed).
    held: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``count`` starts per ``per`` seconds, ``burst`` more at once after a quiet spell."""

    count: int
    per: float
    burst: int = 0


@dataclass(frozen=True, slots=True)
class LimitRecord:
    """The stored controls of one job type (None: no such limit)."""

    job_type: str
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate: RateSpec | None = None
    key_rate: RateSpec | None = None
    paused: bool = False
    #: Starts of the type wait until this Unix ms (a handler raised ``Throttled``).
    throttled_until: int | None = None


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """What one limited type uses now: jobs holding its slots, and its rate's tokens."""

    running: int
    tokens: float | None


@dataclass(slots=True)
class JobRecord:
    """Everything stored about one job."""

    id: int
    type: str
    payload: str
    priority: int
    state: str
    key: str | None
    shard: int
    dedupe_key: str | None
    max_attempts: int
    attempts: int
    timeout: float | None
    duration: str
    batch_id: str | None
    run_at: int
    created_at: int
    finished_at: int | None
    result: str | None
    error: str | None
    history: list[tuple[str, int, str | None]]
    #: The schedule that submitted the job, and the tick (ms) it was for.
    schedule: str | None = None
    tick: int | None = None


@dataclass(slots=True)
class DeadLetterRecord:
    """A row of ``job_dlq``."""

    id: int
    job_id: int
    type: str
    payload: str
    priority: int
    key: str | None
    reason: str
    error: str | None
    attempts: int
    max_attempts: int
    created_at: int
    failed_at: int
    replayed_at: int | None
    replay_job_id: int | None


CancelResult = Literal["cancelled", "requested", "finished", "missing"]
ReplayResult = Literal["replayed", "already", "missing"]
EventKind = Literal["submitted", "cancel", "finished", "rescan", "schedules", "controls"]
#: Called by a driver's listener for each notification from another process.
EventHandler = Callable[[EventKind, list[int]], None]


@dataclass(slots=True)
class JobFilter:
    """Which jobs to list: every field narrows the selection when set."""

    state: str | None = None
    type: str | None = None
    priority: int | None = None
    key: str | None = None
    created_after: int | None = None
    created_before: int | None = None
    limit: int = 50
    before_id: int | None = None


@dataclass(slots=True)
class ScheduleRecord:
    """A row of ``schedules``: a schedule's spec (``payload`` as JSON text, ``priority`` as
    its rank), the shard its name hashes to, and how far its ticks are handled."""

    name: str
    shard: int
    job_type: str
    cron: str | None
    every_ms: int | None
    tz: str
    payload: str
    priority: int
    misfire: str
    overlap: str
    key: str | None
    declared: bool = False
    paused: bool = False
    #: Every tick up to here is handled (fired, or dropped by the misfire policy).
    after_ms: int = 0
    last_tick: int | None = None
    last_job_id: int | None = None


@dataclass(slots=True)
class FiredTick:
    """A tick a runner handled: every tick of ``name`` through ``through`` is done, and
    ``tick`` (if set) submitted the job ``job_id``."""

    name: str
    through: int
    tick: int | None = None
    job_id: int | None = None


class ScheduleStore(Protocol):
    """Where an engine keeps schedules. A change wakes the owner of the schedule's shard
    (event ``schedules`` with the shard numbers), as a submit wakes a job's owner."""

    async def put(
        self, schedules: Sequence[ScheduleRecord], now: int, *, declared_only: bool = False
    ) -> list[str]:
        """Add or change ``schedules`` in one transaction; the names added or changed. A new
        schedule's ticks start after ``now``, and so do a changed one's when its timing (cron,
        interval, zone) changed. With ``declared_only``, ``schedules`` are every schedule
        declared in code: declared ones not among them are removed."""

    async def remove(self, name: str) -> bool:
        """Remove a schedule; False if there was none of that name."""

    async def set_paused(self, name: str, paused: bool, now: int) -> bool:
        """Pause or resume a schedule (a paused one fires no tick, and once resumed goes on
        from its next tick after ``now``: the ticks of the pause are not misfires); False if
        there is none of that name."""

    async def get(self, name: str) -> ScheduleRecord | None:
        """One schedule, or None."""

    async def load(self, shards: Collection[int] | None) -> list[ScheduleRecord]:
        """The schedules of ``shards`` (None: all), by name."""

    async def fired(self, ticks: Sequence[FiredTick]) -> None:
        """Record handled ticks in one transaction: each schedule's ``after_ms`` moves up to
        ``through`` (never back), and a tick's job records its schedule and tick."""

    async def unfinished(self, job_ids: Collection[int]) -> set[int]:
        """The jobs among ``job_ids`` that are queued or processing."""


class ControlStore(Protocol):
    """Where an engine keeps flow controls: per-type limits, pauses and throttles, and
    paused keys. Every write announces ``controls`` to the runners (as a submit does)."""

    async def limits(self) -> list[LimitRecord]:
        """Every type's stored controls, by type."""

    async def put_limits(self, records: Sequence[LimitRecord], now: int) -> None:
        """Set the limits (concurrency, key_concurrency, rate, key_rate) of each record's
        type in one transaction, keeping its pause, throttle and the rate's tokens (a
        changed rate starts full)."""

    async def set_paused(self, job_type: str, paused: bool, now: int) -> None:
        """Pause or resume the type's starts."""

    async def throttle(self, job_type: str, until: int, now: int) -> None:
        """Hold the type's starts until Unix ms ``until`` (never shortening a longer hold)."""

    async def paused_keys(self) -> list[str]:
        """The keys paused, sorted."""

    async def set_key_paused(self, key: str, paused: bool, now: int) -> None:
        """Pause or resume one key's starts."""

    async def usage(self, job_types: Collection[str], now: int) -> dict[str, LimitUsage]:
        """For each of ``job_types`` that has stored controls: the jobs holding its slots
        now (started under a concurrency limit and still processing) and its rate's tokens
        as of ``now`` (None without a rate)."""


class Ownership(Protocol):
    """Which shards this runner may serve, and the fencing token its writes carry."""

    token: str

    def owned(self) -> Collection[int] | None:
        """The shards owned now; None means every shard."""

    async def start(self, on_change: Callable[[set[int], set[int]], Awaitable[None]]) -> None:
        """Begin owning shards; ``on_change(acquired, lost)`` is awaited on every change."""

    async def stop(self) -> None:
        """Release every shard."""


class AllShards:
    """The embedded deployment: one runner owns every shard."""

    def __init__(self, token: str) -> None:
        self.token = token

    def owned(self) -> Collection[int] | None:
        return None

    async def start(self, on_change: Callable[[set[int], set[int]], Awaitable[None]]) -> None:
        return None

    async def stop(self) -> None:
        return None


class Driver(Protocol):
    """A storage engine. Every method is atomic; none runs user code.

    ``shards`` arguments restrict an operation to the shards a runner owns; ``None`` means all
    (the embedded engine owns every shard).
    """

    url: str
    #: True when every process hears of every finished job (so waits need no re-reads).
    announces_finished: bool

    @property
    def schedules(self) -> ScheduleStore:
        """Where this engine keeps schedules."""

    @property
    def controls(self) -> ControlStore:
        """Where this engine keeps limits, pauses and throttles."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Release every connection and listener."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[int, bool]]:
        """Insert ``jobs`` in one transaction and wake their owners.

        Returns, per job, the id that holds it and whether it was a duplicate: a job whose
        ``dedupe_key`` is already held by a retained job is not inserted and the holder's id is
        returned instead (also for duplicates within ``jobs``).
        """

    async def insert_jobs_within(
        self, conn: object, jobs: Sequence[NewJob]
    ) -> list[tuple[int, bool]]:
        """``insert_jobs``, but in the caller's transaction open on ``conn`` (a connection
        of this engine's kind to the same database), in the calling thread: the jobs exist
        if and only if that transaction commits, and their owners are woken once it has.
        A connection of another kind, or one with no transaction open, raises
        ``JobError(reason="Validation")`` before anything is written."""

    async def load_refs(self, ids: Collection[int]) -> list[JobRef]:
        """The queued jobs among ``ids``, as far as this process knows: an engine may answer
        from the announcements it heard instead of reading storage, so a job finished or
        cancelled since may be among them (starting it then starts nothing)."""

    async def load_ready(
        self,
        shards: Collection[int] | None,
        priority: int,
        now: int,
        limit: int,
        after: int = 0,
        exclude: Collection[str] = (),
    ) -> list[JobRef]:
        """Queued unkeyed jobs of ``priority`` due by ``now`` with ids above ``after``,
        oldest id first, none of a type in ``exclude`` (types held back)."""

    async def load_delayed(
        self, shards: Collection[int] | None, now: int, limit: int
    ) -> list[JobRef]:
        """Queued unkeyed jobs due after ``now``, soonest first."""

    async def load_keys(self, shards: Collection[int] | None, limit: int) -> list[str]:
        """Keys that have queued jobs."""

    async def load_mailbox(self, key: str, limit: int) -> list[JobRef]:
        """Queued jobs of ``key``, in submit (id) order."""

    async def advance(
        self,
        outcomes: Sequence[Outcome],
        start: Sequence[int],
        owner: str,
        now: int,
        limited: Collection[str] = (),
    ) -> Advanced:
        """One step of a runner, in one transaction: write ``outcomes``, each only if
        ``owner`` still runs that attempt (a ``failed`` one also inserts a dead letter), and
        move the queued jobs among ``start`` to processing under ``owner``. ``start`` names
        no job whose outcome is among ``outcomes`` (a step never starts the job it
        finishes: the runner places a retried job only once its outcome is written).

        The starts of the types in ``limited`` are admitted against their stored controls
        first, cluster-wide and in ``start``'s order: none while the type is paused or
        throttled, at most its concurrency less the jobs holding its slots, at most its
        rate's whole tokens (which they use up). The refused stay queued and their types
        are in ``Advanced.held``. Types not in ``limited`` are not looked up.

        Either part may be empty. Finished jobs are announced to waiting processes.
        """

    async def recover(
        self, shards: Collection[int] | None, now: int, keep_owner: str | None = None
    ) -> int:
        """Return interrupted (processing) jobs of ``shards`` to the queue; a job whose
        cancel was requested becomes cancelled instead. Jobs that ``keep_owner`` runs are
        left alone (a runner recovering shards it just acquired may already have started
        some of their jobs). Returns how many were touched."""

    async def undo_starts(self, ids: Collection[int], owner: str, now: int) -> list[JobRef]:
        """Undo starts whose commit was not confirmed (the call that wrote them failed, and
        may or may not have committed): each job among ``ids`` that ``owner`` holds as
        processing goes back to the queue (cancelled, if its cancel was requested). Returns
        the refs of the jobs queued again."""

    async def get_job(self, job_id: int) -> JobRecord | None:
        """One job, or None."""

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        """Jobs matching ``flt``, newest first."""

    async def cancel_job(self, job_id: int, now: int) -> CancelResult:
        """Cancel a queued job at once, or flag a running one and wake its owner."""

    async def dead_letters(
        self, limit: int, before_id: int | None = None
    ) -> list[DeadLetterRecord]:
        """Dead letters, newest first."""

    async def get_dead_letter(self, dlq_id: int) -> DeadLetterRecord | None:
        """One dead letter, or None."""

    async def replay(self, dlq_id: int, job: NewJob) -> ReplayResult:
        """Insert ``job`` and mark the dead letter replayed, in one transaction."""

    async def prune(self, finished_before: int, dlq_before: int, limit: int) -> int:
        """Delete up to ``limit`` finished jobs and dead letters older than the given times."""

    async def count_by_state(self) -> dict[str, int]:
        """Jobs per state."""

    async def count_queued_by_priority(self) -> dict[int, int]:
        """Queued jobs per priority."""

    async def count_dead_letters(self) -> int:
        """Dead letters not yet replayed."""

    async def advertise_handlers(self, types: Sequence[str], runner: str, now: int) -> None:
        """Record that ``runner`` has handlers for ``types`` at ``now``."""

    async def handled_since(self, job_type: str, since: int) -> bool:
        """True if some runner has advertised a handler for ``job_type`` at ``since`` or
        later."""

    def unreachable(self, error: BaseException) -> bool:
        """True when ``error`` (raised by a call of this driver) says storage could not be
        reached or answered too late, so the same call may succeed later; False when
        storage refused what it was given."""

    def listen(self, handler: EventHandler) -> None:
        """Deliver other processes' notifications to ``handler`` (on the event loop): of a
        runner, the jobs submitted to the shards it owns (once its ``ownership`` started),
        rescans, cancels, schedule and control changes; of every process, finished jobs
        where the engine ``announces_finished``."""

    async def keep_watching(self) -> None:
        """Hear finished-job announcements from when this returns, for a while (renewed by
        each call: waits call it each time they look; cheap once subscribed, idempotent)."""

    def ownership(self, token: str, shards: int) -> Ownership:
        """How a runner on this engine comes to own shards, fencing its writes with ``token``."""
