"""The notifications that announce submitted jobs to their owners.

A notification's payload carries what an owner needs to schedule the jobs without reading
them. Each shard has a channel of its own (``job_channel``), on which only its owner listens:
a submit whose jobs fall in a few shards is announced there, so a runner hears its own jobs
and not the whole cluster's. A batch over many shards is announced on the shared channel
(``CHANNEL``), which every process hears, as is every submit while a runner that does not
listen per shard (an earlier version) is live; a batch too large for a few notifications is
announced as a rescan instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..base import NewJob
from .statements import CHANNEL, DONE_CHANNEL

#: A notification payload must stay under 8000 bytes; chunks are kept under this.
_PAYLOAD_BYTES = 7000
#: More chunks than this on the shared channel and the listeners are told to rescan instead.
_MAX_CHUNKS = 8
#: More notifications than this for one submit and it is announced on the shared channel.
_MAX_SHARD_NOTES = 32

#: Channels and payloads, one notification per position (``pg_notify(channel, payload)``).
Notes = tuple[list[str], list[str]]


def job_channel(shard: int) -> str:
    """The channel announcing the jobs submitted to ``shard``; its owner listens on it."""
    return f"{CHANNEL}_{shard}"


def shared_notes(payloads: Sequence[str]) -> Notes:
    """``payloads`` as notifications on the shared channel."""
    return [CHANNEL] * len(payloads), list(payloads)


def finished_notes(ids: Sequence[int]) -> Notes:
    """The notifications announcing jobs ``ids`` as finished, 300 ids to a notification."""
    payloads = ["f" + json.dumps(ids[i : i + 300]) for i in range(0, len(ids), 300)]
    return [DONE_CHANNEL] * len(payloads), payloads


def submitted_notes(jobs: Sequence[NewJob], *, by_shard: bool) -> Notes:
    """The notifications announcing ``jobs``: on their shards' channels when ``by_shard`` and
    they fall in few shards, otherwise on the shared channel (see the module docstring)."""
    if by_shard:
        groups: dict[int, list[NewJob]] = {}
        for j in jobs:
            groups.setdefault(j.shard, []).append(j)
        if len(groups) <= _MAX_SHARD_NOTES:
            channels: list[str] = []
            payloads: list[str] = []
            for shard, group in groups.items():
                chunks = _chunks(group, _MAX_SHARD_NOTES - len(payloads))
                if chunks is None:
                    break
                channels += [job_channel(shard)] * len(chunks)
                payloads += chunks
            else:
                return channels, payloads
    return shared_notes(_chunks(jobs, _MAX_CHUNKS) or ["r"])


def _chunks(jobs: Sequence[NewJob], limit: int) -> list[str] | None:
    """``s[[id, shard, priority, run_at, key, type], ...]`` payloads of at most
    ``_PAYLOAD_BYTES`` each, announcing ``jobs`` in order; None if more than ``limit``."""
    out: list[str] = []
    parts: list[str] = []
    size = 1
    for j in jobs:
        key = "null" if j.key is None else json.dumps(j.key)
        item = f"[{j.id},{j.shard},{j.priority},{j.run_at},{key},{json.dumps(j.type)}]"
        n = len(item.encode()) + 1
        if parts and size + n + 1 > _PAYLOAD_BYTES:
            out.append("s[" + ",".join(parts) + "]")
            if len(out) >= limit:
                return None
            parts, size = [], 1
        parts.append(item)
        size += n
    if parts:
        out.append("s[" + ",".join(parts) + "]")
    return out if len(out) <= limit else None
