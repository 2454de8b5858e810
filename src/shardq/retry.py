"""The retry schedule as a value: when to try a failed job again, and when to stop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential, jittered back-off: ``base * factor**(attempt-1)``, capped at ``cap``.

    ``jitter`` is the fraction of the delay that is randomised ("equal jitter": the delay is
    drawn uniformly from ``[d*(1-jitter), d]``), which spreads retries of jobs that failed
    together. The seed's schedule: from 100 ms, doubling, capped at 30 s.
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("retry base must be > 0 and cap >= base")
        if self.factor < 1:
            raise ValueError("retry factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be within 0..1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        # Cap the exponent first so large attempt numbers cannot overflow.
        raw = self.base * self.factor ** min(attempt - 1, 64)
        d = min(raw, self.cap)
        return d - d * self.jitter * self.rng.random()

    def next_delay(self, attempt: int, max_attempts: int, terminal: bool) -> float | None:
        """The delay before the next attempt, or None when the job must stop retrying."""
        if terminal or attempt >= max_attempts:
            return None
        return self.delay(attempt)
