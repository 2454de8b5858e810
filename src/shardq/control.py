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
