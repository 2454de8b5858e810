"""A runner's step: starts of queued jobs, and outcomes written only by the attempt that owns
the job (the fence), both in one call."""

from __future__ import annotations

from shardq.drivers import Driver
from shardq.drivers.base import Advanced, Outcome, StartedJob
from tests.rows import new_job

from .conftest import ids, start, states


async def test_a_start_takes_queued_jobs_only(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in (1, 2, 3, 4)] + [new_job(5, run_at=9000)])
    await start(driver, [2])
    await driver.cancel_job(3, 1500)
    started = await start(driver, [1, 2, 3, 5, 99], owner="B", now=2500)
    assert sorted(started) == [1, 5]
    assert await states(driver, [1, 2, 3, 4]) == {
        1: "processing", 2: "processing", 3: "cancelled", 4: "queued",
    }  # fmt: skip
    assert await start(driver, [1], owner="B", now=2600) == {}


async def test_a_start_counts_the_attempt_and_hands_over_the_job(driver: Driver) -> None:
    job = new_job(1, shard=5, key="k", priority=1, run_at=1500)
    await driver.insert_jobs([job])
    started = (await start(driver, [1], now=2000))[1]
    assert started == StartedJob(
        id=1, type="t", payload='{"n": 1}', priority=1, key="k", shard=5, attempts=1,
        max_attempts=3, timeout=None, duration="short", run_at=1500, created_at=1000,
        context=None,
    )  # fmt: skip
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.attempts, record.finished_at) == ("processing", 1, None)
    assert record.history == [("queued", 1000, None), ("processing", 2000, None)]


async def test_only_the_owner_of_the_attempt_writes_its_outcome(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2), new_job(3)])
    await start(driver, [1, 2])
    stale = [
        Outcome(1, 1, "complete", 3000, result="1"),
        Outcome(2, 1, "failed", 3000, error="E", reason="MaxRetries", dlq_id=7),
        Outcome(3, 1, "complete", 3000),
    ]
    assert (await driver.advance(stale, [], "B", 3000)).written == []
    assert (await driver.advance([Outcome(1, 2, "complete", 3000)], [], "A", 3000)).written == []
    assert await states(driver, [1, 2, 3]) == {1: "processing", 2: "processing", 3: "queued"}
    assert await driver.count_dead_letters() == 0

    # Job 2's attempt is 1, and there is no job 99.
    mixed = [Outcome(1, 1, "complete", 3000), Outcome(2, 2, "complete", 3000)]
    mixed.append(Outcome(99, 1, "complete", 3000))
    assert (await driver.advance(mixed, [], "A", 3000)).written == [1]
    assert (await driver.advance(mixed, [], "A", 3100)).written == []
    record = await driver.get_job(1)
    assert record is not None and record.finished_at == 3000


async def test_a_completion_stores_its_result(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await start(driver, [1, 2])
    done = [Outcome(1, 1, "complete", 3000, result='{"ok": 1}'), Outcome(2, 1, "complete", 3001)]
    assert sorted((await driver.advance(done, [], "A", 3000)).written) == [1, 2]
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.result, record.error) == ("complete", '{"ok": 1}', None)
    assert (record.finished_at, record.attempts) == (3000, 1)
    assert record.history[-1] == ("complete", 3000, None)
    assert await driver.load_refs([1, 2]) == []


async def test_a_retry_queues_the_job_again_at_its_time(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    retry = Outcome(1, 1, "retry", 3000, error="E: again", run_at=5000)
    assert (await driver.advance([retry], [], "A", 3000)).written == [1]
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.run_at, record.error) == ("queued", 5000, "E: again")
    assert (record.finished_at, record.attempts) == (None, 1)
    assert record.history[-1] == ("queued", 3000, "E: again")
    assert ids(await driver.load_delayed(None, 4999, 10)) == [1]
    assert await driver.load_ready(None, 2, 4999, 10) == []
    assert ids(await driver.load_ready(None, 2, 5000, 10)) == [1]

    # The second attempt fences the first out.
    assert (await start(driver, [1], now=5000))[1].attempts == 2
    assert (await driver.advance([retry], [], "A", 5100)).written == []
    assert (await driver.advance([Outcome(1, 2, "complete", 5100)], [], "A", 5100)).written == [1]


async def test_a_failure_leaves_a_dead_letter(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1, key="k", priority=1)])
    await start(driver, [1])
    failed = Outcome(1, 1, "failed", 3000, error="E: no", reason="MaxRetries", dlq_id=42)
    assert (await driver.advance([failed], [], "A", 3000)).written == [1]
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.error, record.finished_at) == ("failed", "E: no", 3000)
    assert record.history[-1] == ("failed", 3000, "E: no")
    letter = await driver.get_dead_letter(42)
    assert letter is not None
    assert (letter.job_id, letter.type, letter.payload, letter.priority, letter.key) == (
        1, "t", '{"n": 1}', 1, "k",
    )  # fmt: skip
    assert (letter.reason, letter.error, letter.attempts, letter.max_attempts) == (
        "MaxRetries", "E: no", 1, 3,
    )  # fmt: skip
    assert (letter.created_at, letter.failed_at, letter.replayed_at) == (1000, 3000, None)
    assert await driver.count_dead_letters() == 1


async def test_a_cancelled_attempt_ends_the_job(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    cancelled = Outcome(1, 1, "cancelled", 3000, error="cancelled")
    assert (await driver.advance([cancelled], [], "A", 3000)).written == [1]
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.finished_at, record.error) == ("cancelled", 3000, "cancelled")
    assert await driver.count_dead_letters() == 0
    assert await driver.load_refs([1]) == []


async def test_one_call_writes_every_kind_of_outcome_and_starts_jobs(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    attempts = await start(driver, [1, 2, 3, 4, 5])
    assert sorted(attempts) == [1, 2, 3, 4, 5]
    outcomes = [
        Outcome(1, 1, "complete", 3000, result="1"),
        Outcome(2, 1, "retry", 3000, error="E", run_at=4000),
        Outcome(3, 1, "failed", 3000, error="E", reason="MaxRetries", dlq_id=9),
        Outcome(4, 1, "cancelled", 3000, error="cancelled"),
        Outcome(5, 2, "complete", 3000),
    ]
    step = await driver.advance(outcomes, [6, 7, 1], "A", 3000)
    assert sorted(step.written) == [1, 2, 3, 4]
    assert sorted(ids(step.started)) == [6, 7]
    assert await states(driver, range(1, 8)) == {
        1: "complete", 2: "queued", 3: "failed", 4: "cancelled", 5: "processing",
        6: "processing", 7: "processing",
    }  # fmt: skip
    assert await driver.count_dead_letters() == 1
    assert await driver.advance([], [], "A", 3000) == Advanced([], [])


async def test_a_job_retried_by_a_step_can_be_started_by_the_next(driver: Driver) -> None:
    """A step never starts the job whose outcome it writes (the runner places a retry only
    once its outcome is written); the next step may."""
    await driver.insert_jobs([new_job(1)])
    await start(driver, [1])
    retry = Outcome(1, 1, "retry", 3000, error="E", run_at=3000)
    assert (await driver.advance([retry], [], "A", 3000)).written == [1]
    step = await driver.advance([], [1], "A", 3000)
    assert ids(step.started) == [1] and step.started[0].attempts == 2
