"""Schedules on PostgreSQL: the ``schedules`` table.

Every change notifies, inside its transaction, the owners of the shards it touched
(``t`` and a JSON array of shard numbers on the jobs channel): delivered at the commit, as a
submitted job's notification is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence

import asyncpg

from .._sql import (
    SCHEDULE_COLUMNS,
    SCHEDULE_SPEC,
    fired_rows,
    schedule_record,
    schedule_spec,
    timing_changed,
)
from ..base import FiredTick, ScheduleRecord
from .statements import CHANNEL

_SPEC = ", ".join(SCHEDULE_SPEC)
_INSERT = (
    f"INSERT INTO schedules ({_SPEC}, name, after_ms, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)"
    " ON CONFLICT (name) DO NOTHING"
)
_UPDATE = (
    "UPDATE schedules SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(SCHEDULE_SPEC, 1))
    + ", updated_at = $12, after_ms = CASE WHEN $13 THEN GREATEST(after_ms, $12)"
    " ELSE after_ms END WHERE name = $14"
)
_FIRED = (
    "UPDATE schedules s SET after_ms = GREATEST(s.after_ms, t.through),"
    " last_job_id = CASE WHEN t.tick IS NOT NULL AND (s.last_tick IS NULL OR t.tick > s.last_tick)"
    " THEN t.job_id ELSE s.last_job_id END,"
    " last_tick = CASE WHEN t.tick IS NOT NULL AND (s.last_tick IS NULL OR t.tick > s.last_tick)"
    " THEN t.tick ELSE s.last_tick END"
    " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS t(name, through, tick,"
    " job_id) WHERE s.name = t.name"
)
_FIRED_JOBS = (
    "UPDATE jobs j SET schedule = t.name, tick = t.tick"
    " FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS t(id, name, tick)"
    " WHERE j.id = t.id AND j.schedule IS NULL"
)
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', 't' || $1::text)"


class PostgresSchedules:
    """The ``ScheduleStore`` of the cluster engine, on the driver's pool (``pool()``)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def put(
        self, schedules: Sequence[ScheduleRecord], now: int, *, declared_only: bool = False
    ) -> list[str]:
        changed: list[str] = []
        shards: set[int] = set()
        async with self._pool().acquire() as c, c.transaction():
            names = sorted(r.name for r in schedules)
            stored = {
                row[0]: row[1:]
                for row in await c.fetch(
                    f"SELECT name, {_SPEC} FROM schedules WHERE name = ANY($1::text[])"
                    " ORDER BY name FOR UPDATE",
                    names,
                )
            }
            for r in sorted(schedules, key=lambda r: r.name):
                row = stored.get(r.name)
                spec = schedule_spec(r)
                if row is None:
                    await c.execute(_INSERT, *spec, r.name, now)
                elif tuple(row) != spec:
                    await c.execute(_UPDATE, *spec, now, timing_changed(row, r), r.name)
                    shards.add(row[-1])
                else:
                    continue
                changed.append(r.name)
                shards.add(r.shard)
            if declared_only:
                for name, shard in await c.fetch(
                    "DELETE FROM schedules WHERE declared AND NOT name = ANY($1::text[])"
                    " RETURNING name, shard",
                    names,
                ):
                    changed.append(name)
                    shards.add(shard)
            if shards:
                await c.execute(_NOTIFY, json.dumps(sorted(shards)))
        return changed

    async def remove(self, name: str) -> bool:
        async with self._pool().acquire() as c, c.transaction():
            shard = await c.fetchval("DELETE FROM schedules WHERE name = $1 RETURNING shard", name)
            if shard is not None:
                await c.execute(_NOTIFY, json.dumps([shard]))
        return shard is not None

    async def set_paused(self, name: str, paused: bool, now: int) -> bool:
        async with self._pool().acquire() as c, c.transaction():
            shard = await c.fetchval(
                "UPDATE schedules SET paused = $2, updated_at = $3,"
                " after_ms = CASE WHEN $2 THEN after_ms ELSE greatest(after_ms, $3) END"
                " WHERE name = $1 RETURNING shard",
                name,
                paused,
                now,
            )
            if shard is not None:
                await c.execute(_NOTIFY, json.dumps([shard]))
        return shard is not None

    async def get(self, name: str) -> ScheduleRecord | None:
        row = await self._pool().fetchrow(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1", name
        )
        return None if row is None else schedule_record(row)

    async def load(self, shards: Collection[int] | None) -> list[ScheduleRecord]:
        if shards is not None and not shards:
            return []
        rows = await self._pool().fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules"
            " WHERE $1::int[] IS NULL OR shard = ANY($1::int[]) ORDER BY name",
            None if shards is None else sorted(shards),
        )
        return [schedule_record(r) for r in rows]

    async def fired(self, ticks: Sequence[FiredTick]) -> None:
        schedules, jobs = fired_rows(ticks)
        if not schedules:
            return
        async with self._pool().acquire() as c, c.transaction():
            await c.execute(_FIRED, *(list(col) for col in zip(*schedules, strict=True)))
            if jobs:
                await c.execute(_FIRED_JOBS, *(list(col) for col in zip(*jobs, strict=True)))

    async def unfinished(self, job_ids: Collection[int]) -> set[int]:
        if not job_ids:
            return set()
        rows = await self._pool().fetch(
            "SELECT id FROM jobs WHERE id = ANY($1::bigint[])"
            " AND state IN ('queued', 'processing')",
            list(job_ids),
        )
        return {r[0] for r in rows}
