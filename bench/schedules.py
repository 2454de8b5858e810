"""Schedules at scale: many ``every=`` schedules on one runner.

``python -m bench.schedules [--schedules 10000] [--every 1.0] [--seconds 20] [--runs 3]
[--engine sqlite|postgres|both] [--profile]``

Each run is a fresh process on a fresh database (a SQLite file; a new PostgreSQL database
on ``BENCH_PG_URL`` when it answers). It stores the schedules, starts one runner whose
handler does nothing, and measures a window of ``--seconds`` whole ticks:

- ticks fired per second: the jobs whose tick falls in the window (every ``every`` s all
  schedules tick at once, on the same multiple of it since the epoch), against the
  ``schedules / every`` asked for; a tick fired more than a second late is a misfire and
  the default policy (``latest``) fires only the newest, so a runner that falls behind
  fires fewer;
- lateness: each such job's start (its ``processing`` history entry) minus its tick, p50
  and p99; a job still unstarted when the run ends counts with the end as its start (the
  figures are then lower bounds, marked ``>=``), and the unstarted are counted;
- jobs of any tick started per second during the window (the runner's throughput);
- the runner process's CPU (process time over the window, in cores) and its RSS.

Medians of the runs are printed and written, with every run, to
``bench/results/schedules-<time>.json``. ``--profile`` also runs the window under cProfile
(the event loop's thread only) and writes the top functions to
``bench/results/schedules-profile-<engine>.txt``. ``--where`` times, over the window, each
storage call the runner makes (calls, rows, wall time), the event loop's lag and each
thread's CPU, and adds them to the result (``where``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import json
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    PG_ADMIN_URL,
    RESULT_PREFIX,
    FreshPostgres,
    emit,
    percentile,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
#: Seconds the runner keeps going after the window, so the window's last ticks can start.
GRACE_S = 3.0
#: Schedules stored at once while setting up.
SETUP_BATCH = 200


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


#: The storage calls ``--where`` times: (attribute path from the driver, name shown).
_TIMED = (
    ("insert_jobs", "insert_jobs (the ticks' jobs)"),
    ("schedules.fired", "schedules.fired (record the ticks)"),
    ("schedules.unfinished", "schedules.unfinished"),
    ("advance", "advance (a step: outcomes and starts)"),
    ("load_refs", "load_refs"),
    ("load_ready", "load_ready"),
    ("load_delayed", "load_delayed"),
    ("load_keys", "load_keys"),
    ("load_mailbox", "load_mailbox"),
)


class Where:
    """Where a run's time goes: each timed storage call's count, rows and wall time, the
    event loop's lag, and each thread's CPU, between ``start`` and ``stop``."""

    def __init__(self, driver: Any) -> None:
        self.calls: dict[str, list[float]] = {name: [] for _, name in _TIMED}
        self.rows: dict[str, int] = dict.fromkeys(self.calls, 0)
        self.lags: list[float] = []
        self._on = False
        self._cpu0: dict[str, float] = {}
        self._lag_task: asyncio.Task[None] | None = None
        for path, name in _TIMED:
            owner_path, _, attr = path.rpartition(".")
            owner = driver if not owner_path else getattr(driver, owner_path)
            fn = getattr(owner, attr, None)
            if fn is not None:
                setattr(owner, attr, self._timed(name, fn))

    def _timed(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                if self._on:
                    self.calls[name].append((time.perf_counter() - t0) * 1000)
                    first = args[0] if args else None
                    if isinstance(first, list | tuple | set | frozenset):
                        self.rows[name] += len(first)

        return timed

    async def _watch_lag(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append((time.perf_counter() - t0 - 0.01) * 1000)

    def start(self) -> None:
        self._on = True
        self._cpu0 = _thread_cpu()
        self._lag_task = asyncio.create_task(self._watch_lag())

    async def stop(self, seconds: float) -> dict[str, Any]:
        self._on = False
        cpu = _thread_cpu()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        lags = sorted(self.lags)
        return {
            "storage_calls": {
                name: {
                    "calls_per_s": len(ms) / seconds,
                    "rows_per_call": self.rows[name] / len(ms) if ms else 0,
                    "mean_ms": statistics.fmean(ms) if ms else 0,
                    "max_ms": max(ms, default=0),
                    "busy_share": sum(ms) / 1000 / seconds,
                }
                for name, ms in self.calls.items()
                if ms
            },
            "loop_lag_p50_ms": percentile(lags, 0.5),
            "loop_lag_p99_ms": percentile(lags, 0.99),
            "loop_lag_max_ms": lags[-1] if lags else math.nan,
            "thread_cpu_cores": {k: (v - self._cpu0.get(k, 0.0)) / seconds for k, v in cpu.items()},
        }


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by its Python name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            name = names.get(int(tid), f"thread {tid}")
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


@contextlib.contextmanager
def _profiled(path: str | None) -> Iterator[None]:
    """cProfile the block (the event loop's thread) into ``path``, when given."""
    if path is None:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        _write_profile(prof, Path(path))


async def _store_schedules(url: str, n: int, every: float) -> float:
    """Store ``n`` schedules from a process without a runner; seconds it took."""
    from shardq import JobService

    t0 = time.perf_counter()
    async with JobService(url, runner=False) as jobs:
        for lo in range(0, n, SETUP_BATCH):
            await asyncio.gather(
                *(
                    jobs.schedule(f"s{i:05d}", job_type="tick", every=every)
                    for i in range(lo, min(n, lo + SETUP_BATCH))
                )
            )
    return time.perf_counter() - t0


async def _read_window(url: str, lo_ms: int, hi_ms: int, stopped_ms: int) -> dict[str, Any]:
    """What storage says of the window ``[lo_ms, hi_ms)``: the jobs whose tick is in it, the
    lateness of each (start minus tick; for one never started, ``stopped_ms`` minus tick, a
    lower bound), how many never started, and how many jobs of any tick started in it."""
    from shardq import JobService

    late: list[float] = []
    fired = unstarted = starts = 0
    async with JobService(url, runner=False) as jobs:
        before = None
        while True:
            page = await jobs.list_jobs(type="tick", limit=1000, before=before)
            if not page:
                break
            for st in page:
                begun = [h.timestamp for h in st.history if h.status == "processing"]
                start = begun[0].timestamp() * 1000 if begun else None
                starts += start is not None and lo_ms <= start < hi_ms
                tick = st.tick.timestamp() * 1000 if st.tick is not None else None
                if tick is None or not lo_ms <= tick < hi_ms:
                    continue
                fired += 1
                unstarted += start is None
                late.append((stopped_ms if start is None else start) - tick)
            before = page[-1].id
    late.sort()
    return {"late": late, "fired": fired, "unstarted": unstarted, "starts": starts}


async def child(
    url: str, n: int, every: float, seconds: float, profile: str | None, where: bool
) -> None:
    """One run in this process: store, run, measure; the result goes to stdout."""
    from shardq import JobService

    setup_s = await _store_schedules(url, n, every)
    jobs = JobService(url)

    @jobs.handler("tick")
    async def tick(payload: Any) -> None:
        return None

    t_start = time.perf_counter()
    async with jobs:
        start_s = time.perf_counter() - t_start
        probe = Where(jobs.driver) if where else None
        # The window: whole ticks from the second tick after start (the first may be partial).
        every_ms = round(every * 1000)
        lo_ms = (int(time.time() * 1000) // every_ms + 2) * every_ms
        hi_ms = lo_ms + round(seconds * 1000)
        await asyncio.sleep(max(0.0, lo_ms / 1000 - time.time()))
        if probe is not None:
            probe.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with _profiled(profile):
            await asyncio.sleep(max(0.0, hi_ms / 1000 - time.time()))
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        rss = _rss_mb()
        found = await probe.stop(wall) if probe is not None else None
        await asyncio.sleep(GRACE_S)
    seen = await _read_window(url, lo_ms, hi_ms, int(time.time() * 1000))
    late, fired, unstarted = seen["late"], seen["fired"], seen["unstarted"]
    result: dict[str, Any] = {
        "schedules": n,
        "every_s": every,
        "window_s": seconds,
        "setup_s": round(setup_s, 2),
        "runner_start_s": round(start_s, 2),
        "asked_ticks_per_s": n / every,
        "ticks_per_s": fired / seconds,
        "fired": fired,
        "unstarted": unstarted,
        "starts_per_s": seen["starts"] / seconds,
        "lateness_p50_ms": percentile(late, 0.50),
        "lateness_p99_ms": percentile(late, 0.99),
        "lateness_max_ms": late[-1] if late else math.nan,
        # Jobs never started count with the run's end as their start: then the lateness
        # figures are lower bounds.
        "lateness_is_lower_bound": unstarted > 0,
        "cpu_cores": cpu / wall,
        "rss_mb": rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if found is not None:
        result["where"] = found
    emit(result)


def _write_profile(prof: cProfile.Profile, path: Path) -> None:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs()
    out.write("== by own time ==\n")
    stats.sort_stats("tottime").print_stats(35)
    out.write("== by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(35)
    path.write_text(out.getvalue())


def _run_child(url: str, args: argparse.Namespace, profile: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.schedules", "--child", url]
    cmd += ["--schedules", str(args.schedules), "--every", str(args.every)]
    cmd += ["--seconds", str(args.seconds)]
    if profile is not None:
        cmd += ["--profile-to", str(profile)]
    if args.where:
        cmd += ["--where"]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return result


async def _pg_reachable() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _engine_runs(engine: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for i in range(args.runs):
        profile = RESULTS / f"schedules-profile-{engine}.txt" if args.profile and i == 0 else None
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                runs.append(_run_child(f"sqlite:///{Path(d) / 'bench.db'}", args, profile))
        else:
            async with FreshPostgres("schedules") as pg:
                runs.append(_run_child(pg.url, args, profile))
        print(engine, "run", i + 1, json.dumps(runs[-1]), flush=True)
    return runs


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        k: statistics.median(r[k] for r in runs)
        for k, v in runs[0].items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Every run of every engine, and their medians."""
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    out: dict[str, Any] = {
        "command": "python -m bench.schedules " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "engines": {},
    }
    for engine in engines:
        if engine == "postgres" and not await _pg_reachable():
            out["engines"]["postgres"] = {"skipped": f"PostgreSQL at {PG_ADMIN_URL} not reachable"}
            continue
        runs = await _engine_runs(engine, args)
        out["engines"][engine] = {"runs": runs, "median": _medians(runs)}
    return out


def _summary(doc: dict[str, Any]) -> str:
    lines = [
        f"{'engine':<9} {'asked/s':>8} {'fired/s':>8} {'started/s':>9} {'p50 ms':>10}"
        f" {'p99 ms':>10} {'unstarted':>9} {'cpu cores':>9} {'rss MB':>7}"
    ]
    for engine, r in doc["engines"].items():
        if "skipped" in r:
            lines.append(f"{engine:<9} skipped: {r['skipped']}")
            continue
        m = r["median"]
        bound = ">=" if m["unstarted"] else ""
        p50, p99 = (f"{bound}{m[k]:,.0f}" for k in ("lateness_p50_ms", "lateness_p99_ms"))
        lines.append(
            f"{engine:<9} {m['asked_ticks_per_s']:>8,.0f} {m['ticks_per_s']:>8,.0f}"
            f" {m['starts_per_s']:>9,.0f} {p50:>10} {p99:>10}"
            f" {m['unstarted']:>9,.0f} {m['cpu_cores']:>9.2f} {m['rss_mb']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.schedules", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine (median)")
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile the first run's window")
    parser.add_argument(
        "--where", action="store_true", help="time storage calls, loop lag and threads"
    )
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(
            child(args.child, args.schedules, args.every, args.seconds, args.profile_to, args.where)
        )
        return 0
    doc = asyncio.run(orchestrate(args))
    path = write_results("schedules", doc["date"], doc)
    print(_summary(doc))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
