"""shardq: durable job processing on sharded entity mailboxes.

Embedded on SQLite with no set-up, or a cluster of runners on PostgreSQL, with one API::

    from shardq import JobService

    jobs = JobService("sqlite:///shardq.db")

    @jobs.handler("email.send")
    async def send(payload: dict) -> dict: ...

    async with jobs:
        job_id = await jobs.submit("email.send", {"to": "a@b.c"}, priority="high")
        status = await jobs.wait(job_id, timeout=5)
"""

from .clock import Clock, FakeClock, SystemClock
from .config import Config
from .context import JobContext, current_job
from .control import Snooze, Throttled
from .errors import JobError, RunnerLockedError
from .flow import Limit, Paused, Rate
from .ids import Snowflake
from .jobs import JobService
from .models import (
    DeadLetter,
    HistoryEntry,
    JobPayload,
    JobStatusResponse,
    Priority,
    QueueStats,
    Status,
    SubmitResult,
)
from .retry import RetryPolicy
from .tasks import JobHandle, Task

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "Config",
    "DeadLetter",
    "FakeClock",
    "HistoryEntry",
    "JobContext",
    "JobError",
    "JobHandle",
    "JobPayload",
    "JobService",
    "JobStatusResponse",
    "Limit",
    "Paused",
    "Priority",
    "QueueStats",
    "Rate",
    "RetryPolicy",
    "RunnerLockedError",
    "Snooze",
    "Snowflake",
    "Status",
    "SubmitResult",
    "SystemClock",
    "Task",
    "Throttled",
    "__version__",
    "current_job",
]
