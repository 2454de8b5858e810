"""Flow controls on PostgreSQL: per-type limits, pauses and throttles (``shardq_controls``),
paused keys, and the admission of a step's starts against them.

Every write notifies the runners, inside its transaction (``l[]`` on the jobs channel, heard
as ``controls``). An admission locks the controls rows of the types it admits, in type
order: that serialises the admissions of a type across runners. It counts the type's slots
only once it holds the lock, in a statement of its own: under READ COMMITTED a statement
sees what was committed before it began, so a count made by the locking statement would
miss the starts of the runner whose commit it waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .._sql import (
    GATE_COLUMNS,
    LIMIT_COLUMNS,
    LIMIT_SPEC,
    Admission,
    admit,
    gate,
    latest_limits,
    limit_record,
    limit_values,
    usage,
)
from ..base import LimitRecord, LimitUsage, Outcome, StartedJob
from .statements import CHANNEL

#: The payload of the notification announcing a change of controls.
NOTICE = "l[]"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', '{NOTICE}')"
_TYPES = ("text", "int", "int", "int", "float8", "int", "int", "float8", "int")
_UNCHANGED_RATE = (
    "(c.rate_count, c.rate_per, c.rate_burst)"
    " IS NOT DISTINCT FROM (excluded.rate_count, excluded.rate_per, excluded.rate_burst)"
)
# A new or changed rate starts full; a rate removed takes its bucket with it.
_PUT = (
    f"INSERT INTO shardq_controls AS c ({', '.join(LIMIT_SPEC)}, tokens, tokens_at, updated_at)"
    " SELECT t.*, t.rate_burst + 1, CASE WHEN t.rate_count IS NULL THEN NULL ELSE $10::bigint END, $10::bigint"
    " FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1))
    + f") AS t({', '.join(LIMIT_SPEC)}) ORDER BY t.type"
    " ON CONFLICT (type) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in LIMIT_SPEC[1:])
    + f", tokens = CASE WHEN {_UNCHANGED_RATE} THEN c.tokens ELSE excluded.tokens END,"
    f" tokens_at = CASE WHEN {_UNCHANGED_RATE} THEN c.tokens_at ELSE excluded.tokens_at END,"
    " updated_at = excluded.updated_at"
)
# The queued jobs among a step's starts ($1) of the limited types ($2) on shards the owner
# ($3) may start, grouped under their type's controls row, locked in type order.
_LOCK = f"""
WITH cand AS (
    SELECT j.id, j.type FROM jobs j
    WHERE j.id = ANY($1::bigint[]) AND j.state = 'queued' AND j.type = ANY($2::text[])
      AND NOT EXISTS (SELECT 1 FROM shardq_shards s WHERE s.shard = j.shard
                      AND s.owner IS DISTINCT FROM $3)
)
SELECT {GATE_COLUMNS}, ARRAY(SELECT id FROM cand WHERE cand.type = c.type)
FROM shardq_controls c WHERE c.type IN (SELECT type FROM cand)
ORDER BY c.type FOR UPDATE OF c
"""
# The slots of the types ($1) still held: a slot's job is processing, and does not stop in
# this step (the step's outcomes are written by the same owner ($2), fenced on the attempt,
# as the pairs $3, $4). The others are deleted.
_RUNNING = """
WITH s AS (
    SELECT s.job_id, s.type,
           j.state = 'processing' AND NOT (j.owner = $2 AND (j.id, j.attempts) IN
               (SELECT * FROM unnest($3::bigint[], $4::int[]))) AS holds
    FROM shardq_slots s LEFT JOIN jobs j ON j.id = s.job_id
    WHERE s.type = ANY($1::text[])
), freed AS (
    DELETE FROM shardq_slots f USING s WHERE f.job_id = s.job_id AND s.holds IS NOT TRUE
)
SELECT type, count(*) FROM s WHERE holds GROUP BY type
"""
_SETTLE = """
WITH b AS (
    UPDATE shardq_controls c SET tokens = b.tokens, tokens_at = b.at
    FROM unnest($1::text[], $2::float8[], $3::bigint[]) AS b(type, tokens, at)
    WHERE c.type = b.type
)
INSERT INTO shardq_slots (job_id, type) SELECT * FROM unnest($4::bigint[], $5::text[])
ON CONFLICT (job_id) DO NOTHING
"""
_USAGE = f"""
SELECT {GATE_COLUMNS},
       (SELECT count(*) FROM shardq_slots s JOIN jobs j ON j.id = s.job_id
        WHERE s.type = c.type AND j.state = 'processing')
