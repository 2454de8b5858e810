"""What went wrong, in one line an operator can act on: the CLI's words for errors.

The library raises the exceptions of the engine it runs on (``sqlite3``, ``asyncpg``, the
socket layer); the command line turns them into one sentence that says what is wrong and what
to do, and tells apart the failures that pass on their own (a server still starting) from
those that will not (a missing database).
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import urlsplit, urlunsplit

from ..errors import JobError

_MAX_DETAIL = 500
_URL_OPTION = "--database-url (or $SHARDQ_DATABASE_URL)"


class Refused(ValueError):
    """Bad input on the command line, found before anything was done."""


class Usage(Refused):
    """The command line itself is wrong (exit status 2, like a parser error)."""

    def __init__(self, message: str, prog: str = "shardq") -> None:
        super().__init__(f"{prog}: error: {message} (see '{prog} --help')")


class NoDatabase(Refused):
    """A command that only reads was pointed at a database that does not exist."""


def one_line(text: str) -> str:
    """``text`` as a single, bounded line (engine messages may hold newlines)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


def redacted(url: str) -> str:
    """``url`` without its password, fit for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return "(an unparsable URL)"


def pg_address(url: str) -> str:
    """``host:port`` of a PostgreSQL URL."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        return "(an unparsable URL)"


def is_postgres(url: str) -> bool:
    """True for the URLs of the PostgreSQL engine."""
    return url.startswith(("postgresql:", "postgres:"))


def transient(exc: BaseException, url: str) -> str | None:
    """Why a start against ``url`` failed, when waiting may cure it; else None.

    A PostgreSQL server that is starting, shutting down, full, or not reachable yet comes
    back on its own; a missing database, a rejected role or password, a bad URL and any
    SQLite failure do not.
    """
    if not is_postgres(url):
        return None
    import asyncpg

    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.AdminShutdownError):
        return f"the server is not accepting connections yet ({one_line(str(exc))})"
    if isinstance(exc, asyncpg.CrashShutdownError | asyncpg.TooManyConnectionsError):
        return f"the server is busy or recovering ({one_line(str(exc))})"
    if isinstance(exc, asyncpg.PostgresConnectionError | OSError):
        return _os_reason(exc)
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        # A session ended under a statement during start (a restart, a terminated backend).
        return f"the connection was lost ({one_line(str(exc))})"
    return None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return one_line(str(exc)) or type(exc).__name__


def describe(exc: BaseException, url: str) -> str:
    """One line saying what is wrong with the command that raised ``exc`` against ``url``."""
    if isinstance(exc, JobError):
        return f"{one_line(str(exc))} [{exc.reason}]"
    if isinstance(exc, sqlite3.Error):
        return _sqlite(exc, url)
    if is_postgres(url):
        pg = _postgres(exc, url)
        if pg is not None:
            return pg
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply"
    if isinstance(exc, ValueError | OSError | RuntimeError):
        return one_line(str(exc)) or type(exc).__name__
    return (
        f"unexpected {type(exc).__name__}: {one_line(str(exc))}"
        " (run with --debug to see the traceback)"
    )


def _sqlite(exc: sqlite3.Error, url: str) -> str:
    from ..drivers.sqlite.driver import path_from_url

    path = path_from_url(url)
    if os.path.isdir(path):
        return f"{path} is a directory, not a database file: fix {_URL_OPTION}"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return (
            f"{path} is not a SQLite database (file is not a database):"
            f" name a shardq database or a new file in {_URL_OPTION}"
        )
    return f"cannot use the SQLite database at {path}: {one_line(str(exc))}"


def _postgres(exc: BaseException, url: str) -> str | None:
    import asyncpg

    where = f"PostgreSQL at {pg_address(url)}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{one_line(str(exc))} on {where}: create it (createdb) or fix {_URL_OPTION}"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"{one_line(str(exc))} on {where}: check the password in the URL"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"{one_line(str(exc))} on {where}: create the role or fix {_URL_OPTION}"
    if isinstance(exc, OverflowError):
        return f"bad port in {redacted(url)}: {one_line(str(exc))}"
    reason = transient(exc, url)
    if reason is not None:
        return f"cannot connect to {where}: {reason}; is the server running and the URL right?"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{where} refused: {one_line(str(exc))}"
    return None
