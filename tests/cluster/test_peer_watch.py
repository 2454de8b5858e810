"""A runner killed -9 is noticed the moment its session ends, not at the next heartbeat."""

from __future__ import annotations

import time

import pytest

from shardq import JobService
from shardq.drivers.postgres.peer_watch import successor

from .conftest import Cluster, eventually

pytestmark = pytest.mark.postgres


def test_each_runner_watches_its_successor_in_the_ring() -> None:
    live = [("b", 2), ("a", 1), ("c", 3)]
    assert [successor(me, live) for me in "abc"] == [("b", 2), ("c", 3), ("a", 1)]
    assert successor("a", [("a", 1)]) is None
    assert successor("z", live) == ("a", 1)


async def test_shards_of_a_killed_runner_move_long_before_the_heartbeat(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a heartbeat of a minute, only the peer watch can explain a prompt takeover.
    monkeypatch.setenv("SHARDQ_TEST_HEARTBEAT", "60")
    workers = [await cluster.start_worker(concurrency=4) for _ in range(3)]
    victim = workers[0]

    async def spread() -> bool:
        return len(await cluster.owners()) == 3

    await eventually(spread, what="three runners to share the shards")
    async with JobService(cluster.url, runner=False) as web:
        victim.kill9()
        killed = time.monotonic()

        async def taken_over() -> bool:
            owners = await cluster.owners()
            return victim.runner_id not in owners and len(owners) == 2

        await eventually(taken_over, timeout=10, what="the victim's shards to move")
        moved_after = time.monotonic() - killed
        # And the cluster still runs jobs on every shard.
        ids = await web.submit("noop", [{}] * 30)
        for job_id in ids:
            assert (await web.wait(job_id, timeout=10)).status == "complete"
    assert moved_after < 5, f"took {moved_after:.2f} s"
