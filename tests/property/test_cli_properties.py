"""Property tests of the command line: whatever the arguments (any Unicode, lone surrogates
included, huge numbers, deep JSON), ``main`` returns an exit status, says what went wrong in
one line, never shows a traceback, and leaves every stored job readable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardq.cli import main
from shardq.models import PRIORITIES, STATUSES

SETTINGS = settings(max_examples=100, deadline=None, database=None)

# Every code point, surrogates too (the OS passes undecodable argv bytes as lone surrogates).
CHARS = st.one_of(st.characters(), st.characters(categories=["Cs"]))
TEXT = st.text(CHARS, max_size=24)
HUGE = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=1, max_value=500).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=500).map(lambda n: f"1e{n}"),
    st.sampled_from(["nan", "inf", "-inf", "-0", "0x10", "1_000", "١٢"]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(min_value=1, max_value=3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ("[{", "}]")]))
    return opener * depth + draw(st.sampled_from(["1", '"x"', ""])) + closer * depth


PAYLOADS = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True)),
    st.lists(JSON_VALUES, max_size=3).map(json.dumps),
    deep(),
    HUGE,
    TEXT,
)


def option(flag: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), values.map(lambda v: [flag, v]))


SUBMIT_OPTIONS = st.tuples(
    option("--priority", st.sampled_from(PRIORITIES) | TEXT),
    option("--key", TEXT),
    option("--dedupe-key", TEXT),
    option("--max-attempts", HUGE),
    option("--delay", st.sampled_from(["0", "0.5"]) | HUGE),
    option("--timeout", HUGE),
).map(lambda parts: [a for part in parts for a in part])

JOBS_OPTIONS = st.tuples(
    option("--status", st.sampled_from(STATUSES) | TEXT),
    option("--type", TEXT),
    option("--priority", st.sampled_from(PRIORITIES) | TEXT),
    option("--key", TEXT),
    option("--since", HUGE | TEXT | st.just("2020-01-01T00:00:00Z")),
    option("--until", HUGE | TEXT),
    option("--limit", HUGE),
    option("--before", HUGE | TEXT),
).map(lambda parts: [a for part in parts for a in part])


class Cli:
    """``main`` in this process against one database, checking every call's promises."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = ["--database-url", url]
        self.capsys = capsys
        self.err = ""

    def __call__(self, *argv: str) -> tuple[int, str]:
        code = main([*self.db, *argv])
        out, err = self.capsys.readouterr()
        self.err = err
        assert isinstance(code, int) and not isinstance(code, bool)
        assert "Traceback" not in out + err
        if code == 0:
            assert err == ""
        else:
            assert code in (1, 2) and out == "", (code, out, err)
            assert len(err.splitlines()) == 1 and err.startswith("shardq"), err
        return code, out

    def all_readable(self) -> int:
        """Every stored job, found by paging ``jobs``, is shown by ``status``; the count."""
        seen: list[str] = []
        before: list[str] = []
        while True:
            code, out = self("--json", "jobs", "--limit", "1000", *before)
            assert code == 0, self.err
            page = [row["id"] for row in json.loads(out)]
            seen += page
            if len(page) < 1000:
                break
            before = ["--before", page[-1]]
        for job_id in seen:
            code, out = self("--json", "status", job_id)
            assert code == 0, self.err
            assert json.loads(out)["id"] == job_id
        return len(seen)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    c = Cli(f"sqlite:///{tmp_path / 'jobs.db'}", capsys)
    assert c("migrate")[0] == 0
    return c


def positionals(*values: str) -> list[str]:
    """Values as positional arguments even when they start with '-'."""
    return ["--", *values]


def test_submit_with_any_arguments(cli: Cli) -> None:
    accepted: list[Any] = []

    @SETTINGS
    @given(job_type=TEXT, payload=PAYLOADS, options=SUBMIT_OPTIONS, dashdash=st.booleans())
    def check(job_type: str, payload: str, options: list[str], dashdash: bool) -> None:
        args = positionals(job_type, payload) if dashdash else [job_type, payload]
        code, out = cli("--json", "submit", *options, *args)
        if code == 0:
            data = json.loads(out)
            accepted.extend(data["ids"] if "ids" in data else [data["id"]])

    check()
    assert cli.all_readable() >= len(set(accepted))
    for job_id in set(accepted):
        assert cli("status", job_id)[0] == 0


def test_status_cancel_and_wait_with_any_id(cli: Cli) -> None:
    code, out = cli("submit", "t", "[1, 2]")
    assert code == 0

    @SETTINGS
    @given(
        command=st.sampled_from([["status"], ["cancel"], ["wait", "--timeout", "0"]]),
        job_id=TEXT | HUGE | st.sampled_from(out.split()),
    )
    def check(command: list[str], job_id: str) -> None:
        cli(*command, *positionals(job_id))

    check()
    assert cli.all_readable() == 2


def test_jobs_and_dlq_with_any_filters(cli: Cli) -> None:
    assert cli("submit", "t", '[{"a": 1}, {"b": "é"}]', "--key", "k")[0] == 0

    @SETTINGS
    @given(options=JOBS_OPTIONS, dlq=option("--limit", HUGE), dlq_id=TEXT | HUGE)
    def check(options: list[str], dlq: list[str], dlq_id: str) -> None:
        cli("jobs", *options)
        cli("dlq", "list", *dlq)
        cli("dlq", "show", *positionals(dlq_id))

    check()
    assert cli.all_readable() == 2
