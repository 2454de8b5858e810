"""``shardq worker``: run a runner with an application's handlers until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from typing import Any

from ..jobs import JobService


def register(sub: Any) -> None:
    """Add the worker subcommand to ``sub``."""
    p = sub.add_parser(
        "worker",
        help="run jobs with the handlers of an application",
        description=(
            "Load MODULE:ATTRIBUTE (a JobService with handlers registered) and run its jobs."
            " SIGTERM or Ctrl-C drains: running jobs may finish (up to --drain-timeout),"
            " the rest are queued again, then the process exits."
        ),
    )
    p.add_argument("--app", required=True, metavar="MODULE:ATTRIBUTE", help="e.g. myapp.jobs:jobs")
    p.add_argument("--concurrency", type=int, default=None, help="handlers run at once")
    p.add_argument("--drain-timeout", type=float, default=None, help="seconds to let jobs finish")
    p.set_defaults(run=run_worker)


def load_app(spec: str) -> JobService:
    """Import ``module:attribute`` and check it is a JobService."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--app must look like module:attribute, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r}: {e}") from e
    app = getattr(module, attr, None)
    if not isinstance(app, JobService):
        raise ValueError(f"{spec} is not a JobService (got {type(app).__name__})")
    return app


async def run_worker(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT, then drain."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = load_app(args.app)
    changes: dict[str, Any] = {}
    if args.database_url:
        changes["database_url"] = args.database_url
    if args.concurrency is not None:
        changes["concurrency"] = args.concurrency
    if changes:
        app.config = app.config.with_(**changes)
    if not app.runs_jobs:
        raise ValueError(f"{args.app} was made with runner=False; a worker needs a runner")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    log = logging.getLogger("shardq.worker")
    log.info(
        "runner %s started on %s with handlers: %s",
        app.runner_id,
        app.config.database_url,
        ", ".join(sorted(app.handlers)) or "(none)",
    )
    try:
        await stop.wait()
        log.info("stopping: draining running jobs")
    finally:
        await app.stop(args.drain_timeout)
    log.info("stopped")
    return 0
