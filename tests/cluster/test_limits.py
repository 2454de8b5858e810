"""A type's concurrency limit holds across three runner processes and a kill -9."""

from __future__ import annotations

import bisect
import json
import time
from pathlib import Path

import pytest

from shardq import JobService

from .conftest import Cluster, eventually

pytestmark = pytest.mark.postgres

LIMIT = 4


def _most_at_once(record: Path, killed_at: float) -> int:
    """The most handlers running at once, from their own start/end lines; one that never
    ended died with its runner (at ``killed_at``)."""
    spans: dict[str, list[float]] = {}
    for log in record.glob("*.log"):
        for line in log.read_text().splitlines():
            kind, job, at = line.split()
            spans.setdefault(job, [0.0, killed_at])["SE".index(kind)] = float(at)
    edges = sorted(
        [(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def test_a_concurrency_limit_holds_across_runners_and_a_kill_9(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("SHARDQ_TEST_LIMIT", str(LIMIT))
    monkeypatch.setenv("SHARDQ_TEST_RECORD", str(record))
    workers = [await cluster.start_worker(concurrency=8) for _ in range(3)]

    async def spread() -> bool:
        return len(await cluster.owners()) == 3

    await eventually(spread, what="three runners to share the shards")
    async with JobService(cluster.url, runner=False) as web:
        ids = await web.submit("limited", [{"i": i, "s": 0.02} for i in range(150)])

        async def some_done() -> bool:
            n = await cluster.db.fetchval(
                "SELECT count(*) FROM jobs WHERE type = 'limited' AND state = 'complete'"
            )
            return int(n) >= 30

        await eventually(some_done, what="a fifth of the jobs to finish")
        workers[0].kill9()
        killed_at = time.time()
        for job_id in ids:
            st = await web.wait(job_id, timeout=60)
            assert st.status == "complete", st
        limits = {lim.job_type: lim for lim in await web.limits()}
    assert limits["limited"].concurrency == LIMIT
    assert _most_at_once(record, killed_at) <= LIMIT
    # The limit was reached (the test would pass vacuously otherwise).
    assert _most_at_once(record, killed_at) == LIMIT


RATE = 20


async def test_a_rate_holds_over_every_window_across_runners_and_a_kill_9(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDQ_TEST_RATE", str(RATE))
    workers = [await cluster.start_worker(concurrency=8) for _ in range(3)]

    async def spread() -> bool:
        return len(await cluster.owners()) == 3

    await eventually(spread, what="three runners to share the shards")
    async with JobService(cluster.url, runner=False) as web:
        ids = await web.submit("paced", [{} for _ in range(60)])

        async def some_done() -> bool:
            n = await cluster.db.fetchval(
                "SELECT count(*) FROM jobs WHERE type = 'paced' AND state = 'complete'"
            )
            return int(n) >= 15

        await eventually(some_done, what="a quarter of the jobs to finish")
        workers[1].kill9()
        for job_id in ids:
            assert (await web.wait(job_id, timeout=60)).status == "complete"
    rows = await cluster.db.fetch("SELECT history::text FROM jobs WHERE type = 'paced'")
    # Every start (attempt) is in the history, stamped with the admitting step's time.
    starts = sorted(h[1] for r in rows for h in json.loads(r[0]) if h[0] == "processing")
    assert len(starts) >= 60
    most = max(bisect.bisect_left(starts, t + 1000) - i for i, t in enumerate(starts))
    # At most RATE in any one-second window (burst 0). One more is allowed: a step stamps
    # its starts with the time it began, and a step of another runner that waited on the
    # type's lock may be admitted after a later-stamped one.
    assert most <= RATE + 1, most
    # ... and the rate was used, not merely respected by a trickle.
    assert most >= RATE - 2, most


async def test_a_pause_from_another_process_holds_every_runner_until_resumed(
    cluster: Cluster,
) -> None:
    for _ in range(2):
        await cluster.start_worker(concurrency=8)

    async def spread() -> bool:
        return len(await cluster.owners()) == 2

    await eventually(spread, what="two runners to share the shards")
    async with JobService(cluster.url, runner=False) as web:
        await web.pause(job_type="noop")
        held = await web.submit("noop", [{} for _ in range(20)])
        marker = await web.submit("sleep", {"s": 0})
        assert (await web.wait(marker, timeout=30)).status == "complete"
        for job_id in held:
            st = await web.status(job_id)
            assert (st.status, st.waiting) == ("queued", "paused (job type noop)"), st
        await web.resume(job_type="noop")
        for job_id in held:
            assert (await web.wait(job_id, timeout=30)).status == "complete"
