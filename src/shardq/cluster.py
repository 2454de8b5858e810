"""The cluster as one picture: runners, the shard map, hand-overs and membership events.

``await jobs.cluster()`` reads it from storage in any process of a cluster (a runner or a
``runner=False`` web process), and gives the same answer in each: every runner publishes its
load (handlers running, concurrency, jobs finished per second) in its heartbeat row, shard
ownership is the ``shardq_shards`` table and the shard locks, and joins, departures and
drains are kept in a small table of events. Nothing here reads the jobs tables.

On embedded SQLite the picture is the one runner, as seen from its own process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from ._internal.validation import check_name, show
from .clock import SYSTEM_CLOCK, Clock
from .drivers.base import Driver, Ownership
from .drivers.postgres import PostgresDriver
from .drivers.postgres.shard_locks import (
    MEMBERS_CHANNEL,
    PRUNE_EVENTS,
    RUNNER_LOCK_SPACE,
    SHARD_LOCK_SPACE,
    ShardLocks,
)
from .errors import JobError
from .observe import Metrics
from .sharding import HashRing
from .tasks import TaskSupport

if TYPE_CHECKING:
    from .jobs import JobService

__all__ = [
    "ClusterSupport",
    "ClusterView",
    "Handover",
    "LoadMeter",
    "MembershipEvent",
    "RunnerView",
]

#: Membership events a view shows unless asked otherwise.
DEFAULT_EVENTS = 50
#: Membership events a view may show at most (the table keeps about 200).
MAX_EVENTS = 200
#: The second key of the advisory lock that makes drain requests one at a time.
_DRAIN_LOCK = 0x7FFFFFFF

EventKind = Literal["joined", "left", "gone", "drain"]


@dataclass(frozen=True, slots=True)
class RunnerView:
    """One live runner: where it runs, since when, the shards it serves and its load.

    ``running`` of ``capacity`` handler slots are busy; ``jobs_per_s`` is the rate at which
    its jobs finished over its last heartbeat interval; ``draining`` says it was asked to
    hand every shard over (it then owns none and stays up until stopped).
    """

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    shards: list[int]
    running: int
    capacity: int
    jobs_per_s: float
    draining: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (ISO timestamps)."""
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["heartbeat_at"] = self.heartbeat_at.isoformat()
        out["shard_count"] = len(self.shards)
        return out


