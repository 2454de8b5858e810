"""Who hears which jobs: a channel per shard, listened on by its owner, and a channel of
finished jobs, listened on by the processes that wait for some.

A runner listens on the channel of each shard it owns (``payloads.job_channel``), and on the
shared channel. It listens on a shard's channel before it reads the shard's backlog when it
takes the shard, so a job committed before the LISTEN is in that read and one committed after
it is heard: a move opens no window in which a job is neither read nor heard. Runners of this
version say so when they join (``shardq_runners.hears_shards``).

A process announces a submit on the jobs' shard channels only while every live runner says it
hears them; a runner of an earlier version hears the shared channel alone, so while one is
live every submit goes there, as it did before. When such a runner joins, a process that was
announcing by shard asks every runner to rescan (twice, the second time after
``RESCAN_AGAIN`` seconds, for submits that were in flight): the newcomer then finds what it
missed.

Finished jobs are announced on their own channel (``DONE_CHANNEL``), which a process listens
on only while something in it waits for jobs to finish (a ``wait``, or flow control holding
jobs until a slot frees elsewhere): from the first such call for ``WATCH_FOR`` seconds after
the last. A runner that waits for nothing hears none of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import asyncpg

from ..._internal.tasks import cancel_and_wait
from ...clock import Clock
from .notifier import Notifier
from .payloads import job_channel
from .shard_locks import RUNNER_LOCK_SPACE
from .statements import CHANNEL, DONE_CHANNEL

log = logging.getLogger("shardq.postgres")

#: Seconds after which a switch back to the shared channel asks for a second rescan.
RESCAN_AGAIN = 5.0
#: Seconds a process keeps hearing finished jobs after the last call that asked to.
WATCH_FOR = 60.0

# A runner counts while its session holds its runner lock, whatever its row says: a row left
# by a runner killed while no peer was there to mark it gone does not count.
_ALL_HEAR_SHARDS = f"""
SELECT NOT EXISTS (
    SELECT 1 FROM shardq_runners r
    WHERE NOT r.hears_shards AND EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = {RUNNER_LOCK_SPACE} AND l.objid::bigint = r.lock_key))
"""
_RESCAN = f"SELECT pg_notify('{CHANNEL}', 'r')"


class Hearing:
    """This process's side of the shard channels: whether its submits are announced by shard
    (``by_shard``), and the shard channels its notifier listens on."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
        #: Announce submits on their shards' channels (every live runner hears them there).
        self.by_shard = False
        self.notifier: Notifier | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._rescans: set[asyncio.Task[None]] = set()
        self._watched_at = 0.0
        # Listening on DONE_CHANNEL (from its LISTEN until its UNLISTEN begins), kept by
        # ``_watching``, which ends it once no call renewed it for WATCH_FOR seconds.
        self._watching: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read whether every live runner hears shard channels."""
        hears = bool(await self._pool().fetchval(_ALL_HEAR_SHARDS))
        if self.by_shard and not hears:
            log.info("a runner that hears only the shared channel joined; announcing there")
            task = asyncio.create_task(self._rescan())
            self._rescans.add(task)
            task.add_done_callback(self._rescans.discard)
        self.by_shard = hears

    def members_changed(self, payload: str = "") -> None:
        """A runner joined, left or handed shards over: read the runners again (once at a
        time; a change heard during a read is read after it)."""
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._refreshing())

    async def _refreshing(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # Kept as it was: the next change, or a reconnection, reads again.
                    log.warning("reading which runners hear shard channels failed (%r)", e)
                if not self._again:
                    return
        finally:
            self._task = None

    async def _rescan(self) -> None:
        try:
            await self._pool().execute(_RESCAN)
            await self._clock.sleep(RESCAN_AGAIN)
            await self._pool().execute(_RESCAN)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("asking the runners to rescan failed (%r)", e)

    async def gained(self, shards: Collection[int]) -> None:
        """Listen on ``shards``' channels: called before their backlog is read."""
        if self.notifier is not None and shards:
            await self.notifier.listen([job_channel(s) for s in shards])

    async def lost(self, shards: Collection[int]) -> None:
        """Stop listening on ``shards``' channels: called once they are handed over."""
        if self.notifier is not None and shards:
            await self.notifier.unlisten([job_channel(s) for s in shards])

    async def watch_finished(self) -> None:
        """Hear finished jobs from when this returns, for ``WATCH_FOR`` seconds at least."""
        self._watched_at = self._clock.monotonic()
        if self.notifier is None or self._watching is not None:
            return  # listening already (a wait looks each second: no statement, no lock)
        # Concurrent first calls all return once the LISTEN is in force (the notifier runs
        # one statement at a time).
        await self.notifier.listen([DONE_CHANNEL])
        if self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._unwatch_when_idle())

    async def _unwatch_when_idle(self) -> None:
        try:
            while True:
                idle = self._clock.monotonic() - self._watched_at
                if idle >= WATCH_FOR:
                    break
                await self._clock.sleep(WATCH_FOR - idle)
            self._watching = None  # calls from now on LISTEN again (after this UNLISTEN)
            if self.notifier is not None:
                await self.notifier.unlisten([DONE_CHANNEL])
        finally:
            if self._watching is asyncio.current_task():
                self._watching = None

    async def close(self) -> None:
        """Stop the reads, rescans and watches in flight."""
        for task in [self._task, self._watching, *self._rescans]:
            if task is not None:
                await cancel_and_wait(task)
        self._task = None
        self._watching = None
