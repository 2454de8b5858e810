"""SQLite driver: every write on one writer thread, reads on another, WAL for both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from .._sql import (
    DLQ_COLUMNS,
    JOB_COLUMNS,
    dead_letter_record,
    job_record,
    list_jobs_sql,
    migrations,
)
from ..base import (
    Advanced,
    AllShards,
    CancelResult,
    DeadLetterRecord,
    EventHandler,
    EventKind,
    JobFilter,
    JobRecord,
    JobRef,
    NewJob,
    Outcome,
    Ownership,
    ReplayResult,
    StartedJob,
    job_refs,
)
from .controls import SQLiteControls, admit_starts, settle_starts
from .inserts import INSERT, CommitWatch, check_connection, insert_args, insert_rows
from .outcomes import APPEND, PUT_OFF, finish
from .schedules import SQLiteSchedules
from .wake import Announcer, Listener, RunnerLock, socket_path, watcher_path

T = TypeVar("T")
log = logging.getLogger("shardq.sqlite")
_CHUNK = 900
_BUSY_MS = 10_000
#: A runner step touching at most this many rows commits on the event loop itself.
_INLINE_ROWS = 256
#: Commits between two checkpoints of the write-ahead log (run on their own connection).
_CHECKPOINT_EVERY = 64
#: Frames (pages) in the write-ahead log past which a checkpoint makes it start over.
_RESTART_FRAMES = 16_384
#: Frames left for the checkpoint that holds commits off (see ``SQLiteDriver._checkpoint``).
_TAIL_FRAMES = 256
_REF = "id, priority, run_at, key, shard, type"
#: Errors saying SQLite refused what it was given (see ``SQLiteDriver.unreachable``).
_REFUSED = (ValueError, TypeError, OverflowError, sqlite3.DataError, sqlite3.IntegrityError,
            sqlite3.InterfaceError)  # fmt: skip


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise ValueError(
            f"SQLite URL {url!r} names no file; shardq needs a file (e.g. sqlite:///shardq.db)"
        )
    return path


class SQLiteDriver:
    """The embedded storage engine.

    A runner process holds an exclusive lock file beside the database and listens on a local
    socket; other processes announce their commits there.
    """

    announces_finished = True

    def __init__(self, url: str, *, runner: bool) -> None:
        self.url = url
        self.path = path_from_url(url)
        self.runner = runner
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="shardq-sqlite-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="shardq-sqlite-r")
        self._w: sqlite3.Connection | None = None
        # Serialises the writer connection between the writer thread and small runner steps
        # that commit on the event loop.
        self._wlock = threading.Lock()
        self._commits = 0
        # Checkpoints have their own connection and thread: a PASSIVE checkpoint takes no
        # write lock, so commits (on the loop or the writer thread) wait for one only while
        # it copies its last frames before the log starts over (see ``_checkpoint``).
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="shardq-sqlite-ck")
        self._ck: sqlite3.Connection | None = None
        self._checkpointing = False
        self._closed = False
        self._r: sqlite3.Connection | None = None
        self._lock = RunnerLock(self.path)
        self._listener: Listener | None = None
        self._announcer: Announcer | None = None
        self._handler: EventHandler | None = None
        # Runner: processes that asked to hear of finished jobs. Others: our own ear.
        self._watchers: set[str] = set()
        self._watch_listener: Listener | None = None
        self._watched_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_watch = CommitWatch(self.path, self._committed_elsewhere)
        self.schedules = SQLiteSchedules(self._tx, self._read, self._announce)
        self.controls = SQLiteControls(self._tx, self._read, self._announce)

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        if self.runner:
            self._lock.acquire()
        try:
            self._w = await self._write(lambda _: self._connect(writer=True))
            self._r = await self._read(lambda _: self._connect(writer=False))
            await self.migrate()
            if self.runner:
                self._listener = Listener(socket_path(self.path))
                await self._listener.start(self._on_message)
            else:
                self._announcer = Announcer(socket_path(self.path))
                self._watch_listener = Listener(watcher_path(self.path))
                await self._watch_listener.start(self._on_message)
                self._watch()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._commit_watch.close)
        if self._watch_listener is not None:
            self._watch_listener.close()
            self._watch_listener = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._announcer is not None:
            self._announcer.close()
            self._announcer = None
        if self._w is not None:
            w, self._w = self._w, None
            await asyncio.get_running_loop().run_in_executor(self._writer, w.close)
        if self._r is not None:
            r, self._r = self._r, None
            await asyncio.get_running_loop().run_in_executor(self._reader, r.close)
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._checkpointer, self._close_ck)
        self._checkpointer.shutdown(wait=False)
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)
        self._lock.release()

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives any process crash; only a power loss can
        # take back the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        if writer:
            # Checkpoints run on their own thread (``_committed``), never inside a commit
            # made on the event loop, where they would stall it.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    async def migrate(self) -> list[int]:
        def apply(c: sqlite3.Connection) -> list[int]:
            c.execute(
                "CREATE TABLE IF NOT EXISTS shardq_migrations"
                " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            done = {r[0] for r in c.execute("SELECT version FROM shardq_migrations")}
            applied = []
            for version, sql in migrations("shardq.drivers.sqlite"):
                if version in done:
                    continue
                for statement in _statements(sql):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO shardq_migrations VALUES (?, strftime('%s','now') * 1000)",
                    (version,),
                )
                applied.append(version)
            return applied

        return await self._tx(apply)

    # -- plumbing ------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._wlock:
                return fn(self._w)  # type: ignore[arg-type]

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self._r))  # type: ignore[arg-type]

    async def _tx(self, fn: Callable[[sqlite3.Connection], T], rows: int | None = None) -> T:
        """Run ``fn`` in a write transaction.

        One of at most ``_INLINE_ROWS`` rows commits on the calling event loop itself when
        that costs no waiting (the writer connection is free and no other process holds
        the database's write lock): the loop would only wait for the writer thread anyway,
        and the two thread hand-offs saved are a fifth of a runner step's cost. Otherwise,
        and for anything larger, the writer thread runs it.
        """
        c = self._w
        small = rows is not None and rows <= _INLINE_ROWS
        if small and c is not None and self._wlock.acquire(blocking=False):
            try:
                if _begin_at_once(c):
                    out = _transact(c, fn)
                    self._committed()
                    return out
            finally:
                self._wlock.release()

        def run(c: sqlite3.Connection) -> T:
            c.execute("BEGIN IMMEDIATE")
            return _transact(c, fn)

        out = await self._write(run)
        self._committed()
        return out

    def _committed(self) -> None:
        """Count a commit; every so often, checkpoint the write-ahead log on the checkpoint
        thread (automatic checkpoints are off, see ``_connect``)."""
        self._commits += 1
        if self._commits >= _CHECKPOINT_EVERY and not self._checkpointing:
            self._commits = 0
            self._checkpointing = True
            self._checkpointer.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._closed:
                return
            if self._ck is None:
                self._ck = self._connect(writer=False)
            # The log is copied while commits go on. It starts over from its beginning only
            # after a checkpoint with no commit during it copied it in full (else it only
            # grows). So past a size, the frames added during the copy are copied again,
            # until few are left, and those with commits held off: a short pause (a small
            # copy and a sync), and a rare one.
            _, frames, copied = self._ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < _RESTART_FRAMES:
                return
            for _ in range(4):
                _, frames, _ = self._ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                added, copied = frames - copied, frames
                if added <= _TAIL_FRAMES:
                    break
            with self._wlock:
                self._ck.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.warning("checkpoint of %s failed; the next one will retry", self.path)
        finally:
            self._checkpointing = False

    def _close_ck(self) -> None:
        if self._ck is not None:
            ck, self._ck = self._ck, None
            ck.close()

    def _announce(self, kind: EventKind, ids: list[int]) -> None:
        if self._announcer is not None:
            self._announcer.send(kind, ids)

    def _tell_watchers(self, ids: list[int]) -> None:
        """Runner side: announce finished jobs to every process that asked; forget the gone."""
        if not self._watchers or not ids:
            return
        if self._announcer is None:
            self._announcer = Announcer(socket_path(self.path))
        for path in list(self._watchers):
            if not self._announcer.send("finished", ids, to=path):
                self._watchers.discard(path)

    async def keep_watching(self) -> None:
        self._watch()

    def _watch(self) -> None:
        """Ask the runner to announce finished jobs here; at most twice a second, which is
        enough to renew it: a restarted runner has forgotten its watchers."""
        now = time.monotonic()
        if self._watch_listener is None or self._announcer is None or now - self._watched_at < 0.5:
            return
        self._watched_at = now
        self._announcer.watch(self._watch_listener.path)

    def _on_message(self, kind: str, ids: list[int], path: str) -> None:
        if kind == "watch":
            self._watchers.add(path)
            return
        if kind == "finished":
            # Another process cancelled a queued job: the runner tells every watcher.
            self._tell_watchers(ids)
        if self._handler is not None:
            self._handler(kind, ids)  # type: ignore[arg-type]

    def unreachable(self, error: BaseException) -> bool:
        # Refused: a value SQLite cannot bind or store. Anything else (a locked or vanished
        # file, an I/O error, a closed connection) may pass later.
        return not isinstance(error, _REFUSED)

    def listen(self, handler: EventHandler) -> None:
        self._handler = handler

    def ownership(self, token: str, shards: int) -> Ownership:
        # One runner per database file (the lock file enforces it) owns every shard.
        return AllShards(token)

    # -- submit --------------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[int, bool]]:
        result = await self._tx(lambda c: insert_rows(c, jobs), rows=len(jobs))
        fresh = [i for i, dup in result if not dup]
        if fresh:
            self._announce("submitted", fresh)
        return result

    async def insert_jobs_within(
        self, conn: object, jobs: Sequence[NewJob]
    ) -> list[tuple[int, bool]]:
        # Runs in the calling thread: a sqlite3 connection belongs to the thread that made it.
        c = check_connection(conn, self.path)
        result = insert_rows(c, jobs)
        fresh = [i for i, dup in result if not dup]
        if fresh:
            self._commit_watch.inserted(c, fresh)
        return result

    def _committed_elsewhere(self, ids: list[int]) -> None:
        """On the commit watcher's thread: jobs of a caller's transaction have committed."""
        loop, handler = self._loop, self._handler
        if not self.runner:
            self._announce("submitted", ids)
        elif loop is not None and handler is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(handler, "submitted", ids)

    # -- runner reads --------------------------------------------------------------------

    async def load_refs(self, ids: Collection[int]) -> list[JobRef]:
        ids = list(ids)

        def run(c: sqlite3.Connection) -> list[JobRef]:
            out: list[JobRef] = []
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = c.execute(
                    f"SELECT {_REF} FROM jobs WHERE state = 'queued' AND id IN ({marks})", chunk
                )
                out += job_refs(rows)
            return out

        return await self._read(run)

    async def load_ready(
        self,
        shards: Collection[int] | None,
        priority: int,
        now: int,
        limit: int,
        after: int = 0,
        exclude: Collection[str] = (),
    ) -> list[JobRef]:
        scope, args = _in_shards(shards, (priority, after, now))
        if exclude:
            scope += " AND type NOT IN (SELECT value FROM json_each(?))"
            args = (*args, json.dumps(sorted(exclude)))
        sql = (
            f"SELECT {_REF} FROM jobs WHERE state = 'queued' AND key IS NULL AND priority = ?"
            f" AND id > ? AND run_at <= ?{scope} ORDER BY id LIMIT ?"
        )
        return await self._read(lambda c: job_refs(c.execute(sql, (*args, limit))))

    async def load_delayed(
        self, shards: Collection[int] | None, now: int, limit: int
    ) -> list[JobRef]:
        scope, args = _in_shards(shards, (now,))
        sql = (
            f"SELECT {_REF} FROM jobs WHERE state = 'queued' AND key IS NULL AND run_at > ?"
            f"{scope} ORDER BY run_at LIMIT ?"
        )
        return await self._read(lambda c: job_refs(c.execute(sql, (*args, limit))))

    async def load_keys(self, shards: Collection[int] | None, limit: int) -> list[str]:
        scope, args = _in_shards(shards, ())
        sql = (
            "SELECT DISTINCT key FROM jobs WHERE state = 'queued' AND key IS NOT NULL"
            f"{scope} LIMIT ?"
        )
        return await self._read(lambda c: [r[0] for r in c.execute(sql, (*args, limit))])

    async def load_mailbox(self, key: str, limit: int) -> list[JobRef]:
        sql = f"SELECT {_REF} FROM jobs WHERE state = 'queued' AND key = ? ORDER BY id LIMIT ?"
        return await self._read(lambda c: job_refs(c.execute(sql, (key, limit))))

    # -- runner writes -------------------------------------------------------------------

    async def advance(
        self,
        outcomes: Sequence[Outcome],
        start: Sequence[int],
        owner: str,
        now: int,
        limited: Collection[str] = (),
    ) -> Advanced:
        def run(c: sqlite3.Connection) -> Advanced:
            written = finish(c, outcomes, owner) if outcomes else []
            admission = admit_starts(c, start, now, limited) if limited and start else None
            ids = list(start) if admission is None else admission.start
            started: list[StartedJob] = []
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = c.execute(
                    "UPDATE jobs SET state = 'processing', attempts = attempts + 1, owner = ?,"
                    f" updated_at = ?, {APPEND} WHERE state = 'queued' AND id IN ({marks})"
                    " RETURNING id, type, payload, priority, key, shard, attempts, max_attempts,"
                    " timeout, duration, run_at, created_at, context",
                    [owner, now, "processing", now, None, *chunk],
                ).fetchall()
                started.extend(StartedJob(*r) for r in rows)
            if admission is None:
                return Advanced(written, started)
            settle_starts(c, admission, started)
            return Advanced(written, started, admission.held)

        done = await self._tx(run, rows=len(outcomes) + len(start))
        if self._watchers and done.written:
            finished = {o.id for o in outcomes if o.kind != "retry" and o.kind not in PUT_OFF}
            self._tell_watchers([i for i in done.written if i in finished])
        return done

    async def recover(
        self, shards: Collection[int] | None, now: int, keep_owner: str | None = None
    ) -> int:
        kept = () if keep_owner is None else (keep_owner,)
        shard_scope, args = _in_shards(shards, kept)
        scope = "state = 'processing'" + " AND owner IS NOT ?" * len(kept) + shard_scope

        def run(c: sqlite3.Connection) -> tuple[list[int], int]:
            cancelled = c.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                f" owner = NULL, {APPEND} WHERE cancel_requested = 1 AND {scope} RETURNING id",
                (now, now, "cancelled", now, "cancelled while its runner was down", *args),
            ).fetchall()
            requeued = c.execute(
                "UPDATE jobs SET state = 'queued', run_at = ?, updated_at = ?, owner = NULL,"
                f" {APPEND} WHERE {scope}",
                (now, now, "queued", now, "interrupted: the runner stopped during the attempt",
                 *args),
            ).rowcount  # fmt: skip
            return [r[0] for r in cancelled], int(requeued)

        cancelled, requeued = await self._tx(run)
        self._tell_watchers(cancelled)
        return len(cancelled) + requeued

    async def undo_starts(self, ids: Collection[int], owner: str, now: int) -> list[JobRef]:
        ids = list(ids)
        if not ids:
            return []

        def run(c: sqlite3.Connection) -> tuple[list[int], list[JobRef]]:
            cancelled: list[int] = []
            requeued: list[JobRef] = []
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                scope = f"state = 'processing' AND owner = ? AND id IN ({marks})"
                cancelled += [
                    r[0]
                    for r in c.execute(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                        f" owner = NULL, {APPEND} WHERE cancel_requested = 1 AND {scope}"
                        " RETURNING id",
                        (now, now, "cancelled", now, "cancelled while its start was unconfirmed",
                         owner, *chunk),
                    ).fetchall()
                ]  # fmt: skip
                requeued += job_refs(
                    c.execute(
                        "UPDATE jobs SET state = 'queued', run_at = ?, updated_at = ?,"
                        f" owner = NULL, {APPEND} WHERE {scope} RETURNING {_REF}",
                        (now, now, "queued", now,
                         "its start was not confirmed (the write failed); queued again",
                         owner, *chunk),
                    ).fetchall()
                )  # fmt: skip
            return cancelled, requeued

        cancelled, requeued = await self._tx(run)
        self._tell_watchers(cancelled)
        return requeued

    # -- reads for everyone --------------------------------------------------------------

    async def get_job(self, job_id: int) -> JobRecord | None:
        def run(c: sqlite3.Connection) -> JobRecord | None:
            row = c.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return job_record(row) if row else None

        return await self._read(run)

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        sql, args = list_jobs_sql(flt, lambda n: "?")
        return await self._read(lambda c: [job_record(r) for r in c.execute(sql, args)])

    async def cancel_job(self, job_id: int, now: int) -> CancelResult:
        # With no runner up, a job left "processing" by a dead runner is not running anywhere.
        no_runner = not self.runner and not self._lock.held_elsewhere()

        def run(c: sqlite3.Connection) -> CancelResult:
            row = c.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return "missing"
            if row[0] == "queued" or (row[0] == "processing" and no_runner):
                c.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                    f" owner = NULL, {APPEND} WHERE id = ?",
                    (now, now, "cancelled", now, None, job_id),
                )
                return "cancelled"
            if row[0] == "processing":
                c.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                return "requested"
            return "finished"

        result = await self._tx(run)
        if result in ("cancelled", "requested"):
            self._announce("cancel", [job_id])
        if result == "cancelled" and self.runner:
            self._tell_watchers([job_id])
        elif result == "cancelled":
            self._announce("finished", [job_id])
        return result

    async def dead_letters(
        self, limit: int, before_id: int | None = None
    ) -> list[DeadLetterRecord]:
        sql = f"SELECT {DLQ_COLUMNS} FROM job_dlq WHERE id < ? ORDER BY id DESC LIMIT ?"
        bound = before_id if before_id is not None else (1 << 63) - 1
        return await self._read(
            lambda c: [dead_letter_record(r) for r in c.execute(sql, (bound, limit))]
        )

    async def get_dead_letter(self, dlq_id: int) -> DeadLetterRecord | None:
        def run(c: sqlite3.Connection) -> DeadLetterRecord | None:
            row = c.execute(f"SELECT {DLQ_COLUMNS} FROM job_dlq WHERE id = ?", (dlq_id,)).fetchone()
            return dead_letter_record(row) if row else None

        return await self._read(run)

    async def replay(self, dlq_id: int, job: NewJob) -> ReplayResult:
        def run(c: sqlite3.Connection) -> ReplayResult:
            row = c.execute("SELECT replayed_at FROM job_dlq WHERE id = ?", (dlq_id,)).fetchone()
            if row is None:
                return "missing"
            if row[0] is not None:
                return "already"
            c.execute(INSERT, insert_args(job))
            c.execute(
                "UPDATE job_dlq SET replayed_at = ?, replay_job_id = ? WHERE id = ?",
                (job.created_at, job.id, dlq_id),
            )
            return "replayed"

        result = await self._tx(run)
        if result == "replayed":
            self._announce("submitted", [job.id])
        return result

    async def prune(self, finished_before: int, dlq_before: int, limit: int) -> int:
        def run(c: sqlite3.Connection) -> int:
            jobs = c.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                " WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?)",
                (finished_before, limit),
            ).rowcount
            dlq = c.execute(
                "DELETE FROM job_dlq WHERE id IN"
                " (SELECT id FROM job_dlq WHERE failed_at < ? LIMIT ?)",
                (dlq_before, limit),
            ).rowcount
            return int(jobs + dlq)

        return await self._tx(run)

    async def count_by_state(self) -> dict[str, int]:
        sql = "SELECT state, count(*) FROM jobs GROUP BY state"
        return await self._read(lambda c: {r[0]: r[1] for r in c.execute(sql)})

    async def count_queued_by_priority(self) -> dict[int, int]:
        sql = "SELECT priority, count(*) FROM jobs WHERE state = 'queued' GROUP BY priority"
        return await self._read(lambda c: {r[0]: r[1] for r in c.execute(sql)})

    async def count_dead_letters(self) -> int:
        sql = "SELECT count(*) FROM job_dlq WHERE replayed_at IS NULL"
        return await self._read(lambda c: int(c.execute(sql).fetchone()[0]))

    async def advertise_handlers(self, types: Sequence[str], runner: str, now: int) -> None:
        rows = [(t, runner, now) for t in sorted(types)]
        await self._tx(
            lambda c: c.executemany(
                "INSERT INTO shardq_handlers (type, runner, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (type) DO UPDATE SET runner = excluded.runner,"
                " seen_at = excluded.seen_at",
                rows,
            )
        )

    async def handled_since(self, job_type: str, since: int) -> bool:
        sql = "SELECT 1 FROM shardq_handlers WHERE type = ? AND seen_at >= ?"
        return await self._read(lambda c: c.execute(sql, (job_type, since)).fetchone() is not None)


def _in_shards(
    shards: Collection[int] | None, args: tuple[Any, ...]
) -> tuple[str, tuple[Any, ...]]:
    """The condition limiting a query to ``shards`` (nothing for None: every shard) and
    ``args`` with its argument appended (one JSON array, whatever the number of shards)."""
    if shards is None:
        return "", args
    return " AND shard IN (SELECT value FROM json_each(?))", (*args, json.dumps(sorted(shards)))


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _begin_at_once(c: sqlite3.Connection) -> bool:
    """Begin a write transaction on ``c`` if no other process holds the write lock now;
    False (and nothing begun) if one does."""
    c.execute("PRAGMA busy_timeout = 0")
    try:
        c.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        c.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")


def _transact(c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in the transaction just begun on ``c``: commit, or roll back on error."""
    try:
        out = fn(c)
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")
    return out
