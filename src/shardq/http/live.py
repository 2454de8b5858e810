"""Live numbers for the dashboard, from the runner's own counters and transition listener,
and the cluster view (``runners`` events, once per tick while a dashboard is connected).

The database is read once when the feed starts and once per new dashboard connection (to
correct any drift, e.g. jobs pruned or cancelled by another process); between those, counts,
throughput and latency come from the JobService's Prometheus counters and its transition
listener, and are pushed to subscribers as server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client.registry import Collector

from .._internal.tasks import cancel_and_wait
from ..jobs import JobService
from ..models import FINISHED, PRIORITIES, STATUSES, QueueStats, Status
from .runners import cluster_json

_MAX_TRANSITIONS = 500
_QUEUE_SIZE = 64
_KEEPALIVE_S = 15.0
_RESYNC_MIN_S = 2.0
_READ_ONLY_RESYNC_S = 5.0
#: Seconds a burst of transitions is gathered for before it is pushed as one message.
_COALESCE_S = 0.05


def _sum_samples(metric: Collector, suffix: str) -> float:
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix):
                total += s.value
    return total


def _gauge_by(metric: Collector, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            name = s.labels.get(label)
            if name is not None:
                out[name] = out.get(name, 0.0) + s.value
    return out


def _buckets(metric: Collector) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a histogram, summed over its labels."""
    acc: dict[float, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                acc[le] = acc.get(le, 0.0) + s.value
    return sorted(acc.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative histogram buckets (as Prometheus does); None when
    the histogram is empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _diff(
    now: list[tuple[float, float]], then: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(then)
    return [(le, c - before.get(le, 0.0)) for le, c in now]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class LiveFeed:
    """Counts, throughput and latency of one JobService, pushed to any number of subscribers.

    ``interval`` is the seconds between samples of the charts; ``history`` how many samples
    are kept for a dashboard that connects later. Times and intervals are the service's
    (``jobs.clock``): a ``FakeClock`` moves the feed's samples with the rest of the service.
    """

    def __init__(self, jobs: JobService, *, interval: float = 1.0, history: int = 300) -> None:
        self._jobs = jobs
        self._clock = jobs.clock
        self.interval = interval
        self._series: deque[dict[str, Any]] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._finished: dict[str, int] = dict.fromkeys(FINISHED, 0)
        self._finished_at_baseline: dict[str, int] = dict(self._finished)
        self._replayed_since_baseline = 0
        self._baseline: QueueStats | None = None
        self._baseline_at = 0.0
        self._pending: list[dict[str, str]] = []
        self._dropped = 0
        # Set by a transition (``_moved`` too) and by the timer of the next sample.
        self._wake = asyncio.Event()
        self._moved = False
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._last = self._raw()
        jobs.add_listener(self._on_transition)

    # -- inputs ------------------------------------------------------------------------

    def _on_transition(self, job_id: str, status: Status) -> None:
        if status in self._finished:
            self._finished[status] += 1
        if len(self._pending) < _MAX_TRANSITIONS:
            self._pending.append({"id": job_id, "status": status})
        else:
            self._dropped += 1
        self._moved = True
        self._wake.set()

    def note_replayed(self, count: int = 1) -> None:
        """Dead letters were replayed through this process (they leave the open count)."""
        self._replayed_since_baseline += count

    def note_submitted(self, job_ids: list[str]) -> None:
        """Jobs were submitted through this process: push them to the dashboards now."""
        for job_id in job_ids[: _MAX_TRANSITIONS - len(self._pending)]:
            self._pending.append({"id": job_id, "status": "queued"})
        self._moved = True
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------

    async def ensure_started(self) -> None:
        """Read the baseline counts and start sampling (once; later calls return at once)."""
        if self._task is not None or self._closed:
            return
        async with self._start_lock:
            if self._task is not None:
                return
            await self.resync(force=True)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shardq-live")

    async def resync(self, *, force: bool = False) -> None:
        """Re-read the counts from the database (at most every few seconds unless forced)."""
        now = self._clock.monotonic()
        if not force and now - self._baseline_at < _RESYNC_MIN_S:
            return
        self._baseline_at = now
        finished = dict(self._finished)
        stats = await self._jobs.stats()
        self._baseline = stats
        self._finished_at_baseline = finished
        self._replayed_since_baseline = 0

    async def close(self) -> None:
        """Stop sampling and end every subscriber's stream."""
        self._closed = True
        with contextlib.suppress(ValueError):
            self._jobs.remove_listener(self._on_transition)
        for q in list(self._subscribers):
            self._offer(q, None)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    # -- outputs ------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Jobs by status, queued jobs by priority and open dead letters, as of now."""
        base = self._baseline or QueueStats(
            by_status=dict.fromkeys(STATUSES, 0),
            queued_by_priority=dict.fromkeys(PRIORITIES, 0),
        )
        delta = {s: self._finished[s] - self._finished_at_baseline.get(s, 0) for s in FINISHED}
        by_status = {s: int(base.by_status.get(s, 0)) for s in STATUSES}
        for s in FINISHED:
            by_status[s] += delta[s]
        by_priority = {p: int(base.queued_by_priority.get(p, 0)) for p in PRIORITIES}
        if self._jobs.runs_jobs:
            depth = _gauge_by(self._jobs.metrics.queue_depth, "priority")
            by_priority = {p: max(0, int(depth.get(p, 0))) for p in PRIORITIES}
            by_status["queued"] = sum(by_priority.values())
            by_status["processing"] = int(_sum_samples(self._jobs.metrics.running, ""))
        return {
            "by_status": by_status,
            "queued_by_priority": by_priority,
            "dead_letters": max(
                0, base.dead_letters + delta["failed"] - self._replayed_since_baseline
            ),
        }

    def _raw(self) -> dict[str, Any]:
        m = self._jobs.metrics
        return {
            "t": self._clock.now_ms() / 1000,
            "mono": self._clock.monotonic(),
            "finished": dict(self._finished),
            "submitted": _sum_samples(m.enqueued, "_total"),
            "started": _sum_samples(m.started, "_total"),
            "latency": _buckets(m.start_latency),
            "run": _buckets(m.run_time),
        }

    def _sample(self) -> dict[str, Any]:
        now = self._raw()
        last, self._last = self._last, now
        span: float = max(1e-6, now["mono"] - last["mono"])

        def rate(n: float) -> float:
            return round(float(n) / span, 2)

        latency = _diff(now["latency"], last["latency"])
        run = _diff(now["run"], last["run"])
        point = {
            "t": round(now["t"], 3),
            "completed_per_s": rate(now["finished"]["complete"] - last["finished"]["complete"]),
            "failed_per_s": rate(now["finished"]["failed"] - last["finished"]["failed"]),
            "submitted_per_s": rate(now["submitted"] - last["submitted"]),
            "started_per_s": rate(now["started"] - last["started"]),
            "latency_p50_ms": _ms(quantile(latency, 0.5)),
            "latency_p99_ms": _ms(quantile(latency, 0.99)),
            "run_p50_ms": _ms(quantile(run, 0.5)),
        }
        self._series.append(point)
        return point

    def latency(self) -> dict[str, Any]:
        """Submit-to-start and run-time percentiles (ms) since this process started."""
        m = self._jobs.metrics
        lat = _buckets(m.start_latency)
        run = _buckets(m.run_time)
        return {
            "start_count": int(lat[-1][1]) if lat else 0,
            "start_p50_ms": _ms(quantile(lat, 0.5)),
            "start_p95_ms": _ms(quantile(lat, 0.95)),
            "start_p99_ms": _ms(quantile(lat, 0.99)),
            "run_p50_ms": _ms(quantile(run, 0.5)),
            "run_p95_ms": _ms(quantile(run, 0.95)),
            "run_p99_ms": _ms(quantile(run, 0.99)),
        }

    def throughput(self) -> dict[str, float]:
        """Rates of the last sample and the mean over the kept history (jobs per second)."""
        last = self._series[-1] if self._series else None
        window = list(self._series)[-60:]

        def mean(key: str) -> float:
            return round(sum(p[key] for p in window) / len(window), 2) if window else 0.0

        return {
            "completed_per_s": last["completed_per_s"] if last else 0.0,
            "failed_per_s": last["failed_per_s"] if last else 0.0,
            "submitted_per_s": last["submitted_per_s"] if last else 0.0,
            "completed_per_s_1m": mean("completed_per_s"),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything a dashboard needs to draw itself, without the series."""
        return {
            "time": round(self._clock.now_ms() / 1000, 3),
            "source": "runner" if self._jobs.runs_jobs else "database",
            **self.counts(),
            "throughput": self.throughput(),
            "latency_ms": self.latency(),
            "interval_s": self.interval,
        }

    def series(self) -> list[dict[str, Any]]:
        """The kept samples, oldest first."""
        return list(self._series)

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events: ``hello`` (snapshot and series), then ``jobs`` (transitions as
        they happen) and ``tick`` (a sample per interval), with keep-alive comments."""
        await self.ensure_started()
        await self.resync()
        q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._subscribers.add(q)
        try:
            yield "retry: 2000\n\n"
            yield _event("hello", {**self.snapshot(), "series": self.series()})
            while not self._closed:
                try:
                    # Real time, not the service's: the keep-alive is for the connection
                    # (proxies close one idle too long), whatever the service's clock says.
                    async with asyncio.timeout(_KEEPALIVE_S):
                        msg = await q.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if msg is None:
                    return
                yield msg
        finally:
            self._subscribers.discard(q)

    # -- machinery ----------------------------------------------------------------------

    async def _publish_runners(self) -> None:
        # The cluster view changes with every heartbeat (a second by default): read it once
        # per tick, and only while someone watches (the runners and shards tables only).
        if not self._subscribers:
            return
        try:
            data = await cluster_json(self._jobs)
        except Exception:  # storage briefly away: the next tick tries again
            return
        self._publish("runners", data)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        msg = _event(kind, data)
        for q in list(self._subscribers):
            self._offer(q, msg)

    @staticmethod
    def _offer(q: asyncio.Queue[str | None], msg: str | None) -> None:
        # A slow reader loses its oldest messages, never blocks the feed.
        while True:
            try:
                q.put_nowait(msg)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()

    async def _run(self) -> None:
        clock = self._clock
        next_tick = clock.monotonic() + self.interval
        next_resync = clock.monotonic() + _READ_ONLY_RESYNC_S
        while not self._closed:
            await self._wait(next_tick - clock.monotonic())
            if self._moved:
                # Coalesce a burst of transitions into one message.
                await clock.sleep(_COALESCE_S)
                self._moved = False
                self._wake.clear()
                pending, self._pending = self._pending, []
                dropped, self._dropped = self._dropped, 0
                self._publish("jobs", {"transitions": pending, "dropped": dropped, **self.counts()})
            now = clock.monotonic()
            if now >= next_tick:
                next_tick = max(next_tick + self.interval, now)
                if not self._jobs.runs_jobs and now >= next_resync:
                    # No runner here, so no counters: the only way to see progress.
                    next_resync = now + _READ_ONLY_RESYNC_S
                    with contextlib.suppress(Exception):
                        await self.resync(force=True)
                point = self._sample()
                self._publish("tick", {"point": point, **self.snapshot()})
                await self._publish_runners()

    async def _wait(self, seconds: float) -> None:
        """Until a transition, or ``seconds`` of the service's clock."""
        if self._moved:
            return
        self._wake.clear()
        timer = self._clock.call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
