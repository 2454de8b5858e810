"""One attempt of a job: call its handler and turn what happened into an outcome.

The runner decides which jobs start and writes what their attempts produced; this module
does what lies between: decode the payload, restore the submitter's context, call the handler
(coroutine functions on the event loop, plain functions on a thread pool), apply the attempt
timeout, and classify the result as complete, retry, failed (dead letter) or cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider

from ..clock import SYSTEM_CLOCK, Clock
from ..context import JobContext, reset_current, set_current
from ..control import Snooze, Throttled
from ..drivers.base import Outcome, StartedJob
from ..errors import JobError
from ..ids import Snowflake
from ..observe import Metrics, job_span
from ..retry import RetryPolicy
from .validation import encode_json, safe_text

Handler = Callable[[Any], Any]


log = logging.getLogger("shardq.attempts")

#: Seconds a job whose handler is missing here waits before it is tried again.
HANDLER_WAIT = 5.0


@dataclass(slots=True)
class Attempt:
    """A started job and the handler call running it."""

    job: StartedJob
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    #: Cancelled through the API: the outcome is "cancelled", not a retry.
    cancel_requested: bool = False
    #: Interrupted because the runner stops or lost the shard.
    shutdown: bool = False
    #: ``run`` has begun. A task cancelled before its first step never runs its body at
    #: all (so reports no outcome): until then an interruption only sets the flags above,
    #: and ``run`` honours them first.
    begun: bool = False
    started: float = field(default_factory=time.perf_counter)


class AttemptRunner:
    """Runs attempts and hands each outcome to ``finished`` (on the event loop)."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        retry: RetryPolicy,
        metrics: Metrics,
        ids: Snowflake,
        context_vars: Collection[contextvars.ContextVar[Any]],
        threads: int,
        finished: Callable[[Outcome, Attempt], None],
        clock: Clock = SYSTEM_CLOCK,
        handled_elsewhere: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self._clock = clock
        self._handled_elsewhere = handled_elsewhere
        # Per job type without a handler here: until when (monotonic) the answer of
        # ``handled_elsewhere`` holds, and the answer (a burst of such jobs asks once).
        self._elsewhere: dict[str, tuple[float, bool]] = {}
        self._handlers = handlers
        self._retry = retry
        self._ids = ids
        self._context_vars = list(context_vars)
        self._finished = finished
        self._run_time = metrics.run_time
        self._run_time_by_type: dict[str, Any] = {}
        self._async_handlers: dict[Handler, bool] = {}
        self._tracing_off = False
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shardq-handler")

    def check_tracing(self) -> None:
        """Look again whether a tracer is installed (it reads the environment, so callers do
        it once per batch of starts, not per job)."""
        self._tracing_off = type(trace.get_tracer_provider()) is ProxyTracerProvider

    def shutdown(self) -> None:
        """Stop the thread pool; calls of plain functions still in it are abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, attempt: Attempt) -> None:
        """Call the handler of ``attempt`` and report its outcome."""
        job = attempt.job
        attempt.begun = True
        if attempt.cancel_requested or attempt.shutdown:
            self._finished(self._interrupted(attempt), attempt)
            return
        outcome: Outcome
        handler = self._handlers.get(job.type)
        if handler is None:
            self._finished(await self._handler_missing(job), attempt)
            return
        try:
            payload = json.loads(job.payload)
            captured = json.loads(job.context) if job.context else None
            if captured is None and self._tracing_off:
                # Nothing to restore and no tracer to record a span: skip the span's cost.
                if job.timeout is None and self._is_async(handler):
                    # The common case, without the extra coroutine of ``_call``.
                    token = set_current(attempt.ctx)
                    try:
                        result = await handler(payload)
                    finally:
                        reset_current(token)
                else:
                    result = await self._call(handler, payload, job.timeout, attempt.ctx)
            else:
                with job_span(captured, self._context_vars, job.id, job.type, job.attempts):
                    result = await self._call(handler, payload, job.timeout, attempt.ctx)
            encoded = "null" if result is None else encode_json("the handler's result", result)
            outcome = Outcome(
                job.id, job.attempts, "complete", self._clock.now_ms(), result=encoded
            )
        except Snooze as snooze:
            at = self._clock.now_ms()
            outcome = Outcome(
                job.id, job.attempts, "snooze", at, run_at=at + int(snooze.seconds * 1000)
            )
        except Throttled as throttled:
            at = self._clock.now_ms()
            outcome = Outcome(
                job.id,
                job.attempts,
                "throttle",
                at,
                error=str(throttled),
                run_at=at + int(throttled.retry_after * 1000),
            )
        except asyncio.CancelledError:
            outcome = self._interrupted(attempt)
        except TimeoutError:
            outcome = self._failure(
                job, JobError.from_timeout(str(job.id), f"after {job.timeout}s")
            )
        except Exception as e:
            outcome = self._failure(job, e)
        run_time = self._run_time_by_type.get(job.type)
        if run_time is None:
            run_time = self._run_time_by_type[job.type] = self._run_time.labels(job.type)
        run_time.observe(time.perf_counter() - attempt.started)
        self._finished(outcome, attempt)

    def _interrupted(self, attempt: Attempt) -> Outcome:
        """The outcome of an attempt cancelled through the API, or interrupted because the
        runner stops or lost the shard (queued again at once, as a retry)."""
        job, now = attempt.job, self._clock.now_ms()
        if attempt.cancel_requested:
            return Outcome(job.id, job.attempts, "cancelled", now, error="cancelled")
        return Outcome(
            job.id,
            job.attempts,
            "retry",
            now,
            error="interrupted: the runner stopped or lost the shard",
            run_at=now,
        )

    async def _handler_missing(self, job: StartedJob) -> Outcome:
        """The outcome of a job whose type this runner has no handler for: it waits (queued
        again, without using an attempt) while another runner has had a handler for the type
        lately (a rolling deploy); otherwise it fails at once with HandlerMissing."""
        waits = True
        if self._handled_elsewhere is not None:
            now = self._clock.monotonic()
            known = self._elsewhere.get(job.type)
            if known is not None and known[0] > now:
                waits = known[1]
            else:
                try:
                    waits = await self._handled_elsewhere(job.type)
                except Exception:
                    log.warning("cannot tell who handles %r; its job waits", job.type)
                else:
                    self._elsewhere[job.type] = (now + HANDLER_WAIT, waits)
        else:
            waits = False
        if not waits:
            return self._failure(job, JobError.from_handler_missing(str(job.id), job.type))
        at = self._clock.now_ms()
        return Outcome(
            job.id,
            job.attempts,
            "snooze",
            at,
            error=f"no handler for {job.type!r} in this runner, but another runner has had one"
            f" lately: it waits",
            run_at=at + int(HANDLER_WAIT * 1000),
        )

    async def _call(
        self, handler: Handler, payload: Any, timeout: float | None, ctx: JobContext
    ) -> Any:
        token = set_current(ctx)
        try:
            if timeout is None and self._is_async(handler):
                return await handler(payload)
            async with asyncio.timeout(timeout):
                if self._is_async(handler):
                    return await handler(payload)
                run = contextvars.copy_context().run
                result = await asyncio.get_running_loop().run_in_executor(
                    self._pool, run, handler, payload
                )
                if inspect.isawaitable(result):
                    return await result
                return result
        except TimeoutError:
            ctx.cancel()
            raise
        finally:
            reset_current(token)

    def _is_async(self, handler: Handler) -> bool:
        """``inspect.iscoroutinefunction(handler)``, remembered per handler."""
        try:
            known = self._async_handlers.get(handler)
        except TypeError:  # an unhashable callable object
            return inspect.iscoroutinefunction(handler)
        if known is None:
            known = self._async_handlers[handler] = inspect.iscoroutinefunction(handler)
        return known

    def _failure(self, job: StartedJob, error: BaseException) -> Outcome:
        """The outcome of an attempt that raised ``error``: a retry, or a dead letter when
        attempts are spent or the error is terminal.

        A result that cannot be stored (not JSON, nested too deep, a lone surrogate) arrives
        here as ``JobError(reason="Validation")``: terminal, because the same handler on the
        same payload will return it again, so retrying would only spend attempts."""
        text = _describe(error)
        at = self._clock.now_ms()
        terminal = isinstance(error, JobError) and error.is_terminal
        delay = self._retry.next_delay(job.attempts, job.max_attempts, terminal)
        if delay is not None:
            return Outcome(
                job.id, job.attempts, "retry", at, error=text, run_at=at + int(delay * 1000)
            )
        reason = error.reason if isinstance(error, JobError) and terminal else "MaxRetries"
        return Outcome(
            job.id, job.attempts, "failed", at, error=text, reason=reason, dlq_id=self._ids.next()
        )


def _describe(error: BaseException) -> str:
    """The error text stored for a failed attempt: always storable (see ``safe_text``), even
    when the exception's message holds a lone surrogate or NUL, is huge, or cannot be had."""
    name = type(error).__name__
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not keep the outcome from being written
        text = ""
    if isinstance(error, JobError):
        name = error.reason
    return safe_text(f"{name}: {text}" if text else name)
