"""PostgreSQL driver: the cluster engine.

Every batch is one statement over arrays (``unnest``), so a batch insert, a start batch and a
finish batch are one round trip each. A submitting transaction carries its own ``NOTIFY``;
every process ``LISTEN``s on one dedicated connection, a runner also on the channels of its
shards (``hearing``). Shard ownership is in ``shard_locks``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from ..._internal.tasks import cancel_and_wait
from ...clock import SYSTEM_CLOCK, Clock
from .._sql import (
    DLQ_COLUMNS,
    JOB_COLUMNS,
    dead_letter_record,
    job_record,
    list_jobs_sql,
    migrations,
)
from ..base import (
    Advanced,
    CancelResult,
    DeadLetterRecord,
    EventHandler,
    EventKind,
    JobFilter,
    JobRecord,
    JobRef,
    NewJob,
    Outcome,
    Ownership,
    ReplayResult,
    job_refs,
)
from .controls import PostgresControls, admit_starts, settle_starts
from .hearing import Hearing
from .inserts import DEDUPE_TRIES, insert_dedupe, insert_within, plain_insert
from .notifier import Notifier
from .payloads import finished_notes, submitted_notes
from .schedules import PostgresSchedules
from .shard_locks import MEMBERS_CHANNEL, ShardLocks
from .statements import (
    CHANNEL,
    DONE_CHANNEL,
    HISTORY_CANCELLED,
    INSERT_PLAIN,
    NOTIFY,
    QUEUED,
    REF,
    append,
    new_job_arrays,
)
from .steps import step

log = logging.getLogger("shardq.postgres")

#: Advisory lock key (with the xact lock's second key 0) that serialises migrations.
_MIGRATION_LOCK = 0x53514D47  # "SQMG"
#: Notifications whose body is a JSON array of ids (jobs, or shards for "schedules"; none
#: for "controls").
_LISTED: dict[str, EventKind] = {"f": "finished", "c": "cancel", "t": "schedules", "l": "controls"}
#: Bounds of the in-memory bookkeeping of notifications.
_MAX_TRACKED = 100_000
#: Jobs inserted (beyond the table's size at the last analysis) before it is analysed again.
_ANALYZE_AFTER = 1_000

# What says the server (or the client encoding for it) refused the data given, as opposed to
# a connection, a server restart or a conflict that the same call may get past later.
# asyncpg's client-side DataError is a ValueError.
_REFUSED = (
    ValueError,
    TypeError,
    OverflowError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool connections never change session state (no LISTEN, SET or session locks), so
    returning one to the pool needs no reset query: a round trip saved per operation."""


