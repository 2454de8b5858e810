"""Flow control on a ``JobService``: limits per job type and per key, pause and resume.

::

    @jobs.handler("api.call",
                  concurrency=20,                       # running at once, cluster-wide
                  key_concurrency=3,                    # running at once per key
                  rate=Rate(100, per=60.0, burst=20),   # starts per type, cluster-wide
                  key_rate=Rate(5, per=1.0))            # starts per key
    async def call(payload: dict) -> None:
        ...
        raise Throttled(retry_after=30)                 # back off this job's key (or type)

    await jobs.limit("api.call", concurrency=10)        # from any process, at run time
    await jobs.limits()                                 # configured, and in use now
    await jobs.pause(job_type="email.send")             # or key="tenant:7", schedule="poll"
    await jobs.resume(job_type="email.send")

A type's limits hold across the cluster and across failure: storage admits each start of a
limited type in the transaction that starts it. A key's limits are kept by the key's owner.
Limits declared on a handler are stored when a runner starts (replacing what ``limit`` set
at run time); ``limit`` changes them until then. A job held back stays ``queued`` and uses
no attempt; ``status`` says why it waits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from ._internal.validation import check_name, show
from .drivers.base import LimitRecord, RateSpec
from .errors import JobError
from .schedules import schedule_shard

if TYPE_CHECKING:
    from .jobs import JobService

__all__ = ["FlowSupport", "Limit", "Paused", "Rate"]

#: Stands for "leave as it is" in ``limit``.
_KEEP: Any = object()
#: The longest rate period (a day, in seconds) and the largest count or burst.
_MAX_PER = 86_400.0
_MAX_COUNT = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` starts per ``per`` seconds, spread evenly; after a quiet spell up to
    ``burst`` more may start at once. Over any window of ``per`` seconds, at most
    ``count + burst`` start."""

    count: int
    per: float = 1.0
    burst: int = 0

    def __post_init__(self) -> None:
        for name, value in (("count", self.count), ("burst", self.burst)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(f"Rate {name} must be an integer, got {show(value)}")
        if not 1 <= self.count <= _MAX_COUNT:
            raise _invalid(f"Rate count must be 1..{_MAX_COUNT}, got {self.count}")
        if not 0 <= self.burst <= _MAX_COUNT:
            raise _invalid(f"Rate burst must be 0..{_MAX_COUNT}, got {self.burst}")
        per = self.per
        if isinstance(per, bool) or not isinstance(per, int | float):
            raise _invalid(f"Rate per must be a number of seconds, got {show(per)}")
        if not (math.isfinite(per) and 0.001 <= per <= _MAX_PER):
            raise _invalid(f"Rate per must be 0.001..{_MAX_PER:g} seconds, got {per!r}")

    def spec(self) -> RateSpec:
        """The stored form."""
        return RateSpec(self.count, float(self.per), self.burst)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "per": self.per, "burst": self.burst}


@dataclass(frozen=True, slots=True)
class Limit:
    """One job type's controls and what it uses now."""

    job_type: str
    concurrency: int | None
    key_concurrency: int | None
    rate: Rate | None
    key_rate: Rate | None
    paused: bool
    #: Unix ms until which a handler's ``Throttled`` holds the type, if still ahead.
    throttled_until: int | None
    #: Jobs of the type running under its concurrency limit now.
    running: int
    #: Starts its rate allows at once now (whole tokens), None without a rate.
    tokens: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_type": self.job_type,
            "concurrency": self.concurrency,
            "key_concurrency": self.key_concurrency,
            "rate": None if self.rate is None else self.rate.to_dict(),
            "key_rate": None if self.key_rate is None else self.key_rate.to_dict(),
            "paused": self.paused,
            "throttled_until": self.throttled_until,
            "running": self.running,
            "tokens": self.tokens,
        }


@dataclass(frozen=True, slots=True)
class Paused:
    """What is paused now."""

    job_types: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"job_types": self.job_types, "keys": self.keys, "schedules": self.schedules}


def limit_record(
    job_type: str,
    concurrency: object = None,
    key_concurrency: object = None,
    rate: object = None,
    key_rate: object = None,
) -> LimitRecord:
    """The stored limits of ``job_type``, checked (``JobError(reason="Validation")``)."""
    return LimitRecord(
        job_type,
        concurrency=_count("concurrency", concurrency),
        key_concurrency=_count("key_concurrency", key_concurrency),
        rate=_rate("rate", rate),
        key_rate=_rate("key_rate", key_rate),
    )


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be a positive integer or None, got {show(value)}")
    if not 1 <= value <= _MAX_COUNT:
        raise _invalid(f"{name} must be 1..{_MAX_COUNT}, got {value}")
    return value


def _rate(name: str, value: object) -> RateSpec | None:
    if value is None:
        return None
    if not isinstance(value, Rate):
        raise _invalid(f"{name} must be a shardq.Rate or None, got {show(value)}")
    return value.spec()


def _view_rate(spec: RateSpec | None) -> Rate | None:
    return None if spec is None else Rate(spec.count, spec.per, spec.burst)


def _invalid(message: str) -> JobError:
    return JobError.from_validation(None, message)


