"""Registering the handlers of a ``JobService``, with their limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._internal.attempts import Handler
from ._internal.validation import check_name
from .drivers.base import LimitRecord
from .errors import JobError
from .flow import Rate, limit_record

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["HandlerSupport"]


class HandlerSupport:
    """The handler registry of ``JobService``."""

    _handlers: dict[str, Handler]
    _declared_limits: dict[str, LimitRecord]

    def register_handler(
        self,
        job_type: str,
        fn: Handler,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = None,
        rate: Rate | None = None,
        key_rate: Rate | None = None,
    ) -> None:
        """Run ``fn(payload)`` for jobs of ``job_type``; async functions are awaited, sync ones
        run in a thread pool. The return value (JSON) becomes the job's result.

        Limits (``shardq.flow``): at most ``concurrency`` jobs of the type running across
        the cluster, ``key_concurrency`` per key (1, the default, runs a key's jobs one
        after another), and starts at most at ``rate`` per type and ``key_rate`` per key.
        They are stored when a runner of this service starts."""
        check_name("job type", job_type)
        if not callable(fn):
            raise JobError.from_validation(None, f"handler for {job_type!r} is not callable")
        limits = limit_record(job_type, concurrency, key_concurrency, rate, key_rate)
        self._handlers[job_type] = fn
        if limits != LimitRecord(job_type):
            self._declared_limits[job_type] = limits
        else:
            self._declared_limits.pop(job_type, None)

    def handler(
        self,
        job_type: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = None,
        rate: Rate | None = None,
        key_rate: Rate | None = None,
    ) -> Callable[[F], F]:
        """Decorator form of ``register_handler``."""

        def register(fn: F) -> F:
            self.register_handler(
                job_type,
                fn,
                concurrency=concurrency,
                key_concurrency=key_concurrency,
                rate=rate,
                key_rate=key_rate,
            )
            return fn

        return register

    @property
    def handlers(self) -> dict[str, Handler]:
        """The registered handlers by job type (a copy)."""
        return dict(self._handlers)
