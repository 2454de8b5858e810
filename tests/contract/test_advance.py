"""A runner's step on each engine: outcomes written and jobs started in one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shardq.drivers import Driver, connect
from shardq.drivers.base import Outcome
from tests.rows import new_job


@pytest.fixture
async def driver(database_url: str) -> AsyncIterator[Driver]:
    d = connect(database_url, runner=True)
    await d.open()
    try:
        yield d
    finally:
        await d.close()


async def test_one_step_writes_every_kind_of_outcome_and_starts_the_next_jobs(
    driver: Driver,
) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    first = await driver.advance([], [1, 2, 3, 4], "A", 2000)
    assert sorted(j.id for j in first.started) == [1, 2, 3, 4]
    assert all(j.attempts == 1 for j in first.started)
    outcomes = [
        Outcome(1, 1, "complete", 3000, result='"ok"'),
        Outcome(2, 1, "retry", 3000, error="E: again", run_at=9000),
        Outcome(3, 1, "failed", 3000, error="E: no", reason="MaxRetries", dlq_id=77),
        Outcome(4, 1, "cancelled", 3000, error="cancelled"),
    ]
    step = await driver.advance(outcomes, [5, 6, 1], "A", 3000)
    assert sorted(step.written) == [1, 2, 3, 4]
    # 1 is complete by then: only the still-queued jobs start.
    assert sorted(j.id for j in step.started) == [5, 6]
    assert {j.id: j.payload for j in step.started} == {5: '{"n": 5}', 6: '{"n": 6}'}
    states = {i: (await driver.get_job(i)) for i in range(1, 8)}
    assert {i: r.state for i, r in states.items() if r} == {
        1: "complete", 2: "queued", 3: "failed", 4: "cancelled",
        5: "processing", 6: "processing", 7: "queued",
    }  # fmt: skip
    one = states[1]
    assert one is not None and one.result == '"ok"'
    assert [h[0] for h in one.history] == ["queued", "processing", "complete"]
    two = states[2]
    assert two is not None and two.run_at == 9000
    dead = await driver.get_dead_letter(77)
    assert dead is not None and dead.job_id == 3


async def test_a_fenced_outcome_is_not_written_but_the_starts_still_happen(
    driver: Driver,
) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await driver.advance([], [1], "A", 2000)
    # A stale attempt number and another owner: neither may write job 1's outcome.
    stale = [Outcome(1, 2, "complete", 3000), Outcome(1, 1, "complete", 3000)]
    step = await driver.advance(stale[:1], [2], "A", 3000)
    assert step.written == []
    assert [j.id for j in step.started] == [2]
    assert (await driver.advance(stale[1:], [], "B", 3000)).written == []
    record = await driver.get_job(1)
    assert record is not None and record.state == "processing"


async def test_undoing_unconfirmed_starts_requeues_only_the_owners_processing_jobs(
    driver: Driver,
) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 6)])
    await driver.advance([], [1, 2, 3], "A", 2000)
    await driver.advance([], [4], "B", 2000)
    assert await driver.cancel_job(3, 2500) == "requested"
    undone = await driver.undo_starts([1, 2, 3, 4, 5], "A", 3000)
    # 4 runs under B and 5 never started: both untouched. 3's cancel was asked for.
    assert sorted(r.id for r in undone) == [1, 2]
    states = {i: await driver.get_job(i) for i in range(1, 6)}
    assert {i: r.state for i, r in states.items() if r} == {
        1: "queued", 2: "queued", 3: "cancelled", 4: "processing", 5: "queued",
    }  # fmt: skip
    one = states[1]
    assert one is not None
    assert [h[0] for h in one.history] == ["queued", "processing", "queued"]
    assert "not confirmed" in (one.history[-1][2] or "")
    # Queued again means startable again.
    again = await driver.advance([], [1, 2], "A", 4000)
    assert sorted(j.id for j in again.started) == [1, 2]


async def test_a_batch_of_completions_alone_is_written_as_in_a_mixed_batch(
    driver: Driver,
) -> None:
    # A batch of completions only takes a narrower statement on PostgreSQL; its rows must
    # end up exactly as those of completions written beside other kinds of outcome.
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    await driver.advance([], [1, 2, 3, 4, 5], "A", 2000)
    alone = [Outcome(1, 1, "complete", 3000, result='"a"'), Outcome(2, 1, "complete", 3001)]
    step = await driver.advance(alone, [6], "A", 3000)
    assert sorted(step.written) == [1, 2] and [j.id for j in step.started] == [6]
    finished = await driver.advance([Outcome(6, 1, "complete", 3002, result="7")], [], "A", 3002)
    assert finished.written == [6] and finished.started == []
    mixed = [
        Outcome(3, 1, "complete", 3000, result='"a"'),
        Outcome(4, 1, "complete", 3001),
        Outcome(5, 1, "retry", 3000, error="E: again", run_at=9000),
    ]
    assert sorted((await driver.advance(mixed, [], "A", 3000)).written) == [3, 4, 5]

    def seen(record: Any) -> tuple[object, ...]:
        assert record is not None
        return (record.state, record.result, record.error, record.finished_at, record.history)

    for a, b in ((1, 3), (2, 4)):
        assert seen(await driver.get_job(a)) == seen(await driver.get_job(b))
    one = await driver.get_job(1)
    assert one is not None and one.state == "complete" and one.result == '"a"'
    assert one.finished_at == 3000 and tuple(one.history[-1]) == ("complete", 3000, None)
    six = await driver.get_job(6)
    assert six is not None and six.state == "complete" and six.result == "7"
    # Finished jobs are no longer queued or running anywhere.
    counts = await driver.count_queued_by_priority()
    assert sum(counts.values()) == 2  # 7, and 5 queued again by its retry
