"""Flow control: limits per type and per key, pause and resume, Throttled (both engines)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from shardq import FakeClock, JobError, Rate, Throttled

from .conftest import ServiceFactory


class Gauge:
    """Counts handlers running at once; remembers the most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def hold(self, release: asyncio.Event | None = None) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await (release.wait() if release is not None else asyncio.sleep(0.005))
        finally:
            self.now -= 1


async def test_a_concurrency_limit_is_never_exceeded(make_service: ServiceFactory) -> None:
    jobs = make_service(concurrency=16)
    gauge = Gauge()
    release = asyncio.Event()

    @jobs.handler("api.call", concurrency=3)
    async def call(p: dict[str, int]) -> None:
        await gauge.hold(release if p["i"] < 3 else None)

    async with jobs:
        ids = await jobs.submit("api.call", [{"i": i} for i in range(40)])
        for _ in range(500):  # until the first three hold every slot
            if gauge.now == 3:
                break
            await asyncio.sleep(0.01)
        st = await jobs.status(ids[-1])
        assert (st.status, st.waiting) == ("queued", "waiting for a slot of api.call"), st
        release.set()
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=30)).status == "complete"
        limits = {lim.job_type: lim for lim in await jobs.limits()}
    assert gauge.most == 3
    assert limits["api.call"].concurrency == 3
    assert limits["api.call"].running == 0


async def test_a_key_concurrency_runs_that_many_of_a_key_in_submit_order(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service(concurrency=16)
    gauge = Gauge()
    started: list[int] = []

    @jobs.handler("sync", key_concurrency=2)
    async def sync(p: dict[str, int]) -> None:
        started.append(p["i"])
        await gauge.hold()

    async with jobs:
        ids = await jobs.submit("sync", [{"i": i} for i in range(20)], key="tenant:1")
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=30)).status == "complete"
    assert gauge.most == 2
    assert started == list(range(20))


async def test_a_rate_spreads_starts_evenly(make_service: ServiceFactory) -> None:
    jobs = make_service()

    @jobs.handler("ping", rate=Rate(20, per=1.0))
    async def ping(p: Any) -> None:
        return None

    async with jobs:
        ids = await jobs.submit("ping", [{} for _ in range(8)])
        starts = []
        for job_id in ids:
            st = await jobs.wait(job_id, timeout=30)
            starts.append(next(h.timestamp for h in st.history if h.status == "processing"))
    starts.sort()
    first = starts[0].timestamp()
    # One token at a time (burst 0): the nth start comes no sooner than n * 50 ms.
    for n, at in enumerate(starts):
        assert at.timestamp() - first >= n * 0.050 - 0.002, (n, starts)


async def test_a_key_rate_spaces_one_keys_starts_and_not_anothers(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()

    @jobs.handler("poll", key_rate=Rate(10, per=1.0), key_concurrency=5)
    async def poll(p: Any) -> None:
        return None

    async with jobs:
        slow = await jobs.submit("poll", [{} for _ in range(5)], key="feed:a")
        other = await jobs.submit("poll", [{} for _ in range(5)], key="feed:b")
        starts: dict[str, list[float]] = {"feed:a": [], "feed:b": []}
        for key, ids in (("feed:a", slow), ("feed:b", other)):
            for job_id in ids:
                st = await jobs.wait(job_id, timeout=30)
                at = next(h.timestamp for h in st.history if h.status == "processing")
                starts[key].append(at.timestamp())
    for key, seen in starts.items():
        times = sorted(seen)
        # 10 a second, no burst: consecutive starts of one key at least 100 ms apart
        # (timestamps are whole milliseconds).
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.099, (key, gaps)


async def test_a_paused_type_waits_in_order_and_resumes_at_once(
    make_service: ServiceFactory,
) -> None:
    jobs = make_service()
    ran: list[str] = []

    @jobs.handler("email.send")
    async def send(p: dict[str, str]) -> None:
        ran.append(p["to"])

    @jobs.handler("other")
    async def other(p: Any) -> None:
        return None

    async with jobs:
        await jobs.pause(job_type="email.send")
        assert (await jobs.paused()).job_types == ["email.send"]
        assert (await jobs.stats()).paused["job_types"] == ["email.send"]
        ids = await jobs.submit("email.send", [{"to": f"u{i}"} for i in range(5)])
        # A job of another type submitted after them runs: the runner is not stuck.
        marker = await jobs.submit("other", {})
        assert (await jobs.wait(marker, timeout=10)).status == "complete"
        for job_id in ids:
            st = await jobs.status(job_id)
            assert (st.status, st.attempts) == ("queued", 0)
            assert st.waiting == "paused (job type email.send)"
            assert st.to_dict()["waiting"] == st.waiting
        assert ran == []
        await jobs.resume(job_type="email.send")
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=10)).status == "complete"
        assert (await jobs.paused()).job_types == []
    assert ran == [f"u{i}" for i in range(5)]


