"""Property tests of the Python API: whatever a caller passes (any Unicode, lone surrogates
included, huge and deep values, wrong types) and whatever a handler returns or raises, every
call either works or raises ``JobError``, and everything stored reads back afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardq import Config, JobError, JobService, RetryPolicy
from shardq.models import PRIORITIES, STATUSES, JobPayload

from ..conftest import create_pg_database, drop_pg_database, require_postgres

T = TypeVar("T")
#: Examples per property and engine (PostgreSQL's round trips are slower).
EXAMPLES = {"sqlite": 150, "postgres": 60}

# Every code point, surrogates too (st.characters() leaves them out by default).
CHARS = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.just("\x00"))
TEXT = st.text(CHARS, max_size=20)
HUGE = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64, float("nan"), float("inf"), -0.0]),
)
WRONG = st.sampled_from([object(), {1, 2}, b"bytes", bytearray(b"x"), 1j, ..., print, (1, 2)])
SCALARS = st.none() | st.booleans() | HUGE | TEXT
KEYS = TEXT | st.integers() | st.booleans() | st.none() | st.floats()
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
    ),
    max_leaves=16,
)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


PAYLOADS = st.one_of(
    JSONISH,
    st.integers(min_value=0, max_value=3000).map(_nested),
    st.lists(JSONISH, max_size=3),  # a batch
    WRONG,
    st.dictionaries(TEXT, WRONG, min_size=1, max_size=2),
)
NAMES = st.one_of(TEXT, st.none(), HUGE, WRONG, st.sampled_from(["t", "k", " ", "x" * 300]))
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.sampled_from(PRIORITIES) | NAMES,
        "dedupe_key": NAMES,
        "max_attempts": st.integers(min_value=-2, max_value=1002) | HUGE | NAMES,
        "key": NAMES,
        "timeout": st.sampled_from([0.5, 30]) | HUGE | NAMES,
        "delay": st.sampled_from([0, 0.001]) | HUGE | NAMES,
        "duration": st.sampled_from(["short", "long"]) | NAMES,
    },
)
EXAMPLE_SETTINGS = settings(deadline=None, database=None)


class Api:
    """One started JobService on a private event loop, for synchronous hypothesis tests."""

    def __init__(self, engine: str, url: str) -> None:
        self.examples = EXAMPLES[engine]
        self.loop = asyncio.new_event_loop()
        self.jobs = JobService(
            config=Config(database_url=url, retry=RetryPolicy(base=0.001, cap=0.002, jitter=0)),
        )
        self.run(self.jobs.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T | JobError:
        """Run one API call: its result, or the JobError it raised (anything else fails)."""
        try:
            return self.run(make())
        except JobError as e:
            str(e).encode("utf-8")  # its message can be printed and sent anywhere
            return e

    def close(self) -> None:
        self.run(self.jobs.stop())
        self.loop.close()

    def check_everything_reads_back(self) -> int:
        """Every stored job and dead letter reads back through status, list_jobs and
        dead_letters as strict JSON in UTF-8; the number of jobs read."""
        seen = 0
        before: str | None = None
        while page := self.run(self.jobs.list_jobs(limit=1000, before=before)):
            for job in page:
                _strict_json(job.to_dict())
                _strict_json(self.run(self.jobs.status(job.id)).to_dict())
            seen += len(page)
            before = page[-1].id
        for dead in self.run(self.jobs.dead_letters(limit=1000)):
            _strict_json(dead.to_dict())
            _strict_json(self.run(self.jobs.dead_letter(dead.id)).to_dict())
        return seen


def _strict_json(value: Any) -> None:
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


@pytest.fixture(params=["sqlite", "postgres"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """A fresh database on each engine: its engine's name and URL."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    require_postgres()
    url = await create_pg_database()
    try:
        yield "postgres", url
    finally:
        await drop_pg_database(url)


@pytest.fixture
def api(database: tuple[str, str]) -> Iterator[Api]:
    api = Api(*database)
    try:
        yield api
    finally:
        api.close()


