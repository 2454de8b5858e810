"""What a job costs PostgreSQL: ``python -m bench.pg_cost [--runs 3] [MODE ...]``.

Each run starts a private PostgreSQL server (``bench.pg_meter.MeteredServer``), and for each
mode a fresh database, one ``shardq worker`` process (concurrency 64, no-op handler) and a
submitting ``JobService(runner=False)`` in this process. It reads the server's counters before
the worker starts and after every session of the database has ended, and subtracts the same
reading of an ``idle`` phase (the worker starts, takes its shards, and stops; nothing is
submitted), so what is left is the cost of the jobs. Per job:

- WAL: bytes (``pg_current_wal_lsn()`` difference), records, full-page images, and the WAL
  writes and flushes (``pg_stat_wal``: ``wal_sync`` is the fsyncs), with the mean flush time;
- transactions committed (``pg_stat_database.xact_commit``);
- statements executed (the sum of ``pg_stat_statements.calls``, top-level statements;
  ``BEGIN``/``COMMIT`` count as statements), and the most frequent of them;
- notifications on ``shardq_jobs`` (as the submitter's listening connection receives them):
  ``s`` announces submitted jobs, ``f`` finished ones; payload bytes;
- server CPU (the postmaster and all its processes, from ``/proc``), and the part of it in
  the runner's sessions and in the submitter's; the runner process's and the submitter
  process's own CPU (from the moment the runner owns every shard until every job is announced
  finished);
- rows written per table (``pg_stat_user_tables``: inserted, updated, of which HOT, deleted).

Modes: ``single`` (one ``submit`` at a time, each awaited), ``concurrent`` (32 tasks in one
process, each submitting one job at a time: group commit shares statements), ``batch100``
and ``batch1000`` (``submit`` of a list). ``commits`` is not a job mode: it measures how
many durable one-row commits per second the server takes from 1, 4 and 16 connections, with
and without a ``pg_notify`` in each transaction (a notifying commit holds a lock shared by
the whole server until its WAL flush has ended).

The server has autovacuum off (a vacuum would land in one run and not another); ``--vacuum``
runs a ``VACUUM`` of the job tables after each mode and reports its WAL and time per job.
Raw runs go to ``bench/results/pg_cost-<time>.json``; ``--markdown`` prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.pg_meter import (
    Counters,
    Heard,
    MeteredServer,
    clock,
    ended,
    listen,
    process_cpu,
    runner_ids,
    sessions_cpu,
    settled,
    start_worker,
    stop_workers,
)
from shardq import JobService

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("single", "concurrent", "batch100", "batch1000")
#: Jobs per mode unless ``--jobs`` says otherwise.
JOBS = {"single": 4000, "concurrent": 10_000, "batch100": 20_000, "batch1000": 20_000}
SUBMITTERS = 32
JOB_TABLES = ("jobs", "job_queue", "job_dlq")


async def _submit(web: JobService, mode: str, jobs: int) -> list[str]:
    ids: list[str] = []
    if mode == "single":
        for _ in range(jobs):
            ids.append(str(await web.submit("noop", None)))
    elif mode == "concurrent":

        async def one_by_one(n: int) -> list[str]:
            return [str(await web.submit("noop", None)) for _ in range(n)]

        per = jobs // SUBMITTERS
        for part in await asyncio.gather(*(one_by_one(per) for _ in range(SUBMITTERS))):
            ids += part
    elif mode.startswith("batch"):
        size = int(mode.removeprefix("batch"))
        for _ in range(jobs // size):
            ids += [str(i) for i in await web.submit("noop", [None] * size)]
    return ids


async def _phase(
    server: MeteredServer, admin: asyncpg.Connection, mode: str, jobs: int, vacuum: bool
) -> dict[str, Any]:
    """One mode on a fresh database: the raw differences of every counter."""
    url = await server.database(f"cost_{mode}")
    try:
        await admin.execute("CHECKPOINT")
        if server.statements:
            await admin.execute("SELECT pg_stat_statements_reset()")
        before = await Counters.read(admin, url, server.statements)
        cpu0 = server.cpu()
        proc = start_worker(url)
        try:
            db = await asyncpg.connect(url)
            try:
                runner = (await runner_ids(db, [proc]))[0]
                await settled(db, [runner])
                runner_app = await db.fetchval(
                    "SELECT app FROM shardq_runners WHERE id = $1", runner
                )
            finally:
                await db.close()
            heard = Heard()
            async with JobService(url, runner=False) as web:
                await listen(web, heard)
                web_app = str(getattr(web.driver, "tag", ""))
                t0, run0, me0 = clock(), process_cpu(proc.pid), time.process_time()
                ids = await _submit(web, mode, jobs)
                submitted = clock() - t0
                await heard.finished(ids)
                seconds = clock() - t0
                runner_cpu = process_cpu(proc.pid) - run0
                submitter_cpu = time.process_time() - me0
                live = await sessions_cpu(admin, url)
        finally:
            stop_workers([proc])
        await ended(admin, url)
        after = await Counters.read(admin, url, server.statements)
        cpu = server.cpu() - cpu0
        out: dict[str, Any] = {
            "mode": mode,
            "jobs": len(ids),
            "seconds": seconds,
            "submit_seconds": submitted,
            "runner_cpu_s": runner_cpu,
            "submitter_cpu_s": submitter_cpu,
            "server_cpu_s": cpu,
            "runner_sessions_cpu_s": live.get(runner_app, 0.0),
            "submitter_sessions_cpu_s": live.get(web_app, 0.0),
            "notes": dict(heard.notes),
            "noted_jobs": dict(heard.jobs),
            "note_bytes": heard.bytes,
            "counters": after.delta(before),
        }
        if vacuum:
            out["vacuum"] = await _vacuum(admin, url)
        return out
    finally:
        await server.drop(url)


async def _vacuum(admin: asyncpg.Connection, url: str) -> dict[str, float]:
    lsn = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8"
    w0 = await admin.fetchval(lsn)
    conn = await asyncpg.connect(url)
    try:
        t0 = clock()
        await conn.execute(f"VACUUM {', '.join(JOB_TABLES)}")
        took = clock() - t0
    finally:
        await conn.close()
    return {"wal_bytes": await admin.fetchval(lsn) - w0, "seconds": took}


def _per_job(phase: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """Per-job figures of a phase, the idle phase's counts subtracted."""
    n = phase["jobs"]
    c: Counters = phase["counters"].delta(idle["counters"])
    s = c.server
    out: dict[str, Any] = {
        "jobs": n,
        "jobs_per_s": n / phase["seconds"],
        "submits_per_s": n / phase["submit_seconds"],
        "wal_bytes": s["wal_lsn_bytes"] / n,
        "wal_records": s["wal_records"] / n,
        "wal_fpi": s["wal_fpi"] / n,
        "wal_writes": s["wal_write"] / n,
        "wal_syncs": s["wal_sync"] / n,
        "wal_sync_ms_each": s["wal_sync_time"] / s["wal_sync"] if s["wal_sync"] else 0.0,
        "commits": s["xact_commit"] / n,
        "rollbacks": s["xact_rollback"] / n,
        "server_cpu_us": (phase["server_cpu_s"] - idle["server_cpu_s"]) / n * 1e6,
        "runner_sessions_cpu_us": (phase["runner_sessions_cpu_s"] - idle["runner_sessions_cpu_s"])
        / n
        * 1e6,
        "submitter_sessions_cpu_us": (
            phase["submitter_sessions_cpu_s"] - idle["submitter_sessions_cpu_s"]
        )
        / n
        * 1e6,
        "runner_cpu_us": phase["runner_cpu_s"] / n * 1e6,
        "submitter_cpu_us": phase["submitter_cpu_s"] / n * 1e6,
        "notes_s": (phase["notes"].get("s", 0) - idle["notes"].get("s", 0)) / n,
        "notes_f": (phase["notes"].get("f", 0) - idle["notes"].get("f", 0)) / n,
        "notes": (sum(phase["notes"].values()) - sum(idle["notes"].values())) / n,
        "note_bytes": (phase["note_bytes"] - idle["note_bytes"]) / n,
    }
    if c.statements:
        out["statements"] = sum(v["calls"] for v in c.statements.values()) / n
        top = sorted(c.statements.items(), key=lambda kv: -kv[1]["calls"])[:8]
        out["top_statements"] = [
            {"query": q[:120], "per_job": v["calls"] / n, "ms_each": v["ms"] / v["calls"]}
            for q, v in top
            if v["calls"] > 0
        ]
    out["rows"] = {
        t: {k.removeprefix("n_tup_"): v / n for k, v in cols.items()}
        for t, cols in c.tables.items()
        if any(cols.values())
    }
    if "vacuum" in phase:
        out["vacuum_wal_bytes"] = phase["vacuum"]["wal_bytes"] / n
        out["vacuum_us"] = phase["vacuum"]["seconds"] / n * 1e6
    return out


