"""End to end in headless Chromium: the dashboard of a real server, driven by clicks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shardq import JobError, JobService, RetryPolicy
from tests.http.server import LiveServer

TOKEN = "browser-token"


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
    db = tmp_path_factory.mktemp("browser") / "jobs.db"

    def make() -> JobService:
        jobs = JobService(f"sqlite:///{db}", concurrency=8, retry=RetryPolicy(base=0.01, cap=0.05))

        @jobs.handler("echo")
        async def echo(p: Any) -> Any:
            return {"echo": p}

        @jobs.handler("gated")
        async def gated(p: dict[str, Any]) -> dict[str, Any]:
            await gates.get(p["gate"]).wait()
            return {"opened": p["gate"]}

        @jobs.handler("slow")
        async def slow(p: Any) -> None:
            await asyncio.sleep(600)

        @jobs.handler("boom")
        async def boom(p: Any) -> None:
            raise JobError.from_validation(None, "the payload was refused")

        return jobs

    live = LiveServer(make, TOKEN).start()
    yield live
    live.stop()


async def until_status(jobs: JobService, job_id: str, status: str, timeout: float = 15) -> None:
    seen = asyncio.Event()

    def on(jid: str, st: str) -> None:
        if jid == job_id and st == status:
            seen.set()

    jobs.add_listener(on)
    try:
        if (await jobs.status(job_id)).status != status:
            async with asyncio.timeout(timeout):
                await seen.wait()
    finally:
        jobs.remove_listener(on)


def open_dashboard(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.get_by_test_id("live")).to_have_text("live")
    # The token moved from the URL into session storage.
    assert "token" not in page.url


def test_watch_a_submitted_job_complete(
    page: Any, server: LiveServer, gates: Gates, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, server)
    page.locator("details.submit summary").click()
    page.get_by_test_id("submit-type").fill("gated")
    page.get_by_test_id("submit-payload").fill('{"gate": "g1"}')
    page.get_by_test_id("submit-priority").select_option("high")
    page.get_by_test_id("submit-btn").click()

    status = page.get_by_test_id("detail-status")
    expect(status).to_have_text("processing")
    job_id = page.get_by_test_id("detail-id").inner_text()
    row = page.get_by_test_id(f"job-{job_id}")
    expect(row.get_by_test_id("status")).to_have_text("processing")
    expect(page.get_by_test_id("count-processing")).to_have_text("1")

    async def open_gate(jobs: JobService) -> None:
        gates.get("g1").set()

    server.call(open_gate)
    # Pushed over SSE: the detail, its row and the counters follow without a reload.
    expect(status).to_have_text("complete")
    expect(row.get_by_test_id("status")).to_have_text("complete")
    timeline = page.get_by_test_id("timeline").locator("li")
    expect(timeline).to_have_count(3)
    assert [timeline.nth(i).get_attribute("data-status") for i in range(3)] == [
        "queued",
        "processing",
        "complete",
    ]
    expect(page.get_by_test_id("detail-result")).to_contain_text('"opened": "g1"')
    expect(page.get_by_test_id("count-processing")).to_have_text("0")
    expect(page.get_by_test_id("count-complete")).not_to_have_text(re.compile("^[\\u20130]$"))
    page.screenshot(path=str(artifacts_dir / "dashboard-job-complete.png"), full_page=True)

    st = server.call(lambda jobs: jobs.status(job_id))
    assert st.status == "complete" and st.job is not None and st.job.priority == "high"


def test_replay_a_dead_letter_by_clicking(
    page: Any, server: LiveServer, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    async def fail_one(jobs: JobService) -> str:
        job_id = await jobs.submit("boom", {"order": 7})
        await jobs.wait(job_id, timeout=15)
        [dl] = [d for d in await jobs.dead_letters(limit=100) if d.job_id == job_id]
        return dl.id

    dlq_id = server.call(fail_one)
    open_dashboard(page, server)
    row = page.get_by_test_id(f"dlq-{dlq_id}")
    expect(row).to_contain_text("the payload was refused")
    row.get_by_test_id(f"replay-{dlq_id}").click()
    expect(page.get_by_test_id("toast")).to_contain_text(f"dead letter {dlq_id} replayed as job")
    expect(row).to_contain_text("replayed →")
    page.screenshot(path=str(artifacts_dir / "dashboard-replayed.png"), full_page=True)

    dl = server.call(lambda jobs: jobs.dead_letter(dlq_id))
    assert dl.replayed_at is not None and dl.replay_job_id is not None
    replayed = server.call(lambda jobs: jobs.status(dl.replay_job_id or ""))
    assert replayed.job is not None and replayed.job.payload == {"order": 7}
    # Replaying twice is refused with a clear error, also over HTTP.
    r = httpx.post(
        f"{server.url}/api/dead-letters/{dlq_id}/replay",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 409 and r.json()["error"]["reason"] == "AlreadyReplayed"


def test_cancel_a_running_job_by_clicking(
    page: Any, server: LiveServer, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    async def start_slow(jobs: JobService) -> str:
        job_id = await jobs.submit("slow", {"video": "big.mov"}, priority="low")
        await until_status(jobs, job_id, "processing")
        return job_id

    job_id = server.call(start_slow)
    open_dashboard(page, server)
    page.get_by_test_id("search-id").fill(job_id)
    page.get_by_test_id("search-btn").click()
    row = page.get_by_test_id(f"job-{job_id}")
    expect(row.get_by_test_id("status")).to_have_text("processing")
    row.get_by_test_id(f"cancel-{job_id}").click()
    expect(row.get_by_test_id("status")).to_have_text("cancelled")
    expect(page.get_by_test_id("detail-status")).to_have_text("cancelled")
    expect(page.get_by_test_id(f"cancel-{job_id}")).to_be_hidden()
    page.screenshot(path=str(artifacts_dir / "dashboard-cancelled.png"), full_page=True)

    st = server.call(lambda jobs: jobs.status(job_id))
    assert st.status == "cancelled"
    assert [h.status for h in st.history] == ["queued", "processing", "cancelled"]


def test_without_the_token_the_dashboard_reads_nothing(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    async def submit(jobs: JobService) -> str:
        job_id = await jobs.submit("echo", {"private": "data"}, delay=3600)
        return job_id

    job_id = server.call(submit)
    page.goto(server.url + "/")  # no token in the link
    expect(page.get_by_test_id("live")).to_have_text("needs the API token")
    expect(page.get_by_test_id("toast")).to_contain_text("set the API token")
    expect(page.get_by_test_id(f"job-{job_id}")).to_have_count(0)
    expect(page.get_by_test_id("count-queued")).to_have_text("\u2013")
    # Given the token (the button's prompt), it reads, goes live and can write.
    page.once("dialog", lambda dialog: dialog.accept(TOKEN))
    page.get_by_test_id("token-btn").click()
    expect(page.get_by_test_id("live")).to_have_text("live")
    expect(page.get_by_test_id(f"job-{job_id}")).to_be_visible()
    page.get_by_test_id(f"cancel-{job_id}").click()
    expect(page.get_by_test_id(f"job-{job_id}").get_by_test_id("status")).to_have_text("cancelled")


def test_reads_without_the_token_are_refused(server: LiveServer) -> None:
    for path in ("/api/jobs", "/api/stats", "/api/dead-letters", "/api/runners", "/api/events"):
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["reason"] == "Unauthorized", path
    assert httpx.get(server.url + "/", timeout=10).status_code == 200
    r = httpx.get(server.url + "/api/jobs", headers={"Host": "rebound.example"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["reason"] == "BadHost"


def test_dashboard_under_load(browser: Any, artifacts_dir: Path) -> None:
    from .capture import capture

    out = artifacts_dir / "dashboard-under-load.png"
    stats = capture(browser, out, samples=8)
    assert out.stat().st_size > 20_000
    assert stats["by_status"]["complete"] > 100
    assert stats["throughput"]["completed_per_s_1m"] > 0
    assert stats["latency_ms"]["start_p50_ms"] is not None


def test_search_by_type_status_and_time(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    async def make(jobs: JobService) -> list[str]:
        ids = await jobs.submit("echo", [{"n": i} for i in range(3)], key="search-key")
        for j in ids:
            await jobs.wait(j, timeout=15)
        return ids

    ids = server.call(make)
    open_dashboard(page, server)
    page.get_by_test_id("search-type").fill("echo")
    page.get_by_test_id("search-status").select_option("complete")
    page.get_by_test_id("search-since").select_option("300")
    page.get_by_test_id("search-btn").click()
    for j in ids:
        expect(page.get_by_test_id(f"job-{j}")).to_be_visible()
    # Only this module's echo jobs match (the other tests' jobs have other types).
    rows = page.get_by_test_id("jobs").locator("tr")
    expect(rows).to_have_count(3)
    expect(rows.get_by_test_id("status")).to_have_text(["complete"] * 3)
    page.get_by_test_id(f"job-{ids[0]}").click()
    expect(page.get_by_test_id("detail-id")).to_have_text(ids[0])
    expect(page.get_by_test_id("detail-result")).to_contain_text('"n": 0')
