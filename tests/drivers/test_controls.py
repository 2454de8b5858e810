"""Flow controls in storage: the controls store (limits, pauses, throttles, paused keys), the
admission of a step's starts of limited types against them, the throttle outcome, and
ready loads that leave held types out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import asyncpg
import pytest

from shardq.drivers import Driver, connect
from shardq.drivers.base import Advanced, LimitRecord, LimitUsage, Outcome, RateSpec
from shardq.drivers.postgres.driver import PostgresDriver
from tests.rows import new_job

from .conftest import ENGINES, ids, start, states
from .test_notifications import Heard, heard, watcher  # noqa: F401  (fixtures)


async def step(
    driver: Driver,
    job_ids: Iterable[int],
    now: int,
    outcomes: Sequence[Outcome] = (),
    owner: str = "A",
    limited: Iterable[str] = ("t",),
) -> Advanced:
    """One step of ``owner`` starting ``job_ids`` with the types ``limited``."""
    return await driver.advance(list(outcomes), list(job_ids), owner, now, frozenset(limited))


async def test_a_concurrency_admits_up_to_its_slots_and_more_as_they_free(
    driver: Driver,
) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    await driver.controls.put_limits([LimitRecord("t", concurrency=2)], 1000)
    first = await step(driver, [1, 2, 3, 4, 5], 2000)
    assert ids(first.started) == [1, 2] and first.held == {"t": 0}
    assert await states(driver, [3, 4, 5]) == {3: "queued", 4: "queued", 5: "queued"}
    full = await step(driver, [3, 4, 5], 2100)
    assert full.started == [] and full.held == {"t": 0}

    # A finish written in an earlier step frees its slot; one written in the same step too.
    assert (await driver.advance([Outcome(1, 1, "complete", 2200)], [], "A", 2200)).written
    assert ids((await step(driver, [3, 4, 5], 2300)).started) == [3]
    done = await step(driver, [4, 5], 2400, outcomes=[Outcome(2, 1, "complete", 2400)])
    assert done.written == [2] and ids(done.started) == [4] and done.held == {"t": 0}
    # An outcome the fence refuses frees nothing.
    stale = await step(driver, [5], 2500, outcomes=[Outcome(3, 9, "complete", 2500)])
    assert (stale.written, stale.started, stale.held) == ([], [], {"t": 0})
    assert await driver.controls.usage(["t"], 2500) == {"t": LimitUsage(2, None)}


async def test_a_dead_runners_jobs_hold_their_slots_until_recovered(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 5)])
    await driver.controls.put_limits([LimitRecord("t", concurrency=2)], 1000)
    assert ids((await step(driver, [1, 2], 2000, owner="dead")).started) == [1, 2]
    assert (await step(driver, [3, 4], 2100)).started == []
    assert await driver.recover(None, 2200, keep_owner="A") == 2
    assert ids((await step(driver, [3, 4, 1], 2300)).started) == [3, 4]


async def test_a_retried_job_started_again_holds_one_slot(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await driver.controls.put_limits([LimitRecord("t", concurrency=2)], 1000)
    await step(driver, [1], 2000)
    retry = Outcome(1, 1, "retry", 2100, error="E", run_at=2100)
    assert (await step(driver, [], 2100, outcomes=[retry])).written == [1]
    assert ids((await step(driver, [1], 2200)).started) == [1]
    assert await driver.controls.usage(["t"], 2200) == {"t": LimitUsage(1, None)}
    assert ids((await step(driver, [2], 2300)).started) == [2]


async def test_a_rate_admits_a_token_per_start_and_names_the_next_token(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 5)])
    await driver.controls.put_limits([LimitRecord("t", rate=RateSpec(10, 1.0))], 1000)
    first = await step(driver, [1, 2, 3], 5000)
    assert ids(first.started) == [1] and first.held == {"t": 5100}
    early = await step(driver, [2, 3], 5099)
    assert early.started == [] and early.held == {"t": 5100}
    on_time = await step(driver, [2, 3], 5100)
    assert ids(on_time.started) == [2] and on_time.held == {"t": 5200}
    # A runner whose clock is behind the bucket's adds no tokens, and waits from the bucket.
    behind = await step(driver, [3], 4000)
    assert behind.started == [] and behind.held == {"t": 5200}
    assert await driver.controls.usage(["t"], 5150) == {"t": LimitUsage(0, 0.5)}


async def test_a_rates_burst_admits_that_many_more_from_full(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 8)])
    await driver.controls.put_limits([LimitRecord("t", rate=RateSpec(2, 1.0, burst=4))], 1000)
    first = await step(driver, range(1, 8), 9000)
    assert ids(first.started) == [1, 2, 3, 4, 5] and first.held == {"t": 9500}
    # A long quiet spell fills the bucket to burst + 1, no more.
    assert await driver.controls.usage(["t"], 10**6) == {"t": LimitUsage(0, 5.0)}


async def test_a_refused_start_waits_for_the_latest_of_its_limits(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 4)])
    rate = RateSpec(1, 2.0)
    await driver.controls.put_limits([LimitRecord("t", concurrency=1, rate=rate)], 1000)
    # Both the slot and the rate refuse job 2: the rate's next token is the later.
    assert (await step(driver, [1, 2], 3000)).held == {"t": 5000}
    # Only the slot refuses once the token is back.
    assert (await step(driver, [2], 5000)).held == {"t": 0}


async def test_a_paused_type_starts_nothing_until_resumed(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2, type="u")])
    await driver.controls.set_paused("t", True, 1000)
    paused = await step(driver, [1, 2], 2000, limited=["t", "u"])
    assert ids(paused.started) == [2] and paused.held == {"t": 0}
    await driver.controls.set_paused("t", False, 2100)
    resumed = await step(driver, [1], 2200)
    assert ids(resumed.started) == [1] and resumed.held == {}


async def test_a_throttle_holds_the_type_until_its_time(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await driver.controls.throttle("t", 5000, 1000)
    await driver.controls.throttle("t", 4000, 1100)  # never shortens a longer hold
    held = await step(driver, [1, 2], 4500)
    assert held.started == [] and held.held == {"t": 5000}
    assert ids((await step(driver, [1, 2], 5000)).started) == [1, 2]
    await driver.controls.throttle("t", 7000, 5100)  # lengthens it
    assert (await driver.controls.limits())[0].throttled_until == 7000


async def test_types_without_controls_or_not_limited_are_admitted(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2, type="u"), new_job(3, type="v")])
    await driver.controls.set_paused("v", True, 1000)
    done = await step(driver, [1, 2, 3], 2000, limited=["u"])
    assert sorted(ids(done.started)) == [1, 2, 3] and done.held == {}


async def test_an_unlimited_step_never_touches_the_controls(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 4)])
    limits = LimitRecord("t", concurrency=1, rate=RateSpec(1, 60.0), paused=False)
    await driver.controls.put_limits([limits], 1000)
    await driver.controls.set_paused("t", True, 1000)
    assert sorted(await start(driver, [1, 2])) == [1, 2]
    # No slot taken, no token used: the limited step after it sees them all free.
    assert await driver.controls.usage(["t"], 2000) == {"t": LimitUsage(0, 1.0)}
    await driver.controls.set_paused("t", False, 2000)
    assert ids((await step(driver, [3], 2100)).started) == [3]
    assert await driver.controls.usage(["t"], 2100) == {"t": LimitUsage(1, 0.0)}


async def test_put_limits_keeps_pause_throttle_and_tokens_of_an_unchanged_rate(
    driver: Driver,
) -> None:
    rate = RateSpec(1, 10.0, burst=1)
    await driver.controls.put_limits([LimitRecord("t", rate=rate)], 1000)
    await driver.controls.set_paused("t", True, 1000)
    await driver.controls.throttle("t", 9000, 1000)
    # A record's own pause and throttle are not written: the stored ones stay.
    await driver.controls.put_limits([LimitRecord("t", 3, 2, rate, RateSpec(5, 1.5, 2))], 2000)
    assert await driver.controls.limits() == [
        LimitRecord("t", 3, 2, rate, RateSpec(5, 1.5, 2), paused=True, throttled_until=9000)
    ]
    # Every limit None: the row stays, with its pause.
    await driver.controls.put_limits([LimitRecord("t")], 2000)
    assert await driver.controls.limits() == [LimitRecord("t", paused=True, throttled_until=9000)]


async def test_put_limits_keeps_the_tokens_unless_the_rate_changed(driver: Driver) -> None:
    await driver.insert_jobs([new_job(i) for i in range(1, 4)])
    rate = RateSpec(1, 10.0, burst=1)
    await driver.controls.put_limits([LimitRecord("t", rate=rate)], 1000)
    assert len((await step(driver, [1, 2], 2000)).started) == 2
    await driver.controls.put_limits([LimitRecord("t", concurrency=5, rate=rate)], 3000)
    assert await driver.controls.usage(["t"], 3000) == {"t": LimitUsage(0, 0.1)}
    await driver.controls.put_limits([LimitRecord("t", rate=RateSpec(1, 10.0, 3))], 3000)
    assert await driver.controls.usage(["t"], 3000) == {"t": LimitUsage(0, 4.0)}
    await driver.controls.put_limits([LimitRecord("t")], 3000)
    assert await driver.controls.usage(["t"], 3000) == {"t": LimitUsage(0, None)}


async def test_limits_and_usage_name_every_stored_type(driver: Driver) -> None:
    assert await driver.controls.limits() == []
    assert await driver.controls.usage(["t"], 1000) == {}
    await driver.controls.put_limits(
        [LimitRecord("b", concurrency=1), LimitRecord("a", rate=RateSpec(3, 1.0)),
         LimitRecord("b", concurrency=2)],
        1000,
    )  # fmt: skip
    await driver.controls.throttle("c", 5000, 1000)
    assert [r.job_type for r in await driver.controls.limits()] == ["a", "b", "c"]
    assert (await driver.controls.limits())[1] == LimitRecord("b", concurrency=2)
    await driver.insert_jobs([new_job(1, type="b"), new_job(2, type="a")])
    await step(driver, [1, 2], 2000, limited=["a", "b"])
    assert await driver.controls.usage(["a", "b", "c", "d"], 2000) == {
        "a": LimitUsage(0, 0.0), "b": LimitUsage(1, None), "c": LimitUsage(0, None),
    }  # fmt: skip


async def test_paused_keys_are_kept_sorted(driver: Driver) -> None:
    assert await driver.controls.paused_keys() == []
    for key in ("k2", "k1", "k2"):
        await driver.controls.set_key_paused(key, True, 1000)
    assert await driver.controls.paused_keys() == ["k1", "k2"]
    await driver.controls.set_key_paused("k2", False, 1000)
    await driver.controls.set_key_paused("k3", False, 1000)
    assert await driver.controls.paused_keys() == ["k1"]


async def test_load_ready_leaves_the_excluded_types_out(driver: Driver) -> None:
    await driver.insert_jobs([new_job(1), new_job(2, type="u"), new_job(3, type="v"), new_job(4)])
    assert ids(await driver.load_ready(None, 2, 1000, 10)) == [1, 2, 3, 4]
    assert ids(await driver.load_ready(None, 2, 1000, 10, exclude=["u"])) == [1, 3, 4]
    assert ids(await driver.load_ready(None, 2, 1000, 10, exclude={"t", "v"})) == [2]
    assert await driver.load_ready(None, 2, 1000, 10, 0, ["t", "u", "v"]) == []


async def test_a_throttle_outcome_queues_the_job_again_without_its_attempt(
    driver: Driver,
    watcher: Heard,  # noqa: F811
) -> None:
    await driver.insert_jobs([new_job(1), new_job(2)])
    await start(driver, [1, 2])
    retry = Outcome(1, 1, "retry", 2100, error="E: once", run_at=2100)
    assert (await driver.advance([retry], [], "A", 2100)).written == [1]
    await start(driver, [1], now=2200)
    throttled = Outcome(1, 2, "throttle", 3000, error="E: later", run_at=8000)
    assert (await driver.advance([throttled], [], "A", 3000)).written == [1]
    record = await driver.get_job(1)
    assert record is not None
    assert (record.state, record.run_at, record.attempts) == ("queued", 8000, 1)
    assert (record.error, record.finished_at) == ("E: once", None)
    assert record.history[-1] == ("throttled", 3000, "E: later")
    assert ids(await driver.load_delayed(None, 7999, 10)) == [1]
    assert (await start(driver, [1], now=8000))[1].attempts == 2
    # Not a finish: only job 2's completion is announced.
    await driver.advance([Outcome(2, 1, "complete", 3000)], [], "A", 3000)
    await watcher.until(lambda: 2 in watcher.of("finished"), "job 2 finished")
    assert 1 not in watcher.of("finished")


async def test_every_change_of_controls_is_announced(
    driver: Driver,
    other: Driver,
    heard: Heard,  # noqa: F811
) -> None:
    controls = other.controls
    await controls.put_limits([LimitRecord("t", concurrency=1)], 1000)
    await controls.set_paused("t", True, 1000)
    await controls.set_paused("t", False, 1000)
    await controls.throttle("t", 5000, 1000)
    await controls.set_key_paused("k", True, 1000)
    await controls.set_key_paused("k", False, 1000)
    await heard.until(
        lambda: [e for e in heard.events if e[0] == "controls"] == [("controls", [])] * 6,
        "six changes",
    )


async def until_waiting(db: asyncpg.Connection, tags: list[str], timeout: float = 10.0) -> None:
    """Poll until every session of the processes tagged ``tags`` waits on a lock."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND application_name = ANY($1::text[])",
            tags,
        )
        if waiting == len(tags):
            return
        assert time.monotonic() < deadline, f"not waiting on a lock: {tags}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def runners(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[PostgresDriver, PostgresDriver, asyncpg.Connection]]:
    """Two runner-side drivers on an empty PostgreSQL database, runner A owning shard 0
    (jobs 1 to 5 of type t) and runner B shard 1 (jobs 6 to 10), and a connection."""
    async with ENGINES["postgres"](request) as url:
        a, b = connect(url, runner=True), connect(url, runner=True)
        assert isinstance(a, PostgresDriver) and isinstance(b, PostgresDriver)
        await a.open()
        await b.open()
        db = await asyncpg.connect(url)
        try:
            await db.execute("INSERT INTO shardq_shards VALUES (0, 'A', 0), (1, 'B', 0)")
            await a.insert_jobs([new_job(i, shard=0) for i in range(1, 6)])
            await a.insert_jobs([new_job(i, shard=1) for i in range(6, 11)])
            yield a, b, db
        finally:
            await db.close()
            await b.close()
            await a.close()


