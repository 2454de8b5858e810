"""Metrics (Prometheus) and spans (OpenTelemetry), recorded once at the seams.

Each JobService has its own metrics registry, so two services in one process never share or
clash. Spans use only ``opentelemetry-api``: with no SDK configured they cost next to nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .entity import SPAN_ATTRIBUTES
from .models import PRIORITIES

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
_RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


class Metrics:
    """The Prometheus metrics of one JobService, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("type", "priority")
        r = self.registry
        self.enqueued = Counter("shardq_jobs_enqueued", "Jobs submitted", labels, registry=r)
        self.started = Counter("shardq_jobs_started", "Attempts started", labels, registry=r)
        self.completed = Counter("shardq_jobs_completed", "Jobs completed", labels, registry=r)
        self.retried = Counter(
            "shardq_jobs_retried", "Attempts that will be retried", labels, registry=r
        )
        self.dead_lettered = Counter(
            "shardq_jobs_dead_lettered", "Jobs moved to the dead-letter table", labels, registry=r
        )
        self.cancelled = Counter("shardq_jobs_cancelled", "Jobs cancelled", labels, registry=r)
        self.queue_depth = Gauge(
            "shardq_queue_depth", "Queued jobs known to this runner", ("priority",), registry=r
        )
        self.running = Gauge("shardq_jobs_running", "Handlers running now", registry=r)
        self.start_latency = Histogram(
            "shardq_submit_to_start_seconds",
            "From the time a job became due to its handler starting",
            ("priority",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "shardq_run_seconds",
            "Handler run time",
            ("type",),
            buckets=_RUNTIME_BUCKETS,
            registry=r,
        )
        for p in PRIORITIES:
            self.queue_depth.labels(p).set(0)

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)


_tracer = trace.get_tracer("shardq")


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
        ) as span:
            yield span
    finally:
        if token is not None:
            otel_context.detach(token)
        for var, t in reversed(tokens):
            var.reset(t)


class _Missing:
    pass


_MISSING: Any = _Missing()
