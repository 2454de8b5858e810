"""Flow control measured: a type's rate, a type's concurrency, and what limits cost the rest.

``python -m bench.flow [--engine sqlite|postgres|both] [--quick] [--rounds 3]``

One runner in this process (``async with JobService(url)``), each measurement on a fresh
database: a SQLite file in a temporary directory, or a new PostgreSQL database on
``BENCH_PG_URL``.

- ``rate``: a no-op type with ``rate=Rate(200, per=1.0, burst=10)``, a backlog of 6,000 jobs (30 s;
  ``--quick``: 2,000, 10 s) submitted at once; each start's ``time.monotonic()``. Reports
  starts/s from the first start to the last, the fewest and most starts in any
  ``[t, t+1)`` window with ``t`` a start (windows that end after the last start left out),
  and the p50/p99/max gap between consecutive starts.
- ``concurrency``: ``concurrency=5``, a backlog of 10,000 jobs (quick: 2,000), the handler
  awaits ``asyncio.sleep(0.001)`` and counts how many of its calls are inside that await at
  once. Reports the most at once and jobs/s (first start to last end).
- ``ab``: 20,000 no-op jobs (quick: 5,000) submitted in batches of 1,000 to a running
  runner, A with no limits anywhere, B with an unrelated type ``other`` registered with
  ``concurrency=1`` (and no jobs). Jobs/s (first submit until storage reads every job
  complete) and submit-to-start p50/p99 (a batch's submit call to each of its handler
  starts). A warm-up run, then ``--rounds`` rounds in the order AB, BA, AB, ...; medians
  and B/A ratios.

Prints the figures and writes them, with every run, to ``bench/results/flow-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import FreshPostgres, clock, percentile, rate, write_results

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
RATE_PER_S = 200
#: Starts a step may catch up on when it comes late (5% of the rate): with no burst the
#: bucket holds one token, and a step slower than the token interval loses the difference.
RATE_BURST = 10
CONCURRENCY = 5
#: Jobs per measurement: (full, quick).
SIZES = {"rate": (6_000, 2_000), "concurrency": (10_000, 2_000), "ab": (20_000, 5_000)}
#: Jobs in the A/B warm-up run.
WARMUP_JOBS = 2_000


@contextlib.asynccontextmanager
async def fresh_database(engine: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on ``engine``; removed afterwards."""
    if engine == "postgres":
        async with FreshPostgres("flow") as db:
            yield db.url
        return
    tmp = tempfile.mkdtemp(prefix="shardq-flow-")
    try:
        yield f"sqlite:///{tmp}/flow.db"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _submit_backlog(jobs: Any, job_type: str, n: int) -> None:
    for start in range(0, n, BATCH):
        await jobs.submit(job_type, [{}] * min(BATCH, n - start))


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` fired within ``timeout`` seconds (a stall is a result, not a crash)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _all_complete(jobs: Any, n: int, timeout: float) -> None:
    """Wait until storage reads ``n`` jobs complete."""
    deadline = time.monotonic() + timeout
    while (done := (await jobs.stats()).by_status["complete"]) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {n} complete")
        await asyncio.sleep(0.005)


def windows(starts: list[float], width: float = 1.0) -> tuple[int, int]:
    """The fewest and most of ``starts`` (sorted) in any ``[t, t + width)`` with ``t`` a
    start, over the windows that end by the last start."""
    counts = [
        bisect.bisect_left(starts, t + width) - i
        for i, t in enumerate(starts)
        if t + width <= starts[-1]
    ]
    return (min(counts), max(counts)) if counts else (len(starts), len(starts))


async def measure_rate(engine: str, n: int) -> dict[str, Any]:
    """A backlog of ``n`` no-op jobs of a type limited to ``RATE_PER_S`` starts a second."""
    from shardq import JobService, Rate

    starts: list[float] = []
    done = asyncio.Event()

    async def noop(payload: Any) -> None:
        starts.append(time.monotonic())
        if len(starts) >= n:
            done.set()

    async with fresh_database(engine) as url:
        jobs = JobService(url)
        jobs.register_handler("paced", noop, rate=Rate(RATE_PER_S, per=1.0, burst=RATE_BURST))
        async with jobs:
            await _submit_backlog(jobs, "paced", n)
            finished = await _wait(done, n / RATE_PER_S * 1.5 + 10)
            ended = time.monotonic()
    starts.sort()
    # A run that stalled is measured to when it was given up on, not to its last start.
    span = (starts[-1] if finished else ended) - starts[0]
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    worst, best = windows(starts)
    achieved = rate(len(starts) - 1, span)
    return {
        "jobs": n,
        "started": len(starts),
        # Seconds from the last start to giving up, when the backlog did not drain.
        "stalled_s": 0.0 if finished else max(0.0, ended - starts[-1]),
        "asked_per_s": RATE_PER_S,
        "seconds": span,
        "starts_per_s": achieved,
        "off_pct": (achieved / RATE_PER_S - 1) * 100,
        "worst_1s_window": worst,
        "best_1s_window": best,
        "gap_p50_ms": percentile(gaps, 0.50) * 1000,
        "gap_p99_ms": percentile(gaps, 0.99) * 1000,
        "gap_max_ms": gaps[-1] * 1000,
    }


async def measure_concurrency(engine: str, n: int) -> dict[str, Any]:
    """A backlog of ``n`` 1 ms jobs of a type limited to ``CONCURRENCY`` at once."""
    from shardq import JobService

    state = {"running": 0, "most": 0, "ended": 0}
    first: list[float] = []
    last = [0.0]
    done = asyncio.Event()

    async def short(payload: Any) -> None:
        if not first:
            first.append(clock())
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
        try:
            await asyncio.sleep(0.001)
        finally:
            state["running"] -= 1
        state["ended"] += 1
        last[0] = clock()
        if state["ended"] >= n:
            done.set()

    async with fresh_database(engine) as url:
        jobs = JobService(url)
        jobs.register_handler("short", short, concurrency=CONCURRENCY)
        async with jobs:
            await _submit_backlog(jobs, "short", n)
            finished = await _wait(done, 120)
            if not finished:
                last[0] = clock()
            limit = next(lim for lim in await jobs.limits() if lim.job_type == "short")
    return {
        "jobs": n,
        "ended": state["ended"],
        "finished": finished,
        "limit": CONCURRENCY,
        "limit_stored": limit.concurrency,
        "most_at_once": state["most"],
        "seconds": last[0] - first[0],
        "jobs_per_s": rate(state["ended"], last[0] - first[0]),
    }


async def measure_ab(engine: str, n: int, limited_other: bool) -> dict[str, Any]:
    """``n`` no-op jobs submitted in batches to a running runner; with ``limited_other``
    an unrelated type with ``concurrency=1`` is registered too."""
    from shardq import JobService

    submitted: list[float] = []
    lat_ms: list[float] = []
    done = asyncio.Event()

    async def noop(payload: Any) -> None:
        lat_ms.append((clock() - submitted[payload["b"]]) * 1000)
        if len(lat_ms) >= n:
            done.set()

    async def other(payload: Any) -> None:
        raise AssertionError("the unrelated type has no jobs")

    async with fresh_database(engine) as url:
        jobs = JobService(url)
        jobs.register_handler("noop", noop)
        if limited_other:
            jobs.register_handler("other", other, concurrency=1)
        async with jobs:
            limited = [lim.job_type for lim in await jobs.limits()]
            t0 = clock()
            for b, start in enumerate(range(0, n, BATCH)):
                submitted.append(clock())
                await jobs.submit("noop", [{"b": b}] * min(BATCH, n - start))
            await asyncio.wait_for(done.wait(), 120)
            await _all_complete(jobs, n, 120)
            elapsed = clock() - t0
    lat_ms.sort()
    return {
        "variant": "B" if limited_other else "A",
        "limited_types": limited,
        "jobs": n,
        "seconds": elapsed,
        "jobs_per_s": rate(n, elapsed),
        "start_p50_ms": percentile(lat_ms, 0.50),
        "start_p99_ms": percentile(lat_ms, 0.99),
    }


async def run_ab(engine: str, n: int, rounds: int) -> dict[str, Any]:
    """A warm-up, then ``rounds`` rounds in the order AB, BA, ...: each run and the medians."""
    await measure_ab(engine, WARMUP_JOBS, False)
    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        for b in (False, True) if i % 2 == 0 else (True, False):
            r = await measure_ab(engine, n, b)
            print(f"  {engine} ab round {i + 1} {r['variant']}: {_brief(r)}", flush=True)
            runs.append(r)
    med: dict[str, dict[str, float]] = {}
    for v in ("A", "B"):
        mine = [r for r in runs if r["variant"] == v]
        med[v] = {
            k: statistics.median(r[k] for r in mine)
            for k in ("jobs_per_s", "start_p50_ms", "start_p99_ms")
        }
    ratio = {k: med["B"][k] / med["A"][k] for k in med["A"]}
    return {"jobs": n, "rounds": rounds, "runs": runs, "median": med, "ratio_b_over_a": ratio}


def _brief(r: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in r.items()
        if k not in ("variant", "limited_types")
    )


async def run_engine(engine: str, quick: bool, rounds: int) -> dict[str, Any]:
    """Every measurement on ``engine``."""
    size = {k: v[1] if quick else v[0] for k, v in SIZES.items()}
    out: dict[str, Any] = {}
    out["rate"] = await measure_rate(engine, size["rate"])
    print(f"  {engine} rate: {_brief(out['rate'])}", flush=True)
    out["concurrency"] = await measure_concurrency(engine, size["concurrency"])
    print(f"  {engine} concurrency: {_brief(out['concurrency'])}", flush=True)
    out["ab"] = await run_ab(engine, size["ab"], rounds)
    return out


def verdicts(engine: str, r: dict[str, Any]) -> list[str]:
    """One line per figure against what flow control promises."""
    rt, cc, ab = r["rate"], r["concurrency"], r["ab"]
    ratio = ab["ratio_b_over_a"]
    return [
        f"{engine}: rate {rt['started']} of {rt['jobs']} started "
        f"(then none for {rt['stalled_s']:.1f} s), "
        f"{rt['starts_per_s']:.2f}/s of {RATE_PER_S} ({rt['off_pct']:+.2f}%, "
        f"{'within' if abs(rt['off_pct']) <= 3 else 'OUTSIDE'} 3%), 1 s windows "
        f"{rt['worst_1s_window']}..{rt['best_1s_window']}, gap p99 {rt['gap_p99_ms']:.2f} ms",
        f"{engine}: concurrency {cc['ended']} of {cc['jobs']} ended, most at once {cc['most_at_once']} of {cc['limit']} "
        f"({'ok' if cc['most_at_once'] == cc['limit'] else 'NOT EXACT'}), "
        f"{cc['jobs_per_s']:.0f} jobs/s",
        f"{engine}: no-limits A/B median jobs/s A {ab['median']['A']['jobs_per_s']:.0f} "
        f"B {ab['median']['B']['jobs_per_s']:.0f} (B/A {ratio['jobs_per_s']:.3f}); "
        f"start p99 ms A {ab['median']['A']['start_p99_ms']:.2f} "
        f"B {ab['median']['B']['start_p99_ms']:.2f} (B/A {ratio['start_p99_ms']:.3f})",
    ]


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _source() -> dict[str, Any]:
    """Where the measured shardq came from, and whether it differs from the commit (run a
    commit's own ``src`` with ``PYTHONPATH``, as ``bench.ab`` does)."""
    import shardq

    path = Path(shardq.__file__).resolve().parent
    changed = None
    if path == ROOT / "src" / "shardq":
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--short", "src"],
            capture_output=True,
            text=True,
            check=True,
        )
        changed = out.stdout.splitlines()
    return {"path": str(path), "uncommitted_changes": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flow", description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="smaller backlogs (10 s of rate)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    engines = ("sqlite", "postgres") if args.engine == "both" else (args.engine,)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = _commit()
    results: dict[str, Any] = {}
    for engine in engines:
        print(f"{engine}:", flush=True)
        results[engine] = asyncio.run(run_engine(engine, args.quick, args.rounds))
    report = {
        "command": "python -m bench.flow " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "shardq_source": _source(),
        "python": platform.python_version(),
        "quick": args.quick,
        "results": results,
    }
    for engine, r in results.items():
        for line in verdicts(engine, r):
            print(line)
    path = write_results("flow", started, report)
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
