"""Storage is measured at one seam: ``instrument_driver`` times every operation of the
``Driver`` protocol and of its schedule and control stores, so a new operation cannot be
left out without this failing."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from shardq import JobService
from shardq.drivers.base import ControlStore, Driver, ScheduleStore
from shardq.observe import (
    CONTROL_OPERATIONS,
    SCHEDULE_OPERATIONS,
    STORAGE_OPERATIONS,
    Metrics,
    instrument_driver,
)

#: Async methods of ``Driver`` that are not timed, and why.
LIFECYCLE = {
    "open": "connects and migrates, once per start, before any operation",
    "close": "releases the connections, once per stop, after every operation",
    "migrate": "changes the schema, not the data; part of open",
    "keep_watching": "subscribes to announcements; reads and writes no job",
}


def _async_methods(protocol: type) -> set[str]:
    return {name for name, f in vars(protocol).items() if inspect.iscoroutinefunction(f)}


def test_every_driver_operation_is_timed_but_the_lifecycle() -> None:
    assert LIFECYCLE.keys() <= _async_methods(Driver)
    assert _async_methods(Driver) - LIFECYCLE.keys() == set(STORAGE_OPERATIONS)
    assert len(STORAGE_OPERATIONS) == len(set(STORAGE_OPERATIONS))


def test_every_schedule_and_control_store_operation_is_timed() -> None:
    assert _async_methods(ScheduleStore) == set(SCHEDULE_OPERATIONS)
    assert _async_methods(ControlStore) == set(CONTROL_OPERATIONS)


class _Store:
    """Answers every operation named, after a turn of the loop; ``fail`` ones raise."""

    def __init__(self, names: tuple[str, ...], fail: str = "") -> None:
        for name in names:
            setattr(self, name, self._operation(name == fail))

    @staticmethod
    def _operation(fails: bool) -> Any:
        async def operation(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            if fails:
                raise RuntimeError("storage refused")
            return args

        return operation


def _count(metrics: Metrics, operation: str) -> int:
    for family in metrics.storage_time.collect():
        for s in family.samples:
            if s.name.endswith("_count") and s.labels == {"operation": operation}:
                return int(s.value)
    return 0


def _errors(metrics: Metrics, operation: str) -> int:
    for family in metrics.storage_errors.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels == {"operation": operation}:
                return int(s.value)
    return 0


async def test_each_operation_is_timed_under_its_name_and_errors_counted() -> None:
    driver: Any = _Store(STORAGE_OPERATIONS, fail="prune")
    driver.schedules = _Store(SCHEDULE_OPERATIONS)
    driver.controls = _Store(CONTROL_OPERATIONS, fail="usage")
    metrics = Metrics()
    instrument_driver(driver, metrics)
    calls = [(driver, name, name) for name in STORAGE_OPERATIONS]
    calls += [(driver.schedules, name, f"schedules.{name}") for name in SCHEDULE_OPERATIONS]
    calls += [(driver.controls, name, f"controls.{name}") for name in CONTROL_OPERATIONS]
    for target, name, label in calls:
        if label in ("prune", "controls.usage"):
            with pytest.raises(RuntimeError):
                await getattr(target, name)(1)
        else:
            assert await getattr(target, name)(1, 2) == (1, 2)
        assert _count(metrics, label) == 1, label
        assert _errors(metrics, label) == (label in ("prune", "controls.usage")), label


def test_a_submit_in_the_callers_transaction_is_timed_from_any_thread() -> None:
    driver: Any = _Store(STORAGE_OPERATIONS)
    driver.schedules = _Store(SCHEDULE_OPERATIONS)
    driver.controls = _Store(CONTROL_OPERATIONS)
    metrics = Metrics()
    instrument_driver(driver, metrics)

    def caller() -> None:
        async def submits() -> None:
            for _ in range(200):
                await driver.insert_jobs_within(object(), [])

        asyncio.run(submits())

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert _count(metrics, "insert_jobs_within") == 800


async def test_a_service_times_the_stores_of_its_real_driver(sqlite_url: str) -> None:
    jobs = JobService(sqlite_url)
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        # A runner stores its declared schedules and reads its controls when it starts.
        await jobs.wait(await jobs.submit("t", 1), timeout=10)
        await jobs.schedules()
        for label in ("insert_jobs", "schedules.put", "schedules.load", "controls.limits"):
            assert _count(jobs.metrics, label) >= 1, label
