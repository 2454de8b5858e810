"""The payloads of the notifications that announce submitted jobs to their owners.

A payload carries what an owner needs to schedule the jobs without reading them; a batch too
large for a few notifications is announced as a rescan instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..base import NewJob

#: A notification payload must stay under 8000 bytes; chunks are kept under this.
_PAYLOAD_BYTES = 7000
#: More chunks than this in one transaction and the listeners are told to rescan instead.
_MAX_CHUNKS = 8


def submitted_payloads(jobs: Sequence[NewJob]) -> list[str]:
    """The notifications announcing ``jobs``: each carries what the owner needs to schedule
    them (``s[[id, shard, priority, run_at, key, type], ...]``, under 8000 bytes), or a single
    ``r`` (rescan) when a batch would need too many."""
    out: list[str] = []
    parts: list[str] = []
    size = 1
    for j in jobs:
        key = "null" if j.key is None else json.dumps(j.key)
        item = f"[{j.id},{j.shard},{j.priority},{j.run_at},{key},{json.dumps(j.type)}]"
        n = len(item.encode()) + 1
        if parts and size + n + 1 > _PAYLOAD_BYTES:
            out.append("s[" + ",".join(parts) + "]")
            if len(out) >= _MAX_CHUNKS:
                return ["r"]
            parts, size = [], 1
        parts.append(item)
        size += n
    if parts:
        out.append("s[" + ",".join(parts) + "]")
    return out if len(out) <= _MAX_CHUNKS else ["r"]
