"""The contract suite: every test here runs once per storage engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shardq import Clock, Config, JobService, RetryPolicy

#: Retries fast enough for tests, without jitter so schedules can be asserted.
FAST_RETRY = RetryPolicy(base=0.01, cap=0.05, jitter=0)

ServiceFactory = Callable[..., JobService]


@pytest.fixture
def make_service(database_url: str) -> ServiceFactory:
    """Build a JobService on this test's fresh database; settings override Config fields,
    ``clock`` replaces the real time."""

    def make(*, runner: bool = True, clock: Clock | None = None, **settings: Any) -> JobService:
        settings.setdefault("retry", FAST_RETRY)
        settings.setdefault("prune_interval", 3600.0)
        config = Config(database_url=database_url, **settings)
        return JobService(config=config, runner=runner, clock=clock)

    return make
