"""Flow control on the command line: ``shardq limits [list]`` and ``shardq limits set TYPE``.

Every check is the library's (``shardq.Rate``, ``JobService.limit``); what it refuses (a limit
that is not a positive integer, a rate with a count below 1, a period out of range, a job
type no runner handles) is bad input here: one line on stderr, exit status 2, and nothing
changed.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from ..errors import JobError
from ..flow import Limit, Rate
from . import accept_global_options, command, emit, service
from .failures import Usage

_BAD_INPUT = "Bad input exits with status 2, one line on stderr saying why, and changes nothing: "
#: COUNT/PER[:BURST], PER in seconds (an "s" after it is allowed, as the listing shows it).
_RATE = re.compile(r"(?P<count>[0-9]+)/(?P<per>[0-9]*\.?[0-9]+)s?(?::(?P<burst>[0-9]+))?")
#: The options of ``limits set``: flag, keyword of ``JobService.limit``, what it limits.
_OPTIONS = (
    ("--concurrency", "concurrency", "at most N jobs of the type running at once, cluster-wide"),
    ("--key-concurrency", "key_concurrency", "at most N jobs of one key running at once"),
    ("--rate", "rate", "starts of the type, cluster-wide, e.g. 100/60:20"),
    ("--key-rate", "key_rate", "starts of one key, e.g. 5/1"),
)


def register(sub: Any) -> None:
    """Add ``limits`` (and its ``list`` and ``set``) to ``sub``."""
    top = command(
        sub,
        "limits",
        help="list and change the flow-control limits of job types",
        description=(
            "A job type may be limited in how many of its jobs run at once (cluster-wide, and"
            " per key) and how fast they start (a rate, cluster-wide and per key). Without an"
            " action, list them. A job held back by a limit stays queued and uses no attempt;"
            " 'shardq status ID' says why it waits. Pause a type with 'shardq pause --type'."
        ),
        examples=[
            "shardq limits",
            "shardq limits set api.call --concurrency 20 --rate 100/60:20",
            "shardq limits set api.call --rate none",
        ],
    )
    top.set_defaults(run=list_limits)
    lsub = top.add_subparsers(dest="limits_command", metavar="ACTION")
    p = command(
        lsub,
        "list",
        help="every limited job type: limits, what it uses now, paused, throttled",
        description=(
            "List every job type with controls: RUNNING/CONC is the jobs holding its"
            " concurrency slots now and its limit; KEY CONC the limit per key; RATE its rate"
            " as COUNT/PERs:BURST and TOKENS the starts it allows at once now, of at most"
            " BURST + 1; KEY RATE the rate per key; whether it is paused, and until when a"
            " handler's Throttled holds it (UTC)."
        ),
        examples=["shardq limits list", "shardq --json limits list"],
    )
    p.set_defaults(run=list_limits)

    p = command(
        lsub,
        "set",
        help="change a job type's limits (those not given stay)",
        description=(
            "Change the limits of TYPE and print them; every runner applies them at once. An"
            " option given sets that limit, 'none' removes it, and a limit not given stays."
            " A rate is COUNT/PER[:BURST]: COUNT starts per PER seconds, spread evenly, and"
            " up to BURST more at once after a quiet spell (over any PER seconds at most"
            " COUNT + BURST start). Limits declared on a handler replace these when a runner"
            " starts. "
            + _BAD_INPUT
            + "no option given, a limit that is not a positive integer or 'none', a rate that"
            " is not COUNT/PER[:BURST] (COUNT 1 or more, PER 0.001..86400 seconds), a job"
            " type no runner has handled lately."
        ),
        examples=[
            "shardq limits set api.call --concurrency 20 --key-concurrency 3",
            "shardq limits set api.call --rate 100/60:20 --key-rate 5/1",
            "shardq limits set api.call --concurrency none",
        ],
    )
    p.add_argument("type", metavar="TYPE", help="the job type (see 'limits list')")
    for flag, _, what in _OPTIONS[:2]:
        p.add_argument(flag, metavar="N|none", type=_count, help=what)
    for flag, _, what in _OPTIONS[2:]:
        p.add_argument(flag, metavar="COUNT/PER[:BURST]|none", type=_rate, help=what)
    p.set_defaults(run=set_limits)
    accept_global_options(lsub)


class _Remove:
    """'none' on the command line: remove that limit (an option not given is None)."""


_REMOVE = _Remove()


def _count(text: str) -> int | _Remove:
    if text.strip().lower() == "none":
        return _REMOVE
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"give a positive integer or 'none', not {text!r}")
    return int(text)


def _rate(text: str) -> Rate | _Remove:
    if text.strip().lower() == "none":
        return _REMOVE
    m = _RATE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"give COUNT/PER[:BURST] (e.g. 100/60:20, 100 starts per 60 s) or 'none', not {text!r}"
        )
    try:
        return Rate(int(m["count"]), float(m["per"]), int(m["burst"] or 0))
    except JobError as e:
        raise argparse.ArgumentTypeError(str(e.cause)) from None


def _show_rate(rate: Rate | None) -> str:
    if rate is None:
        return "-"
    return f"{rate.count}/{rate.per:g}s" + (f":{rate.burst}" if rate.burst else "")


def _until(ms: int | None) -> str:
    if ms is None:
        return "-"
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _row(lim: Limit) -> str:
    running = "-" if lim.concurrency is None else f"{lim.running}/{lim.concurrency}"
    tokens = "-"
    if lim.rate is not None and lim.tokens is not None:
        tokens = f"{lim.tokens:.1f}/{lim.rate.burst + 1}"
    key_conc = "-" if lim.key_concurrency is None else str(lim.key_concurrency)
    return (
        f"{lim.job_type[:24]:<24} {running:<13} {key_conc:<9} {_show_rate(lim.rate):<16} "
        f"{tokens:<12} {_show_rate(lim.key_rate):<16} {'yes' if lim.paused else 'no':<6} "
        f"{_until(lim.throttled_until)}"
    )


def _table(rows: list[Limit]) -> str:
    if not rows:
        return "no job type has limits"
    head = (
        f"{'TYPE':<24} {'RUNNING/CONC':<13} {'KEY CONC':<9} {'RATE':<16} {'TOKENS':<12} "
        f"{'KEY RATE':<16} {'PAUSED':<6} THROTTLED UNTIL"
    )
    return "\n".join([head, *(_row(r) for r in rows)])


async def list_limits(args: argparse.Namespace) -> int:
    """Print every job type with controls."""
    async with service(args) as jobs:
        rows = await jobs.limits()
    emit(args, [r.to_dict() for r in rows], _table(rows))
    return 0


async def set_limits(args: argparse.Namespace) -> int:
    """Change one job type's limits and print them."""
    prog = "shardq limits set"
    given = {
        name: None if value is _REMOVE else value
        for _, name, _ in _OPTIONS
        if (value := getattr(args, name)) is not None
    }
    if not given:
        flags = ", ".join(flag for flag, _, _ in _OPTIONS)
        raise Usage(f"give at least one of {flags} ('none' removes that limit)", prog)
    async with service(args) as jobs:
        try:
            lim = await jobs.limit(args.type, **given)
        except JobError as e:
            if e.reason != "Validation":
                raise
            raise Usage(e.cause if isinstance(e.cause, str) else str(e), prog) from None
    emit(args, lim.to_dict(), _table([lim]))
    return 0
