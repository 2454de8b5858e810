"""What a handler raises to steer its job other than by succeeding or failing."""

from __future__ import annotations

import math

#: The longest a job may be put off at once (a year, in seconds).
MAX_SNOOZE = 366 * 86_400.0


class Snooze(Exception):
    """Raised inside a handler: run this job again in ``seconds``, without using an attempt.

    The job goes back to ``queued`` due ``seconds`` from now, its history shows a
    ``snoozed`` entry, and a keyed job keeps its key's head (nothing of its key overtakes it).
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Snooze takes a number of seconds, got {type(seconds).__name__}")
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SNOOZE):
            raise ValueError(f"Snooze takes 0..{MAX_SNOOZE:g} seconds, got {seconds!r}")
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = float(seconds)


class Throttled(Exception):
    """Raised inside a handler: the service it calls pushed back. The job goes back to
    ``queued`` due ``retry_after`` seconds from now without using an attempt (its history
    shows ``throttled``), and holds back its key for that long, or, for a job without a key,
    every job of its type, cluster-wide.
    """

    def __init__(self, retry_after: float) -> None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
            raise TypeError(
                f"Throttled takes a number of seconds, got {type(retry_after).__name__}"
            )
        if not (math.isfinite(retry_after) and 0 <= retry_after <= MAX_SNOOZE):
            raise ValueError(f"Throttled takes 0..{MAX_SNOOZE:g} seconds, got {retry_after!r}")
        super().__init__(f"throttled for {retry_after:g} s")
        self.retry_after = float(retry_after)
