"""Inserting jobs on PostgreSQL: in shardq's own transaction, or in the caller's.

Both go through the same statements, and the notifications that wake the jobs' owners are
sent inside the inserting transaction: PostgreSQL delivers them when it commits, and drops
them if it rolls back. So a job inserted in a caller's transaction is dispatched as soon as
that transaction commits, and never exists (nor runs) if it rolls back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ...errors import JobError
from ..base import NewJob
from ..connections import driver_connection
from .payloads import submitted_notes
from .psycopg import PsycopgSession
from .statements import (
    INSERT_DEDUPE,
    INSERT_PLAIN,
    INSERT_UNIFORM,
    NOTIFY,
    SHARED,
    new_job_arrays,
)

#: Times a dedupe insert is tried when the holders of its keys keep being pruned under it.
DEDUPE_TRIES = 3
_HOLDERS = "SELECT dedupe_key, id FROM jobs WHERE dedupe_key = ANY($1::text[])"

#: What runs statements in a transaction: an asyncpg connection, or psycopg's in its likeness.
Session = asyncpg.Connection | PoolConnectionProxy | PsycopgSession


def plain_insert(jobs: Sequence[NewJob], *, by_shard: bool) -> tuple[str, list[Any]]:
    """The statement and arguments inserting ``jobs`` (none with a dedupe key) and sending
    their notifications (``by_shard``: see ``submitted_notes``), in one round trip."""
    notes = submitted_notes(jobs, by_shard=by_shard)
    shared = SHARED(jobs[0])
    if all(SHARED(j) == shared for j in jobs):
        history = json.dumps([["queued", shared[7], None]])  # [7]: created_at
        ids, payloads = [j.id for j in jobs], [j.payload for j in jobs]
        keys, shards = [j.key for j in jobs], [j.shard for j in jobs]
        args = [ids, payloads, keys, shards, *shared, history]
        return INSERT_UNIFORM, [*args, *notes]
    return INSERT_PLAIN, [*new_job_arrays(jobs), *notes]


async def insert_dedupe(
    c: Session, jobs: Sequence[NewJob], arrays: list[list[Any]], *, by_shard: bool
) -> list[tuple[int, bool]] | None:
    """Insert ``jobs`` (``arrays``: their columns) in the transaction open on ``c``, a job
    whose dedupe key is held answered by its holder, and notify the owners of the new ones.
    None when a holder went away between the statements (pruned): the caller rolls back
    what this did and tries again."""
    inserted = {r[0] for r in await c.fetch(INSERT_DEDUPE, *arrays)}
    missing = [j.dedupe_key for j in jobs if j.id not in inserted and j.dedupe_key is not None]
    holders: dict[str, int] = {}
    if missing:
        holders = {r[0]: r[1] for r in await c.fetch(_HOLDERS, missing)}
    out: list[tuple[int, bool]] = []
    for j in jobs:
        if j.id in inserted:
            out.append((j.id, False))
        elif j.dedupe_key in holders:
            out.append((holders[j.dedupe_key], True))
        else:
            return None
    fresh = [j for j in jobs if j.id in inserted]
    if fresh:
        await c.execute(NOTIFY, *submitted_notes(fresh, by_shard=by_shard))
    return out


class _Again(Exception):
    """Roll the savepoint back: a dedupe holder went away."""


async def insert_within(
    conn: object, jobs: Sequence[NewJob], *, by_shard: bool
) -> list[tuple[int, bool]]:
    """Insert ``jobs`` in the caller's transaction open on ``conn``; see
    ``Driver.insert_jobs_within`` and ``session``."""
    c = await session(conn)
    if not jobs:
        return []
    if all(j.dedupe_key is None for j in jobs):
        sql, args = plain_insert(jobs, by_shard=by_shard)
        await c.execute(sql, *args)
        return [(j.id, False) for j in jobs]
    arrays = new_job_arrays(jobs)
    for _ in range(DEDUPE_TRIES):
        try:
            # A savepoint, so that a try that found a holder gone leaves nothing behind.
            async with c.transaction():
                result = await insert_dedupe(c, jobs, arrays, by_shard=by_shard)
                if result is None:
                    raise _Again
                return result
        except _Again:
            continue
    raise RuntimeError("dedupe holders kept disappearing while inserting; try again")


async def session(conn: object) -> Session:
    """What runs shardq's statements in the transaction open on ``conn``: an asyncpg
    connection (pooled or not), a psycopg 3 connection (async, or sync from synchronous
    code), or a SQLAlchemy connection or session over either. Anything else, or a
    connection with no transaction open, raises ``JobError(reason="Validation")``."""
    raw = await driver_connection(conn)
    c: Session
    if isinstance(raw, asyncpg.Connection | PoolConnectionProxy):
        if raw.is_closed():
            raise JobError.from_validation(None, "conn is closed")
        c, open_tx = raw, raw.is_in_transaction()
    else:
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(raw, psycopg.AsyncConnection | psycopg.Connection):
            raise JobError.from_validation(
                None,
                "conn must be an asyncpg or psycopg connection (or a SQLAlchemy connection or"
                " session over one) on the PostgreSQL engine, got"
                f" {type(conn).__module__}.{type(conn).__qualname__}",
            )
        if raw.closed:
            raise JobError.from_validation(None, "conn is closed")
        open_tx = raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c = PsycopgSession(raw)
    if not open_tx:
        raise JobError.from_validation(
            None,
            "conn is not in a transaction: submit with conn= inside the transaction that"
            " writes your rows (e.g. 'async with conn.transaction():')",
        )
    return c
