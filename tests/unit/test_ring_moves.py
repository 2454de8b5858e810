"""A runner joining or leaving moves only its own shards, about 1/N of them."""

from __future__ import annotations

import random

from shardq.sharding import HashRing

SHARDS = 300
#: How far above 1/N a join or leave may move (measured: at most 1.52/N over 50 random id
#: sets for 1..8 runners; docs/cluster.md has the table).
SLACK = 1.6


def owners(ids: list[str]) -> list[str | None]:
    ring = HashRing(ids)
    return [ring.owner(s) for s in range(SHARDS)]


def test_joins_and_leaves_move_only_the_changing_runners_shards() -> None:
    rng = random.Random(19)
    for _ in range(20):
        ids = [f"{rng.getrandbits(128):032x}" for _ in range(8)]
        for n in range(2, 9):
            before, after = owners(ids[: n - 1]), owners(ids[:n])
            moved = [s for s in range(SHARDS) if before[s] != after[s]]
            # A join takes shards only for the newcomer; read backwards, a leave gives away
            # only the leaver's shards.
            assert all(after[s] == ids[n - 1] for s in moved)
            assert len(moved) / SHARDS <= SLACK / n, (n, len(moved))
