"""Metrics (Prometheus) and spans (OpenTelemetry), recorded once at the seams.

Each JobService has its own metrics registry, so two services in one process never share or
clash. Spans use only ``opentelemetry-api``: with no SDK configured they cost next to nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .entity import SPAN_ATTRIBUTES
from .models import PRIORITIES

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
_RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


class _LoopFamily(Collector):
    """A labelled metric written only from the service's event loop, so its children need no
    lock (prometheus_client takes one per update: a cost paid several times per job)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def _items(self) -> list[tuple[tuple[str, ...], Any]]:
        return list(self._children.items())  # a snapshot: a scrape may run on another thread


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopCounter(_LoopFamily):
    """A counter of the event loop's hot path (exported as ``<name>_total``)."""

    def labels(self, *values: str) -> _CounterChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _CounterChild()
        return child

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in self._items():
            family.add_metric(list(values), child.value)
        yield family


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # "le": a bound holds its own value
        self.sum += value


class LoopHistogram(_LoopFamily):
    """A histogram of the event loop's hot path, with fixed bucket bounds."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._bounds = tuple(float(b) for b in buckets)

    def labels(self, *values: str) -> _HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _HistogramChild(self._bounds)
        return child

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in self._items():
            total = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self._bounds, float("inf")), list(child.counts), strict=True):
                total += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
            family.add_metric(list(values), buckets, child.sum)
        yield family


class Metrics:
    """The Prometheus metrics of one JobService, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("type", "priority")
        r = self.registry
        self.enqueued = Counter("shardq_jobs_enqueued", "Jobs submitted", labels, registry=r)
        self.started = LoopCounter("shardq_jobs_started", "Attempts started", labels, r)
        self.completed = LoopCounter("shardq_jobs_completed", "Jobs completed", labels, r)
        self.retried = Counter(
            "shardq_jobs_retried", "Attempts that will be retried", labels, registry=r
        )
        self.snoozed = Counter(
            "shardq_jobs_snoozed", "Attempts that put their job off (Snooze)", labels, registry=r
        )
        self.throttled = Counter(
            "shardq_jobs_throttled",
            "Attempts that backed off their key or type (Throttled)",
            labels,
            registry=r,
        )
        self.held = Gauge(
            "shardq_jobs_held",
            "Queued jobs this runner holds back (paused, at a limit, throttled)",
            registry=r,
        )
        self.dead_lettered = Counter(
            "shardq_jobs_dead_lettered", "Jobs moved to the dead-letter table", labels, registry=r
        )
        self.cancelled = Counter("shardq_jobs_cancelled", "Jobs cancelled", labels, registry=r)
        self.queue_depth = Gauge(
            "shardq_queue_depth", "Queued jobs known to this runner", ("priority",), registry=r
        )
        self.running = Gauge("shardq_jobs_running", "Handlers running now", registry=r)
        self.start_latency = LoopHistogram(
            "shardq_submit_to_start_seconds",
            "From the time a job became due to its handler starting",
            ("priority",),
            r,
            _LATENCY_BUCKETS,
        )
        self.run_time = LoopHistogram(
            "shardq_run_seconds", "Handler run time", ("type",), r, _RUNTIME_BUCKETS
        )
        self.step_failures = Counter(
            "shardq_runner_step_failures",
            "Runner steps that failed (storage unreachable, or a write it refused)",
            registry=r,
        )
        self.outcomes_refused = Counter(
            "shardq_outcomes_refused",
            "Outcomes storage refused to store; their jobs were failed with the reason",
            registry=r,
        )
        self.storage_time = LoopHistogram(
            "shardq_storage_seconds",
            "Time of each storage operation, by operation (what a driver call took)",
            ("operation",),
            r,
            _LATENCY_BUCKETS,
        )
        self.storage_errors = Counter(
            "shardq_storage_errors",
            "Storage operations that raised, by operation",
            ("operation",),
            registry=r,
        )
        for p in PRIORITIES:
            self.queue_depth.labels(p).set(0)

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)


_tracer = trace.get_tracer("shardq")

