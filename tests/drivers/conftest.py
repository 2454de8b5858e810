"""The driver conformance suite: every test here runs against every storage engine.

The suite speaks only through the ``Driver`` protocol (``shardq.drivers.base``), so each test
states behaviour the runner and ``JobService`` rely on, whatever the engine. ``engine_url``
is parametrised over ``ENGINES``; to add an engine, teach ``shardq.drivers.connect`` its URL
scheme and add to ``ENGINES`` a context manager that yields the URL of an empty database (its
schema may be there already: drivers migrate on open). The engine conforms when this whole
folder passes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest

from shardq.drivers import Driver, connect
from shardq.drivers.base import Outcome, StartedJob
from tests.conftest import create_pg_database, drop_pg_database, require_postgres


@contextlib.asynccontextmanager
async def _sqlite(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    tmp: Path = request.getfixturevalue("tmp_path")
    yield f"sqlite:///{tmp / 'jobs.db'}"


@pytest.fixture(scope="session")
def pg_suite_database() -> Iterator[str]:
    """One PostgreSQL database for the whole suite, emptied before each test: making and
    dropping a database per test costs more than the test itself."""
    require_postgres()
    with ThreadPoolExecutor(1) as pool:
        url = pool.submit(asyncio.run, create_pg_database()).result()
        try:
            yield url
        finally:
            pool.submit(asyncio.run, drop_pg_database(url)).result()


@contextlib.asynccontextmanager
async def _postgres(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    url: str = request.getfixturevalue("pg_suite_database")
    db = await asyncpg.connect(url)
    try:
        tables = await db.fetch(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'shardq_migrations'"
        )
        # DELETE, not TRUNCATE: a test's few rows go faster than new files for each table.
        if tables:
            await db.execute("".join(f"DELETE FROM {t[0]};" for t in tables))
    finally:
        await db.close()
    yield url


#: Every engine the suite runs on: its name, and how to get an empty database's URL (given
#: the test's request, for fixtures such as ``tmp_path``).
ENGINES: dict[str, Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[str]]]
ENGINES = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(ENGINES))
async def engine_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The URL of an empty database on each engine in turn."""
    async with ENGINES[request.param](request) as url:
        yield url


@pytest.fixture
async def driver(engine_url: str) -> AsyncIterator[Driver]:
    """An open runner-side driver on this test's fresh database."""
    d = connect(engine_url, runner=True)
    await d.open()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
async def other(driver: Driver, engine_url: str) -> AsyncIterator[Driver]:
    """A second driver on the same database, in the role of a process that only submits
    (opened after the runner's, as a web process joins a running deployment)."""
    d = connect(engine_url, runner=False)
    await d.open()
    try:
        yield d
    finally:
        await d.close()


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


def ids(rows: Iterable[_HasId]) -> list[int]:
    """The ids of ``rows`` (refs, started jobs, records, dead letters), in their order."""
    return [r.id for r in rows]


async def start(
    driver: Driver, job_ids: Iterable[int], owner: str = "A", now: int = 2000
) -> dict[int, StartedJob]:
    """Start ``job_ids`` under ``owner``; the jobs started, by id."""
    started = (await driver.advance([], list(job_ids), owner, now)).started
    return {s.id: s for s in started}


async def complete(
    driver: Driver, job_ids: Iterable[int], owner: str = "A", at: int = 3000
) -> list[int]:
    """Start ``job_ids`` and complete their first attempts at ``at``; the ids written."""
    job_ids = list(job_ids)
    await start(driver, job_ids, owner, at - 500)
    done = [Outcome(i, 1, "complete", at) for i in job_ids]
    return sorted((await driver.advance(done, [], owner, at)).written)


async def states(driver: Driver, job_ids: Iterable[int]) -> dict[int, str]:
    """The stored state of each of ``job_ids`` ("missing" if there is no such job)."""
    out: dict[int, str] = {}
    for i in job_ids:
        record = await driver.get_job(i)
        out[i] = "missing" if record is None else record.state
    return out
