"""One frozen, validated configuration value for a JobService; the environment is read only
at the edge (``Config.from_env``)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from ._internal.validation import show
from .retry import RetryPolicy
from .sharding import DEFAULT_SHARDS

ENV_URL = "SHARDQ_DATABASE_URL"
DEFAULT_URL = "sqlite:///shardq.db"


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one JobService. Every field, by what it governs:

    Storage and identity:

    - ``database_url``: ``sqlite:///path.db`` (embedded) or ``postgresql://…`` (cluster).
    - ``shards``: how many shards entities hash to; every process of a deployment must agree.
    - ``machine_id`` (0..1023): stamped into the ids this process makes; random by default.
    - ``max_payload_bytes``: the largest encoded payload a submit accepts.
    - ``default_max_attempts``: attempts of a job submitted without ``max_attempts``.
    - ``retry``: the back-off between attempts (``RetryPolicy``).

    The runner:

    - ``concurrency``: handlers run at once, split between priorities by their weights;
      critical jobs may take one slot in sixteen beyond them.
    - ``ready_window``: queued jobs per priority held in memory (more stay in storage).
    - ``mailbox_capacity``: jobs one keyed entity holds in memory (never the jobs stored).
    - ``max_idle``: seconds an empty mailbox lives on before it is evicted.
    - ``drain_timeout``: seconds a stopping runner lets running handlers finish.
    - ``handler_grace``: seconds after a runner last had a handler for a job type during
      which a runner without one lets that type's jobs wait instead of dead-lettering them
      (``HandlerMissing``): a rolling deploy that adds a type loses nothing.

    Retention (seconds), pruned by the runner every ``prune_interval`` seconds,
    ``prune_batch`` rows per transaction:

    - ``retention``: how long finished jobs are kept (and their dedupe keys held).
    - ``dlq_retention``: how long dead letters are kept.

    PostgreSQL only (SQLite has no use for them):

    - ``pool_size``: connections of the process's pool (beside its listening connection
      and, on a runner, its lock session).
    - ``heartbeat``: seconds between a runner's renewals of its presence and rebalances, so
      about how long a runner that vanished without a word keeps its shards.
    - ``handover_timeout``: seconds a shard being handed over lets its running jobs finish
      before they are interrupted and run again on the new owner.
    """

    database_url: str = DEFAULT_URL
    concurrency: int = 64
    shards: int = DEFAULT_SHARDS
    mailbox_capacity: int = 100
    max_idle: float = 300.0
    max_payload_bytes: int = 1_048_576
    retention: float = 7 * 86_400.0
    dlq_retention: float = 30 * 86_400.0
    prune_interval: float = 60.0
    prune_batch: int = 500
    drain_timeout: float = 30.0
    handler_grace: float = 600.0
    ready_window: int = 10_000
    default_max_attempts: int = 3
    pool_size: int = 10
    heartbeat: float = 1.0
    handover_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    machine_id: int = field(default_factory=lambda: secrets.randbelow(1024))

    def __post_init__(self) -> None:
        _require(isinstance(self.database_url, str), "database_url must be a string")
        for name in _INTEGERS:
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53,
                f"{name} must be an integer, got {show(value)}",
            )
        for name in _SECONDS:
            value = getattr(self, name)
            _require(
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and -_MAX_SECONDS <= value <= _MAX_SECONDS,  # NaN fails it too
                f"{name} must be a finite number of seconds, got {show(value)}",
            )
        _require(isinstance(self.retry, RetryPolicy), "retry must be a RetryPolicy")
        _require(bool(self.database_url), "database_url must not be empty")
        _require(self.concurrency >= 1, "concurrency must be at least 1")
        _require(self.shards >= 1, "shards must be at least 1")
        _require(self.mailbox_capacity >= 1, "mailbox_capacity must be at least 1")
        _require(self.max_idle > 0, "max_idle must be positive")
        _require(self.max_payload_bytes >= 64, "max_payload_bytes must be at least 64")
        _require(self.retention > 0 and self.dlq_retention > 0, "retention must be positive")
        _require(
            self.prune_interval > 0 and self.prune_batch >= 1, "prune settings must be positive"
        )
        _require(self.drain_timeout >= 0, "drain_timeout must not be negative")
        _require(self.handler_grace > 0, "handler_grace must be positive")
        _require(self.ready_window >= 16, "ready_window must be at least 16")
        _require(
            1 <= self.default_max_attempts <= 1000, "default_max_attempts must be within 1..1000"
        )
        _require(0 <= self.machine_id < 1024, "machine_id must be within 0..1023")
        _require(self.pool_size >= 2, "pool_size must be at least 2")
        _require(0.05 <= self.heartbeat <= 60, "heartbeat must be 0.05..60 seconds")
        _require(self.handover_timeout >= 0, "handover_timeout must not be negative")

    def with_(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, url: str | None = None, **changes: Any) -> Config:
        """A config whose URL is ``url``, else ``$SHARDQ_DATABASE_URL``, else the SQLite default."""
        return cls(database_url=url or os.environ.get(ENV_URL) or DEFAULT_URL, **changes)


_INTEGERS = (
    "concurrency", "shards", "mailbox_capacity", "max_payload_bytes", "prune_batch",
    "ready_window", "default_max_attempts", "pool_size", "machine_id",
)  # fmt: skip
_SECONDS = (
    "max_idle", "retention", "dlq_retention", "prune_interval", "drain_timeout", "heartbeat",
    "handler_grace",
    "handover_timeout",
)  # fmt: skip
#: Bound of every setting in seconds (about 31,700 years), far inside 64-bit milliseconds.
_MAX_SECONDS = 1e12


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
