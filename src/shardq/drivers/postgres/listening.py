"""LISTEN and UNLISTEN on many channels of one connection in one round trip.

asyncpg's ``add_listener`` sends one prepared ``LISTEN`` per channel, two round trips each,
and a runner listens on the channel of every shard it owns: taking 300 shards that way costs
hundreds of milliseconds before the runner may read them (on start, and on every take-over).
Here the statements go as one simple-query batch, and the callback is registered as
``add_listener`` registers it; where asyncpg's registry is not the one known (another
version), this falls back to ``add_listener`` per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import asyncpg

Listener = Callable[[Any, int, str, object], None]


def _registry(conn: asyncpg.Connection) -> dict[str, set[Any]] | None:
    # asyncpg keeps {channel: {callback wrappers}} and dispatches a notification to the
    # wrappers of its channel; LISTEN itself is plain SQL.
    registry = getattr(conn, "_listeners", None)
    return registry if isinstance(registry, dict) else None


def _quoted(channel: str) -> str:
    return '"' + channel.replace('"', '""') + '"'


async def listen(conn: asyncpg.Connection, channels: Collection[str], callback: Listener) -> None:
    """Deliver notifications on ``channels`` to ``callback``, as ``add_listener`` would."""
    todo = sorted(channels)
    if not todo:
        return
    first, rest = todo[0], todo[1:]
    await conn.add_listener(first, callback)
    registry = _registry(conn)
    wrapper = None
    if registry is not None:
        wrapper = next((w for w in registry.get(first, ()) if w.cb == callback), None)
    if registry is None or wrapper is None:
        for channel in rest:
            await conn.add_listener(channel, callback)
        return
    new = [ch for ch in rest if ch not in registry]
    if new:
        await conn.execute("; ".join(f"LISTEN {_quoted(ch)}" for ch in new))
    for channel in rest:
        registry.setdefault(channel, set()).add(wrapper)


async def unlisten(conn: asyncpg.Connection, channels: Collection[str], callback: Listener) -> None:
    """Stop delivering notifications on ``channels`` to ``callback``."""
    registry = _registry(conn)
    if registry is None:
        for channel in channels:
            await conn.remove_listener(channel, callback)
        return
    gone = []
    for channel in sorted(channels):
        wrappers = registry.get(channel)
        if wrappers is None:
            continue
        wrappers.difference_update([w for w in wrappers if w.cb == callback])
        if not wrappers:
            del registry[channel]
            gone.append(channel)
    if gone:
        await conn.execute("; ".join(f"UNLISTEN {_quoted(ch)}" for ch in gone))
