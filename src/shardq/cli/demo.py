"""``shardq demo``: a realistic mixed workload on the embedded engine, with a summary.

Payments (critical, ordered per account, some failing transiently), emails (high), image
resizes (normal, sync code in threads), nightly reports (low), webhooks to a dead endpoint
(dead-lettered after their retries) and a job type nobody handles (dead-lettered at once).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from typing import Any

from .._internal.progress import ProgressBar
from ..config import Config
from ..context import current_job
from ..errors import JobError
from ..jobs import JobService
from ..models import JobPayload
from ..retry import RetryPolicy
from . import command, database_url, emit


def register(sub: Any) -> None:
    """Add the demo subcommand to ``sub``."""
    p = command(
        sub,
        "demo",
        help="run a realistic mixed workload on the embedded engine and print a summary",
        description=(
            "Submits a mixed workload (priorities, keyed jobs in per-account order, transient"
            " failures that are retried, jobs that end in the dead-letter table), runs it with"
            " a progress bar and prints throughput, submit-to-start latency and checks."
        ),
        examples=["shardq demo", "shardq --json demo --jobs 5000 --seed 1"],
    )
    p.add_argument("--jobs", type=int, default=20_000, help="how many jobs (default 20000)")
    p.add_argument("--accounts", type=int, default=200, help="keys for ordered payments")
    p.add_argument("--concurrency", type=int, default=64, help="handlers at once (default 64)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the workload")
    p.add_argument(
        "--probes", type=int, default=200, help="single jobs timed on the idle service afterwards"
    )
    p.set_defaults(run=run_demo)


class Recorder:
    """What the demo's handlers saw, to check the summary against."""

    def __init__(self) -> None:
        self.submitted_at: dict[str, float] = {}
        self.first_start: dict[str, float] = {}
        self.finished = 0
        self.account_order: dict[str, list[int]] = defaultdict(list)
        self.flaky_failures = 0

    def started(self) -> None:
        job_id = current_job().job_id
        self.first_start.setdefault(job_id, time.perf_counter())


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def build_service(url: str, concurrency: int, rec: Recorder, rng: random.Random) -> JobService:
    """The demo's JobService and handlers."""
    # Fast retries so the demo's failures play out in seconds, not minutes.
    config = Config(
        database_url=url,
        concurrency=concurrency,
        retry=RetryPolicy(base=0.02, cap=0.2),
    )
    jobs = JobService(config=config)

    @jobs.handler("payment.capture")
    async def capture(p: dict[str, Any]) -> dict[str, Any]:
        rec.started()
        ctx = current_job()
        if p["flaky"] and ctx.attempt == 1:
            rec.flaky_failures += 1
            raise ConnectionError("payment gateway timed out")
        rec.account_order[p["account"]].append(p["seq"])
        await asyncio.sleep(0)
        return {"captured": p["amount"]}

    @jobs.handler("email.send")
    async def send(p: dict[str, Any]) -> None:
        rec.started()
        await asyncio.sleep(0.001)

    @jobs.handler("image.resize")
    def resize(p: dict[str, Any]) -> dict[str, int]:
        rec.started()
        w, h = p["size"]
        # A little real work in a thread, as image code would do.
        acc = 0
        for i in range(200):
            acc += (i * w) % (h + 1)
        return {"width": w // 2, "height": h // 2, "checksum": acc}

    @jobs.handler("report.nightly")
    async def report(p: dict[str, Any]) -> dict[str, int]:
        rec.started()
        await asyncio.sleep(0.002)
        return {"rows": p["rows"]}

    @jobs.handler("webhook.deliver")
    async def webhook(p: dict[str, Any]) -> None:
        rec.started()
        if p["dead"]:
            raise ConnectionRefusedError(f"{p['url']} refused the connection")
        if p["bad"]:
            raise JobError.from_validation(None, "webhook URL is not https")

    return jobs


def workload(n: int, accounts: int, rng: random.Random) -> list[JobPayload]:
    """The mixed jobs of the demo, in submit order."""
    seq: dict[str, int] = defaultdict(int)
    out: list[JobPayload] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            account = f"acct-{rng.randrange(accounts)}"
            seq[account] += 1
            out.append(
                JobPayload(
                    "payment.capture",
                    {"account": account, "seq": seq[account], "amount": rng.randrange(100, 10_000),
                     "flaky": rng.random() < 0.05},
                    priority="critical",
                    key=account,
                )
            )  # fmt: skip
        elif r < 0.55:
            out.append(
                JobPayload("email.send", {"to": f"user{rng.randrange(10**6)}@example.com"}, "high")
            )
        elif r < 0.80:
            out.append(
                JobPayload(
                    "image.resize", {"size": [rng.randrange(100, 4000), rng.randrange(100, 4000)]}
                )
            )
        elif r < 0.97:
            out.append(JobPayload("report.nightly", {"rows": rng.randrange(10**5)}, "low"))
        elif r < 0.995:
            dead = rng.random() < 0.5
            out.append(
                JobPayload(
                    "webhook.deliver",
                    {"url": "https://hooks.example.com/x", "dead": dead, "bad": not dead},
                    max_attempts=3,
                )
            )
        else:
            out.append(JobPayload("legacy.unknown", {"note": "no handler registered"}))
    return out


async def run_demo(args: argparse.Namespace) -> int:
    """Run the workload and print its summary."""
    if args.jobs < 1 or args.accounts < 1 or args.concurrency < 1 or args.probes < 0:
        raise ValueError("--jobs, --accounts and --concurrency must be positive, --probes >= 0")
    rng = random.Random(args.seed)
    rec = Recorder()
    url = database_url(args)
    jobs = build_service(url, args.concurrency, rec, rng)
    specs = workload(args.jobs, args.accounts, rng)
    done = asyncio.Event()
    terminal: dict[str, str] = {}

    bar = ProgressBar(len(specs), "shardq demo")
    ours: set[str] = set()

    def on_transition(job_id: str, status: str) -> None:
        if status in ("complete", "failed", "cancelled") and job_id in ours:
            terminal[job_id] = status
            bar.update(len(terminal))
            if len(terminal) == len(specs):
                done.set()

    jobs.add_listener(on_transition)
    async with jobs:
        t0 = time.perf_counter()
        ids: list[str] = []
        # Submit in batches of 500 (one transaction each), as a busy web tier would.
        for i in range(0, len(specs), 500):
            chunk = specs[i : i + 500]
            before = time.perf_counter()
            results = await jobs.submit_many(chunk)
            for r in results:
                rec.submitted_at[r.job_id] = before
                ids.append(r.job_id)
                ours.add(r.job_id)
        submit_s = time.perf_counter() - t0

        await done.wait()
        elapsed = time.perf_counter() - t0
        jobs.remove_listener(on_transition)
        bar.close()
        dead = await jobs.dead_letters(limit=1000)
        stats = await jobs.stats()
        # Then the latency a single job sees on the now idle service, one at a time.
        idle: list[float] = []
        for _ in range(args.probes):
            before = time.perf_counter()
            probe = await jobs.submit("email.send", {"to": "probe@example.com"}, priority="high")
            await jobs.wait(probe, timeout=30)
            idle.append((rec.first_start[probe] - before) * 1000)
        idle.sort()

    latencies = sorted(
        (rec.first_start[j] - rec.submitted_at[j]) * 1000
        for j in rec.first_start
        if j in rec.submitted_at
    )
    in_order = all(seqs == sorted(seqs) for seqs in rec.account_order.values())
    counts: dict[str, int] = defaultdict(int)
    for s in terminal.values():
        counts[s] += 1
    reasons: dict[str, int] = defaultdict(int)
    for d in dead:
        if d.job_id in ours:
            reasons[d.reason] += 1
    p50 = round(_percentile(latencies, 0.5), 2)
    p99 = round(_percentile(latencies, 0.99), 2)
    summary: dict[str, Any] = {
        "database": url,
        "jobs": len(ids),
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(len(ids) / elapsed, 1),
        "submit_s": round(submit_s, 3),
        "submit_to_start_ms": {"p50": p50, "p99": p99},
        "idle_submit_to_start_ms": {
            "p50": round(_percentile(idle, 0.5), 2),
            "p99": round(_percentile(idle, 0.99), 2),
            "samples": len(idle),
        },
        "outcomes": dict(counts),
        "retried_transient_failures": rec.flaky_failures,
        "dead_lettered": dict(reasons),
        "per_key_order_verified": in_order,
        "keys": len(rec.account_order),
        "totals_in_database": stats.by_status,
    }
    text = "\n".join(
        [
            f"ran {len(ids):,} jobs in {elapsed:.2f}s: {len(ids) / elapsed:,.0f} jobs/s "
            f"(submitted in {submit_s:.2f}s, batches of 500)",
            f"submit-to-start under load: p50 {p50} ms, p99 {p99} ms (all {len(ids):,} were"
            " submitted up front, so this is mostly waiting in the queue)",
            f"submit-to-start when idle: p50 {summary['idle_submit_to_start_ms']['p50']} ms,"
            f" p99 {summary['idle_submit_to_start_ms']['p99']} ms ({len(idle)} single jobs,"
            " each waited for)",
            "outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())),
            f"retried: {rec.flaky_failures} payments failed once and succeeded on retry",
            "dead-lettered: "
            + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"),
            f"per-key order: {'verified' if in_order else 'VIOLATED'} across {len(rec.account_order)} accounts",
            f"inspect: shardq --database-url {url} dlq list",
        ]
    )
    emit(args, summary, text)
    return 0 if in_order and len(terminal) == len(ids) else 1
