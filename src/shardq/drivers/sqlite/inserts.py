"""Inserting jobs on SQLite: in shardq's own transaction, or in the caller's.

A caller's transaction is on its own ``sqlite3.Connection`` to the same file. The runner must
hear of its jobs once it commits, and SQLite (through Python) offers no hook that runs after a
commit. So shardq watches the connection's statements (its trace callback): when the caller
starts a ``COMMIT`` (or ``END``, or the ``RELEASE`` that may end a transaction begun by a
savepoint), the jobs it inserted are handed to a watcher thread. The watcher takes the
database's write lock, which the committing connection holds until its commit is complete
(every connection that inserted holds it), lets it go at once and announces the jobs. A
``ROLLBACK`` forgets them. Announcing a job that a failed commit left out starts nothing: the
runner only starts jobs it finds queued.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import JobError
from ..base import NewJob
from ..connections import sync_driver_connection

INSERT = (
    "INSERT INTO jobs (id, type, payload, priority, state, key, shard, dedupe_key, max_attempts,"
    " timeout, duration, batch_id, run_at, created_at, updated_at, context, history)"
    " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
    " json_array(json_array('queued', ?, NULL)))"
)
#: Statements after which a caller's transaction may be over, and one that drops it whole.
_ENDS = re.compile(r"\s*(COMMIT|END|RELEASE)\b", re.IGNORECASE)
#: How long the lock is tried without waiting, and the pause between tries (seconds).
_SPIN_SECONDS = 0.005
_SPIN_PAUSE = 0.00005
_BUSY_MS = 10_000
_ROLLBACK = re.compile(r"\s*ROLLBACK\s*(TRANSACTION\s*)?(;|$)", re.IGNORECASE)


def insert_args(j: NewJob) -> tuple[Any, ...]:
    """The parameters of ``INSERT`` for ``j``."""
    return (
        j.id, j.type, j.payload, j.priority, j.key, j.shard, j.dedupe_key, j.max_attempts,
        j.timeout, j.duration, j.batch_id, j.run_at, j.created_at, j.created_at, j.context,
        j.created_at,
    )  # fmt: skip


def insert_rows(c: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[tuple[int, bool]]:
    """Insert ``jobs`` in the transaction open on ``c``; per job, the id that holds it and
    whether it was a duplicate (its dedupe key held by a retained job)."""
    if all(j.dedupe_key is None for j in jobs):
        c.executemany(INSERT, [insert_args(j) for j in jobs])
        return [(j.id, False) for j in jobs]
    out: list[tuple[int, bool]] = []
    for j in jobs:
        if j.dedupe_key is None:
            c.execute(INSERT, insert_args(j))
            out.append((j.id, False))
            continue
        cur = c.execute(INSERT + " ON CONFLICT (dedupe_key) DO NOTHING", insert_args(j))
        if cur.rowcount == 1:
            out.append((j.id, False))
        else:
            row = c.execute("SELECT id FROM jobs WHERE dedupe_key = ?", (j.dedupe_key,)).fetchone()
            out.append((row[0], True))
    return out


def check_connection(conn: object, path: str) -> sqlite3.Connection:
    """The ``sqlite3.Connection`` that ``conn`` is (or that a SQLAlchemy ``Session`` or
    ``Connection`` in a transaction wraps), if it is connected to the database file ``path``
    with a transaction open; else ``JobError(reason="Validation")`` saying what is wrong."""
    conn = sync_driver_connection(conn)
    if not isinstance(conn, sqlite3.Connection):
        raise JobError.from_validation(
            None,
            f"conn must be a sqlite3.Connection to {path} on this embedded (SQLite) engine,"
            f" got {type(conn).__module__}.{type(conn).__qualname__}",
        )
    try:
        open_tx = conn.in_transaction
        rows = conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error as e:
        raise JobError.from_validation(None, f"conn cannot be used: {e}") from None
    main = next((r[2] for r in rows if r[1] == "main"), "")
    if not main or not _same_file(main, path):
        raise JobError.from_validation(
            None, f"conn is connected to {main or 'a memory database'}, not to {path}"
        )
    if not open_tx:
        raise JobError.from_validation(
            None,
            "conn is not in a transaction: submit with conn= inside the transaction that"
            " writes your rows (after a first statement, or after BEGIN)",
        )
    return conn


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _Pending:
    """The jobs inserted in the open transaction of one caller connection."""

    __slots__ = ("conn", "ids")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ids: list[int] = []


class CommitWatch:
    """Announces jobs inserted in callers' transactions once those commit (see the module).

    ``announce(ids)`` is called on the watcher thread, after the commit that made ``ids``
    durable (or after the transaction ended without them).
    """

    def __init__(self, path: str, announce: Callable[[list[int]], None]) -> None:
        self._path = path
        self._announce = announce
        # By id() of the caller's connection (sqlite3 connections take no weak references);
        # an entry holds its connection, so the id stays its own until the entry goes.
        self._open: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def inserted(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        """``ids`` were inserted in the transaction open on ``conn``."""
        with self._lock:
            pending = self._open.get(id(conn))
            if pending is None or pending.conn is not conn:
                pending = _Pending(conn)
                self._open[id(conn)] = pending
                conn.set_trace_callback(lambda sql: self._statement(pending, sql))
            pending.ids.extend(ids)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shardq-sqlite-commits", daemon=True
                )
                self._thread.start()

    def _statement(self, pending: _Pending, sql: str) -> None:
        """The trace callback of a watched connection: runs before each of its statements."""
        ends = _ENDS.match(sql) is not None
        if not ends and _ROLLBACK.match(sql) is None:
            return
        with self._lock:
            if self._open.get(id(pending.conn)) is pending:
                del self._open[id(pending.conn)]
            ids, pending.ids = pending.ids, []
        if ends and ids:
            self._queue.put(ids)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while (ids := self._queue.get()) is not None:
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, isolation_level=None)
                _wait_for_writer(conn)
            except sqlite3.Error:
                # The lock could not be had (the database is gone or broken): announce all
                # the same; the runner starts only what it finds queued.
                pass
            more = [ids]
            while not self._queue.empty():
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)
                    break
                more.append(item)
            self._announce([i for chunk in more for i in chunk])
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop the watcher thread once it has announced what it was handed."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
        with self._lock:
            self._open.clear()


def _wait_for_writer(conn: sqlite3.Connection) -> None:
    """Return once no transaction that began writing before this call is still open.

    A commit is over long before the first sleep of SQLite's own wait for a lock (a whole
    millisecond) ends; so the lock is first tried without waiting, every ``_SPIN_PAUSE``
    seconds for up to ``_SPIN_SECONDS`` (what a slow commit may take), and only then
    waited for.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    deadline = time.monotonic() + _SPIN_SECONDS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() < deadline:
                time.sleep(_SPIN_PAUSE)
            else:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            continue
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return
