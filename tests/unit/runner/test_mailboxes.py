"""Keyed mailboxes: a key's jobs reach memory in id order, never after a later one ran."""

from __future__ import annotations

import asyncio
from typing import Any

from shardq.clock import FakeClock
from shardq.mailbox import Mailbox
from shardq.runner.mailboxes import Mailboxes
from shardq.runner.windows import Windows

from .fakes import FakeDriver, ref


def make(driver: FakeDriver, capacity: int = 100) -> tuple[Mailboxes, Windows, set[int]]:
    known: set[int] = set()
    clock = FakeClock()
    wake = asyncio.Event()
    drv: Any = driver
    windows = Windows(1000, known, drv, clock, wake)
    return Mailboxes(capacity, 16, known, windows, drv, clock, wake), windows, known


def ready_ids(windows: Windows) -> list[int]:
    return [r.id for q in windows.ready for r in q]


def offer_to(boxes: Mailboxes) -> Any:
    """Where a catch-up's rows go: into the mailboxes, as the runner's offer does."""

    def offer(refs: Any) -> None:
        for r in refs:
            boxes.place(r, 0)

    return offer


async def test_a_key_first_seen_before_the_keys_are_known_is_read_before_it_runs() -> None:
    driver = FakeDriver()
    driver.add(ref(1, key="k"), ref(2, key="k"))
    boxes, windows, _ = make(driver)
    late = ref(3, key="k")
    driver.add(late)

    assert boxes.place(late, 0) is False  # left to storage: older jobs of "k" may exist
    assert ready_ids(windows) == []
    await boxes.catch_up(None, 0, offer_to(boxes))
    assert ready_ids(windows) == [1]
    assert len(boxes.boxes["k"]) == 3


async def test_once_every_key_is_known_a_new_key_runs_at_once() -> None:
    driver = FakeDriver()
    boxes, windows, _ = make(driver)
    await boxes.catch_up(None, 0, lambda refs: None)  # no stored keys
    assert boxes.place(ref(5, key="new"), 0) is True
    assert ready_ids(windows) == [5]
    assert driver.calls == ["load_keys"]


async def test_after_a_missed_notification_a_known_key_holds_later_arrivals_back() -> None:
    driver = FakeDriver()
    boxes, windows, _ = make(driver)
    await boxes.catch_up(None, 0, lambda refs: None)
    first = ref(1, key="k")
    driver.add(first)
    boxes.place(first, 0)
    assert boxes.take(windows.ready[2].popleft(), 0)  # job 1 runs
    # Job 2 was committed while notifications were lost; job 3's notification arrives.
    driver.queued.pop(1)
    driver.add(ref(2, key="k"), ref(3, key="k"))
    boxes.mark_ahead()
    assert boxes.place(ref(3, key="k"), 0) is False
    boxes.release("k", 0)
    assert ready_ids(windows) == []
    await boxes.catch_up(None, 0, offer_to(boxes))
    assert ready_ids(windows) == [2]


async def test_idle_empty_mailboxes_are_dropped_when_storage_may_be_ahead() -> None:
    driver = FakeDriver()
    boxes, _, _ = make(driver)
    await boxes.catch_up(None, 0, lambda refs: None)
    boxes.place(ref(1, key="a"), 0)
    boxes.boxes["b"] = Mailbox("b", 10, 0.0)
    boxes.mark_ahead()
    assert set(boxes.boxes) == {"a"} and boxes.boxes["a"].overflow


async def test_a_read_that_overlaps_a_recovery_is_read_again() -> None:
    driver = FakeDriver()
    driver.add(ref(2, key="k", shard=3))
    boxes, windows, known = make(driver)
    driver.hold["load_mailbox"] = asyncio.Event()
    boxes.place(ref(2, key="k", shard=3), 0)  # keys not yet known: read first
    offer = offer_to(boxes)
    reading = asyncio.create_task(boxes.catch_up(None, 0, offer))
    entered = driver.entered.setdefault("load_mailbox", asyncio.Event())
    await asyncio.wait_for(entered.wait(), timeout=5)
    # Shard 3 is recovered meanwhile: the previous owner's job 1 is queued again.
    boxes.recovery_started({3})
    driver.add(ref(1, key="k", shard=3))
    boxes.recovery_ended({3})
    driver.hold["load_mailbox"].set()
    await reading
    assert ready_ids(windows) == [] and not known
    del driver.hold["load_mailbox"]
    await boxes.catch_up(None, 0, offer)
    assert ready_ids(windows) == [1]


async def test_a_job_arriving_while_its_key_is_read_waits_for_the_stored_ones() -> None:
    driver = FakeDriver()
    boxes, windows, _ = make(driver)
    await boxes.catch_up(None, 0, offer_to(boxes))  # every key known: none stored
    boxes.place(ref(1, key="k"), 0)
    assert boxes.take(windows.ready[2].popleft(), 0)
    # Job 1 runs; jobs 2 and 3 were stored meanwhile and the mailbox is to be read.
    driver.add(ref(2, key="k"), ref(3, key="k"))
    boxes.mark_ahead()
    boxes.release("k", 0)
    driver.hold["load_mailbox"] = asyncio.Event()
    reading = asyncio.create_task(boxes.catch_up(None, 0, offer_to(boxes)))
    entered = driver.entered.setdefault("load_mailbox", asyncio.Event())
    await asyncio.wait_for(entered.wait(), timeout=5)
    # Job 4 (critical) arrives during the read: it must not be ready before 2 and 3.
    driver.add(ref(4, key="k", priority=0))
    boxes.place(ref(4, key="k", priority=0), 0)
    assert ready_ids(windows) == []
    driver.hold["load_mailbox"].set()
    await reading
    assert ready_ids(windows) == [2]
    del driver.hold["load_mailbox"]
    for expected in (3, 4):
        head = next(r for q in windows.ready for r in q)
        for q in windows.ready:
            if head in q:
                q.remove(head)
        assert boxes.take(head, 0)
        driver.queued.pop(head.id)
        boxes.release("k", 0)
        await boxes.catch_up(None, 0, offer_to(boxes))
        assert ready_ids(windows) == [expected]