async def test_a_paused_key_holds_that_key_only(make_service: ServiceFactory) -> None:
    jobs = make_service()
    ran: list[str] = []

    @jobs.handler("bill")
    async def bill(p: dict[str, str]) -> None:
        ran.append(p["k"])

    async with jobs:
        await jobs.pause(key="tenant:7")
        held = await jobs.submit("bill", [{"k": "7a"}, {"k": "7b"}], key="tenant:7")
        free = await jobs.submit("bill", {"k": "8"}, key="tenant:8")
        assert (await jobs.wait(free, timeout=10)).status == "complete"
        assert [(await jobs.status(i)).status for i in held] == ["queued", "queued"]
        assert (await jobs.status(held[0])).waiting == "paused (key tenant:7)"
        await jobs.resume(key="tenant:7")
        for job_id in held:
            assert (await jobs.wait(job_id, timeout=10)).status == "complete"
    assert ran == ["8", "7a", "7b"]


async def test_throttled_requeues_without_an_attempt_and_holds_the_type(
    make_service: ServiceFactory,
) -> None:
    clock = FakeClock()
    jobs = make_service(clock=clock)
    runs: list[int] = []
    throttled = asyncio.Event()

    @jobs.handler("api.call")
    async def call(p: dict[str, int]) -> None:
        runs.append(p["i"])
        if p["i"] == 0 and not throttled.is_set():
            throttled.set()
            raise Throttled(retry_after=30)

    async with jobs:
        first = await jobs.submit("api.call", {"i": 0}, max_attempts=1)
        await asyncio.wait_for(throttled.wait(), timeout=10)
        st = await jobs.status(first)
        for _ in range(200):
            if st.status == "queued":
                break
            await asyncio.sleep(0.01)
            st = await jobs.status(first)
        assert (st.status, st.attempts) == ("queued", 0)
        assert [h.status for h in st.history] == ["queued", "processing", "throttled"]
        # The whole type is held, cluster-wide (in storage): a second job waits too, until
        # the throttle ends.
        for _ in range(500):
            limits = {lim.job_type: lim for lim in await jobs.limits()}
            if "api.call" in limits:
                break
            await asyncio.sleep(0.01)
        assert limits["api.call"].throttled_until is not None
        second = await jobs.submit("api.call", {"i": 1})
        waiting = (await jobs.status(second)).waiting
        assert waiting is not None and waiting.startswith("throttled until "), waiting
        assert (await jobs.status(second)).status == "queued"
        await clock.advance(30)
        for job_id in (first, second):
            assert (await jobs.wait(job_id, timeout=10)).status == "complete"
    assert sorted(runs) == [0, 0, 1]


async def test_limit_changes_a_type_at_run_time(make_service: ServiceFactory) -> None:
    jobs = make_service(concurrency=16)
    gauge = Gauge()

    @jobs.handler("resize")
    async def resize(p: Any) -> None:
        await gauge.hold()

    async with jobs:
        lim = await jobs.limit("resize", concurrency=2)
        assert (lim.concurrency, lim.rate) == (2, None)
        ids = await jobs.submit("resize", [{} for _ in range(20)])
        for job_id in ids:
            assert (await jobs.wait(job_id, timeout=30)).status == "complete"
        assert gauge.most == 2
        lim = await jobs.limit("resize", concurrency=None, rate=Rate(5, per=1.0, burst=2))
        assert (lim.concurrency, lim.rate) == (None, Rate(5, 1.0, 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"job_type": "resize", "concurrency": 0}, "concurrency must be 1.."),
        ({"job_type": "resize", "concurrency": -1}, "concurrency must be 1.."),
        ({"job_type": "resize", "rate": 5}, "rate must be a shardq.Rate"),
        ({"job_type": "nobody.handles", "concurrency": 1}, "unknown job type"),
    ],
)
async def test_bad_limits_are_refused_and_change_nothing(
    make_service: ServiceFactory, call: dict[str, Any], message: str
) -> None:
    jobs = make_service()
    jobs.register_handler("resize", lambda p: None)
    async with jobs:
        args = dict(call)
        with pytest.raises(JobError, match=message) as e:
            await jobs.limit(args.pop("job_type"), **args)
        assert e.value.reason == "Validation"
        assert await jobs.limits() == []


def test_a_bad_rate_is_refused() -> None:
    for args, message in [
        ((0,), "count must be"),
        ((5, 0.0), "per must be"),
        ((5, float("nan")), "per must be"),
        ((5, 1.0, -1), "burst must be"),
    ]:
        with pytest.raises(JobError, match=message):
            Rate(*args)


async def test_pause_takes_exactly_one_target(make_service: ServiceFactory) -> None:
    jobs = make_service()
    async with jobs:
        with pytest.raises(JobError, match="exactly one"):
            await jobs.pause()
        with pytest.raises(JobError, match="exactly one"):
            await jobs.pause(job_type="a", key="b")
        with pytest.raises(JobError) as e:
            await jobs.pause(schedule="no.such")
        assert e.value.reason == "NotFound"
        assert await jobs.paused() == type(await jobs.paused())()
