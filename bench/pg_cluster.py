"""Cluster-mode measurements on PostgreSQL: ``python -m bench.pg_cluster [--runs 3]``.

Each measurement runs on a fresh database with real ``shardq worker`` processes (this module
is also their ``--app``) and returns a dict; ``main`` prints the median of ``--runs`` runs:

- ``latency``: submit-to-handler-start on an idle one-runner cluster, one job at a time (the
  handler reports its start over UDP with CLOCK_MONOTONIC, comparable between processes);
- ``throughput``: no-op jobs/s one runner processes from a backlog (first start to last
  finish, from the jobs' own history);
- ``submitters``: 50 concurrent single-job submitters in one process (one runner running);
- ``failover``: kill -9 of a runner to the first re-run of one of its in-flight jobs on the
  other runner;
- ``idle``: every statement a runner sends in 10 idle seconds (``log_statement = all``);
- ``scaling``: I/O-bound jobs (each handler awaits 20 ms) on 1, 2, 4 and 8 runners of
  concurrency 32: processed jobs/s against the ideal (runners x 32 / 20 ms), submit-to-start
  p50/p99 under that load, and kill -9 of one runner to the first re-run of its in-flight
  jobs (p50/max over ``--kills``);
- ``cycle``: where a slot's cycle goes on one runner under the ``scaling`` load (a runner in
  this process, its steps and handler timed);
- ``moves``: the fraction of shards that change owner as runners join one by one (1 -> 8)
  and leave (8 -> 1), computed from the hash ring and observed on real workers.

``python -m bench.pg_cluster scaling --report`` also writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from shardq import JobService, current_job
from shardq.sharding import HashRing

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_LOG = os.environ.get("BENCH_PG_LOG", "/var/log/postgresql/postgresql-15-main.log")
ROOT = Path(__file__).resolve().parent.parent

#: The application the worker processes run (``--app bench.pg_cluster:app``).
app = JobService(concurrency=int(os.environ.get("BENCH_CONCURRENCY", "64")))


def clock() -> float:
    """CLOCK_MONOTONIC seconds: the same clock in every process of this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@app.handler("noop")
async def noop(payload: Any) -> None:
    """Nothing."""
    return None


