"""What each submit's notification costs the runners that do not own its job:
``python -m bench.pg_fanout [--runs 3] [--sizes 1,2,4,8] [fanout] [channels]``.

A runner LISTENs on the channels of its own shards and on the shared channel
``shardq_jobs``; finished jobs go to ``shardq_done``, heard only by processes that wait for
some (the submitter here). Before that split every runner received and decoded the
notification of every submitted job and every finished batch; what remains of that cost is
what ``fanout`` measures, on 1, 2, 4 and 8 real ``shardq worker`` processes (concurrency
64, no-op handler) on a private server (``bench.pg_meter.MeteredServer``), a fresh database
per size, with three loads:

- ``targeted``: jobs submitted one at a time (each awaited, so one notification each), each
  with a key of its own chosen so that its shard belongs to one runner (the owner). The other
  runners do nothing but hear: their CPU per 1,000 jobs is the price of the fan-out.
- ``spread``: the same number of jobs, one at a time, without keys (spread over every
  runner). Each runner's CPU per 1,000 submitted jobs is split into the part spent hearing the
  jobs it does not own (that many jobs at the non-owners' price from ``targeted``) and the
  rest, its owner's share.
- ``saturated``: 32 concurrent single-job submitters (group commit shares statements and
  notifications): jobs/s, and the runners' summed CPU per 1,000 jobs.

Process CPU is read from ``/proc`` before and after each load, less what the process spends
idle (measured over a quiet window first); the server's CPU in each runner's sessions too.

``channels`` measures the server's side of a notification on PostgreSQL itself: 8 listening
sessions, a sender committing one notification per transaction, the listeners on the sent
channel, on another channel of the same database, or in another database. It shows what
splitting the channel would save the server and what it would not (a commit wakes every
listening session of its database, whatever channel it listens on).

Raw runs go to ``bench/results/pg_fanout-<time>.json``; ``--markdown`` prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench.pg_cost import median_of
from bench.pg_meter import (
    Heard,
    MeteredServer,
    apps,
    clock,
    dbname,
    listen,
    process_cpu,
    runner_ids,
    sessions_cpu,
    settled,
    start_worker,
    stop_workers,
)
from shardq import JobService
from shardq.entity import job_entity

RESULTS = Path(__file__).resolve().parent / "results"
SHARDS = 300
SUBMITTERS = 32
IDLE_WINDOW = 3.0


def keys_for(shards: set[int], count: int) -> list[str]:
    """``count`` distinct keys whose jobs hash to one of ``shards``."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        key = f"k{i}"
        if job_entity(0, key, SHARDS).shard in shards:
            out.append(key)
        i += 1
    return out


class Meter:
    """CPU of the worker processes, of their sessions on the server, and of the submitter's
    sessions, read together."""

    def __init__(
        self, admin: asyncpg.Connection, url: str, procs: Sequence[Any], runner_apps: list[str]
    ) -> None:
        self.admin = admin
        self.url = url
        self.procs = procs
        self.apps = runner_apps

    async def read(self) -> dict[str, Any]:
        """A reading: clock, each process's CPU, each runner's sessions' CPU, all sessions."""
        sessions = await sessions_cpu(self.admin, self.url)
        return {
            "t": clock(),
            "proc": [process_cpu(p.pid) for p in self.procs],
            "sessions": [sessions.get(a, 0.0) for a in self.apps],
            "all_sessions": sum(sessions.values()),
        }


