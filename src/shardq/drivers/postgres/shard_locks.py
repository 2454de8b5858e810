"""Shard ownership in a cluster: runners, a hash ring, and session advisory locks.

Each runner keeps one dedicated connection (its *lock session*). On it the runner holds a
runner lock (while it holds it, it is live) and one advisory lock per shard it serves. Every
runner builds the same ``HashRing`` from the live runners, so all agree on the desired owner
of each shard; a runner takes the shards it should own whose locks are free, and hands over
the shards it should no longer own once their running jobs finish (or a hand-over timeout
passes). A runner that dies loses its session, and with it every lock, at once.

Membership changes are announced (``NOTIFY shardq_runners``) on join, hand-over and leave,
and a runner whose session ends without a word is announced at once by the peer watching
its runner lock (``peer_watch``); a heartbeat on the lock session (one statement a second by
default) notices whatever a watch missed; it also publishes the runner's load and marks a
runner found gone. A runner asked to drain (``draining``) stays live but out of every
runner's ring, so its shards are handed over and it owns none. No query here looks for work.

Fencing: if the lock session fails, or any lock operation outlives its deadline, every shard
is given up at once (``on_change(set(), all)``) before reconnecting. Starting a job is also
refused in SQL on a shard that names another runner in ``shardq_shards``.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import asyncpg

from ..._internal.tasks import cancel_and_wait
from ...clock import SYSTEM_CLOCK, Clock
from ...sharding import HashRing
from .peer_watch import PeerWatch, successor

log = logging.getLogger("shardq.postgres.shard_locks")

T = TypeVar("T")
OnChange = Callable[[set[int], set[int]], Awaitable[None]]
#: Told of shards taken (before the runner reads them) or given up (after it stopped).
OnShards = Callable[[Collection[int]], Awaitable[None]]

#: The channel on which runners announce joining, handing over and leaving.
MEMBERS_CHANNEL = "shardq_runners"
#: First keys of the two-key advisory locks: runner liveness, and shards.
RUNNER_LOCK_SPACE = 0x53515252  # "SQRR"
SHARD_LOCK_SPACE = 0x53515348  # "SQSH"

#: Keeps the newest membership events (run by the statements that add them).
PRUNE_EVENTS = (
    "DELETE FROM shardq_runner_events WHERE id < (SELECT max(id) FROM shardq_runner_events) - 200"
)

# The heartbeat: publishes this runner's load, reads the live runners, marks a runner whose
# session ended as gone (once: a concurrent marker re-checks gone_at and skips the row), and
# deletes runners gone for 10 s. A row is marked before it can be deleted, so the two
# updates never touch the same row in one statement.
_LIVE = f"""
WITH hb AS (
    UPDATE shardq_runners SET heartbeat_at = $2, running = $3, capacity = $4, jobs_per_s = $5
    WHERE id = $1
), live AS (
    SELECT r.id, r.lock_key, r.draining FROM shardq_runners r
    WHERE EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = {RUNNER_LOCK_SPACE} AND l.objid::bigint = r.lock_key)
), lost AS (
    UPDATE shardq_runners r SET gone_at = $2
    WHERE r.gone_at IS NULL AND r.id <> $1 AND r.id NOT IN (SELECT id FROM live)
    RETURNING r.id, r.host, r.pid
), ev AS (
    INSERT INTO shardq_runner_events (at, runner, kind, host, pid)
    SELECT $2, id, 'gone', host, pid FROM lost
), gone AS (
    DELETE FROM shardq_runners r
    WHERE r.heartbeat_at < $2 - 10000 AND r.gone_at IS NOT NULL AND r.id <> $1
      AND r.id NOT IN (SELECT id FROM live)
)
SELECT id, lock_key, draining FROM live
"""


class ShardLocks:
    """The ``Ownership`` of a runner on PostgreSQL (see the module documentation).

    ``heartbeat`` is the interval of the liveness statement, ``op_timeout`` bounds every lock
    operation, and ``handover_timeout`` bounds how long a shard being handed over waits for
    its running jobs before they are interrupted. ``running`` tells the ids of the jobs this
    runner has started and not yet finished: a shard being handed over is busy while one of
    them is still processing there under this runner.
    """

    def __init__(
        self,
        dsn: str,
        token: str,
        shards: int,
        *,
        app: str = "shardq",
        host: str = "",
        pid: int = 0,
        heartbeat: float = 1.0,
        op_timeout: float = 2.0,
        handover_timeout: float = 30.0,
        server_settings: dict[str, str] | None = None,
        running: Callable[[], Collection[int]] = frozenset,
        clock: Clock = SYSTEM_CLOCK,
        gained: OnShards | None = None,
        released: OnShards | None = None,
    ) -> None:
        self._clock = clock
        self._gained = gained
        self._released = released
        self.token = token
        self._running = running
        self._dsn = dsn
        self._shards = shards
        self._app = app
        self._host = host
        self._pid = pid
        self._heartbeat = heartbeat
        self._op_timeout = op_timeout
        self._handover_timeout = handover_timeout
        self._settings = server_settings or {}
        self._conn: asyncpg.Connection | None = None
        self._on_change: OnChange | None = None
        self._held: set[int] = set()
        self._releasing: dict[int, float] = {}
        self._serving: frozenset[int] = frozenset()
        self._ring_of: frozenset[str] = frozenset()
        self._desired: frozenset[int] = frozenset()
        self._kick = asyncio.Event()
        self._lost = False
        self._task: asyncio.Task[None] | None = None
        self._watch = PeerWatch(
            dsn,
            RUNNER_LOCK_SPACE,
            MEMBERS_CHANNEL,
            server_settings=self._settings,
            timeout=op_timeout,
        )
        #: What the heartbeat publishes: handlers running, concurrency, jobs finished per
        #: second (the service installs its own; this default knows only the running jobs).
        self.report: Callable[[], tuple[int, int, float]] = lambda: (len(running()), 0, 0.0)
        #: The runner lock's second key, found free when connecting.
        self.lock_key = zlib.crc32(token.encode()) & 0x7FFFFFFF

    # -- the Ownership protocol ------------------------------------------------------------

    def owned(self) -> Collection[int] | None:
        """The shards this runner serves now (never None: a cluster runner owns a subset)."""
        return self._serving

    async def start(self, on_change: OnChange) -> None:
        """Join the cluster, take the free shards this runner should own, then keep
        balancing in the background."""
        self._on_change = on_change
        await self._connect()
        try:
            await self._balance()
        except BaseException:
            self._on_change = None
            await self._fence()
            raise
        self._task = asyncio.create_task(self._run(), name="shardq-shard-locks")

    async def stop(self) -> None:
        """Leave the cluster: release every shard and say so."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._watch.close()
        conn, self._conn = self._conn, None
        held = set(self._held)
        self._held.clear()
        self._releasing.clear()
        self._serving = frozenset()
        if self._released is not None and held:
            await self._released(held)
        if conn is None:
            return
        conn.remove_termination_listener(self._terminated)
        try:
            await self._bounded(
                conn.execute(
                    "WITH a AS (UPDATE shardq_shards SET owner = NULL WHERE owner = $1),"
                    " b AS (DELETE FROM shardq_runners WHERE id = $1 RETURNING host, pid),"
                    " e AS (INSERT INTO shardq_runner_events (at, runner, kind, host, pid)"
                    " SELECT $2, $1, 'left', host, pid FROM b)"
                    f" SELECT pg_advisory_unlock_all(), pg_notify('{MEMBERS_CHANNEL}', 'left')",
                    self.token,
                    self._clock.now_ms(),
                )
            )
            await self._bounded(conn.close())
        except Exception:
            log.warning("leaving the cluster cleanly failed; the session is dropped instead")
            conn.terminate()

    # -- hooks for the driver and tests ----------------------------------------------------

    def jobs_finished(self) -> None:
        """Jobs of this runner finished: a hand-over waiting on them may complete."""
        if self._releasing:
            self._kick.set()

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The lock session now."""
        return self._conn

    @property
    def held(self) -> frozenset[int]:
        """The shards whose locks this runner holds (serving or being handed over)."""
        return frozenset(self._held)

    # -- the balancer ----------------------------------------------------------------------

    async def _bounded(self, aw: Awaitable[T]) -> T:
        # Issue #6508 of @effect/cluster: a lock operation that hangs must not leave a
        # runner believing it still owns its shards.
        # A deadline on I/O, so on the event loop's time: I/O runs in real time even where
        # the service's clock is a fake one.
        async with asyncio.timeout(self._op_timeout):
            return await aw

    def _terminated(self, conn: Any) -> None:
        # Stop serving at once; the balancer tells the runner and reconnects.
        self._lost = True
        self._serving = frozenset()
        self._kick.set()

    def _on_members(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._kick.set()

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=self._op_timeout, server_settings=self._settings
        )
        try:
            key = self.lock_key
            while not await self._bounded(
                conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", RUNNER_LOCK_SPACE, key)
            ):
                key = (key + 1) & 0x7FFFFFFF
            self.lock_key = key
            now = self._clock.now_ms()
            await self._bounded(conn.add_listener(MEMBERS_CHANNEL, self._on_members))
            await self._bounded(
                conn.execute(
                    "WITH r AS (INSERT INTO shardq_runners"
                    " (id, lock_key, app, host, pid, started_at, heartbeat_at, hears_shards)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $6, TRUE) ON CONFLICT (id) DO UPDATE SET"
                    " lock_key = excluded.lock_key, app = excluded.app, hears_shards = TRUE,"
                    " heartbeat_at = excluded.heartbeat_at, gone_at = NULL),"
                    " e AS (INSERT INTO shardq_runner_events (at, runner, kind, host, pid)"
                    " VALUES ($6, $1, 'joined', $4, $5)),"
                    f" p AS ({PRUNE_EVENTS})"
                    f" SELECT pg_notify('{MEMBERS_CHANNEL}', 'join')",
                    self.token,
                    key,
                    self._app,
                    self._host,
                    self._pid,
                    now,
                )
            )
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        self._lost = False

    async def _fence(self) -> None:
        """Give up every shard now and drop the lock session."""
        lost = set(self._held)
        self._held.clear()
        self._releasing.clear()
        self._serving = frozenset()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            conn.terminate()
        if lost:
            log.warning("lock session lost: stopped serving %d shard(s)", len(lost))
            if self._on_change is not None:
                await self._on_change(set(), lost)
            if self._released is not None:
                await self._released(lost)

    async def _run(self) -> None:
        failures = 0
        while True:
            wait = self._heartbeat
            if self._releasing:
                first = min(self._releasing.values())
                wait = max(0.0, min(wait, first - self._clock.monotonic()))
            # The heartbeat is a kick the clock gives (a timer, not wait_for: on 3.11
            # wait_for can swallow a cancel that arrives as the event is set).
            beat = self._clock.call_later(wait, self._kick.set)
            try:
                await self._kick.wait()
            finally:
                beat.cancel()
            self._kick.clear()
            try:
                if self._conn is None or self._lost or self._conn.is_closed():
                    await self._fence()
                    await self._connect()
                    log.info("lock session (re)connected")
                await self._balance()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                delay = min(2.0, 0.05 * 2**failures)
                log.warning("shard balancing failed (%r); fencing, retry in %.2fs", e, delay)
                await self._fence()
                await self._clock.sleep(delay)
                self._kick.set()

    def _ring(self, live: Sequence[Any]) -> frozenset[str]:
        """The runners of the ring, from the live ones' (id, lock key, draining) rows: a
        draining runner stays live (and watched) but out of the ring, so it owns nothing."""
        ring = {r[0] for r in live if not r[2]} - {self.token}
        if not any(r[0] == self.token and r[2] for r in live):
            ring.add(self.token)
        return frozenset(ring)

    def _desired_for(self, live: frozenset[str]) -> frozenset[int]:
        if live != self._ring_of:
            ring = HashRing(live)
            self._desired = frozenset(s for s in range(self._shards) if ring.owner(s) == self.token)
            self._ring_of = live
        return self._desired

    async def _balance(self) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("no lock session")
        now = self._clock.now_ms()
        running, capacity, rate = self.report()
        rows = await self._bounded(conn.fetch(_LIVE, self.token, now, running, capacity, rate))
        desired = self._desired_for(self._ring(rows))
        await self._watch.follow(successor(self.token, [(r[0], r[1]) for r in rows]))
        await self._hand_over(conn, desired)
        await self._take(conn, desired, now)

    async def _hand_over(self, conn: asyncpg.Connection, desired: frozenset[int]) -> None:
        """Hand over what another runner should own: stop starting its jobs first, then
        release each shard once its jobs here are finished (or ``handover_timeout``)."""
        leaving = self._held - desired - self._releasing.keys()
        if leaving:
            deadline = self._clock.monotonic() + self._handover_timeout
            for s in leaving:
                self._releasing[s] = deadline
            self._serving = frozenset(self._held - self._releasing.keys())
            await self._bounded(
                conn.execute(
                    "UPDATE shardq_shards SET owner = NULL"
                    " WHERE shard = ANY($1::int[]) AND owner = $2",
                    sorted(leaving),
                    self.token,
                )
            )
        if self._releasing:
            busy = {
                r[0]
                for r in await self._bounded(
                    conn.fetch(
                        "SELECT DISTINCT shard FROM jobs WHERE id = ANY($3::bigint[])"
                        " AND state = 'processing' AND owner = $1 AND shard = ANY($2::int[])",
                        self.token,
                        sorted(self._releasing),
                        list(self._running()),
                    )
                )
            }
            mono = self._clock.monotonic()
            done = {s for s, dl in self._releasing.items() if s not in busy or dl <= mono}
            if done:
                if self._on_change is not None:
                    await self._on_change(set(), done)
                if self._released is not None:
                    await self._released(done)
                await self._bounded(
                    conn.execute(
                        f"SELECT pg_advisory_unlock({SHARD_LOCK_SPACE}, s)"
                        " FROM unnest($1::int[]) s",
                        sorted(done),
                    )
                )
                self._held -= done
                for s in done:
                    del self._releasing[s]
                await self._bounded(
                    conn.execute(f"SELECT pg_notify('{MEMBERS_CHANNEL}', 'released')")
                )
                log.info("handed over %d shard(s)", len(done))

    async def _take(self, conn: asyncpg.Connection, desired: frozenset[int], now: int) -> None:
        """Take the free shards this runner should own."""
        want = desired - self._held
        if want:
            got = {
                r[0]
                for r in await self._bounded(
                    conn.fetch(
                        "SELECT s FROM unnest($1::int[]) s"
                        f" WHERE pg_try_advisory_lock({SHARD_LOCK_SPACE}, s)",
                        sorted(want),
                    )
                )
            }
            if got:
                self._held |= got
                await self._bounded(
                    conn.execute(
                        "INSERT INTO shardq_shards (shard, owner, acquired_at)"
                        " SELECT s, $2, $3 FROM unnest($1::int[]) s ON CONFLICT (shard)"
                        " DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at",
                        sorted(got),
                        self.token,
                        now,
                    )
                )
                # Listen on the shards before serving them: what is heard of them before
                # is dropped, and read with their backlog. From serving to the runner's
                # on_change nothing awaits, so nothing heard overtakes that read.
                if self._gained is not None:
                    await self._gained(got)
                if self._lost:
                    raise ConnectionError("the lock session was lost while acquiring")
                self._serving = frozenset(self._held - self._releasing.keys())
                log.info("acquired %d shard(s); serving %d", len(got), len(self._serving))
                if self._on_change is not None:
                    await self._on_change(got, set())
