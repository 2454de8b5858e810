"""The embedded engine across processes: one runner per file, wake-ups from other
processes, and restart safety after kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from shardq import Config, JobService, RunnerLockedError

ROOT = Path(__file__).resolve().parents[2]


def _start_worker(url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shardq", "--database-url", url, "worker",
         "--app", "tests.apps.crashy:jobs"],
        cwd=ROOT,
        env={**os.environ, "SHARDQ_DATABASE_URL": url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` holds (re-checked every 20 ms), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def _starts(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), float(parts[2])))
    return out


async def test_a_second_runner_on_the_same_file_gets_a_clear_error(sqlite_url: str) -> None:
    async with JobService(sqlite_url):
        second = JobService(sqlite_url)
        with pytest.raises(RunnerLockedError, match="another runner"):
            await second.start()
        # Submitting from a non-runner process is fine meanwhile.
        async with JobService(sqlite_url, runner=False) as submitter:
            await submitter.submit("t", {})


async def test_a_commit_in_another_process_wakes_the_runner_at_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    jobs = JobService(sqlite_url)
    got = asyncio.Event()
    jobs.register_handler("ping", lambda p: got.set())
    async with jobs:
        code = (
            "import asyncio\n"
            "from shardq import JobService\n"
            "async def main():\n"
            f"    async with JobService({sqlite_url!r}, runner=False) as j:\n"
            "        print(await j.submit('ping', {}))\n"
            "asyncio.run(main())\n"
        )
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        job_id = out.stdout.strip()
        # No poll loop exists: only the wake-up can make this happen within the timeout.
        await asyncio.wait_for(got.wait(), timeout=5)
        assert (await jobs.wait(job_id, timeout=5)).status == "complete"


async def test_without_a_runner_jobs_wait_in_the_database_for_the_next_start(
    sqlite_url: str,
) -> None:
    async with JobService(sqlite_url, runner=False) as submitter:
        ids = await submitter.submit("t", [1, 2, 3])
    jobs = JobService(sqlite_url)
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        assert [(await jobs.wait(i, timeout=10)).result for i in ids] == [1, 2, 3]


async def test_kill_9_mid_batch_loses_nothing_and_history_shows_the_interrupted_attempt(
    sqlite_url: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    async with JobService(sqlite_url, runner=False) as submitter:
        flaky = await submitter.submit("flaky", {"n": 1})
        work = await submitter.submit("work", list(range(100)))
    proc = _start_worker(
        sqlite_url,
        {"SHARDQ_TEST_MODE": "hang", "SHARDQ_TEST_STARTS": str(starts), "SHARDQ_TEST_RETRY_S": "3"},
    )
    try:
        # The flaky job fails once (its retry is due in 3 s); eight "work" jobs hang mid-run.
        await _until(lambda: len(_starts(starts)) >= 9, 20, "the first attempts to start")
        async with JobService(sqlite_url, runner=False) as reader:
            await _until_async(lambda: _retry_written(reader, flaky), 10, "the retry to be written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = {job_id for job_id, _, _ in _starts(starts)} & set(work)
    assert len(interrupted) == 8

    killed_at = time.time()
    proc = _start_worker(sqlite_url, {"SHARDQ_TEST_MODE": "run", "SHARDQ_TEST_STARTS": str(starts)})
    try:
        async with JobService(sqlite_url, runner=False) as reader:
            for job_id in [*work, flaky]:
                st = await reader.wait(job_id, timeout=30)
                assert st.status == "complete", (job_id, st.status)
            for job_id in interrupted:
                st = await reader.status(job_id)
                assert st.attempts == 2
                assert [h.status for h in st.history] == [
                    "queued", "processing", "queued", "processing", "complete",
                ]  # fmt: skip
                assert "interrupted" in (st.history[2].error or "")
            flaky_st = await reader.status(flaky)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    assert flaky_st.attempts == 2
    # After the restart every job started exactly once, the flaky one not before its retry.
    after = [s for s in _starts(starts) if s[2] >= killed_at]
    assert sorted(j for j, _, _ in after) == sorted([*work, flaky])
    retry = next(h for h in flaky_st.history if h.status == "queued" and h.error)
    flaky_start = next(t for j, _, t in after if j == flaky)
    assert flaky_start >= retry.timestamp.timestamp() + 3 - 0.01


async def _retry_written(reader: JobService, job_id: str) -> bool:
    st = await reader.status(job_id)
    return st.attempts == 1 and st.status == "queued"


async def _until_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_sigterm_drains_running_jobs_then_exits(sqlite_url: str, tmp_path: Path) -> None:
    starts = tmp_path / "starts.txt"
    proc = _start_worker(sqlite_url, {"SHARDQ_TEST_MODE": "run", "SHARDQ_TEST_STARTS": str(starts)})
    try:
        async with JobService(sqlite_url, runner=False) as submitter:
            ids = await submitter.submit("work", list(range(20)))
            for job_id in ids:
                assert (await submitter.wait(job_id, timeout=20)).status == "complete"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    # The runner left nothing behind that would stop the next one.
    async with JobService(sqlite_url):
        pass


def test_a_sqlite_url_must_name_a_file() -> None:
    from shardq.drivers import connect

    for url in ("sqlite://", "sqlite:///:memory:", "mysql://x"):
        with pytest.raises(ValueError):
            connect(url, runner=False)
    with pytest.raises(ValueError, match="concurrency"):
        Config(concurrency=0)


async def test_a_waiter_in_another_process_hears_of_the_finish(
    sqlite_url: str, tmp_path: Path
) -> None:
    proc = _start_worker(sqlite_url, {"SHARDQ_TEST_MODE": "run"})
    try:
        async with JobService(sqlite_url, runner=False) as client:
            heard: list[tuple[str, list[int]]] = []
            forward = client._on_event
            client.driver.listen(lambda kind, ids: (heard.append((kind, ids)), forward(kind, ids)))
            # The first job also proves the worker is up and has heard our "watch" request.
            for _ in range(3):
                job_id = await client.submit("work", {})
                st = await client.wait(job_id, timeout=20)
                assert st.status == "complete"
            assert ("finished", [int(job_id)]) in heard
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
