"""Flow controls on SQLite: per-type limits, pauses and throttles (``shardq_controls``),
paused keys, and the admission of a step's starts against them.

Every write is announced to the runner on the wake socket (``controls``), as a submit is.
An admission runs in the step's write transaction, after the step's outcomes are written:
the database has one writer at a time, so nothing else changes what it counts meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, TypeVar

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
from ..base import EventKind, LimitRecord, LimitUsage, StartedJob

T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], T]], Coroutine[Any, Any, T]]

_IN = "IN (SELECT value FROM json_each(?))"
_SAME_RATE = (
    "rate_count IS excluded.rate_count AND rate_per IS excluded.rate_per"
    " AND rate_burst IS excluded.rate_burst"
)
# A new or changed rate starts full; a rate removed takes its bucket with it.
_PUT = (
    f"INSERT INTO shardq_controls ({', '.join(LIMIT_SPEC)}, tokens, tokens_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6 + 1,"
    " CASE WHEN ?4 IS NULL THEN NULL ELSE ?10 END, ?10)"
    " ON CONFLICT (type) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in LIMIT_SPEC[1:])
    + f", tokens = CASE WHEN {_SAME_RATE} THEN tokens ELSE excluded.tokens END,"
    f" tokens_at = CASE WHEN {_SAME_RATE} THEN tokens_at ELSE excluded.tokens_at END,"
    " updated_at = excluded.updated_at"
)
_USAGE = (
    f"SELECT {GATE_COLUMNS}, (SELECT count(*) FROM shardq_slots s JOIN jobs j"
    " ON j.id = s.job_id WHERE s.type = c.type AND j.state = 'processing')"
    f" FROM shardq_controls c WHERE type {_IN}"
)


def admit_starts(
    c: sqlite3.Connection, start: Sequence[int], now: int, limited: Collection[str]
) -> Admission:
    """Admit ``start`` against the stored controls of the ``limited`` types, in the write
    transaction open on ``c`` (after the step's outcomes are written)."""
    types = json.dumps(sorted(limited))
    candidates = c.execute(
        f"SELECT id, type FROM jobs WHERE state = 'queued' AND id {_IN} AND type {_IN}",
        (json.dumps(list(start)), types),
    ).fetchall()
    gated = json.dumps(sorted({t for _, t in candidates}))
    gates = [
        gate(r)
        for r in c.execute(f"SELECT {GATE_COLUMNS} FROM shardq_controls WHERE type {_IN}", (gated,))
    ]
    counted = [g.type for g in gates if g.concurrency is not None]
    if counted:
        # A slot whose job has stopped (finished, or queued again) is freed.
        c.execute(
            f"DELETE FROM shardq_slots WHERE type {_IN} AND NOT EXISTS (SELECT 1 FROM jobs j"
            " WHERE j.id = shardq_slots.job_id AND j.state = 'processing')",
            (json.dumps(counted),),
        )
        running: dict[str, int] = dict(
            c.execute(
                f"SELECT type, count(*) FROM shardq_slots WHERE type {_IN} GROUP BY type",
                (json.dumps(counted),),
            ).fetchall()
        )
        for g in gates:
            g.running = running.get(g.type, 0)
    return admit(start, candidates, gates, now)


def settle_starts(
    c: sqlite3.Connection, admission: Admission, started: Sequence[StartedJob]
) -> None:
    """Record, in the transaction open on ``c``, what the jobs ``started`` under
    ``admission`` hold: their rates' tokens, their types' slots."""
    buckets, slots = admission.settle(started)
    c.executemany("UPDATE shardq_controls SET tokens = ?2, tokens_at = ?3 WHERE type = ?1", buckets)
    c.executemany(
        "INSERT INTO shardq_slots (job_id, type) VALUES (?, ?) ON CONFLICT (job_id) DO NOTHING",
        slots,
    )


class SQLiteControls:
    """The ``ControlStore`` of the embedded engine. ``write`` and ``read`` run a function
    on the driver's writer (in a transaction) and reader connections; ``announce`` tells
    the runner."""

    def __init__(
        self, write: Run[Any], read: Run[Any], announce: Callable[[EventKind, list[int]], None]
    ) -> None:
        self._write = write
        self._read = read
        self._announce = announce

    async def _change(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run ``sql`` once per row in one transaction, and announce the change."""
        await self._write(lambda c: c.executemany(sql, rows))
        self._announce("controls", [])

    async def limits(self) -> list[LimitRecord]:
        sql = f"SELECT {LIMIT_COLUMNS} FROM shardq_controls ORDER BY type"
        result: list[LimitRecord] = await self._read(
            lambda c: [limit_record(r) for r in c.execute(sql)]
        )
        return result

    async def put_limits(self, records: Sequence[LimitRecord], now: int) -> None:
        await self._change(_PUT, [(*limit_values(r), now) for r in latest_limits(records)])

    async def set_paused(self, job_type: str, paused: bool, now: int) -> None:
        if paused:
            sql = (
                "INSERT INTO shardq_controls (type, paused, updated_at) VALUES (?, 1, ?)"
                " ON CONFLICT (type) DO UPDATE SET paused = 1, updated_at = excluded.updated_at"
            )
        else:
            sql = "UPDATE shardq_controls SET paused = 0, updated_at = ?2 WHERE type = ?1"
        await self._change(sql, [(job_type, now)])

    async def throttle(self, job_type: str, until: int, now: int) -> None:
        await self._change(
            "INSERT INTO shardq_controls (type, throttled_until, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (type) DO UPDATE SET throttled_until ="
            " max(coalesce(throttled_until, excluded.throttled_until), excluded.throttled_until),"
            " updated_at = excluded.updated_at",
            [(job_type, until, now)],
        )

    async def paused_keys(self) -> list[str]:
        sql = "SELECT key FROM shardq_paused_keys ORDER BY key"
        result: list[str] = await self._read(lambda c: [r[0] for r in c.execute(sql)])
        return result

    async def set_key_paused(self, key: str, paused: bool, now: int) -> None:
        if paused:
            await self._change(
                "INSERT INTO shardq_paused_keys (key, paused_at) VALUES (?, ?)"
                " ON CONFLICT (key) DO NOTHING",
                [(key, now)],
            )
        else:
            await self._change("DELETE FROM shardq_paused_keys WHERE key = ?", [(key,)])

    async def usage(self, job_types: Collection[str], now: int) -> dict[str, LimitUsage]:
        types = json.dumps(sorted(job_types))

        def run(c: sqlite3.Connection) -> dict[str, LimitUsage]:
            return {r[0]: usage(gate(r), r[-1], now) for r in c.execute(_USAGE, (types,))}

        result: dict[str, LimitUsage] = await self._read(run)
        return result
