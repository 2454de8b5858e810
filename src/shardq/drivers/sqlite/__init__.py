"""The embedded engine: SQLite in WAL mode, one runner per database file."""

from .driver import SQLiteDriver

__all__ = ["SQLiteDriver"]
