"""The application's connections that ``submit(..., conn=)`` accepts, down to the driver's own.

SQLAlchemy wraps a DB-API (or asyncpg) connection: an ``AsyncSession``, ``AsyncConnection``,
``Session`` or ``Connection`` in a transaction is unwrapped to the driver connection under it,
which then carries the jobs. SQLAlchemy is imported only when such an object is passed.
"""

from __future__ import annotations

from typing import Any

from ..errors import JobError

_NOT_IN_TRANSACTION = (
    "conn is not in a transaction: submit with conn= inside the transaction that writes your"
    " rows (e.g. 'async with engine.begin() as conn' or 'async with session.begin()')"
)


def _is_sqlalchemy(conn: object) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.")


async def driver_connection(conn: object) -> object:
    """The driver connection under ``conn`` if it is a SQLAlchemy connection or session
    (async or not) in a transaction, else ``conn`` itself. An async SQLAlchemy connection
    whose driver transaction has not begun yet (SQLAlchemy begins it at the first
    statement) has it begun."""
    if not _is_sqlalchemy(conn):
        return conn
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(conn, AsyncSession):
        if not conn.in_transaction():
            raise JobError.from_validation(None, _NOT_IN_TRANSACTION)
        conn = await conn.connection()
    if isinstance(conn, AsyncConnection):
        if not conn.in_transaction():
            raise JobError.from_validation(None, _NOT_IN_TRANSACTION)
        raw: Any = (await conn.get_raw_connection()).driver_connection
        if not _driver_in_transaction(raw):
            await conn.exec_driver_sql("SELECT 1")
        return raw
    return sync_driver_connection(conn)


def sync_driver_connection(conn: object) -> object:
    """``driver_connection`` for synchronous objects: a SQLAlchemy ``Session`` or
    ``Connection`` in a transaction gives its DB-API connection; anything else is returned
    as it is."""
    if not _is_sqlalchemy(conn):
        return conn
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(conn, Session):
        if not conn.in_transaction():
            raise JobError.from_validation(None, _NOT_IN_TRANSACTION)
        conn = conn.connection()
    if isinstance(conn, Connection):
        if not conn.in_transaction():
            raise JobError.from_validation(None, _NOT_IN_TRANSACTION)
        return conn.connection.driver_connection
    return conn


def _driver_in_transaction(raw: Any) -> bool:
    """Whether an asyncpg or psycopg connection has a transaction open."""
    check = getattr(raw, "is_in_transaction", None)
    if check is not None:
        return bool(check())
    info = getattr(raw, "info", None)
    return info is not None and int(info.transaction_status) != 0  # 0: IDLE
