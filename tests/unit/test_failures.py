"""Which start failures a worker waits out, and which it reports at once."""

from __future__ import annotations

import asyncpg

from shardq.cli.failures import transient

PG = "postgresql://postgres@127.0.0.1:5432/db"


def test_a_session_lost_under_a_statement_is_waited_out() -> None:
    lost = asyncpg.InterfaceError(
        "cannot call Transaction.__aexit__(): the underlying connection is closed"
    )
    assert transient(lost, PG) is not None
    assert transient(asyncpg.ConnectionDoesNotExistError("closed"), PG) is not None


def test_misuse_and_refusals_are_not() -> None:
    assert transient(asyncpg.InterfaceError("cannot perform operation"), PG) is None
    assert transient(asyncpg.InvalidPasswordError("no"), PG) is None
    assert transient(ConnectionRefusedError(), "sqlite:///x.db") is None
