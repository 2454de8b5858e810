"""Helpers shared by the SQL drivers: migration files, row decoding, and the arithmetic of
flow control (a type's admission against its stored controls)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .base import (
    DeadLetterRecord,
    FiredTick,
    JobFilter,
    JobRecord,
    LimitRecord,
    LimitUsage,
    RateSpec,
    ScheduleRecord,
    StartedJob,
)

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


#: The columns of ``shardq_controls`` that ``ControlStore.put_limits`` writes, in the order
#: of ``limit_values``; ``limit_record`` reads them, then ``paused`` and ``throttled_until``.
LIMIT_SPEC = (
    "type",
    "concurrency",
    "key_concurrency",
    "rate_count",
    "rate_per",
    "rate_burst",
    "key_rate_count",
    "key_rate_per",
    "key_rate_burst",
)
LIMIT_COLUMNS = ", ".join((*LIMIT_SPEC, "paused", "throttled_until"))
#: What an admission reads of a type's controls, in the order of ``gate``'s row.
GATE_COLUMNS = (
    "type, concurrency, rate_count, rate_per, rate_burst, paused, throttled_until, tokens,"
    " tokens_at"
)
# Tokens are fractions: a bucket refilled to 0.9999999 by rounding holds a whole token, and
# a wait computed as 100.0000001 ms is 100 ms.
_ROUNDING = 1e-9
_ROUNDING_MS = 1e-6


def _rate(count: int | None, per: float | None, burst: int | None) -> RateSpec | None:
    return None if count is None or per is None else RateSpec(count, per, burst or 0)


def limit_record(row: Any) -> LimitRecord:
    """A LimitRecord from a row selected with LIMIT_COLUMNS."""
    return LimitRecord(
        job_type=row[0],
        concurrency=row[1],
        key_concurrency=row[2],
        rate=_rate(row[3], row[4], row[5]),
        key_rate=_rate(row[6], row[7], row[8]),
        paused=bool(row[9]),
        throttled_until=row[10],
    )


def limit_values(r: LimitRecord) -> tuple[Any, ...]:
    """The values of ``r`` in the order of LIMIT_SPEC."""
    rate, key_rate = r.rate, r.key_rate
    return (
        r.job_type,
        r.concurrency,
        r.key_concurrency,
        *((None, None, None) if rate is None else (rate.count, rate.per, rate.burst)),
        *((None, None, None) if key_rate is None else (key_rate.count, key_rate.per,
                                                       key_rate.burst)),
    )  # fmt: skip


def latest_limits(records: Iterable[LimitRecord]) -> list[LimitRecord]:
    """``records`` by type, the last of each type only."""
    return sorted({r.job_type: r for r in records}.values(), key=lambda r: r.job_type)


def refill(rate: RateSpec, tokens: float, tokens_at: int, now: int) -> tuple[float, int]:
    """A rate's bucket as of ``now``: its tokens (at most ``burst + 1``) and the time they are
    counted at. A ``now`` behind ``tokens_at`` (the runners' clocks differ) adds nothing."""
    at = max(now, tokens_at)
    return min(rate.burst + 1.0, tokens + (at - tokens_at) * rate.count / (rate.per * 1000)), at


@dataclass(slots=True)
class Gate:
    """A limited type's stored controls as an admission reads them (its row locked), and
    the jobs holding its slots now (``running``)."""

    type: str
    concurrency: int | None
    rate: RateSpec | None
    paused: bool
    throttled_until: int | None
    tokens: float | None
    tokens_at: int | None
    running: int = 0

    def bucket(self, rate: RateSpec, now: int) -> tuple[float, int]:
        """The tokens of the type's ``rate`` as of ``now`` and the time they are counted
        at (a rate without a stored bucket is full)."""
        if self.tokens is None or self.tokens_at is None:
            return rate.burst + 1.0, now
        return refill(rate, self.tokens, self.tokens_at, now)

    def allowance(self, wanted: int, now: int) -> tuple[int, int | None]:
        """How many of ``wanted`` starts may go now and, if not all, when to ask again:
        the latest time among the limits that refuse the rest (0: when a slot frees or
        the type is resumed)."""
        caps: list[tuple[int, int]] = []
        if self.paused:
            caps.append((0, 0))
        if self.throttled_until is not None and self.throttled_until > now:
            caps.append((0, self.throttled_until))
        if self.concurrency is not None:
            caps.append((max(0, self.concurrency - self.running), 0))
        if (rate := self.rate) is not None:
            tokens, at = self.bucket(rate, now)
            whole = math.floor(tokens + _ROUNDING)
            # The next whole token, once ``whole`` of them are used.
            wait = (whole + 1 - tokens) * rate.per * 1000 / rate.count
            caps.append((whole, at + math.ceil(wait - _ROUNDING_MS)))
        allowed = min([wanted, *(cap for cap, _ in caps)])
        if allowed == wanted:
            return wanted, None
        return allowed, max(until for cap, until in caps if cap == allowed)


def usage(g: Gate, running: int, now: int) -> LimitUsage:
    """What the type of ``g`` uses as of ``now``: ``running`` jobs in its slots, and its
    rate's tokens."""
    return LimitUsage(running, None if g.rate is None else g.bucket(g.rate, now)[0])


def gate(row: Any) -> Gate:
    """A Gate from a row selected with GATE_COLUMNS."""
    return Gate(row[0], row[1], _rate(row[2], row[3], row[4]), bool(row[5]), *row[6:9])


@dataclass(slots=True)
class Admission:
    """What an admission decided: the ids to start (``start`` less the refused), and for
    each type some of whose starts were refused, when to ask again. ``gates`` are the
    controls it read as of ``now``; ``settle`` charges the starts to them."""

    start: list[int]
    held: dict[str, int]
    gates: dict[str, Gate]
    now: int

    def settle(
        self, started: Iterable[StartedJob]
    ) -> tuple[list[tuple[str, float, int]], list[tuple[int, str]]]:
        """What the jobs ``started`` under this admission hold: each rate's bucket less a
        token per start (type, tokens, tokens_at), and a slot (job id, type) for each job
        of a type with a concurrency limit."""
        started = [s for s in started if s.type in self.gates]
        used = Counter(s.type for s in started)
        buckets = []
        for job_type, n in sorted(used.items()):
            rate = self.gates[job_type].rate
            if rate is not None:
                tokens, at = self.gates[job_type].bucket(rate, self.now)
                buckets.append((job_type, tokens - n, at))
        slots = [(s.id, s.type) for s in started if self.gates[s.type].concurrency is not None]
        return buckets, slots


def admit(
    start: Sequence[int], candidates: Iterable[tuple[int, str]], gates: Collection[Gate], now: int
) -> Admission:
    """Admit the starts among ``start`` (in its order) against ``gates``. ``candidates``
    are the (id, type) of the queued jobs among ``start`` of the limited types; those of a
    type without a gate, and every other id, are admitted."""
    by_gate = {g.type: g for g in gates}
    order = {job_id: n for n, job_id in enumerate(start)}
    waiting: dict[str, list[int]] = {}
    for job_id, job_type in sorted(candidates, key=lambda c: order[c[0]]):
        if job_type in by_gate:
            waiting.setdefault(job_type, []).append(job_id)
    refused: set[int] = set()
    held: dict[str, int] = {}
    for job_type, job_ids in waiting.items():
        allowed, until = by_gate[job_type].allowance(len(job_ids), now)
        if until is not None:
            refused.update(job_ids[allowed:])
            held[job_type] = until
    return Admission([i for i in start if i not in refused], held, by_gate, now)
