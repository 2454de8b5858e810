"""The errors of shardq's public API: ``JobError`` for job operations, and
``RunnerLockedError`` for a second runner on one embedded database."""

from __future__ import annotations

from typing import Literal, get_args

JobErrorReason = Literal[
    "NotFound",
    "AlreadyCancelled",
    "HandlerMissing",
    "Validation",
    "Processing",
    "MaxRetries",
    "RunnerUnavailable",
    "Timeout",
]

REASONS: frozenset[str] = frozenset(get_args(JobErrorReason))
_TERMINAL: frozenset[str] = frozenset(
    {"Validation", "HandlerMissing", "AlreadyCancelled", "NotFound"}
)
_TRANSIENT: frozenset[str] = frozenset({"Timeout", "RunnerUnavailable"})


class JobError(Exception):
    """A failure of a job operation, classified by ``reason``.

    Raised by the API for bad input (``Validation``), unknown ids (``NotFound``) and the like.
    A handler may raise one too: a terminal reason dead-letters the job at once, any other
    exception is retried until ``max_attempts`` is spent.
    """

    def __init__(
        self,
        reason: JobErrorReason,
        job_id: str | None = None,
        cause: object = None,
        message: str | None = None,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(
                f"unknown JobError reason {reason!r}; expected one of {sorted(REASONS)}"
            )
        self.reason: JobErrorReason = reason
        self.job_id = job_id
        self.cause = cause
        text = message if message is not None else _describe(reason, job_id, cause)
        super().__init__(text)

    @property
    def is_terminal(self) -> bool:
        """True when retrying cannot help: the job is dead-lettered at once."""
        return self.reason in _TERMINAL

    @property
    def is_transient(self) -> bool:
        """True when the failure is expected to pass on its own (timeouts, no runner)."""
        return self.reason in _TRANSIENT

    def __repr__(self) -> str:
        return f"JobError(reason={self.reason!r}, job_id={self.job_id!r}, message={str(self)!r})"

    @classmethod
    def from_not_found(cls, job_id: str) -> JobError:
        """No job (or dead letter) has this id."""
        return cls("NotFound", job_id)

    @classmethod
    def from_cancelled(cls, job_id: str, cause: object = None) -> JobError:
        """The job was already cancelled or has finished."""
        return cls("AlreadyCancelled", job_id, cause)

    @classmethod
    def from_handler_missing(cls, job_id: str | None, job_type: str) -> JobError:
        """No handler is registered for the job's type."""
        return cls("HandlerMissing", job_id, {"type": job_type})

    @classmethod
    def from_validation(cls, job_id: str | None, cause: object) -> JobError:
        """The input is invalid; nothing was stored."""
        return cls("Validation", job_id, cause)

    @classmethod
    def from_processing(cls, job_id: str | None, cause: object) -> JobError:
        """The handler failed; the job will be retried if attempts remain."""
        return cls("Processing", job_id, cause)

    @classmethod
    def from_max_retries(cls, job_id: str | None, cause: object) -> JobError:
        """Every attempt failed; the job is dead-lettered."""
        return cls("MaxRetries", job_id, cause)

    @classmethod
    def from_runner_unavailable(cls, job_id: str | None, cause: object = None) -> JobError:
        """No runner could take the work."""
        return cls("RunnerUnavailable", job_id, cause)

    @classmethod
    def from_timeout(cls, job_id: str | None, cause: object = None) -> JobError:
        """The handler, or a wait, ran out of time."""
        return cls("Timeout", job_id, cause)


def _describe(reason: str, job_id: str | None, cause: object) -> str:
    subject = f"job {job_id}" if job_id else "job"
    detail = f": {cause}" if cause is not None else ""
    texts = {
        "NotFound": f"{subject} not found",
        "AlreadyCancelled": f"{subject} is already cancelled or finished",
        "HandlerMissing": f"no handler registered for {subject}{detail}",
        "Validation": f"invalid {subject}{detail}",
        "Processing": f"{subject} failed{detail}",
        "MaxRetries": f"{subject} failed after its last attempt{detail}",
        "RunnerUnavailable": f"no runner available for {subject}{detail}",
        "Timeout": f"{subject} timed out{detail}",
    }
    return texts[reason]


class RunnerLockedError(RuntimeError):
    """Another process already runs jobs on this embedded (SQLite) database: start this one
    with ``runner=False`` to submit and read only, or stop the other runner first."""
