"""The benchmark command: every scenario, for shardq's two modes and the peers, N runs each.

Each measurement runs in a fresh subprocess on a fresh database (``bench.worker``). shardq
runs in this project's environment; the peers run in an isolated environment under
``bench/.peers/venv`` that ``scripts/bench`` creates (they are never dependencies of shardq).
Results go to ``bench/results/latest.json`` (plus a dated copy) and ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_PYTHON = ROOT / "bench" / ".peers" / "venv" / "bin" / "python"

SHARDQ = ("shardq-sqlite", "shardq-postgres")
PEERS = ("procrastinate", "pgqueuer", "rq", "arq")
SCENARIOS = ("latency", "throughput", "concurrent", "keys", "backlog", "memory", "idle")
#: Scenarios the peers are measured in (the rest are shardq's own targets).
PEER_SCENARIOS = ("latency", "throughput", "concurrent")

FULL = {
    "latency": {"n": 500, "warmup": 50},
    "throughput": {"n": 100_000, "timeout": 900},
    "concurrent": {"n": 100_000, "timeout": 900},
    "keys": {"n": 100_000, "keys": 1000, "timeout": 900},
    "backlog": {"n": 200, "warmup": 50, "backlog": 100_000},
    "memory": {"n": 1_000_000, "hold": 10},
    "idle": {"seconds": 10},
}
QUICK = {
    "latency": {"n": 100, "warmup": 20},
    "throughput": {"n": 5_000, "timeout": 300},
    "concurrent": {"n": 5_000, "timeout": 300},
    "keys": {"n": 5_000, "keys": 1000, "timeout": 300},
    "backlog": {"n": 50, "warmup": 10, "backlog": 10_000},
    "memory": {"n": 50_000, "hold": 3},
    "idle": {"seconds": 3},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}"
    )
    ap.add_argument("--modes", default="sqlite,postgres", help="shardq modes: sqlite,postgres")
    ap.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma list of {', '.join(PEERS)}, or none"
    )
    ap.add_argument("--jobs", type=int, help="override the job count of throughput/keys/concurrent")
    ap.add_argument("--peer-jobs", type=int, help="job count for the peers' throughput runs")
    ap.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md")
    ap.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite BENCHMARKS.md from --output, no runs"
    )
    return ap.parse_args(argv)


def run_one(python: Path | str, target: str, scenario: str, params: dict[str, Any]) -> Any:
    """Run one measurement in a fresh process; its result, or ``{"error": ...}``."""
    spec = json.dumps({"target": target, "scenario": scenario, "params": params})
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": path or str(ROOT), "PYTHONUNBUFFERED": "1"}
    timeout = params.get("timeout", 600) + 600
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [str(python), "-m", "bench.worker", spec],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["wall_s"] = round(time.monotonic() - t0, 2)
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-field median of several runs' results (nested dicts too)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"] if runs else "no runs"}
    out: dict[str, Any] = {}
    for k, v in ok[0].items():
        if isinstance(v, bool) or not isinstance(v, int | float | dict):
            out[k] = v
        elif isinstance(v, dict):
            out[k] = median_of([r[k] for r in ok])
        else:
            out[k] = statistics.median(r[k] for r in ok)
    if len(ok) < len(runs):
        out["failed_runs"] = len(runs) - len(ok)
    return out


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def calibrate() -> dict[str, float]:
    """Two figures that tell machines (and moments) apart, so runs on different days can be
    compared: the median wall time of a fixed pure-Python loop (one core's speed for an event
    loop), and of an 8 kB write plus ``fdatasync`` on this tree's disk (what a durable commit
    waits for). Medians of several tries."""
    loops = []
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        loops.append(time.perf_counter() - t0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ".fsync-probe"
    syncs = []
    block = os.urandom(8192)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(200):
            os.lseek(fd, 0, os.SEEK_SET)
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {
        "python_loop_ms": round(statistics.median(loops) * 1000, 1),
        "fdatasync_8k_us": round(statistics.median(syncs) * 1e6),
    }


def commit() -> str:
    """The tree measured: its commit, marked ``+changes`` when src or bench differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" +changes" if dirty else "")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report_only:
        _write_report(json.loads(args.output.read_text()))
        return 0
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    targets = _available_targets([f"shardq-{m}" for m in args.modes.split(",") if m], skipped)
    peers = _available_peers([p for p in args.peers.split(",") if p and p != "none"], skipped)

    started = dt.datetime.now(dt.UTC)
    calibration = {"start": calibrate()}
    log(f"calibration: {calibration['start']}")
    plan: list[tuple[str, Path | str]] = [(t, sys.executable) for t in targets] + [
        (p, PEER_PYTHON) for p in peers
    ]
    results, raw = _measure(args, scenarios, plan)
    calibration["end"] = calibrate()
    log(f"calibration: {calibration['end']}")
    command = "scripts/bench " + shlex.join(argv)
    doc = {
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "runs": args.runs,
        "quick": args.quick,
        "commit": commit(),
        "machine": {**machine(), "calibration": calibration},
        "versions": _versions(targets, peers),
        "settings": _settings(targets, peers),
        "skipped": skipped,
        "results": results,
        "raw": raw,
    }
    _write_results(doc, args.output, started)
    if not args.no_report:
        _write_report(doc)
    return 0


