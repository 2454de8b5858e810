"""The cluster engine: PostgreSQL, with shard locks and LISTEN/NOTIFY."""

from .driver import PostgresDriver

__all__ = ["PostgresDriver"]
