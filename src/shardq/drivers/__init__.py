"""Storage engines behind one interface: SQLite (embedded) and PostgreSQL (cluster)."""

from __future__ import annotations

from .base import Driver


def connect(url: str, *, runner: bool) -> Driver:
    """The driver for ``url`` (``sqlite:///path`` or ``postgresql://…``), not yet opened.

    ``runner`` says whether this process will run jobs (it then owns the wake-up endpoint).
    """
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteDriver

        return SQLiteDriver(url, runner=runner)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresDriver

        driver: Driver = PostgresDriver(url, runner=runner)
        return driver
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://…"
    )


__all__ = ["Driver", "connect"]
