"""Periodic and cron schedules on a ``JobService``: declared in code, or managed at run time.

::

    @jobs.cron("0 8 * * MON", name="digest.weekly", tz="Europe/Berlin", misfire="latest")
    async def weekly_digest(payload: dict) -> None: ...

    @jobs.every(30.0, name="rates.refresh")          # seconds, or a timedelta
    async def refresh(payload: dict) -> None: ...

    await jobs.schedule("report.daily", job_type="report.build", cron="0 6 * * *")
    await jobs.unschedule("report.daily")
    await jobs.schedules()

A declared schedule's job type is its name unless ``job_type`` says otherwise; the decorated
function becomes that type's handler. Declared schedules are stored when a runner starts:
added, changed, and removed once no longer declared (only those declared in code: one added
at run time stays until ``unschedule``). Each schedule lives on the shard its name hashes
to, and the runner owning that shard fires it: one job per tick, cluster-wide. The values
and their rules are in ``shardq.schedules``.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._internal.validation import encode_json, show
from .errors import JobError
from .models import PRIORITIES, Priority
from .schedules import (
    DECLARED_ATTR,
    Misfire,
    Overlap,
    Schedule,
    ScheduleSpec,
    make_spec,
    record_of,
    schedule_shard,
    spec_of,
    tick_time,
)

if TYPE_CHECKING:
    from .drivers.base import ScheduleRecord
    from .jobs import JobService

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Schedule", "ScheduleSupport"]


class ScheduleSupport:
    """The schedule methods of ``JobService``."""

    def cron(
        self,
        expr: str,
        *,
        name: str,
        job_type: str | None = None,
        tz: str = "UTC",
        misfire: Misfire = "latest",
        overlap: Overlap = "allow",
        priority: Priority = "normal",
        payload: Any = None,
        key: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator: run the function as the handler of ``job_type`` (default: ``name``)
        on every tick of the cron expression ``expr`` (5 fields, or 6 with seconds first)
        read on the wall clock of ``tz``. ``payload`` (default ``{}``) is each job's payload;
        ``misfire`` and ``overlap`` are described in ``shardq.schedules``. Bad input raises
        ``JobError(reason="Validation")`` at once."""
        spec = self._spec(name, job_type, expr, None, tz, misfire, overlap, priority, payload, key)
        return lambda fn: self._declare(spec, fn)

    def every(
        self,
        interval: float | timedelta,
        *,
        name: str,
        job_type: str | None = None,
        tz: str = "UTC",
        misfire: Misfire = "latest",
        overlap: Overlap = "allow",
        priority: Priority = "normal",
        payload: Any = None,
        key: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator: as ``cron``, for a fixed ``interval`` (seconds or a timedelta); ticks
        fall on multiples of it counted from the Unix epoch, so every process agrees."""
        spec = self._spec(
            name, job_type, None, interval, tz, misfire, overlap, priority, payload, key
        )
        return lambda fn: self._declare(spec, fn)

    async def schedule(
        self,
        name: str,
        *,
        job_type: str,
        cron: str | None = None,
        every: float | timedelta | None = None,
        payload: Any = None,
        tz: str = "UTC",
        misfire: Misfire = "latest",
        overlap: Overlap = "allow",
        priority: Priority = "normal",
        key: str | None = None,
    ) -> Schedule:
        """Add the schedule ``name``, or change it (its ticks then continue from now if its
        timing changed), from any process: its owner hears of it at once. Exactly one of
        ``cron`` and ``every``. Returns the schedule as stored."""
        spec = self._spec(name, job_type, cron, every, tz, misfire, overlap, priority, payload, key)
        jobs = cast("JobService", self)
        shard = schedule_shard(spec.name, jobs.config.shards)
        await jobs.driver.schedules.put([record_of(spec, shard, declared=False)], self._now())
        self._tell_runner(shard)
        return await self._get(spec.name)

    async def unschedule(self, name: str) -> None:
        """Remove the schedule ``name`` (its jobs already submitted stay); NotFound if there
        is none of that name."""
        if not isinstance(name, str):
            raise JobError.from_validation(
                None, f"schedule name must be a string, got {show(name)}"
            )
        jobs = cast("JobService", self)
        if not await jobs.driver.schedules.remove(name):
            raise _not_found(name)
        self._tell_runner(schedule_shard(name, jobs.config.shards))

    async def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        return [_view(r) for r in await cast("JobService", self).driver.schedules.load(None)]

    async def _get(self, name: str) -> Schedule:
        record = await cast("JobService", self).driver.schedules.get(name)
        if record is None:
            raise _not_found(name)
        return _view(record)

    def _now(self) -> int:
        return cast("JobService", self).clock.now_ms()

    def _tell_runner(self, shard: int) -> None:
        """A runner in this process hears of its own changes at once (no round trip)."""
        runner = cast("JobService", self)._runner
        if runner is not None:
            runner.on_event("schedules", [shard])

    def _spec(
        self,
        name: object,
        job_type: object,
        cron: object,
        every: object,
        tz: object,
        misfire: object,
        overlap: object,
        priority: object,
        payload: Any,
        key: object,
    ) -> ScheduleSpec:
        jobs = cast("JobService", self)
        encoded = encode_json("payload", {} if payload is None else payload)
        if len(encoded) > jobs.config.max_payload_bytes:
            raise JobError.from_validation(
                None,
                f"payload is {len(encoded)} bytes, over the limit of"
                f" {jobs.config.max_payload_bytes}",
            )
        return make_spec(
            name,
            job_type=name if job_type is None else job_type,
            cron=cron,
            every=every,
            payload=encoded,
            tz=tz,
            misfire=misfire,
            overlap=overlap,
            priority=priority,
            key=key,
            now_ms=self._now(),
        )

    def _declare(self, spec: ScheduleSpec, fn: F) -> F:
        """Register ``fn`` (wrapped, to carry its schedules) as the handler of the spec's job
        type. Schedules declared before with this function, or for this job type, stay."""
        if not callable(fn):
            raise JobError.from_validation(
                None, f"schedule {spec.name!r}: {show(fn)} is not callable"
            )
        jobs = cast("JobService", self)
        for job_type, handler in jobs.handlers.items():
            other = getattr(handler, DECLARED_ATTR, {}).get(spec.name)
            if other is not None and job_type != spec.job_type:
                raise JobError.from_validation(
                    None, f"schedule {spec.name!r} is already declared for job type {job_type!r}"
                )
        declared: dict[str, ScheduleSpec] = {
            **getattr(jobs.handlers.get(spec.job_type), DECLARED_ATTR, {}),
            **getattr(fn, DECLARED_ATTR, {}),
            spec.name: spec,
        }
        target = getattr(fn, "__wrapped__", fn) if hasattr(fn, DECLARED_ATTR) else fn
        handler = _carrying(target, declared)
        jobs.register_handler(spec.job_type, handler)
        return cast(F, handler)


def _carrying(fn: Callable[..., Any], declared: dict[str, ScheduleSpec]) -> Callable[..., Any]:
    """A handler that calls ``fn`` and carries ``declared`` (async if ``fn`` is)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def handle(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

        wrapper: Callable[..., Any] = handle
    else:

        @functools.wraps(fn)
        def handle_sync(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        wrapper = handle_sync
    setattr(wrapper, DECLARED_ATTR, declared)
    return wrapper


def _not_found(name: str) -> JobError:
    return JobError("NotFound", None, message=f"no schedule named {name!r}")


def _view(r: ScheduleRecord) -> Schedule:
    try:
        next_tick = tick_time(spec_of(r).next_tick(r.after_ms))
    except Exception:  # a stored expression this process cannot read: shown without one
        next_tick = None
    return Schedule(
        name=r.name,
        job_type=r.job_type,
        cron=r.cron,
        every=None if r.every_ms is None else r.every_ms / 1000,
        tz=r.tz,
        payload=json.loads(r.payload),
        priority=PRIORITIES[r.priority],
        misfire=r.misfire,  # type: ignore[arg-type]
        overlap=r.overlap,  # type: ignore[arg-type]
        key=r.key,
        paused=r.paused,
        declared=r.declared,
        next_tick=next_tick,
        last_tick=tick_time(r.last_tick),
        last_job_id=None if r.last_job_id is None else str(r.last_job_id),
    )
