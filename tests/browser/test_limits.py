"""End to end in headless Chromium: the flow-control panel (set a type's concurrency and rate
from its form, watch it follow the live feed, see the server refuse a bad value) and why a
held job waits, in the job detail, against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardq import JobService, Throttled
from tests.http.server import LiveServer

TOKEN = "limits-token"


class Gates:
    """asyncio events on the server's loop that the tests open to let a job finish."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def get(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())


@pytest.fixture(scope="module")
def gates() -> Gates:
    return Gates()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> Iterator[LiveServer]:
    from .conftest import require_chromium

    require_chromium()
    db = tmp_path_factory.mktemp("limits") / "jobs.db"

    def make() -> JobService:
        jobs = JobService(f"sqlite:///{db}", concurrency=8)

        @jobs.handler("api.call")
        async def call(p: dict[str, Any]) -> dict[str, Any]:
            await gates.get(p["gate"]).wait()
            return p

        @jobs.handler("email.send")
        @jobs.handler("report.build")
        async def echo(p: Any) -> Any:
            return p

        @jobs.handler("pushback")
        async def pushback(p: Any) -> None:
            raise Throttled(retry_after=600)

        return jobs

    live = LiveServer(make, TOKEN).start()
    yield live

    async def open_all(jobs: JobService) -> None:
        for event in gates.events.values():
            event.set()

    live.call(open_all)
    live.stop()


def open_dashboard(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.get_by_test_id("live")).to_have_text("live")


def _limit(server: LiveServer, job_type: str) -> Any:
    async def read(jobs: JobService) -> Any:
        return {lim.job_type: lim for lim in await jobs.limits()}.get(job_type)

    return server.call(read)


def show_job(page: Any, job_id: str) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("search-id").fill(job_id)
    page.get_by_test_id("search-btn").click()
    expect(page.get_by_test_id("detail-id")).to_have_text(job_id)


def test_set_a_limit_from_the_form_and_watch_it_fill(
    page: Any, server: LiveServer, gates: Gates, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, server)
    expect(page.get_by_test_id("limit-api.call")).to_have_count(0)
    page.get_by_test_id("limit-type").fill("api.call")
    page.get_by_test_id("limit-concurrency").fill("2")
    page.get_by_test_id("limit-rate-count").fill("10")
    page.get_by_test_id("limit-rate-per").fill("60")
    page.get_by_test_id("limit-rate-burst").fill("4")
    page.get_by_test_id("limit-save").click()
    message = page.get_by_test_id("limit-message")
    expect(message).to_have_text("saved the limits of api.call")

    row = page.get_by_test_id("limit-api.call")
    running = row.get_by_test_id("limit-running")
    expect(running).to_have_attribute("data-max", "2")
    expect(running).to_have_attribute("data-value", "0")
    expect(row.get_by_test_id("limit-rate")).to_have_text("10 / 60 s +4")
    expect(row.get_by_test_id("limit-tokens")).to_have_attribute("data-max", "5")
    stored = _limit(server, "api.call")
    assert (stored.concurrency, stored.rate.count, stored.rate.per, stored.rate.burst) == (
        2,
        10,
        60.0,
        4,
    )

    # Three jobs: two take the slots, the page follows through the live feed (no reload),
    # and the third waits, its detail saying why.
    async def submit(jobs: JobService) -> list[str]:
        return [await jobs.submit("api.call", {"gate": f"call-{i}"}) for i in range(3)]

    ids = server.call(submit)
    expect(running).to_have_attribute("data-value", "2")
    expect(running).to_contain_text("2 / 2")
    expect(row.get_by_test_id("limit-tokens")).to_contain_text("/ 5")

    async def queued(jobs: JobService) -> list[str]:
        return [j for j in ids if (await jobs.status(j)).status == "queued"]

    [held] = server.call(queued)
    show_job(page, held)
    waiting = page.get_by_test_id("detail-waiting")
    expect(waiting).to_be_visible()
    expect(waiting).to_have_text("waiting for a slot of api.call")
    page.screenshot(path=str(artifacts_dir / "dashboard-limits.png"), full_page=True)

    # Edit fills the form with what the type has; an empty concurrency removes it, the rate
    # stays, and the held job starts.
    row.get_by_test_id("edit-api.call").click()
    expect(page.get_by_test_id("limit-concurrency")).to_have_value("2")
    expect(page.get_by_test_id("limit-rate-per")).to_have_value("60")
    page.get_by_test_id("limit-concurrency").fill("")
    page.get_by_test_id("limit-save").click()
    expect(running).to_have_text("no limit")
    expect(row.get_by_test_id("limit-rate")).to_have_text("10 / 60 s +4")
    stored = _limit(server, "api.call")
    assert stored.concurrency is None and stored.rate is not None
    expect(page.get_by_test_id("detail-status")).to_have_text("processing")
    expect(waiting).to_be_hidden()

    async def finish(jobs: JobService) -> None:
        for i in range(3):
            gates.get(f"call-{i}").set()
        for j in ids:
            await jobs.wait(j, timeout=15)

    server.call(finish)


