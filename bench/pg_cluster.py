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
- ``idle``: every statement a runner sends in 10 idle seconds (``log_statement = all``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

from shardq import JobService

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


MEASUREMENTS = {
    "latency": measure_latency,
    "throughput": measure_throughput,
    "submitters": measure_submitters,
    "failover": measure_failover,
    "idle": measure_idle,
}


def main(argv: list[str] | None = None) -> int:
    """Run the measurements ``--runs`` times each and print their medians as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.pg_cluster")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("only", nargs="*", help=f"any of: {', '.join(MEASUREMENTS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, fn in MEASUREMENTS.items():
        if args.only and name not in args.only:
            continue
        runs = [asyncio.run(fn()) for _ in range(1 if name == "idle" else args.runs)]  # type: ignore[operator]
        summary: dict[str, Any] = {"runs": runs}
        for key, value in runs[0].items():
            if isinstance(value, int | float):
                summary[f"median_{key}"] = statistics.median(r[key] for r in runs)
        out[name] = summary
        print(name, json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
