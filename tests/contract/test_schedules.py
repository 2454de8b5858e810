"""Schedules on each engine: one job per tick, driven by an injected clock (storage runs in
real time, so each test waits for the effects of the ticks it lets fall due)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shardq import FakeClock, JobError, JobService, JobStatusResponse, current_job

from .conftest import ServiceFactory

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a multiple of every interval used here


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Wait until ``check()`` (awaited if it gives an awaitable) is truthy: storage answers
    in real time, whatever the clock says."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def scheduled(jobs: JobService, job_type: str = "tick") -> list[JobStatusResponse]:
    """The jobs of ``job_type``, oldest first."""
    return list(reversed(await jobs.list_jobs(type=job_type, limit=500)))


async def ticks(jobs: JobService, job_type: str = "tick") -> list[int]:
    """The ticks (ms) of the jobs of ``job_type``, oldest job first."""
    out = []
    for st in await scheduled(jobs, job_type):
        assert st.tick is not None
        out.append(round(st.tick.timestamp() * 1000))
    return out


async def handled_through(jobs: JobService, name: str, tick: int) -> bool:
    """Whether the schedule ``name`` has handled its ticks up to ``tick``."""
    (s,) = [s for s in await jobs.schedules() if s.name == name]
    return s.next_tick is not None and s.next_tick > at(tick)


async def test_an_every_schedule_submits_one_job_per_tick(make_service: ServiceFactory) -> None:
    clock = FakeClock(START)
    jobs = make_service(clock=clock)
    ran: list[str] = []

    @jobs.every(60, name="tick", payload={"n": 1})
    async def tick(payload: Any) -> None:
        ran.append(current_job().job_id)

    async with jobs:
        (s,) = await jobs.schedules()
        assert (s.name, s.job_type, s.every, s.cron, s.tz, s.declared) == (
            "tick", "tick", 60.0, None, "UTC", True,
        )  # fmt: skip
        assert (s.next_tick, s.last_tick, s.last_job_id, s.paused) == (
            at(START + 60_000), None, None, False,
        )  # fmt: skip
        for n in (1, 2, 3):
            await clock.advance(60)
            await until(lambda n=n: len(ran) == n, f"job {n}")
            await until(lambda n=n: handled_through(jobs, "tick", START + n * 60_000), "record")
        assert await ticks(jobs) == [START + n * 60_000 for n in (1, 2, 3)]
        last = await jobs.wait(ran[-1], timeout=5)
        assert (last.schedule, last.tick, last.job.payload if last.job else None) == (
            "tick", at(START + 180_000), {"n": 1},
        )  # fmt: skip
        assert last.to_dict()["schedule"] == "tick"
        (s,) = await jobs.schedules()
        assert (s.last_tick, s.last_job_id) == (at(START + 180_000), ran[-1])


@pytest.mark.parametrize(
    ("expected", "start"),
    [
        # Spring: 02:30 does not exist on 2026-03-29; it fires once, at 03:00 CEST.
        (["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"], "2026-03-27T12:00"),
        # Autumn: 02:30 happens twice on 2026-10-25; it fires once, at the first.
        (["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"], "2026-10-23T12:00"),
    ],
)
async def test_a_cron_in_a_named_zone_fires_once_across_daylight_saving(
    make_service: ServiceFactory, expected: list[str], start: str
) -> None:
    begin = round(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
    clock = FakeClock(begin)
    jobs = make_service(clock=clock)
    jobs.register_handler("digest", lambda p: None)
    async with jobs:
        await jobs.schedule(
            "nightly", job_type="digest", cron="30 2 * * *", tz="Europe/Berlin", misfire="all"
        )
        await clock.advance(3 * 86_400)
        await until(lambda: _count(jobs, "digest", 3), "three nightly jobs")
        await until(lambda: handled_through(jobs, "nightly", begin + 3 * 86_400_000 - 1), "all")
        got = [at(t).strftime("%Y-%m-%dT%H:%M") for t in await ticks(jobs, "digest")]
        assert got == expected


async def _count(jobs: JobService, job_type: str, n: int) -> bool:
    return len(await scheduled(jobs, job_type)) >= n


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("all", [START + n * 60_000 for n in range(1, 11)]),
        ("latest", [START + 600_000]),
        ("skip", []),
    ],
)
async def test_ticks_missed_while_no_runner_was_up_follow_the_misfire_policy(
    make_service: ServiceFactory, misfire: str, expected: list[int]
) -> None:
    clock = FakeClock(START)
    async with make_service(clock=clock) as first:
        await first.schedule("m", job_type="tick", every=60, misfire=misfire)  # type: ignore[arg-type]
    await clock.advance(602)  # ten ticks pass with no runner up (the last 2 s ago)
    jobs = make_service(clock=clock)
    jobs.register_handler("tick", lambda p: None)
    async with jobs:
        await until(lambda: handled_through(jobs, "m", START + 600_000), "the missed ticks")
        assert await ticks(jobs) == expected
        # The next tick is on time again, whatever the policy.
        await clock.advance(58.5)
        await until(lambda: handled_through(jobs, "m", START + 660_000), "the next tick")
        assert (await ticks(jobs))[-1:] == [START + 660_000]


async def _blocked_service(
    make_service: ServiceFactory, clock: FakeClock, overlap: str
) -> tuple[JobService, list[str], asyncio.Event]:
    jobs = make_service(clock=clock)
    started: list[str] = []
    release = asyncio.Event()

    @jobs.every(60, name="slow", overlap=overlap)  # type: ignore[arg-type]
    async def slow(payload: Any) -> None:
        started.append(current_job().job_id)
        await release.wait()

    return jobs, started, release


async def test_overlap_skip_drops_a_tick_while_the_previous_job_runs(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock(START)
    jobs, started, release = await _blocked_service(make_service, clock, "skip")
    async with jobs:
        await clock.advance(60)
        await until(lambda: len(started) == 1, "the first job running")
        await clock.advance(60)
        await until(lambda: handled_through(jobs, "slow", START + 120_000), "the second tick")
        assert await ticks(jobs, "slow") == [START + 60_000]
        release.set()
        await jobs.wait(started[0], timeout=5)
        await clock.advance(60)
        await until(lambda: len(started) == 2, "the third tick's job")
        assert await ticks(jobs, "slow") == [START + 60_000, START + 180_000]


async def test_overlap_queue_runs_ticks_one_at_a_time_in_order(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock(START)
    jobs, started, release = await _blocked_service(make_service, clock, "queue")
    async with jobs:
        await clock.advance(60)
        await until(lambda: len(started) == 1, "the first job running")
        await clock.advance(60)
        await until(lambda: _count(jobs, "slow", 2), "the second tick's job")
        first, second = await scheduled(jobs, "slow")
        assert (first.status, second.status) == ("processing", "queued")
        assert second.job is not None and second.job.key == "schedule:slow"
        release.set()
        assert (await jobs.wait(second.id, timeout=5)).status == "complete"
        assert started == [first.id, second.id]


async def test_overlap_allow_runs_ticks_side_by_side(make_service: ServiceFactory) -> None:
    clock = FakeClock(START)
    jobs, started, release = await _blocked_service(make_service, clock, "allow")
    async with jobs:
        await clock.advance(60)
        await until(lambda: len(started) == 1, "the first job running")
        await clock.advance(60)
        await until(lambda: len(started) == 2, "the second job running beside it")
        release.set()


async def test_a_schedule_managed_from_another_process_reaches_the_runner(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock(START)
    jobs = make_service(clock=clock)
    jobs.register_handler("poll", lambda p: None)
    async with jobs, make_service(runner=False, clock=clock) as web:
        s = await web.schedule("feeds", job_type="poll", every=5.0, payload={"a": 1})
        assert (s.every, s.payload, s.declared, s.next_tick) == (
            5.0,
            {"a": 1},
            False,
            at(START + 5000),
        )
        # The runner arms it when it hears of it: the tick falls due only then.
        await until(lambda: _armed(jobs, 1), "the runner to arm it")
        await clock.advance(5)
        await until(lambda: _count(jobs, "poll", 1), "the first tick's job")
        await web.schedule("feeds", job_type="poll", every=20.0)
        await until(lambda: _every(jobs, 20.0), "the change to arrive")
        await clock.advance(20)
        await until(lambda: handled_through(jobs, "feeds", START + 20_000), "the changed tick")
        assert await ticks(jobs, "poll") == [START + 5000, START + 20_000]
        await web.unschedule("feeds")
        await until(lambda: _armed(jobs, 0), "the runner to disarm it")
        await clock.advance(60)
        assert await web.schedules() == []
        assert len(await scheduled(jobs, "poll")) == 2


async def _armed(jobs: JobService, n: int) -> bool:
    runner: Any = jobs._runner
    return bool(runner._scheduler.armed == n)


async def _every(jobs: JobService, seconds: float) -> bool:
    runner: Any = jobs._runner
    return all(a.spec.every_ms == seconds * 1000 for a in runner._scheduler._armed.values())


async def test_declared_schedules_are_synced_when_a_runner_starts(
    make_service: ServiceFactory,
) -> None:
    first = make_service()

    @first.cron("0 8 * * MON", name="weekly", tz="Europe/Berlin", priority="low")
    @first.every(30.0, name="often", job_type="weekly")
    async def weekly(payload: Any) -> None: ...

    async with first:
        await first.schedule("runtime", job_type="x", every=10)
        by_name = {s.name: s for s in await first.schedules()}
        assert sorted(by_name) == ["often", "runtime", "weekly"]
        assert (by_name["weekly"].cron, by_name["weekly"].priority) == ("0 8 * * MON", "low")
        assert by_name["often"].job_type == "weekly"
    second = make_service()

    @second.cron("0 9 * * MON", name="weekly", tz="Europe/Berlin")
    async def weekly2(payload: Any) -> None: ...

    async with second:
        by_name = {s.name: s for s in await second.schedules()}
        assert sorted(by_name) == ["runtime", "weekly"], "only declared ones are removed"
        assert (by_name["weekly"].cron, by_name["weekly"].priority) == ("0 9 * * MON", "normal")


#: Bad arguments of ``schedule``, and what the error says.
BAD: list[tuple[dict[str, Any], str]] = [
    ({"cron": "0 25 * * *"}, "invalid cron expression '0 25 * * *'"),
    ({"every": 5, "tz": "Nowhere/Land"}, "unknown time zone 'Nowhere/Land'"),
    ({"every": 0}, "every must be more than 0"),
    ({"every": -5}, "every must be more than 0"),
    ({"every": 5, "cron": "* * * * *"}, "not both"),
    ({}, "cron= (an expression) or every= (seconds)"),
    ({"every": 5, "payload": {1, 2}}, "payload is not JSON-serialisable"),
    ({"every": 5, "misfire": "never"}, "unknown misfire policy"),
]


async def test_bad_input_says_what_is_wrong_and_changes_nothing(
    make_service: ServiceFactory,
) -> None:
    async with make_service() as jobs:
        await jobs.schedule("s", job_type="t", every=60)
        before = await jobs.schedules()
        for options, message in BAD:
            with pytest.raises(JobError) as e:
                await jobs.schedule("s", job_type="t", **options)
            assert (e.value.reason, message in str(e.value)) == ("Validation", True), str(e.value)
        with pytest.raises(JobError) as e:
            await jobs.unschedule("nothing")
        assert (e.value.reason, str(e.value)) == ("NotFound", "no schedule named 'nothing'")
        with pytest.raises(JobError, match="invalid cron expression"):
            jobs.cron("bad", name="x")
        assert await jobs.schedules() == before


async def test_a_paused_schedule_fires_nothing_and_goes_on_from_its_next_tick(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock(START)
    jobs = make_service(clock=clock)
    ran: list[str] = []

    @jobs.every(60, name="tick")
    async def tick(payload: Any) -> None:
        ran.append(current_job().job_id)

    async with jobs:
        await clock.advance(60)
        await until(lambda: len(ran) == 1, "the first tick's job")
        await until(lambda: handled_through(jobs, "tick", START + 60_000), "its record")
        await jobs.pause(schedule="tick")
        (s,) = await jobs.schedules()
        assert s.paused and (await jobs.paused()).schedules == ["tick"]
        for _ in range(3):  # three ticks pass while paused
            await clock.advance(60)
        await jobs.resume(schedule="tick")
        assert not (await jobs.schedules())[0].paused
        # The ticks of the pause are not misfires: the next job is the next tick's.
        await clock.advance(60)
        await until(lambda: len(ran) == 2, "the tick after the resume")
        await until(lambda: handled_through(jobs, "tick", START + 300_000), "its record")
        assert await ticks(jobs) == [START + 60_000, START + 300_000]
