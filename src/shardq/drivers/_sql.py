"""Helpers shared by the SQL drivers: migration files and row decoding."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from .base import DeadLetterRecord, FiredTick, JobFilter, JobRecord, ScheduleRecord

JOB_COLUMNS = (
    "id, type, payload, priority, state, key, shard, dedupe_key, max_attempts, attempts, "
    "timeout, duration, batch_id, run_at, created_at, finished_at, result, error, history, "
    "schedule, tick"
)
DLQ_COLUMNS = (
    "id, job_id, type, payload, priority, key, reason, error, attempts, max_attempts, "
    "created_at, failed_at, replayed_at, replay_job_id"
)

SCHEDULE_COLUMNS = (
    "name, shard, job_type, cron, every_ms, tz, payload, priority, misfire, overlap, key, "
    "declared, paused, after_ms, last_tick, last_job_id"
)
#: The columns of a schedule that ``ScheduleStore.put`` compares and writes.
SCHEDULE_SPEC = (
    "job_type",
    "cron",
    "every_ms",
    "tz",
    "payload",
    "priority",
    "misfire",
    "overlap",
    "key",
    "declared",
    "shard",
)


def migrations(package: str) -> list[tuple[int, str]]:
    """The (version, sql) pairs shipped in ``package``'s ``migrations`` folder, in order."""
    out = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("_", 1)[0]), entry.read_text()))
    return sorted(out)


def job_record(row: Any) -> JobRecord:
    """A JobRecord from a row selected with JOB_COLUMNS."""
    history = row[18]
    if isinstance(history, str):
        history = json.loads(history)
    return JobRecord(
        id=row[0],
        type=row[1],
        payload=row[2],
        priority=row[3],
        state=row[4],
        key=row[5],
        shard=row[6],
        dedupe_key=row[7],
        max_attempts=row[8],
        attempts=row[9],
        timeout=row[10],
        duration=row[11],
        batch_id=row[12],
        run_at=row[13],
        created_at=row[14],
        finished_at=row[15],
        result=row[16],
        error=row[17],
        history=[(h[0], int(h[1]), h[2]) for h in history],
        schedule=row[19],
        tick=row[20],
    )


def dead_letter_record(row: Any) -> DeadLetterRecord:
    """A DeadLetterRecord from a row selected with DLQ_COLUMNS."""
    return DeadLetterRecord(*row)


def list_jobs_sql(flt: JobFilter, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """The query listing jobs that match ``flt``, newest first, and its arguments.

    ``mark(n)`` is the driver's placeholder for the n-th argument (``?`` or ``$n``).
    """
    where: list[str] = []
    args: list[Any] = []
    for condition, value in (
        ("state =", flt.state),
        ("type =", flt.type),
        ("priority =", flt.priority),
        ("key =", flt.key),
        ("created_at >=", flt.created_after),
        ("created_at <", flt.created_before),
        ("id <", flt.before_id),
    ):
        if value is not None:
            args.append(value)
            where.append(f"{condition} {mark(len(args))}")
    args.append(flt.limit)
    clause = " AND ".join(where) or "TRUE"
    sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {clause} ORDER BY id DESC LIMIT {mark(len(args))}"
    return sql, args


def schedule_record(row: Any) -> ScheduleRecord:
    """A ScheduleRecord from a row selected with SCHEDULE_COLUMNS."""
    r = list(row)
    r[11], r[12] = bool(r[11]), bool(r[12])
    return ScheduleRecord(*r)


def schedule_spec(r: ScheduleRecord) -> tuple[Any, ...]:
    """The values of ``r`` in the order of SCHEDULE_SPEC."""
    return (r.job_type, r.cron, r.every_ms, r.tz, r.payload, r.priority, r.misfire, r.overlap,
            r.key, r.declared, r.shard)  # fmt: skip


def timing_changed(stored: Any, r: ScheduleRecord) -> bool:
    """Whether the stored spec (a row in SCHEDULE_SPEC order) ticks differently from ``r``."""
    return tuple(stored[1:4]) != (r.cron, r.every_ms, r.tz)


def fired_rows(
    ticks: Sequence[FiredTick],
) -> tuple[list[tuple[str, int, int | None, int | None]], list[tuple[int, str, int]]]:
    """``ticks`` as one row per schedule (name, through, latest tick that submitted a job,
    its job id) and one per job (id, schedule, tick)."""
    latest: dict[str, tuple[str, int, int | None, int | None]] = {}
    jobs: list[tuple[int, str, int]] = []
    for t in ticks:
        name, through, tick, job_id = latest.get(t.name, (t.name, t.through, None, None))
        through = max(through, t.through)
        if t.tick is not None and t.job_id is not None:
            jobs.append((t.job_id, t.name, t.tick))
            if tick is None or t.tick > tick:
                tick, job_id = t.tick, t.job_id
        latest[t.name] = (name, through, tick, job_id)
    return sorted(latest.values()), jobs
