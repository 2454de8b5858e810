"""Meters for the PostgreSQL cost runs (``bench.pg_cost``, ``bench.pg_fanout``).

- ``MeteredServer``: a private PostgreSQL server (``bench.pgserver``) set up to be measured:
  ``pg_stat_statements`` loaded, WAL I/O timed, no autovacuum and no timed checkpoint during
  a run (so two runs see the same server work), and its processes' CPU readable here.
- ``process_cpu`` / ``server_cpu``: CPU seconds from ``/proc`` (``schedstat``: nanoseconds,
  summed over a process's threads).
- ``Counters``: the server's own counters at one moment (WAL position and ``pg_stat_wal``,
  ``pg_stat_database``, ``pg_stat_user_tables``, ``pg_stat_statements``); ``delta`` subtracts
  two of them.
- ``Heard``: counts the notifications on ``shardq_jobs`` by kind, and tells when every job of
  a set has been announced as finished (so a run waits for its jobs without polling storage).
- Worker processes: ``start_worker`` runs a real ``shardq worker`` (the app of
  ``bench.pg_cluster``: a ``noop`` handler), ``settled`` waits until given runners own every
  shard.

Statistics are flushed by a backend at most once a second and when it exits, so a run reads
the server's counters after the sessions it measures have ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.pgserver import PrivatePostgres
from shardq import JobService

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 300
#: Settings appended to the private server's configuration.
SETTINGS = (
    "\nshared_preload_libraries = 'pg_stat_statements'\n"
    "track_wal_io_timing = on\n"
    "autovacuum = off\n"
    "checkpoint_timeout = 1h\n"
    "max_wal_size = 16GB\n"
    "max_connections = 300\n"
)
_TICK = os.sysconf("SC_CLK_TCK")


def clock() -> float:
    """CLOCK_MONOTONIC seconds."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Poll ``check`` every 10 ms until it returns something true; that value."""
    deadline = clock() + timeout
    while True:
        value = await check()
        if value:
            return value
        if clock() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


# -- CPU from /proc ----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the live threads of ``pid`` (0.0 once it is gone)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def children(ppid: int) -> list[int]:
    """The pids whose parent is ``ppid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == ppid:
                out.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


def server_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, every live child, and the children
    it has reaped (their time is in the postmaster's ``cutime``/``cstime``)."""
    f = _stat_fields(postmaster)
    own_and_reaped = sum(int(v) for v in f[11:15]) / _TICK
    return own_and_reaped + sum(process_cpu(p) for p in children(postmaster))


# -- the server ----------------------------------------------------------------------------


class MeteredServer:
    """A private PostgreSQL server for cost runs; ``close`` removes it."""

    def __init__(self) -> None:
        self.pg = PrivatePostgres()
        with (self.pg.data / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS)
        self.pg.start()
        self.postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        self.statements = False

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server."""
        return self.pg.url(database)

    def cpu(self) -> float:
        """CPU seconds the server has used so far."""
        return server_cpu(self.postmaster)

    async def admin(self) -> asyncpg.Connection:
        """A connection to the ``postgres`` database, with ``pg_stat_statements`` if it loads."""
        conn: asyncpg.Connection = await asyncpg.connect(self.url())
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.statements = True
        except asyncpg.PostgresError:
            self.statements = False
        return conn

    async def database(self, prefix: str) -> str:
        """A new database with shardq's tables; its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = self.url(name)
        async with JobService(url, runner=False):  # applies the migrations
            pass
        return url

    async def drop(self, url: str) -> None:
        """Drop the database of ``url``."""
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{dbname(url)}" WITH (FORCE)')
        finally:
            await conn.close()

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.pg.stop(remove=True)


def dbname(url: str) -> str:
    """The database name of a PostgreSQL URL."""
    return url.rsplit("/", 1)[1]


# -- the server's counters -------------------------------------------------------------------

_WAL = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal_lsn_bytes, wal_records,"
    " wal_fpi, wal_bytes::float8, wal_buffers_full, wal_write, wal_sync, wal_write_time,"
    " wal_sync_time FROM pg_stat_wal"
)
_DATABASE = (
    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched,"
    " blks_hit, blks_read FROM pg_stat_database WHERE datname = $1"
)
_TABLES = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables"
_STATEMENTS = (
    "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)"
)


@dataclass
class Counters:
    """The server's counters for one database at one moment."""

    server: dict[str, float]
    tables: dict[str, dict[str, float]]
    statements: dict[str, dict[str, float]] = field(default_factory=dict)

    @staticmethod
    async def read(admin: asyncpg.Connection, url: str, statements: bool) -> Counters:
        """Read them: cluster-wide ones on ``admin``, the tables on a connection of their own
        to ``url`` (its own counts end up in the next reading, the same in every run)."""
        name = dbname(url)
        wal = await admin.fetchrow(_WAL)
        db = await admin.fetchrow(_DATABASE, name)
        assert wal is not None and db is not None
        server = {k: float(v) for k, v in {**dict(wal), **dict(db)}.items()}
        conn = await asyncpg.connect(url)
        try:
            tables = {
                r[0]: {k: float(r[k]) for k in list(r.keys())[1:]}
                for r in await conn.fetch(_TABLES)
            }
        finally:
            await conn.close()
        stmts: dict[str, dict[str, float]] = {}
        if statements:
            for r in await admin.fetch(_STATEMENTS, name):
                text = " ".join(r[0].split())
                s = stmts.setdefault(text, {"calls": 0.0, "ms": 0.0, "rows": 0.0})
                s["calls"] += r[1]
                s["ms"] += r[2]
                s["rows"] += r[3]
        return Counters(server, tables, stmts)

    def delta(self, before: Counters) -> Counters:
        """These counters minus ``before``'s."""

        def sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: v - b.get(k, 0.0) for k, v in a.items()}

        def sub2(
            a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]
        ) -> dict[str, dict[str, float]]:
            return {k: sub(v, b.get(k, {})) for k, v in a.items()}

        return Counters(
            sub(self.server, before.server),
            sub2(self.tables, before.tables),
            sub2(self.statements, before.statements),
        )


