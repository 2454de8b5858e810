"""Schedules on SQLite: the ``schedules`` table, written through the driver's writer.

A change is announced to the runner on the wake socket (``schedules`` with the shard numbers
touched), as a submit is.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, TypeVar

from .._sql import (
    SCHEDULE_COLUMNS,
    SCHEDULE_SPEC,
    fired_rows,
    schedule_record,
    schedule_spec,
    timing_changed,
)
from ..base import EventKind, FiredTick, ScheduleRecord

T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], T]], Coroutine[Any, Any, T]]

_SPEC = ", ".join(SCHEDULE_SPEC)
_INSERT = (
    f"INSERT INTO schedules ({_SPEC}, name, after_ms, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE schedules SET "
    + ", ".join(f"{c} = ?" for c in SCHEDULE_SPEC)
    + ", updated_at = ?, after_ms = CASE WHEN ? THEN max(after_ms, ?) ELSE after_ms END"
    " WHERE name = ?"
)
_FIRED = (
    "UPDATE schedules SET after_ms = max(after_ms, ?2),"
    " last_job_id = CASE WHEN ?3 IS NOT NULL AND (last_tick IS NULL OR ?3 > last_tick)"
    " THEN ?4 ELSE last_job_id END,"
    " last_tick = CASE WHEN ?3 IS NOT NULL AND (last_tick IS NULL OR ?3 > last_tick)"
    " THEN ?3 ELSE last_tick END WHERE name = ?1"
)


class SQLiteSchedules:
    """The ``ScheduleStore`` of the embedded engine. ``write`` and ``read`` run a function
    on the driver's writer (in a transaction) and reader connections; ``announce`` tells
    the runner."""

    def __init__(
        self, write: Run[Any], read: Run[Any], announce: Callable[[EventKind, list[int]], None]
    ) -> None:
        self._write = write
        self._read = read
        self._announce = announce

    async def put(
        self, schedules: Sequence[ScheduleRecord], now: int, *, declared_only: bool = False
    ) -> list[str]:
        def run(c: sqlite3.Connection) -> tuple[list[str], set[int]]:
            changed: list[str] = []
            shards: set[int] = set()
            for r in schedules:
                row = c.execute(
                    f"SELECT {_SPEC} FROM schedules WHERE name = ?", (r.name,)
                ).fetchone()
                spec = schedule_spec(r)
                if row is None:
                    c.execute(_INSERT, (*spec, r.name, now, now, now))
                elif tuple(row) != spec:
                    c.execute(_UPDATE, (*spec, now, timing_changed(row, r), now, r.name))
                    shards.add(row[-1])
                else:
                    continue
                changed.append(r.name)
                shards.add(r.shard)
            if declared_only:
                names = json.dumps([r.name for r in schedules])
                for name, shard in c.execute(
                    "DELETE FROM schedules WHERE declared = 1 AND name NOT IN"
                    " (SELECT value FROM json_each(?)) RETURNING name, shard",
                    (names,),
                ).fetchall():
                    changed.append(name)
                    shards.add(shard)
            return changed, shards

        changed, shards = await self._write(run)
        if shards:
            self._announce("schedules", sorted(shards))
        return list(changed)

    async def remove(self, name: str) -> bool:
        def run(c: sqlite3.Connection) -> int | None:
            row = c.execute(
                "DELETE FROM schedules WHERE name = ? RETURNING shard", (name,)
            ).fetchone()
            return None if row is None else int(row[0])

        shard = await self._write(run)
        if shard is not None:
            self._announce("schedules", [shard])
        return shard is not None

    async def set_paused(self, name: str, paused: bool, now: int) -> bool:
        def run(c: sqlite3.Connection) -> int | None:
            row = c.execute(
                "UPDATE schedules SET paused = ?1, updated_at = ?2,"
                " after_ms = CASE WHEN ?1 THEN after_ms ELSE max(after_ms, ?2) END"
                " WHERE name = ?3 RETURNING shard",
                (int(paused), now, name),
            ).fetchone()
            return None if row is None else int(row[0])

        shard = await self._write(run)
        if shard is not None:
            self._announce("schedules", [shard])
        return shard is not None

    async def get(self, name: str) -> ScheduleRecord | None:
        def run(c: sqlite3.Connection) -> ScheduleRecord | None:
            row = c.execute(
                f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else schedule_record(row)

        result: ScheduleRecord | None = await self._read(run)
        return result

    async def load(self, shards: Collection[int] | None) -> list[ScheduleRecord]:
        def run(c: sqlite3.Connection) -> list[ScheduleRecord]:
            if shards is None:
                rows = c.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name")
            else:
                rows = c.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE shard IN"
                    " (SELECT value FROM json_each(?)) ORDER BY name",
                    (json.dumps(sorted(shards)),),
                )
            return [schedule_record(r) for r in rows]

        result: list[ScheduleRecord] = await self._read(run)
        return result

    async def fired(self, ticks: Sequence[FiredTick]) -> None:
        schedules, jobs = fired_rows(ticks)

        def run(c: sqlite3.Connection) -> None:
            c.executemany(_FIRED, schedules)
            c.executemany(
                "UPDATE jobs SET schedule = ?2, tick = ?3 WHERE id = ?1 AND schedule IS NULL", jobs
            )

        if schedules:
            await self._write(run)

    async def unfinished(self, job_ids: Collection[int]) -> set[int]:
        ids = json.dumps(sorted(job_ids))

        def run(c: sqlite3.Connection) -> set[int]:
            rows = c.execute(
                "SELECT id FROM jobs WHERE state IN ('queued', 'processing')"
                " AND id IN (SELECT value FROM json_each(?))",
                (ids,),
            )
            return {r[0] for r in rows}

        if not job_ids:
            return set()
        result: set[int] = await self._read(run)
        return result
