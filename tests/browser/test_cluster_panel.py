"""The runners panel of a web process on a PostgreSQL cluster: every runner, the shard map
coloured by owner, kept up to date without a reload as runners join and die."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from shardq import JobService
from tests.cluster.conftest import ROOT
from tests.conftest import create_pg_database, drop_pg_database, require_postgres
from tests.http.server import LiveServer

pytestmark = pytest.mark.postgres

T = TypeVar("T")
TOKEN = "cluster-token"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own thread (Playwright's sync API holds this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    require_postgres()
    url = run_async(create_pg_database())
    yield url
    run_async(drop_pg_database(url))


@pytest.fixture(scope="module")
def web(pg: str) -> Iterator[LiveServer]:
    from .conftest import require_chromium

    require_chromium()
    live = LiveServer(lambda: JobService(pg, runner=False), TOKEN).start()
    yield live
    live.stop()


def worker(url: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "shardq", "--database-url", url, "worker"]
    cmd += ["--app", "tests.cluster.app:jobs"]
    env = dict(os.environ, SHARDQ_TEST_CONCURRENCY="4")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def test_every_runner_and_its_shards_live(page: Any, web: LiveServer, pg: str) -> None:
    from playwright.sync_api import expect

    procs = [worker(pg), worker(pg)]
    try:
        page.goto(f"{web.url}/#token={TOKEN}")
        expect(page.get_by_test_id("live")).to_have_text("live")
        runners = page.locator("#runners .runner")
        expect(runners).to_have_count(2, timeout=30_000)
        shards = page.locator("#shard-map .shard")
        expect(shards).to_have_count(300)
        expect(page.locator('#shard-map .shard[data-owner=""]')).to_have_count(0, timeout=30_000)
        for pid in (p.pid for p in procs):
            expect(runners.filter(has_text=f":{pid} ")).to_have_count(1)

        # A third runner joins: the panel shows it and its shards without a reload.
        procs.append(worker(pg))
        expect(runners).to_have_count(3, timeout=30_000)
        expect(runners.filter(has_text=f":{procs[2].pid} ")).to_have_count(1)
        expect(page.locator('#shard-map .shard[data-owner=""]')).to_have_count(0, timeout=30_000)
        ids = [runners.nth(i).get_attribute("data-runner") for i in range(3)]
        colours = set()
        for rid in ids:
            owned = page.locator(f'#shard-map .shard[data-owner="{rid}"]')
            expect(owned.first).to_be_attached(timeout=30_000)
            # Each runner's shards share its swatch's colour, and no other runner has it. Both
            # are read in one turn of the page: the panel is redrawn on every update, and an
            # element read after a redraw is detached (no computed style).
            swatch, shard = page.evaluate(
                """rid => [`[data-runner="${rid}"] .swatch`, `.shard[data-owner="${rid}"]`]
                    .map((q) => getComputedStyle(document.querySelector(q)).backgroundColor)""",
                rid,
            )
            assert swatch == shard != ""
            colours.add(swatch)
        assert len(colours) == 3

        # One dies: it leaves the panel and its shards take the survivors' colours.
        victim = procs.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        expect(runners).to_have_count(2, timeout=15_000)
        expect(runners.filter(has_text=f":{victim.pid} ")).to_have_count(0)
        expect(page.locator('#shard-map .shard[data-owner=""]')).to_have_count(0, timeout=30_000)
        expect(page.locator("#runners .event").first).to_be_attached()
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
