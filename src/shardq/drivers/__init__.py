"""Storage engines behind one interface: SQLite (embedded) and PostgreSQL (cluster)."""

from __future__ import annotations

from ..clock import SYSTEM_CLOCK, Clock
from .base import Driver


def connect(
    url: str,
    *,
    runner: bool,
    pool_size: int = 10,
    heartbeat: float = 1.0,
    handover_timeout: float = 30.0,
    clock: Clock = SYSTEM_CLOCK,
) -> Driver:
    """The driver for ``url`` (``sqlite:///path`` or ``postgresql://…``), not yet opened.

    ``runner`` says whether this process will run jobs (it then owns the wake-up endpoint).
    ``clock`` is the service's time. The other settings are PostgreSQL's (see ``Config``);
    SQLite has no use for them.
    """
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteDriver

        return SQLiteDriver(url, runner=runner)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresDriver

        driver: Driver = PostgresDriver(
            url,
            runner=runner,
            pool_size=pool_size,
            heartbeat=heartbeat,
            handover_timeout=handover_timeout,
            clock=clock,
        )
        return driver
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://…"
    )


__all__ = ["Driver", "connect"]
