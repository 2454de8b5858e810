"""Schedules and pauses on the command line: ``shardq schedules list|add|remove|pause|resume``
and ``shardq pause|resume --type T | --key K``.

Every check is the library's (``JobService.schedule``, ``pause``, ``resume``); what it refuses
(an invalid cron expression, an unknown time zone, ``--every`` not above 0, an unknown
schedule) is bad input here: one line on stderr, exit status 2, and nothing changed.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

from ..errors import JobError
from ..models import PRIORITIES
from ..schedules import MISFIRES, OVERLAPS, Schedule
from . import accept_global_options, command, emit, service
from .failures import Refused, Usage
from .ops import parse_payload

T = TypeVar("T")
_BAD_INPUT = "Bad input exits with status 2, one line on stderr saying why, and changes nothing: "


def register(sub: Any) -> None:
    """Add ``schedules``, ``pause`` and ``resume`` to ``sub``."""
    top = command(
        sub,
        "schedules",
        help="list, add, change, remove, pause and resume periodic and cron schedules",
        description=(
            "A schedule submits one job of its job type on every tick, cluster-wide: ticks of"
            " a cron expression read on the wall clock of a time zone, or every N seconds"
            " (multiples of N since the Unix epoch). The runner owning the schedule's shard"
            " hears of a change at once."
        ),
        examples=[
            "shardq schedules list",
            "shardq schedules add report.daily --type report.build --cron '0 6 * * *'",
            "shardq schedules pause report.daily",
        ],
    )
    ssub = top.add_subparsers(dest="schedules_command", metavar="ACTION", required=True)
    p = command(
        ssub,
        "list",
        help="every schedule: timing, zone, job type, next and last tick, paused",
        description=(
            "List every schedule by name: its cron expression or interval, time zone and job"
            " type, the next tick (in the past while no runner owns it), the last tick that"
            " submitted a job and that job, and whether it is paused."
        ),
        examples=["shardq schedules list", "shardq --json schedules list"],
    )
    p.set_defaults(run=list_schedules)

    p = command(
        ssub,
        "add",
        help="add a schedule, or change the one of that name",
        description=(
            "Store the schedule NAME (or change it: a changed timing ticks on from now) and"
            " print it. Give exactly one of --cron and --every. "
            + _BAD_INPUT
            + "an invalid cron expression, an unknown time zone, --every not above 0, both"
            " or neither of --cron and --every, a payload that is not strict JSON."
        ),
        examples=[
            "shardq schedules add report.daily --type report.build --cron '0 6 * * *'"
            ' --tz Europe/Berlin --payload \'{"kind": "daily"}\'',
            "shardq schedules add rates.refresh --type rates.refresh --every 30",
        ],
    )
    p.add_argument("name", metavar="NAME", help="the schedule's name (unique)")
    p.add_argument("--type", required=True, metavar="TYPE", help="the job type of each tick")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", metavar="EXPR", help="a cron expression: 5 fields, or 6 with seconds first"
    )
    when.add_argument("--every", metavar="SECONDS", type=float, help="seconds between ticks")
    p.add_argument("--payload", metavar="JSON", help="each job's payload (default {})")
    p.add_argument("--tz", default="UTC", help="the IANA time zone cron is read in (default UTC)")
    p.add_argument(
        "--misfire",
        choices=MISFIRES,
        default="latest",
        help="ticks missed while no runner owned it: all, the latest (default) or none",
    )
    p.add_argument(
        "--overlap",
        choices=OVERLAPS,
        default="allow",
        help="while its previous job is queued or running: allow (default), skip the tick,"
        " or queue it behind",
    )
    p.add_argument("--priority", choices=PRIORITIES, default="normal", help="default normal")
    p.add_argument("--key", help="the key of each job (jobs sharing a key run in order)")
    p.set_defaults(run=add_schedule)

    for name, run, text in (
        ("remove", remove_schedule, "remove a schedule (the jobs it submitted stay)"),
        ("pause", pause_schedule, "stop firing a schedule's ticks until it is resumed"),
        ("resume", resume_schedule, "fire a paused schedule's ticks again"),
    ):
        p = command(
            ssub,
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. {_BAD_INPUT}no schedule NAME.",
            examples=[f"shardq schedules {name} report.daily"],
        )
        p.add_argument("name", metavar="NAME", help="the schedule's name (see 'schedules list')")
        p.set_defaults(run=run)
    accept_global_options(ssub)

    for name, run, text in (
        ("pause", pause_jobs, "hold back the jobs of a job type or a key: they stay queued"),
        ("resume", resume_jobs, "let the held-back jobs of a job type or a key start again"),
    ):
        p = command(
            sub,
            name,
            help=text,
            description=(
                f"{text[0].upper()}{text[1:]}. Give exactly one of --type and --key; prints"
                f" what is paused afterwards. {_BAD_INPUT}a blank or over-long name."
            ),
            examples=[f"shardq {name} --type email.send", f"shardq {name} --key account:42"],
        )
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--type", metavar="TYPE", help="a job type")
        which.add_argument("--key", metavar="KEY", help="a key (as given to submit)")
        p.set_defaults(run=run)


async def _checked(prog: str, call: Awaitable[T]) -> T:
    """The result of ``call``; the library's refusal of bad input as a usage error."""
    try:
        return await call
    except JobError as e:
        if e.reason not in ("Validation", "NotFound"):
            raise
        detail = e.cause if e.reason == "Validation" and isinstance(e.cause, str) else str(e)
        raise Usage(detail, prog) from None