class FlowSupport:
    """The flow-control methods of ``JobService``."""

    async def limit(
        self,
        job_type: str,
        *,
        concurrency: int | None = _KEEP,
        key_concurrency: int | None = _KEEP,
        rate: Rate | None = _KEEP,
        key_rate: Rate | None = _KEEP,
    ) -> Limit:
        """Change the limits of ``job_type`` from any process (None removes one; those not
        given stay); every runner applies them at once. The type must be known: handled by
        this process or by some runner lately, or limited already."""
        check_name("job type", job_type)
        jobs = cast("JobService", self)
        store = jobs.driver.controls
        current = {r.job_type: r for r in await store.limits()}.get(job_type)
        if current is None and not await self._known_type(job_type):
            raise _invalid(
                f"unknown job type {job_type!r}: no runner has had a handler for it lately"
            )
        base = current or LimitRecord(job_type)
        record = limit_record(
            job_type,
            base.concurrency if concurrency is _KEEP else concurrency,
            base.key_concurrency if key_concurrency is _KEEP else key_concurrency,
            _view_rate(base.rate) if rate is _KEEP else rate,
            _view_rate(base.key_rate) if key_rate is _KEEP else key_rate,
        )
        await store.put_limits([record], jobs.clock.now_ms())
        await self._tell_runner_controls()
        return next(lim for lim in await self.limits() if lim.job_type == job_type)

    async def limits(self) -> list[Limit]:
        """Every job type with controls: its limits, pause and throttle, and what it uses
        now, by type."""
        jobs = cast("JobService", self)
        store = jobs.driver.controls
        records = await store.limits()
        now = jobs.clock.now_ms()
        usage = await store.usage([r.job_type for r in records], now)
        out = []
        for r in records:
            use = usage.get(r.job_type)
            throttled = r.throttled_until if (r.throttled_until or 0) > now else None
            out.append(
                Limit(
                    r.job_type,
                    r.concurrency,
                    r.key_concurrency,
                    _view_rate(r.rate),
                    _view_rate(r.key_rate),
                    r.paused,
                    throttled,
                    use.running if use else 0,
                    use.tokens if use else None,
                )
            )
        return out

    async def pause(
        self, *, job_type: str | None = None, key: str | None = None, schedule: str | None = None
    ) -> None:
        """Hold back every job of ``job_type``, or of ``key``, or the ticks of ``schedule``
        (exactly one), cluster-wide and durably, until ``resume``. Paused jobs stay queued,
        in order; running ones finish."""
        await self._set_paused(True, job_type, key, schedule)

    async def resume(
        self, *, job_type: str | None = None, key: str | None = None, schedule: str | None = None
    ) -> None:
        """Undo ``pause``: the jobs held back are dispatched at once."""
        await self._set_paused(False, job_type, key, schedule)

    async def paused(self) -> Paused:
        """The job types, keys and schedules paused now."""
        jobs = cast("JobService", self)
        store = jobs.driver.controls
        types = sorted(r.job_type for r in await store.limits() if r.paused)
        keys = await store.paused_keys()
        schedules = [r.name for r in await jobs.driver.schedules.load(None) if r.paused]
        return Paused(types, keys, schedules)

    async def _set_paused(
        self, paused: bool, job_type: object, key: object, schedule: object
    ) -> None:
        given = [(n, v) for n, v in (("job_type", job_type), ("key", key), ("schedule", schedule))]
        chosen = [(n, v) for n, v in given if v is not None]
        if len(chosen) != 1:
            raise _invalid("give exactly one of job_type, key and schedule")
        what, value = chosen[0]
        jobs = cast("JobService", self)
        now = jobs.clock.now_ms()
        if what == "schedule":
            if not isinstance(value, str) or not value:
                raise _invalid(f"schedule must be a non-empty string, got {show(value)}")
            if not await jobs.driver.schedules.set_paused(value, paused, now):
                raise JobError("NotFound", None, message=f"no schedule named {value!r}")
            if jobs._runner is not None:
                await jobs._runner.reload_schedules([schedule_shard(value, jobs.config.shards)])
            return
        check_name("job type" if what == "job_type" else "key", value)
        assert isinstance(value, str)
        store = jobs.driver.controls
        if what == "job_type":
            await store.set_paused(value, paused, now)
        else:
            await store.set_key_paused(value, paused, now)
        await self._tell_runner_controls()

    async def _waiting(self, job_type: str, key: str | None) -> str | None:
        """Why a due queued job of ``job_type`` (and ``key``) is held back, if it is."""
        jobs = cast("JobService", self)
        store = jobs.driver.controls
        rec = next((r for r in await store.limits() if r.job_type == job_type), None)
        if rec is not None and rec.paused:
            return f"paused (job type {job_type})"
        if key is not None and key in await store.paused_keys():
            return f"paused (key {key})"
        if rec is None:
            return None
        now = jobs.clock.now_ms()
        until = rec.throttled_until or 0
        if until > now:
            at = datetime.fromtimestamp(until / 1000, UTC).isoformat(timespec="milliseconds")
            return f"throttled until {at}"
        use = (await store.usage([job_type], now)).get(job_type)
        if use is None:
            return None
        if rec.concurrency is not None and use.running >= rec.concurrency:
            return f"waiting for a slot of {job_type}"
        if use.tokens is not None and use.tokens < 1:
            return f"waiting for the rate of {job_type}"
        return None

    async def _known_type(self, job_type: str) -> bool:
        jobs = cast("JobService", self)
        if job_type in jobs.handlers:
            return True
        since = jobs.clock.now_ms() - int(jobs.config.handler_grace * 1000)
        return await jobs.driver.handled_since(job_type, since)

    async def _tell_runner_controls(self) -> None:
        """A runner in this process applies its own changes before the call returns."""
        runner = cast("JobService", self)._runner
        if runner is not None:
            await runner.reload_controls()
