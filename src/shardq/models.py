"""The values that cross shardq's public API: priorities, statuses, job views, dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Priority = Literal["critical", "high", "normal", "low"]
Status = Literal["queued", "processing", "complete", "failed", "cancelled"]
Duration = Literal["short", "long"]
#: What a history entry records: a status entered, or ``snoozed`` (put off by the handler,
#: queued again without using an attempt).
HistoryStatus = Literal[
    "queued", "processing", "complete", "failed", "cancelled", "snoozed", "throttled"
]

PRIORITIES: tuple[Priority, ...] = get_args(Priority)
STATUSES: tuple[Status, ...] = get_args(Status)
DURATIONS: tuple[Duration, ...] = get_args(Duration)
#: Capacity weights of the priority pools (the seed's ``pools``).
PRIORITY_WEIGHTS: dict[Priority, int] = {"critical": 4, "high": 3, "normal": 2, "low": 1}
#: Priorities as stored: a smaller number is more urgent.
PRIORITY_RANK: dict[Priority, int] = {p: i for i, p in enumerate(PRIORITIES)}
FINISHED: frozenset[Status] = frozenset({"complete", "failed", "cancelled"})


def ms_to_datetime(ms: int) -> datetime:
    """A stored millisecond timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One state transition of a job: the status entered (or ``snoozed``), when, and the
    error that caused it."""

    status: HistoryStatus
    timestamp: datetime
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (ISO timestamps)."""
        out: dict[str, Any] = {"status": self.status, "timestamp": self.timestamp.isoformat()}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class JobPayload:
    """What was submitted: the seed's ``JobPayload``. ``max_attempts`` None means the
    service's ``default_max_attempts``."""

    type: str
    payload: Any
    priority: Priority = "normal"
    dedupe_key: str | None = None
    max_attempts: int | None = None
    duration: Duration = "short"
    batch_id: str | None = None
    key: str | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class JobStatusResponse:
    """A job's state as every process sees it: the seed's ``JobStatusResponse`` and more."""

    id: str
    status: Status
    attempts: int
    history: list[HistoryEntry]
    result: Any = None
    job: JobPayload | None = None
    error: str | None = None
    created_at: datetime | None = None
    run_at: datetime | None = None
    finished_at: datetime | None = None
    #: The schedule that submitted the job, and the tick it was submitted for.
    schedule: str | None = None
    tick: datetime | None = None
    #: Why a queued job that is due does not start: "paused (job type T)", "paused (key
    #: K)", "throttled until T", "waiting for a slot of T", "waiting for the rate of T".
    waiting: str | None = None

    @property
    def finished(self) -> bool:
        """True once the job is complete, failed or cancelled."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "attempts": self.attempts,
            "history": [h.to_dict() for h in self.history],
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "run_at": self.run_at.isoformat() if self.run_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
        if self.schedule is not None:
            out["schedule"] = self.schedule
            out["tick"] = self.tick.isoformat() if self.tick else None
        if self.waiting is not None:
            out["waiting"] = self.waiting
        if self.job is not None:
            j = self.job
            out.update(
                type=j.type,
                payload=j.payload,
                priority=j.priority,
                dedupe_key=j.dedupe_key,
                max_attempts=j.max_attempts,
                duration=j.duration,
                batch_id=j.batch_id,
                key=j.key,
                timeout=j.timeout,
            )
        return out


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that failed for good, kept in ``job_dlq`` until replayed or pruned."""

    id: str
    job_id: str
    type: str
    payload: Any
    priority: Priority
    reason: str
    error: str | None
    attempts: int
    created_at: datetime
    failed_at: datetime
    replayed_at: datetime | None = None
    replay_job_id: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "type": self.type,
            "payload": self.payload,
            "priority": self.priority,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "failed_at": self.failed_at.isoformat(),
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "replay_job_id": self.replay_job_id,
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The outcome of submitting one job: its id, and whether a retained job already had
    the same dedupe key (then ``job_id`` is that job's id)."""

    job_id: str
    duplicate: bool = False


@dataclass(slots=True)
class QueueStats:
    """Counts of jobs by status and, for queued jobs, by priority; and what is paused."""

    by_status: dict[str, int] = field(default_factory=dict)
    queued_by_priority: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    #: The job types, keys and schedules paused now (``Paused.to_dict()``).
    paused: dict[str, list[str]] = field(default_factory=dict)
