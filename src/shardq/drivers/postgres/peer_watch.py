"""Noticing a runner's death the moment its session ends, not at the next heartbeat.

Each runner holds its runner lock for as long as its session lives. A peer that asks for the
same lock, on a connection of its own, is granted it by the server the instant that session
ends (kill -9, a crashed machine, a terminated backend): the lock wait is the death notice.
Runners watch one another in a ring (each its successor among the live runners, sorted by
id), so every runner is watched by one peer at the price of one connection each. The
watcher then announces the departure on the members channel, and every runner rebalances
at once. The heartbeat stays as the fallback: it still notices what a watch missed (a
watcher that died at the same time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg

from ..._internal.tasks import cancel_and_wait

log = logging.getLogger("shardq.postgres.peer_watch")


def successor(me: str, live: Sequence[tuple[str, int]]) -> tuple[str, int] | None:
    """The runner after ``me`` in the ring of ``live`` (id, lock key) pairs, or None when
    ``me`` is alone."""
    others = sorted(r for r in live if r[0] != me)
    if not others:
        return None
    for runner in others:
        if runner[0] > me:
            return runner
    return others[0]


class PeerWatch:
    """Waits on one peer's runner lock (space ``lock_space``) on a dedicated connection; once
    granted, releases it and sends ``pg_notify(channel, 'gone')``."""

    def __init__(
        self,
        dsn: str,
        lock_space: int,
        channel: str,
        *,
        server_settings: dict[str, str] | None = None,
        timeout: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._space = lock_space
        self._channel = channel
        self._settings = server_settings or {}
        self._timeout = timeout
        self._peer: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The runner watched now (id, lock key), if any."""
        return self._peer

    async def follow(self, peer: tuple[str, int] | None) -> None:
        """Watch ``peer`` (None: nobody); a watch whose peer is gone or replaced ends."""
        if peer == self._peer and (peer is None or self._running()):
            return
        await self.close()
        self._peer = peer
        if peer is not None:
            self._task = asyncio.create_task(self._watch(peer), name="shardq-peer-watch")

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Stop watching (the lock wait is cancelled on the server)."""
        task, self._task = self._task, None
        self._peer = None
        if task is not None:
            await cancel_and_wait(task, quiet=True)

    async def _watch(self, peer: tuple[str, int]) -> None:
        runner, key = peer
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._dsn, timeout=self._timeout, server_settings=self._settings
            )
        except Exception as e:
            log.warning("cannot watch runner %s (%r); the heartbeat will notice it", runner, e)
            return
        try:
            # Granted only when the peer's session has ended (or it left and unlocked).
            await conn.execute("SELECT pg_advisory_lock($1, $2)", self._space, key)
            await conn.execute(
                "SELECT pg_advisory_unlock($1, $2), pg_notify($3, 'gone')",
                self._space,
                key,
                self._channel,
            )
            log.info("runner %s is gone", runner)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("watching runner %s failed (%r); the heartbeat will notice it", runner, e)
        finally:
            # On cancel, asyncpg has asked the server to cancel the lock wait.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._timeout)
            if not conn.is_closed():
                conn.terminate()
