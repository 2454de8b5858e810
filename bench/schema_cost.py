"""Input decoding measured: shardq.schema (msgspec) against an equivalent pydantic model.

``python -m bench.schema_cost [--rounds 7]``

CPU time per call (``time.process_time``) of what a submit costs before it reaches storage:

- ``submit body``: one job as ``POST /api/jobs`` receives it (JSON bytes, eight fields and a
  small payload) decoded into its type and checked;
- ``batch body``: 1,000 such jobs as ``POST /api/jobs/batch`` receives them;
- ``python args``: one job from Python arguments, as ``JobService.submit`` takes them.

The methods:

- ``shardq.schema.decode``: what the HTTP API runs: the strict JSON reader (no repeated key,
  no NaN, no lone surrogate) then ``msgspec.convert`` into ``SubmitRequest``/``BatchRequest``;
- ``msgspec typed decode``: ``msgspec.json.decode(raw, type=...)`` alone, into the same types
  (no repeated-key check, as pydantic has none);
- ``pydantic``: ``model_validate_json`` (bodies) or ``model_validate`` (arguments) of
  pydantic models defined here with the same wire rules (JSON types, required and unknown
  fields, enumerations, defaults, the batch's 1..1,000 jobs), in strict mode as msgspec is;
- ``domain check``: ``JobPayload(...)`` then JobService's check of a spec's options
  (``_internal.validation``: ``check_options``, and ``check_name`` of the dedupe key), which
  every entry point goes through after decoding: the part a schema library could take over;
- ``domain check+payload``: the same and ``encode_json`` of the payload (refusing what is
  not JSON), as JobService runs it for every job (the encoding is what it stores);
- ``msgspec.convert``: the arguments (a dict) converted into ``shardq.schema.NewJob``.

Neither library checks the domain's rules here (a name's length and text, the range of
``max_attempts``): shardq.schema states them for the OpenAPI document and leaves them to
the domain check, and the pydantic models do the same.

Each measurement calls one method on one input for about ``--seconds`` of CPU time; a
round measures every pair once, in an order rotated each round; the figures are medians
over the rounds, and each ratio the median of the rounds' ratios to shardq's own method
for that input (``shardq.schema.decode``, or ``domain check``). Prints a table and writes every sample to
``bench/results/schema-cost-<time>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import msgspec

from bench.common import write_results
from shardq import schema
from shardq._internal.validation import check_name, check_options, encode_json
from shardq.models import JobPayload

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000

#: One job, as a client sends it.
JOB: dict[str, Any] = {
    "type": "email.send",
    "payload": {"to": "someone@example.com", "template": "receipt", "order": 81723},
    "priority": "high",
    "key": "customer-4711",
    "dedupe_key": "receipt-81723",
    "max_attempts": 5,
    "timeout": 30.0,
    "duration": "short",
}
SUBMIT_BODY = json.dumps({**JOB, "delay": 0}).encode()
BATCH_BODY = json.dumps(
    {"jobs": [{**JOB, "dedupe_key": f"receipt-{i}"} for i in range(BATCH)], "delay": 0}
).encode()

Case = tuple[str, str]  # (input, method)
#: shardq's own method for each input: the others' ratios are against it.
BASE = {
    "submit body": "shardq.schema.decode",
    "batch body": "shardq.schema.decode",
    "python args": "domain check",
}


def _pydantic_models() -> tuple[Any, Any, Any] | None:
    """The pydantic models of a job, a submit body and a batch body; None without pydantic."""
    try:
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        return None

    class NewJob(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        type: str
        payload: Any
        priority: Literal["critical", "high", "normal", "low"] = "normal"
        key: str | None = None
        dedupe_key: str | None = None
        max_attempts: int | float = 3
        timeout: float | None = None
        duration: Literal["short", "long"] = "short"

    class SubmitRequest(NewJob):
        delay: float = 0.0

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        jobs: list[NewJob] = Field(min_length=1, max_length=BATCH)
        delay: float = 0.0

    return NewJob, SubmitRequest, BatchRequest


def domain_check(args: dict[str, Any]) -> JobPayload:
    """A spec from Python arguments, its options checked as JobService checks them."""
    spec = JobPayload(**args)
    check_options(spec)
    if spec.dedupe_key is not None:
        check_name("dedupe_key", spec.dedupe_key)
    return spec


def domain_check_and_payload(args: dict[str, Any]) -> str:
    """``domain_check``, and the payload encoded as JobService stores it."""
    return encode_json("payload", domain_check(args).payload)


def cases() -> tuple[dict[Case, Callable[[], Any]], str | None]:
    """Every (input, method) pair measured, and why pydantic is left out (None if it is not)."""
    out: dict[Case, Callable[[], Any]] = {
        ("submit body", "shardq.schema.decode"): lambda: schema.decode(
            SUBMIT_BODY, schema.SubmitRequest
        ),
        ("submit body", "msgspec typed decode"): lambda: msgspec.json.decode(
            SUBMIT_BODY, type=schema.SubmitRequest
        ),
        ("batch body", "shardq.schema.decode"): lambda: schema.decode(
            BATCH_BODY, schema.BatchRequest
        ),
        ("batch body", "msgspec typed decode"): lambda: msgspec.json.decode(
            BATCH_BODY, type=schema.BatchRequest
        ),
        ("python args", "domain check"): lambda: domain_check(JOB),
        ("python args", "domain check+payload"): lambda: domain_check_and_payload(JOB),
        ("python args", "msgspec.convert"): lambda: msgspec.convert(JOB, schema.NewJob),
    }
    models = _pydantic_models()
    if models is None:
        return out, "pydantic is not installed: its rows are left out"
    job, submit, batch = models
    out[("submit body", "pydantic")] = lambda: submit.model_validate_json(SUBMIT_BODY)
    out[("batch body", "pydantic")] = lambda: batch.model_validate_json(BATCH_BODY)
    out[("python args", "pydantic")] = lambda: job.model_validate(JOB)
    _check_equivalent(models)
    inputs = ["submit body", "batch body", "python args"]
    return dict(sorted(out.items(), key=lambda kv: inputs.index(kv[0][0]))), None


def _check_equivalent(models: tuple[Any, Any, Any]) -> None:
    """The pydantic models read the bodies as shardq.schema does, and refuse what it does."""
    job, submit, batch = models
    ours = msgspec.structs.asdict(schema.decode(SUBMIT_BODY, schema.SubmitRequest))
    assert submit.model_validate_json(SUBMIT_BODY).model_dump() == ours
    many = batch.model_validate_json(BATCH_BODY)
    assert [j.model_dump() for j in many.jobs] == [
        msgspec.structs.asdict(j) for j in schema.decode(BATCH_BODY, schema.BatchRequest).jobs
    ]
    assert job.model_validate(JOB).model_dump() == msgspec.structs.asdict(
        msgspec.convert(JOB, schema.NewJob)
    )
    for bad in ({**JOB, "extra": 1}, {**JOB, "priority": "urgent"}, {**JOB, "timeout": "30"}):
        raw = json.dumps(bad).encode()
        for refuse in (
            lambda raw=raw: schema.decode(raw, schema.SubmitRequest),
            lambda raw=raw: submit.model_validate_json(raw),
        ):
            try:
                refuse()
            except (schema.WrongShape, ValueError):
                continue
            raise AssertionError(f"{bad} was accepted")


def calls_for(call: Callable[[], Any], seconds: float) -> int:
    """How many calls take about ``seconds`` of CPU time."""
    n = 1
    while True:
        started = time.process_time()
        for _ in range(n):
            call()
        spent = time.process_time() - started
        if spent >= seconds / 10:
            return max(1, round(n * seconds / spent))
        n *= 4


def measure(call: Callable[[], Any], n: int) -> float:
    """CPU seconds per call, over ``n`` calls."""
    gc.collect()
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n


def run(rounds: int, seconds: float) -> dict[str, Any]:
    table, skipped = cases()
    if skipped:
        print(skipped, flush=True)
    order = list(table)
    n = {case: calls_for(table[case], seconds) for case in order}
    samples: dict[Case, list[float]] = {case: [] for case in order}
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]
        for case in turn:
            samples[case].append(measure(table[case], n[case]))
        print(f"round {r + 1}/{rounds} done", flush=True)
    results = {}
    for (what, method), values in samples.items():
        # Against shardq's own method on the same input in the same round: a ratio moves
        # less than either figure on a machine whose speed drifts.
        base = samples[(what, BASE[what])]
        results[f"{what} / {method}"] = {
            "input": what,
            "method": method,
            "calls_per_sample": n[(what, method)],
            "median_us": statistics.median(values) * 1e6,
            "min_us": min(values) * 1e6,
            "max_us": max(values) * 1e6,
            "median_ratio": statistics.median(v / b for v, b in zip(values, base, strict=True)),
            "samples_us": [v * 1e6 for v in values],
        }
    return {"skipped": skipped, "results": results}


def table_lines(results: dict[str, Any]) -> list[str]:
    """The medians as a table, with each method's cost against shardq's own (the median of
    the rounds' ratios)."""
    lines = [
        f"{'input':<12} {'method':<22} {'median':>10} {'min':>10} {'max':>10} {'ratio':>6}",
    ]
    for r in results.values():
        lines.append(
            f"{r['input']:<12} {r['method']:<22} {_us(r['median_us']):>10}"
            f" {_us(r['min_us']):>10} {_us(r['max_us']):>10} {r['median_ratio']:>6.2f}"
        )
    return lines


def _us(value: float) -> str:
    return f"{value:,.2f} us" if value < 1000 else f"{value / 1000:,.3f} ms"


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for package in ("shardq", "msgspec", "pydantic", "pydantic_core"):
        try:
            out[package] = version(package)
        except Exception:
            out[package] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.schema_cost",
        description=__doc__.split("\n")[0],
        epilog="Writes bench/results/schema-cost-<time>.json.",
    )
    ap.add_argument("--rounds", type=int, default=7, help="rounds of every case (default 7)")
    ap.add_argument(
        "--seconds",
        type=float,
        default=0.2,
        help="CPU seconds of one measurement of one case (default 0.2)",
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.seconds <= 0:
        ap.error("--seconds must be more than 0")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    measured = run(args.rounds, args.seconds)
    report = {
        "command": "python -m bench.schema_cost "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
        "python": platform.python_version(),
        "versions": _versions(),
        "rounds": args.rounds,
        "seconds_per_sample": args.seconds,
        "batch_jobs": BATCH,
        "submit_body_bytes": len(SUBMIT_BODY),
        "batch_body_bytes": len(BATCH_BODY),
        **measured,
    }
    print(f"CPU time per call, median of {args.rounds} interleaved rounds:")
    for line in table_lines(measured["results"]):
        print(line)
    path = write_results("schema-cost", started, report)
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
