"""LISTEN on a dedicated connection that comes back after it is lost.

PostgreSQL delivers a notification only to sessions listening when it is committed, so a
listener that was away may have missed some: after every reconnection the owner is told
(``on_reconnect``) and must look at storage once. Channels can be added and dropped while it
runs (a runner listens on the channels of the shards it owns); a reconnection listens on them
all again before it tells the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import asyncpg

from ..._internal.tasks import cancel_and_wait
from . import listening

log = logging.getLogger("shardq.postgres.notifier")

#: Seconds a health probe of an idle listener connection may take before it is replaced.
PROBE_TIMEOUT = 2.0


class Notifier:
    """Listens on ``channel`` (and on the channels added with ``listen``) and calls
    ``on_payload(payload)`` for each notification; ``also`` maps further channels to their
    own callbacks.

    ``probe_interval`` seconds of silence trigger a ``SELECT 1`` so a connection that died
    without closing is noticed; any failure reconnects (with backoff) and then calls
    ``on_reconnect()``.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str], None],
        on_reconnect: Callable[[], None],
        *,
        also: Mapping[str, Callable[[str], None]] | None = None,
        server_settings: dict[str, str] | None = None,
        probe_interval: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_payload = on_payload
        self._also = dict(also or {})
        self._added: set[str] = set()
        # One statement at a time on the connection: LISTENs, probes and reconnections.
        self._busy = asyncio.Lock()
        self._on_reconnect = on_reconnect
        self._settings = server_settings or {}
        self._probe_interval = probe_interval
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and listen; raises if the first connection fails."""
        async with self._busy:
            await self._connect()
        self._task = asyncio.create_task(self._watch(), name=f"shardq-listen-{self._channel}")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._drop()

    async def listen(self, channels: Collection[str]) -> None:
        """Listen on ``channels`` too. Once this returns, every notification committed on them
        reaches ``on_payload``, or the connection was lost and ``on_reconnect`` will be
        called once it is back."""
        async with self._busy:
            new = set(channels) - self._added
            self._added |= new
            await self._change(new, listening.listen, "listening on")

    async def unlisten(self, channels: Collection[str]) -> None:
        """Stop listening on ``channels`` (added with ``listen``)."""
        async with self._busy:
            gone = self._added & set(channels)
            self._added -= gone
            # Should this fail, still listening is harmless: what is heard of shards not
            # owned is dropped.
            await self._change(gone, listening.unlisten, "unlistening")

    async def _change(
        self,
        channels: set[str],
        change: Callable[
            [asyncpg.Connection, Collection[str], listening.Listener], Awaitable[None]
        ],
        what: str,
    ) -> None:
        """Apply ``change`` to ``channels`` on the connection (``_busy`` held). Without a
        connection, the next one listens on ``_added``; a failure reconnects, and the
        owner then looks at storage (``on_reconnect``)."""
        conn = self._conn
        if not channels or conn is None or self._lost.is_set():
            return
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await change(conn, channels, self._deliver)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s %d channel(s) failed (%r); reconnecting", what, len(channels), e)
            self._lost.set()

    async def listening(self) -> frozenset[str]:
        """The channels the server says this listener's session is subscribed to now."""
        async with self._busy:
            if self._conn is None:
                return frozenset()
            async with asyncio.timeout(PROBE_TIMEOUT):
                rows = await self._conn.fetch("SELECT pg_listening_channels()")
        return frozenset(r[0] for r in rows)

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The listening connection now (tests terminate it to prove recovery)."""
        return self._conn

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings=self._settings
        )
        try:
            await conn.add_listener(self._channel, self._deliver)
            for ch, callback in self._also.items():
                await conn.add_listener(ch, _calling(callback))
            await listening.listen(conn, self._added, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.remove_termination_listener(self._terminated)
        if conn.is_closed():
            return
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await conn.close()
        except Exception:
            conn.terminate()

    def _deliver(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        try:
            self._on_payload(str(payload))
        except Exception:
            log.exception("handling a notification failed")

    def _terminated(self, conn: Any) -> None:
        self._lost.set()

    async def _watch(self) -> None:
        failures = 0
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event is set, and then stop() would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._lost.wait()
            conn = self._conn
            if conn is not None and not self._lost.is_set():
                try:
                    async with self._busy, asyncio.timeout(PROBE_TIMEOUT):
                        await conn.fetchval("SELECT 1")
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("listener connection is not answering; reconnecting")
            await self._drop()
            while True:
                try:
                    async with self._busy:
                        await self._connect()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failures += 1
                    delay = min(2.0, 0.05 * 2**failures)
                    log.warning("listener reconnect failed (%s); retrying in %.2fs", e, delay)
                    await asyncio.sleep(delay)
            failures = 0
            log.info("listener reconnected; rescanning")
            self._on_reconnect()


def _calling(callback: Callable[[str], None]) -> Callable[[Any, int, str, object], None]:
    """An asyncpg listener that gives ``callback`` the payload, and logs what it raises."""

    def deliver(conn: Any, pid: int, channel: str, payload: object) -> None:
        try:
            callback(str(payload))
        except Exception:
            log.exception("handling a notification on %s failed", channel)

    return deliver
