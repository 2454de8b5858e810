"""End to end in headless Chromium: the schedules view, pausing job types and keys, and the
form a typed task's payload schema generates, against a real server."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shardq import JobService
from tests.http.server import LiveServer

TOKEN = "operations-token"
#: Small enough that a long note in the form is refused by the server, not the page.
MAX_PAYLOAD = 512


class Region(enum.Enum):
    EU = "eu"
    US = "us"


@dataclass
class Receipt:
    order_id: int
    email: str
    region: Region
    express: bool = False
    amount: float = 0.0
    note: str | None = None
    lines: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from .conftest import require_chromium

    require_chromium()
    db = tmp_path_factory.mktemp("operations") / "jobs.db"

    def make() -> JobService:
        jobs = JobService(f"sqlite:///{db}", concurrency=4, max_payload_bytes=MAX_PAYLOAD)

        @jobs.handler("report.build")
        async def build(p: Any) -> Any:
            return {"built": p}

        @jobs.task("receipt.send")
        async def send(r: Receipt) -> dict[str, Any]:
            return {"sent": r.order_id, "region": r.region.value, "lines": len(r.lines)}

        return jobs

    live = LiveServer(make, TOKEN).start()
    yield live
    live.stop()


def open_dashboard(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/#token={TOKEN}")
    expect(page.get_by_test_id("live")).to_have_text("live")


async def _schedule(jobs: JobService, name: str) -> Any:
    return {s.name: s for s in await jobs.schedules()}.get(name)


def test_schedules_view_follows_ticks_pauses_and_removes(
    page: Any, server: LiveServer, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    async def add(jobs: JobService) -> Any:
        await jobs.schedule(
            "digest/weekly", job_type="report.build", cron="0 8 * * MON", tz="Europe/Berlin"
        )
        return await jobs.schedule("heartbeat", job_type="report.build", every=1.0)

    server.call(add)
    open_dashboard(page, server)
    digest = page.get_by_test_id("schedule-digest/weekly")
    expect(digest.get_by_test_id("when")).to_have_text("0 8 * * MON")
    expect(digest.get_by_test_id("tz")).to_have_text("Europe/Berlin")
    expect(digest.get_by_test_id("job-type")).to_have_text("report.build")
    stored = server.call(lambda jobs: _schedule(jobs, "digest/weekly"))
    expect(digest.get_by_test_id("next-tick")).to_have_attribute(
        "data-at", stored.next_tick.isoformat()
    )
    expect(digest.get_by_test_id("last-tick")).to_have_text("—")

    # The page loads the schedules again once a tick has passed: the job shows up.
    beat = page.get_by_test_id("schedule-heartbeat")
    expect(beat.get_by_test_id("when")).to_have_text("every 1 s")
    link = beat.get_by_test_id("last-job")
    expect(link).to_be_visible(timeout=15_000)
    job_id = link.inner_text()
    link.click()
    expect(page.get_by_test_id("detail-id")).to_have_text(job_id)
    st = server.call(lambda jobs: jobs.status(job_id))
    assert st.schedule == "heartbeat" and st.tick is not None

    # Pause and resume by the toggle; the stored schedule follows.
    digest.get_by_test_id("toggle-digest/weekly").check()
    expect(page.get_by_test_id("toast")).to_contain_text("schedule digest/weekly paused")
    expect(digest).to_have_attribute("data-paused", "true")
    assert server.call(lambda jobs: _schedule(jobs, "digest/weekly")).paused
    digest.get_by_test_id("toggle-digest/weekly").uncheck()
    expect(digest).to_have_attribute("data-paused", "false")
    assert not server.call(lambda jobs: _schedule(jobs, "digest/weekly")).paused
    page.screenshot(path=str(artifacts_dir / "dashboard-schedules.png"), full_page=True)

    # Remove asks first; dismissed, nothing changes.
    page.once("dialog", lambda d: d.dismiss())
    digest.get_by_test_id("remove-digest/weekly").click()
    assert server.call(lambda jobs: _schedule(jobs, "digest/weekly")) is not None
    for name, row in (("digest/weekly", digest), ("heartbeat", beat)):
        page.once("dialog", lambda d: d.accept())
        row.get_by_test_id(f"remove-{name}").click()
        expect(row).to_have_count(0)
        assert server.call(lambda jobs, n=name: _schedule(jobs, n)) is None  # type: ignore[misc]
    expect(page.get_by_test_id("schedules")).to_contain_text("no schedules")


def test_pause_and_resume_a_job_type_and_a_key(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, server)
    expect(page.get_by_test_id("paused")).to_contain_text("no job type or key is paused")
    page.get_by_test_id("hold-type").fill("report.build")
    page.get_by_test_id("pause-type-btn").click()
    expect(page.get_by_test_id("held-type-report.build")).to_be_visible()
    page.get_by_test_id("hold-key").fill("account:42")
    page.get_by_test_id("pause-key-btn").click()
    expect(page.get_by_test_id("held-key-account:42")).to_be_visible()
    paused = server.call(lambda jobs: jobs.paused())
    assert (paused.job_types, paused.keys) == (["report.build"], ["account:42"])

    # A blank name is refused by the server, with its reason, and changes nothing.
    page.get_by_test_id("hold-type").fill("  ")
    page.get_by_test_id("pause-type-btn").click()
    expect(page.get_by_test_id("toast")).to_contain_text("job type")
    assert server.call(lambda jobs: jobs.paused()).job_types == ["report.build"]

    page.get_by_test_id("resume-type-report.build").click()
    expect(page.get_by_test_id("held-type-report.build")).to_have_count(0)
    page.get_by_test_id("hold-key").fill("account:42")
    page.get_by_test_id("resume-key-btn").click()
    expect(page.get_by_test_id("paused")).to_contain_text("no job type or key is paused")
    paused = server.call(lambda jobs: jobs.paused())
    assert (paused.job_types, paused.keys) == ([], [])


def test_submit_a_typed_task_from_its_schema(
    page: Any, server: LiveServer, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, server)
    expect(page.get_by_test_id("task-type")).to_have_value("receipt.send")
    fields = page.get_by_test_id("task-fields")
    required = fields.locator("label.field:has(.req)")
    expect(required).to_have_count(3)
    assert [required.nth(i).get_attribute("data-field") for i in range(3)] == [
        "order_id",
        "email",
        "region",
    ]
    order_id = page.get_by_test_id("task-field-order_id")
    expect(order_id).to_have_attribute("type", "number")
    expect(page.get_by_test_id("task-field-express")).to_have_attribute("type", "checkbox")
    region = page.get_by_test_id("task-field-region")
    expect(region.locator("option")).to_have_text(["—", "eu", "us"])
    expect(page.get_by_test_id("task-field-lines")).to_have_attribute("placeholder", "JSON")
    expect(page.get_by_test_id("task-field-amount")).to_have_value("0")

    async def count(jobs: JobService) -> int:
        return len(await jobs.list_jobs(type="receipt.send", limit=100))

    # Required fields left empty: said next to the form, nothing sent.
    page.get_by_test_id("task-submit").click()
    message = page.get_by_test_id("task-message")
    expect(message).to_have_text("order_id is required; email is required; region is required")
    assert server.call(count) == 0

    order_id.fill("7")
    page.get_by_test_id("task-field-email").fill("a@b.c")
    region.select_option(label="us")
    page.get_by_test_id("task-field-express").check()
    page.get_by_test_id("task-field-lines").fill('["tea", "cake"]')
    # The server's refusal (the payload is over its size limit) is shown beside the form.
    page.get_by_test_id("task-field-note").fill("n" * MAX_PAYLOAD)
    page.get_by_test_id("task-submit").click()
    expect(message).to_contain_text("refused: invalid job: payload is")
    expect(message).to_contain_text(f"over the limit of {MAX_PAYLOAD}")
    expect(message).to_have_class("message bad")
    assert server.call(count) == 0

    page.get_by_test_id("task-field-note").fill("leave at the door")
    page.get_by_test_id("task-priority").select_option("high")
    page.get_by_test_id("task-submit").click()
    expect(message).to_contain_text("submitted job ")
    job_id = message.inner_text().rsplit(" ", 1)[1]
    expect(page.get_by_test_id("detail-id")).to_have_text(job_id)
    expect(page.get_by_test_id("detail-status")).to_have_text("complete")
    expect(page.get_by_test_id("detail-result")).to_contain_text('"region": "us"')
    page.screenshot(path=str(artifacts_dir / "dashboard-task-form.png"), full_page=True)

    st = server.call(lambda jobs: jobs.wait(job_id, timeout=15))
    assert st.job is not None and st.job.priority == "high"
    assert st.job.payload == {
        "order_id": 7,
        "email": "a@b.c",
        "region": "us",
        "express": True,
        "amount": 0,
        "note": "leave at the door",
        "lines": ["tea", "cake"],
    }
    assert st.result == {"sent": 7, "region": "us", "lines": 2}
