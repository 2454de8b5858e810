"""The ``shardq`` command: a thin layer that parses, calls the library and prints."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Coroutine
from typing import IO, Any, NoReturn

from ..config import DEFAULT_URL, ENV_URL
from ..drivers.sqlite.driver import path_from_url
from ..jobs import JobService
from .failures import NoDatabase, Usage, describe, one_line

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
ENV_DEBUG = "SHARDQ_DEBUG"
EXIT_CODES = (
    "exit status: 0 done; 1 the command failed (one line on stderr says why); 2 the command"
    " line is wrong; 130 interrupted. 'wait' exits 1 when the job failed or was cancelled."
)


class Formatter(argparse.HelpFormatter):
    """Help text wrapped to the terminal, line by line: an example stays on its own line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            textwrap.fill(
                line,
                width,
                initial_indent=indent,
                subsequent_indent=indent + ("    " if line.startswith(" ") else ""),
            )
            for line in text.splitlines()
        )


def command(
    sub: Any, name: str, *, help: str, description: str, examples: list[str]
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``: what it does, at length, and how it is typed."""
    label = "example" if len(examples) == 1 else "examples"
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"{label}:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=Formatter,
    )
    return parser


class Parser(argparse.ArgumentParser):
    """An argument parser whose complaints are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        say(sys.stderr, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from . import commands, demo, limits, schedules, worker

    parser = Parser(
        prog="shardq",
        description=(
            "Durable job processing on sharded entity mailboxes. Embedded on SQLite by"
            " default; a cluster of runners on PostgreSQL."
        ),
        epilog=(
            f"The database comes from --database-url, else ${ENV_URL}, else {DEFAULT_URL}.\n"
            f"{EXIT_CODES}\n"
            "examples:\n"
            '  shardq submit email.send \'{"to": "a@b.c"}\'\n'
            "  shardq --database-url postgresql://app@db/jobs worker --app myapp.jobs:jobs\n"
            "  shardq COMMAND --help"
        ),
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"sqlite:///path.db or postgresql://user@host/db (default: ${ENV_URL} or {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=bool(os.environ.get(ENV_DEBUG)),
        help=f"print the traceback of a failure (or set ${ENV_DEBUG}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.register(sub)
    commands.register(sub)
    schedules.register(sub)
    limits.register(sub)
    worker.register(sub)
    for register in _extensions():
        register(sub)
    accept_global_options(sub)
    return parser


def accept_global_options(sub: Any) -> None:
    """Let ``shardq demo --json`` mean ``shardq --json demo``: the global options are taken
    by every command of ``sub`` too (a command with subcommands of its own calls this for
    them)."""
    for p in set(sub.choices.values()):
        p.add_argument(
            "--database-url", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        for flag in ("--json", "--debug"):
            p.add_argument(
                flag, action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )


def _extensions() -> list[Callable[[Any], None]]:
    """Subcommands that live beside the core ones (the HTTP server, when installed)."""
    out: list[Callable[[Any], None]] = []
    try:
        from . import serve
    except ImportError:
        return out
    out.append(serve.register)
    return out


def database_url(args: argparse.Namespace) -> str:
    """The URL the user chose, or the default."""
    url: str = args.database_url or os.environ.get(ENV_URL) or DEFAULT_URL
    return url


def say(stream: IO[str], text: str) -> None:
    """Write ``text`` and a newline to ``stream``; what it cannot encode (a lone surrogate
    from undecodable input) is written as a backslash escape instead of failing."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")
    stream.flush()


def service(args: argparse.Namespace, *, create: bool = False) -> JobService:
    """A submit-only JobService on the chosen database (not yet started).

    Without ``create`` (commands that only read, or act on jobs that must already exist) a
    SQLite file must exist and hold something: opening would otherwise create the file, its
    directory and an empty schema as a side effect of a typo.
    """
    url = database_url(args)
    if not create and url.startswith("sqlite:"):
        path = path_from_url(url)
        if not os.path.exists(path) or (os.path.isfile(path) and os.path.getsize(path) == 0):
            raise NoDatabase(
                f"no shardq database at {path}: check --database-url (or ${ENV_URL}),"
                " or create it with 'shardq migrate'"
            )
    return JobService(url, runner=False)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON under --json, else ``text``."""
    say(sys.stdout, json.dumps(data, indent=2, default=str) if args.json else text)


def fail(message: str) -> int:
    """Print ``message`` as the one line of a failure; returns exit status 1."""
    say(sys.stderr, f"shardq: error: {one_line(message)}")
    return 1


_POSITIONALS = {"type": "TYPE", "payload": "JSON", "job_id": "ID", "dlq_id": "ID"}


def _refuse_undecodable(args: argparse.Namespace) -> None:
    """Refuse an argument that held bytes not valid in UTF-8.

    The OS hands such bytes over as lone surrogates; nothing downstream could store them.
    """
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and any("\ud800" <= c <= "\udfff" for c in text):
                shown = text.encode("utf-8", "backslashreplace").decode()[:80]
                flag = _POSITIONALS.get(name, "--" + name.replace("_", "-"))
                raise Usage(f"{flag} is not valid UTF-8 text: '{shown}'", f"shardq {args.command}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0, 1 failed, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    run: Command = args.run
    try:
        _refuse_undecodable(args)
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    except Usage as e:
        say(sys.stderr, one_line(str(e)))
        return 2
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        return fail(describe(e, database_url(args)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
