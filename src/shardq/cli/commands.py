"""Operator commands: migrate, status, cancel and the dead-letter table."""

from __future__ import annotations

import argparse
from typing import Any

from ..drivers import connect
from ..models import JobStatusResponse
from . import accept_global_options, command, database_url, emit, service


def register(sub: Any) -> None:
    """Add the operator subcommands to ``sub``."""
    p = command(
        sub,
        "migrate",
        help="create or upgrade the database schema",
        description=(
            "Create the database (a SQLite file and its directory, or the tables in an existing"
            " PostgreSQL database) and apply the schema migrations it lacks. Every command that"
            " writes does this too; commands that only read never do."
        ),
        examples=["shardq --database-url postgresql://app@db/jobs migrate"],
    )
    p.set_defaults(run=migrate)

    p = command(
        sub,
        "status",
        help="show a job's status and full history",
        description="Print one job: its status, attempts, type, priority, key and history.",
        examples=["shardq status 7301245917186048", "shardq --json status 7301245917186048"],
    )
    p.add_argument("job_id", metavar="ID", help="the job id printed by submit")
    p.set_defaults(run=status)

    p = command(
        sub,
        "cancel",
        help="cancel a queued or running job",
        description=(
            "Cancel a queued job, or tell the runner of a running one to stop it. A job that"
            " has already finished or been cancelled is an error."
        ),
        examples=["shardq cancel 7301245917186048"],
    )
    p.add_argument("job_id", metavar="ID", help="the job id printed by submit")
    p.set_defaults(run=cancel)

    dlq = command(
        sub,
        "dlq",
        help="inspect and replay dead letters (jobs that failed for good)",
        description=(
            "The dead-letter table holds jobs that failed for good (attempts spent, no"
            " handler, a terminal error); list them, show one, or submit them again."
        ),
        examples=["shardq dlq list --limit 20", "shardq dlq replay --all"],
    )
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    p = command(
        dsub,
        "list",
        help="list dead letters, newest first",
        description="List dead letters as a table, newest first: id, job, type, reason, error.",
        examples=["shardq dlq list --limit 20", "shardq --json dlq list"],
    )
    p.add_argument("--limit", type=int, default=50, help="how many to show (1..1000, default 50)")
    p.set_defaults(run=dlq_list)
    p = command(
        dsub,
        "show",
        help="show one dead letter with its payload",
        description="Print one dead letter in full: its job, payload, reason and last error.",
        examples=["shardq dlq show 7301245917187001"],
    )
    p.add_argument("dlq_id", metavar="ID", help="the dead-letter id (see 'dlq list')")
    p.set_defaults(run=dlq_show)
    p = command(
        dsub,
        "replay",
        help="submit a dead letter's job again",
        description=(
            "Submit the job of a dead letter again as a new job (printing its id), or of every"
            " dead letter not yet replayed with --all. A dead letter is replayed at most once."
        ),
        examples=["shardq dlq replay 7301245917187001", "shardq dlq replay --all"],
    )
    p.add_argument("dlq_id", metavar="ID", nargs="?", help="the dead-letter id (see 'dlq list')")
    p.add_argument("--all", action="store_true", help="replay every dead letter not yet replayed")
    p.set_defaults(run=dlq_replay)
    accept_global_options(dsub)


async def migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    driver = connect(database_url(args), runner=False)
    await driver.open()  # opening applies what is pending
    try:
        applied = await driver.migrate()
    finally:
        await driver.close()
    emit(args, {"applied": applied, "url": driver.url}, f"schema of {driver.url} is up to date")
    return 0


def _status_text(st: JobStatusResponse) -> str:
    lines = [f"job {st.id}: {st.status} (attempts {st.attempts})"]
    if st.job is not None:
        j = st.job
        extra = f", key {j.key}" if j.key else ""
        lines.append(
            f"  type {j.type}, priority {j.priority}, max attempts {j.max_attempts}{extra}"
        )
    lines.append("  history:")
    for h in st.history:
        err = f"  {h.error}" if h.error else ""
        lines.append(f"    {h.timestamp.isoformat(timespec='milliseconds')}  {h.status:<10}{err}")
    if st.result is not None:
        lines.append(f"  result: {st.result!r}")
    return "\n".join(lines)


async def status(args: argparse.Namespace) -> int:
    """Print one job."""
    async with service(args) as jobs:
        st = await jobs.status(args.job_id)
    emit(args, st.to_dict(), _status_text(st))
    return 0


async def cancel(args: argparse.Namespace) -> int:
    """Cancel one job."""
    async with service(args) as jobs:
        await jobs.cancel(args.job_id)
        st = await jobs.status(args.job_id)
    text = (
        f"job {args.job_id} cancelled"
        if st.status == "cancelled"
        else f"job {args.job_id} is running; its runner was told to stop it"
    )
    emit(args, st.to_dict(), text)
    return 0


async def dlq_list(args: argparse.Namespace) -> int:
    """Print dead letters as a table."""
    if not 1 <= args.limit <= 1000:
        raise ValueError("--limit must be within 1..1000")
    async with service(args) as jobs:
        rows = await jobs.dead_letters(limit=args.limit)
    table = [
        f"{'ID':<20} {'JOB':<20} {'TYPE':<20} {'REASON':<16} {'TRIES':>5}  {'FAILED AT':<23} ERROR"
    ]
    for d in rows:
        replayed = " (replayed)" if d.replayed_at else ""
        error = (d.error or "")[:60]
        table.append(
            f"{d.id:<20} {d.job_id:<20} {d.type[:20]:<20} {d.reason:<16} {d.attempts:>5}  "
            f"{d.failed_at.isoformat(timespec='seconds'):<23} {error}{replayed}"
        )
    if not rows:
        table = ["no dead letters"]
    emit(args, [d.to_dict() for d in rows], "\n".join(table))
    return 0


async def dlq_show(args: argparse.Namespace) -> int:
    """Print one dead letter."""
    async with service(args) as jobs:
        d = await jobs.dead_letter(args.dlq_id)
    data = d.to_dict()
    emit(args, data, "\n".join(f"{k:>14}: {v}" for k, v in data.items()))
    return 0


async def dlq_replay(args: argparse.Namespace) -> int:
    """Replay one dead letter, or all with --all."""
    if bool(args.dlq_id) == bool(args.all):
        raise ValueError("give a dead-letter ID or --all (not both)")
    replayed: list[dict[str, str]] = []
    async with service(args) as jobs:
        if args.dlq_id:
            replayed.append({"dlq_id": args.dlq_id, "job_id": await jobs.replay(args.dlq_id)})
        else:
            before = None
            while True:
                page = await jobs.dead_letters(limit=500, before=before)
                if not page:
                    break
                for d in page:
                    if d.replayed_at is None:
                        replayed.append({"dlq_id": d.id, "job_id": await jobs.replay(d.id)})
                before = page[-1].id
    text = "\n".join(f"dead letter {r['dlq_id']} replayed as job {r['job_id']}" for r in replayed)
    emit(args, replayed, text or "nothing to replay")
    return 0
