"""A rolling deploy whose new version adds a job type loses none of that type's jobs."""

from __future__ import annotations

import pytest

from shardq import JobService

from .conftest import Cluster, eventually

pytestmark = pytest.mark.postgres


async def test_jobs_of_a_new_type_wait_for_upgraded_runners(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [await cluster.start_worker(concurrency=4) for _ in range(3)]

    async def spread(n: int) -> bool:
        return len(await cluster.owners()) == n

    await eventually(lambda: spread(3), what="three runners to share the shards")
    monkeypatch.setenv("SHARDQ_TEST_VERSION", "2")
    async with JobService(cluster.url, runner=False) as web:
        # The first runner is upgraded; jobs of the new type arrive on every shard.
        assert old[0].terminate() == 0
        await cluster.start_worker(concurrency=4)
        await eventually(lambda: spread(3), what="the upgraded runner to join")
        ids = await web.submit("fresh", [{"i": i} for i in range(60)])
        # The other runners are upgraded one at a time.
        for worker in old[1:]:
            assert worker.terminate() == 0
            await cluster.start_worker(concurrency=4)
        for job_id in ids:
            st = await web.wait(job_id, timeout=60)
            assert st.status == "complete", st
        assert await web.dead_letters() == []
