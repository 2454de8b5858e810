"""Retries, timeouts and dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardq import JobError, current_job

from .conftest import ServiceFactory


async def test_a_transient_failure_is_retried_and_history_shows_it(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.handler("flaky")
    async def flaky(p: Any) -> str:
        if current_job().attempt < 3:
            raise ConnectionError("upstream down")
        return "ok"

    async with jobs:
        job_id = await jobs.submit("flaky", {}, max_attempts=3)
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "complete" and st.result == "ok" and st.attempts == 3
    assert [h.status for h in st.history] == [
        "queued", "processing", "queued", "processing", "queued", "processing", "complete",
    ]  # fmt: skip
    retries = [h for h in st.history[1:] if h.status == "queued"]
    assert all("ConnectionError: upstream down" in (h.error or "") for h in retries)
    # Back-off: each retry starts no sooner than its delay (10 ms, then 20 ms, no jitter).
    starts = [h.timestamp for h in st.history if h.status == "processing"]
    assert (starts[1] - retries[0].timestamp).total_seconds() >= 0.009
    assert (starts[2] - retries[1].timestamp).total_seconds() >= 0.019


async def test_an_error_message_of_any_characters_is_kept_in_history_as_raised(
    make_service: ServiceFactory,
) -> None:
    message = 'quote " backslash \\ ]}, newline\n tab\t unicode \u00e9\u4e2d \U0001f600 nul-free'
    jobs = make_service()

    @jobs.handler("odd")
    async def odd(p: Any) -> None:
        raise ValueError(message)

    async with jobs:
        job_id = await jobs.submit("odd", {}, max_attempts=2)
        st = await jobs.wait(job_id, timeout=10)
    assert [h.status for h in st.history] == [
        "queued",
        "processing",
        "queued",
        "processing",
        "failed",
    ]
    assert st.history[2].error == st.history[4].error == f"ValueError: {message}"


async def test_the_last_failed_attempt_dead_letters_with_max_retries(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.handler("doomed")
    async def doomed(p: Any) -> None:
        raise ValueError("bad data")

    async with jobs:
        job_id = await jobs.submit("doomed", {"x": 1}, max_attempts=2, priority="high", key="k1")
        st = await jobs.wait(job_id, timeout=10)
        dead = await jobs.dead_letters(limit=10)
    assert st.status == "failed" and st.attempts == 2
    assert st.history[-1].status == "failed" and "bad data" in (st.history[-1].error or "")
    assert len(dead) == 1
    dl = dead[0]
    assert (dl.job_id, dl.type, dl.reason, dl.attempts) == (job_id, "doomed", "MaxRetries", 2)
    assert dl.payload == {"x": 1} and dl.priority == "high" and dl.key == "k1"
    assert "ValueError: bad data" in (dl.error or "")


@pytest.mark.parametrize("reason", ["Validation", "HandlerMissing", "NotFound", "AlreadyCancelled"])
async def test_a_terminal_job_error_dead_letters_at_once(
    make_service: ServiceFactory, reason: str
) -> None:
    jobs = make_service()

    @jobs.handler("t")
    async def t(p: Any) -> None:
        raise JobError(reason)  # type: ignore[arg-type]

    async with jobs:
        st = await jobs.wait(await jobs.submit("t", {}, max_attempts=5), timeout=10)
        dead = await jobs.dead_letters()
    assert st.status == "failed" and st.attempts == 1
    assert dead[0].reason == reason


async def test_a_transient_job_error_is_retried(make_service: ServiceFactory) -> None:
    jobs = make_service()

    @jobs.handler("t")
    async def t(p: Any) -> str:
        if current_job().attempt == 1:
            raise JobError.from_runner_unavailable(None, "try later")
        return "second time lucky"

    async with jobs:
        st = await jobs.wait(await jobs.submit("t", {}), timeout=10)
    assert st.status == "complete" and st.attempts == 2


async def test_an_unknown_type_is_dead_lettered_not_dropped(make_service: ServiceFactory) -> None:
    jobs = make_service()
    async with jobs:
        job_id = await jobs.submit("nobody.handles.this", {"a": 1})
        st = await jobs.wait(job_id, timeout=10)
        dead = await jobs.dead_letters()
    assert st.status == "failed" and st.attempts == 1
    assert dead[0].job_id == job_id and dead[0].reason == "HandlerMissing"
    assert "nobody.handles.this" in (dead[0].error or "")


async def test_an_attempt_over_its_timeout_is_interrupted_and_retried(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    cancelled: list[int] = []

    @jobs.handler("slow")
    async def slow(p: Any) -> str:
        if current_job().attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(1)
                raise
        return "fast enough"

    async with jobs:
        st = await jobs.wait(await jobs.submit("slow", {}, timeout=0.1), timeout=10)
    assert st.status == "complete" and st.attempts == 2
    assert cancelled == [1]
    assert "Timeout" in (st.history[2].error or "")


async def test_replay_runs_a_dead_letter_again_once(make_service: ServiceFactory) -> None:
    jobs = make_service()
    healthy = asyncio.Event()

    @jobs.handler("t")
    async def t(p: Any) -> str:
        if not healthy.is_set():
            raise RuntimeError("still broken")
        return f"fixed {p['n']}"

    async with jobs:
        job_id = await jobs.submit("t", {"n": 7}, max_attempts=1)
        assert (await jobs.wait(job_id, timeout=10)).status == "failed"
        (dl,) = await jobs.dead_letters()
        healthy.set()
        new_id = await jobs.replay(dl.id)
        assert new_id != job_id
        st = await jobs.wait(new_id, timeout=10)
        assert st.status == "complete" and st.result == "fixed 7"
        again = await jobs.dead_letter(dl.id)
        assert again.replayed_at is not None and again.replay_job_id == new_id
        with pytest.raises(JobError) as info:
            await jobs.replay(dl.id)
        assert info.value.reason == "Validation" and new_id in str(info.value)


# -- what a handler raises or returns can always be stored ---------------------------------

#: A lone surrogate, as ``os.fsdecode`` makes of a file name that is not UTF-8.
UNDECODABLE = b"caf\xff".decode("utf-8", "surrogateescape")


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raise_", "needle"),
    [
        (lambda: ValueError(f"bad name {UNDECODABLE}"), "ValueError: bad name caf\\udcff"),
        (lambda: ValueError("nul \x00 inside"), "ValueError: nul \\x00 inside"),
        (lambda: JobError.from_validation(None, f"bad {UNDECODABLE}"), "caf\\udcff"),
        (lambda: ValueError("x" * 1_000_000), "ValueError: xxx"),
    ],
)
async def test_a_poison_error_message_is_stored_safely_and_other_jobs_still_run(
    make_service: ServiceFactory, raise_: Any, needle: str
) -> None:
    jobs = make_service()

    @jobs.handler("poison")
    async def poison(p: Any) -> None:
        raise raise_()

    @jobs.handler("fine")
    async def fine(p: Any) -> int:
        return int(p["n"]) * 2

    async with jobs:
        bad = await jobs.submit("poison", {}, max_attempts=2)
        st = await jobs.wait(bad, timeout=10)
        later = [await jobs.submit("fine", {"n": i}) for i in range(3)]
        done = [await jobs.wait(i, timeout=10) for i in later]
        listed = await jobs.list_jobs(type="poison")
        (dead,) = await jobs.dead_letters()
    assert [d.result for d in done] == [0, 2, 4]
    assert st.status == "failed" and st.error is not None
    assert needle in st.error and len(st.error) <= 4200
    # The retry's entry (none for a terminal error) and the final one alike.
    ends = [h for h in st.history[1:] if h.status != "processing"]
    assert [h.error for h in ends] == [st.error] * len(ends) and ends[-1].status == "failed"
    assert listed[0].error == st.error and dead.error == st.error
    for text in (st.error, dead.error):
        text.encode("utf-8")
        assert "\x00" not in text


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        (f"name {UNDECODABLE}", "surrogate"),
        ({f"k{UNDECODABLE}": 1}, "surrogate"),
        ({"when": object()}, "JSON"),
        ({"x": float("nan")}, "JSON"),
        (_deep(65), "nested"),
        (_deep(5000), "nested"),
        ({1: "a", "1": "b"}, "same JSON name"),
    ],
)
async def test_a_result_that_cannot_be_stored_dead_letters_the_job_at_once(
    make_service: ServiceFactory, result: Any, needle: str
) -> None:
    jobs = make_service()

    @jobs.handler("bad.result")
    async def bad_result(p: Any) -> Any:
        return result

    @jobs.handler("fine")
    async def fine(p: Any) -> str:
        return "ok"

    async with jobs:
        job_id = await jobs.submit("bad.result", {}, max_attempts=5)
        st = await jobs.wait(job_id, timeout=10)
        after = await jobs.wait(await jobs.submit("fine", {}), timeout=10)
        (dead,) = await jobs.dead_letters()
        (listed,) = await jobs.list_jobs(type="bad.result")
    assert after.result == "ok"
    assert st.status == "failed" and st.attempts == 1 and st.result is None
    assert dead.reason == "Validation" and needle in (dead.error or "")
    assert listed.error == st.error == dead.error
    assert (st.error or "").startswith("Validation: ")
