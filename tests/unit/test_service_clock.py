"""Parts outside the runner read the time of their service's clock: a ``FakeClock`` moves
them with the rest of the service."""

from __future__ import annotations

from datetime import UTC, datetime

from shardq import FakeClock, JobService
from shardq.cluster import LoadMeter
from shardq.observe import Metrics


def _at(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.now_ms() / 1000, UTC)


async def test_the_embedded_cluster_view_is_of_the_service_clock(sqlite_url: str) -> None:
    clock = FakeClock()
    async with JobService(sqlite_url, clock=clock) as jobs:
        view = await jobs.cluster()
        (me,) = view.runners
        assert view.at == me.heartbeat_at == me.started_at == _at(clock)
        await clock.advance(3600)
        view = await jobs.cluster()
        assert view.at == view.runners[0].heartbeat_at == _at(clock)
        assert view.runners[0].started_at == me.started_at


async def test_the_embedded_view_of_a_service_without_runner_too(sqlite_url: str) -> None:
    clock = FakeClock(now_ms=1_800_000_000_000)
    async with JobService(sqlite_url, runner=False, clock=clock) as jobs:
        assert (await jobs.cluster()).at == _at(clock)


async def test_the_load_meter_measures_its_rate_on_the_clock() -> None:
    clock = FakeClock()
    metrics = Metrics()
    meter = LoadMeter(metrics, 4, window=0.5, clock=clock)
    metrics.completed.labels("t", "normal").inc(10)
    assert meter.sample() == (0, 4, 0.0)  # no time has passed on the clock
    await clock.advance(2.0)
    assert meter.sample() == (0, 4, 5.0)
