from __future__ import annotations

import random

import pytest

from shardq.retry import RetryPolicy


def test_seed_schedule_is_exponential_from_100ms_and_capped_at_30s() -> None:
    policy = RetryPolicy(jitter=0)
    assert [policy.delay(a) for a in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert policy.delay(20) == 30.0
    assert policy.delay(10_000) == 30.0


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = RetryPolicy(rng=random.Random(1))
    delays = [policy.delay(3) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 100


def test_retries_stop_at_max_attempts_and_on_terminal_errors() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, 3, terminal=False) is not None
    assert policy.next_delay(3, 3, terminal=False) is None
    assert policy.next_delay(1, 3, terminal=True) is None


@pytest.mark.parametrize(
    "kwargs", [{"base": 0}, {"base": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.5}]
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
