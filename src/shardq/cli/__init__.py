"""The ``shardq`` command: a thin layer that parses, calls the library and prints."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..config import DEFAULT_URL, ENV_URL
from ..errors import JobError

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from . import commands, demo, worker

    parser = argparse.ArgumentParser(
        prog="shardq",
        description=(
            "Durable job processing on sharded entity mailboxes. Embedded on SQLite by"
            " default; a cluster of runners on PostgreSQL."
        ),
        epilog=f"The database comes from --database-url, else ${ENV_URL}, else {DEFAULT_URL}.",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"sqlite:///path.db or postgresql://user@host/db (default: ${ENV_URL} or {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.register(sub)
    commands.register(sub)
    worker.register(sub)
    for register in _extensions():
        register(sub)
    _accept_global_options_anywhere(sub)
    return parser


def _accept_global_options_anywhere(sub: Any) -> None:
    """Let ``shardq demo --json`` mean ``shardq --json demo`` (and so for every command)."""
    for p in set(sub.choices.values()):
        p.add_argument(
            "--database-url", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        p.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_global_options_anywhere(action)


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


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON under --json, else ``text``."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run: Command = args.run
    try:
        return asyncio.run(run(args))
    except JobError as e:
        print(f"shardq: error: {e} [{e.reason}]", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as e:
        print(f"shardq: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
