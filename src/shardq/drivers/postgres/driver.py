"""PostgreSQL driver (not yet implemented)."""

from __future__ import annotations


class PostgresDriver:
    """Placeholder until the cluster engine lands; refuses to open."""

    announces_finished = True

    def __init__(self, url: str, *, runner: bool) -> None:
        raise NotImplementedError("the PostgreSQL engine is not available yet")
