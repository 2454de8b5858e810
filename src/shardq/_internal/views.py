"""Stored rows as the values the API returns."""

from __future__ import annotations

import json

from ..drivers.base import DeadLetterRecord, JobRecord
from ..models import (
    PRIORITIES,
    DeadLetter,
    HistoryEntry,
    JobPayload,
    JobStatusResponse,
    ms_to_datetime,
)


def status_view(r: JobRecord) -> JobStatusResponse:
    """A stored job as the API shows it."""
    return JobStatusResponse(
        id=str(r.id),
        status=r.state,  # type: ignore[arg-type]
        attempts=r.attempts,
        history=[HistoryEntry(s, ms_to_datetime(t), e) for s, t, e in r.history],  # type: ignore[arg-type]
        result=json.loads(r.result) if r.result is not None else None,
        job=JobPayload(
            type=r.type,
            payload=json.loads(r.payload),
            priority=PRIORITIES[r.priority],
            dedupe_key=r.dedupe_key,
            max_attempts=r.max_attempts,
            duration=r.duration,  # type: ignore[arg-type]
            batch_id=r.batch_id,
            key=r.key,
            timeout=r.timeout,
        ),
        error=r.error,
        created_at=ms_to_datetime(r.created_at),
        run_at=ms_to_datetime(r.run_at),
        finished_at=ms_to_datetime(r.finished_at) if r.finished_at is not None else None,
        schedule=r.schedule,
        tick=ms_to_datetime(r.tick) if r.tick is not None else None,
    )


def dead_letter_view(r: DeadLetterRecord) -> DeadLetter:
    """A stored dead letter as the API shows it."""
    return DeadLetter(
        id=str(r.id),
        job_id=str(r.job_id),
        type=r.type,
        payload=json.loads(r.payload),
        priority=PRIORITIES[r.priority],
        reason=r.reason,
        error=r.error,
        attempts=r.attempts,
        created_at=ms_to_datetime(r.created_at),
        failed_at=ms_to_datetime(r.failed_at),
        replayed_at=ms_to_datetime(r.replayed_at) if r.replayed_at is not None else None,
        replay_job_id=str(r.replay_job_id) if r.replay_job_id is not None else None,
        key=r.key,
    )