#: The driver operations timed by ``instrument_driver``: every call that reaches storage
#: (connecting, closing and migrating aside: they run once per start, around the rest).
STORAGE_OPERATIONS = (
    "insert_jobs", "insert_jobs_within", "load_refs", "load_ready", "load_delayed",
    "load_keys", "load_mailbox", "advance", "recover", "undo_starts", "get_job", "list_jobs",
    "cancel_job", "dead_letters", "get_dead_letter", "replay", "prune", "count_by_state",
    "count_queued_by_priority", "count_dead_letters", "advertise_handlers", "handled_since",
)  # fmt: skip
#: The operations of a driver's ``schedules`` and ``controls`` stores, timed as
#: ``schedules.<name>`` and ``controls.<name>``.
SCHEDULE_OPERATIONS = ("put", "remove", "set_paused", "get", "load", "fired", "unfinished")
CONTROL_OPERATIONS = (
    "limits", "put_limits", "set_paused", "throttle", "paused_keys", "set_key_paused", "usage",
)  # fmt: skip
#: Operations that may run on a thread other than the service's event loop (a submit in the
#: caller's transaction runs in the caller's thread).
_ANY_THREAD = frozenset({"insert_jobs_within"})


def instrument_driver(driver: Any, metrics: Metrics) -> None:
    """Time every storage operation of ``driver`` and of its ``schedules`` and ``controls``
    stores into ``metrics`` (and count the ones that raise), in one place: each operation
    of the instances is replaced by a timed one."""
    for name in STORAGE_OPERATIONS:
        setattr(driver, name, _timed(getattr(driver, name), name, metrics))
    for store, names in (("schedules", SCHEDULE_OPERATIONS), ("controls", CONTROL_OPERATIONS)):
        target = getattr(driver, store)
        for name in names:
            label = f"{store}.{name}"
            setattr(target, name, _timed(getattr(target, name), label, metrics))


def _timed(call: Any, name: str, metrics: Metrics) -> Any:
    histogram = metrics.storage_time.labels(name)
    errors = metrics.storage_errors.labels(name)
    perf = time.perf_counter
    record: Callable[[float], None] = histogram.observe
    if name in _ANY_THREAD:
        # The histogram takes no lock (see LoopHistogram): the writers of this operation's
        # child, which may be on several threads, take one of their own.
        lock = threading.Lock()
        observe = histogram.observe

        def locked(seconds: float) -> None:
            with lock:
                observe(seconds)

        record = locked

    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = perf()
        try:
            return await call(*args, **kwargs)
        except Exception:
            errors.inc()
            raise
        finally:
            record(perf() - started)

    return timed


@contextlib.contextmanager
def submit_span(job_type: str, count: int) -> Iterator[trace.Span]:
    """A span around a submit of ``count`` jobs of ``job_type``."""
    with _tracer.start_as_current_span(
        "shardq.submit",
        kind=trace.SpanKind.PRODUCER,
        attributes={**SPAN_ATTRIBUTES, "job.type": job_type, "job.count": count},
    ) as span:
        yield span


def capture_context(variables: Sequence[contextvars.ContextVar[Any]]) -> dict[str, Any] | None:
    """The trace context and the opted-in context variables of the caller, JSON-ready."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    values = {}
    for var in variables:
        value = var.get(_MISSING)
        if value is not _MISSING:
            values[var.name] = value
    if not carrier and not values:
        return None
    return {"trace": carrier, "vars": values}


@contextlib.contextmanager
def job_span(
    captured: dict[str, Any] | None,
    variables: Sequence[contextvars.ContextVar[Any]],
    job_id: int,
    job_type: str,
    attempt: int,
) -> Iterator[trace.Span]:
    """Restore the submitter's trace context and variables, and span one attempt."""
    parent = None
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    if captured:
        carrier = captured.get("trace") or {}
        if carrier:
            parent = propagate.extract(carrier)
        saved = captured.get("vars") or {}
        for var in variables:
            if var.name in saved:
                tokens.append((var, var.set(saved[var.name])))
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with _tracer.start_as_current_span(
            f"shardq.job {job_type}",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                **SPAN_ATTRIBUTES,
                "job.id": str(job_id),
                "job.type": job_type,
                "job.attempt": attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as e:
                _record_failure(span, e)
                raise
    finally:
        if token is not None:
            otel_context.detach(token)
        for var, t in reversed(tokens):
            var.reset(t)


def _record_failure(span: trace.Span, error: Exception) -> None:
    """Mark ``span`` failed by ``error``, even one whose text cannot be taken (its
    ``__str__`` raises): recording must never replace the handler's own error."""
    try:
        span.record_exception(error)
        description = f"{type(error).__name__}: {error}"
    except Exception:
        description = type(error).__name__
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))


class _Missing:
    pass


_MISSING: Any = _Missing()
