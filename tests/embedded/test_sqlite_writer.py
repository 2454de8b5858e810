"""The SQLite writer: runner steps commit on the event loop only when that costs no waiting."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from shardq.drivers.base import Outcome
from shardq.drivers.sqlite import SQLiteDriver
from shardq.drivers.sqlite import driver as sqlite_driver
from tests.rows import new_job


async def test_a_step_waits_off_the_event_loop_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    driver = SQLiteDriver(f"sqlite:///{path}", runner=True)
    await driver.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await driver.insert_jobs([new_job(1), new_job(2)])
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        step = asyncio.ensure_future(driver.advance([], [1, 2], "A", 2000))
        # The loop keeps running while the step waits for the lock.
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20 and not step.done()
        other.execute("COMMIT")
        started = await asyncio.wait_for(step, 10)
        assert sorted(j.id for j in started.started) == [1, 2]
        done = await driver.advance([Outcome(1, 1, "complete", 3000)], [], "A", 3000)
        assert done.written == [1]
    finally:
        other.close()
        await driver.close()


async def test_the_write_ahead_log_is_checkpointed_as_steps_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log starts over once it holds this many frames (16k by default).
    monkeypatch.setattr(sqlite_driver, "_RESTART_FRAMES", 200)
    path = tmp_path / "jobs.db"
    driver = SQLiteDriver(f"sqlite:///{path}", runner=True)
    await driver.open()
    try:
        await driver.insert_jobs([new_job(i) for i in range(1, 401)])
        for i in range(1, 401):
            await driver.advance([], [i], "A", 2000)
            await driver.advance([Outcome(i, 1, "complete", 3000)], [], "A", 3000)
        # Checkpoints run on their own thread: once it is idle, the next commit starts the
        # log over from its beginning.
        await asyncio.get_running_loop().run_in_executor(driver._checkpointer, lambda: None)
        await driver.insert_jobs([new_job(i) for i in range(1000, 1300)])
        # That commit may have started a checkpoint too: a second one at once reports busy.
        await asyncio.get_running_loop().run_in_executor(driver._checkpointer, lambda: None)
        reader = sqlite3.connect(path)
        try:
            busy, log_pages, checkpointed = reader.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        finally:
            reader.close()
        assert busy == 0
        # Without checkpoints the log would hold every page of 800 commits.
        assert log_pages < 800
        assert checkpointed == log_pages
    finally:
        await driver.close()
