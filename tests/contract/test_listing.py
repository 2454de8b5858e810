"""Listing jobs with filters and pages, and the stats that summarise them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shardq import JobError

from .conftest import ServiceFactory


async def test_list_filters_and_pages_newest_first(make_service: ServiceFactory) -> None:
    jobs = make_service(runner=False)
    async with jobs:
        t0 = time.time()
        a = await jobs.submit("mail", [1, 2, 3], priority="high", key="acct-1")
        b = await jobs.submit("report", [4, 5], priority="low")
        await jobs.cancel(b[0])

        everything = await jobs.list_jobs()
        assert [j.id for j in everything] == list(reversed(a + b))
        assert [j.id for j in await jobs.list_jobs(type="mail")] == list(reversed(a))
        assert [j.id for j in await jobs.list_jobs(priority="low")] == list(reversed(b))
        assert [j.id for j in await jobs.list_jobs(key="acct-1", status="queued")] == list(
            reversed(a)
        )
        assert [j.id for j in await jobs.list_jobs(status="cancelled")] == [b[0]]
        assert await jobs.list_jobs(created_before=t0 - 60) == []
        assert len(await jobs.list_jobs(created_after=t0 - 60)) == 5

        page1 = await jobs.list_jobs(limit=2)
        page2 = await jobs.list_jobs(limit=2, before=page1[-1].id)
        page3 = await jobs.list_jobs(limit=2, before=page2[-1].id)
        assert [j.id for j in page1 + page2 + page3] == [j.id for j in everything]

        stats = await jobs.stats()
        assert stats.by_status["queued"] == 4 and stats.by_status["cancelled"] == 1
        assert stats.queued_by_priority == {"critical": 0, "high": 3, "normal": 0, "low": 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "done"},
        {"status": ["queued"]},
        {"priority": "urgent"},
        {"priority": ["low"]},
        {"limit": 0},
        {"limit": True},
        {"before": "x"},
    ],
)
async def test_bad_list_filters_are_refused(
    make_service: ServiceFactory, kwargs: dict[str, Any]
) -> None:
    jobs = make_service(runner=False)
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.list_jobs(**kwargs)
        assert info.value.reason in ("Validation", "NotFound")
