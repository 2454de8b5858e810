"""The fault suite's short run, on both engines: every check must hold.

A run takes about 15-20 s per engine on a 2-core machine. Deselect with ``-m 'not chaos'``;
reproduce a failure with the seed in its message: ``scripts/chaos --quick --engine E --seed N``.
"""

from __future__ import annotations

import os
import random

import pytest
from bench.chaos.cli import Options, run_engine, server_problem, summary
from bench.chaos.faults import KINDS

from tests.conftest import IN_CI

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(110)]


def quick(engine: str) -> Options:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    return Options(
        engine=engine,
        duration=12.0,
        seed=seed,
        runners=3,
        submitters=2,
        rate=100.0,
        concurrency=16,
        max_faults=13,
        mean_gap=1.0,
        settle_timeout=30.0,
        keep=False,
    )


async def _run_and_check(opts: Options) -> None:
    result = await run_engine(opts)
    report = summary(result)
    print(report)
    where = f"reproduce: scripts/chaos --quick --engine {opts.engine} --seed {opts.seed}\n"
    failed = [name for name, c in result["checks"].items() if not c["ok"]]
    assert not failed, f"{where}{report}"
    figures = result["figures"]
    assert set(figures["faults"]) == set(KINDS[opts.engine]), where + report
    assert figures["jobs"] > 500, where + report
    assert figures["executions"] >= figures["jobs"], where + report


async def test_sqlite_under_faults() -> None:
    await _run_and_check(quick("sqlite"))


@pytest.mark.postgres
async def test_postgres_under_faults() -> None:
    problem = server_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true but a private PostgreSQL server cannot start: {problem}")
        pytest.skip(f"SKIPPING the PostgreSQL fault run: {problem}")
    await _run_and_check(quick("postgres"))
