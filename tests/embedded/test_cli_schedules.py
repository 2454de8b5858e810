"""``shardq schedules list|add|remove|pause|resume`` and ``shardq pause|resume``, on real
SQLite and PostgreSQL: what they store and print, and bad input as exit status 2 with one
line on stderr and nothing changed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from shardq import JobService
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


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def listed(cli: Any) -> list[dict[str, Any]]:
    code, out, _ = cli("--json", "schedules", "list")
    assert code == 0
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_add_list_change_and_remove(cli: Any) -> None:
    code, out, err = cli(
        "schedules",
        "add",
        "report.daily",
        "--type",
        "report.build",
        "--cron",
        "0 6 * * *",
        "--tz",
        "Europe/Berlin",
        "--payload",
        '{"kind": "daily"}',
        "--misfire",
        "all",
    )
    assert code == 0 and err == ""
    assert out.startswith("schedule report.daily: 0 6 * * * (Europe/Berlin) submits report.build")
    code, out, _ = cli("--json", "schedules", "add", "beat", "--type", "echo", "--every", "2.5")
    beat = json.loads(out)
    assert (beat["every"], beat["cron"], beat["tz"], beat["paused"]) == (2.5, None, "UTC", False)

    code, out, _ = cli("schedules", "list")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:4] == ["NAME", "WHEN", "TZ", "TYPE"]
    assert [r.split()[0] for r in rows] == ["beat", "report.daily"]
    assert "every 2.5s" in rows[0] and "Europe/Berlin" in rows[1] and rows[1].endswith("no")
    [_, daily] = listed(cli)
    assert daily["payload"] == {"kind": "daily"} and daily["misfire"] == "all"
    assert daily["next_tick"] is not None

    # add on an existing name changes it
    code, out, _ = cli("schedules", "add", "report.daily", "--type", "echo", "--every", "60")
    assert code == 0 and "every 60s (UTC) submits echo" in out
    assert [(s["cron"], s["every"]) for s in listed(cli)] == [(None, 2.5), (None, 60.0)]

    code, out, _ = cli("schedules", "remove", "beat")
    assert code == 0 and out.strip() == "schedule beat removed"
    code, out, _ = cli("--json", "schedules", "remove", "report.daily")
    assert json.loads(out) == {"name": "report.daily", "removed": True}
    code, out, _ = cli("schedules", "list")
    assert code == 0 and out.strip() == "no schedules"


BAD: list[tuple[list[str], str]] = [
    (["schedules", "add", "n", "--type", "t", "--cron", "61 * * * *"], "invalid cron expression"),
    (["schedules", "add", "n", "--type", "t", "--cron", "nope"], "invalid cron expression"),
    (
        ["schedules", "add", "n", "--type", "t", "--cron", "0 6 * * *", "--tz", "Mars/Base"],
        "unknown time zone 'Mars/Base'",
    ),
    (["schedules", "add", "n", "--type", "t", "--every", "0"], "every must be more than 0"),
    (["schedules", "add", "n", "--type", "t", "--every", "-1"], "every must be more than 0"),
    (["schedules", "add", "n", "--type", "t", "--every", "nan"], "every must be more than 0"),
    (["schedules", "add", "n", "--type", "t", "--every", "soon"], "invalid float value"),
    (
        ["schedules", "add", "n", "--type", "t", "--every", "5", "--cron", "* * * * *"],
        "not allowed with argument",
    ),
    (["schedules", "add", "n", "--type", "t"], "one of the arguments --cron --every is required"),
    (["schedules", "add", "n", "--every", "5"], "--type"),
    (["schedules", "add", " ", "--type", "t", "--every", "5"], "schedule name must be"),
    (
        ["schedules", "add", "n", "--type", "t", "--every", "5", "--payload", "{x"],
        "--payload: the JSON payload",
    ),
    (["schedules", "add", "n", "--type", "t", "--every", "5", "--key", ""], "key must be"),
    (["schedules", "add", "n", "--type", "t", "--every", "5", "--misfire", "x"], "invalid"),
    (["schedules", "remove", "nope"], "no schedule named 'nope'"),
    (["schedules", "pause", "nope"], "no schedule named 'nope'"),
    (["schedules", "resume", "nope"], "no schedule named 'nope'"),
    (["schedules"], "required: ACTION"),
    (["pause"], "one of the arguments --type --key is required"),
    (["resume", "--type", "a", "--key", "b"], "not allowed with argument"),
    (["pause", "--type", "  "], "job type must be a non-empty string"),
    (["pause", "--key", "k" * 256], "longer than 255"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    cli: Any, argv: list[str], needle: str
) -> None:
    assert cli("schedules", "add", "keep", "--type", "t", "--every", "30")[0] == 0
    assert cli("pause", "--key", "held")[0] == 0
    before = listed(cli)
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("shardq") and needle in line, line
    assert listed(cli) == before
    code, out, _ = cli("--json", "pause", "--key", "held")
    assert json.loads(out) == {"job_types": [], "keys": ["held"], "schedules": []}


def test_pause_and_resume_schedules_job_types_and_keys(cli: Any) -> None:
    cli("schedules", "add", "digest", "--type", "report.build", "--cron", "0 8 * * MON")
    code, out, _ = cli("schedules", "pause", "digest")
    assert code == 0 and out.strip() == "schedule digest paused"
    assert [s["paused"] for s in listed(cli)] == [True]
    assert cli("schedules", "list")[1].splitlines()[1].endswith("yes")
    code, out, _ = cli("--json", "schedules", "resume", "digest")
    assert json.loads(out) == {"name": "digest", "paused": False}
    assert [s["paused"] for s in listed(cli)] == [False]

    code, out, _ = cli("pause", "--type", "email.send")
    assert code == 0 and out.strip() == (
        "job type email.send paused; its jobs stay queued until 'shardq resume --type email.send'"
    )
    code, out, _ = cli("--json", "pause", "--key", "account:42")
    assert json.loads(out) == {"job_types": ["email.send"], "keys": ["account:42"], "schedules": []}
    code, out, _ = cli("resume", "--type", "email.send")
    assert code == 0 and out.strip() == "job type email.send resumed"
    code, out, _ = cli("--json", "resume", "--key", "account:42")
    assert json.loads(out) == {"job_types": [], "keys": [], "schedules": []}


def test_a_schedule_added_from_the_command_line_fires(cli: Any, database_url: str) -> None:
    """The runner (another service, as another process would be) hears of the change."""
    fired = threading.Event()
    jobs = JobService(database_url)

    @jobs.handler("echo")
    async def echo(p: Any) -> Any:
        return p

    with jobs:
        jobs.add_listener(lambda job_id, status: status == "complete" and fired.set())
        code, _, _ = cli("schedules", "add", "fast", "--type", "echo", "--every", "0.05")
        assert code == 0
        assert fired.wait(15)
    [s] = listed(cli)
    assert s["last_job_id"] is not None
    st = asyncio.run(_status(database_url, s["last_job_id"]))
    assert st.schedule == "fast" and st.status == "complete"


async def _status(url: str, job_id: str) -> Any:
    async with JobService(url, runner=False) as jobs:
        return await jobs.status(job_id)


@pytest.mark.parametrize(
    "argv",
    [
        ["schedules"],
        ["schedules", "list"],
        ["schedules", "add"],
        ["schedules", "remove"],
        ["schedules", "pause"],
        ["schedules", "resume"],
        ["pause"],
        ["resume"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: shardq {' '.join(argv)}" in out and "example" in out
