"""``manage.py shardq COMMAND ...``: the ``shardq`` command line on the Django database.

``worker`` and ``serve`` run the project's tasks (those of the ``ShardqBackend``); every
other command (``status``, ``jobs``, ``dlq``, ...) works as ``shardq`` does. ``--backend
ALIAS`` (first) picks a backend other than ``default``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand

from shardq.cli import main
from shardq.contrib.django.runner import BACKEND_ENV, backend

_RUNS_TASKS = ("worker", "serve")


class Command(BaseCommand):
    """Forwards its arguments to the ``shardq`` command line."""

    help = "Run shardq's command line (worker, serve, status, jobs, dlq, ...) on this project"

    def run_from_argv(self, argv: list[str]) -> None:
        args = list(argv[2:])
        if args[:1] == ["--backend"] and len(args) > 1:
            os.environ[BACKEND_ENV] = args[1]
            args = args[2:]
        if args[:1] and args[0] in _RUNS_TASKS and "--app" not in args:
            args += ["--app", "shardq.contrib.django.runner:jobs"]
        sys.exit(main(["--database-url", backend().url, *args]))

    def handle(self, *args: Any, **options: Any) -> None:
        """Unused: ``run_from_argv`` hands everything to the shardq command line."""
