"""A dependency-free progress bar for long CLI work."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Draws ``[####----] done/total  rate/s`` on a terminal; on a pipe, a line per 10%."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, width: int = 30
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int, extra: str = "") -> None:
        """Show ``done`` of ``total``; redraws at most 20 times a second."""
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw < 0.05 and done < self.total:
                return
            self._last_draw = now
            filled = int(self.width * done / self.total)
            rate = done / max(now - self._start, 1e-9)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"\r{self.label} [{bar}] {done}/{self.total}  {rate:,.0f}/s {extra}"
            self.stream.write(line.ljust(100)[:120])
            self.stream.flush()
        else:
            decile = 10 * done // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{self.label}: {done}/{self.total} {extra}\n")
                self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