def _spent(a: dict[str, Any], b: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds each process and session set spent from ``a`` to ``b``, less idle."""
    dt = b["t"] - a["t"]
    return {
        "seconds": dt,
        "proc": [
            y - x - r * dt for x, y, r in zip(a["proc"], b["proc"], idle["proc"], strict=True)
        ],
        "sessions": [
            y - x - r * dt
            for x, y, r in zip(a["sessions"], b["sessions"], idle["sessions"], strict=True)
        ],
        "all_sessions": b["all_sessions"] - a["all_sessions"],
    }


async def _idle_rates(meter: Meter) -> dict[str, Any]:
    a = await meter.read()
    await asyncio.sleep(IDLE_WINDOW)  # a measuring window, not a wait for something
    b = await meter.read()
    dt = b["t"] - a["t"]
    return {
        "proc": [(y - x) / dt for x, y in zip(a["proc"], b["proc"], strict=True)],
        "sessions": [(y - x) / dt for x, y in zip(a["sessions"], b["sessions"], strict=True)],
    }


async def _one_by_one(web: JobService, heard: Heard, keys: Sequence[str | None]) -> list[str]:
    heard.reset()
    ids = [str(await web.submit("noop", None, key=k)) for k in keys]
    await heard.finished(ids)
    return ids


async def _saturate(web: JobService, heard: Heard, jobs: int) -> list[str]:
    heard.reset()

    async def submitter(n: int) -> list[str]:
        return [str(await web.submit("noop", None)) for _ in range(n)]

    parts = await asyncio.gather(*(submitter(jobs // SUBMITTERS) for _ in range(SUBMITTERS)))
    ids = [i for p in parts for i in p]
    await heard.finished(ids)
    return ids


async def _owned_counts(
    db: asyncpg.Connection, ids: list[str], owners: dict[int, str], runners: list[str]
) -> list[int]:
    rows = await db.fetch(
        "SELECT shard, count(*) FROM jobs WHERE id = ANY($1::bigint[]) GROUP BY shard",
        [int(i) for i in ids],
    )
    counts = dict.fromkeys(runners, 0)
    for shard, n in rows:
        counts[owners[shard]] += n
    return [counts[r] for r in runners]


async def _size(
    server: MeteredServer, admin: asyncpg.Connection, runners: int, jobs: int, saturated: int
) -> dict[str, Any]:
    url = await server.database(f"fanout{runners}")
    procs = [start_worker(url) for _ in range(runners)]
    try:
        db = await asyncpg.connect(url)
        try:
            ids = await runner_ids(db, procs)
            owners = await settled(db, ids)
            meter = Meter(admin, url, procs, await apps(db, ids))
            mine = {s for s, o in owners.items() if o == ids[0]}
            keys = keys_for(mine, jobs)
            heard = Heard()
            out: dict[str, Any] = {"runners": runners, "shards_of_owner": len(mine)}
            async with JobService(url, runner=False) as web:
                await listen(web, heard)
                idle = await _idle_rates(meter)
                out["idle_cpu_per_s"] = idle["proc"]
                for load in ("targeted", "spread", "saturated"):
                    a = await meter.read()
                    cpu0 = server.cpu()
                    if load == "saturated":
                        done = await _saturate(web, heard, saturated)
                    else:
                        done = await _one_by_one(
                            web, heard, keys if load == "targeted" else [None] * jobs
                        )
                    b = await meter.read()
                    spent = _spent(a, b, idle)
                    spent["server_cpu"] = server.cpu() - cpu0
                    spent["jobs"] = len(done)
                    spent["notes"] = dict(heard.notes)
                    spent["owned"] = (
                        [len(done)] + [0] * (runners - 1)
                        if load == "targeted"
                        else await _owned_counts(db, done, owners, ids)
                    )
                    out[load] = spent
        finally:
            await db.close()
    finally:
        stop_workers(procs)
        await server.drop(url)
    return out


def _k(seconds: float, jobs: int) -> float:
    """Milliseconds of CPU per 1,000 jobs."""
    return seconds / jobs * 1e6


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-1,000-job figures of one size's raw measurement."""
    n = raw["runners"]
    t = raw["targeted"]
    jobs = t["jobs"]
    out: dict[str, Any] = {"runners": n}
    out["targeted_jobs_per_s"] = jobs / t["seconds"]
    out["targeted_notes_per_job"] = sum(t["notes"].values()) / jobs
    out["owner_ms"] = _k(t["proc"][0], jobs)
    out["owner_sessions_ms"] = _k(t["sessions"][0], jobs)
    hear = [_k(c, jobs) for c in t["proc"][1:]]
    hear_server = [_k(c, jobs) for c in t["sessions"][1:]]
    out["hearer_ms"] = statistics.median(hear) if hear else None
    out["hearer_sessions_ms"] = statistics.median(hear_server) if hear_server else None
    out["targeted_server_ms"] = _k(t["server_cpu"], jobs)
    hearing_per_job = (out["hearer_ms"] or 0.0) / 1e6  # CPU seconds per job heard
    s = raw["spread"]
    out["spread_jobs_per_s"] = s["jobs"] / s["seconds"]
    runners = []
    for cpu, owned in zip(s["proc"], s["owned"], strict=True):
        total = _k(cpu, s["jobs"])
        hearing = _k((s["jobs"] - owned) * hearing_per_job, s["jobs"])
        runners.append({"total_ms": total, "hearing_ms": hearing, "owned": owned / s["jobs"]})
    out["spread_runner_ms"] = statistics.median(r["total_ms"] for r in runners)
    out["spread_hearing_ms"] = statistics.median(r["hearing_ms"] for r in runners)
    out["spread_hearing_share"] = statistics.median(
        r["hearing_ms"] / r["total_ms"] for r in runners if r["total_ms"] > 0
    )
    out["spread_runners_sum_ms"] = sum(r["total_ms"] for r in runners)
    out["spread_server_ms"] = _k(s["server_cpu"], s["jobs"])
    out["spread_runners"] = runners
    z = raw["saturated"]
    out["saturated_jobs_per_s"] = z["jobs"] / z["seconds"]
    out["saturated_notes_per_job"] = sum(z["notes"].values()) / z["jobs"]
    out["saturated_runners_sum_ms"] = sum(_k(c, z["jobs"]) for c in z["proc"])
    out["saturated_server_ms"] = _k(z["server_cpu"], z["jobs"])
    return out


# -- the server's side: listeners on the sent channel, another channel, another database --------


async def _channel_case(
    server: MeteredServer, admin: asyncpg.Connection, where: str, listeners: int, notes: int
) -> dict[str, float]:
    """``notes`` one-notification commits on channel ``a``; ``listeners`` sessions LISTEN on
    ``a`` or ``b`` of the same database, or on ``a`` in another one (``where``). Raw totals."""
    url = await server.database("chan")
    other = await server.database("chan_other") if where == "other_db" else url
    received = 0

    def got(*_: object) -> None:
        nonlocal received
        received += 1

    conns = [await asyncpg.connect(other) for _ in range(listeners)]
    sender = await asyncpg.connect(url)
    try:
        for c in conns:
            await c.add_listener("b" if where == "other_channel" else "a", got)
        pids = [c.get_server_pid() for c in conns]
        b0 = [process_cpu(p) for p in pids]
        me0 = time.process_time()
        t0 = clock()
        for i in range(notes):
            await sender.execute(f"SELECT pg_notify('a', '{i}')")
        took = clock() - t0
        if where == "same_channel":
            await _until_received(lambda: received, notes * listeners)
        me = time.process_time() - me0
        backends = sum(process_cpu(p) for p in pids) - sum(b0)
        # The counters of the listening database from here on count only these sessions.
        x0 = await _xacts(admin, other)
    finally:
        for c in [*conns, sender]:
            await c.close()
    await _sessions_gone(admin, [url, other])
    x1 = await _xacts(admin, other)
    await server.drop(url)
    if other != url:
        await server.drop(other)
    return {
        "backends_s": backends,
        "client_s": me,
        "xacts_after": x1 - x0,
        "seconds": took,
        "received": received,
    }


async def _xacts(admin: asyncpg.Connection, url: str) -> int:
    n: int = await admin.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", dbname(url)
    )
    return n


