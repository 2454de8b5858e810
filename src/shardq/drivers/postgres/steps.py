"""A runner's step on PostgreSQL: its outcomes and its starts in one statement, so one
round trip and one commit (see ``statements.advance``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..base import Advanced, Outcome, StartedJob
from .statements import ADVANCE, ADVANCE_COMPLETE, FINISH, FINISH_COMPLETE, START


async def step(
    db: asyncpg.Pool | PoolConnectionProxy,
    outcomes: Sequence[Outcome],
    start: Sequence[int],
    owner: str,
    now: int,
) -> Advanced:
    """Write ``outcomes`` (each only if ``owner`` still runs that attempt) and start the
    queued jobs among ``start`` under ``owner``, in one statement on ``db``."""
    if not outcomes:
        if not start:
            return Advanced([], [])
        rows = await db.fetch(START, list(start), owner, now)
        return Advanced([], [StartedJob(*r) for r in rows])
    ids = [o.id for o in outcomes]
    attempts = [o.attempt for o in outcomes]
    ats = [o.at for o in outcomes]
    results = [o.result for o in outcomes]
    columns: tuple[list[Any], ...]
    if all(o.kind == "complete" for o in outcomes):
        finish, advance = FINISH_COMPLETE, ADVANCE_COMPLETE
        columns = (ids, attempts, ats, results)
    else:
        finish, advance = FINISH, ADVANCE
        columns = (
            ids,
            attempts,
            [o.kind for o in outcomes],
            ats,
            results,
            [o.error for o in outcomes],
            [o.reason for o in outcomes],
            [o.run_at for o in outcomes],
            [o.dlq_id for o in outcomes],
        )
    if start:
        rows = await db.fetch(advance, owner, *columns, list(start), now)
        return Advanced(
            [r[1] for r in rows if r[0] is False], [StartedJob(*r[1:]) for r in rows if r[0]]
        )
    rows = await db.fetch(finish, owner, *columns)
    return Advanced([r[0] for r in rows if r[0] is not None], [])
