from __future__ import annotations

import subprocess
import sys
from collections import Counter

from shardq.sharding import HashRing, shard_for


def test_shard_of_an_entity_is_pinned_forever() -> None:
    # These values are part of the storage format: changing them would move every entity.
    assert [shard_for(x) for x in ["key:a", "job:1", "key:account:42", ""]] == [176, 65, 15, 276]


def test_shard_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from shardq.sharding import shard_for; print(shard_for('key:account:42'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(shard_for("key:account:42"))


def test_entities_spread_evenly_over_shards() -> None:
    counts = Counter(shard_for(f"job:{i}", 300) for i in range(30_000))
    assert len(counts) == 300
    assert max(counts.values()) < 2 * 100 and min(counts.values()) > 100 // 2


def test_ring_spreads_shards_and_moves_few_when_a_runner_joins() -> None:
    before = HashRing(["r1", "r2", "r3"]).assignment(300)
    sizes = [len(s) for s in before.values()]
    assert sum(sizes) == 300 and min(sizes) > 50
    after = HashRing(["r1", "r2", "r3", "r4"]).assignment(300)
    moved = sum(1 for r in ("r1", "r2", "r3") for s in before[r] if s not in after[r])
    # Ideally a quarter of the shards move, all to the new runner.
    assert moved == len(after["r4"])
    assert moved < 300 * 0.4


def test_ring_is_the_same_whatever_the_order_of_runners() -> None:
    a = HashRing(["b", "a", "c"])
    b = HashRing(["c", "b", "a"])
    assert [a.owner(s) for s in range(300)] == [b.owner(s) for s in range(300)]
    assert HashRing([]).owner(1) is None
