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
        running = asyncio.Event()

        def shut() -> None:
            for w in (cw, sw):
                with contextlib.suppress(Exception):
                    w.transport.abort()

        async def upstream() -> None:
            # Frontend messages: untyped ones until the startup message, then a type byte
            # and a length. The statement to cut is named in its Parse ('P': name, SQL) and
            # run by a Bind ('B': portal, statement name) that names it.
            buf = b""
            typed = False
            statement: bytes | None = None
            while data := await cr.read(65536):
                buf += data
                while True:
                    if not typed:
                        if len(buf) < 8:
                            break
                        size = int.from_bytes(buf[:4], "big")
                        code = int.from_bytes(buf[4:8], "big")
                        typed = code not in (80877103, 80877104)  # SSL / GSS requests
                    else:
                        if len(buf) < 5:
                            break
                        size = 1 + int.from_bytes(buf[1:5], "big")
                    if len(buf) < size:
                        break
                    msg, buf = buf[:size], buf[size:]
                    if msg[:1] == b"P" and self.marker is not None and self.marker in msg:
                        self.marker = None
                        statement = msg[5 : msg.index(b"\0", 5)]
                    elif msg[:1] == b"B" and statement is not None:
                        portal_end = msg.index(b"\0", 5)
                        if msg[portal_end + 1 : msg.index(b"\0", portal_end + 1)] == statement:
                            running.set()
                    sw.write(msg)
                await sw.drain()
            shut()

        async def downstream() -> None:
            held = b""
            while data := await sr.read(65536):
                if running.is_set():
                    held += data
                    if READY_FOR_QUERY in held:
                        shut()
                        self.cut.set()
                        return
                    continue
                cw.write(data)
                await cw.drain()
            shut()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        for t in pumps:
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pumps, return_exceptions=True)


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
