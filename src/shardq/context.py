"""The context a handler runs in: which job and attempt, and whether it was cancelled."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running handler may ask about its job.

    ``cancelled`` is set when the job is cancelled while it runs. Async handlers are
    interrupted with ``asyncio.CancelledError``; sync handlers (which run in a thread) should
    check ``cancelled.is_set()`` in long loops, since their result is discarded anyway.
    """

    job_id: str
    type: str
    attempt: int
    max_attempts: int
    key: str | None
    cancelled: threading.Event = field(default_factory=threading.Event)


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("shardq_job")


def current_job() -> JobContext:
    """The job the calling handler is running; raises LookupError outside a handler."""
    return _current.get()


def set_current(ctx: JobContext) -> contextvars.Token[JobContext]:
    """Enter ``ctx`` (used by the runner around each attempt)."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[JobContext]) -> None:
    """Leave the context entered with ``token``."""
    _current.reset(token)