@dataclass(frozen=True, slots=True)
class Handover:
    """A shard on its way between runners: ``from_runner`` still holds it (finishing its
    running jobs) or None once it is free; ``to_runner`` is the runner that should take it."""

    shard: int
    from_runner: str | None
    to_runner: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """A runner joined, left (stopped cleanly), was found gone (its session ended without a
    word) or was asked to drain."""

    at: datetime
    runner: str
    kind: str
    host: str
    pid: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (ISO timestamp)."""
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Every live runner, the owner of each shard (``shard_map[s]``, None while shard ``s``
    is handed over or unowned), the hand-overs in progress and recent membership events
    (newest first). ``this_runner`` is the runner of the process that read it, if any."""

    mode: Literal["embedded", "cluster"]
    shards: int
    runners: list[RunnerView]
    shard_map: list[str | None]
    handovers: list[Handover]
    events: list[MembershipEvent]
    at: datetime
    this_runner: str | None = None
    note: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "mode": self.mode,
            "shards": self.shards,
            "at": self.at.isoformat(),
            "this_runner": self.this_runner,
            "runners": [r.to_dict() for r in self.runners],
            "shard_map": list(self.shard_map),
            "handovers": [h.to_dict() for h in self.handovers],
            "events": [e.to_dict() for e in self.events],
            "note": self.note,
        }


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class LoadMeter:
    """What a runner publishes with each heartbeat: (running, capacity, jobs finished per
    second over the time since the previous sample of at least ``window`` seconds of
    ``clock``)."""

    def __init__(
        self,
        metrics: Metrics,
        capacity: int,
        window: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._metrics = metrics
        self._capacity = capacity
        self._window = window
        self._monotonic = clock.monotonic
        self._last = (clock.monotonic(), self._finished())
        self._rate = 0.0

    def _finished(self) -> float:
        m = self._metrics
        return sum(s.value for c in (m.completed, m.dead_lettered) for f in c.collect()
                   for s in f.samples if s.name.endswith("_total"))  # fmt: skip

    def sample(self) -> tuple[int, int, float]:
        """(handlers running now, concurrency, jobs finished per second lately)."""
        now, done = self._monotonic(), self._finished()
        then, before = self._last
        if now - then >= self._window:
            self._rate = round((done - before) / (now - then), 2)
            self._last = (now, done)
        running = int(sum(s.value for f in self._metrics.running.collect() for s in f.samples))
        return running, self._capacity, self._rate


_LIVE_RUNNERS = f"""
SELECT r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.running, r.capacity,
       r.jobs_per_s, r.draining
FROM shardq_runners r
WHERE EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = {RUNNER_LOCK_SPACE} AND l.objid::bigint = r.lock_key)
ORDER BY r.started_at, r.id
"""

# Who holds each shard's lock: the runner whose sessions carry the holder's application_name.
_SHARDS = f"""
WITH holders AS MATERIALIZED (
    SELECT l.objid::bigint AS shard, r.id AS runner
    FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    JOIN shardq_runners r ON r.app = a.application_name
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = {SHARD_LOCK_SPACE}
)
SELECT s.shard, s.owner, h.runner FROM shardq_shards s LEFT JOIN holders h ON h.shard = s.shard
"""

_EVENTS = "SELECT at, runner, kind, host, pid FROM shardq_runner_events ORDER BY id DESC LIMIT $1"

# One drain request at a time (the transaction's lock), so two concurrent requests cannot
# both leave the other runner as the last one serving and drain it too.
_DRAIN = f"""
WITH live AS ({_LIVE_RUNNERS}),
target AS (
    UPDATE shardq_runners SET draining = TRUE
    WHERE id = $1 AND NOT draining AND id IN (SELECT id FROM live)
      AND EXISTS (SELECT 1 FROM live WHERE NOT draining AND id <> $1)
    RETURNING id, host, pid
), ev AS (
    INSERT INTO shardq_runner_events (at, runner, kind, host, pid)
    SELECT $2, id, 'drain', host, pid FROM target
), p AS ({PRUNE_EVENTS})
SELECT id, pg_notify('{MEMBERS_CHANNEL}', 'drain') FROM target
"""


def _handovers(
    shards: int, owners: dict[int, str], holders: dict[int, str], ring: HashRing
) -> tuple[list[str | None], list[Handover]]:
    shard_map: list[str | None] = []
    moving: list[Handover] = []
    for s in range(shards):
        owner = owners.get(s)
        shard_map.append(owner)
        if owner is None:
            moving.append(Handover(s, holders.get(s), ring.owner(s)))
    return shard_map, moving


async def read_postgres(pool: Any, shards: int, events: int) -> ClusterView:
    """The cluster view from a PostgreSQL database (``pool``: an asyncpg pool)."""
    async with pool.acquire() as c, c.transaction(isolation="repeatable_read", readonly=True):
        runner_rows = await c.fetch(_LIVE_RUNNERS)
        shard_rows = await c.fetch(_SHARDS)
        event_rows = await c.fetch(_EVENTS, events)
        now = await c.fetchval("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
    live = {r["id"] for r in runner_rows}
    owners = {r[0]: r[1] for r in shard_rows if r[1] in live}
    holders = {r[0]: r[2] for r in shard_rows if r[2] in live}
    owned: dict[str, list[int]] = {}
    for s, o in sorted(owners.items()):
        owned.setdefault(o, []).append(s)
    ring = HashRing(r["id"] for r in runner_rows if not r["draining"])
    shard_map, moving = _handovers(shards, owners, holders, ring)
    return ClusterView(
        mode="cluster",
        shards=shards,
        runners=[
            RunnerView(
                id=r["id"],
                host=r["host"],
                pid=r["pid"],
                started_at=_time(r["started_at"]),
                heartbeat_at=_time(r["heartbeat_at"]),
                shards=owned.get(r["id"], []),
                running=r["running"],
                capacity=r["capacity"],
                jobs_per_s=r["jobs_per_s"],
                draining=r["draining"],
            )
            for r in runner_rows
        ],
        shard_map=shard_map,
        handovers=moving,
        events=[
            MembershipEvent(_time(e["at"]), e["runner"], e["kind"], e["host"], e["pid"])
            for e in event_rows
        ],
        at=_time(now),
        note="",
    )


class ClusterSupport(TaskSupport):
    """The cluster methods of ``JobService`` (its view of the cluster, drain requests), over
    the typed-task ones."""

    _meter: LoadMeter | None = None
    _started_ms: int = 0

    def _ownership(self, driver: Driver) -> Ownership:
        """The shard ownership of this service's runner, publishing its load."""
        jobs = cast("JobService", self)
        self._meter = LoadMeter(jobs.metrics, jobs.config.concurrency, clock=jobs.clock)
        self._started_ms = jobs.clock.now_ms()
        own = driver.ownership(jobs.runner_id, jobs.config.shards)
        if isinstance(own, ShardLocks):
            own.report = self._meter.sample
        return own

    async def cluster(self, events: int = DEFAULT_EVENTS) -> ClusterView:
        """The whole cluster as one picture (see ``shardq.cluster``): the same from every
        process, runner or not. ``events``: how many recent membership events (0..200)."""
        if isinstance(events, bool) or not isinstance(events, int) or not 0 <= events <= 200:
            raise JobError.from_validation(
                None, f"events must be an integer within 0..{MAX_EVENTS}, got {show(events)}"
            )
        jobs = cast("JobService", self)
        this = jobs.runner_id if jobs._runner is not None else None
        if not jobs.config.database_url.startswith("postgres"):
            return self._embedded(this)
        view = await read_postgres(_pool(jobs), jobs.config.shards, events)
        return _with(view, this_runner=this)

    def _embedded(self, this: str | None) -> ClusterView:
        jobs = cast("JobService", self)
        shards = jobs.config.shards
        now = _time(jobs.clock.now_ms())
        if this is None or self._meter is None:
            return ClusterView(
                "embedded", shards, [], [None] * shards, [], [], now, None,
                "an embedded database has one runner, in another process: ask that process",
            )  # fmt: skip
        running, capacity, rate = self._meter.sample()
        me = RunnerView(
            this, socket.gethostname(), os.getpid(), _time(self._started_ms), now,
            list(range(shards)), running, capacity, rate, False,
        )  # fmt: skip
        return ClusterView(
            "embedded", shards, [me], [this] * shards, [], [], now, this,
            "one runner owns every shard of an embedded database",
        )  # fmt: skip

    async def drain(self, runner_id: str) -> None:
        """Ask runner ``runner_id`` (of any process) to hand all its shards over to the
        others. It stops starting jobs of those shards at once, lets its running jobs finish
        (up to ``handover_timeout``, after which they are interrupted and run again on the new
        owner), then owns nothing and stays up until it is stopped.

        Raises ``NotFound`` for a runner that is not live, and ``Validation`` for one already
        draining, for the last runner serving (its shards would have no owner), or on an
        embedded database (one runner: stop it instead)."""
        check_name("runner id", runner_id)
        jobs = cast("JobService", self)
        if not jobs.config.database_url.startswith("postgres"):
            raise JobError.from_validation(
                None, "an embedded database has one runner, which cannot hand its shards to"
                " another: stop it instead",
            )  # fmt: skip
        async with _pool(jobs).acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1, $2)", RUNNER_LOCK_SPACE, _DRAIN_LOCK)
            if await c.fetchval(_DRAIN, runner_id, jobs.clock.now_ms()) is not None:
                return
            live = await c.fetch(_LIVE_RUNNERS)
        target = next((r for r in live if r["id"] == runner_id), None)
        if target is None:
            raise JobError("NotFound", message=f"no live runner {runner_id!r}")
        if target["draining"]:
            raise JobError.from_validation(None, f"runner {runner_id} is already draining")
        raise JobError.from_validation(
            None, f"runner {runner_id} is the last runner serving: its shards would have no owner"
        )


def _pool(jobs: JobService) -> Any:
    driver = jobs.driver
    if not isinstance(driver, PostgresDriver):
        raise JobError.from_validation(None, "the cluster view needs a PostgreSQL database")
    return driver.pool


def _with(view: ClusterView, *, this_runner: str | None) -> ClusterView:
    return ClusterView(
        view.mode,
        view.shards,
        view.runners,
        view.shard_map,
        view.handovers,
        view.events,
        view.at,
        this_runner,
        view.note,
    )
