"""Maintenance: pruning runs every interval of the injected clock, in batches."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq.clock import FakeClock
from shardq.config import Config
from shardq.runner.mailboxes import Mailboxes
from shardq.runner.maintenance import Maintenance
from shardq.runner.windows import Windows

from .fakes import FakeDriver, ref


async def test_pruning_runs_each_interval_in_batches_and_evicts_idle_mailboxes() -> None:
    driver = FakeDriver()
    clock = FakeClock(now_ms=100_000_000)
    cfg = Config(prune_interval=60, prune_batch=10, retention=3600, max_idle=300)
    drv: Any = driver
    known: set[int] = set()
    wake = asyncio.Event()
    boxes = Mailboxes(10, 16, known, Windows(10, known, drv, clock, wake), drv, clock, wake)
    await boxes.catch_up(None, 0, lambda refs: None)
    boxes.place(ref(1, key="k"), 0)
    boxes.take(boxes._windows.ready[2].popleft(), 0)
    boxes.release("k", 0)
    task = asyncio.create_task(Maintenance(cfg, drv, clock, boxes).run())
    await asyncio.sleep(0)  # it starts, and waits for the clock
    assert clock.pending == 1
    try:
        driver.to_prune = 25
        await clock.advance(59)
        assert driver.pruned == []
        await clock.advance(1)
        assert driver.pruned == [clock.now_ms() - 3_600_000] * 3 and driver.to_prune == 0
        assert "k" in boxes.boxes  # idle for 60 s only
        await clock.advance(300)
        assert "k" not in boxes.boxes
    finally:
        task.cancel()
