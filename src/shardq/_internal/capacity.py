"""Weighted sharing of a runner's capacity between priorities (stride scheduling)."""

from __future__ import annotations

from collections.abc import Sequence


class WeightedPicker:
    """Chooses which priority starts the next job.

    Each priority advances a virtual clock by ``1/weight`` per job it starts; the one with the
    earliest clock among those with work goes next. Busy priorities thus share starts in
    proportion to their weights, and an idle priority's share goes to the others
    (work-conserving). A priority that becomes busy again resumes at the current virtual time,
    so it neither starves nor gets a burst of credit from its idle time.
    """

    __slots__ = ("_pass", "_stride", "_vtime")

    def __init__(self, weights: Sequence[int]) -> None:
        if not weights or any(w <= 0 for w in weights):
            raise ValueError("weights must be positive")
        self._stride = [1.0 / w for w in weights]
        self._pass = [0.0] * len(weights)
        self._vtime = 0.0

    def pick(self, has_work: Sequence[bool]) -> int:
        """The index of the priority to serve next; -1 when none has work."""
        best, best_pass = -1, 0.0
        for i, busy in enumerate(has_work):
            if not busy:
                continue
            p = self._pass[i]
            if p < self._vtime:
                p = self._pass[i] = self._vtime
            if best < 0 or p < best_pass:
                best, best_pass = i, p
        if best >= 0:
            self._vtime = best_pass
            self._pass[best] = best_pass + self._stride[best]
        return best
