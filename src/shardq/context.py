"""The context a handler runs in: which job and attempt, and whether it was cancelled."""

from __future__ import annotations

import contextvars
import threading

# Guards the lazy creation of a context's event; uncontended, and far cheaper than an Event
# (a lock and a condition) for every job when almost none is ever cancelled.
_lazy = threading.Lock()


class JobContext:
    """What a running handler may ask about its job.

    ``cancelled`` is set when the job is cancelled (or times out) while it runs. Async
    handlers are interrupted with ``asyncio.CancelledError``; sync handlers (which run in a
    thread) should check ``cancelled.is_set()`` in long loops, since their result is
    discarded anyway.
    """

    __slots__ = ("_cancel", "_event", "attempt", "job_id", "key", "max_attempts", "type")

    def __init__(
        self, job_id: str, type: str, attempt: int, max_attempts: int, key: str | None
    ) -> None:
        self.job_id = job_id
        self.type = type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.key = key
        self._cancel = False
        self._event: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """An event set once the job is cancelled while it runs."""
        event = self._event
        if event is None:
            with _lazy:
                if self._event is None:
                    self._event = threading.Event()
                    if self._cancel:
                        self._event.set()
                event = self._event
        return event

    def cancel(self) -> None:
        """Tell the handler its job is cancelled (the runner calls this)."""
        with _lazy:
            self._cancel = True
            event = self._event
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, type={self.type!r}, attempt={self.attempt},"
            f" max_attempts={self.max_attempts}, key={self.key!r}, cancelled={self._cancel})"
        )


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