async def ended(admin: asyncpg.Connection, url: str, leave: int = 0, timeout: float = 60.0) -> None:
    """Wait until no more than ``leave`` sessions are connected to the database of ``url``
    (the statistics of those that ended are then flushed)."""

    async def gone() -> bool:
        n = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbname(url)
        )
        return bool(n <= leave)

    await until(gone, timeout)


async def sessions_cpu(admin: asyncpg.Connection, url: str) -> dict[str, float]:
    """CPU seconds of the live sessions of ``url``'s database, summed per application_name."""
    out: dict[str, float] = {}
    rows = await admin.fetch(
        "SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1", dbname(url)
    )
    for pid, app in rows:
        out[app] = out.get(app, 0.0) + process_cpu(pid)
    return out


# -- notifications -------------------------------------------------------------------------


class Heard:
    """Counts the notifications of ``shardq_jobs`` and ``shardq_done`` (kind ->
    notifications, jobs announced in them, payload bytes) and watches for a set of jobs to
    be announced as finished."""

    def __init__(self) -> None:
        self.notes: dict[str, int] = {}
        self.jobs: dict[str, int] = {}
        self.bytes = 0
        self._finished: set[int] = set()
        self._waiting: set[int] | None = None
        self._done = asyncio.Event()

    def __call__(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        """An asyncpg listener callback."""
        text = str(payload)
        kind = text[:1]
        self.notes[kind] = self.notes.get(kind, 0) + 1
        self.bytes += len(text.encode())
        if kind in "sf":
            items = json.loads(text[1:])
            self.jobs[kind] = self.jobs.get(kind, 0) + len(items)
        if kind == "f":
            ids = [int(i) for i in items]
            if self._waiting is None:
                self._finished.update(ids)
            else:
                self._waiting.difference_update(ids)
                if not self._waiting:
                    self._done.set()

    async def finished(self, ids: Iterable[str | int], timeout: float = 300.0) -> None:
        """Return once every job of ``ids`` has been announced as finished."""
        self._waiting = {int(i) for i in ids} - self._finished
        self._finished.clear()
        if self._waiting:
            self._done.clear()
            async with asyncio.timeout(timeout):
                await self._done.wait()
        self._waiting = None

    def reset(self) -> None:
        """Forget the counts."""
        self.notes.clear()
        self.jobs.clear()
        self.bytes = 0


async def listen(web: JobService, heard: Heard) -> None:
    """Count the notifications ``web``'s own listening connection receives (no extra
    session)."""
    driver: Any = web.driver
    conn = driver.notifier.connection
    assert conn is not None
    # The shared channel, and finished jobs (a submit on its shards' channels is heard by
    # their owner alone, so it is not counted here).
    await conn.add_listener("shardq_jobs", heard)
    await conn.add_listener("shardq_done", heard)


# -- worker processes ------------------------------------------------------------------------


def start_worker(url: str, concurrency: int = 64) -> subprocess.Popen[bytes]:
    """A ``shardq worker`` process running the app of ``bench.pg_cluster`` on ``url``."""
    env = dict(os.environ, BENCH_CONCURRENCY=str(concurrency))
    cmd = [sys.executable, "-m", "shardq", "--database-url", url, "worker"]
    cmd += ["--app", "bench.pg_cluster:app"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    """Signal each live worker and wait for it to exit."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def runner_ids(db: asyncpg.Connection, procs: Sequence[subprocess.Popen[bytes]]) -> list[str]:
    """The runner id of each worker process, once each has joined."""

    async def known() -> list[str] | None:
        rows = {r[0]: r[1] for r in await db.fetch("SELECT pid, id FROM shardq_runners")}
        ids = [rows.get(p.pid) for p in procs]
        return None if None in ids else [i for i in ids if i is not None]

    found: list[str] = await until(known)
    return found


async def settled(db: asyncpg.Connection, runners: Sequence[str]) -> dict[int, str]:
    """Wait until exactly ``runners`` serve every shard; the shard map then."""

    async def ready() -> dict[int, str] | None:
        rows = await db.fetch("SELECT shard, owner FROM shardq_shards WHERE owner IS NOT NULL")
        owners = {r[0]: r[1] for r in rows}
        done = len(owners) == SHARDS and set(owners.values()) == set(runners)
        return owners if done else None

    owners: dict[int, str] = await until(ready)
    return owners


async def apps(db: asyncpg.Connection, runners: Sequence[str]) -> list[str]:
    """The application_name of each runner's sessions."""
    rows = {r[0]: r[1] for r in await db.fetch("SELECT id, app FROM shardq_runners")}
    return [rows[r] for r in runners]
