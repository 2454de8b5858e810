"""What a runner measures, recorded in one place: submits of its own (a schedule's ticks),
starts, outcomes, queue depth, failed steps."""

from __future__ import annotations

from typing import Any

from ..drivers.base import Driver, JobRef, OutcomeKind, StartedJob
from ..models import PRIORITIES
from ..observe import Metrics


class Instruments:
    """A runner's metrics. Label lookups are remembered: one per job adds up."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._depth = [0] * len(PRIORITIES)
        self._depth_gauges = [metrics.queue_depth.labels(p) for p in PRIORITIES]
        # Cancelled while queued and already taken out of the depth gauge; their refs may
        # still sit in memory until their turn comes (and is skipped).
        self._counted_out: set[int] = set()
        self._outcome_counters: dict[OutcomeKind, Any] = {
            "complete": metrics.completed,
            "retry": metrics.retried,
            "snooze": metrics.snoozed,
            "throttle": metrics.throttled,
            "failed": metrics.dead_lettered,
            "cancelled": metrics.cancelled,
        }

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- queue depth -----------------------------------------------------------------------

    def queued(self, priority: int, n: int) -> None:
        """``n`` jobs of ``priority`` joined the queue (negative: left it)."""
        self._depth[priority] += n
        self._depth_gauges[priority].set(max(0, self._depth[priority]))

    def queued_refs(self, counts: list[int]) -> None:
        """Jobs joined the queue: ``counts[p]`` of each priority ``p``."""
        for p, n in enumerate(counts):
            if n:
                self.queued(p, n)

    def cancelled_queued(self, job_id: int, priority: int, in_memory: bool) -> None:
        """A queued job was cancelled: it leaves the depth gauge now, once."""
        if job_id in self._counted_out:
            return
        self.queued(priority, -1)
        if in_memory:
            self._counted_out.add(job_id)

    async def recount(self, driver: Driver) -> None:
        """Set the depth gauge from storage."""
        counts = await driver.count_queued_by_priority()
        for p in range(len(PRIORITIES)):
            self._depth[p] = counts.get(p, 0)
            self._depth_gauges[p].set(self._depth[p])

    # -- submits ---------------------------------------------------------------------------

    def submitted(self, job_type: str, priority: int) -> None:
        """The runner submitted a new job of ``job_type`` and ``priority`` (a schedule's tick;
        a duplicate of a retained job is not one)."""
        self._child(self._m.enqueued, job_type, PRIORITIES[priority]).inc()

    # -- attempts --------------------------------------------------------------------------

    def picked(self, starts: list[JobRef]) -> None:
        """``starts`` left the queue to be started (those cancelled meanwhile already left)."""
        left = [0] * len(PRIORITIES)
        for ref in starts:
            if ref.id in self._counted_out:
                self._counted_out.discard(ref.id)
            else:
                left[ref.priority] += 1
        self.queued_refs([-n for n in left])

    def started(self, row: StartedJob, now: int) -> None:
        """An attempt started at ``now`` (Unix ms)."""
        name = PRIORITIES[row.priority]
        self._child(self._m.started, row.type, name).inc()
        due = max(row.created_at, row.run_at)
        self._child(self._m.start_latency, name).observe(max(0, now - due) / 1000)

    def finished(self, job: StartedJob, kind: OutcomeKind) -> None:
        """An attempt's outcome ``kind`` was written."""
        self._child(self._outcome_counters[kind], job.type, PRIORITIES[job.priority]).inc()
        if kind in ("retry", "snooze", "throttle"):
            self.queued(job.priority, 1)

    def held(self, n: int) -> None:
        """``n`` queued jobs are held back in memory now."""
        self._m.held.set(n)

    def running(self, n: int) -> None:
        """``n`` handlers run now."""
        self._m.running.set(n)

    def step_failed(self) -> None:
        """A runner step failed."""
        self._m.step_failures.inc()

    def outcome_refused(self) -> None:
        """Storage refused an outcome; its job was failed instead."""
        self._m.outcomes_refused.inc()
