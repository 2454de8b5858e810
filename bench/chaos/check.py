"""The checks of a fault run, over what the database holds and what the runners recorded.

Inputs are plain values (so the checks can be tested on made-up runs): the jobs as stored,
the dead letters' job ids, every submit's answer, every handler execution (from the runners'
execution logs) and the faults injected. ``check_run`` returns the checks (each with
``ok``, a ``count`` and a few ``examples``) and the figures (failover times, throughput).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("complete", "failed", "cancelled")
#: Seconds of clock slack when an execution's start is compared with a stored timestamp
#: (stored in milliseconds).
SLACK = 0.002
EXAMPLES = 5


@dataclass
class Job:
    """A job as stored: its state, options, payload and history ``(status, wall, error)``."""

    id: str
    status: str
    attempts: int
    max_attempts: int
    key: str | None
    dedupe: str | None
    payload: dict[str, Any]
    history: list[tuple[str, float, str | None]]


@dataclass
class Execution:
    """One run of the handler: where, when (both clocks) and how it ended.

    ``end`` is the monotonic time of its end line, else of its process's death; ``outcome``
    is ``died`` when the process died in it.
    """

    job: str
    attempt: int
    pid: int
    start: float
    start_wall: float
    end: float = math.inf
    outcome: str = "died"


@dataclass
class Fault:
    """A fault injected: its kind, when (monotonic) and the runner process it hit, if one."""

    kind: str
    at: float
    pid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything a run left to check."""

    jobs: list[Job]
    dead_letter_jobs: set[str]
    submits: list[dict[str, Any]]
    executions: list[Execution]
    faults: list[Fault]
    window: tuple[float, float]  # the fault window, monotonic
    window_wall: tuple[float, float]
    runner_exits: list[dict[str, Any]] = field(default_factory=list)


# -- reading the execution logs ------------------------------------------------------------


def read_executions(directory: Path, deaths: dict[int, float]) -> list[Execution]:
    """Executions from every ``exec-<pid>.log`` in ``directory``; an execution without an end
    line ends when its process died (``deaths``: pid -> monotonic time)."""
    out: list[Execution] = []
    for path in sorted(directory.glob("exec-*.log")):
        out.extend(parse_log(path.read_text(errors="replace").splitlines(), deaths))
    return out


def parse_log(lines: Iterable[str], deaths: dict[int, float]) -> list[Execution]:
    """Pair one process's start and end lines (an end closes the oldest open start of the
    same job and attempt)."""
    done: list[Execution] = []
    open_: dict[tuple[str, int], list[Execution]] = defaultdict(list)
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue  # a line cut short by a kill
        kind, job, attempt, pid = parts[0], parts[1], int(parts[2]), int(parts[3])
        wall, mono = float(parts[4]), float(parts[5])
        if kind == "S":
            ex = Execution(job, attempt, pid, mono, wall)
            open_[job, attempt].append(ex)
            done.append(ex)
        elif kind == "E" and open_[job, attempt]:
            ex = open_[job, attempt].pop(0)
            ex.end, ex.outcome = mono, parts[6] if len(parts) > 6 else "?"
    for ex in done:
        if ex.outcome == "died":
            ex.end = deaths.get(ex.pid, math.inf)
    return done


# -- the checks ----------------------------------------------------------------------------


def _result(problems: Sequence[Any], **extra: Any) -> dict[str, Any]:
    return {"ok": not problems, "count": len(problems), "examples": list(problems[:EXAMPLES])}


def _interrupted(job: Job) -> int:
    return sum(1 for s, _, e in job.history if s in ("queued", "failed") and e and "interrupt" in e)


