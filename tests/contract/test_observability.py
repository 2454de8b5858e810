"""Metrics and spans: what operators and tracing backends see."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shardq import current_job

from .conftest import ServiceFactory

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


def _sample(jobs: Any, name: str, **labels: str) -> float:
    value = jobs.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def test_counters_and_histograms_follow_the_jobs(make_service: ServiceFactory) -> None:
    jobs = make_service()

    @jobs.handler("ok")
    async def ok(p: Any) -> None:
        return None

    @jobs.handler("bad")
    async def bad(p: Any) -> None:
        raise RuntimeError("no")

    async with jobs:
        ids = await jobs.submit("ok", [1, 2, 3], priority="high")
        bad_id = await jobs.submit("bad", {}, max_attempts=2)
        for job_id in [*ids, bad_id]:
            await jobs.wait(job_id, timeout=10)
        text = jobs.metrics.render().decode()
    assert _sample(jobs, "shardq_jobs_enqueued_total", type="ok", priority="high") == 3
    assert _sample(jobs, "shardq_jobs_completed_total", type="ok", priority="high") == 3
    assert _sample(jobs, "shardq_jobs_started_total", type="bad", priority="normal") == 2
    assert _sample(jobs, "shardq_jobs_retried_total", type="bad", priority="normal") == 1
    assert _sample(jobs, "shardq_jobs_dead_lettered_total", type="bad", priority="normal") == 1
    assert _sample(jobs, "shardq_submit_to_start_seconds_count", priority="high") == 3
    assert _sample(jobs, "shardq_run_seconds_count", type="ok") == 3
    assert _sample(jobs, "shardq_queue_depth", priority="high") == 0
    assert "shardq_jobs_enqueued_total" in text


async def test_cancels_are_counted(make_service: ServiceFactory) -> None:
    jobs = make_service()
    async with jobs:
        job_id = await jobs.submit("later", {}, delay=60)
        await jobs.cancel(job_id)
        assert (await jobs.status(job_id)).status == "cancelled"
    assert _sample(jobs, "shardq_jobs_cancelled_total", type="later", priority="normal") == 1


async def test_the_submitters_trace_continues_into_the_handler(
    make_service: ServiceFactory,
) -> None:
    _EXPORTER.clear()
    jobs = make_service()
    seen: dict[str, Any] = {}

    @jobs.handler("traced")
    async def traced(p: Any) -> None:
        span = trace.get_current_span()
        seen["trace_id"] = span.get_span_context().trace_id
        seen["job"] = current_job().job_id

    tracer = trace.get_tracer("test")
    async with jobs:
        with tracer.start_as_current_span("web request") as parent:
            job_id = await jobs.submit("traced", {})
        await jobs.wait(job_id, timeout=10)
    assert seen["trace_id"] == parent.get_span_context().trace_id
    spans = {s.name: s for s in _EXPORTER.get_finished_spans()}
    job_span = spans["shardq.job traced"]
    assert job_span.attributes is not None
    assert job_span.attributes["entity.service"] == "job-processing"
    assert job_span.attributes["entity.version"] == "v1"
    assert job_span.attributes["job.id"] == job_id
    submit = spans["shardq.submit"]
    assert submit.parent is not None and submit.parent.span_id == parent.get_span_context().span_id


async def test_a_traced_handler_error_whose_text_fails_still_fails_its_job(
    make_service: ServiceFactory,
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    jobs = make_service()

    @jobs.handler("odd")
    async def odd(p: Any) -> None:
        raise Unprintable

    async with jobs:
        job_id = await jobs.submit("odd", {}, max_attempts=1)
        st = await jobs.wait(job_id, timeout=10)
    assert st.status == "failed" and st.error is not None and "Unprintable" in st.error
    [span] = [
        s
        for s in _EXPORTER.get_finished_spans()
        if s.name == "shardq.job odd" and (s.attributes or {}).get("job.id") == job_id
    ]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "Unprintable"


async def test_storage_operations_are_timed(make_service: ServiceFactory) -> None:
    jobs = make_service()
    jobs.register_handler("t", lambda p: p)
    async with jobs:
        await jobs.wait(await jobs.submit("t", 1), timeout=10)
    assert _sample(jobs, "shardq_storage_seconds_count", operation="insert_jobs") >= 1
    assert _sample(jobs, "shardq_storage_seconds_count", operation="advance") >= 2
    assert _sample(jobs, "shardq_storage_errors_total", operation="advance") == 0
