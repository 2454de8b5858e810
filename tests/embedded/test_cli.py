"""The shardq command: the demo, operator commands and clear errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardq import JobService

ROOT = Path(__file__).resolve().parents[2]


def shardq(
    *args: str, url: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "shardq"]
    if url:
        cmd += ["--database-url", url]
    return subprocess.run(
        [*cmd, *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_demo_runs_a_mixed_workload_and_verifies_it(sqlite_url: str) -> None:
    out = shardq(
        "--json", "demo", "--jobs", "1500", "--accounts", "20", "--probes", "20", url=sqlite_url
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["jobs"] == 1500
    assert summary["per_key_order_verified"] is True
    assert sum(summary["outcomes"].values()) == 1500
    assert summary["outcomes"]["failed"] == sum(summary["dead_lettered"].values())
    assert summary["retried_transient_failures"] > 0
    assert set(summary["dead_lettered"]) <= {"HandlerMissing", "MaxRetries", "Validation"}
    assert summary["jobs_per_s"] > 0 and summary["submit_to_start_ms"]["p50"] >= 0
    idle = summary["idle_submit_to_start_ms"]
    assert idle["samples"] == 20 and 0 < idle["p50"] <= idle["p99"]


def test_demo_uses_the_default_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    env_free = shardq("demo", "--jobs", "50", cwd=tmp_path)
    assert env_free.returncode == 0, env_free.stderr
    assert (tmp_path / "shardq.db").exists()
    assert "per-key order: verified" in env_free.stdout


async def test_status_cancel_and_dlq_commands(sqlite_url: str) -> None:
    async with JobService(sqlite_url, runner=False) as submitter:
        queued = await submitter.submit("email.send", {"to": "a@b.c"}, priority="high")
    assert shardq("migrate", url=sqlite_url).returncode == 0

    st = shardq("status", queued, url=sqlite_url)
    assert st.returncode == 0 and f"job {queued}: queued" in st.stdout and "history" in st.stdout
    data = json.loads(shardq("--json", "status", queued, url=sqlite_url).stdout)
    assert data["status"] == "queued" and data["priority"] == "high"

    assert shardq("cancel", queued, url=sqlite_url).returncode == 0
    again = shardq("cancel", queued, url=sqlite_url)
    assert again.returncode == 1 and "already cancelled" in again.stderr

    jobs = JobService(sqlite_url)
    async with jobs:
        failing = await jobs.submit("no.handler", {"x": 1})
        await jobs.wait(failing, timeout=10)
    listing = shardq("dlq", "list", url=sqlite_url)
    assert listing.returncode == 0 and "HandlerMissing" in listing.stdout
    (dl,) = json.loads(shardq("--json", "dlq", "list", url=sqlite_url).stdout)
    assert dl["job_id"] == failing
    replay = shardq("dlq", "replay", dl["id"], url=sqlite_url)
    assert replay.returncode == 0 and "replayed as job" in replay.stdout
    twice = shardq("dlq", "replay", dl["id"], url=sqlite_url)
    assert twice.returncode == 1 and "already replayed" in twice.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status", "12345"], "not found"),
        (["status", "not-an-id"], "not found"),
        (["cancel", "999"], "not found"),
        (["dlq", "replay"], "give a dead-letter ID or --all"),
        (["dlq", "list", "--limit", "0"], "--limit"),
        (["worker", "--app", "nonexistent_module:jobs"], "cannot import"),
        (["worker", "--app", "json:dumps"], "is not a JobService"),
    ],
)
def test_bad_input_exits_non_zero_with_a_clear_message(
    sqlite_url: str, args: list[str], needle: str
) -> None:
    assert shardq("migrate", url=sqlite_url).returncode == 0
    out = shardq(*args, url=sqlite_url)
    assert out.returncode == 1
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_an_unsupported_url_is_explained() -> None:
    out = shardq("status", "1", url="mysql://localhost/x")
    assert out.returncode == 1 and "unsupported database URL" in out.stderr


def test_help_describes_every_command() -> None:
    out = shardq("--help")
    assert out.returncode == 0
    for command in ("demo", "migrate", "status", "cancel", "dlq", "worker"):
        assert command in out.stdout
    assert shardq("dlq", "--help").returncode == 0


def _commands() -> list[tuple[str, ...]]:
    """Every command's words, subcommands of a group included (serve has its own tests)."""
    import argparse

    from shardq.cli import build_parser

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [words]
        return [w for name, p in groups[0].choices.items() for w in walk(p, (*words, name))]

    return [w for w in walk(build_parser(), ()) if w != ("serve",)]


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_command_says_what_it_does_with_an_example(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    from shardq.cli import main

    assert main([*words, "--help"]) == 0
    out = capsys.readouterr().out
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: shardq {' '.join(words)}")
    assert not description.startswith(("positional arguments:", "options:"))
    assert len(description.split()) >= 6, description
    assert "example" in out
    examples = out.split("example")[-1]
    assert "shardq" in examples and " ".join(words) in examples
    assert max(len(line) for line in out.splitlines()) <= 100


def test_the_top_help_states_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from shardq.cli import main

    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 done" in out and "1 the command failed" in out and "2 the command line" in out
