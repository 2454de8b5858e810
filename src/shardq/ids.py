"""Snowflake ids: 64-bit, time-ordered, unique across machines without coordination."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .clock import SYSTEM_CLOCK

#: Milliseconds since the Unix epoch of 2025-01-01T00:00:00Z, the Snowflake epoch.
EPOCH_MS = 1_735_689_600_000
MACHINE_BITS = 10
SEQUENCE_BITS = 12
MAX_MACHINE_ID = (1 << MACHINE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


class Snowflake:
    """A generator of Snowflake ids: ``(ms since 2025-01-01) << 22 | machine << 12 | sequence``.

    Ids from one generator strictly increase, even if the wall clock steps back; up to 4,096
    are issued per millisecond, after which the generator moves on to the next millisecond.
    Generators with different ``machine_id`` never collide. ``clock`` gives the wall time in
    Unix milliseconds (by default the system clock's, ``shardq.clock.SYSTEM_CLOCK.now_ms``).
    """

    __slots__ = ("_clock", "_last_ms", "_lock", "_machine", "_sequence")

    def __init__(self, machine_id: int, clock: Callable[[], int] | None = None) -> None:
        if not 0 <= machine_id <= MAX_MACHINE_ID:
            raise ValueError(f"machine_id must be within 0..{MAX_MACHINE_ID}, got {machine_id}")
        self._machine = machine_id
        self._last_ms = 0
        self._sequence = 0
        self._lock = threading.Lock()
        self._clock: Callable[[], int] = clock or SYSTEM_CLOCK.now_ms

    @property
    def machine_id(self) -> int:
        """The machine id stamped into every id of this generator."""
        return self._machine

    def next(self) -> int:
        """Return the next id."""
        return self.take(1)[0]

    def take(self, count: int) -> list[int]:
        """Return ``count`` consecutive, strictly increasing ids."""
        out: list[int] = []
        with self._lock:
            now = max(self._clock() - EPOCH_MS, self._last_ms)
            seq = self._sequence + 1 if now == self._last_ms else 0
            for _ in range(count):
                if seq > MAX_SEQUENCE:
                    now += 1
                    seq = 0
                out.append((now << 22) | (self._machine << SEQUENCE_BITS) | seq)
                seq += 1
            self._last_ms = now
            self._sequence = seq - 1
        return out


def timestamp_ms(snowflake: int) -> int:
    """The Unix time in milliseconds at which ``snowflake`` was issued."""
    return (snowflake >> 22) + EPOCH_MS


def machine_of(snowflake: int) -> int:
    """The machine id stamped into ``snowflake``."""
    return (snowflake >> SEQUENCE_BITS) & MAX_MACHINE_ID
