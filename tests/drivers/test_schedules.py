"""The schedule store: add, change, remove and sync schedules, record fired ticks, and wake
the owner of a changed schedule's shard."""

from __future__ import annotations

from dataclasses import replace

from shardq.drivers import Driver
from shardq.drivers.base import FiredTick, ScheduleRecord
from tests.rows import new_job

from .conftest import complete, start
from .test_notifications import Heard, heard  # noqa: F401  (fixture)


def rec(
    name: str, *, shard: int = 1, every_ms: int | None = 1000, **fields: object
) -> ScheduleRecord:
    r = ScheduleRecord(
        name=name, shard=shard, job_type="t", cron=None, every_ms=every_ms, tz="UTC",
        payload="{}", priority=2, misfire="latest", overlap="allow", key=None,
    )  # fmt: skip
    return replace(r, **fields)  # type: ignore[arg-type]


async def test_a_schedule_is_added_changed_and_removed(driver: Driver) -> None:
    store = driver.schedules
    assert await store.put([rec("a"), rec("b", shard=2)], now=5000) == ["a", "b"]
    assert await store.put([rec("a")], now=6000) == [], "unchanged: nothing written"
    a = await store.get("a")
    assert a == rec("a", after_ms=5000)
    # A new payload keeps the ticks handled; a new interval starts after the change.
    assert await store.put([rec("a", payload='{"x": 1}')], now=7000) == ["a"]
    assert (await store.get("a")) == rec("a", payload='{"x": 1}', after_ms=5000)
    await store.put([rec("a", payload='{"x": 1}', every_ms=2000)], now=8000)
    assert (await store.get("a")).after_ms == 8000  # type: ignore[union-attr]
    assert [r.name for r in await store.load(None)] == ["a", "b"]
    assert [r.name for r in await store.load({2})] == ["b"]
    assert await store.load(set()) == []
    assert await store.remove("a") is True
    assert await store.remove("a") is False
    assert await store.get("a") is None


async def test_a_sync_of_declared_schedules_removes_only_declared_ones(driver: Driver) -> None:
    store = driver.schedules
    await store.put([rec("code1", declared=True), rec("code2", declared=True), rec("api")], 1)
    changed = await store.put([rec("code1", declared=True)], 2, declared_only=True)
    assert changed == ["code2"]
    assert [r.name for r in await store.load(None)] == ["api", "code1"]
    assert await store.put([], 3, declared_only=True) == ["code1"]
    assert [r.name for r in await store.load(None)] == ["api"]


async def test_fired_ticks_move_the_schedule_forward_and_mark_their_jobs(driver: Driver) -> None:
    store = driver.schedules
    await store.put([rec("a")], now=1000)
    await driver.insert_jobs([new_job(7), new_job(8)])
    await store.fired(
        [FiredTick("a", 3000, 2000, 7), FiredTick("a", 3000, 3000, 8), FiredTick("gone", 1)]
    )
    a = await store.get("a")
    assert a is not None
    assert (a.after_ms, a.last_tick, a.last_job_id) == (3000, 3000, 8)
    job = await driver.get_job(7)
    assert job is not None
    assert (job.schedule, job.tick) == ("a", 2000)
    # Never back: an older report (another runner's, late) changes nothing.
    await store.fired([FiredTick("a", 2000, 2000, 7), FiredTick("a", 2500)])
    a = await store.get("a")
    assert a is not None
    assert (a.after_ms, a.last_tick, a.last_job_id) == (3000, 3000, 8)


async def test_unfinished_names_the_queued_and_running_jobs(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2), new_job(3)])
    await start(driver, [2])
    await complete(driver, [3])
    assert await driver.schedules.unfinished([1, 2, 3, 4]) == {1, 2}
    assert await driver.schedules.unfinished([]) == set()


async def test_a_change_in_another_process_wakes_the_owner_of_its_shard(
    driver: Driver,
    other: Driver,
    heard: Heard,  # noqa: F811
) -> None:
    await other.schedules.put([rec("a", shard=4)], now=1000)
    await heard.until(lambda: heard.of("schedules") == {4}, "the added schedule's shard")
    await other.schedules.put([rec("a", shard=4, every_ms=5)], now=1000)
    await other.schedules.remove("a")
    await heard.until(
        lambda: sum(k == "schedules" for k, _ in heard.events) == 3, "a change and a removal"
    )
