"""``scripts/chaos`` (``python -m bench.chaos``): run the fault suite and check the outcome."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

import shardq
from shardq import JobService

from .check import Fault, Job, Run, check_run, dumps, median_summary, read_executions
from .faults import ROOT, Faults, Fleet, clock

RESULTS = ROOT / "bench" / "results"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Options:
    """One run's settings (see ``--help``)."""

    engine: str
    duration: float
    seed: int
    runners: int
    submitters: int
    rate: float
    concurrency: int
    max_faults: int
    mean_gap: float
    settle_timeout: float
    keep: bool


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


async def _wait_for(check: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Re-check ``check()`` until it is truthy; the seconds it took. TimeoutError names ``what``."""
    start = clock()
    while not await check():
        if clock() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(every)
    return clock() - start


async def _create_database(server: Any) -> str:
    conn = await asyncpg.connect(server.url("postgres"))
    try:
        await conn.execute("CREATE DATABASE chaos")
    finally:
        await conn.close()
    return str(server.url("chaos"))


async def _owning(url: str, runners: int) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        n = await conn.fetchval(
            "SELECT count(DISTINCT owner) FROM shardq_shards WHERE owner IS NOT NULL"
        )
        free = await conn.fetchval("SELECT count(*) FROM shardq_shards WHERE owner IS NULL")
        return bool(n == runners and free == 0)
    finally:
        await conn.close()


async def _unfinished(url: str) -> int | None:
    """Jobs still queued or running; None while the database cannot be read."""
    try:
        async with JobService(url, runner=False) as svc:
            st = await svc.stats()
    except Exception:
        return None
    return st.by_status["queued"] + st.by_status["processing"]


def _job(st: Any) -> Job:
    spec = st.job
    return Job(
        id=st.id,
        status=st.status,
        attempts=st.attempts,
        max_attempts=spec.max_attempts,
        key=spec.key,
        dedupe=spec.dedupe_key,
        payload=spec.payload if isinstance(spec.payload, dict) else {},
        history=[(h.status, h.timestamp.timestamp(), h.error) for h in st.history],
    )


async def _stored(url: str) -> tuple[list[Job], set[str]]:
    """Every job and the job ids of every dead letter, paged through the public API."""
    jobs: list[Job] = []
    dead: set[str] = set()
    async with JobService(url, runner=False) as svc:
        before: str | None = None
        while page := await svc.list_jobs(limit=1000, before=before):
            jobs += [_job(st) for st in page]
            before = page[-1].id
        before = None
        while letters := await svc.dead_letters(limit=1000, before=before):
            dead |= {d.job_id for d in letters}
            before = letters[-1].id
    return jobs, dead


def _submitter(opts: Options, url: str, index: int, deadline: float, out: Path) -> Any:
    argv = [sys.executable, "-m", "bench.chaos.workload", "--url", url, "--index", str(index)]
    argv += ["--seed", str(opts.seed), "--deadline", f"{deadline:.6f}"]
    argv += ["--rate", str(opts.rate), "--out", str(out)]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _submits(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("submit-*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a kill
                out.append(json.loads(line))
    return out


class Engine:
    """One engine's run: its database, runners, submitters and faults."""

    def __init__(self, opts: Options, directory: Path) -> None:
        self.opts = opts
        self.dir = directory
        self.server: Any = None
        self.url = f"sqlite:///{directory / 'jobs.db'}"
        size = opts.runners if opts.engine == "postgres" else 1
        self.fleet = Fleet(self.url, size, directory, opts.concurrency)
        self.submitters: list[Any] = []

    async def setup(self) -> None:
        """Start the private server (PostgreSQL), migrate, start the runners, wait for them."""
        if self.opts.engine == "postgres":
            from bench.pgserver import PrivatePostgres

            self.server = await asyncio.to_thread(PrivatePostgres)
            await asyncio.to_thread(self.server.start)
            self.url = await _create_database(self.server)
            self.fleet.url = self.url
        async with JobService(self.url, runner=False):  # applies the migrations
            pass
        self.fleet.start()
        if self.opts.engine == "postgres":
            await _wait_for(lambda: _owning(self.url, self.fleet.size), 60, "every shard owned")

    async def faults(self, faults: Faults) -> tuple[float, float, float, float]:
        """Submit and inject faults for ``duration`` seconds; the window on both clocks."""
        o = self.opts
        t0, w0 = clock(), time.time()
        deadline = t0 + o.duration
        self.submitters = [
            _submitter(o, self.url, i, deadline, self.dir / f"submit-{i}.jsonl")
            for i in range(o.submitters)
        ]
        gap = faults.rng.uniform(0.5, 1.5) * o.mean_gap
        next_at = t0 + gap
        while clock() < deadline:
            self.fleet.supervise()
            if clock() >= next_at and len(faults.log) < o.max_faults:
                began = clock()  # gaps run from a fault's start: a long outage adds none
                fault = await faults.inject(faults.next_kind())
                if fault is not None:
                    print(f"  {fault.at - t0:6.2f}s {fault.kind} {fault.pid or ''}", flush=True)
                next_at = began + faults.rng.uniform(0.5, 1.5) * o.mean_gap
            await asyncio.sleep(0.05)  # the supervision tick
        return t0, clock(), w0, time.time()

    async def settle(self, faults: Faults) -> float:
        """Let the submitters end, bring every runner back, wait until no job is unfinished."""
        await faults.drained()
        for p in self.submitters:
            await asyncio.to_thread(p.wait, 60)
        now = clock()
        for slot in self.fleet.slots:
            if slot.proc is None:
                slot.restart_at = now

        async def settled() -> bool:
            self.fleet.supervise()
            return await _unfinished(self.url) == 0

        return await _wait_for(settled, self.opts.settle_timeout, "no unfinished job", 0.2)

    def cleanup(self) -> None:
        """Kill whatever still runs and remove the private server (never raises)."""
        for p in self.submitters:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.fleet.kill_all()
        if self.server is not None:
            self.server.stop("immediate", remove=not self.opts.keep)


async def run_engine(opts: Options) -> dict[str, Any]:
    """One run on one engine: set up, fault, settle, drain, check. Its logs and data are
    removed afterwards unless ``opts.keep``."""
    directory = Path(tempfile.mkdtemp(prefix=f"shardq-chaos-{opts.engine}-"))
    try:
        return await _run_in(opts, directory)
    finally:
        if not opts.keep:
            shutil.rmtree(directory, ignore_errors=True)


async def _run_in(opts: Options, directory: Path) -> dict[str, Any]:
    engine = Engine(opts, directory)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    settle_error = None
    try:
        await engine.setup()
        faults = Faults(opts.engine, engine.fleet, random.Random(opts.seed), engine.server)
        m0, m1, w0, w1 = await engine.faults(faults)
        try:
            settled_s: float | None = await engine.settle(faults)
        except TimeoutError as e:
            settled_s, settle_error = None, str(e)
        await engine.fleet.drain_all()
        jobs, dead = await _stored(engine.url)
    finally:
        engine.cleanup()
    run = Run(
        jobs=jobs,
        dead_letter_jobs=dead,
        submits=_submits(directory),
        executions=read_executions(directory, engine.fleet.deaths),
        faults=faults.log,
        window=(m0, m1),
        window_wall=(w0, w1),
        runner_exits=engine.fleet.bad_exits,
    )
    result = check_run(run)
    result.update(
        engine=opts.engine,
        seed=opts.seed,
        started=started,
        settle_s=round(settled_s, 2) if settled_s is not None else None,
        settle_error=settle_error,
        fault_log=[_fault_json(f, m0) for f in faults.log],
        directory=str(directory) if opts.keep else None,
        server_directory=str(engine.server.dir) if opts.keep and engine.server else None,
    )
    return result


def _fault_json(f: Fault, t0: float) -> dict[str, Any]:
    return {"kind": f.kind, "at_s": round(f.at - t0, 3), "pid": f.pid, **f.detail}


def server_problem() -> str | None:
    """Why a private PostgreSQL server cannot be started here, or None."""
    from bench.pgserver import _bin

    try:
        for name in ("initdb", "pg_ctl", "pg_isready"):
            _bin(name)
    except FileNotFoundError as e:
        return str(e)
    return None


# -- the summary ---------------------------------------------------------------------------


def _line(name: str, check: dict[str, Any], detail: str = "") -> str:
    mark = "ok  " if check["ok"] else "FAIL"
    return f"  [{mark}] {name:<16} {check['count']:>5} {detail}"


def summary(r: dict[str, Any]) -> str:
    """A readable account of one run."""
    f, c = r["figures"], r["checks"]
    fo, tp = f["failover"], f["throughput"]
    faults = ", ".join(f"{k} {v}" for k, v in sorted(f["faults"].items())) or "none"
    lines = [
        f"{r['engine']}: seed {r['seed']}, {f['jobs']} jobs ({f['statuses']}), "
        f"{f['executions']} executions ({f['executions_interrupted']} interrupted), "
        f"{f['submit_errors']} failed submits",
        f"  faults: {f['faults_total']} ({faults}); settled in {r['settle_s']} s"
        + (f" -- {r['settle_error']}" if r["settle_error"] else ""),
        f"  during the faults: {tp['submitted_per_s']} submitted/s, "
        f"{tp['finished_per_s']} finished/s, {tp['executions_per_s']} executions/s "
        f"over {tp['window_s']} s",
    ]
    if "first_rerun_p50_s" in fo:
        lines.append(
            f"  failover (kill -9 to first re-run of an in-flight job elsewhere, "
            f"{fo['kills_with_jobs_in_flight']} kills): p50 {fo['first_rerun_p50_s']} s, "
            f"max {fo['first_rerun_max_s']} s; all re-run: p50 {fo['all_rerun_p50_s']} s, "
            f"max {fo['all_rerun_max_s']} s"
        )
    if f["exhausted_by_faults"]["count"]:
        lines.append(
            f"  note: {f['exhausted_by_faults']['count']} job(s) ran out of attempts through "
            "interruptions alone"
        )
    ko = c["key_order"]
    lines += [
        _line("lost", c["lost"], "jobs not stored, unfinished or in the wrong end state"),
        _line("double_terminal", c["double_terminal"], "jobs finished twice or run after"),
        _line(
            "key_order",
            ko,
            f"violations over {ko['keys']} keys ({ko['out_of_order']} out of order, "
            f"{ko['overlap']} overlapping)",
        ),
        _line(
            "attempts",
            c["attempts"],
            "attempts run twice (history missing one); "
            f"{c['attempts']['erased_by_server_crash']} erased by a server crash, as documented",
        ),
        _line("dedupe", c["dedupe"], f"violations over {c['dedupe']['keys']} dedupe keys"),
        _line("runner_exits", c["runner_exits"], "exits nobody asked for, or failed drains"),
    ]
    for name, check in c.items():
        for ex in check["examples"] if not check["ok"] else ():
            lines.append(f"    {name}: {json.dumps(ex)[:300]}")
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The command's options."""
    p = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="shardq's fault suite: runner processes work through a mixed keyed and "
        "unkeyed load (batches, dedupe keys, jobs that fail then succeed, dead letters, "
        "delays, long jobs) while faults are injected at random: kill -9 and SIGTERM of "
        "runners, pg_terminate_backend of a runner's sessions, fast restarts and crashes of "
        "a private PostgreSQL server (never the one on port 5432), and a runner started while that "
        "server is down and then recovering. Afterwards it checks: "
        "nothing lost, no double terminal transition, per-key order, dedupe, runners stay "
        "up; and reports failover times and throughput during the faults. Exits 1 if a "
        "check fails, 2 if the run itself could not be done.",
    )
    p.add_argument(
        "--engine",
        choices=("postgres", "sqlite", "both"),
        default="both",
        help="postgres: a private server and --runners worker processes; sqlite: one runner "
        "on a file, killed and restarted (default: both)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the short run CI does (12 s per engine, a fault about every second)",
    )
    p.add_argument("--duration", type=float, help="seconds of load and faults (default 60)")
    p.add_argument("--seed", type=int, help="seeds the faults and the load (default: random)")
    p.add_argument("--runs", type=int, default=1, help="runs per engine (seeds seed, seed+1, ...)")
    p.add_argument("--runners", type=int, default=3, help="runner processes on PostgreSQL")
    p.add_argument("--submitters", type=int, default=2, help="submitter processes")
    p.add_argument("--rate", type=float, default=100.0, help="jobs/s per submitter")
    p.add_argument("--concurrency", type=int, default=16, help="handlers per runner at once")
    p.add_argument("--max-faults", type=int, help="at most this many faults a run")
    p.add_argument("--mean-gap", type=float, help="mean seconds between faults (default 3)")
    p.add_argument(
        "--settle-timeout", type=float, help="seconds to wait for every job to finish (90)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help="write the results as JSON (default path bench/results/chaos-<timestamp>.json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    return p


def options(args: argparse.Namespace, engine: str, seed: int) -> Options:
    """Settings of one run from the command line (``--quick`` changes the defaults)."""
    quick = args.quick
    duration = args.duration if args.duration is not None else (12.0 if quick else 60.0)
    mean_gap = args.mean_gap if args.mean_gap is not None else (1.0 if quick else 3.0)
    return Options(
        engine=engine,
        duration=duration,
        seed=seed,
        runners=args.runners,
        submitters=args.submitters,
        rate=args.rate,
        concurrency=args.concurrency,
        max_faults=args.max_faults if args.max_faults is not None else int(duration / mean_gap) + 1,
        mean_gap=mean_gap,
        settle_timeout=args.settle_timeout or (30.0 if quick else 90.0),
        keep=args.keep,
    )


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    checks = [
        (args.duration is None or 1 <= args.duration <= 3600, "--duration must be 1..3600"),
        (1 <= args.runs <= 50, "--runs must be 1..50"),
        (1 <= args.runners <= 16, "--runners must be 1..16"),
        (1 <= args.submitters <= 16, "--submitters must be 1..16"),
        (0 < args.rate <= 10_000, "--rate must be within (0, 10000]"),
        (1 <= args.concurrency <= 1024, "--concurrency must be 1..1024"),
        (args.max_faults is None or args.max_faults >= 0, "--max-faults must be >= 0"),
        (args.mean_gap is None or args.mean_gap >= 0.1, "--mean-gap must be >= 0.1"),
        (args.settle_timeout is None or args.settle_timeout > 0, "--settle-timeout must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            p.error(message)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the suite as Ctrl-C does, so its clean-up runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starting the suite in the background leaves SIGINT ignored.
    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _run_all(
    args: argparse.Namespace, seed: int, engines: list[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every run asked for; the results and the engines skipped (with why)."""
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for engine in engines:
        problem = server_problem() if engine == "postgres" else None
        if problem is not None:
            if IN_CI:
                raise RuntimeError(f"CI=true but PostgreSQL cannot run: {problem}")
            print(f"SKIPPING postgres: {problem}", flush=True)
            skipped[engine] = problem
            continue
        for i in range(args.runs):
            opts = options(args, engine, seed + i)
            print(f"{engine}: run {i + 1}/{args.runs}, seed {opts.seed}, "
                  f"{opts.duration:.0f} s", flush=True)  # fmt: skip
            limit = opts.duration + opts.settle_timeout + 180
            r = asyncio.run(asyncio.wait_for(run_engine(opts), limit))
            print(summary(r), flush=True)
            results.append(r)
    return results, skipped


def _write(args: argparse.Namespace, out: dict[str, Any]) -> None:
    for e, m in out["medians"].items():
        if m["runs"] > 1:
            print(f"{e} medians over {m['runs']} runs: {json.dumps(m)}")
    if args.json is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS / f"chaos-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(out) + "\n")
        print(f"results: {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the suite; 0 when every check held, 1 when one failed, 2 when it could not run
    (130 when interrupted; its processes and server are cleaned up either way)."""
    p = parser()
    args = p.parse_args(argv)
    _validate(p, args)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    origin = Path(shardq.__file__).parent
    print(f"shardq chaos: seed {seed}, commit {_commit()}, shardq from {origin}", flush=True)
    try:
        with _sigterm_interrupts():
            results, skipped = _run_all(args, seed, engines)
    except KeyboardInterrupt:
        print("chaos: interrupted (processes and the private server are gone)", file=sys.stderr)
        return 130
    except Exception as e:  # the run itself failed: set-up, a server that would not start
        print(f"chaos: could not run: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {
        "commit": _commit(),
        "shardq_from": str(origin),
        "seed": seed,
        "argv": sys.argv[1:] if argv is None else argv,
        "skipped": skipped,
        "runs": results,
        "medians": {
            e: median_summary([r for r in results if r["engine"] == e])
            for e in engines
            if any(r["engine"] == e for r in results)
        },
        "ok": all(r["ok"] for r in results),
    }
    _write(args, out)
    print("chaos: every check held" if out["ok"] else "chaos: CHECKS FAILED", flush=True)
    return 0 if out["ok"] else 1
