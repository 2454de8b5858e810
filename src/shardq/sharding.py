"""Where an entity lives: entity id -> shard, and shard -> runner on a consistent-hash ring."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

#: Shards per deployment unless configured otherwise.
DEFAULT_SHARDS = 300
#: Points each runner takes on the hash ring; more points spread shards more evenly.
VIRTUAL_NODES = 128


def _hash64(text: str) -> int:
    # blake2b is in every CPython build and is stable across processes, machines and
    # Python versions, unlike the salted built-in hash().
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_for(entity_id: str, shards: int = DEFAULT_SHARDS) -> int:
    """The shard (``0 .. shards-1``) that owns ``entity_id``; the same everywhere, forever."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return _hash64(entity_id) % shards


class HashRing:
    """A consistent-hash ring of runners: adding or removing one runner moves few shards.

    Every runner that builds the ring from the same set of runner ids gets the same answer,
    so runners agree on the desired owner of each shard without talking to each other.
    """

    def __init__(self, runners: Iterable[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        points: list[tuple[int, str]] = []
        for runner in sorted(set(runners)):
            for v in range(virtual_nodes):
                points.append((_hash64(f"{runner}#{v}"), runner))
        points.sort()
        self._keys = [p[0] for p in points]
        self._owners = [p[1] for p in points]
        self.runners: frozenset[str] = frozenset(self._owners)

    def owner(self, shard: int) -> str | None:
        """The runner that should own ``shard``, or None on an empty ring."""
        if not self._keys:
            return None
        i = bisect.bisect(self._keys, _hash64(f"shard:{shard}")) % len(self._keys)
        return self._owners[i]

    def assignment(self, shards: int) -> dict[str, set[int]]:
        """The shards each runner should own, for shards ``0 .. shards-1``."""
        out: dict[str, set[int]] = {r: set() for r in self.runners}
        for s in range(shards):
            o = self.owner(s)
            if o is not None:
                out[o].add(s)
        return out