def check_lost(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every job a submit returned is stored; every stored job reached the terminal state
    its payload planned (``x``), and a failed one has its dead letter. Returns the check and
    the jobs a planned completion lost to faults alone (out of attempts by interruptions)."""
    stored = {j.id: j for j in run.jobs}
    problems: list[dict[str, Any]] = []
    for s in run.submits:
        problems += [
            {"job": i, "problem": "not stored"} for i in s.get("ids", ()) if i not in stored
        ]
    exhausted = []
    for j in run.jobs:
        planned = j.payload.get("x", "complete")
        if j.status not in TERMINAL:
            problems.append({"job": j.id, "problem": f"still {j.status}", "key": j.key})
        elif j.status == "failed" and j.id not in run.dead_letter_jobs:
            problems.append({"job": j.id, "problem": "failed without a dead letter"})
        elif j.status != planned:
            lost_to_faults = (
                j.status == "failed"
                and j.attempts >= j.max_attempts
                and _interrupted(j) + int(j.payload.get("fail", 0)) >= j.max_attempts
            )
            if lost_to_faults:
                exhausted.append(j.id)
            else:
                problems.append({"job": j.id, "problem": f"{j.status}, planned {planned}"})
    return _result(problems), {"count": len(exhausted), "examples": exhausted[:EXAMPLES]}


def check_double_terminal(run: Run, by_job: dict[str, list[Execution]]) -> dict[str, Any]:
    """Each finished job's history has one terminal entry, its last; no execution of a
    finished job starts after the job finished."""
    problems: list[dict[str, Any]] = []
    for j in run.jobs:
        terminals = [(s, t) for s, t, _ in j.history if s in TERMINAL]
        if len(terminals) > 1 or (terminals and j.history[-1][0] not in TERMINAL):
            problems.append({"job": j.id, "problem": "terminal entries", "history": terminals})
            continue
        if not terminals:
            continue
        finished = terminals[0][1]
        late = [e for e in by_job.get(j.id, ()) if e.start_wall > finished + SLACK]
        if late:
            problems.append(
                {
                    "job": j.id,
                    "problem": f"started again {late[0].start_wall - finished:.3f}s after "
                    f"it was {terminals[0][0]}",
                    "pid": late[0].pid,
                    "attempt": late[0].attempt,
                }
            )
    return _result(problems)


def _key_chains(jobs: Iterable[Job]) -> dict[str, list[Job]]:
    chains: dict[str, list[Job]] = defaultdict(list)
    for j in jobs:
        if j.key is not None:
            chains[j.key].append(j)
    for chain in chains.values():
        chain.sort(key=lambda j: (j.payload.get("s", 0), j.payload.get("q", 0)))
    return chains


def _pair_problem(
    earlier: Job, before: list[Execution], later: Job, runs: list[Execution], answered: set[str]
) -> dict[str, Any] | None:
    first = min(runs, key=lambda e: e.start)
    p_first = min(before, key=lambda e: e.start)
    p_last = max(before, key=lambda e: e.end)
    if first.start < p_first.start:
        kind = "out of order"
    elif first.start < p_last.end:
        kind = "overlap"
    else:
        return None
    return {
        "key": earlier.key,
        "problem": kind,
        "earlier": earlier.id,
        "later": later.id,
        "later_start_minus_earlier_first_start_s": round(first.start - p_first.start, 4),
        "later_start_minus_earlier_end_s": round(first.start - p_last.end, 4)
        if p_last.end != math.inf
        else None,
        "pids": [p_first.pid, p_last.pid, first.pid],
        # A submit that failed may have been committed all the same.
        "earlier_submit": "answered" if earlier.id in answered else "failed, stored anyway",
        # Relative to the later job's start, which came too early.
        "earlier_history": _history_around(earlier, first.start_wall),
        "later_history": _history_around(later, first.start_wall),
    }


def _history_around(job: Job, wall: float) -> list[str]:
    return [f"{status}@{t - wall:+.3f}s" for status, t, _ in job.history]


def _faults_near(
    faults: Sequence[Fault], begin: float, end: float, origin: float | None = None
) -> list[str]:
    """The faults from ``begin`` to ``end`` (monotonic), timed from ``origin`` (else ``end``)."""
    zero = end if origin is None else origin
    return [
        f"{f.kind}@{f.at - zero:+.2f}s{f' pid {f.pid}' if f.pid else ''}"
        for f in faults
        if begin <= f.at <= end
    ]


def check_key_order(run: Run, by_job: dict[str, list[Execution]]) -> dict[str, Any]:
    """For each key, in submit order: no job starts before the previous one started
    (``out of order``) or before every execution of the previous one ended (``overlap``)."""
    answered = {i for s in run.submits for i in s.get("ids", ())}
    problems: list[dict[str, Any]] = []
    chains = _key_chains(run.jobs)
    for chain in chains.values():
        prev: tuple[Job, list[Execution]] | None = None
        for j in chain:
            runs = by_job.get(j.id)
            if not runs:
                continue
            if prev is not None:
                problem = _pair_problem(prev[0], prev[1], j, runs, answered)
                if problem is not None:
                    start = min(e.start for e in runs)
                    problem["faults_around"] = _faults_near(run.faults, start - 5.0, start)
                    problems.append(problem)
            prev = (j, runs)
    out = _result(problems)
    out["out_of_order"] = sum(1 for p in problems if p["problem"] == "out of order")
    out["overlap"] = sum(1 for p in problems if p["problem"] == "overlap")
    out["keys"] = len(chains)
    return out


def check_dedupe(run: Run) -> dict[str, Any]:
    """One stored job per dedupe key, and every submit of that key answered its id."""
    stored: dict[str, list[str]] = defaultdict(list)
    for j in run.jobs:
        if j.dedupe is not None:
            stored[j.dedupe].append(j.id)
    problems: list[dict[str, Any]] = []
    for d, ids in stored.items():
        if len(ids) > 1:
            problems.append({"dedupe_key": d, "problem": f"{len(ids)} jobs", "jobs": ids})
    answered = 0
    for s in run.submits:
        asked = s.get("d")
        if asked is None or "ids" not in s:
            continue
        answered += 1
        if s["ids"][0] not in stored.get(asked, ()):
            problems.append(
                {"dedupe_key": asked, "problem": "answered another job", "job": s["ids"][0]}
            )
    out = _result(problems)
    out["keys"] = len(stored)
    out["submits"] = answered
    return out


#: How long before a crash of the PostgreSQL server a start may be erased by it: starts
#: commit asynchronously, flushed within three ``wal_writer_delay`` (600 ms), with room.
CRASH_WINDOW = 1.0
SERVER_CRASHES = ("pg_crash", "cold_start")


def check_attempts(run: Run, by_job: dict[str, list[Execution]]) -> dict[str, Any]:
    """Every execution of a job ran as an attempt of its own, so the history shows each one;
    except (documented) an attempt started just before a crash of the PostgreSQL server,
    whose start the crash erased: the re-run then has the same attempt number."""
    # The server died somewhere between the stop's call and its return.
    crashes = [
        (f.at, f.at + f.detail.get("stop_s", 0.0)) for f in run.faults if f.kind in SERVER_CRASHES
    ]
    problems: list[dict[str, Any]] = []
    erased = 0
    for job, runs in by_job.items():
        seen: dict[int, Execution] = {}
        for e in sorted(runs, key=lambda e: e.start):
            first = seen.setdefault(e.attempt, e)
            if first is e:
                continue
            if any(
                begin <= first.start + CRASH_WINDOW and first.start <= end + SLACK
                for begin, end in crashes
            ):
                erased += 1
                continue
            between = _faults_near(run.faults, first.start - CRASH_WINDOW, e.start, first.start)
            problems.append(
                {
                    "job": job,
                    "problem": f"attempt {e.attempt} ran twice",
                    "pids": [first.pid, e.pid],
                    "first_outcome": first.outcome,
                    "apart_s": round(e.start - first.start, 3),
                    "faults_around": between,
                }
            )
    out = _result(problems)
    out["erased_by_server_crash"] = erased
    return out


def check_runner_exits(run: Run) -> dict[str, Any]:
    """No runner exited unless told to, and each one told to drain exited with status 0."""
    return _result(run.runner_exits)


# -- figures -------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def failover(run: Run, by_job: dict[str, list[Execution]]) -> dict[str, Any]:
    """Per kill -9: seconds to the first re-run, on another process, of a job the killed
    runner had in flight (and to the last of them); p50 and max over the kills."""
    first: list[float] = []
    last: list[float] = []
    never: list[str] = []
    for f in run.faults:
        if f.kind != "kill9" or f.pid is None:
            continue
        in_flight = {
            e.job
            for e in run.executions
            if e.pid == f.pid and e.outcome == "died" and e.start < f.at
        }
        waits = []
        for job in in_flight:
            again = [e.start for e in by_job.get(job, ()) if e.pid != f.pid and e.start > f.at]
            if again:
                waits.append(min(again) - f.at)
            else:
                never.append(job)
        if waits:
            first.append(min(waits))
            last.append(max(waits))
    out: dict[str, Any] = {"kills_with_jobs_in_flight": len(first), "never_rerun": never}
    if first:
        out.update(
            first_rerun_p50_s=round(_pct(first, 0.5), 3),
            first_rerun_max_s=round(max(first), 3),
            all_rerun_p50_s=round(_pct(last, 0.5), 3),
            all_rerun_max_s=round(max(last), 3),
        )
    return out


def throughput(run: Run) -> dict[str, Any]:
    """Jobs submitted and finished per second, and executions started, during the faults."""
    w0, w1 = run.window_wall
    m0, m1 = run.window
    seconds = max(w1 - w0, 1e-9)
    finished = sum(1 for j in run.jobs for s, t, _ in j.history if s in TERMINAL and w0 <= t <= w1)
    started = sum(1 for e in run.executions if m0 <= e.start <= m1)
    submitted = sum(len(s.get("ids", ())) for s in run.submits if m0 <= s["t"] <= m1)
    return {
        "window_s": round(seconds, 2),
        "finished_per_s": round(finished / seconds, 1),
        "executions_per_s": round(started / seconds, 1),
        "submitted_per_s": round(submitted / seconds, 1),
    }


def check_run(run: Run) -> dict[str, Any]:
    """Every check and figure of a run."""
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for e in run.executions:
        by_job[e.job].append(e)
    lost, exhausted = check_lost(run)
    checks = {
        "lost": lost,
        "double_terminal": check_double_terminal(run, by_job),
        "key_order": check_key_order(run, by_job),
        "attempts": check_attempts(run, by_job),
        "dedupe": check_dedupe(run),
        "runner_exits": check_runner_exits(run),
    }
    statuses: dict[str, int] = defaultdict(int)
    for j in run.jobs:
        statuses[j.status] += 1
    faults: dict[str, int] = defaultdict(int)
    for f in run.faults:
        faults[f.kind] += 1
    figures = {
        "jobs": len(run.jobs),
        "statuses": dict(statuses),
        "submits": len(run.submits),
        "submit_errors": sum(1 for s in run.submits if "err" in s),
        "executions": len(run.executions),
        "executions_interrupted": sum(1 for e in run.executions if e.outcome in ("died", "cancel")),
        "faults": dict(faults),
        "faults_total": len(run.faults),
        "exhausted_by_faults": exhausted,
        "failover": failover(run, by_job),
        "throughput": throughput(run),
    }
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks, "figures": figures}


def median_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over several runs of the figures worth comparing."""

    def med(get: Any) -> float | None:
        vals = [v for v in (get(r) for r in results) if v is not None]
        return round(statistics.median(vals), 3) if vals else None

    fo = "failover"
    return {
        "runs": len(results),
        "all_ok": all(r["ok"] for r in results),
        "jobs": med(lambda r: r["figures"]["jobs"]),
        "faults": med(lambda r: r["figures"]["faults_total"]),
        "failover_first_rerun_p50_s": med(lambda r: r["figures"][fo].get("first_rerun_p50_s")),
        "failover_first_rerun_max_s": med(lambda r: r["figures"][fo].get("first_rerun_max_s")),
        "finished_per_s": med(lambda r: r["figures"]["throughput"]["finished_per_s"]),
        "failed_checks": sorted(
            {n for r in results for n, c in r["checks"].items() if not c["ok"]}
        ),
    }


def dumps(value: Any) -> str:
    """JSON with infinities as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=2)