BAD_VALUES: list[tuple[dict[str, str], str]] = [
    ({"limit-concurrency": "0"}, "refused: invalid job: concurrency must be 1..1000000, got 0"),
    ({"limit-concurrency": "2.5"}, "concurrency must be a positive integer or None, got 2.5"),
    ({"limit-rate-count": "5", "limit-rate-per": "0"}, "Rate per must be 0.001..86400 seconds"),
    ({"limit-rate-count": "5", "limit-rate-burst": "-1"}, "Rate burst must be 0..1000000"),
    ({"limit-type": "nobody.handles"}, "unknown job type 'nobody.handles'"),
]


def test_a_bad_value_shows_the_server_s_message_and_changes_nothing(
    page: Any, server: LiveServer
) -> None:
    from playwright.sync_api import expect

    async def put(jobs: JobService) -> None:
        await jobs.limit("email.send", concurrency=3)

    server.call(put)
    open_dashboard(page, server)
    before = _limit(server, "email.send")
    message = page.get_by_test_id("limit-message")
    for fields, needle in BAD_VALUES:
        page.get_by_test_id("limit-type").fill("email.send")
        page.get_by_test_id("limit-type").dispatch_event("change")
        expect(page.get_by_test_id("limit-concurrency")).to_have_value("3")
        for testid, value in fields.items():
            page.get_by_test_id(testid).fill(value)
        page.get_by_test_id("limit-save").click()
        expect(message).to_contain_text(needle)
        expect(message).to_have_class("message bad")
        expect(page.get_by_test_id("toast")).to_contain_text(needle.removeprefix("refused: "))
        assert _limit(server, "email.send") == before
    expect(page.get_by_test_id("limit-email.send").get_by_test_id("limit-running")).to_contain_text(
        "/ 3"
    )


def test_paused_and_throttled_badges_follow_the_feed(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, server)

    async def hold(jobs: JobService) -> str:
        await jobs.pause(job_type="report.build")
        job_id = await jobs.submit("report.build", {"n": 1})
        await jobs.submit("pushback", {})
        return job_id

    job_id = server.call(hold)
    paused = page.get_by_test_id("limit-report.build")
    expect(paused.get_by_test_id("badge-paused")).to_have_text("paused")
    expect(paused.get_by_test_id("badge-throttled")).to_have_count(0)
    pushback = page.get_by_test_id("limit-pushback")
    expect(pushback.get_by_test_id("badge-throttled")).to_contain_text("throttled until")
    expect(pushback.get_by_test_id("badge-paused")).to_have_count(0)
    show_job(page, job_id)
    expect(page.get_by_test_id("detail-waiting")).to_have_text("paused (job type report.build)")

    async def resume(jobs: JobService) -> None:
        await jobs.resume(job_type="report.build")
        await jobs.wait(job_id, timeout=15)

    server.call(resume)
    expect(paused.get_by_test_id("badge-paused")).to_have_count(0)
    expect(page.get_by_test_id("detail-status")).to_have_text("complete")
    expect(page.get_by_test_id("detail-waiting")).to_be_hidden()
