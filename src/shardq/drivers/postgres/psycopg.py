"""A psycopg 3 connection (async, or sync from synchronous code) behind the part of asyncpg's
interface that inserting jobs uses: ``fetch``, ``execute`` and ``transaction``.

shardq's statements are written for asyncpg (``$1`` placeholders); psycopg takes
``%(name)s``. psycopg itself is never imported here: the connection brings it.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"\$(\d+)")


def to_psycopg(sql: str) -> str:
    """``sql`` with asyncpg's ``$n`` placeholders as psycopg's ``%(pn)s``."""
    return _PLACEHOLDER.sub(r"%(p\1)s", sql.replace("%", "%%"))


class PsycopgSession:
    """Runs shardq's statements on a psycopg connection (calls to a sync one block)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sql: dict[str, str] = {}

    async def _run(self, sql: str, args: Sequence[Any]) -> Any:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = to_psycopg(sql)
        params = {f"p{i}": v for i, v in enumerate(args, 1)}
        cursor = self._conn.execute(query, params)
        return await cursor if inspect.isawaitable(cursor) else cursor

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of ``sql``."""
        cursor = await self._run(sql, args)
        rows = cursor.fetchall()
        return list(await rows if inspect.isawaitable(rows) else rows)

    async def execute(self, sql: str, *args: Any) -> None:
        """Run ``sql``."""
        await self._run(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A savepoint inside the open transaction, rolled back if the block raises."""
        tx = self._conn.transaction()
        if hasattr(tx, "__aenter__"):
            async with tx:
                yield
        else:
            with tx:
                yield