async def race(a: PostgresDriver, b: PostgresDriver, db: asyncpg.Connection, now: int) -> int:
    """Runners A and B each start every job of their shard at the same moment (both wait
    on type t's row, then run one right after the other); how many jobs are running then."""
    blocker = db.transaction()
    await blocker.start()
    await db.execute("SELECT 1 FROM shardq_controls WHERE type = 't' FOR UPDATE")
    steps = [
        asyncio.create_task(step(a, range(1, 6), now, owner="A")),
        asyncio.create_task(step(b, range(6, 11), now, owner="B")),
    ]
    await until_waiting(db, [a.tag, b.tag])
    await blocker.rollback()
    await asyncio.gather(*steps)
    running: int = await db.fetchval("SELECT count(*) FROM jobs WHERE state = 'processing'")
    return running


async def test_runners_admitting_at_once_never_exceed_the_concurrency(
    runners: tuple[PostgresDriver, PostgresDriver, asyncpg.Connection],
) -> None:
    """The second admission counts the slots the first took."""
    a, b, db = runners
    await a.controls.put_limits([LimitRecord("t", concurrency=3)], 1000)
    for now in (2000, 2001, 2002):
        assert await race(a, b, db, now) == 3
        # One job finishes before the next race: one slot is free for the two.
        job_id, attempt, owner = await db.fetchrow(
            "SELECT id, attempts, owner FROM jobs WHERE state = 'processing' ORDER BY id LIMIT 1"
        )
        done = await (a if owner == "A" else b).advance(
            [Outcome(job_id, attempt, "complete", now)], [], owner, now
        )
        assert done.written == [job_id]


async def test_runners_admitting_at_once_share_the_tokens(
    runners: tuple[PostgresDriver, PostgresDriver, asyncpg.Connection],
) -> None:
    """The second admission takes the tokens the first left."""
    a, b, db = runners
    await a.controls.put_limits([LimitRecord("t", rate=RateSpec(1, 3600.0, burst=3))], 1000)
    assert await race(a, b, db, 2000) == 4
    assert await race(a, b, db, 2001) == 4