async def _until_received(count: Any, want: int, timeout: float = 60.0) -> None:
    deadline = clock() + timeout
    while count() < want:
        if clock() > deadline:
            raise TimeoutError(f"{count()} of {want} notifications received")
        await asyncio.sleep(0.01)


async def _sessions_gone(admin: asyncpg.Connection, urls: list[str]) -> None:
    names = list({dbname(u) for u in urls})
    deadline = clock() + 30
    while await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1)", names
    ):
        if clock() > deadline:
            raise TimeoutError("sessions still open")
        await asyncio.sleep(0.01)


async def measure_channels(
    server: MeteredServer, admin: asyncpg.Connection, listeners: int = 8, notes: int = 2000
) -> dict[str, Any]:
    """Per notification and listening session: the session's server CPU, the transactions it
    ran, and the listening process's CPU (this process, less what sending alone costs it)."""
    alone = await _channel_case(server, admin, "same_channel", 0, notes)
    out: dict[str, Any] = {
        "listeners": listeners,
        "notes": notes,
        "sender_alone_commits_per_s": notes / alone["seconds"],
    }
    per = notes * listeners
    for where in ("same_channel", "other_channel", "other_db"):
        case = await _channel_case(server, admin, where, listeners, notes)
        out[where] = {
            "listener_backend_us": case["backends_s"] / per * 1e6,
            "client_us": (case["client_s"] - alone["client_s"]) / per * 1e6,
            "listener_xacts": case["xacts_after"] / per,
            "received": case["received"] / per,
            "sender_commits_per_s": notes / case["seconds"],
        }
    return out


