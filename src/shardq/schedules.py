"""Schedules as values: what a periodic or cron schedule is, its checks, and when it ticks.

A schedule submits one job of ``job_type`` per tick. Its ticks are either a cron expression
read on the wall clock of its time zone (``cron``, evaluated by cronsim) or a fixed interval
(``every``) counted from the Unix epoch, so every process computes the same ticks. This
module is pure: the runner part that arms timers and fires ticks is
``shardq.runner.schedules``; storage is each driver's ``schedules`` store.

Daylight-saving time follows Debian's cron, as cronsim does: an expression naming a
specific hour runs once in a skipped hour (``30 2 * * *`` fires at 03:00 on the day 02:30
does not exist) and once in a repeated hour (at the first 02:30); an expression that runs
every hour runs in both passes of a repeated hour.

After a runner was away, the missed ticks are handled by the schedule's ``misfire`` policy
(``plan``): ``all`` fires each missed tick (the most recent ``MISFIRE_CAP`` of them),
``latest`` one job for the most recent, ``skip`` none. A tick at most ``MISFIRE_GRACE_MS``
late is on time, not missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._internal.validation import check_name, check_seconds, check_text, show
from .drivers.base import ScheduleRecord
from .errors import JobError
from .models import PRIORITIES, PRIORITY_RANK, Priority, ms_to_datetime
from .sharding import shard_for

Misfire = Literal["all", "latest", "skip"]
Overlap = Literal["allow", "skip", "queue"]
MISFIRES: tuple[Misfire, ...] = get_args(Misfire)
OVERLAPS: tuple[Overlap, ...] = get_args(Overlap)

#: Most missed ticks fired at once under ``misfire="all"`` (the most recent ones).
MISFIRE_CAP = 100
#: A tick fired at most this late (milliseconds) is on time, not a misfire.
MISFIRE_GRACE_MS = 1000
#: Prefix of the dedupe key of a tick's job: ``shardq.schedule:<name>@<tick ms>``.
TICK_KEY_PREFIX = "shardq.schedule:"
#: The attribute of a handler that holds the schedules declared with it (by name).
DECLARED_ATTR = "__shardq_schedules__"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a schedule now: the ticks to fire (oldest first), the tick through
    which every tick is handled (fired or dropped) afterwards, or None if none was due."""

    fire: list[int]
    through: int | None


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A checked schedule: ``every_ms`` or ``cron`` (exactly one), its zone, and the options
    of each tick's job (``payload`` as encoded JSON, ``priority`` as its rank)."""

    name: str
    job_type: str
    cron: str | None
    every_ms: int | None
    tz: str
    payload: str
    priority: int
    misfire: Misfire
    overlap: Overlap
    key: str | None

    @property
    def job_key(self) -> str | None:
        """The key each tick's job gets: the given one, else under ``overlap="queue"`` one
        per schedule (so its jobs run one at a time, in tick order)."""
        if self.key is None and self.overlap == "queue":
            return f"schedule:{self.name}"
        return self.key

    def dedupe_key(self, tick_ms: int) -> str:
        """The dedupe key of the job of ``tick_ms``: one job per tick, whoever fires it."""
        return f"{TICK_KEY_PREFIX}{self.name}@{tick_ms}"

    def next_tick(self, after_ms: int) -> int | None:
        """The first tick strictly after ``after_ms``; None if the expression never matches
        again (cronsim looks 50 years ahead)."""
        if self.every_ms is not None:
            return (after_ms // self.every_ms + 1) * self.every_ms
        assert self.cron is not None
        it = CronSim(self.cron, _local(after_ms, self.tz))
        # In a repeated hour cronsim may answer the first pass of a time already passed in
        # the second: ticks are strictly increasing, so those are passed over.
        for _ in range(8):
            try:
                tick = _ms(next(it))
            except StopIteration:
                return None
            if tick > after_ms:
                return tick
        return None

    def ticks(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """The last ``limit`` ticks in ``(after_ms, until_ms]``, oldest first."""
        if until_ms <= after_ms or limit <= 0:
            return []
        if self.every_ms is not None:
            last = until_ms // self.every_ms
            first = max(after_ms // self.every_ms + 1, last - limit + 1)
            return [k * self.every_ms for k in range(first, last + 1)]
        start = max(after_ms, self._back(until_ms, limit))
        out: list[int] = []
        tick = self.next_tick(start)
        while tick is not None and tick <= until_ms:
            out.append(tick)
            tick = self.next_tick(tick)
        return out[-limit:]

    def _back(self, until_ms: int, limit: int) -> int:
        """A time before which lie only ticks older than the last ``limit`` up to
        ``until_ms`` (so a long downtime is not walked tick by tick)."""
        assert self.cron is not None
        it = CronSim(self.cron, _local(until_ms + 1000, self.tz), reverse=True)
        earliest = until_ms
        for _ in range(limit + 1):
            try:
                earliest = _ms(next(it))
            except StopIteration:
                return 0
        return earliest - 1

    def plan(self, after_ms: int, now_ms: int) -> Plan:
        """The ticks to fire at ``now_ms`` when every tick up to ``after_ms`` is handled,
        by the misfire policy."""
        due = self.ticks(after_ms, now_ms, MISFIRE_CAP)
        if not due:
            return Plan([], None)
        if self.misfire == "all":
            fire = due
        elif self.misfire == "latest":
            fire = due[-1:]
        else:
            fire = [t for t in due if now_ms - t <= MISFIRE_GRACE_MS]
        return Plan(fire, due[-1])


def schedule_shard(name: str, shards: int) -> int:
    """The shard a schedule lives on (its owner fires it): its name's hash."""
    return shard_for(f"schedule:{name}", shards)


def spec_of(r: ScheduleRecord) -> ScheduleSpec:
    """The spec a stored schedule holds."""
    return ScheduleSpec(
        r.name, r.job_type, r.cron, r.every_ms, r.tz, r.payload, r.priority,
        r.misfire, r.overlap, r.key,  # type: ignore[arg-type]
    )  # fmt: skip


def record_of(spec: ScheduleSpec, shard: int, *, declared: bool) -> ScheduleRecord:
    """``spec`` as the row to store on ``shard``."""
    return ScheduleRecord(
        spec.name, shard, spec.job_type, spec.cron, spec.every_ms, spec.tz, spec.payload,
        spec.priority, spec.misfire, spec.overlap, spec.key, declared=declared,
    )  # fmt: skip


def declared_in(handlers: Mapping[str, Any]) -> list[ScheduleSpec]:
    """The schedules declared in code (``@jobs.cron``, ``@jobs.every``) whose handler is
    still the one registered for their job type, by name."""
    out: dict[str, ScheduleSpec] = {}
    for job_type, handler in handlers.items():
        declared: Iterable[ScheduleSpec] = getattr(handler, DECLARED_ATTR, {}).values()
        out.update((s.name, s) for s in declared if s.job_type == job_type)
    return [out[name] for name in sorted(out)]


def make_spec(
    name: object,
    *,
    job_type: object,
    cron: object = None,
    every: object = None,
    payload: str,
    tz: object = "UTC",
    misfire: object = "latest",
    overlap: object = "allow",
    priority: object = "normal",
    key: object = None,
    now_ms: int,
) -> ScheduleSpec:
    """Check a schedule's arguments (``payload`` already encoded); Validation saying what is
    wrong otherwise."""
    check_name("schedule name", name)
    check_name("job type", job_type)
    zone = check_zone(tz)
    if (cron is None) == (every is None):
        raise JobError.from_validation(
            None, "give a schedule either cron= (an expression) or every= (seconds), not both"
            if cron is not None else
            "give a schedule cron= (an expression) or every= (seconds)",
        )  # fmt: skip
    every_ms = None if every is None else _every_ms(every)
    if cron is not None:
        _check_cron(cron, zone, now_ms)
    if not isinstance(misfire, str) or misfire not in MISFIRES:
        raise JobError.from_validation(
            None, f"unknown misfire policy {show(misfire)}; use one of {', '.join(MISFIRES)}"
        )
    if not isinstance(overlap, str) or overlap not in OVERLAPS:
        raise JobError.from_validation(
            None, f"unknown overlap policy {show(overlap)}; use one of {', '.join(OVERLAPS)}"
        )
    if not isinstance(priority, str) or priority not in PRIORITY_RANK:
        raise JobError.from_validation(
            None, f"unknown priority {show(priority)}; use one of {', '.join(PRIORITIES)}"
        )
    if key is not None:
        check_name("key", key)
    return ScheduleSpec(
        name=name,  # type: ignore[arg-type]
        job_type=job_type,  # type: ignore[arg-type]
        cron=cron,  # type: ignore[arg-type]
        every_ms=every_ms,
        tz=zone.key,
        payload=payload,
        priority=PRIORITY_RANK[priority],
        misfire=misfire,
        overlap=overlap,
        key=key,  # type: ignore[arg-type]
    )


def check_zone(tz: object) -> ZoneInfo:
    """The IANA time zone named ``tz`` (e.g. ``Europe/Berlin``); Validation if unknown."""
    if not isinstance(tz, str) or not tz:
        raise JobError.from_validation(None, f"tz must be a time zone name, got {show(tz)}")
    check_text("tz", tz)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise JobError.from_validation(
            None, f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _every_ms(every: object) -> int:
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    value = check_seconds("every", seconds, zero_ok=False)
    ms = round(value * 1000)
    if ms < 1:
        raise JobError.from_validation(
            None, f"every must be at least 0.001 seconds, got {show(every)}"
        )
    return ms


def _check_cron(cron: object, zone: ZoneInfo, now_ms: int) -> None:
    if not isinstance(cron, str) or not cron.strip():
        raise JobError.from_validation(
            None, f"cron must be a cron expression such as '0 8 * * MON', got {show(cron)}"
        )
    check_text("cron", cron)
    try:
        it = CronSim(cron, _local(now_ms, zone.key))
    except (CronSimError, ValueError, TypeError) as e:
        raise JobError.from_validation(
            None, f"invalid cron expression {cron!r}: {e} (expected 5 fields, or 6 with seconds)"
        ) from None
    try:
        next(it)
    except StopIteration:
        raise JobError.from_validation(
            None, f"cron expression {cron!r} never matches a date in the next 50 years"
        ) from None


def _local(ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule as the API shows it. ``next_tick`` is the first tick not yet
    handled (in the past while its runner is away); ``last_tick`` and ``last_job_id`` name
    the most recent tick that submitted a job."""

    name: str
    job_type: str
    cron: str | None
    every: float | None
    tz: str
    payload: Any
    priority: Priority
    misfire: Misfire
    overlap: Overlap
    key: str | None
    paused: bool
    declared: bool
    next_tick: datetime | None
    last_tick: datetime | None
    last_job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (ISO times)."""
        return {
            "name": self.name,
            "job_type": self.job_type,
            "cron": self.cron,
            "every": self.every,
            "tz": self.tz,
            "payload": self.payload,
            "priority": self.priority,
            "misfire": self.misfire,
            "overlap": self.overlap,
            "key": self.key,
            "paused": self.paused,
            "declared": self.declared,
            "next_tick": self.next_tick.isoformat() if self.next_tick else None,
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            "last_job_id": self.last_job_id,
        }


def tick_time(ms: int | None) -> datetime | None:
    """A stored tick as an aware UTC datetime."""
    return None if ms is None else ms_to_datetime(ms)


__all__ = [
    "MISFIRES",
    "MISFIRE_CAP",
    "MISFIRE_GRACE_MS",
    "OVERLAPS",
    "Misfire",
    "Overlap",
    "Plan",
    "Schedule",
    "ScheduleSpec",
    "check_zone",
    "make_spec",
    "tick_time",
]
