"""Operator commands that complete the set: submit, jobs, wait, stats, runners and drain."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from ..models import PRIORITIES, STATUSES
from ..schema import BadJson, decode_json
from . import command, emit, service
from .failures import Refused, Usage

ENV_TOKEN = "SHARDQ_API_TOKEN"
# Unix seconds of 9999-12-31T23:59:59Z: the last instant an ISO 8601 time can name.
_LAST_SECOND = 253_402_300_799


def register(sub: Any) -> None:
    """Add the operator subcommands to ``sub``."""
    p = command(
        sub,
        "submit",
        help="submit a job (a JSON array payload submits a batch)",
        description=(
            "Store a job of TYPE with the JSON payload and print its id. A JSON array submits"
            " one job per element, in one transaction, and prints their ids (an empty array"
            " is refused). The payload must be strict JSON: no duplicate keys, no NaN or"
            " Infinity, no lone surrogates; a payload that is refused stores nothing."
        ),
        examples=[
            """shardq submit email.send '{"to": "a@b.c"}' --priority high""",
            """shardq submit payment.capture '{"cents": 500}' --key account-42""",
            "shardq submit email.send --payload-file batch.json",
        ],
    )
    p.add_argument("type", metavar="TYPE", help="the job type, e.g. email.send")
    p.add_argument(
        "payload", metavar="JSON", nargs="?", help="the payload as JSON (or give --payload-file)"
    )
    p.add_argument(
        "--payload-file",
        metavar="PATH",
        help="read the JSON payload from this UTF-8 file instead ('-' reads stdin)",
    )
    p.add_argument("--priority", choices=PRIORITIES, default="normal", help="default normal")
    p.add_argument("--key", help="jobs sharing a key run one at a time, in submit order")
    p.add_argument("--dedupe-key", help="return the retained job with this key instead")
    p.add_argument("--max-attempts", type=int, default=None, help="attempts before dead-letter")
    p.add_argument("--delay", type=seconds, default=0.0, help="seconds before it may run")
    p.add_argument("--timeout", type=seconds, default=None, help="seconds each attempt may take")
    p.set_defaults(run=submit)

    p = command(
        sub,
        "jobs",
        help="list jobs as a table, newest first, with filters",
        description=(
            "List jobs as a table, newest first. Every filter narrows the list; a full page"
            " ends with the --before ID that shows the next one."
        ),
        examples=[
            "shardq jobs --status failed --since 2026-01-31T00:00:00Z",
            "shardq --json jobs --type email.send --limit 1000",
        ],
    )
    p.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    p.add_argument("--type", help="only jobs of this type")
    p.add_argument("--priority", choices=PRIORITIES, help="only jobs of this priority")
    p.add_argument("--key", help="only jobs with this ordering key")
    p.add_argument(
        "--since", metavar="TIME", type=instant, help="created at or after (ISO 8601 or Unix s)"
    )
    p.add_argument(
        "--until", metavar="TIME", type=instant, help="created before (ISO 8601 or Unix s)"
    )
    p.add_argument("--limit", type=int, default=50, help="how many (1..1000, default 50)")
    p.add_argument("--before", metavar="ID", help="page: only jobs older than this id")
    p.set_defaults(run=list_jobs)

    p = command(
        sub,
        "wait",
        help="wait until a job is complete, failed or cancelled",
        description=(
            "Wait for the job to finish and print it with its result or error; exit status 0"
            " if it completed, 1 if it failed or was cancelled, or --timeout passed first."
        ),
        examples=["shardq wait 7301245917186048 --timeout 30"],
    )
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--timeout", type=seconds, default=None, help="give up after this many seconds")
    p.set_defaults(run=wait)

    p = command(
        sub,
        "stats",
        help="counts by status and priority (and live rates from a server)",
        description=(
            "Counts of jobs by status, queued jobs by priority and open dead letters, read from"
            " the database. With --server, the live numbers of a running 'shardq serve'"
            " (throughput and latency percentiles from its runner's counters)."
        ),
        examples=["shardq stats", "shardq stats --server http://127.0.0.1:8000 --token $TOKEN"],
    )
    _server_options(p)
    p.set_defaults(run=stats)

    p = command(
        sub,
        "runners",
        help="every runner of the cluster, the shard map and membership events",
        description=(
            "Every live runner (host, pid, start, last heartbeat, shards, running/capacity,"
            " jobs/s), shard hand-overs in progress and recent joins, departures and drains,"
            " read from the database (any process sees the same). An embedded database has"
            " one runner, which only its own process can describe: use --server there."
        ),
        examples=["shardq runners", "shardq runners --server http://127.0.0.1:8000 --token $T"],
    )
    _server_options(p)
    p.set_defaults(run=runners)

    p = command(
        sub,
        "drain",
        help="hand a runner's shards over to the others; it stays up owning nothing",
        description=(
            "Ask the runner RUNNER_ID (see 'shardq runners') to hand every shard over. It stops"
            " starting their jobs at once, lets its running jobs finish (up to the"
            " handover_timeout, after which they run again elsewhere), then owns nothing and"
            " stays up until stopped. Waits until no shard is left with it (up to --timeout);"
            " exit status 1 if it still holds some then."
        ),
        examples=["shardq drain 3f2a9c0d5e7b4a1c9d8e7f6a5b4c3d2e --timeout 60"],
    )
    p.add_argument("runner_id", metavar="RUNNER_ID")
    p.add_argument(
        "--timeout", type=seconds, default=60.0, help="seconds to wait for it (default 60)"
    )
    p.set_defaults(run=drain)


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL", help="e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--token",
        default=None,
        help=f"the server's API token (default: ${ENV_TOKEN}); reads need it",
    )


def seconds(value: str) -> float:
    """An argument type: a finite, non-negative number of seconds."""
    try:
        n = float(value)
    except ValueError:
        n = math.nan
    if not math.isfinite(n) or n < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {value!r}")
    return n


def instant(value: str) -> float:
    """An argument type: an ISO 8601 time (local if it names no zone) or Unix seconds."""
    try:
        t = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an ISO 8601 time or Unix seconds, got {value!r}"
            ) from None
        t = (parsed if parsed.tzinfo else parsed.astimezone()).timestamp()
    if not abs(t) <= _LAST_SECOND:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{value!r} is out of range (years 1..9999)")
    return t


def parse_payload(text: str) -> Any:
    """A payload from strict JSON text, read as the HTTP API reads a body (see
    :func:`shardq.schema.decode_json`); ``JobService`` then checks it like any other."""
    try:
        return decode_json(text.encode("utf-8", "surrogatepass"))
    except BadJson as e:
        raise Refused(f"the JSON payload: {e}") from None


def _payload_text(args: argparse.Namespace) -> str:
    if (args.payload is None) == (args.payload_file is None):
        raise Usage(
            "give the payload as JSON or with --payload-file, not both"
            if args.payload is not None
            else "give the payload: JSON text or --payload-file PATH",
            "shardq submit",
        )
    if args.payload_file is None:
        text: str = args.payload
        return text
    source = args.payload_file
    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = "stdin" if source == "-" else source
        raise Refused(f"{where} is not UTF-8 ({e.reason} at byte {e.start})") from None


def _fetch(args: argparse.Namespace, path: str) -> Any:
    url = args.server.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise Refused(f"--server must be an http(s) URL, got {args.server!r}")
    token = args.token or os.environ.get(ENV_TOKEN)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        hint = f"; give --token or set ${ENV_TOKEN}" if e.code == 401 else ""
        raise RuntimeError(f"{url} answered {e.code}: {e.read()[:300]!r}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


async def submit(args: argparse.Namespace) -> int:
    """Submit one job or a batch."""
    payload = parse_payload(_payload_text(args))
    if payload == []:
        raise Refused("an empty JSON array submits no jobs: give at least one element")
    async with service(args, create=True) as jobs:
        result = await jobs.submit(
            args.type,
            payload,
            priority=args.priority,
            key=args.key,
            dedupe_key=args.dedupe_key,
            max_attempts=args.max_attempts,
            delay=args.delay,
            timeout=args.timeout,
        )
    ids = result if isinstance(result, list) else [result]
    data: Any = {"ids": ids} if isinstance(result, list) else {"id": result}
    emit(args, data, "\n".join(ids))
    return 0


async def list_jobs(args: argparse.Namespace) -> int:
    """Print jobs as a table."""
    if not 1 <= args.limit <= 1000:
        raise ValueError("--limit must be within 1..1000")
    async with service(args) as jobs:
        rows = await jobs.list_jobs(
            status=args.status,
            type=args.type,
            priority=args.priority,
            key=args.key,
            created_after=args.since,
            created_before=args.until,
            limit=args.limit,
            before=args.before,
        )
    lines = [
        f"{'ID':<20} {'STATUS':<10} {'TYPE':<22} {'PRIORITY':<8} {'TRIES':>5}  {'CREATED':<23} KEY"
    ]
    for r in rows:
        j = r.job
        created = r.created_at.isoformat(timespec="milliseconds")[:23] if r.created_at else ""
        lines.append(
            f"{r.id:<20} {r.status:<10} {(j.type if j else '')[:22]:<22} "
            f"{(j.priority if j else ''):<8} {r.attempts:>5}  {created:<23} "
            f"{(j.key or '') if j else ''}"
        )
    if not rows:
        lines = ["no jobs match"]
    elif len(rows) == args.limit:
        lines.append(f"(more: --before {rows[-1].id})")
    emit(args, [r.to_dict() for r in rows], "\n".join(lines))
    return 0


async def wait(args: argparse.Namespace) -> int:
    """Wait for one job to finish."""
    async with service(args) as jobs:
        st = await jobs.wait(args.job_id, timeout=args.timeout)
    text = f"job {st.id}: {st.status} after {st.attempts} attempt(s)"
    if st.result is not None:
        text += f"\nresult: {json.dumps(st.result)}"
    if st.error:
        text += f"\nerror: {st.error}"
    if st.waiting:
        text += f"\nwaiting: {st.waiting}"
    emit(args, st.to_dict(), text)
    return 0 if st.status == "complete" else 1


def _stats_text(data: dict[str, Any]) -> str:
    by_status = data["by_status"]
    lines = ["jobs by status:"]
    lines += [f"  {s:<11} {by_status.get(s, 0):>12,}" for s in STATUSES]
    lines.append("queued by priority:")
    lines += [f"  {p:<11} {data['queued_by_priority'].get(p, 0):>12,}" for p in PRIORITIES]
    lines.append(f"dead letters  {data['dead_letters']:>12,}")
    paused = data.get("paused") or {}
    for what, names in (("job types", "job_types"), ("keys", "keys"), ("schedules", "schedules")):
        if paused.get(names):
            lines.append(f"paused {what}: {', '.join(paused[names])}")
    tp = data.get("throughput")
    if tp:
        lines.append(
            f"throughput    {tp['completed_per_s']:>10,.1f}/s now, "
            f"{tp['completed_per_s_1m']:,.1f}/s over the last minute"
        )
    lat = data.get("latency_ms")
    if lat:

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines.append(
            f"submit-to-start ms  p50 {f(lat['start_p50_ms'])}  p95 {f(lat['start_p95_ms'])}"
            f"  p99 {f(lat['start_p99_ms'])}  ({lat['start_count']:,} starts)"
        )
        lines.append(
            f"run time ms         p50 {f(lat['run_p50_ms'])}  p95 {f(lat['run_p95_ms'])}"
            f"  p99 {f(lat['run_p99_ms'])}"
        )
    return "\n".join(lines)


async def stats(args: argparse.Namespace) -> int:
    """Print counts (and live rates with --server)."""
    if args.server:
        data = _fetch(args, "/api/stats")
    else:
        async with service(args) as jobs:
            st = await jobs.stats()
        data = {
            "by_status": st.by_status,
            "queued_by_priority": st.queued_by_priority,
            "dead_letters": st.dead_letters,
            "paused": st.paused,
        }
    emit(args, data, _stats_text(data))
    return 0


def _runners_text(data: dict[str, Any]) -> str:
    runners = data["runners"]
    lines = [f"mode {data['mode']}, {data['shards']} shards, {len(runners)} runner(s)"]
    for r in runners:
        beat = str(r.get("heartbeat_at", ""))[11:23]
        flags = (" DRAINED" if not r["shard_count"] else " DRAINING") if r.get("draining") else ""
        lines.append(
            f"  {r['id']}  {r.get('host', '?')}:{r.get('pid', '?')}  {r['shard_count']:>4} shards"
            f"  {r['running']}/{r.get('capacity', '?')} running  {r.get('jobs_per_s', 0):,.1f} jobs/s"
            f"  heartbeat {beat}{flags}"
        )
    moving = data.get("handovers", [])
    if moving:
        lines.append(f"{len(moving)} shard(s) being handed over")
    events = data.get("events", [])[:10]
    if events:
        lines.append("recent membership events:")
        lines += [f"  {e['at'][:23]}  {e['kind']:<6}  {e['runner']}" for e in events]
    if data.get("note"):
        lines.append(data["note"])
    return "\n".join(lines)


async def runners(args: argparse.Namespace) -> int:
    """Print every runner, hand-overs and membership events."""
    if args.server:
        data = _fetch(args, "/api/runners")
    else:
        # An embedded database is opened too, although only its runner's own process can
        # describe the runner: a wrong path fails here as for every command that reads.
        async with service(args) as jobs:
            data = (await jobs.cluster()).to_dict()
    emit(args, data, _runners_text(data))
    return 0


async def drain(args: argparse.Namespace) -> int:
    """Drain a runner and wait until it holds no shard."""
    async with service(args) as jobs:
        await jobs.drain(args.runner_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        while True:
            # The runners and shards tables only, at most five times a second.
            view = await jobs.cluster(events=0)
            held = [h.shard for h in view.handovers if h.from_runner == args.runner_id]
            left = held + [s for s, o in enumerate(view.shard_map) if o == args.runner_id]
            if not left or loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
    data = {"runner": args.runner_id, "drained": not left, "shards_left": sorted(left)}
    text = (
        f"runner {args.runner_id} owns no shard now (it stays up until stopped)"
        if not left
        else f"runner {args.runner_id} still holds {len(left)} shard(s) after {args.timeout}s"
    )
    emit(args, data, text)
    return 0 if not left else 1
