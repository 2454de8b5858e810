"""The CLI's failures: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shardq.cli import main
from tests.conftest import PG_ADMIN_URL, require_postgres

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single line of ``err`` (fails if there is not exactly one)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- database errors -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["status", "1"], ["submit", "t", "{}"], ["migrate"]])
def test_a_directory_as_the_sqlite_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, "--database-url", url_of(tmp_path), *argv)
    assert code == 1
    line = one_line(err)
    assert f"{tmp_path} is a directory" in line and "database file" in line


@pytest.mark.parametrize("argv", [["status", "1"], ["submit", "t", "{}"], ["jobs"], ["runners"]])
def test_a_file_that_is_not_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, just some notes\n" * 100)
    code, _, err = run(capsys, "--database-url", url_of(notes), *argv)
    assert code == 1
    assert f"{notes} is not a SQLite database" in one_line(err)
    assert notes.read_text().startswith("not a database")


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (PG_ADMIN_URL.rsplit("/", 1)[0] + "/shardq_no_such_db", 'database "shardq_no_such_db"'),
        (
            PG_ADMIN_URL.replace("postgres@", "shardq_no_such_role@", 1),
            'role "shardq_no_such_role"',
        ),
    ],
)
@pytest.mark.parametrize("argv", [["status", "1"], ["submit", "t", "{}"], ["migrate"]])
def test_a_missing_postgres_database_or_role(
    capsys: pytest.CaptureFixture[str], url: str, needle: str, argv: list[str]
) -> None:
    require_postgres()
    code, _, err = run(capsys, "--database-url", url, *argv)
    assert code == 1
    line = one_line(err)
    assert needle in line and "does not exist" in line and "--database-url" in line


def test_an_unreachable_postgres_server(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    url = f"postgresql://someone:s3cret@127.0.0.1:{port}/db"
    code, _, err = run(capsys, "--database-url", url, "jobs")
    assert code == 1
    line = one_line(err)
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in line
    assert "is the server running" in line and "s3cret" not in line


def test_a_bad_postgres_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--database-url", "postgresql://u@127.0.0.1:99999/db", "jobs")
    assert code == 1 and "port" in one_line(err)


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--debug", "--database-url", url_of(tmp_path), "status", "1")
    assert code == 1 and "Traceback" in err
    assert err.splitlines()[-1].startswith("shardq: error: ") and "is a directory" in err


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shardq", "--database-url", url_of(tmp_path), "jobs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert "is a directory" in one_line(out.stderr)


# -- read-only commands ------------------------------------------------------------------

READ_ONLY = [
    ["status", "1"],
    ["jobs"],
    ["stats"],
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["wait", "1", "--timeout", "1"],
    ["cancel", "1"],
    ["dlq", "replay", "--all"],
    ["runners"],
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: "-".join(a[:2]))
def test_commands_that_only_read_never_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "jobs.db"
    code, out, err = run(capsys, "--database-url", url_of(missing), *argv)
    assert code == 1 and out == ""
    line = one_line(err)
    assert f"no shardq database at {missing}" in line
    assert not (tmp_path / "no").exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run(capsys, "--database-url", url_of(empty), *argv)
    assert code == 1 and f"no shardq database at {empty}" in one_line(err)
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_commands_that_write_create_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "new" / "jobs.db"
    code, out, _ = run(capsys, "--database-url", url_of(db), "submit", "t", "{}")
    assert code == 0 and db.exists()
    code, _, _ = run(capsys, "--database-url", url_of(db), "status", out.strip())
    assert code == 0
    other = tmp_path / "other" / "jobs.db"
    assert run(capsys, "--database-url", url_of(other), "migrate")[0] == 0 and other.exists()


# -- bad input on the command line -------------------------------------------------------


def stored(capsys: pytest.CaptureFixture[str], url: str) -> int:
    code, out, err = run(capsys, "--database-url", url, "--json", "stats")
    assert code == 0, err
    return sum(json.loads(out)["by_status"].values())


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ("[]", "empty JSON array"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('[{"x": {"y": 1, "y": 1}}]', "duplicate key 'y'"),
        ("[" * 2000 + "]" * 2000, "nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"n": NaN}', "NaN is not JSON"),
        ('{"n": -Infinity}', "-Infinity is not JSON"),
        ('{"n": 1e400}', "out of range"),
        ('{"n": ' + "9" * 5000 + "}", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"name": "bad \udcff byte"}', "not valid UTF-8"),
        ('{"name": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "lone UTF-16 surrogate"),
        ('["\\ud83d\\ude00", "\\ud83d"]', "lone UTF-16 surrogate"),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else v,
)
def test_submit_refuses_a_bad_payload(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], payload: str, needle: str
) -> None:
    assert run(capsys, "--database-url", sqlite_url, "migrate")[0] == 0
    capsys.readouterr()
    code, out, err = run(capsys, "--database-url", sqlite_url, "submit", "t", payload)
    assert code != 0 and out == ""
    assert needle in one_line(err)
    assert stored(capsys, sqlite_url) == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--key", "k\udcff"],
        ["--dedupe-key", "\udc80"],
        ["--delay", "nan"],
        ["--delay", "1e400"],
        ["--delay", "-1"],
        ["--timeout", "inf"],
        ["--max-attempts", "1" + "0" * 400],
        ["--priority", "urgent"],
    ],
)
def test_submit_refuses_bad_options(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    assert run(capsys, "--database-url", sqlite_url, "migrate")[0] == 0
    capsys.readouterr()
    code, out, err = run(capsys, "--database-url", sqlite_url, "submit", "t", "{}", *options)
    assert code != 0 and out == ""
    one_line(err)
    assert stored(capsys, sqlite_url) == 0


def test_a_type_with_undecodable_bytes(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--database-url", sqlite_url, "submit", "t\udcff", "{}")
    assert code == 2
    line = one_line(err)
    assert "TYPE is not valid UTF-8" in line and "\\udcff" in line


def test_payload_file(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text('[{"to": "a@b.c"}, {"to": "d@e.f"}]')
    code, out, err = run(
        capsys, "--database-url", sqlite_url, "submit", "t", "--payload-file", str(good)
    )
    assert code == 0 and len(out.split()) == 2, err

    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"name": "caf\xe9"}')
    code, out, err = run(
        capsys, "--database-url", sqlite_url, "submit", "t", "--payload-file", str(latin1)
    )
    assert code == 1 and out == ""
    assert f"{latin1} is not UTF-8" in one_line(err)

    code, _, err = run(capsys, "--database-url", sqlite_url, "submit", "t", "{}", "--payload-file")
    assert code == 2 and "--payload-file" in one_line(err)
    code, _, err = run(
        capsys, "--database-url", sqlite_url, "submit", "t", "{}", "--payload-file", str(good)
    )
    assert code == 2 and "not both" in one_line(err)
    code, _, err = run(capsys, "--database-url", sqlite_url, "submit", "t")
    assert code == 2 and "give the payload" in one_line(err)
    code, _, err = run(
        capsys, "--database-url", sqlite_url, "submit", "t", "--payload-file", str(tmp_path / "x")
    )
    assert code == 1 and "No such file" in one_line(err)
    assert stored(capsys, sqlite_url) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["submit"],
        ["status"],
        ["jobs", "--limit", "x"],
        ["jobs", "--since", "yesterday"],
        ["jobs", "--since", "1e400"],
        ["wait", "1", "--timeout", "nan"],
        ["--no-such-option"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "--database-url", sqlite_url, *argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("shardq") and "--help" in line


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "submit", "--help")
    assert code == 0 and "usage: shardq submit" in out


def test_an_escaped_surrogate_pair_is_one_character(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "--database-url", sqlite_url, "submit", "t", '{"e": "\\ud83d\\ude00 \\u00e9"}'
    )
    assert code == 0, err
    code, out, _ = run(capsys, "--database-url", sqlite_url, "--json", "status", out.strip())
    assert code == 0 and json.loads(out)["payload"] == {"e": "\U0001f600 é"}