def test_submit_of_anything_stores_readable_jobs_or_raises_job_error(
    api: Api,
) -> None:
    stored = 0

    @settings(EXAMPLE_SETTINGS, max_examples=api.examples)
    @given(job_type=NAMES | st.just("t"), payload=PAYLOADS, options=OPTIONS)
    def submit(job_type: Any, payload: Any, options: dict[str, Any]) -> None:
        nonlocal stored
        out = api.call(lambda: api.jobs.submit(job_type, payload, **options))
        if isinstance(out, JobError):
            assert out.reason == "Validation", out
            return
        ids = out if isinstance(out, list) else [out]
        assert all(isinstance(i, str) for i in ids)
        for job_id in ids:
            _strict_json(api.run(api.jobs.status(job_id)).to_dict())
        stored += len(ids)

    submit()
    assert api.check_everything_reads_back() <= stored


def test_submit_many_and_reads_of_anything_raise_only_job_errors(api: Api) -> None:
    @settings(EXAMPLE_SETTINGS, max_examples=api.examples)
    @given(
        spec=st.builds(
            JobPayload,
            type=NAMES | st.just("t"),
            payload=JSONISH,
            priority=st.sampled_from(PRIORITIES) | NAMES,
            dedupe_key=NAMES,
            max_attempts=st.integers(min_value=1, max_value=5) | HUGE | NAMES,
            duration=st.sampled_from(["short", "long"]) | NAMES,
            batch_id=NAMES,
            key=NAMES,
            timeout=NAMES,
        ),
        delay=st.just(0) | HUGE | NAMES,
        ident=NAMES | st.integers(),
        status=st.sampled_from(STATUSES) | NAMES,
        since=NAMES,
    )
    def calls(spec: Any, delay: Any, ident: Any, status: Any, since: Any) -> None:
        jobs = api.jobs
        api.call(lambda: jobs.submit_many([spec], delay=delay))
        api.call(lambda: jobs.submit_many(spec))
        for read in (jobs.status, jobs.cancel, jobs.replay, jobs.dead_letter):
            out = api.call(lambda read=read: read(ident))  # type: ignore[misc]
            assert not isinstance(out, JobError) or out.reason in ("NotFound", "AlreadyCancelled")
        api.call(lambda: jobs.wait(ident, timeout=since))
        listed = api.call(
            lambda: jobs.list_jobs(
                status=status, type=ident, key=ident, created_after=since, created_before=since
            )
        )
        assert isinstance(listed, list | JobError)
        api.call(lambda: jobs.dead_letters(limit=since, before=ident))

    calls()
    api.check_everything_reads_back()


_OUTCOMES: dict[int, Any] = {}


class _Raise:
    """A handler outcome: raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _exceptions() -> st.SearchStrategy[BaseException]:
    return st.one_of(
        st.builds(ValueError, TEXT),
        st.builds(RuntimeError, st.text(CHARS, max_size=5000)),
        st.builds(lambda t: JobError.from_validation(None, t), TEXT),
        st.builds(lambda t: JobError.from_processing(t, t), TEXT),
        st.builds(KeyError, JSONISH),
    )


def test_whatever_a_handler_returns_or_raises_ends_in_a_readable_outcome(
    api: Api,
) -> None:
    jobs = api.jobs

    @jobs.handler("act")
    async def act(payload: dict[str, int]) -> Any:
        outcome = _OUTCOMES[payload["n"]]
        if isinstance(outcome, _Raise):
            raise outcome.error
        return outcome

    counter = iter(range(1_000_000))

    @settings(EXAMPLE_SETTINGS, max_examples=api.examples // 2)
    @given(
        outcome=JSONISH
        | st.integers(min_value=60, max_value=3000).map(_nested)
        | WRONG
        | _exceptions().map(_Raise)
    )
    def run(outcome: Any) -> None:
        n = next(counter)
        _OUTCOMES[n] = outcome
        job_id = api.run(jobs.submit("act", {"n": n}, max_attempts=2))
        st_ = api.run(jobs.wait(job_id, timeout=30))
        assert st_.status in ("complete", "failed"), st_
        _strict_json(st_.to_dict())
        if st_.status == "failed":
            assert st_.error

    run()
    assert api.check_everything_reads_back() >= 1
    # The runner goes on: a plain job after all of them still runs.
    _OUTCOMES[-1] = "fine"
    done = api.run(jobs.wait(api.run(jobs.submit("act", {"n": -1})), timeout=30))
    assert done.result == "fine"