def _report(payload: dict[str, Any]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        msg = f"{payload['i']} {os.getpid()} {clock()}"
        s.sendto(msg.encode(), ("127.0.0.1", int(payload["port"])))


@app.handler("ping")
async def ping(payload: dict[str, Any]) -> None:
    """Report the start (job number, pid, clock) to the bench over UDP."""
    _report(payload)


@app.handler("io")
async def io(payload: Any) -> None:
    """An I/O-bound job: awaits 20 ms."""
    await asyncio.sleep(0.02)


@app.handler("hold")
async def hold(payload: dict[str, Any]) -> None:
    """Report the start, then run for ``payload["s"]`` seconds."""
    _report(payload)
    await asyncio.sleep(float(payload["s"]))


# -- plumbing ----------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[str]:
    name = f"bench_pgc_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        async with JobService(url, runner=False):  # applies the migrations
            pass
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _worker(url: str, concurrency: int = 64) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BENCH_CONCURRENCY=str(concurrency))
    cmd = [sys.executable, "-m", "shardq", "--database-url", url, "worker"]
    cmd += ["--app", "bench.pg_cluster:app"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = clock() + timeout
    while True:
        value = await check()
        if value:
            return value
        if clock() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def _owning(db: asyncpg.Connection, runners: int) -> None:
    async def ready() -> bool:
        rows = await db.fetch(
            "SELECT owner, count(*) FROM shardq_shards WHERE owner IS NOT NULL GROUP BY owner"
        )
        return len(rows) == runners and sum(r[1] for r in rows) == 300

    await _until(ready)


class _Starts(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, int, float]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        i, pid, at = data.decode().split()
        self.queue.put_nowait((int(i), int(pid), float(at)))


async def _udp() -> tuple[asyncio.DatagramTransport, _Starts, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Starts, local_addr=("127.0.0.1", 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


def _size(path: str) -> int:
    return os.path.getsize(path)


def _read_from(path: str, offset: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()


# -- measurements --------------------------------------------------------------------------


async def measure_latency(n: int = 400, warmup: int = 40) -> dict[str, float]:
    """Submit-to-start (ms) on an idle one-runner cluster, one job at a time."""
    async with _database() as url:
        proc = _worker(url)
        transport, starts, port = await _udp()
        try:
            db = await asyncpg.connect(url)
            await _owning(db, 1)
            await db.close()
            samples = []
            async with JobService(url, runner=False) as web:
                for i in range(n):
                    t0 = clock()
                    await web.submit("ping", {"port": port, "i": i})
                    _, _, at = await asyncio.wait_for(starts.queue.get(), 10)
                    samples.append((at - t0) * 1000)
                    await asyncio.sleep(0.005)  # idle between jobs
        finally:
            transport.close()
            _stop([proc])
    kept = samples[warmup:]
    return {"p50_ms": _pct(kept, 0.5), "p99_ms": _pct(kept, 0.99), "n": len(kept)}


async def measure_throughput(n: int = 30_000) -> dict[str, float]:
    """No-op jobs/s of one runner draining a backlog of ``n`` jobs."""
    async with _database() as url:
        async with JobService(url, runner=False) as web:
            for _ in range(0, n, 1000):
                await web.submit("noop", [None] * 1000)
        proc = _worker(url)
        try:
            db = await asyncpg.connect(url)

            async def drained() -> bool:
                left = await db.fetchval(
                    "SELECT count(*) FROM jobs WHERE state IN ('queued', 'processing')"
                )
                return left == 0

            await _until(drained, timeout=300)
            first, last, done = await db.fetchrow(
                "SELECT min((history->1->>1)::bigint), max(finished_at), count(*) FROM jobs"
                " WHERE state = 'complete'"
            )
            await db.close()
        finally:
            _stop([proc])
    seconds = (last - first) / 1000
    return {"jobs_per_s": done / seconds, "jobs": done, "seconds": seconds}


async def measure_submitters(submitters: int = 50, seconds: float = 5.0) -> dict[str, float]:
    """``submitters`` tasks in one process, each submitting one job at a time."""
    async with _database() as url:
        proc = _worker(url)
        try:
            db = await asyncpg.connect(url)
            await _owning(db, 1)
            await db.close()
            latencies: list[float] = []
            async with JobService(url, runner=False) as web:
                end = clock() + seconds

                async def submitter() -> None:
                    while clock() < end:
                        t0 = clock()
                        await web.submit("noop", None)
                        latencies.append((clock() - t0) * 1000)

                t0 = clock()
                await asyncio.gather(*(submitter() for _ in range(submitters)))
                elapsed = clock() - t0
        finally:
            _stop([proc])
    return {
        "submits_per_s": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
    }


async def measure_failover(jobs: int = 40) -> dict[str, float]:
    """Seconds from kill -9 of a runner to the first re-run of its in-flight job elsewhere."""
    async with _database() as url:
        procs = [_worker(url), _worker(url)]
        transport, starts, port = await _udp()
        try:
            db = await asyncpg.connect(url)
            await _owning(db, 2)
            await db.close()
            victim, survivor = procs
            ran_on: dict[int, set[int]] = {}
            async with JobService(url, runner=False) as web:
                await web.submit("hold", [{"port": port, "i": i, "s": 60} for i in range(jobs)])
                while len(ran_on) < jobs:  # every job is running, on one runner or the other
                    i, pid, _ = await asyncio.wait_for(starts.queue.get(), 10)
                    ran_on.setdefault(i, set()).add(pid)
                victim.send_signal(signal.SIGKILL)
                killed = clock()
                victim.wait()
                mine = {i for i, pids in ran_on.items() if victim.pid in pids}
                while True:
                    i, pid, at = await asyncio.wait_for(starts.queue.get(), 30)
                    if i in mine and pid == survivor.pid:
                        return {"kill_to_rerun_s": at - killed, "in_flight": len(mine)}
        finally:
            transport.close()
            _stop(procs)


async def measure_idle(seconds: float = 10.0) -> dict[str, Any]:
    """Every statement an idle runner sends in ``seconds`` (from the server's query log)."""
    async with _database() as url:
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(url)
        await admin.execute(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
        proc = _worker(url)
        try:
            await _owning(admin, 1)
            await asyncio.sleep(1.0)  # let start-up finish
            offset = _size(PG_LOG)
            await asyncio.sleep(seconds)
            lines = _read_from(PG_LOG, offset)
        finally:
            _stop([proc])
            await admin.close()
    # A log entry starts with a timestamp; a multi-line statement continues on the next lines.
    entries: list[str] = []
    for line in lines:
        if line[:2] == "20" or not entries:
            entries.append(line)
        else:
            entries[-1] += " " + line
    statements: dict[str, int] = {}
    for entry in entries:
        if f"@{name} LOG:" not in entry or not any(
            f"LOG:  {w}" in entry for w in ("statement:", "execute")
        ):
            continue
        text = entry.split("LOG:  ", 1)[1].split(": ", 1)[-1]
        text = " ".join(text.split())[:100]
        statements[text] = statements.get(text, 0) + 1
    return {"seconds": seconds, "statements": statements, "total": sum(statements.values())}


# -- scaling ---------------------------------------------------------------------------------

#: Jobs/s one runner of concurrency 32 could do if a slot cycle took only the handler's 20 ms.
IDEAL_PER_RUNNER = 32 / 0.020
_SHARDS = 300


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _runner_ids(
    db: asyncpg.Connection, procs: Sequence[subprocess.Popen[bytes]]
) -> list[str]:
    async def known() -> list[str] | None:
        rows = {r[0]: r[1] for r in await db.fetch("SELECT pid, id FROM shardq_runners")}
        ids = [rows.get(p.pid) for p in procs]
        return None if None in ids else [i for i in ids if i is not None]

    ids: list[str] = await _until(known)
    return ids


async def _settled(db: asyncpg.Connection, runners: Sequence[str]) -> dict[int, str]:
    """Wait until exactly ``runners`` serve every shard; the shard map then."""

    async def ready() -> dict[int, str] | None:
        rows = await db.fetch("SELECT shard, owner FROM shardq_shards WHERE owner IS NOT NULL")
        owners = {r[0]: r[1] for r in rows}
        done = len(owners) == _SHARDS and set(owners.values()) == set(runners)
        return owners if done else None

    owners: dict[int, str] = await _until(ready, timeout=60)
    return owners


async def _keep_loaded(url: str, target: int, stop: asyncio.Event) -> int:
    """Keep about ``target`` jobs unfinished (queued or running) until ``stop``; returns how
    many were submitted."""
    submitted = 0
    db = await asyncpg.connect(url)
    try:
        async with JobService(url, runner=False) as web:
            while not stop.is_set():
                missing = target - await db.fetchval("SELECT count(*) FROM job_queue")
                if missing > 0:
                    await web.submit("io", [None] * min(missing, 1000))
                    submitted += min(missing, 1000)
                await asyncio.sleep(0.01)
    finally:
        await db.close()
    return submitted


def _cpu_times() -> tuple[int, int]:
    """The machine's busy and total CPU time so far (jiffies, all cores, ``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


async def _window(db: asyncpg.Connection, t0: int, t1: int) -> dict[str, float]:
    done = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE finished_at >= $1 AND finished_at < $2", t0, t1
    )
    row = await db.fetchrow(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s - created_at),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY s - created_at)"
        " FROM (SELECT created_at, (history::jsonb->1->>1)::bigint AS s FROM jobs"
        "       WHERE attempts >= 1 AND updated_at >= $1) x WHERE s >= $1 AND s < $2",
        t0,
        t1,
    )
    assert row is not None
    return {
        "jobs_per_s": done / ((t1 - t0) / 1000),
        "start_p50_ms": row[0],
        "start_p99_ms": row[1],
    }


async def _kill_and_rerun(db: asyncpg.Connection, proc: subprocess.Popen[bytes]) -> float | None:
    """kill -9 ``proc`` and the seconds until one of the jobs it was running starts again
    elsewhere (None if none does within 10 s). Its in-flight jobs are the only ones that
    start twice (a 20 ms sleep never fails); they were submitted within the last seconds."""
    proc.send_signal(signal.SIGKILL)
    killed = _now_ms()
    proc.wait()

    async def rerun() -> int | None:
        at: int | None = await db.fetchval(
            "SELECT min((e->>1)::bigint) FROM jobs j, jsonb_array_elements(j.history::jsonb) e"
            " WHERE j.created_at >= $1::bigint - 10000 AND j.attempts >= 2"
            " AND e->>0 = 'processing' AND (e->>1)::bigint > $1::bigint",
            killed,
        )
        return at

    with contextlib.suppress(TimeoutError):
        at: int = await _until(rerun, timeout=10)
        return (at - killed) / 1000
    return None


async def _scale_one(runners: int, seconds: float, kills: int) -> dict[str, Any]:
    async with _database() as url:
        procs = [_worker(url, 32) for _ in range(runners)]
        db = await asyncpg.connect(url)
        stop = asyncio.Event()
        loader: asyncio.Task[int] | None = None
        try:
            ids = await _runner_ids(db, procs)
            await _settled(db, ids)
            # Four jobs per slot: the queue never runs dry between the submitter's top-ups
            # (every 10 ms), so the runners, not the submitter, set the pace.
            loader = asyncio.create_task(_keep_loaded(url, runners * 32 * 4, stop))
            await asyncio.sleep(2.0)  # warm-up
            t0, cpu0 = _now_ms(), _cpu_times()
            await asyncio.sleep(seconds)
            t1, cpu1 = _now_ms(), _cpu_times()
            out: dict[str, Any] = {"runners": runners, **await _window(db, t0, t1)}
            busy, total = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            out["cpu_busy"] = busy / total
            jobs = out["jobs_per_s"] * (t1 - t0) / 1000
            out["cpu_ms_per_job"] = busy * 1000 / os.sysconf("SC_CLK_TCK") / jobs
            out["ideal_per_s"] = runners * IDEAL_PER_RUNNER
            out["efficiency"] = out["jobs_per_s"] / out["ideal_per_s"]
            failovers: list[float] = []
            for k in range(kills if runners > 1 else 0):
                i = k % runners
                took = await _kill_and_rerun(db, procs[i])
                if took is not None:
                    failovers.append(took)
                procs[i] = _worker(url, 32)
                ids[i] = (await _runner_ids(db, [procs[i]]))[0]
                await _settled(db, ids)
            if failovers:
                out["failover_p50_s"] = statistics.median(failovers)
                out["failover_max_s"] = max(failovers)
                out["failovers"] = failovers
        finally:
            stop.set()
            if loader is not None:
                with contextlib.suppress(Exception):
                    await loader
            await db.close()
            _stop(procs)
    return out


async def measure_scaling(
    sizes: Sequence[int] = (1, 2, 4, 8), seconds: float = 8.0, kills: int = 10, runs: int = 1
) -> dict[str, Any]:
    """Processed jobs/s of 20 ms I/O-bound jobs on each cluster size, against the ideal;
    submit-to-start under that load; kill -9 to the first re-run of the victim's jobs.

    Over ``runs`` rounds (each size once per round, sizes interleaved): the median of each
    figure, and failover p50 / max over the kills of every round."""
    rounds = [{n: await _scale_one(n, seconds, kills) for n in sizes} for _ in range(runs)]
    out: dict[str, Any] = {}
    for n in sizes:
        per = [r[n] for r in rounds]
        merged: dict[str, Any] = {"runners": n, "runs": len(per)}
        for key in ("jobs_per_s", "start_p50_ms", "start_p99_ms", "cpu_busy", "cpu_ms_per_job"):
            merged[key] = statistics.median(r[key] for r in per)
        merged["efficiency_runs"] = [r["efficiency"] for r in per]
        merged["ideal_per_s"] = per[0]["ideal_per_s"]
        merged["efficiency"] = merged["jobs_per_s"] / merged["ideal_per_s"]
        failovers = [f for r in per for f in r.get("failovers", [])]
        if failovers:
            merged["failovers"] = failovers
            merged["failover_p50_s"] = statistics.median(failovers)
            merged["failover_max_s"] = max(failovers)
        out[f"runners_{n}"] = merged
    return out


async def measure_cycle(seconds: float = 6.0) -> dict[str, float]:
    """Where a slot's cycle goes (ms, means) on one in-process runner of concurrency 32 under
    the scaling load: the 20 ms handler, its overshoot, the wait for a step, the step's round
    trip (which writes the outcome and starts the next job) and the launch after its reply."""
    async with _database() as url:
        jobs = JobService(url, concurrency=32)
        begin: dict[int, float] = {}
        end: dict[int, float] = {}
        sent: dict[int, tuple[float, float]] = {}
        started: dict[int, float] = {}

        @jobs.handler("io")
        async def timed_io(payload: Any) -> None:
            job = int(current_job().job_id)
            begin[job] = clock()
            await asyncio.sleep(0.02)
            end[job] = clock()

        async with jobs:
            driver: Any = jobs.driver
            advance = driver.advance

            async def timed(outcomes: Any, starts: Any, token: str, now: int) -> Any:
                t = clock()
                done = await advance(outcomes, starts, token, now)
                reply = clock()
                sent.update((o.id, (t, reply)) for o in outcomes)
                started.update((i, reply) for i in starts)
                return done

            driver.advance = timed
            stop = asyncio.Event()
            loader = asyncio.create_task(_keep_loaded(url, 64, stop))
            await asyncio.sleep(seconds)
            stop.set()
            submitted = await loader
    ids = [i for i in end if i in sent and i in started]
    parts = {
        "handler_overshoot_ms": [end[i] - begin[i] - 0.02 for i in ids],
        "end_to_step_sent_ms": [sent[i][0] - end[i] for i in ids],
        "step_round_trip_ms": [sent[i][1] - sent[i][0] for i in ids],
        "reply_to_handler_ms": [begin[i] - started[i] for i in ids],
    }
    out = {k: statistics.mean(v) * 1000 for k, v in parts.items()}
    out["cycle_ms"] = 20 + sum(out.values())
    out["efficiency_bound"] = 20 / out["cycle_ms"]
    # What the window achieved against 32 slots of 20 ms. (A job started ahead of a free
    # slot waits for one after the step's reply: "reply_to_handler" then counts that wait,
    # which no slot spends idle, so the bound above understates such a runner.)
    out["efficiency"] = len(ids) / seconds / (32 / 0.02)
    return {**out, "jobs": len(ids), "submitted": submitted}


# -- moved shards ----------------------------------------------------------------------------


def _owners(runners: Sequence[str]) -> dict[int, str]:
    """Each shard's owner on the ring of ``runners``."""
    ring = HashRing(runners)
    return {s: o for s in range(_SHARDS) if (o := ring.owner(s)) is not None}


def _moved(before: dict[int, str], after: dict[int, str]) -> float:
    return sum(before.get(s) != after.get(s) for s in range(_SHARDS)) / _SHARDS


def ring_moves(trials: int = 50, most: int = 8) -> dict[str, Any]:
    """The fraction of shards whose owner changes on each join (1 -> ``most``) and leave
    (``most`` -> 1), from ``HashRing`` with random runner ids: mean and max over ``trials``,
    beside the ideal 1/N (N: the larger size of the step)."""
    joins: dict[int, list[float]] = {n: [] for n in range(2, most + 1)}
    leaves: dict[int, list[float]] = {n: [] for n in range(2, most + 1)}
    for _ in range(trials):
        ids = [uuid.uuid4().hex for _ in range(most)]
        maps = [_owners(ids[:n]) for n in range(1, most + 1)]
        for n in range(2, most + 1):
            joins[n].append(_moved(maps[n - 2], maps[n - 1]))
            # Leaving: the last to join leaves first, or any other; the ring is symmetric,
            # so the leave of a random member is measured as the join read backwards.
            leaver = random.randrange(n)
            rest = ids[:leaver] + ids[leaver + 1 : n]
            after = _owners(rest)
            leaves[n].append(_moved(maps[n - 1], after))

    def row(v: list[float]) -> dict[str, float]:
        return {"mean": statistics.mean(v), "max": max(v)}

    return {
        "trials": trials,
        "join": {f"{n - 1}->{n}": {"ideal": 1 / n, **row(joins[n])} for n in joins},
        "leave": {f"{n}->{n - 1}": {"ideal": 1 / n, **row(leaves[n])} for n in leaves},
    }


async def measure_moves(real: int = 4) -> dict[str, Any]:
    """Moved fractions from the ring (see ``ring_moves``), and observed on real workers as
    they join one by one up to ``real`` and leave (SIGTERM) one by one."""
    observed: dict[str, Any] = {}
    async with _database() as url:
        procs: list[subprocess.Popen[bytes]] = []
        db = await asyncpg.connect(url)
        try:
            ids: list[str] = []
            before: dict[int, str] = {}
            for n in range(1, real + 1):
                procs.append(_worker(url, 8))
                ids += await _runner_ids(db, procs[-1:])
                after = await _settled(db, ids)
                predicted = _owners(ids)
                if before:
                    observed[f"join {n - 1}->{n}"] = {
                        "moved": _moved(before, after),
                        "ring": _moved(before, predicted),  # type: ignore[arg-type]
                    }
                before = after
            for n in range(real, 1, -1):
                proc = procs.pop(0)
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                ids.pop(0)
                after = await _settled(db, ids)
                observed[f"leave {n}->{n - 1}"] = {"moved": _moved(before, after)}
                before = after
        finally:
            await db.close()
            _stop(procs)
    return {"ring": ring_moves(), "observed": observed}


MEASUREMENTS = {
    "latency": measure_latency,
    "throughput": measure_throughput,
    "submitters": measure_submitters,
    "failover": measure_failover,
    "idle": measure_idle,
    "scaling": measure_scaling,
    "moves": measure_moves,
    "cycle": measure_cycle,
}


#: Measurements that run once whatever ``--runs`` says (they are long, or have no median).
ONCE = {"idle", "scaling", "moves", "cycle"}
_BEGIN, _END = "<!-- pg_cluster scaling: begin -->", "<!-- pg_cluster scaling: end -->"


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def report(scaling: dict[str, Any], moves: dict[str, Any] | None, command: str) -> str:
    """The BENCHMARKS.md section for a ``scaling`` (and ``moves``) result."""
    lines = [
        _BEGIN,
        "## Cluster scaling (I/O-bound jobs, PostgreSQL)",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} (this machine: 2 cores, one"
        " PostgreSQL 15 on the same host; medians of the rounds, each size once per round)."
        " Each handler awaits 20 ms; each runner is a",
        "`shardq worker` of concurrency 32; a submitter keeps about 128 jobs per runner"
        " unfinished (so submit-to-start includes the wait in that queue). Ideal: runners"
        " x 32 / 20 ms. CPU: the whole machine's, busy over the window, and that time per"
        " job processed (runners, server and submitter together). Failover: kill -9 of one"
        " runner under that load to the first re-run of one of its in-flight jobs on a"
        " survivor, p50 / max over the kills of every round.",
        "",
        "| runners | jobs/s | ideal | efficiency (rounds) | CPU busy | CPU ms per job"
        " | submit-to-start p50 / p99 ms | failover p50 / max ms (kills) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in scaling.values():
        fails = r.get("failovers", [])
        fo = (
            f"{r['failover_p50_s'] * 1000:.0f} / {r['failover_max_s'] * 1000:.0f} ({len(fails)})"
            if fails
            else "-"
        )
        lines.append(
            f"| {r['runners']} | {_f(r['jobs_per_s'], 0)} | {_f(r['ideal_per_s'], 0)}"
            f" | {r['efficiency']:.2f} ({', '.join(f'{e:.2f}' for e in r['efficiency_runs'])})"
            f" | {r['cpu_busy']:.0%} | {r['cpu_ms_per_job']:.2f}"
            f" | {_f(r['start_p50_ms'])} / {_f(r['start_p99_ms'])}"
            f" | {fo} |"
        )
    if moves:
        ring = moves["ring"]
        lines += [
            "",
            f"Shards moved per membership change ({_SHARDS} shards; from `HashRing`, mean"
            f" and max over {ring['trials']} sets of random runner ids):",
            "",
            "| change | ideal 1/N | mean | max |",
            "|---|---:|---:|---:|",
        ]
        for kind in ("join", "leave"):
            for step, v in ring[kind].items():
                lines.append(
                    f"| {kind} {step} | {v['ideal']:.3f} | {v['mean']:.3f} | {v['max']:.3f} |"
                )
        obs = ", ".join(f"{k}: {v['moved']:.3f}" for k, v in moves["observed"].items())
        lines += ["", f"Observed on real workers: {obs}."]
    lines.append(_END)
    return "\n".join(lines)


def _write_report(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    doc = path.read_text()
    if _BEGIN in doc:
        head, rest = doc.split(_BEGIN, 1)
        doc = head + text + rest.split(_END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements ``--runs`` times each and print their medians as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.pg_cluster")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8", help="scaling: runner counts")
    parser.add_argument("--kills", type=int, default=10, help="scaling: kills per size")
    parser.add_argument("--seconds", type=float, default=8.0, help="scaling: window per size")
    parser.add_argument("--report", action="store_true", help="write BENCHMARKS.md's section")
    parser.add_argument("only", nargs="*", help=f"any of: {', '.join(MEASUREMENTS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    sizes = [int(n) for n in args.sizes.split(",")]
    out: dict[str, Any] = {}
    for name, fn in MEASUREMENTS.items():
        if args.only and name not in args.only:
            continue
        if name == "scaling":
            out[name] = asyncio.run(measure_scaling(sizes, args.seconds, args.kills, args.runs))
            print(name, json.dumps(out[name]), flush=True)
            continue
        runs = [asyncio.run(fn()) for _ in range(1 if name in ONCE else args.runs)]  # type: ignore[operator]
        summary: dict[str, Any] = {"runs": runs}
        for key, value in runs[0].items():
            if isinstance(value, int | float):
                summary[f"median_{key}"] = statistics.median(r[key] for r in runs)
        out[name] = summary
        print(name, json.dumps(summary), flush=True)
    if args.report and "scaling" in out:
        moves = out["moves"]["runs"][0] if "moves" in out else None
        command = "python -m bench.pg_cluster " + " ".join(argv or sys.argv[1:])
        _write_report(report(out["scaling"], moves, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
