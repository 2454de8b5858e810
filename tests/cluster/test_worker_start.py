"""``shardq worker`` waits for a PostgreSQL server that is not up yet, and fails at once on
what waiting cannot cure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from bench.pgserver import PrivatePostgres, free_port

from shardq import JobService
from tests.cluster.conftest import ROOT, eventually
from tests.conftest import PG_ADMIN_URL, require_postgres

pytestmark = pytest.mark.postgres


def start_worker(url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    extra = ("--app", "tests.cluster.app:jobs", *extra)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *("-m", "shardq", "--database-url", url, "worker"), *extra],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", SHARDQ_TEST_CONCURRENCY="4"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def read(log: Path) -> str:
    return log.read_text()


async def logged(log: Path, *needles: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until one line of ``log`` holds every needle."""

    async def found() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}:\n{read(log)}")
        return any(all(n in line for n in needles) for line in read(log).splitlines())

    await eventually(found, timeout=30, what=f"{needles} in the worker's log")


async def connect_when_ready(url: str) -> asyncpg.Connection:
    """A connection to ``url``, once the server (just out of recovery) accepts one."""

    async def attempt() -> asyncpg.Connection | None:
        try:
            return await asyncpg.connect(url)
        except (OSError, asyncpg.CannotConnectNowError):
            return None

    conn: asyncpg.Connection = await eventually(attempt, timeout=30, what="the server")
    return conn


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, created but not started."""
    try:
        pg = PrivatePostgres()
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        pytest.skip(f"SKIPPING: cannot make a private PostgreSQL server: {e}")
    try:
        yield pg
    finally:
        pg.stop(remove=True)


async def test_worker_waits_for_a_server_that_is_down_then_starting(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    pg, log = private_pg, tmp_path / "worker.log"
    proc = start_worker(pg.url(), log)
    try:
        # Nothing listens on the port yet.
        await logged(log, "waiting for PostgreSQL", "connection refused", "retrying in", proc=proc)
        # A standby without hot standby answers every connection with SQLSTATE 57P03 (the
        # error of a server that is starting up) for as long as it runs.
        (pg.data / "standby.signal").touch()
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write("\nhot_standby = off\n")
        pg.start(wait=False)
        # A line of waiting, not the error line of an exit (which quotes the server too).
        await logged(
            log, "not accepting connections", "the database system is", "retrying in", proc=proc
        )
        pg.stop()
        (pg.data / "standby.signal").unlink()
        pg.start()

        db = await connect_when_ready(pg.url())
        try:

            async def joined() -> Any:
                try:
                    return await db.fetchval(
                        "SELECT id FROM shardq_runners WHERE pid = $1", proc.pid
                    )
                except asyncpg.UndefinedTableError:
                    return None

            await eventually(joined, timeout=30, what="the worker to join")
        finally:
            await db.close()
        async with JobService(pg.url(), runner=False) as jobs:
            job = await jobs.submit("sleep", {"s": 0})
            assert (await jobs.wait(job, timeout=20)).status == "complete"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, read(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = read(log)
    assert "Traceback" not in text
    retries = [line for line in text.splitlines() if "retrying in" in line]
    assert len(retries) >= 2 and "stopped" in text


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (PG_ADMIN_URL.rsplit("/", 1)[0] + "/shardq_no_such_db", 'database "shardq_no_such_db"'),
        (
            PG_ADMIN_URL.replace("postgres@", "shardq_no_such_role@", 1),
            'role "shardq_no_such_role"',
        ),
    ],
)
def test_worker_fails_at_once_on_what_waiting_cannot_cure(
    tmp_path: Path, url: str, needle: str
) -> None:
    require_postgres()
    log = tmp_path / "worker.log"
    began = time.monotonic()
    proc = start_worker(url, log)
    assert proc.wait(30) == 1
    assert time.monotonic() - began < 20  # far below the default patience of 60 s
    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text() and not any("retrying" in x for x in lines)
    assert needle in lines[-1] and "does not exist" in lines[-1]
    assert lines[-1].startswith("shardq: error: ")


async def test_worker_gives_up_or_stops_while_waiting(tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/db"
    patient = start_worker(url, tmp_path / "patient.log")
    impatient = start_worker(url, tmp_path / "impatient.log", "--connect-timeout", "1.5")
    try:
        await logged(tmp_path / "patient.log", "retrying in", proc=patient)
        patient.send_signal(signal.SIGTERM)
        assert patient.wait(10) == 0
        assert impatient.wait(30) == 1
    finally:
        for p in (patient, impatient):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    lines = (tmp_path / "impatient.log").read_text().splitlines()
    assert sum("retrying in" in x for x in lines) >= 2
    assert lines[-1].startswith("shardq: error: gave up") and "connection refused" in lines[-1]
    text = (tmp_path / "patient.log").read_text() + "\n".join(lines)
    assert "s3cret" not in text and "Traceback" not in text


@contextlib.contextmanager
def serving(url: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``shardq serve`` process, killed on the way out if it is still running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *("-m", "shardq", "--database-url", url, "serve"), *extra],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", SHARDQ_API_TOKEN="t" * 16),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_serve_waits_for_its_database_then_answers(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    port = free_port()
    with serving(private_pg.url(), tmp_path / "serve.log", "--port", str(port)) as proc:
        await logged(tmp_path / "serve.log", "waiting for PostgreSQL", proc=proc)
        private_pg.start()

        async def healthy() -> bool:
            async with httpx.AsyncClient() as client:
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                except httpx.TransportError:
                    return False
            return r.status_code == 200

        await eventually(healthy, timeout=30, what="serve to answer /healthz")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, read(tmp_path / "serve.log")


async def test_serve_stops_at_once_on_sigterm_while_waiting(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    extra = ("--port", str(free_port()), "--connect-timeout", "inf")
    with serving(private_pg.url(), log, *extra) as proc:
        await logged(log, "waiting for PostgreSQL", proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, read(log)


async def test_a_service_stops_cleanly_when_its_server_is_gone(
    private_pg: PrivatePostgres,
) -> None:
    private_pg.start()
    jobs = JobService(private_pg.url(), drain_timeout=1.0)
    jobs.register_handler("t", lambda p: p)
    await jobs.start()
    job_id = await jobs.submit("t", {})
    assert (await jobs.wait(job_id, timeout=10)).status == "complete"
    private_pg.stop("immediate")
    await asyncio.wait_for(jobs.stop(), timeout=30)  # no error: nothing is left to write