# -- driver ---------------------------------------------------------------------------------------


async def _run(
    sizes: list[int], jobs: int, saturated: int, fanout: bool, channels: bool
) -> dict[str, Any]:
    server = MeteredServer()
    try:
        admin = await server.admin()
        try:
            result: dict[str, Any] = {}
            if fanout:
                for n in sizes:
                    raw = await _size(server, admin, n, jobs, saturated)
                    result[f"runners_{n}"] = {"raw": raw, **summarise(raw)}
            if channels:
                result["channels"] = await measure_channels(server, admin)
            return result
        finally:
            await admin.close()
    finally:
        server.close()


def markdown(summary: dict[str, Any]) -> str:
    """The tables of a summary (medians of the runs)."""
    lines: list[str] = []
    sizes = [v for k, v in summary.items() if k.startswith("runners_")]
    if sizes:
        lines += [
            "| runners | owner ms / 1k | each other runner ms / 1k (its sessions) |"
            " runner ms / 1k, spread | of which hearing | jobs/s one at a time |"
            " saturated jobs/s | runners' sum ms / 1k, saturated | notes/job saturated |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sizes:
            hearer = (
                "-"
                if r["hearer_ms"] is None
                else f"{r['hearer_ms']:.0f} ({r['hearer_sessions_ms']:.0f})"
            )
            lines.append(
                f"| {r['runners']} | {r['owner_ms']:.0f} | {hearer}"
                f" | {r['spread_runner_ms']:.0f} | {r['spread_hearing_ms']:.0f}"
                f" ({r['spread_hearing_share']:.0%}) | {r['spread_jobs_per_s']:.0f}"
                f" | {r['saturated_jobs_per_s']:.0f} | {r['saturated_runners_sum_ms']:.0f}"
                f" | {r['saturated_notes_per_job']:.2f} |"
            )
    if "channels" in summary:
        c = summary["channels"]
        lines += [
            "",
            f"| {c['listeners']} listening sessions on | listener backend µs / note each"
            " | listener transactions / note each | listening process µs / note each"
            " | notes received each |",
            "|---|---:|---:|---:|---:|",
        ]
        for where in ("same_channel", "other_channel", "other_db"):
            v = c[where]
            lines.append(
                f"| {where.replace('_', ' ')} | {v['listener_backend_us']:.1f}"
                f" | {v['listener_xacts']:.2f} | {v['client_us']:.1f} | {v['received']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements ``--runs`` times on fresh servers; print the medians (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.pg_fanout")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8", help="runner counts")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs of each one-at-a-time load")
    parser.add_argument("--saturated-jobs", type=int, default=12_000, help="jobs of saturated")
    parser.add_argument("--markdown", action="store_true", help="also print the tables")
    parser.add_argument("only", nargs="*", help="fanout and/or channels (default: both)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - {"fanout", "channels"}
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    try:
        sizes = [int(n) for n in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes runner counts separated by commas, e.g. 1,2,4,8")
    if args.runs < 1 or min(args.jobs, args.saturated_jobs) < SUBMITTERS or min(sizes) < 1:
        parser.error(f"--runs and sizes must be at least 1, job counts at least {SUBMITTERS}")
    fanout = not args.only or "fanout" in args.only
    channels = not args.only or "channels" in args.only
    runs = []
    for i in range(args.runs):
        runs.append(asyncio.run(_run(sizes, args.jobs, args.saturated_jobs, fanout, channels)))
        print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
    summary = median_of(runs, keep=("raw", "spread_runners"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pg_fanout-{stamp}.json").write_text(
        json.dumps({"argv": argv or sys.argv[1:], "runs": runs, "median": summary}, indent=1)
    )
    print("median", json.dumps(summary), flush=True)
    if args.markdown:
        print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
