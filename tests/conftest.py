"""Fixtures shared by every test: a fresh database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("SHARDQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_reachable() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        import asyncpg
    except ImportError as e:  # pragma: no cover - asyncpg is a dependency
        return f"asyncpg is not installed: {e}"

    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        # Called from async fixtures too, where this thread's loop is already running.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except Exception as e:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {e!r}"
    return None


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    """Why PostgreSQL tests cannot run here (cached), or None."""
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_reachable())
    return _PG_PROBLEM[0]


def require_postgres() -> None:
    """Skip loudly without a server; under CI a missing server is a failure."""
    problem = pg_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {problem}")
    pytest.skip(f"SKIPPING PostgreSQL test: {problem}")


async def create_pg_database() -> str:
    """A new, empty database; returns its URL."""
    import asyncpg

    name = f"shardq_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


async def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database, disconnecting stragglers."""
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# Dropping a database takes longer than most tests (the server syncs its files): drops run
# one at a time beside the tests that follow, and the session waits for them at its end.
_DROPPER = ThreadPoolExecutor(1, thread_name_prefix="drop-db")
_DROPS: list[Future[None]] = []


def drop_pg_database_later(url: str) -> None:
    """Drop a database made by create_pg_database beside the next tests."""
    _DROPS.append(_DROPPER.submit(asyncio.run, drop_pg_database(url)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for drop in _DROPS:
        drop.result()
    _DROPPER.shutdown()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Captured output with lone surrogates (tests feed them to the service on purpose) is
    escaped: a report crosses to the parallel runs' controller as UTF-8."""
    report: pytest.TestReport = yield
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    return report


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL for a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A URL for a fresh PostgreSQL database, dropped afterwards."""
    require_postgres()
    url = await create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database_later(url)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database on each engine: the contract suite runs once per engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    require_postgres()
    url = await create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database_later(url)


@pytest.fixture
def artifacts_dir() -> Iterator[Path]:
    """Where tests keep files worth looking at afterwards (screenshots)."""
    path = Path(__file__).resolve().parent.parent / "artifacts"
    path.mkdir(exist_ok=True)
    yield path
