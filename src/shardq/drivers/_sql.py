"""Helpers shared by the SQL drivers: migration files and row decoding."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from .base import DeadLetterRecord, JobFilter, JobRecord

JOB_COLUMNS = (
    "id, type, payload, priority, state, key, shard, dedupe_key, max_attempts, attempts, "
    "timeout, duration, batch_id, run_at, created_at, finished_at, result, error, history"
)
DLQ_COLUMNS = (
    "id, job_id, type, payload, priority, key, reason, error, attempts, max_attempts, "
    "created_at, failed_at, replayed_at, replay_job_id"
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