class PostgresDriver:
    """The cluster storage engine on PostgreSQL (asyncpg).

    ``runner`` says whether this process runs jobs: a runner hears of submitted jobs of the
    shards it owns; every process hears of finished jobs (``announces_finished``).
    """

    announces_finished = True

    def __init__(
        self,
        url: str,
        *,
        runner: bool,
        pool_size: int = 10,
        heartbeat: float = 1.0,
        handover_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = url
        self._clock = clock
        self.runner = runner
        #: Tags this process's sessions in ``pg_stat_activity`` (``application_name``).
        self.tag = f"shardq-{uuid.uuid4().hex[:12]}"
        self._pool_size = pool_size
        self._heartbeat = heartbeat
        self._handover_timeout = handover_timeout
        self._pool: asyncpg.Pool | None = None
        self._notifier: Notifier | None = None
        self._hearing = Hearing(lambda: self.pool, clock)
        self._handler: EventHandler | None = None
        self._locks: ShardLocks | None = None
        # Jobs this process inserted itself: a local runner is handed them directly, so
        # their notification is not needed here.
        self._own: set[int] = set()
        # Refs heard in notifications and not yet asked for: load_refs answers from here
        # without a round trip.
        self._heard: dict[int, JobRef] = {}
        # Jobs this runner started whose outcome has not been written: a shard hand-over
        # waits for those of its shard (looked up by id, not by scanning the shard).
        self._running: set[int] = set()
        # Statements are prepared once per connection and their plans are cached. A plan
        # made while the table was small (a sequential scan) stays cached as the table grows,
        # unless the table is analysed; autovacuum does that, but may be off or late. So a
        # process analyses the tables each time its own inserts have doubled them.
        self._rows_analysed = 0.0
        self._inserted = 0
        self._analysing: asyncio.Task[None] | None = None
        self.schedules = PostgresSchedules(lambda: self.pool)
        self.controls = PostgresControls(lambda: self.pool)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def _settings(self) -> dict[str, str]:
        return {"application_name": self.tag}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            server_settings=self._settings,
            reset=_keep_session,
        )
        try:
            await self.migrate()
            self._rows_analysed = max(
                0.0,
                await self.pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'jobs'"),
            )
            self._notifier = Notifier(
                self.url,
                CHANNEL,
                self._on_payload,
                self._on_reconnect,
                also={MEMBERS_CHANNEL: self._hearing.members_changed},
                server_settings=self._settings,
            )
            self._hearing.notifier = self._notifier
            await self._notifier.start()
            await self._hearing.refresh()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._analysing is not None:
            await cancel_and_wait(self._analysing)
            self._analysing = None
        await self._hearing.close()
        if self._notifier is not None:
            await self._notifier.close()
            self._notifier = None
            self._hearing.notifier = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception as e:
                # A server restarting or gone: its connections are dropped instead.
                log.warning("closing the pool failed (%r); its connections are dropped", e)
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool; raises if the driver is not open."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL driver is not open")
        return self._pool

    @property
    def by_shard(self) -> bool:
        """Whether this process announces submits on their shards' channels (``hearing``)."""
        return self._hearing.by_shard

    @property
    def notifier(self) -> Notifier | None:
        """The listener of this process, while open."""
        return self._notifier

    async def migrate(self) -> list[int]:
        async with self.pool.acquire() as c, c.transaction():
            # Concurrent starters wait here; the first applies, the rest find nothing to do.
            await c.execute("SELECT pg_advisory_xact_lock($1, 0)", _MIGRATION_LOCK)
            await c.execute(
                "CREATE TABLE IF NOT EXISTS shardq_migrations"
                " (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            done = {r[0] for r in await c.fetch("SELECT version FROM shardq_migrations")}
            applied = []
            for version, sql in migrations("shardq.drivers.postgres"):
                if version in done:
                    continue
                await c.execute(sql)
                await c.execute(
                    "INSERT INTO shardq_migrations VALUES"
                    " ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                    version,
                )
                applied.append(version)
            return applied

    # -- notifications -------------------------------------------------------------------

    def unreachable(self, error: BaseException) -> bool:
        return not isinstance(error, _REFUSED)

    def listen(self, handler: EventHandler) -> None:
        self._handler = handler

    async def keep_watching(self) -> None:
        await self._hearing.watch_finished()

    def ownership(self, token: str, shards: int) -> Ownership:
        self._locks = ShardLocks(
            self.url,
            token,
            shards,
            app=self.tag,
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat=self._heartbeat,
            handover_timeout=self._handover_timeout,
            server_settings=self._settings,
            running=lambda: self._running,
            clock=self._clock,
            gained=self._hearing.gained,
            released=self._hearing.lost,
        )
        return self._locks

    def _on_reconnect(self) -> None:
        self._own.clear()
        self._heard.clear()
        self._hearing.members_changed()
        if self._handler is not None:
            self._handler("rescan", [])

    def _on_payload(self, payload: str) -> None:
        handler = self._handler
        if handler is None or not payload:
            return
        kind, body = payload[0], payload[1:]
        if kind in _LISTED:
            handler(_LISTED[kind], [int(i) for i in json.loads(body)])
        elif kind == "r":
            if self.runner:
                handler("rescan", [])
        elif kind == "s" and self.runner:
            locks = self._locks
            owned = locks.owned() if locks is not None else None
            ids = []
            for job_id, shard, priority, run_at, key, job_type in json.loads(body):
                if job_id in self._own:
                    self._own.discard(job_id)
                    continue
                if owned is not None and shard not in owned:
                    continue
                if len(self._heard) >= _MAX_TRACKED:
                    self._heard.clear()
                self._heard[job_id] = JobRef(job_id, priority, run_at, key, shard, job_type)
                ids.append(job_id)
            if ids:
                handler("submitted", ids)

    def _count_inserted(self, n: int) -> None:
        self._inserted += n
        if self._inserted >= _ANALYZE_AFTER + self._rows_analysed and self._analysing is None:
            self._analysing = asyncio.get_running_loop().create_task(self._analyse())

    async def _analyse(self) -> None:
        """Refresh the planner's statistics of the job tables (cached plans are remade)."""
        try:
            async with self.pool.acquire() as c:
                await c.execute("ANALYZE jobs, job_queue")
                rows = await c.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'jobs'")
            self._rows_analysed = max(0.0, rows)
            self._inserted = 0
        except Exception as e:
            log.warning("analysing the job tables failed (%r); the next inserts retry", e)
        finally:
            self._analysing = None

    def _track_own(self, jobs: Sequence[NewJob]) -> None:
        # Only jobs of the shards this runner serves: it hears no others (or drops them).
        locks = self._locks
        if self.runner and locks is not None:
            owned = locks.owned()
            ids = [j.id for j in jobs if owned is None or j.shard in owned]
            if len(self._own) + len(ids) > _MAX_TRACKED:
                self._own.clear()
            self._own.update(ids)

    # -- submit --------------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[int, bool]]:
        if not jobs:
            return []
        ids = [j.id for j in jobs]
        if all(j.dedupe_key is None for j in jobs):
            sql, args = plain_insert(jobs, by_shard=self._hearing.by_shard)
            self._track_own(jobs)
            try:
                await self.pool.execute(sql, *args)
            except BaseException:
                self._own.difference_update(ids)
                raise
            self._count_inserted(len(jobs))
            return [(i, False) for i in ids]
        arrays = new_job_arrays(jobs)
        for _ in range(DEDUPE_TRIES):
            result = await self._insert_dedupe(jobs, arrays)
            if result is not None:
                self._count_inserted(sum(1 for _, duplicate in result if not duplicate))
                return result
        raise RuntimeError("dedupe holders kept disappearing while inserting; try again")

    async def _insert_dedupe(
        self, jobs: Sequence[NewJob], arrays: list[list[Any]]
    ) -> list[tuple[int, bool]] | None:
        self._track_own(jobs)
        try:
            async with self.pool.acquire() as c, c.transaction():
                out = await insert_dedupe(c, jobs, arrays, by_shard=self._hearing.by_shard)
                if out is None:
                    raise _Retry  # rolls the transaction back
        except _Retry:
            self._own.difference_update(j.id for j in jobs)
            return None
        except BaseException:
            self._own.difference_update(j.id for j in jobs)
            raise
        self._own.difference_update(j.id for j, (_, dup) in zip(jobs, out, strict=True) if dup)
        return out

    async def insert_jobs_within(
        self, conn: object, jobs: Sequence[NewJob]
    ) -> list[tuple[int, bool]]:
        # Not tracked as this process's own: a local runner hears of them at the commit.
        result = await insert_within(conn, jobs, by_shard=self._hearing.by_shard)
        self._count_inserted(sum(1 for _, duplicate in result if not duplicate))
        return result

    # -- runner reads --------------------------------------------------------------------

    async def load_refs(self, ids: Collection[int]) -> list[JobRef]:
        out: list[JobRef] = []
        rest: list[int] = []
        for i in ids:
            ref = self._heard.pop(i, None)
            if ref is not None:
                out.append(ref)
            else:
                rest.append(i)
        if rest:
            rows = await self.pool.fetch(
                f"SELECT {REF} FROM jobs WHERE state = 'queued' AND id = ANY($1::bigint[])",
                rest,
            )
            out += job_refs(rows)
        return out

    async def load_ready(
        self,
        shards: Collection[int] | None,
        priority: int,
        now: int,
        limit: int,
        after: int = 0,
        exclude: Collection[str] = (),
    ) -> list[JobRef]:
        if shards is not None and not shards:
            return []
        # "j.id > $2" too: else the join walks jobs from its first id (finished ones
        # included) for every chunk of a reload.
        rows = await self.pool.fetch(
            f"{QUEUED} AND q.key IS NULL AND q.priority = $1 AND q.id > $2 AND j.id > $2"
            " AND q.run_at <= $3 AND ($4::int[] IS NULL OR q.shard = ANY($4::int[]))"
            " AND ($6::text[] IS NULL OR j.type <> ALL($6::text[])) ORDER BY q.id LIMIT $5",
            priority,
            after,
            now,
            None if shards is None else list(shards),
            limit,
            sorted(exclude) or None,
        )
        return job_refs(rows)

    async def load_delayed(
        self, shards: Collection[int] | None, now: int, limit: int
    ) -> list[JobRef]:
        if shards is not None and not shards:
            return []
        rows = await self.pool.fetch(
            f"{QUEUED} AND q.key IS NULL AND q.run_at > $1"
            " AND ($2::int[] IS NULL OR q.shard = ANY($2::int[])) ORDER BY q.run_at LIMIT $3",
            now,
            None if shards is None else list(shards),
            limit,
        )
        return job_refs(rows)

    async def load_keys(self, shards: Collection[int] | None, limit: int) -> list[str]:
        if shards is not None and not shards:
            return []
        rows = await self.pool.fetch(
            "SELECT DISTINCT q.key FROM job_queue q JOIN jobs j ON j.id = q.id"
            " WHERE j.state = 'queued' AND q.key IS NOT NULL"
            " AND ($1::int[] IS NULL OR q.shard = ANY($1::int[])) LIMIT $2",
            None if shards is None else list(shards),
            limit,
        )
        return [r[0] for r in rows]

    async def load_mailbox(self, key: str, limit: int) -> list[JobRef]:
        rows = await self.pool.fetch(
            f"{QUEUED} AND q.key = $1 ORDER BY q.id LIMIT $2",
            key,
            limit,
        )
        return job_refs(rows)

    # -- runner writes -------------------------------------------------------------------

    async def advance(
        self,
        outcomes: Sequence[Outcome],
        start: Sequence[int],
        owner: str,
        now: int,
        limited: Collection[str] = (),
    ) -> Advanced:
        if limited and start:
            async with self.pool.acquire() as c, c.transaction():
                admission = await admit_starts(c, outcomes, start, owner, now, limited)
                done = await step(c, outcomes, admission.start, owner, now)
                await settle_starts(c, admission, done.started)
            done.held = admission.held
        else:
            done = await step(self.pool, outcomes, start, owner, now)
        if outcomes:
            # Every outcome ends its attempt, written or fenced off.
            self._running.difference_update(o.id for o in outcomes)
            if self._locks is not None:
                self._locks.jobs_finished()
        self._running.update(s.id for s in done.started)
        return done

    async def recover(
        self, shards: Collection[int] | None, now: int, keep_owner: str | None = None
    ) -> int:
        if shards is not None and not shards:
            return 0
        cancelled, requeued = await self._interrupted(
            "id IN (SELECT id FROM job_queue WHERE $1::int[] IS NULL OR shard = ANY($1::int[]))"
            " AND ($5::text IS NULL OR owner IS DISTINCT FROM $5::text)",
            (None if shards is None else list(shards), keep_owner),
            now,
            "interrupted: the runner stopped during the attempt",
        )
        return cancelled + len(requeued)

    async def undo_starts(self, ids: Collection[int], owner: str, now: int) -> list[JobRef]:
        if not ids:
            return []
        _, requeued = await self._interrupted(
            "id = ANY($1::bigint[]) AND owner = $5",
            (list(ids), owner),
            now,
            "its start was not confirmed (the connection was lost); queued again",
        )
        return requeued

    async def _interrupted(
        self, scope: str, args: tuple[Any, ...], now: int, reason: str
    ) -> tuple[int, list[JobRef]]:
        """Move the processing jobs within ``scope`` (SQL over ``$1`` and ``$5``.., bound to
        ``args``) out of processing: to cancelled if their cancel was requested (announced
        as finished), else back to the queue. Returns how many were cancelled and the refs
        of those queued again."""
        first, rest = args[0], args[1:]
        async with self.pool.acquire() as c, c.transaction():
            cancelled = await c.fetch(
                "WITH u AS (UPDATE jobs SET state = 'cancelled', finished_at = $2,"
                f" updated_at = $2, owner = NULL, {append('$3::text', '$2::bigint', '$4::text')}"
                f" WHERE state = 'processing' AND cancel_requested AND {scope} RETURNING id),"
                " d AS (DELETE FROM job_queue q USING u WHERE q.id = u.id) SELECT id FROM u",
                first,
                now,
                "cancelled",
                "cancelled while its runner was down",
                *rest,
            )
            requeued = await c.fetch(
                "WITH u AS (UPDATE jobs SET state = 'queued', run_at = $2, updated_at = $2,"
                f" owner = NULL, {append('$3::text', '$2::bigint', '$4::text')}"
                f" WHERE state = 'processing' AND {scope} RETURNING {REF}),"
                " q AS (UPDATE job_queue q SET run_at = $2 FROM u WHERE q.id = u.id)"
                " SELECT * FROM u",
                first,
                now,
                "queued",
                reason,
                *rest,
            )
            if cancelled:
                await c.execute(NOTIFY, *finished_notes([r[0] for r in cancelled]))
        return len(cancelled), job_refs(requeued)

    # -- reads for everyone --------------------------------------------------------------

    async def get_job(self, job_id: int) -> JobRecord | None:
        row = await self.pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return job_record(row) if row else None

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        sql, args = list_jobs_sql(flt, lambda n: f"${n}")
        return [job_record(r) for r in await self.pool.fetch(sql, *args)]

    async def cancel_job(self, job_id: int, now: int) -> CancelResult:
        # A queued job is cancelled at once (and announced as finished); a running one is
        # flagged and its owner told. Either way in one statement with its notification.
        row = await self.pool.fetchrow(
            "WITH u AS (UPDATE jobs SET"
            " state = CASE state WHEN 'queued' THEN 'cancelled' ELSE state END,"
            " cancel_requested = cancel_requested OR state = 'processing',"
            " finished_at = CASE state WHEN 'queued' THEN $2 ELSE finished_at END,"
            " updated_at = CASE state WHEN 'queued' THEN $2 ELSE updated_at END,"
            " owner = CASE state WHEN 'queued' THEN NULL ELSE owner END,"
            " history = CASE state WHEN 'queued' THEN"
            f" {HISTORY_CANCELLED} ELSE history END"
            " WHERE id = $1 AND state IN ('queued', 'processing') RETURNING state),"
            " d AS (DELETE FROM job_queue WHERE id = $1"
            " AND EXISTS (SELECT 1 FROM u WHERE u.state = 'cancelled'))"
            " SELECT u.state, CASE u.state"
            f" WHEN 'cancelled' THEN pg_notify('{DONE_CHANNEL}', 'f' || json_build_array($1::bigint)::text)"
            f" ELSE pg_notify('{CHANNEL}', 'c' || json_build_array($1::bigint)::text) END"
            " FROM u",
            job_id,
            now,
        )
        if row is not None:
            return "cancelled" if row[0] == "cancelled" else "requested"
        state = await self.pool.fetchval("SELECT state FROM jobs WHERE id = $1", job_id)
        return "missing" if state is None else "finished"

    async def dead_letters(
        self, limit: int, before_id: int | None = None
    ) -> list[DeadLetterRecord]:
        rows = await self.pool.fetch(
            f"SELECT {DLQ_COLUMNS} FROM job_dlq WHERE ($1::bigint IS NULL OR id < $1)"
            " ORDER BY id DESC LIMIT $2",
            before_id,
            limit,
        )
        return [dead_letter_record(r) for r in rows]

    async def get_dead_letter(self, dlq_id: int) -> DeadLetterRecord | None:
        row = await self.pool.fetchrow(f"SELECT {DLQ_COLUMNS} FROM job_dlq WHERE id = $1", dlq_id)
        return dead_letter_record(row) if row else None

    async def replay(self, dlq_id: int, job: NewJob) -> ReplayResult:
        self._track_own([job])
        try:
            async with self.pool.acquire() as c, c.transaction():
                row = await c.fetchrow(
                    "SELECT replayed_at FROM job_dlq WHERE id = $1 FOR UPDATE", dlq_id
                )
                if row is None:
                    result: ReplayResult = "missing"
                elif row[0] is not None:
                    result = "already"
                else:
                    notes = submitted_notes([job], by_shard=self._hearing.by_shard)
                    await c.execute(INSERT_PLAIN, *new_job_arrays([job]), *notes)
                    await c.execute(
                        "UPDATE job_dlq SET replayed_at = $1, replay_job_id = $2 WHERE id = $3",
                        job.created_at,
                        job.id,
                        dlq_id,
                    )
                    result = "replayed"
        except BaseException:
            self._own.discard(job.id)
            raise
        if result != "replayed":
            self._own.discard(job.id)
        return result

    async def prune(self, finished_before: int, dlq_before: int, limit: int) -> int:
        async with self.pool.acquire() as c, c.transaction():
            jobs = await c.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE created_at < $1"
                " AND finished_at < $1 ORDER BY created_at LIMIT $2)",
                finished_before,
                limit,
            )
            dlq = await c.execute(
                "DELETE FROM job_dlq WHERE id IN"
                " (SELECT id FROM job_dlq WHERE failed_at < $1 LIMIT $2)",
                dlq_before,
                limit,
            )
        return int(jobs.split()[-1]) + int(dlq.split()[-1])

    async def count_by_state(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT state, count(*) FROM jobs GROUP BY state")
        return {r[0]: r[1] for r in rows}

    async def count_queued_by_priority(self) -> dict[int, int]:
        rows = await self.pool.fetch(
            "SELECT q.priority, count(*) FROM job_queue q JOIN jobs j ON j.id = q.id"
            " WHERE j.state = 'queued' GROUP BY q.priority"
        )
        return {r[0]: r[1] for r in rows}

    async def count_dead_letters(self) -> int:
        n = await self.pool.fetchval("SELECT count(*) FROM job_dlq WHERE replayed_at IS NULL")
        return int(n)

    async def advertise_handlers(self, types: Sequence[str], runner: str, now: int) -> None:
        await self.pool.execute(
            "INSERT INTO shardq_handlers (type, runner, seen_at)"
            " SELECT t, $2, $3 FROM unnest($1::text[]) t ON CONFLICT (type) DO UPDATE"
            " SET runner = excluded.runner, seen_at = excluded.seen_at",
            sorted(types),
            runner,
            now,
        )

    async def handled_since(self, job_type: str, since: int) -> bool:
        found = await self.pool.fetchval(
            "SELECT true FROM shardq_handlers WHERE type = $1 AND seen_at >= $2", job_type, since
        )
        return bool(found)


class _Retry(Exception):
    """Internal: run the dedupe insert again."""
