from __future__ import annotations

import pytest

from shardq import JobError


@pytest.mark.parametrize("reason", ["Validation", "HandlerMissing", "AlreadyCancelled", "NotFound"])
def test_terminal_reasons(reason: str) -> None:
    e = JobError(reason)  # type: ignore[arg-type]
    assert e.is_terminal and not e.is_transient


@pytest.mark.parametrize("reason", ["Timeout", "RunnerUnavailable"])
def test_transient_reasons(reason: str) -> None:
    e = JobError(reason)  # type: ignore[arg-type]
    assert e.is_transient and not e.is_terminal


def test_constructors_carry_job_id_and_cause() -> None:
    e = JobError.from_handler_missing("42", "email.send")
    assert (e.reason, e.job_id, e.cause) == ("HandlerMissing", "42", {"type": "email.send"})
    assert "42" in str(e)
    assert not JobError.from_processing("1", "boom").is_terminal


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown JobError reason"):
        JobError("Oops")  # type: ignore[arg-type]
