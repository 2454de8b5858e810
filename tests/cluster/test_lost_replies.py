"""A write whose reply is lost: the server ran (and committed) it, the runner cannot know.

The runner talks to a real PostgreSQL server through a TCP proxy that, once armed, lets one
statement through and then cuts the connection before its reply reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest

from shardq import JobService
from shardq.context import current_job

pytestmark = pytest.mark.postgres

# Part of the runner's start statement (sent when a connection prepares it).
START_SQL = b"attempts = j.attempts + 1"
READY_FOR_QUERY = b"Z\x00\x00\x00\x05"


class FrontendFrames:
    """Splits the client-to-server byte stream into whole messages: untyped ones (a length,
    then a code) until the startup message, then a type byte and a length."""

    def __init__(self) -> None:
        self._buf = b""
        self._typed = False

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes, in order; a partial one waits for more."""
        self._buf += data
        out = []
        while (size := self._next_size()) is not None and len(self._buf) >= size:
            msg, self._buf = self._buf[:size], self._buf[size:]
            if not self._typed:
                code = int.from_bytes(msg[4:8], "big")
                self._typed = code not in (80877103, 80877104)  # SSL / GSS requests
            out.append(msg)
        return out

    def _next_size(self) -> int | None:
        if not self._typed:
            return int.from_bytes(self._buf[:4], "big") if len(self._buf) >= 8 else None
        return 1 + int.from_bytes(self._buf[1:5], "big") if len(self._buf) >= 5 else None


class ReplyCutter:
    """A TCP proxy to PostgreSQL. Armed with a piece of SQL, it watches for the message that
    prepares it, forwards the next one (which runs it) and, once the server has answered
    that in full (ready for the next query: the statement ran and committed), closes the
    connection instead of passing the answer on."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.marker: bytes | None = None
        self.cut = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(self.host, self.port)
        link = Link(self, cr, cw, sr, sw)
        pumps = [asyncio.create_task(link.upstream()), asyncio.create_task(link.downstream())]
        for t in pumps:
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pumps, return_exceptions=True)


class Link:
    """One client connection relayed to the server by a ``ReplyCutter``."""

    def __init__(
        self,
        cutter: ReplyCutter,
        cr: asyncio.StreamReader,
        cw: asyncio.StreamWriter,
        sr: asyncio.StreamReader,
        sw: asyncio.StreamWriter,
    ) -> None:
        self.cutter = cutter
        self.cr, self.cw, self.sr, self.sw = cr, cw, sr, sw
        self.running = asyncio.Event()
        self.statement: bytes | None = None

    def shut(self) -> None:
        for w in (self.cw, self.sw):
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def upstream(self) -> None:
        frames = FrontendFrames()
        while data := await self.cr.read(65536):
            for msg in frames.feed(data):
                self._watch(msg)
                self.sw.write(msg)
            await self.sw.drain()
        self.shut()

    def _watch(self, msg: bytes) -> None:
        # The statement to cut is named in its Parse ('P': name, SQL) and run by a Bind
        # ('B': portal, statement name) that names it.
        marker = self.cutter.marker
        if msg[:1] == b"P" and marker is not None and marker in msg:
            self.cutter.marker = None
            self.statement = msg[5 : msg.index(b"\0", 5)]
        elif msg[:1] == b"B" and self.statement is not None:
            portal_end = msg.index(b"\0", 5)
            if msg[portal_end + 1 : msg.index(b"\0", portal_end + 1)] == self.statement:
                self.running.set()

    async def downstream(self) -> None:
        held = b""
        while data := await self.sr.read(65536):
            if self.running.is_set():
                held += data
                if READY_FOR_QUERY in held:
                    self.shut()
                    self.cutter.cut.set()
                    return
                continue
            self.cw.write(data)
            await self.cw.drain()
        self.shut()


async def test_a_start_whose_reply_was_lost_is_undone_and_each_job_runs_once(
    pg_url: str,
) -> None:
    parts = urlsplit(pg_url)
    cutter = ReplyCutter(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await cutter.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    via_proxy = urlunsplit(parts._replace(netloc=netloc))
    try:
        async with JobService(pg_url, runner=False) as producer:
            ids = await producer.submit("count", [{"n": i} for i in range(20)])
        runs: Counter[str] = Counter()
        jobs = JobService(via_proxy)

        @jobs.handler("count")
        async def count(payload: dict[str, int]) -> None:
            runs[current_job().job_id] += 1

        cutter.marker = START_SQL
        async with jobs:
            await asyncio.wait_for(cutter.cut.wait(), timeout=20)
            finals = [await jobs.wait(i, timeout=20) for i in ids]
        assert [f.status for f in finals] == ["complete"] * len(ids)
        assert runs == Counter({i: 1 for i in ids})
        # The cut start had committed: its jobs were put back, with the reason in history.
        undone = [f for f in finals if any("not confirmed" in (h.error or "") for h in f.history)]
        assert undone, "no job shows its unconfirmed start undone"
    finally:
        await cutter.close()
