"""The dashboard under the demo workload, as a screenshot.

``python -m tests.browser.capture docs/dashboard.png`` makes the README's picture; the
browser tests call ``capture`` too (with a shorter warm-up) and keep the result as an artifact.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from shardq.cli.serve import build_demo_service
from tests.http.server import LiveServer

TOKEN = "capture-token"


def capture(
    browser: Any, out: Path, *, samples: int = 30, rate: float = 300.0, full_page: bool = True
) -> dict[str, Any]:
    """Serve the demo at ``rate`` jobs/s, wait for ``samples`` chart samples, open a retried
    job's detail and save a full-page screenshot to ``out``. Returns the stats shown."""
    from playwright.sync_api import expect

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        server = LiveServer(lambda: build_demo_service(url, 64), TOKEN, demo_rate=rate).start()
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1150})
            page = context.new_page()
            page.set_default_timeout(samples * 2000 + 30_000)
            page.goto(f"{server.url}/#token={TOKEN}")
            expect(page.get_by_test_id("live")).to_have_text("live")
            page.wait_for_function(
                "n => state.series.length >= n && state.series.slice(-3).every("
                "p => p.completed_per_s > 0)",
                arg=samples,
            )
            # A payment that failed once and succeeded on retry: a four-step timeline.
            retried = server.call(_a_retried_payment)
            page.get_by_test_id("new-jobs").click()
            if retried:
                page.evaluate("id => openDetail(id)", retried)
                expect(page.get_by_test_id("detail-id")).to_have_text(retried)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=full_page)
            stats = page.evaluate("api('GET', 'api/stats').then(r => r.data)")
            context.close()
            return dict(stats)
        finally:
            server.stop()


async def _a_retried_payment(jobs: Any) -> str | None:
    rows = await jobs.list_jobs(type="payment.capture", status="complete", limit=1000)
    for r in rows:
        if r.attempts >= 2:
            return str(r.id)
    return None


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    out = Path(argv[0] if argv else "docs/dashboard.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            stats = capture(browser, out, samples=60, full_page=False)
        finally:
            browser.close()
    print(f"saved {out}: {stats['by_status']}, {stats['throughput']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
