"""``shardq worker``: run a runner with an application's handlers until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import math
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from .._internal.tasks import cancel_and_wait
from ..jobs import JobService
from ..retry import RetryPolicy
from . import command
from .failures import Refused, describe, pg_address, redacted, transient

# Waiting for a database: from 0.1 s, doubling, at most 2 s between attempts (a server that
# comes up is joined within about 2 s), each delay drawn from its upper half so that workers
# started together do not knock in step.
BACKOFF = RetryPolicy(base=0.1, factor=2.0, cap=2.0, jitter=0.5)
DEFAULT_PATIENCE = 60.0


def register(sub: Any) -> None:
    """Add the worker subcommand to ``sub``."""
    p = command(
        sub,
        "worker",
        help="run jobs with the handlers of an application",
        description=(
            "Load MODULE:ATTRIBUTE (a JobService with handlers registered) and run its jobs."
            " SIGTERM or Ctrl-C drains: running jobs may finish (up to --drain-timeout),"
            " the rest are queued again, then the process exits with status 0."
            " A PostgreSQL server that is starting, restarting or not reachable yet is waited"
            " for: the worker retries with capped, jittered exponential back-off (0.1 s"
            " doubling to 2 s), logging one line per attempt, for up to --connect-timeout"
            " seconds, then exits with status 1. What waiting cannot cure (a missing database"
            " or role, a wrong password, a bad URL) fails at once with one line, status 1."
        ),
        examples=[
            "shardq --database-url postgresql://app@db/jobs worker --app myapp.jobs:jobs",
            "shardq worker --app myapp.jobs:jobs --concurrency 32 --connect-timeout inf",
        ],
    )
    p.add_argument("--app", required=True, metavar="MODULE:ATTRIBUTE", help="e.g. myapp.jobs:jobs")
    p.add_argument("--concurrency", type=int, default=None, help="handlers run at once")
    p.add_argument("--drain-timeout", type=float, default=None, help="seconds to let jobs finish")
    add_connect_timeout(p)
    p.set_defaults(run=run_worker)


def add_connect_timeout(p: argparse.ArgumentParser) -> None:
    """The ``--connect-timeout`` option of a command that starts a service."""
    p.add_argument(
        "--connect-timeout",
        type=patience,
        default=DEFAULT_PATIENCE,
        metavar="SECONDS",
        help=(
            "how long to keep retrying while the database cannot be reached"
            f" (default {DEFAULT_PATIENCE:g}; 0 tries once; inf waits for ever)"
        ),
    )


def patience(value: str) -> float:
    """An argument type: seconds >= 0, ``inf`` allowed."""
    try:
        n = float(value)
    except ValueError:
        n = math.nan
    if not n >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 or inf, got {value!r}")
    return n


def load_app(spec: str) -> JobService:
    """Import ``module:attribute`` and check it is a JobService."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise Refused(f"--app must look like module:attribute, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the application's own import-time failure, whatever it is
        raise Refused(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from e
    app = getattr(module, attr, None)
    if not isinstance(app, JobService):
        raise Refused(f"{spec} is not a JobService (got {type(app).__name__})")
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
    log = logging.getLogger("shardq.worker")
    if not await start_when_reachable(app, stop, args.connect_timeout, log):
        log.info("stopped before the database could be reached")
        return 0
    log.info(
        "runner %s started on %s with handlers: %s",
        app.runner_id,
        redacted(app.config.database_url),
        ", ".join(sorted(app.handlers)) or "(none)",
    )
    try:
        await stop.wait()
        log.info("stopping: draining running jobs")
    finally:
        await app.stop(args.drain_timeout)
    log.info("stopped")
    return 0


class StartFailed(RuntimeError):
    """The worker could not start; the message says why in one line."""


async def start_when_reachable(
    app: JobService, stop: asyncio.Event, patience: float, log: logging.Logger
) -> bool:
    """Start ``app``, waiting out a database that is starting up or not reachable yet.

    Returns True once started, False when ``stop`` was set first. A failure that waiting
    cannot cure raises StartFailed at once; so does a transient one that outlasts
    ``patience`` seconds (no attempt begins after that; one under way is not cut short).
    """
    url = app.config.database_url
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + patience
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _unless_stopped(app.start(), stop)
        except Exception as e:
            reason = transient(e, url)
            if reason is None:
                raise StartFailed(describe(e, url)) from e
            left = give_up_at - loop.time()
            if left <= 0:
                raise StartFailed(
                    f"gave up waiting for PostgreSQL at {pg_address(url)} after {attempt}"
                    f" attempts in {patience:g} s: {reason} (see --connect-timeout)"
                ) from e
            delay = min(BACKOFF.delay(attempt), left)
            log.warning(
                "waiting for PostgreSQL at %s: %s; retrying in %.1f s (attempt %d, %s)",
                pg_address(url),
                reason,
                delay,
                attempt,
                "no time limit" if math.isinf(left) else f"giving up in {left:.1f} s",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
            return False


async def _unless_stopped(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``start``; True when it finished (its failure is raised), False when ``stop``
    came first (the attempt is then cancelled)."""
    attempt = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if attempt.done():
        attempt.result()
        return True
    # The attempt closes what it opened when cancelled; how it ends no longer matters.
    await cancel_and_wait(attempt, quiet=True)
    return False