def _when(s: Schedule) -> str:
    if s.cron is not None:
        return s.cron
    return f"every {s.every:g}s"


def _time(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else "-"


def _table(rows: list[Schedule]) -> str:
    if not rows:
        return "no schedules"
    lines = [
        f"{'NAME':<24} {'WHEN':<18} {'TZ':<16} {'TYPE':<20} {'NEXT TICK':<20} "
        f"{'LAST TICK':<20} {'LAST JOB':<19} PAUSED"
    ]
    lines += [
        f"{s.name[:24]:<24} {_when(s)[:18]:<18} {s.tz[:16]:<16} {s.job_type[:20]:<20} "
        f"{_time(s.next_tick):<20} {_time(s.last_tick):<20} {s.last_job_id or '-':<19} "
        f"{'yes' if s.paused else 'no'}"
        for s in rows
    ]
    return "\n".join(lines)


async def list_schedules(args: argparse.Namespace) -> int:
    """Print every schedule."""
    async with service(args) as jobs:
        rows = await jobs.schedules()
    emit(args, [s.to_dict() for s in rows], _table(rows))
    return 0


async def add_schedule(args: argparse.Namespace) -> int:
    """Add or change one schedule."""
    prog = "shardq schedules add"
    try:
        payload = None if args.payload is None else parse_payload(args.payload)
    except Refused as e:
        raise Usage(f"--payload: {e}", prog) from None
    async with service(args, create=True) as jobs:
        s = await _checked(
            prog,
            jobs.schedule(
                args.name,
                job_type=args.type,
                cron=args.cron,
                every=args.every,
                payload=payload,
                tz=args.tz,
                misfire=args.misfire,
                overlap=args.overlap,
                priority=args.priority,
                key=args.key,
            ),
        )
    emit(
        args,
        s.to_dict(),
        f"schedule {s.name}: {_when(s)} ({s.tz}) submits {s.job_type};"
        f" next tick {_time(s.next_tick)}",
    )
    return 0


async def remove_schedule(args: argparse.Namespace) -> int:
    """Remove one schedule."""
    async with service(args) as jobs:
        await _checked("shardq schedules remove", jobs.unschedule(args.name))
    emit(args, {"name": args.name, "removed": True}, f"schedule {args.name} removed")
    return 0


async def _hold_schedule(args: argparse.Namespace, paused: bool) -> int:
    verb = "pause" if paused else "resume"
    async with service(args) as jobs:
        hold = jobs.pause if paused else jobs.resume
        await _checked(f"shardq schedules {verb}", hold(schedule=args.name))
    emit(args, {"name": args.name, "paused": paused}, f"schedule {args.name} {verb}d")
    return 0


async def pause_schedule(args: argparse.Namespace) -> int:
    """Pause one schedule."""
    return await _hold_schedule(args, True)


async def resume_schedule(args: argparse.Namespace) -> int:
    """Resume one schedule."""
    return await _hold_schedule(args, False)


async def _hold_jobs(args: argparse.Namespace, paused: bool) -> int:
    verb = "pause" if paused else "resume"
    flag, value = ("--type", args.type) if args.type is not None else ("--key", args.key)
    what = f"{'job type' if flag == '--type' else 'key'} {value}"
    async with service(args, create=paused) as jobs:
        hold = jobs.pause if paused else jobs.resume
        await _checked(f"shardq {verb}", hold(job_type=args.type, key=args.key))
        now = await jobs.paused()
    data = {
        "job_types": list(now.job_types),
        "keys": list(now.keys),
        "schedules": list(now.schedules),
    }
    text = f"{what} {verb}d"
    if paused:
        text += f"; its jobs stay queued until 'shardq resume {flag} {value}'"
    emit(args, data, text)
    return 0


async def pause_jobs(args: argparse.Namespace) -> int:
    """Pause a job type or a key."""
    return await _hold_jobs(args, True)


async def resume_jobs(args: argparse.Namespace) -> int:
    """Resume a job type or a key."""
    return await _hold_jobs(args, False)
