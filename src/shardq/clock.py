"""Time, as every part of shardq reads it: one injected ``Clock`` per ``JobService``.

Wall time (Unix milliseconds) is what storage records and compares across processes: due
times, history, retention. Monotonic time (seconds) measures intervals within one process:
idle mailboxes, hand-over deadlines, run times. Waiting (``sleep``, ``call_later``) goes
through the clock too, so that a ``FakeClock`` moves a whole service through minutes or days
at once in a test, without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback scheduled by ``Clock.call_later``."""

    def cancel(self) -> None:
        """Do not call it (no effect once it has run)."""


class Clock(Protocol):
    """Where a service reads the time and waits for it."""

    def now_ms(self) -> int:
        """Wall time: Unix time in milliseconds."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never steps back."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (0 only lets other tasks run)."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` on the running event loop after ``seconds`` of this clock."""


class SystemClock:
    """The real time of this machine, waited for on the running event loop."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


#: The clock of services given none.
SYSTEM_CLOCK = SystemClock()


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to (``advance``), for tests.

    Sleepers and timers whose time has come run when ``advance`` reaches it, in time order;
    ``advance`` then lets the event loop run them before it returns. Wall and monotonic time
    move together. Everything else (I/O, storage) runs in real time: what a timer starts may
    still be talking to storage when ``advance`` returns, so tests wait for its effect.
    """

    def __init__(self, now_ms: int = 1_767_225_600_000) -> None:
        self._wall_ms = now_ms
        self._mono = 0.0
        self._seq = itertools.count()
        self._due: list[tuple[float, int, _FakeTimer]] = []

    def now_ms(self) -> int:
        return self._wall_ms + int(self._mono * 1000)

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer(callback)
        if seconds <= 0:
            asyncio.get_running_loop().call_soon(self._fire, timer)
        else:
            heapq.heappush(self._due, (self._mono + seconds, next(self._seq), timer))
        return timer

    @property
    def pending(self) -> int:
        """Sleepers and timers waiting for this clock."""
        return sum(1 for _, _, t in self._due if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running what falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        end = self._mono + seconds
        while self._due and self._due[0][0] <= end:
            at, _, timer = heapq.heappop(self._due)
            self._mono = max(self._mono, at)
            self._fire(timer)
            # Let what the callback woke run (and arm its next timer) before going on.
            for _ in range(3):
                await asyncio.sleep(0)
        self._mono = end
        for _ in range(3):
            await asyncio.sleep(0)

    @staticmethod
    def _fire(timer: _FakeTimer) -> None:
        if not timer.cancelled:
            timer.cancelled = True
            timer.callback()
