"""The operator commands of the CLI: submit, jobs, wait, stats, runners and serve's checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shardq import JobService
from shardq.cli import build_parser, main
from shardq.cli.serve import check_bind, is_loopback


@pytest.fixture
def runner(sqlite_url: str) -> Iterator[JobService]:
    """A runner on its own event loop thread, as another process would be."""
    jobs = JobService(sqlite_url, concurrency=4)

    @jobs.handler("echo")
    def echo(p: Any) -> Any:
        return {"echo": p}

    with jobs:
        yield jobs


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_wait_jobs_stats(
    sqlite_url: str, runner: JobService, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", sqlite_url]
    code, out, _ = run(
        capsys, *db, "--json", "submit", "echo", '{"n": 1}', "--priority", "high", "--key", "k"
    )
    assert code == 0
    job_id = json.loads(out)["id"]

    code, out, _ = run(capsys, *db, "wait", job_id, "--timeout", "20")
    assert code == 0 and f"job {job_id}: complete" in out and '"echo": {"n": 1}' in out

    code, out, _ = run(capsys, *db, "submit", "echo", "[1, 2, 3]")
    ids = out.split()
    assert code == 0 and len(ids) == 3
    for i in ids:
        assert run(capsys, *db, "wait", i, "--timeout", "20")[0] == 0

    code, out, _ = run(capsys, *db, "jobs", "--priority", "high")
    assert code == 0 and job_id in out and "complete" in out and ids[0] not in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "TYPE"]
    code, out, _ = run(capsys, *db, "--json", "jobs", "--limit", "2")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [ids[2], ids[1]]
    code, out, _ = run(capsys, *db, "jobs", "--limit", "2")
    assert f"--before {ids[1]}" in out
    code, out, _ = run(capsys, *db, "jobs", "--since", "2999-01-01T00:00:00Z")
    assert out.strip() == "no jobs match"

    code, out, _ = run(capsys, *db, "--json", "stats")
    data = json.loads(out)
    assert data["by_status"]["complete"] == 4 and data["dead_letters"] == 0
    code, out, _ = run(capsys, *db, "stats")
    assert "complete" in out and "queued by priority" in out


def test_submit_refuses_bad_input(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database-url", sqlite_url]
    code, _, err = run(capsys, *db, "submit", "echo", "{not json")
    assert code == 1 and "not valid JSON" in err
    code, _, err = run(capsys, *db, "submit", "echo", "{}", "--max-attempts", "0")
    assert code == 1 and "Validation" in err
    code, out, _ = run(capsys, *db, "--json", "stats")
    assert sum(json.loads(out)["by_status"].values()) == 0


def test_wait_times_out_and_unknown_ids(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", sqlite_url]
    code, out, _ = run(capsys, *db, "submit", "echo", "{}", "--delay", "3600")
    code, _, err = run(capsys, *db, "wait", out.strip(), "--timeout", "0.2")
    assert code == 1 and "Timeout" in err
    code, _, err = run(capsys, *db, "wait", "12345")
    assert code == 1 and "NotFound" in err


def test_runners_without_a_server(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--database-url", sqlite_url, "migrate")[0] == 0
    code, out, _ = run(capsys, "--database-url", sqlite_url, "--json", "runners")
    data = json.loads(out)
    assert code == 0 and data["mode"] == "embedded" and data["shards"] > 0


def test_serve_refuses_a_public_address_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHARDQ_API_TOKEN", raising=False)
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0")
    assert code == 1 and "refusing to bind 0.0.0.0 without $SHARDQ_API_TOKEN" in err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    check_bind("0.0.0.0", "a-token")  # allowed with a token
    code, _, err = run(capsys, "serve", "--app", "x:y", "--demo")
    assert code == 1 and "cannot be combined" in err


@pytest.mark.parametrize(
    "command",
    ["serve", "submit", "jobs", "wait", "stats", "runners", "status", "cancel", "dlq"],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: shardq {command}" in out and "--help" in out


def test_stats_and_runners_from_a_server(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .server import LiveServer

    server = LiveServer(lambda: JobService(sqlite_url), "t").start()
    try:
        code, out, _ = run(capsys, "--json", "stats", "--server", server.url, "--token", "t")
        data = json.loads(out)
        assert code == 0 and data["source"] == "runner" and "latency_ms" in data
        monkeypatch.setenv("SHARDQ_API_TOKEN", "t")
        code, out, _ = run(capsys, "stats", "--server", server.url)
        assert "submit-to-start ms" in out
        code, out, _ = run(capsys, "runners", "--server", server.url)
        assert code == 0 and "mode embedded" in out and "runner " in out
        code, out, err = run(capsys, "runners", "--server", server.url, "--token", "wrong")
        assert code == 1 and out == "" and len(err.splitlines()) == 1
        assert "answered 401" in err and "--token" in err
    finally:
        server.stop()
    code, _, err = run(capsys, "stats", "--server", server.url)
    assert code == 1 and "cannot reach" in err
