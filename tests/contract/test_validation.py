"""Bad input gets a clear JobError and stores nothing."""

from __future__ import annotations

import asyncio
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


# -- hostile input: text, nesting, numbers -----------------------------------------------

LONE = "\ud800"
DEEP_OK = 64


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        ((f"t{LONE}", {}), {}, "job type"),
        (("t", {}), {"key": f"k{LONE}"}, "key"),
        (("t", {}), {"dedupe_key": f"d{LONE}"}, "dedupe_key"),
        (("t", [{}, {}]), {"dedupe_key": f"d{LONE}"}, "dedupe_key"),
        (("t", [{}, {}]), {"key": "\udfff"}, "key"),
        (("t\x00", {}), {}, "job type"),
        (("t", {}), {"key": "a\x00b"}, "key"),
        (("t", {"name": f"x{LONE}"}), {}, "payload"),
        (("t", {f"x{LONE}": 1}), {}, "payload"),
        (("t", {"a": [{"b": {"c": ["\udcff"]}}]}), {}, "payload"),
        (("t", [{"ok": 1}, {"a": {"\udc80": 1}}]), {}, "payload"),
        (("t", "\ud83d\ude00 split pair"), {}, "payload"),
        (("t", {1: "a", "1": "b"}), {}, "same JSON name"),
        (("t", {None: 1, "null": 2}), {}, "same JSON name"),
        (("t", {"x": float("inf")}), {}, "JSON"),
        (("t", [float("-inf")]), {}, "JSON"),
        (("t", _nested(DEEP_OK + 1)), {}, "nested"),
        (("t", {"a": _nested(DEEP_OK)}), {}, "nested"),
        (("t", _nested(2000)), {}, "nested"),
        (("t", [[[[[[]]]]]] * 1 + [_nested(100_000)]), {}, "nested"),
        (("t", {}), {"delay": 10**400}, "delay"),
        (("t", {}), {"delay": float("nan")}, "delay"),
        (("t", {}), {"delay": float("inf")}, "delay"),
        (("t", {}), {"delay": True}, "delay"),
        (("t", {}), {"delay": "1"}, "delay"),
        (("t", {}), {"timeout": 10**400}, "timeout"),
        (("t", {}), {"timeout": -(10**400)}, "timeout"),
        (("t", {}), {"timeout": float("nan")}, "timeout"),
        (("t", {}), {"timeout": float("inf")}, "timeout"),
        (("t", {}), {"timeout": 0}, "timeout"),
        (("t", {}), {"max_attempts": 10**400}, "max_attempts"),
        (("t", {}), {"max_attempts": 1001}, "max_attempts"),
        (("t", {}), {"max_attempts": -1}, "max_attempts"),
        (("t", [{}, {}]), {"dedupe_key": 5}, "dedupe_key"),
        (("t", [{}, {}]), {"dedupe_key": b"bytes"}, "dedupe_key"),
        (("t", [{}, {}]), {"dedupe_key": ["x"]}, "dedupe_key"),
        (("t", [{}, {}]), {"dedupe_key": ""}, "dedupe_key"),
        ((5, []), {}, "job type"),
        (("t", []), {"priority": "urgent"}, "priority"),
        (("t", []), {"max_attempts": 0}, "max_attempts"),
        (("t", []), {"delay": -1}, "delay"),
    ],
)
async def test_hostile_input_is_refused_before_anything_is_stored(
    make_service: ServiceFactory, args: tuple[Any, ...], kwargs: dict[str, Any], needle: str
) -> None:
    jobs = make_service()
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.submit(*args, **kwargs)
        assert info.value.reason == "Validation"
        assert needle in str(info.value)
        # The message itself is safe to print, log and send anywhere.
        str(info.value).encode("utf-8")
        assert await _count(jobs) == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "t", "payload": {}, "batch_id": f"b{LONE}"},
        {"type": "t", "payload": {}, "batch_id": 7},
        {"type": "t", "payload": {}, "batch_id": ""},
        {"type": "t", "payload": {}, "timeout": 10**400},
        {"type": "t", "payload": {}, "max_attempts": 10**400},
        {"type": "t", "payload": {}, "dedupe_key": 3},
    ],
)
async def test_submit_many_refuses_hostile_fields(
    make_service: ServiceFactory, spec: dict[str, Any]
) -> None:
    jobs = make_service()
    async with jobs:
        with pytest.raises(JobError) as info:
            await jobs.submit_many([JobPayload(type="t", payload={}), JobPayload(**spec)])
        assert info.value.reason == "Validation"
        with pytest.raises(JobError) as info:
            await jobs.submit_many([{"type": "t", "payload": {}}])  # type: ignore[list-item]
        assert info.value.reason == "Validation"
        with pytest.raises(JobError) as info:
            await jobs.submit_many([JobPayload(type="t", payload={})], delay=10**400)
        assert info.value.reason == "Validation"
        assert await _count(jobs) == 0