FROM shardq_controls c WHERE c.type = ANY($1::text[])
"""


async def admit_starts(
    c: PoolConnectionProxy,
    outcomes: Sequence[Outcome],
    start: Sequence[int],
    owner: str,
    now: int,
    limited: Collection[str],
) -> Admission:
    """Admit the starts of a step of ``owner`` (whose ``outcomes`` are written in the same
    transaction, after this) against the stored controls of the ``limited`` types, in the
    transaction open on ``c``; the rows of those types stay locked until it ends."""
    rows = await c.fetch(_LOCK, list(start), sorted(limited), owner)
    gates = [gate(r) for r in rows]
    counted = [g.type for g in gates if g.concurrency is not None]
    if counted:
        running = await c.fetch(
            _RUNNING, counted, owner, [o.id for o in outcomes], [o.attempt for o in outcomes]
        )
        by_type: dict[str, int] = {r[0]: r[1] for r in running}
        for g in gates:
            g.running = by_type.get(g.type, 0)
    candidates = [(job_id, r[0]) for r in rows for job_id in r[-1]]
    return admit(start, candidates, gates, now)


async def settle_starts(
    c: PoolConnectionProxy, admission: Admission, started: Sequence[StartedJob]
) -> None:
    """Record, in the transaction open on ``c``, what the jobs ``started`` under
    ``admission`` hold: their rates' tokens, their types' slots."""
    buckets, slots = admission.settle(started)
    if buckets or slots:
        await c.execute(_SETTLE, *_columns(buckets, 3), *_columns(slots, 2))


def _columns(rows: Sequence[tuple[Any, ...]], n: int) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]


class PostgresControls:
    """The ``ControlStore`` of the cluster engine, on the driver's pool (``pool()``)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def _write(self, sql: str, *args: Any) -> None:
        """Run ``sql`` and announce the change, in one transaction."""
        async with self._pool().acquire() as c, c.transaction():
            await c.execute(sql, *args)
            await c.execute(_NOTIFY)

    async def limits(self) -> list[LimitRecord]:
        rows = await self._pool().fetch(
            f"SELECT {LIMIT_COLUMNS} FROM shardq_controls ORDER BY type"
        )
        return [limit_record(r) for r in rows]

    async def put_limits(self, records: Sequence[LimitRecord], now: int) -> None:
        values = [limit_values(r) for r in latest_limits(records)]
        await self._write(_PUT, *_columns(values, len(LIMIT_SPEC)), now)

    async def set_paused(self, job_type: str, paused: bool, now: int) -> None:
        if paused:
            await self._write(
                "INSERT INTO shardq_controls (type, paused, updated_at) VALUES ($1, true, $2)"
                " ON CONFLICT (type) DO UPDATE SET paused = true, updated_at = $2",
                job_type,
                now,
            )
        else:
            await self._write(
                "UPDATE shardq_controls SET paused = false, updated_at = $2 WHERE type = $1",
                job_type,
                now,
            )

    async def throttle(self, job_type: str, until: int, now: int) -> None:
        await self._write(
            "INSERT INTO shardq_controls AS c (type, throttled_until, updated_at)"
            " VALUES ($1, $2, $3) ON CONFLICT (type) DO UPDATE SET"
            " throttled_until = GREATEST(c.throttled_until, $2), updated_at = $3",
            job_type,
            until,
            now,
        )

    async def paused_keys(self) -> list[str]:
        rows = await self._pool().fetch("SELECT key FROM shardq_paused_keys ORDER BY key")
        return [r[0] for r in rows]

    async def set_key_paused(self, key: str, paused: bool, now: int) -> None:
        if paused:
            await self._write(
                "INSERT INTO shardq_paused_keys (key, paused_at) VALUES ($1, $2)"
                " ON CONFLICT (key) DO NOTHING",
                key,
                now,
            )
        else:
            await self._write("DELETE FROM shardq_paused_keys WHERE key = $1", key)

    async def usage(self, job_types: Collection[str], now: int) -> dict[str, LimitUsage]:
        rows = await self._pool().fetch(_USAGE, sorted(job_types))
        return {r[0]: usage(gate(r), r[-1], now) for r in rows}
