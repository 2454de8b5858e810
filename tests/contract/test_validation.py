"""Bad input gets a clear JobError and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

from shardq import JobError, JobService
from shardq.models import JobPayload

from .conftest import ServiceFactory


async def _count(jobs: JobService) -> int:
    return sum((await jobs.stats()).by_status.values())


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("t", {}), {"priority": "urgent"}, "priority"),
        (("t", {"x": object()}), {}, "JSON"),
        (("t", {"x": float("nan")}), {}, "JSON"),
        (("t", {"blob": "x" * 5000}), {}, "over the limit"),
        (("t", {}), {"max_attempts": 0}, "max_attempts"),
        (("t", {}), {"max_attempts": "3"}, "max_attempts"),
        (("", {}), {}, "job type"),
        (("   ", {}), {}, "job type"),
        ((None, {}), {}, "job type"),
        (("t", {}), {"timeout": -1}, "timeout"),
        (("t", {}), {"delay": -5}, "delay"),
        (("t", {}), {"delay": 1e300}, "delay"),
        (("t", {}), {"timeout": 1e300}, "timeout"),
        (("t", {}), {"key": ""}, "key"),
        (("t", {}), {"dedupe_key": ""}, "dedupe_key"),
        (("t", {}), {"duration": "forever"}, "duration"),
    ],
)
async def test_invalid_submit_raises_validation_and_stores_nothing(
    make_service: ServiceFactory, args: tuple[Any, ...], kwargs: dict[str, Any], needle: str
) -> None:
    jobs = make_service(max_payload_bytes=4096)
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.submit(*args, **kwargs)
        assert info.value.reason == "Validation"
        assert info.value.is_terminal
        assert needle in str(info.value)
        assert await _count(jobs) == 0


async def test_a_batch_with_one_bad_item_stores_none_of_it(make_service: ServiceFactory) -> None:
    jobs = make_service()
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.submit("t", [{"ok": 1}, {"ok": 2}, {"bad": {1, 2}}])
        assert info.value.reason == "Validation"
        assert await _count(jobs) == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": True},
        {"max_attempts": 1.0},
        {"timeout": True},
        {"priority": ["normal"]},
        {"duration": ["short"]},
    ],
)
async def test_a_bad_item_after_good_ones_with_equal_looking_options_is_still_refused(
    make_service: ServiceFactory, bad: dict[str, Any]
) -> None:
    # Options are checked once per distinct set in a batch: True == 1 == 1.0 must not make
    # a bad item pass for a good one seen before it.
    good = {"max_attempts": 1, "timeout": 1, "priority": "normal"}
    specs = [
        JobPayload(type="t", payload={}, **good),
        JobPayload(type="t", payload={}, **{**good, **bad}),
    ]
    jobs = make_service()
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.submit_many(specs)
        assert info.value.reason == "Validation"
        assert await _count(jobs) == 0


@pytest.mark.parametrize("bad_id", ["123456789", "nope", "", "-1", "1" * 40, "9" * 19])
async def test_unknown_ids_raise_not_found(make_service: ServiceFactory, bad_id: str) -> None:
    jobs = make_service()
    async with jobs:
        for call in (jobs.status, jobs.cancel, jobs.replay, jobs.dead_letter):
            with pytest.raises(JobError) as info:
                await call(bad_id)
            assert info.value.reason == "NotFound"
        with pytest.raises(JobError) as info:
            await jobs.wait(bad_id, timeout=1)
        assert info.value.reason == "NotFound"


async def test_bad_handler_registration_is_refused(make_service: ServiceFactory) -> None:
    jobs = make_service()
    with pytest.raises(JobError):
        jobs.register_handler("", lambda p: p)
    with pytest.raises(JobError):
        jobs.register_handler("t", "not callable")  # type: ignore[arg-type]


async def test_using_a_service_that_is_not_started_says_so(make_service: ServiceFactory) -> None:
    jobs = make_service()
    with pytest.raises(JobError) as info:
        await jobs.submit("t", {})
    assert info.value.reason == "RunnerUnavailable"
    assert "not started" in str(info.value)