# -- durable commits per second, with and without a notification ------------------------------


async def _commits(url: str, clients: int, notify: bool, seconds: float) -> int:
    sql = (
        "WITH i AS (INSERT INTO t (v) VALUES ($1) RETURNING v)"
        " SELECT pg_notify('bench_commits', v::text) FROM i"
        if notify
        else "INSERT INTO t (v) VALUES ($1)"
    )
    conns = [await asyncpg.connect(url) for _ in range(clients)]
    done = 0
    try:
        end = clock() + seconds

        async def loop(conn: asyncpg.Connection) -> None:
            nonlocal done
            while clock() < end:
                await conn.fetch(sql, done)
                done += 1

        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return done


async def measure_commits(
    server: MeteredServer,
    admin: asyncpg.Connection,
    sizes: tuple[int, ...] = (1, 4, 16),
    seconds: float = 3.0,
) -> dict[str, Any]:
    """Durable one-row commits per second from ``sizes`` connections, plain and notifying
    (one session LISTENs, as a runner would), with the WAL flushes per commit."""
    url = await server.database("commits")
    out: dict[str, Any] = {}
    listener = await asyncpg.connect(url)
    try:
        await listener.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v bigint)")
        await listener.add_listener("bench_commits", lambda *a: None)
        for clients in sizes:
            for notify in (False, True):
                w0 = await admin.fetchrow("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
                n = await _commits(url, clients, notify, seconds)
                await ended(admin, url, leave=1)  # the listener stays
                w1 = await admin.fetchrow("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
                assert w0 is not None and w1 is not None
                syncs = w1[0] - w0[0]
                out[f"{'notify' if notify else 'plain'}_{clients}"] = {
                    "clients": clients,
                    "notify": notify,
                    "commits_per_s": n / seconds,
                    "commits_per_sync": n / syncs if syncs else None,
                    "sync_ms_each": (w1[1] - w0[1]) / syncs if syncs else None,
                }
    finally:
        await listener.close()
        await server.drop(url)
    return out


# -- driver -------------------------------------------------------------------------------------


async def _run(
    modes: list[str], jobs: dict[str, int], commits: bool, vacuum: bool
) -> dict[str, Any]:
    server = MeteredServer()
    try:
        admin = await server.admin()
        try:
            result: dict[str, Any] = {"statements_loaded": server.statements}
            if modes:
                idle = await _phase(server, admin, "idle", 0, vacuum=False)
                for mode in modes:
                    phase = await _phase(server, admin, mode, jobs[mode], vacuum)
                    result[mode] = _per_job(phase, idle)
            if commits:
                result["commits"] = await measure_commits(server, admin)
            return result
        finally:
            await admin.close()
    finally:
        server.close()


def median_of(
    runs: list[dict[str, Any]], keep: tuple[str, ...] = ("rows", "top_statements")
) -> dict[str, Any]:
    """The median of each number across ``runs`` (same keys); ``keep`` keys from the first."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if key in keep:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = median_of([r[key] for r in runs], keep)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            vals = [r[key] for r in runs if r.get(key) is not None]
            out[key] = statistics.median(vals) if vals else None
        else:
            out[key] = value
    return out


_ROWS = (
    ("jobs/s (submit to last finish)", "jobs_per_s", 0),
    ("WAL bytes", "wal_bytes", 0),
    ("WAL records", "wal_records", 2),
    ("WAL full-page images", "wal_fpi", 2),
    ("WAL flushes (fsync)", "wal_syncs", 3),
    ("mean WAL flush, ms", "wal_sync_ms_each", 3),
    ("transactions committed", "commits", 2),
    ("statements", "statements", 2),
    ("notifications (s / f)", None, 3),
    ("notification bytes", "note_bytes", 0),
    ("server CPU, µs", "server_cpu_us", 0),
    ("… in the runner's sessions, µs", "runner_sessions_cpu_us", 0),
    ("… in the submitter's sessions, µs", "submitter_sessions_cpu_us", 0),
    ("runner process CPU, µs", "runner_cpu_us", 0),
    ("submitter process CPU, µs", "submitter_cpu_us", 0),
    ("VACUUM afterwards: WAL bytes", "vacuum_wal_bytes", 0),
    ("VACUUM afterwards: µs", "vacuum_us", 1),
)


def _cost_table(summary: dict[str, Any], modes: list[str]) -> list[str]:
    lines = ["| per job | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for label, key, digits in _ROWS:
        if key is not None and key not in summary[modes[0]]:
            continue
        cells = []
        for m in modes:
            r = summary[m]
            if key is None:
                cells.append(f"{r['notes_s']:.{digits}f} / {r['notes_f']:.{digits}f}")
            elif r.get(key) is None:
                cells.append("-")
            else:
                cells.append(f"{r[key]:,.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _rows_table(summary: dict[str, Any], modes: list[str]) -> list[str]:
    lines = ["| rows per job (ins / upd (HOT) / del) | " + " | ".join(modes) + " |"]
    lines.append("|---|" + "---:|" * len(modes))
    for t in sorted({t for m in modes for t in summary[m]["rows"]}):
        cells = []
        for m in modes:
            v = summary[m]["rows"].get(t)
            cells.append(
                "-"
                if v is None
                else f"{v['ins']:.2f} / {v['upd']:.2f} ({v['hot_upd']:.2f}) / {v['del']:.2f}"
            )
        if any("1" <= ch <= "9" for c in cells for ch in c):  # rows that round to zero go
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def _commits_table(commits: dict[str, Any]) -> list[str]:
    lines = [
        "| connections | plain commits/s | per flush | flush ms"
        " | notifying commits/s | per flush | flush ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, p in commits.items():
        if not key.startswith("plain_"):
            continue
        n = commits["notify_" + key.removeprefix("plain_")]
        lines.append(
            f"| {p['clients']} | {p['commits_per_s']:,.0f} | {p['commits_per_sync'] or 0:.2f}"
            f" | {p['sync_ms_each'] or 0:.2f} | {n['commits_per_s']:,.0f}"
            f" | {n['commits_per_sync'] or 0:.2f} | {n['sync_ms_each'] or 0:.2f} |"
        )
    return lines


def markdown(summary: dict[str, Any], modes: list[str]) -> str:
    """The tables of a summary (medians of the runs)."""
    lines: list[str] = []
    if modes:
        lines += [*_cost_table(summary, modes), "", *_rows_table(summary, modes)]
    if "commits" in summary:
        lines += ["", *_commits_table(summary["commits"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the modes ``--runs`` times on fresh servers; print the medians (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.pg_cost")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, help="jobs per mode (default: per mode)")
    parser.add_argument("--vacuum", action="store_true", help="VACUUM after each mode")
    parser.add_argument("--markdown", action="store_true", help="also print the tables")
    parser.add_argument("only", nargs="*", help=f"any of: {', '.join(MODES)}, commits")
    args = parser.parse_args(argv)
    unknown = set(args.only) - {*MODES, "commits"}
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    if args.runs < 1 or (args.jobs is not None and args.jobs < 1000):
        parser.error("--runs must be at least 1 and --jobs at least 1000")
    modes = [m for m in MODES if not args.only or m in args.only]
    commits = not args.only or "commits" in args.only
    jobs = {m: args.jobs or JOBS[m] for m in MODES}
    runs = []
    for i in range(args.runs):
        runs.append(asyncio.run(_run(modes, jobs, commits, args.vacuum)))
        print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
    summary = median_of(runs)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pg_cost-{stamp}.json").write_text(
        json.dumps({"argv": argv or sys.argv[1:], "runs": runs, "median": summary}, indent=1)
    )
    print("median", json.dumps(summary), flush=True)
    if args.markdown:
        print(markdown(summary, modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