async def test_hostile_filters_and_ids_raise_job_errors(make_service: ServiceFactory) -> None:
    jobs = make_service()
    async with jobs:
        for kwargs in (
            {"type": LONE},
            {"key": f"k{LONE}"},
            {"type": "a\x00"},
            {"type": 5},
            {"created_after": 10**400},
            {"created_before": float("nan")},
            {"created_after": "yesterday"},
            {"limit": True},
        ):
            with pytest.raises(JobError) as info:
                await jobs.list_jobs(**kwargs)
            assert info.value.reason == "Validation", kwargs
        with pytest.raises(JobError) as info:
            await jobs.dead_letters(limit=True)
        assert info.value.reason == "Validation"
        for bad_id in ("\u00b2", "\u0661\u0662", LONE, "1\x00", 10**400, None, 1.5):
            for call in (jobs.status, jobs.cancel, jobs.replay, jobs.dead_letter):
                with pytest.raises(JobError) as info:
                    await call(bad_id)  # type: ignore[arg-type]
                assert info.value.reason == "NotFound"
                str(info.value).encode("utf-8")


async def test_accepted_edge_values_read_back_exactly(make_service: ServiceFactory) -> None:
    payload = {
        "big": 10**400,
        "small": -(10**300),
        "float": 1.5e308,
        "tiny": 5e-324,
        "nul": "a\x00b",
        "astral": "\U0001f600\U0010ffff",
        "controls": "".join(map(chr, range(32))),
        "deep": _nested(DEEP_OK - 1),
        "1": "string key",
        2: "int key",
        "": "empty key",
    }
    expected = {**payload, "2": payload[2]}
    del expected[2]
    jobs = make_service()
    seen: list[Any] = []

    @jobs.handler("echo")
    async def echo(p: Any) -> Any:
        seen.append(p)
        return p

    async with jobs:
        job_id = await jobs.submit(
            "echo", payload, key="\U0001f600 key", dedupe_key="d\x7f\u00e9", max_attempts=1000
        )
        st = await jobs.wait(job_id, timeout=10)
        assert st.status == "complete", st.error
        assert seen == [expected] and st.result == expected
        assert st.job is not None and st.job.payload == expected
        (listed,) = await jobs.list_jobs(key="\U0001f600 key")
        assert listed.result == expected and listed.job is not None
        assert listed.job.payload == expected
        assert (await jobs.list_jobs(type="echo"))[0].id == job_id


async def test_bad_input_never_fails_concurrent_valid_submits(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(runner=False)
    async with jobs:
        bad = [
            lambda: jobs.submit("t", {}, key=f"k{LONE}"),
            lambda: jobs.submit(f"t{LONE}", {}),
            lambda: jobs.submit("t", {}, dedupe_key=f"d{LONE}"),
            lambda: jobs.submit("t", {"p": LONE}),
        ]
        calls = []
        for i in range(40):
            # Interleaved, so that good and bad submits share group commits.
            calls += [jobs.submit("t", {"n": i}, key=f"k{i % 3}"), bad[i % len(bad)]()]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        good_out, bad_out = outcomes[0::2], outcomes[1::2]
        assert all(isinstance(o, str) for o in good_out), good_out
        assert all(isinstance(o, JobError) and o.reason == "Validation" for o in bad_out)
        assert await _count(jobs) == 40


async def test_edge_values_read_back_from_dead_letters_and_replays(
    make_service: ServiceFactory,
) -> None:
    payload = {
        "big": -(10**400),
        "nul": "\x00",
        "astral": "\U0010ffff",
        "deep": _nested(DEEP_OK - 1),
    }
    jobs = make_service()
    attempts: list[Any] = []

    @jobs.handler("refuse")
    async def refuse(p: Any) -> Any:
        attempts.append(p)
        if len(attempts) == 1:
            raise JobError.from_validation(None, "not yet")
        return p

    async with jobs:
        first = await jobs.wait(await jobs.submit("refuse", payload), timeout=10)
        assert first.status == "failed"
        (dead,) = await jobs.dead_letters()
        assert dead.payload == payload and (await jobs.dead_letter(dead.id)).payload == payload
        again = await jobs.wait(await jobs.replay(dead.id), timeout=10)
    assert again.status == "complete" and again.result == payload
    assert attempts == [payload, payload]
