"""Listening on many channels at once: every channel delivers, in one batch of statements,
and the registry asyncpg dispatches from stays the one add_listener keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from shardq.drivers.postgres import listening

pytestmark = pytest.mark.postgres


async def test_many_channels_are_listened_on_and_dropped_together(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    sender = await asyncpg.connect(pg_url)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def got(c: Any, pid: int, channel: str, payload: object) -> None:
        heard.put_nowait((channel, str(payload)))

    channels = [f"many_{i}" for i in range(300)] + ['odd "name"']
    try:
        await listening.listen(conn, channels, got)
        listened = {r[0] for r in await conn.fetch("SELECT pg_listening_channels()")}
        assert listened == set(channels)
        await sender.execute("SELECT pg_notify(c, c) FROM unnest($1::text[]) c", channels)
        received = [await asyncio.wait_for(heard.get(), 5) for _ in channels]
        assert sorted(received) == sorted((c, c) for c in channels)

        # Another callback on one of them stays when this one leaves.
        other: list[str] = []
        await conn.add_listener("many_7", lambda *a: other.append(str(a[3])))
        await listening.unlisten(conn, channels, got)
        listened = {r[0] for r in await conn.fetch("SELECT pg_listening_channels()")}
        assert listened == {"many_7"}
        await sender.execute("SELECT pg_notify('many_7', 'x'), pg_notify('many_8', 'y')")
        await conn.execute("SELECT 1")  # a round trip: the notifications are in by then
        assert other == ["x"] and heard.empty()
    finally:
        await conn.close()
        await sender.close()


class _Plain:
    """A connection without asyncpg's registry: only the public calls are there."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def add_listener(self, channel: str, callback: Any) -> None:
        self.calls.append(("add", channel))

    async def remove_listener(self, channel: str, callback: Any) -> None:
        self.calls.append(("remove", channel))

    async def execute(self, sql: str) -> None:
        raise AssertionError("no batch without the known registry")


async def test_without_the_known_registry_each_channel_goes_through_the_public_calls() -> None:
    conn: Any = _Plain()
    await listening.listen(conn, ["b", "a"], lambda *a: None)
    await listening.unlisten(conn, ["a", "b"], lambda *a: None)
    assert conn.calls == [("add", "a"), ("add", "b"), ("remove", "a"), ("remove", "b")]
