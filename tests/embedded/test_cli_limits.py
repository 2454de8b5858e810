"""``shardq limits [list]`` and ``shardq limits set``, on real SQLite and PostgreSQL: what they
store and print, that a running runner applies them, and bad input as exit status 2 with one
line on stderr and nothing changed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shardq import JobService, Rate
from shardq.cli import build_parser, main

Run = tuple[int, str, str]


@pytest.fixture
def cli(database_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """``cli(*argv)``: run the command line on this test's database; (status, out, err)."""

    def run(*argv: str) -> Run:
        code = main(["--database-url", database_url, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    yield run


@pytest.fixture
def known(database_url: str) -> str:
    """A database where a runner has handled ``api.call`` (so its limits may be set)."""
    jobs = JobService(database_url)

    @jobs.handler("api.call")
    async def call(p: Any) -> Any:
        return p

    with jobs:
        pass
    return database_url


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def listed(cli: Any) -> list[dict[str, Any]]:
    code, out, _ = cli("--json", "limits")
    assert code == 0
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def until(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return got


def test_set_list_and_remove(cli: Any, known: str) -> None:
    code, out, err = cli("limits")
    assert (code, out.strip(), err) == (0, "no job type has limits", "")

    code, out, err = cli("limits", "set", "api.call", "--concurrency", "20", "--rate", "100/60:20")
    assert code == 0 and err == ""
    header, row = out.splitlines()
    assert header.split()[:4] == ["TYPE", "RUNNING/CONC", "KEY", "CONC"]
    assert row.split()[:5] == ["api.call", "0/20", "-", "100/60s:20", "21.0/21"]

    # Limits not given stay; a rate's PER may carry the "s" the listing shows.
    code, out, _ = cli(
        "--json", "limits", "set", "api.call", "--key-concurrency", "3", "--key-rate", "5/0.5s"
    )
    shown = json.loads(out)
    assert (shown["concurrency"], shown["key_concurrency"]) == (20, 3)
    assert shown["rate"] == {"count": 100, "per": 60.0, "burst": 20}
    assert shown["key_rate"] == {"count": 5, "per": 0.5, "burst": 0}
    assert listed(cli) == [shown]
    code, out, _ = cli("limits", "list")
    assert code == 0 and out.splitlines()[1].split()[:6] == [
        "api.call",
        "0/20",
        "3",
        "100/60s:20",
        "21.0/21",
        "5/0.5s",
    ]

    # 'none' removes a limit; the others stay.
    code, out, _ = cli(
        "--json", "limits", "set", "api.call", "--concurrency", "none", "--rate", "NONE"
    )
    assert code == 0
    [row_now] = listed(cli)
    assert row_now == json.loads(out)
    assert (row_now["concurrency"], row_now["rate"], row_now["key_concurrency"]) == (None, None, 3)
    assert cli("limits")[1].splitlines()[1].split()[1:5] == ["-", "3", "-", "-"]


async def _limits(url: str) -> list[dict[str, Any]]:
    async with JobService(url, runner=False) as jobs:
        return [lim.to_dict() for lim in await jobs.limits()]


def test_the_listing_says_paused_and_throttled(cli: Any, known: str) -> None:
    assert cli("limits", "set", "api.call", "--rate", "10/1")[0] == 0
    assert cli("pause", "--type", "api.call")[0] == 0
    code, out, _ = cli("limits")
    assert code == 0 and out.splitlines()[1].split()[-2:] == ["yes", "-"]
    [row] = listed(cli)
    assert row["paused"] is True and row["throttled_until"] is None


BAD: list[tuple[list[str], str]] = [
    (["limits", "set", "api.call"], "give at least one of --concurrency, --key-concurrency"),
    (["limits", "set", "api.call", "--concurrency", "0"], "concurrency must be 1..1000000, got 0"),
    (["limits", "set", "api.call", "--concurrency", "1000001"], "concurrency must be 1..1000000"),
    (["limits", "set", "api.call", "--concurrency", "-3"], "give a positive integer or 'none'"),
    (["limits", "set", "api.call", "--concurrency", "2.5"], "give a positive integer or 'none'"),
    (["limits", "set", "api.call", "--key-concurrency", "many"], "argument --key-concurrency"),
    (["limits", "set", "api.call", "--rate", "0/1"], "Rate count must be 1..1000000, got 0"),
    (["limits", "set", "api.call", "--rate", "5/0"], "Rate per must be 0.001..86400 seconds"),
    (["limits", "set", "api.call", "--rate", "5/86401"], "Rate per must be 0.001..86400"),
    (["limits", "set", "api.call", "--rate", "5"], "give COUNT/PER[:BURST]"),
    (["limits", "set", "api.call", "--rate", "5/1:-2"], "give COUNT/PER[:BURST]"),
    (["limits", "set", "api.call", "--key-rate", "fast"], "argument --key-rate"),
    (
        ["limits", "set", "nobody.handles", "--concurrency", "1"],
        "unknown job type 'nobody.handles'",
    ),
    (["limits", "set", " ", "--concurrency", "1"], "job type must be a non-empty string"),
    (["limits", "set", "t" * 256, "--concurrency", "1"], "longer than 255"),
    (["limits", "set", "--concurrency", "1"], "the following arguments are required: TYPE"),
    (["limits", "unset"], "invalid choice: 'unset'"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    cli: Any, known: str, argv: list[str], needle: str
) -> None:
    assert cli("limits", "set", "api.call", "--concurrency", "7", "--key-rate", "3/2:1")[0] == 0
    before = listed(cli)
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("shardq") and needle in line, line
    assert listed(cli) == before


def test_a_running_runner_applies_a_limit_set_from_the_command_line(
    cli: Any, database_url: str
) -> None:
    """The runner (another service, as another process would be) holds the second job back
    once the command line has set a concurrency of 1, and says why."""
    gate = threading.Event()
    jobs = JobService(database_url)

    @jobs.handler("api.call")
    def call(p: Any) -> Any:
        gate.wait(30)
        return p

    with jobs:
        code, out, _ = cli("limits", "set", "api.call", "--concurrency", "1")
        assert code == 0, out
        first = jobs.submit_sync("api.call", {"n": 1})
        second = jobs.submit_sync("api.call", {"n": 2})
        assert isinstance(first, str) and isinstance(second, str)
        until(lambda: jobs.status_sync(first).status == "processing")
        held = until(lambda: jobs.status_sync(second).waiting)
        assert held == "waiting for a slot of api.call"
        assert jobs.status_sync(second).status == "queued"
        assert cli("limits")[1].splitlines()[1].split()[:2] == ["api.call", "1/1"]
        gate.set()
        until(lambda: jobs.status_sync(second).status == "complete")
    assert [(r["concurrency"], r["rate"]) for r in listed(cli)] == [(1, None)]


def test_a_limit_set_in_the_library_reads_the_same(cli: Any, known: str) -> None:
    async def put(url: str) -> None:
        async with JobService(url, runner=False) as jobs:
            await jobs.limit("api.call", rate=Rate(7, per=2.5, burst=1), key_concurrency=2)

    asyncio.run(put(known))
    assert listed(cli) == asyncio.run(_limits(known))
    row = cli("limits")[1].splitlines()[1].split()
    assert row[2:4] == ["2", "7/2.5s:1"] and row[4].endswith("/2")


@pytest.mark.parametrize("argv", [["limits"], ["limits", "list"], ["limits", "set"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: shardq {' '.join(argv)}" in out and "example" in out