def _write_report(doc: dict[str, Any]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = report.render(doc)
    kept = report.sections_kept(path.read_text()) if path.exists() else ""
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept.lstrip("\n")
    path.write_text(text)
    log("wrote BENCHMARKS.md")


def _write_results(doc: dict[str, Any], output: Path, started: dt.datetime) -> None:
    """The results document, at ``output`` and in a copy named after the start time."""
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    output.write_text(text)
    dated = output.parent / f"{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    dated.write_text(text)
    log(f"wrote {output} and {dated}")


def _available_targets(targets: list[str], skipped: dict[str, str]) -> list[str]:
    """The shardq targets whose probe succeeds; the others go to ``skipped`` with the reason."""
    for t in targets:
        probe = run_one(sys.executable, t, "probe", {})
        if "error" in probe:
            skipped[t] = probe["error"]
            log(f"skipping {t}: {probe['error']}")
    return [t for t in targets if t not in skipped]


def _available_peers(peers: list[str], skipped: dict[str, str]) -> list[str]:
    """The peers, or none (each in ``skipped``) when their environment is missing."""
    if peers and not PEER_PYTHON.exists():
        for p in peers:
            skipped[p] = "peer environment missing (scripts/bench creates it)"
        return []
    return peers


def _sizes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each scenario's parameters: full or quick sizes, with ``--jobs`` applied."""
    sizes = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    if args.jobs:
        for k in ("throughput", "concurrent", "keys"):
            sizes[k]["n"] = args.jobs
    return sizes


def _measure(
    args: argparse.Namespace, scenarios: list[str], plan: list[tuple[str, Path | str]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every scenario for every target of the plan, ``--runs`` times each: the medians per
    target and scenario, and every run's result."""
    sizes = _sizes(args)
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for scenario in scenarios:
        for target, python in plan:
            if target in PEERS and scenario not in PEER_SCENARIOS:
                continue
            params = dict(sizes[scenario])
            if target in PEERS and args.peer_jobs and "timeout" in params:
                params["n"] = args.peer_jobs
            runs = []
            for i in range(args.runs):
                log(f"{target} {scenario} run {i + 1}/{args.runs} {params}")
                r = run_one(python, target, scenario, params)
                log(f"  -> {_brief(r)}")
                runs.append(r)
            raw.setdefault(target, {})[scenario] = runs
            results.setdefault(target, {})[scenario] = {"params": params, **median_of(runs)}
    return results, raw


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"])
    keys: tuple[str, ...] = ("p50_ms", "p99_ms", "enqueue_jobs_s", "process_jobs_s", "p99_ratio")
    keys += ("runner_peak_rss_mb", "core_pct")
    parts = [f"{k}={r[k]:.4g}" for k in keys if isinstance(r.get(k), int | float)]
    return " ".join(parts) or json.dumps(r)[:200]


def _versions(targets: list[str], peers: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if targets:
        out["shardq"] = _pip_version(sys.executable, "shardq")
        out["sqlite"] = _sqlite_version(sys.executable)
    for p in peers:
        out[p] = _pip_version(PEER_PYTHON, p)
    if any("postgres" in t for t in targets) or {"procrastinate", "pgqueuer"} & set(peers):
        out["postgresql"] = _server_version(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version", "test"]
        )
    if {"rq", "arq"} & set(peers):
        info = _server_version(["redis-cli", "-h", "127.0.0.1", "info", "server"])
        out["redis"] = next(
            (ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith("redis_version")),
            "?",
        )
    return out


def _pip_version(python: Path | str, name: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def _sqlite_version(python: Path | str) -> str:
    code = "import sqlite3; print(sqlite3.sqlite_version)"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def _server_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return proc.stdout.strip().replace("\r", "") or "?"


def _settings(targets: list[str], peers: list[str]) -> dict[str, Any]:
    import importlib

    out: dict[str, Any] = {}
    if targets:
        from bench import shardq_target

        for t in targets:
            out[t] = shardq_target.settings()
    for p in peers:
        out[p] = importlib.import_module(f"bench.peers.{p}_peer").SETTINGS
    return out
